"""CHILD ONLY: a warm worker slot, ``python -m podisco.discovery.child.forkserver`` (``--warm-workers``).

A cold job pays for a fresh interpreter, the torch import and loading the prepared task every time (about 7 s
of a 130 s IMDb job, measured from the archive's timings). A slot pays for that once: it starts inside its own
sandbox (executors.WarmSlot, the same isolation, limits and mounts as a cold job), imports the worker, and warms
each task spec it is given (trusted task code: ``Task.warm`` where a task has it). It never runs candidate code
itself. Per job it forks one fresh child, which takes the job folder as its cwd, HOME and TMPDIR, sends its
stdout and stderr to files there, and runs exactly what a cold worker runs (``worker.main``). A candidate
therefore still never shares a process with another candidate; the children of one slot do share its
sandbox, which is why the parent moves each job's folder out of the slot before the next job starts, and why
the slot is not dumpable (no ptrace of it, no /proc/PID/mem). Torch stays at one thread until the fork: an
OpenMP pool started before a fork would hang the child.

Protocol, one JSON object per line: the slot says ``{"ready": pid}`` once warm; the parent sends
``{"dir": JOB_FOLDER, "wall_s": SECONDS}``; the slot answers ``{"started": PID}`` once it forked the child,
and ``{"returncode", "signal", "timed_out", "wall_s"}`` once the child ended or was killed at the deadline
(its process group, and, in a bwrap sandbox, every other process the slot's pid namespace holds then:
``kill_leftovers``). End-of-file on stdin ends the slot.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
OWN_PID_NAMESPACE = "--own-pid-namespace"  # the parent says the slot is alone in its pid namespace (bwrap)


def _prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _warm(job: dict, warmed: set[tuple[str, float]]) -> None:
    """Load what every job of this task spec needs, once, before any fork (trusted task code), and the
    registered losses' fingerprints at the job's β that every preference candidate is compared with."""
    from podisco.tasks.base import TaskSpec, task_from_spec

    spec = TaskSpec.from_json(job["task"])
    key = (spec.key(), float(job["beta"]))
    if key in warmed:
        return
    warmed.add(key)
    task = task_from_spec(spec)
    warm = getattr(task, "warm", None)
    if callable(warm):
        warm(spec)
    if task.kind == "preference":
        from podisco.losses.analysis import nearest_known

        nearest_known(task.reference_loss, key[1])  # fills the per-β cache of every registered fingerprint


def _child(folder: Path, keep: tuple[int, ...]) -> None:
    """In the forked child: become a cold worker in ``folder`` and exit with its status (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: the slot kills it (and anything it starts) without killing itself
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        for fd in keep:  # the protocol pipes: nothing the candidate runs can speak for the slot
            os.close(fd)
        os.chdir(folder)
        for fd, name in ((1, ".stdout"), (2, ".stderr")):
            target = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        os.environ.update(HOME=str(folder), TMPDIR=str(folder / "tmp"))
        import tempfile

        tempfile.tempdir = None  # gettempdir() caches the slot's TMPDIR otherwise

        from podisco.discovery.child.worker import main

        code = main(["job.json", "result.json"])
    except BaseException:  # reported by the missing result file and the stderr tail
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def kill_leftovers() -> int:
    """Kill every process of this pid namespace but this one and its ancestors; how many were signalled.

    Only for a slot alone in its pid namespace (bwrap's ``--unshare-pid``, where /proc lists that namespace
    alone): a child that left its process group (``setsid``) escapes ``killpg``, and would otherwise outlive
    its job and watch, or write into, the next candidate's folder. A cold job's sandbox ends with its job."""
    keep, pid = set(), os.getpid()
    while pid > 0:  # this process and its ancestors up to the namespace's init (whose parent is 0 here)
        keep.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    killed = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in keep:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def _wait(pid: int, wall_s: float) -> dict:
    """Wait for the child until its deadline; kill its group then (and after a clean end: what it left)."""
    started = time.monotonic()
    status, timed_out = None, False
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() - started > wall_s:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
        else:
            time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if OWN_PID_NAMESPACE in sys.argv:
        kill_leftovers()  # orphans, reparented to the namespace's init, which reaps them
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out,
        "wall_s": time.monotonic() - started,
    }


def main() -> int:
    import torch

    torch.set_num_threads(1)  # no OpenMP pool before a fork (module docstring); each job sets its own
    import podisco.discovery.child.worker  # noqa: F401  (the import is the warm-up)

    _prctl(PR_SET_DUMPABLE, 0)
    requests, replies = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a warm-up that prints cannot garble the replies
    warmed: set[tuple[str, float]] = set()

    def say(message: dict) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    say({"ready": os.getpid()})
    for line in requests:
        request = json.loads(line)
        folder = Path(request["dir"])
        try:
            _warm(json.loads((folder / "job.json").read_text()), warmed)
        except Exception as error:  # the cold path would fail the same way: the child reports it
            print(f"warm-up failed: {error}", file=sys.stderr)
        pid = os.fork()
        if pid == 0:
            _child(folder, (requests.fileno(), replies.fileno()))
        say({"started": pid})
        say(_wait(pid, float(request["wall_s"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
