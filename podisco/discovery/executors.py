"""Executors run worker jobs in sandboxed child processes: a local pool, or Ray tasks on a cluster.

Either way one job is one process (``python -m podisco.discovery.worker job.json result.json``) under
``sandbox.run_sandboxed``; the executor only decides where and how many at a time. Trusted jobs (a
registered reference loss, no candidate code) run at the ``process`` level so they may fill the shared
reference cache; candidate jobs run at the run's isolation level.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podisco.discovery.sandbox import Limits, run_sandboxed, scrubbed_env


@dataclass
class Job:
    payload: dict  # what the worker reads (worker.py)
    workdir: str
    trusted: bool = False


@dataclass
class ExecutionSettings:
    isolation: str
    limits: Limits = field(default_factory=Limits)
    readonly_paths: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def execute(job: Job, settings: ExecutionSettings) -> dict[str, Any]:
    """Run one job to completion; a job that leaves no result becomes a ``failed`` result saying why."""
    workdir = Path(job.workdir)
    if workdir.exists():  # a re-dispatched job (after a crash) starts clean
        shutil.rmtree(workdir)
    (workdir / "tmp").mkdir(parents=True)
    (workdir / "job.json").write_text(json.dumps(job.payload))
    argv = [sys.executable, "-m", "podisco.discovery.worker", "job.json", "result.json"]
    isolation = "process" if job.trusted else settings.isolation
    outcome = run_sandboxed(
        argv,
        workdir,
        settings.limits,
        isolation,
        [Path(p) for p in settings.readonly_paths],
        scrubbed_env({**settings.env, "TMPDIR": str(workdir / "tmp")}),
    )
    sandbox = {"isolation": outcome.isolation, "wall_s": outcome.wall_s, "returncode": outcome.returncode}
    result_path = workdir / "result.json"
    if result_path.exists() and not outcome.timed_out:
        try:
            return {**json.loads(result_path.read_text()), "sandbox": sandbox}
        except ValueError:
            return {"status": "failed", "error": "the worker's result file is not valid JSON", "sandbox": sandbox}
    if outcome.timed_out:
        reason = f"the job ran past its wall-clock limit of {settings.limits.wall_s:g} s and was killed"
    elif outcome.killed_by_signal:
        reason = f"the worker was killed by signal {outcome.killed_by_signal} (memory or CPU limit?)"
    else:
        reason = f"the worker exited with code {outcome.returncode} and no result"
    tail = outcome.stderr_tail.strip().splitlines()[-6:]
    return {"status": "failed", "error": reason + ("\n" + "\n".join(tail) if tail else ""), "sandbox": sandbox}


class LocalExecutor:
    """At most ``workers`` sandboxed jobs at a time on this machine."""

    def __init__(self, workers: int, settings: ExecutionSettings) -> None:
        self.workers, self.settings = workers, settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="podisco-job")

    def submit(self, job: Job) -> Future:
        return self._pool.submit(execute, job, self.settings)

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
        self._remote = ray.remote(num_cpus=cpus_per_job, max_retries=0)(_execute_on_node)
        self.settings = settings
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_job)

    def submit(self, job: Job) -> Future:
        return self._remote.remote(asdict(job), _settings_dict(self.settings)).future()

    def shutdown(self) -> None:
        self._ray.shutdown()


def _settings_dict(settings: ExecutionSettings) -> dict:
    return {**asdict(settings), "limits": asdict(settings.limits)}


def _execute_on_node(job: dict, settings: dict) -> dict:
    limits = Limits(**settings.pop("limits"))
    return execute(Job(**job), ExecutionSettings(limits=limits, **settings))


def default_workers(threads_per_job: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, threads_per_job))
