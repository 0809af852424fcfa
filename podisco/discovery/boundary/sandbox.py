"""Run a command in an isolated child process: the boundary between candidate code and everything else.

Levels, strongest first (``detect_isolation`` probes which work here):

- ``bwrap`` (bubblewrap): the whole filesystem read-only except the job's work folder; the home folder,
  /home and /tmp hidden behind empty tmpfs (only the interpreter, the project and the given read-only paths
  are mounted back); no network (own, empty network namespace: not even the parent's loopback); own pid,
  IPC and UTS namespaces (when the sandbox's init dies the kernel kills every process in it);
  ``--die-with-parent``, ``--new-session``; all capabilities dropped. Where bwrap supports it (0.8+ as
  root: probed) also ``--unshare-user --disable-userns``, which empties the bounding set too (no file
  capabilities or setuid binary can give a capability back) and refuses nested user namespaces. Verified
  here (bwrap 0.8.0, as root): writes outside the work folder fail with EROFS, ``mount -o remount,rw``
  fails with EPERM, CapEff and CapBnd are 0, ``unshare -U`` fails.
- ``unshare``: ``unshare -n``, a network namespace with nothing in it; files outside the work folder are
  NOT protected, nor is the rest of the machine from a root child (it can read /root, kill processes...).
- ``process``: a plain child process; neither network nor filesystem is protected.

At every level: a scrubbed environment built from scratch (no API keys or tokens), the work folder as cwd,
HOME and TMPDIR, rlimits (CPU seconds, address space, file size, open files, no core dumps), stdout/stderr
to files in the work folder whose tails are kept (a flood can neither block on a pipe nor fill the
parent's memory; RLIMIT_FSIZE caps the files), SIGKILL if the parent dies, and a wall-clock deadline after
which the whole process group is killed. After the child ends, whatever it left behind is killed too: its
process group, and then every process whose environment carries this run's random token — which also finds
children that called setsid() (daemons) at the weaker levels; only a process that re-executes itself with
a fresh environment escapes that sweep, and only at the ``unshare``/``process`` levels.

The rlimits and the parent-death signal are set by an exec trampoline (``_trampoline.py``, run as
``python -I -S``) that then execs the launcher (bwrap, unshare) or the command itself, in the same process, so
they hold for everything the command starts, inside the sandbox too. Never a Popen ``preexec_fn``: CPython
documents ``preexec_fn`` as not safe in the presence of threads, and jobs are launched from a thread pool.

What does not hold: RLIMIT_NPROC is set, but Linux never applies it to uid 0, and a root launcher stays uid 0
in the kernel's eyes even inside bwrap's user namespace (checked: 60 forks under a limit of 20). The number
of processes is bounded by time only (the deadline, the pid namespace) — the gate is what keeps candidate
code from forking at all.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podisco.errors import PodiscoError

ISOLATION_LEVELS = ("bwrap", "unshare", "process")
_TAIL = 4000
_TOKEN_VAR = "PODISCO_SANDBOX_TOKEN"


class SandboxError(PodiscoError):
    """The sandbox cannot give the isolation that was asked for."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 600.0  # the process group (and under bwrap the pid namespace) is killed after this
    cpu_s: int = 3600  # RLIMIT_CPU counts every thread: room for a few torch threads over the whole wall time
    memory_mb: int = 8192  # RLIMIT_AS; torch reserves a lot of address space, so keep this generous; 0: none
    # (a CUDA process maps far more address space than memory: GPU jobs run with 0)
    processes: int = 256  # RLIMIT_NPROC: not enforced for root (see the module docstring)
    file_mb: int = 256  # RLIMIT_FSIZE: any one file, stdout and stderr included
    open_files: int = 512


@dataclass
class SandboxResult:
    returncode: int | None
    timed_out: bool
    killed_by_signal: int | None
    stdout_tail: str  # the last 4000 characters
    stderr_tail: str
    wall_s: float
    isolation: str


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def _bwrap_user_flags() -> tuple[str, ...] | None:
    """The strongest user-namespace flags this bwrap accepts (None: bwrap does not work at all)."""
    for flags in (("--unshare-user", "--disable-userns"), ("--unshare-user",), ()):
        if _works(["bwrap", *flags, *_bwrap_args(Path("/tmp"), (), probing=True), "true"]):
            return flags
    return None


@functools.cache
def detect_isolation() -> str:
    """The strongest level that really works on this machine (probed once per process, by running it)."""
    if _bwrap_user_flags() is not None:
        return "bwrap"
    if _works(["unshare", "-n", "true"]):
        return "unshare"
    return "process"


def require_isolation(level: str, allow_weak: bool) -> None:
    """Refuse to run model-written code without filesystem and network isolation unless explicitly allowed."""
    if level not in ISOLATION_LEVELS:
        raise SandboxError(f"unknown isolation level {level!r}: {', '.join(ISOLATION_LEVELS)}")
    if level != "bwrap" and not allow_weak:
        raise SandboxError(
            f"only the {level!r} isolation level is available here (bubblewrap's `bwrap` is missing or does not "
            "work), which does not protect files outside the work folder"
            + (" or the network" if level == "process" else "")
            + ". Install bubblewrap, or pass --allow-weak-isolation to run LLM-written code anyway."
        )


def _project_root() -> Path:
    return Path(__file__).resolve().parents[3]  # the folder that holds the podisco package


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child environment built from nothing: no secrets can leak in by inheritance.

    HOME and TMPDIR are set by ``run_sandboxed`` to the work folder (and its tmp/) unless ``extra`` sets them;
    thread counts (OMP_NUM_THREADS, MKL_NUM_THREADS) come from ``extra``.
    """
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(_project_root()),  # podisco importable, editable install or not
    }
    env.update(extra or {})
    return env


def _hidden_dirs() -> list[Path]:
    """Folders replaced by an empty tmpfs under bwrap: homes (keys, tokens, configs) and the shared /tmp."""
    hidden = [Path("/tmp")]
    for home in (Path.home().resolve(), Path("/home")):
        if home != Path("/") and home.is_dir() and home not in hidden:
            hidden.append(home)
    return hidden


def gpu_devices() -> list[Path]:
    """The NVIDIA device nodes a CUDA process opens (``--dev /dev`` gives the sandbox none of them)."""
    return sorted(Path("/dev").glob("nvidia*")) + sorted(Path("/dev").glob("nvidia-caps/*"))


def _bwrap_args(
    workdir: Path, readonly_paths: Sequence[Path], probing: bool = False, devices: Sequence[Path] = ()
) -> list[str]:
    user_flags = () if probing else (_bwrap_user_flags() or ())
    args = [
        *user_flags,
        "--die-with-parent",
        "--new-session",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    hidden = _hidden_dirs()
    for folder in hidden:
        args += ["--tmpfs", str(folder)]
    for device in devices:  # a GPU job's device nodes, on top of the minimal /dev
        args += ["--dev-bind", str(device), str(device)]
    # Mount back, read-only, what the child needs from the hidden folders (a pyenv under /root, a venv in /tmp).
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), _project_root(), *readonly_paths}
    for path in sorted({Path(p).resolve() for p in needed}):
        if path.exists() and any(path.is_relative_to(folder) for folder in hidden):
            args += ["--ro-bind", str(path), str(path)]
    workdir = workdir.resolve()
    return [*args, "--bind", str(workdir), str(workdir), "--chdir", str(workdir)]


_TRAMPOLINE = Path(__file__).with_name("_trampoline.py")


def _rlimits(limits: Limits) -> list[tuple[str, int | None]]:
    """(resource name, value; None: unlimited) for each rlimit the child gets, soft and hard alike."""
    mb = 1024 * 1024
    return [
        ("RLIMIT_CPU", limits.cpu_s),
        ("RLIMIT_AS", limits.memory_mb * mb if limits.memory_mb > 0 else None),
        ("RLIMIT_FSIZE", limits.file_mb * mb),
        ("RLIMIT_NOFILE", limits.open_files),
        ("RLIMIT_NPROC", limits.processes),
        ("RLIMIT_CORE", 0),
    ]


def _trampoline(limits: Limits, errfd: int, command: Sequence[str]) -> list[str]:
    """``command`` behind the exec trampoline, which sets the rlimits and PR_SET_PDEATHSIG, then execs it.

    Not a Popen ``preexec_fn``: CPython documents ``preexec_fn`` as not safe in the presence of threads
    (between fork and exec the child may deadlock on a lock some other thread of the parent held), and jobs
    are launched from a ThreadPoolExecutor, where such a deadlock would be recorded as the candidate's
    timeout. The trampoline does the same work after a clean exec, then execs ``command`` in the same
    process: the limits and the death signal hold for the launcher (bwrap, unshare) and everything it starts,
    as they did when set between fork and exec. ``-I -S``: only the standard library, whatever the env says.
    """
    settings = [f"{name}={'unlimited' if value is None else value}" for name, value in _rlimits(limits)]
    death_signal = int(signal.SIGKILL) if sys.platform.startswith("linux") else 0  # die with the discovery process
    return [
        sys.executable,
        "-I",
        "-S",
        str(_TRAMPOLINE),
        str(errfd),
        str(os.getpid()),
        str(death_signal),
        *settings,
        "--",
        *command,
    ]


def _trampoline_failure(errfd: int, timeout: float) -> str | None:
    """Wait for the trampoline to exec the command (end-of-file on ``errfd``); what it reported if it failed.

    None also when it has neither exec'd nor failed within ``timeout``: the deadline handles that child."""
    poller = select.poll()
    poller.register(errfd, select.POLLIN | select.POLLHUP)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if not poller.poll(remaining * 1000):
            break
        chunk = os.read(errfd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace") or None


def _launch_error(report: str, program: str) -> OSError | SandboxError:
    """The exception a failed trampoline report becomes: an exec failure is the OSError Popen would raise."""
    number, stage, message = (report.split("\t", 2) + ["", ""])[:3]
    if stage == "exec" and number.isdigit() and int(number):
        return OSError(int(number), os.strerror(int(number)), program)
    return SandboxError(f"could not start the sandboxed command ({stage or 'trampoline'}): {message or report}")


def tail(path: Path) -> str:
    """The last 4000 characters of a file the child wrote (empty if there is none)."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - _TAIL))
        return f.read().decode("utf-8", errors="replace")[-_TAIL:]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _carries(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, a zombie, or not ours to read
        return False


def _sweep(token: str) -> int:
    """SIGKILL every process whose (initial) environment carries ``token``; how many were signalled.

    A pidfd, opened between two reads of the environment, makes sure a reused pid is never signalled.
    """
    if not Path("/proc/self/environ").exists():
        return 0
    needle, me, signalled = f"{_TOKEN_VAR}={token}".encode(), os.getpid(), 0
    for _ in range(20):  # a fork loop may still be running: repeat until a pass finds nobody
        found = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me or not _carries(int(entry.name), needle):
                continue
            pid = int(entry.name)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if _carries(pid, needle):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    found += 1
            except OSError:
                pass
            finally:
                os.close(pidfd)
        signalled += found
        if not found:
            break
        time.sleep(0.05)
    return signalled


@dataclass
class Sandboxed:
    """A sandboxed command that was started (``start_sandboxed``) and must be ended with ``reap``."""

    process: subprocess.Popen
    token: str  # in the child's environment: ``reap`` sweeps every process that carries it
    isolation: str
    started: float  # time.monotonic() at launch


def start_sandboxed(
    argv: list[str],
    workdir: Path,
    limits: Limits = Limits(),
    isolation: str | None = None,
    readonly_paths: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    devices: Sequence[Path] = (),
    stdin=subprocess.DEVNULL,
    stdout=None,
    stderr=None,
) -> Sandboxed:
    """Start ``argv`` in ``workdir`` at ``isolation`` (default: the strongest available) within ``limits``, behind
    the trampoline; returns once the command was exec'd. ``limits.wall_s`` bounds only the wait for that exec:
    the caller enforces the deadline (``run_sandboxed``) or runs a long-lived server (executors.WarmSlot).

    ``env`` defaults to ``scrubbed_env()``; whatever is given, nothing else of this process's environment goes
    in. ``devices`` (GPU nodes, ``gpu_devices()``) are bound into the bwrap sandbox; the weaker levels see
    every device anyway."""
    level = isolation or detect_isolation()
    if level not in ISOLATION_LEVELS:
        raise SandboxError(f"unknown isolation level {level!r}: {', '.join(ISOLATION_LEVELS)}")
    workdir = Path(workdir).resolve()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    child_env = dict(env) if env is not None else scrubbed_env()
    child_env.setdefault("HOME", str(workdir))
    child_env.setdefault("TMPDIR", str(workdir / "tmp"))
    child_env[_TOKEN_VAR] = token
    if level == "bwrap":
        command = ["bwrap", *_bwrap_args(workdir, readonly_paths, devices=devices), *argv]
    elif level == "unshare":
        command = ["unshare", "-n", *argv]
    else:
        command = list(argv)
    started = time.monotonic()
    read_end, write_end = os.pipe()  # the trampoline's report: end-of-file once it has exec'd the command
    try:
        try:
            # No preexec_fn (see _trampoline). start_new_session is done by CPython itself, in C, between
            # fork and exec (async-signal-safe, like process_group=0): the child gets its own session and
            # process group (pgid == pid, which _kill_group relies on) and no controlling terminal.
            process = subprocess.Popen(
                _trampoline(limits, write_end, command),
                cwd=workdir,
                env=child_env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(write_end,),
                start_new_session=True,
            )
        finally:
            os.close(write_end)
        failure = _trampoline_failure(read_end, limits.wall_s)
    finally:
        os.close(read_end)
    if failure is not None:  # limits could not be set, or the command could not be exec'd: not the candidate's
        process.wait()
        _kill_group(process.pid)
        raise _launch_error(failure, command[0])
    return Sandboxed(process, token, level, started)


def reap(sandboxed: Sandboxed) -> None:
    """Kill whatever the sandboxed command left behind: its process group, then every process that carries
    its token (those that left the group with setsid)."""
    _kill_group(sandboxed.process.pid)
    _sweep(sandboxed.token)


def run_sandboxed(
    argv: list[str],
    workdir: Path,
    limits: Limits = Limits(),
    isolation: str | None = None,
    readonly_paths: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    devices: Sequence[Path] = (),
) -> SandboxResult:
    """Run ``argv`` in ``workdir`` (``start_sandboxed``) to its end or its deadline, ``limits.wall_s``.

    The child's stdout and stderr are ``workdir/.stdout`` and ``workdir/.stderr``."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / ".stdout", workdir / ".stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        child = start_sandboxed(argv, workdir, limits, isolation, readonly_paths, env, devices, stdout=out, stderr=err)
        process, timed_out = child.process, False
        try:
            process.wait(timeout=max(0.0, limits.wall_s - (time.monotonic() - child.started)))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process.pid)
            process.wait()
        wall_s = time.monotonic() - child.started
        reap(child)  # grandchildren left behind by a child that exited, and those that left the group (setsid)
    return SandboxResult(
        returncode=process.returncode,
        timed_out=timed_out,
        killed_by_signal=killed_by(process.returncode, child.isolation),
        stdout_tail=tail(out_path),
        stderr_tail=tail(err_path),
        wall_s=wall_s,
        isolation=child.isolation,
    )


def killed_by(code: int, isolation: str) -> int | None:
    """The signal that ended a child with exit status ``code`` (Popen's -N; bwrap reports 128 + N)."""
    if code < 0:
        return -code
    return code - 128 if isolation == "bwrap" and code > 128 else None
