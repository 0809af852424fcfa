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

import json
import os
import queue
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from podisco.cache import atomic_output
from podisco.discovery.boundary.job import Job
from podisco.discovery.boundary.sandbox import Limits, gpu_devices, run_sandboxed, scrubbed_env


@dataclass
class ExecutionSettings:
    isolation: str
    limits: Limits = field(default_factory=Limits)
    readonly_paths: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()  # each job holds gpus_per_job of these (CUDA_VISIBLE_DEVICES) while it runs
    gpus_per_job: int = 1


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


def execute(job: Job, workdir: Path, settings: ExecutionSettings, gpu: str | None = None) -> dict[str, Any]:
    """Run one job to completion; a job that leaves no result becomes a ``failed`` result saying why.
    With ``gpu``, the job sees that one GPU (and under bwrap, the NVIDIA device nodes)."""
    workdir = Path(workdir)
    _finished_path(workdir).unlink(missing_ok=True)
    if workdir.exists():  # a re-dispatched job (after a crash) starts clean
        shutil.rmtree(workdir)
    (workdir / "tmp").mkdir(parents=True)
    job.write(workdir / "job.json")
    argv = [sys.executable, "-m", "podisco.discovery.child.worker", "job.json", "result.json"]
    isolation = "process" if job.trusted else settings.isolation
    limits = replace(settings.limits, wall_s=job.wall_s) if job.wall_s else settings.limits
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
    sandbox = {
        "isolation": outcome.isolation,
        "wall_s": outcome.wall_s,
        "deadline_s": limits.wall_s,
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
        reason = f"the job ran past its deadline of {limits.wall_s:g} s and was killed" + (
            " (sized from the reference runs' time: --execution.deadline_multiple)" if job.wall_s else ""
        )
    elif outcome.killed_by_signal:
        reason = f"the worker was killed by signal {outcome.killed_by_signal} (memory or CPU limit?)"
    else:
        reason = f"the worker exited with code {outcome.returncode} and no result"
    tail = outcome.stderr_tail.strip().splitlines()[-6:]
    return {"status": "failed", "error": reason + ("\n" + "\n".join(tail) if tail else ""), "sandbox": sandbox}


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

    def _run(self, job: Job, workdir: Path) -> dict[str, Any]:
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
