"""Executors run worker jobs in sandboxed child processes: a local pool, or Ray tasks on a cluster.

Either way one job (boundary/job.py) is one process (``python -m podisco.discovery.child.worker job.json
result.json``) under
``sandbox.run_sandboxed``; the executor only decides where and how many at a time. Trusted jobs (a
registered reference loss, no candidate code) run at the ``process`` level so they may fill the shared
reference cache; candidate jobs run at the run's isolation level. Given GPUs, each job holds ``gpus_per_job``
of them (``CUDA_VISIBLE_DEVICES``, the device nodes bound into bwrap); one GPU per job was checked on an H200
under bwrap and unshare.
A cleanly finished job's result is also kept beside its folder, where the sandboxed child cannot write, so
that a resumed run uses it instead of running the job again.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import select
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from podisco.cache import atomic_output
from podisco.discovery.boundary.job import Job
from podisco.discovery.boundary.sandbox import (
    Limits,
    Sandboxed,
    SandboxError,
    SandboxResult,
    gpu_devices,
    reap,
    run_sandboxed,
    scrubbed_env,
    start_sandboxed,
    tail,
)


@dataclass
class ExecutionSettings:
    isolation: str
    limits: Limits = field(default_factory=Limits)
    readonly_paths: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()  # each job holds gpus_per_job of these (CUDA_VISIBLE_DEVICES) while it runs
    gpus_per_job: int = 1
    warm_workers: bool = False  # candidate jobs go to warm slots (WarmSlot): one per worker, forking per job
    slots_folder: str = ""  # where the warm slots' folders go (on the jobs' filesystem: folders are moved out)


class Executor(Protocol):
    """Where and how many sandboxed worker jobs run at a time; each job is one process either way."""

    workers: int  # jobs that may run at once

    def submit(self, job: Job, workdir: Path) -> Future: ...

    def shutdown(self) -> None: ...


def _finished_path(workdir: Path) -> Path:
    """Beside the job's folder, not in it: the sandboxed child can write its folder, never this file."""
    return workdir.with_name(workdir.name + ".finished.json")


def finished_result(job: Job, workdir: Path) -> dict[str, Any] | None:
    """The result of the same work finished earlier by a worker that exited cleanly, else None."""
    try:
        kept = json.loads(_finished_path(Path(workdir)).read_text())
    except (OSError, ValueError):
        return None
    same = kept.get("identity") == job.identity()
    return {**kept["result"], "reused": True} if same and isinstance(kept.get("result"), dict) else None


def _fresh_workdir(job: Job, workdir: Path) -> None:
    _finished_path(workdir).unlink(missing_ok=True)
    if workdir.exists():  # a re-dispatched job (after a crash) starts clean
        shutil.rmtree(workdir)
    (workdir / "tmp").mkdir(parents=True)
    job.write(workdir / "job.json")


def _limits(job: Job, settings: ExecutionSettings) -> Limits:
    return replace(settings.limits, wall_s=job.wall_s) if job.wall_s else settings.limits


def execute(job: Job, workdir: Path, settings: ExecutionSettings, gpu: str | None = None) -> dict[str, Any]:
    """Run one job to completion in a fresh sandboxed worker process; a job that leaves no result becomes a
    ``failed`` result saying why. With ``gpu``, the job sees that one GPU (and under bwrap, the NVIDIA
    device nodes)."""
    workdir = Path(workdir)
    _fresh_workdir(job, workdir)
    argv = [sys.executable, "-m", "podisco.discovery.child.worker", "job.json", "result.json"]
    isolation = "process" if job.trusted else settings.isolation
    limits = _limits(job, settings)
    env = {**settings.env, "TMPDIR": str(workdir / "tmp")}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    outcome = run_sandboxed(
        argv,
        workdir,
        limits,
        isolation,
        [Path(p) for p in settings.readonly_paths],
        scrubbed_env(env),
        devices=gpu_devices() if gpu is not None else (),
    )
    return job_result(job, workdir, outcome, limits.wall_s)


def job_result(job: Job, workdir: Path, outcome: SandboxResult, deadline_s: float) -> dict[str, Any]:
    """The worker's result in ``workdir`` with the sandbox's account of the run, or a ``failed`` result that says
    why there is none (killed at the deadline, by a signal, an exit without a result). A clean result is also
    kept beside the folder for a resumed run."""
    sandbox = {
        "isolation": outcome.isolation,
        "wall_s": outcome.wall_s,
        "deadline_s": deadline_s,
        "returncode": outcome.returncode,
    }
    result_path = workdir / "result.json"
    if result_path.exists() and not outcome.timed_out:
        try:
            result = {**json.loads(result_path.read_text()), "sandbox": sandbox}
        except ValueError:
            return {"status": "failed", "error": "the worker's result file is not valid JSON", "sandbox": sandbox}
        if outcome.returncode == 0:  # kept for a resumed run: a killed parent or failed judge redoes nothing
            with atomic_output(_finished_path(workdir)) as tmp:
                tmp.write_text(json.dumps({"identity": job.identity(), "result": result}))
        return result
    if outcome.timed_out:
        reason = f"the job ran past its deadline of {deadline_s:g} s and was killed" + (
            " (sized from the reference runs' time: --execution.deadline_multiple)" if job.wall_s else ""
        )
    elif outcome.killed_by_signal:
        reason = f"the worker was killed by signal {outcome.killed_by_signal} (memory or CPU limit?)"
    else:
        reason = f"the worker exited with code {outcome.returncode} and no result"
    tail = outcome.stderr_tail.strip().splitlines()[-6:]
    return {"status": "failed", "error": reason + ("\n" + "\n".join(tail) if tail else ""), "sandbox": sandbox}


def warm_slot_argv(isolation: str) -> list[str]:
    """The slot's command. ``-P``: the slot's folder is not put on sys.path, as ``-m`` does with the working
    directory. Each job's folder lies inside the slot's, so a candidate can write there; without ``-P`` a
    ``scipy.py`` it left would run in a later candidate's child at that child's first ``import scipy``. In a
    bwrap sandbox the slot is alone in its pid namespace, and kills whatever a child left running."""
    own_namespace = ["--own-pid-namespace"] if isolation == "bwrap" else []  # forkserver.OWN_PID_NAMESPACE
    return [sys.executable, "-P", "-m", "podisco.discovery.child.forkserver", *own_namespace]


class WarmSlot:
    """One warm worker slot (``--warm-workers``): a long-lived sandboxed ``child/forkserver.py`` that imported
    torch and loaded the task once, and forks a fresh child per candidate job (see that module). Each job runs
    in a folder inside the slot's own (``job-<random>``), which is moved to the job's real folder once the child
    has ended, before the slot takes the next job. A slot that dies or stops answering is killed and started
    again for the next job; the job it was running fails, saying so."""

    GRACE_S = 30.0  # past a job's deadline, the slot itself must have answered (it kills the child at it)

    def __init__(self, folder: Path, settings: ExecutionSettings) -> None:
        self.folder, self.settings = Path(folder), settings
        self._server: Sandboxed | None = None
        self._pending = b""  # what the slot wrote that was not read as a reply yet
        self.starts = 0  # how many times a slot process was started (the cost a warm slot saves)

    def _start(self) -> Sandboxed:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        (self.folder / "tmp").mkdir(parents=True)
        env = {**self.settings.env, "TMPDIR": str(self.folder / "tmp")}
        argv = warm_slot_argv(self.settings.isolation)
        with (self.folder / ".stderr").open("wb") as err:
            server = start_sandboxed(
                argv,
                self.folder,
                # the slot lives for the whole run: the per-job deadline is the slot's to enforce; the
                # CPU-seconds limit holds per process, so each forked child starts its own count at zero
                replace(self.settings.limits, wall_s=120.0),
                self.settings.isolation,
                [Path(p) for p in self.settings.readonly_paths],
                scrubbed_env(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.starts += 1
        self._pending = b""
        if self._read(server, 300.0) is None:
            self._stop(server)
            raise SandboxError(f"the warm worker slot did not start: {tail(self.folder / '.stderr')[-800:]}")
        return server

    def _read(self, server: Sandboxed, timeout: float) -> dict | None:
        """The slot's next reply, or None when it ended or did not answer within ``timeout``. Read with os.read
        into this slot's own buffer: a buffered reader could hold a second reply where select() cannot see it."""
        deadline, fd = time.monotonic() + timeout, server.process.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the slot ended
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _stop(self, server: Sandboxed) -> None:
        server.process.kill()
        server.process.wait()
        reap(server)

    def _send(self, request: dict) -> dict | None:
        """Hand the slot a job; its ``started`` reply, or None when the slot is gone (it then never ran it)."""
        assert self._server is not None
        try:
            self._server.process.stdin.write((json.dumps(request) + "\n").encode())
            self._server.process.stdin.flush()
        except OSError:  # the slot's end of the pipe is gone
            return None
        reply = self._read(self._server, 60.0)
        return reply if reply and "started" in reply else None

    def _restart(self) -> None:
        if self._server is not None:
            self._stop(self._server)
        self._server = None

    def run(self, job: Job, workdir: Path) -> dict[str, Any]:
        """Like ``execute``, in this slot."""
        workdir, limits = Path(workdir), _limits(job, self.settings)
        folder = self.folder / f"job-{secrets.token_hex(8)}"
        request = {"dir": str(folder.resolve()), "wall_s": limits.wall_s}
        for _ in range(2):  # a slot that died between jobs never started this one: once more, in a fresh slot
            if self._server is None or self._server.process.poll() is not None:
                self._server = self._start()  # before the job's folder: a start empties the slot's
            _fresh_workdir(job, folder)
            started = time.monotonic()
            if self._send(request) is not None:
                break
            self._restart()
        else:
            raise SandboxError(f"the warm worker slot in {self.folder} died twice before it could start a job")
        reply = self._read(self._server, limits.wall_s + self.GRACE_S)
        if reply is None or "returncode" not in reply:  # the slot died or hung: a fresh one takes the next job
            self._restart()
            reply = {"returncode": -9, "signal": None, "timed_out": time.monotonic() - started > limits.wall_s}
            with (folder / ".stderr").open("a") as err:
                err.write("\nthe warm worker slot stopped answering and was restarted\n")
        outcome = SandboxResult(
            returncode=reply["returncode"],
            timed_out=reply["timed_out"],
            killed_by_signal=reply.get("signal"),
            stdout_tail=tail(folder / ".stdout"),
            stderr_tail=tail(folder / ".stderr"),
            wall_s=reply.get("wall_s", time.monotonic() - started),
            isolation=f"{self.settings.isolation} (warm slot)",
        )
        _finished_path(workdir).unlink(missing_ok=True)
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(workdir)  # out of the slot before its next candidate can see it
        return job_result(job, workdir, outcome, limits.wall_s)

    def close(self) -> None:
        if self._server is not None:
            self._server.process.stdin.close()  # end-of-file ends the slot; anything left is killed
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.process.wait(timeout=10)
            self._stop(self._server)
            self._server = None


def uses_warm_slot(job: Job, settings: ExecutionSettings) -> bool:
    """Warm slots take candidate jobs on the CPU in one process; reference runs (trusted, at the ``process``
    level), GPU jobs and jobs on several ranks start cold."""
    return settings.warm_workers and not job.trusted and not settings.gpus and job.processes == 1


def gpu_groups(gpus: tuple[str, ...], per_job: int) -> list[str]:
    """The GPUs partitioned among concurrent jobs: ("0", "1", "2", "3") by 2 -> ["0,1", "2,3"]; a remainder
    too small for a job is left idle."""
    if gpus and len(gpus) < per_job:
        raise ValueError(f"a job needs {per_job} GPUs; only {len(gpus)} are available ({','.join(gpus)})")
    return [",".join(gpus[i : i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)]


class LocalExecutor:
    """At most ``workers`` sandboxed jobs at a time on this machine; with GPUs, each job holds its own
    ``gpus_per_job`` of them while it runs."""

    def __init__(self, workers: int, settings: ExecutionSettings) -> None:
        groups = gpu_groups(settings.gpus, settings.gpus_per_job)
        if settings.gpus:
            workers = min(workers, len(groups))
        self.workers, self.settings = workers, settings
        self._free_gpus: queue.Queue[str] = queue.Queue()
        for group in groups:
            self._free_gpus.put(group)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="podisco-job")
        self._slots: queue.Queue[WarmSlot] = queue.Queue()
        self.slots: list[WarmSlot] = []
        if settings.warm_workers:
            for number in range(workers):
                self.slots.append(WarmSlot(Path(settings.slots_folder) / f"slot-{number}", settings))
                self._slots.put(self.slots[-1])

    def _run(self, job: Job, workdir: Path) -> dict[str, Any]:
        if uses_warm_slot(job, self.settings):
            slot = self._slots.get()  # never waits: one slot per worker thread
            try:
                return slot.run(job, workdir)
            finally:
                self._slots.put(slot)
        if not self.settings.gpus:
            return execute(job, workdir, self.settings)
        gpu = self._free_gpus.get()  # never waits: there are no more workers than GPU groups
        try:
            return execute(job, workdir, self.settings, gpu)
        finally:
            self._free_gpus.put(gpu)

    def submit(self, job: Job, workdir: Path) -> Future:
        return self._pool.submit(self._run, job, workdir)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for slot in self.slots:
            slot.close()


class RayExecutor:
    """Each job is a Ray task that runs the same sandboxed process on whichever node Ray places it."""

    def __init__(self, address: str, settings: ExecutionSettings, cpus_per_job: int = 1) -> None:
        try:
            import ray
        except ImportError as error:
            raise RuntimeError("the Ray executor needs ray: pip install 'podisco[ray]'") from error
        self._ray = ray
        ray.init(address=address or None, ignore_reinit_error=True, log_to_driver=False)
        # Ray picks a node with the GPUs free and says which in CUDA_VISIBLE_DEVICES; the ranks of a job on
        # several processes run on that one node (a task is one process tree)
        gpus = settings.gpus_per_job if settings.gpus else 0
        cpus = cpus_per_job * settings.gpus_per_job
        self._remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_execute_on_node)
        self.settings = settings
        resources = ray.cluster_resources()
        self.workers = max(1, int(resources.get("GPU" if gpus else "CPU", 1)) // (gpus or cpus))

    def submit(self, job: Job, workdir: Path) -> Future:
        return self._remote.remote(job.to_json(), str(workdir), _settings_dict(self.settings)).future()

    def shutdown(self) -> None:
        self._ray.shutdown()


def _settings_dict(settings: ExecutionSettings) -> dict:
    return {**asdict(settings), "limits": asdict(settings.limits)}


def _execute_on_node(job: dict, workdir: str, settings: dict) -> dict:
    limits = Limits(**settings.pop("limits"))
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") if settings["gpus"] else None
    return execute(Job.from_json(job), Path(workdir), ExecutionSettings(limits=limits, **settings), gpu)


def default_workers(threads_per_job: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, threads_per_job))
