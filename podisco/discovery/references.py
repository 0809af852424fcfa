"""Reference runs and the tuned baseline: the task's reference loss (DPO) on the run's seeds at every β of the
grid, cached across runs (``references/``), and the best β of the grid as what candidates are paired with."""

from __future__ import annotations

import json
from concurrent.futures import as_completed
from dataclasses import replace
from pathlib import Path

from podisco.cache import atomic_output
from podisco.discovery.archive import code_hash
from podisco.discovery.baseline import tune
from podisco.discovery.config import RunState
from podisco.discovery.dispatch import job_seconds, make_job, submit, typical_seconds
from podisco.discovery.executors import Executor
from podisco.discovery.results import finish_rows, result_timings
from podisco.errors import PodiscoError
from podisco.progress import Console
from podisco.tasks.base import TaskSpec, has_fidelity

REFERENCE_ATTEMPTS = 3


def _reference_key(state: RunState, beta: float) -> str:
    return reference_key(state.spec, state.task.reference_loss, beta)


def reference_key(spec: TaskSpec, loss: str, beta: float) -> str:
    """What names a reference run (the task as prepared, the loss, β): runs of any root may share them."""
    return code_hash(json.dumps({"task": spec.to_json(), "beta": beta, "loss": loss}, sort_keys=True))


def _reference_path(state: RunState, beta: float, seed: int) -> Path:
    return state.root / "references" / f"{_reference_key(state, beta)}-seed{seed}.json"


def ensure_references(state: RunState, executor: Executor, seeds, betas, log: Console) -> None:
    """``state.reference_rows[β][seed]`` for every β and seed, trained where no earlier run left them."""
    if not state.task.paired:
        return
    missing = []
    for beta in betas:
        for seed in seeds:
            path = _reference_path(state, beta, seed)
            if path.exists():
                state.reference_rows.setdefault(beta, {})[str(seed)] = json.loads(path.read_text())
            else:
                missing.append((beta, seed))
    loss = state.task.reference_loss

    def run(beta: float, seed: int):
        workdir = state.root / "work" / f"reference-{_reference_key(state, beta)}-{seed}"
        return submit(executor, make_job(state, [seed], beta=beta, name=loss, loss=loss), workdir)

    # A reference run is trusted code: when it fails, the machine did (a killed worker, a full disk), so it is
    # tried again before the run gives up; a candidate's failure is the candidate's and is recorded instead.
    jobs = {run(beta, seed): (beta, seed, 1) for beta, seed in missing}
    with log.step(f"reference runs ({loss})", len(missing), "runs") as progress:
        while jobs:
            future = next(as_completed(jobs))
            (beta, seed, attempt), result = jobs.pop(future), future.result()
            what = f"the reference run ({loss}, β={beta:g})"
            if result.get("status") != "evaluated":
                if attempt < REFERENCE_ATTEMPTS:
                    jobs[run(beta, seed)] = (beta, seed, attempt + 1)
                    continue
                raise PodiscoError(f"{what}, seed {seed}, failed {attempt} times: {result.get('error')}")
            row = finish_rows(state, result["per_seed"][:1], what)[0]
            row["job_seconds"] = job_seconds(result_timings(result), 1)  # what sizes every later job's deadline
            path = _reference_path(state, beta, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp:  # a kill mid-write must not leave half a file for --resume
                tmp.write_text(json.dumps(row))
            state.reference_rows.setdefault(beta, {})[str(seed)] = row
            progress.advance(note=f"β={beta:g} seed {seed}")


def tune_baseline(state: RunState, executor: Executor, log: Console) -> None:
    """Train the reference loss over the β grid on the search seeds; tuned DPO becomes what candidates are
    paired against (``state.references``), and the archive and the proposer are told which β won."""
    if not state.task.paired:
        return
    grid = state.baseline_grid
    ensure_references(state, executor, state.seeds, grid, log)
    state.baseline = tune(state.task, {b: state.reference_rows[b] for b in grid}, state.config.search.beta, state.seeds)
    state.references = state.reference_rows[state.baseline.beta]
    timed = [row.get("job_seconds") for rows in state.reference_rows.values() for row in rows.values()]
    state.reference_seconds = typical_seconds(timed)
    update_verdict(state, baseline=state.baseline.to_json())
    log(f"baseline: {state.baseline.describe()}")


def prepare_stage0(state: RunState, executor: Executor, log: Console) -> None:
    """Stage 0 (``search.stage0``): the task at ``stage0_fraction`` of the steps, and tuned DPO's runs there on
    the first search seed (cached like every reference run), which stage-0 scores are paired with."""
    search = state.config.search
    if not search.stage0:
        return
    if not (has_fidelity(state.task) and state.task.staged):
        log(f"stage 0: off (the {state.task.name} task cannot train for part of its steps, or score in the worker)")
        return
    spec = state.task.at_fidelity(state.spec, search.stage0_fraction)  # type: ignore[attr-defined]
    short = replace(state, spec=spec, reference_rows={})
    beta = state.baseline.beta if state.baseline else search.beta
    ensure_references(short, executor, state.seeds[:1], [beta], log)
    state.stage0_spec, state.stage0_references = spec, short.reference_rows.get(beta, {})
    log(f"stage 0: seed {state.seeds[0]} at {search.stage0_fraction:g} of the steps first, against tuned DPO there")


def update_verdict(state: RunState, **parts) -> None:
    stored = (state.archive.run(state.run_id) or {}).get("verdict") or {}
    state.archive.set_verdict(state.run_id, {**stored, **parts})
