"""Turning the run's state into worker jobs, and submitting them unless a finished result can be reused."""

from __future__ import annotations

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
        **fields,
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
