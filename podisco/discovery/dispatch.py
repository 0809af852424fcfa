"""Turning the run's state into worker jobs, and submitting them unless a finished result can be reused."""

from __future__ import annotations

import statistics
from concurrent.futures import Future
from pathlib import Path

from podisco.discovery.boundary.job import Job
from podisco.discovery.config import RunState
from podisco.discovery.executors import Executor, finished_result


def make_job(state: RunState, seeds, beta: float | None = None, **fields) -> Job:
    execution, search = state.config.execution, state.config.search
    return Job(
        task=state.spec,
        beta=search.beta if beta is None else beta,
        seeds=tuple(seeds),
        threads=execution.threads,
        duplicate_distance=search.duplicate_distance,
        processes=execution.gpus_per_job,
        accelerate_config=accelerate_config(execution),
        wall_s=deadline(state, len(seeds)),
        **fields,
    )


def accelerate_config(execution) -> str:
    """The Accelerate config file of multi-process jobs as an absolute path (the sandbox mounts it), or ""."""
    return str(Path(execution.accelerate_config).resolve()) if execution.accelerate_config else ""


def deadline(state: RunState, seeds: int) -> float:
    """Seconds a job on ``seeds`` seeds may run: ``deadline_multiple`` x (the reference runs' seconds per seed
    x seeds + their start-up), never more than the cap; the cap itself until reference runs were timed."""
    multiple, cap = state.config.execution.deadline_multiple, state.wall_cap_s
    if not multiple or state.reference_seconds is None:
        return cap
    per_seed, startup = state.reference_seconds
    return round(min(cap, multiple * (per_seed * seeds + startup)), 1)


def job_seconds(timings: dict | None, seeds: int) -> dict[str, float] | None:
    """A finished job's (seconds per seed, start-up) from its worker timings and the sandbox's wall time."""
    train = (timings or {}).get("train_eval_s")
    wall = ((timings or {}).get("sandbox") or {}).get("wall_s")
    if train is None or wall is None or seeds < 1:
        return None
    return {"per_seed": train / seeds, "startup": max(0.0, wall - train)}


def typical_seconds(measured: list[dict[str, float] | None]) -> tuple[float, float] | None:
    """The median (seconds per seed, start-up) of the jobs that were timed; None when none was."""
    timed = [m for m in measured if m]
    if not timed:
        return None
    return statistics.median(m["per_seed"] for m in timed), statistics.median(m["startup"] for m in timed)


def describe_deadline(state: RunState) -> str:
    """The rule, for the run's log: what a one-seed job gets and why."""
    if state.reference_seconds is None or not state.config.execution.deadline_multiple:
        return f"job deadlines: {state.wall_cap_s:g} s (the cap; no timed reference runs to size them by)"
    per_seed, startup = state.reference_seconds
    multiple = state.config.execution.deadline_multiple
    return (
        f"job deadlines: {multiple:g} x ({per_seed:.0f} s per seed + {startup:.0f} s start-up), as the reference "
        f"runs took; {deadline(state, 1):g} s for one seed, at most {state.wall_cap_s:g} s"
    )


def submit(executor: Executor, job: Job, workdir: Path) -> Future:
    """Run ``job``, unless its worker already finished (the run was killed, or the judge failed, after it):
    then its result, kept by ``executors.execute`` outside the sandbox's folder, is used again."""
    result = finished_result(job, workdir)
    if result is None:
        return executor.submit(job, workdir)
    done: Future = Future()
    done.set_result(result)
    return done


def submit_per_seed(executor: Executor, state: RunState, seeds, workdir: Path, **fields) -> list[Future]:
    """One job per seed (``workdir-seedN``): a 10-seed held-out run spreads over the workers, fits the per-job
    deadline that one seed's run was sized for, and a resumed run keeps every seed that finished."""
    return [
        submit(executor, make_job(state, [seed], **fields), workdir.with_name(f"{workdir.name}-seed{seed}"))
        for seed in seeds
    ]


def merge_seed_results(results: list[dict]) -> dict:
    """Per-seed results as one: evaluated only when every seed was, the rows in seed order, the first error."""
    failed = next((r for r in results if r.get("status") != "evaluated"), None)
    if failed is not None:
        return {"status": failed.get("status", "failed"), "error": failed.get("error") or "no result"}
    return {"status": "evaluated", "per_seed": [row for r in results for row in r.get("per_seed", [])]}
