"""Candidate jobs in flight: each proposed attempt becomes a worker job with the run's state at the moment it is
submitted (the archive's fingerprints for dedup, the race against the incumbent, the stage-1 threshold), and
each finished result becomes its archive row (``results.record``). Under the frontier fitness a promoted
candidate's result waits here for its jobs at the other grid β values first.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

from podisco.discovery.archive import Attempt
from podisco.discovery.boundary.racing import Race, pooled_se, prior_sd
from podisco.discovery.config import RunState
from podisco.discovery.dispatch import make_job, submit
from podisco.discovery.executors import Executor
from podisco.discovery.results import record, seed_differences


class CandidateJobs:
    """The attempts whose jobs are running; ``submit`` one, ``finish_next`` records the next one to finish."""

    def __init__(self, state: RunState, executor: Executor, log) -> None:
        self.state, self.executor, self.log = state, executor, log
        self._futures: dict[Future, tuple[Attempt, float | None]] = {}
        self._waiting: dict[int, dict] = {}  # attempt id -> its result and grid results so far (frontier)

    def __len__(self) -> int:
        return len(self._futures)

    def attempts(self) -> int:
        """Attempts still running (a frontier candidate's grid jobs count once)."""
        return len({attempt.id for attempt, _ in self._futures.values()})

    def submit(self, attempt: Attempt) -> None:
        state = self.state
        seed_stage = attempt.generation == 0  # the seed archive: no dedup, no early stop
        evaluated = state.archive.attempts(state.run_id, "evaluated")  # read once: every term below is from it
        full = _fully_evaluated(state, evaluated)
        race = None if seed_stage else _race(state, full)
        job = make_job(
            state,
            state.seeds,
            name=attempt.name,
            code=attempt.code,
            known={} if seed_stage else _known_fingerprints(evaluated),
            contenders=() if seed_stage else _contenders(state, evaluated),
            registry_measured=tuple(_registry_measured(state, evaluated)),
            dedup=not seed_stage,
            reference=state.references,
            baseline_grid=state.baseline_grid if state.baseline else (),
            stage1_seeds=state.config.search.stage1_seeds,
            stage_threshold=None if seed_stage or race is not None else _stage_threshold(state, full),
            race=race,
            stage0=_stage0(state, seed_stage, full),
        )
        self._futures[submit(self.executor, job, _workdir(state, attempt))] = (attempt, None)

    def finish_next(self) -> Attempt | None:
        """Wait for the next job; the attempt it finished (now final in the archive), or None when that job was
        one of a frontier candidate's grid jobs and others are still running."""
        state = self.state
        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        (attempt, beta), result = self._futures.pop(future), future.result()
        if beta is None and _wants_grid(state, result):  # promoted: now it pays for the rest of the grid
            self._waiting[attempt.id] = {"result": result, "grid": {}}
            for other in _other_betas(state):
                job = make_job(state, state.seeds, beta=other, name=attempt.name, code=attempt.code)
                self._futures[submit(self.executor, job, _workdir(state, attempt, other))] = (attempt, other)
            return None
        grid = None
        if beta is not None:
            self._waiting[attempt.id]["grid"][beta] = result
            if len(self._waiting[attempt.id]["grid"]) < len(_other_betas(state)):
                return None
            result, grid = self._waiting[attempt.id]["result"], self._waiting.pop(attempt.id)["grid"]
        record(state, attempt, result, grid)
        finished = state.archive.attempt(attempt.id)
        log_attempt(state, finished, self.log)
        return finished


def _known_fingerprints(evaluated: list[Attempt]) -> dict[str, list[float]]:
    return {f"attempt:{a.id} {a.name}": a.fingerprint for a in evaluated if a.fingerprint}


def _contenders(state: RunState, evaluated: list[Attempt]) -> tuple[str, ...]:
    """The entries that may still end in the final top k (``reevaluate_top``): fitness within ``promote_margin``
    of the k-th best. Their labels as ``_known_fingerprints`` and ``_registry_measured`` name them; a candidate
    close to one of them, but not identical, is trained rather than given that entry's score."""
    search = state.config.search
    scored = [a for a in evaluated if a.fitness is not None]
    if not scored:
        return ()
    ranked = sorted((a.fitness for a in scored), reverse=True)
    bar = ranked[min(max(search.reevaluate_top, 1), len(ranked)) - 1] - search.promote_margin
    labels = []
    for a in scored:
        if a.fitness >= bar:
            labels.append(f"attempt:{a.id} {a.name}")
            if (name := _registered_name(state, a)) is not None:
                labels.append(f"registry:{name}")
    return tuple(labels)


def _registry_measured(state: RunState, evaluated: list[Attempt]) -> list[str]:
    """Registered losses whose fitness this run has: the seeds (dpo -> sigmoid, slic -> hinge, ...)."""
    return [name for a in evaluated if (name := _registered_name(state, a)) is not None]


def _registered_name(state: RunState, attempt: Attempt) -> str | None:
    """The registered loss a seed attempt of a preference task is (dpo -> sigmoid); None for any other."""
    if attempt.proposer != "seed" or state.task.kind != "preference":
        return None
    from podisco.losses.registry import get_spec

    return get_spec(attempt.name).name


def _stage_threshold(state: RunState, full: list[Attempt]) -> float | None:
    """Stage 1 promotes a candidate within ``promote_margin`` of the best fully evaluated attempt."""
    search = state.config.search
    if not full or search.stage1_seeds >= len(state.seeds):
        return None
    if not state.task.staged:  # e.g. a judged task: the worker cannot score its own answers
        return None
    return max(a.fitness for a in full) - search.promote_margin


def _race(state: RunState, full: list[Attempt]) -> dict[str, float] | None:
    """Racing's terms from the archive: the incumbent (best fully evaluated attempt) and the per-seed noise of
    the attempts that ran every seed; None (the fixed stage 1 then) when racing is off or nothing is known."""
    search = state.config.search
    terms = _incumbent_and_noise(state, full) if search.racing else None
    if terms is None:
        return None
    best, se, noise = terms
    return Race(best.fitness, se, noise, z=search.racing_z).to_json()


def _incumbent_and_noise(state: RunState, full: list[Attempt]) -> tuple[Attempt, float, float] | None:
    """The best fully evaluated attempt, its pooled SE and the archive's per-seed sd of paired differences;
    None while no attempt ran two seeds or more (or the worker cannot score seeds)."""
    if not full or len(state.seeds) < 2 or not state.task.staged:
        return None
    differences = {a.id: seed_differences(state, a.metrics.get("per_seed") or [], state.references) for a in full}
    noise = prior_sd(list(differences.values()))
    if noise is None:
        return None
    best = max(full, key=lambda a: a.fitness)
    return best, pooled_se(differences[best.id], noise), noise


def _stage0(state: RunState, seed_stage: bool, full: list[Attempt]) -> dict | None:
    """Stage 0's terms (worker._stage0): the task at a fraction of the steps, the reference rows there, and a
    race against the incumbent's stage-0 score (the best fully evaluated attempt that has one), with or without
    racing over the full seeds. The seed archive's jobs only record their stage-0 score, so that later
    candidates have an incumbent to race."""
    if state.stage0_spec is None:
        return None
    stage0 = {"task": state.stage0_spec.to_json(), "reference": state.stage0_references, "race": None}
    scored = [a for a in full if (a.metrics or {}).get("stage0")]
    terms = None if seed_stage or not scored else _incumbent_and_noise(state, full)
    if terms is not None:
        incumbent = max(scored, key=lambda a: a.fitness)
        noise = terms[2]  # one seed on each side: the incumbent's stage-0 score is as noisy as the candidate's
        race = Race(incumbent.metrics["stage0"]["fitness"], noise, noise, z=state.config.search.racing_z)
        stage0["race"] = race.to_json()
    return stage0


def _fully_evaluated(state: RunState, evaluated: list[Attempt]) -> list[Attempt]:
    return [a for a in evaluated if a.fitness is not None and len(a.seeds or []) >= len(state.seeds)]


def _workdir(state: RunState, attempt: Attempt, beta: float | None = None) -> Path:
    suffix = "" if beta is None else f"-beta{beta:g}"
    return state.root / "work" / state.run_id / f"attempt-{attempt.id}{suffix}"


def _other_betas(state: RunState) -> list[float]:
    return [b for b in state.baseline_grid if b != state.config.search.beta]


def _wants_grid(state: RunState, result: dict) -> bool:
    """Frontier fitness: a candidate that ran every search seed (it passed stage 1) is trained at the grid too."""
    return (
        state.config.search.fitness == "frontier"
        and state.task.paired
        and bool(_other_betas(state))
        and result.get("status") == "evaluated"
        and result.get("promoted", True)
        and len(result.get("per_seed", [])) == len(state.seeds)
    )


def log_attempt(state: RunState, a: Attempt, log) -> None:
    best = state.archive.best(state.run_id)
    best_text = f" | best {best[0].fitness:+.4f} ({best[0].name})" if best else ""
    score = f" fitness {a.fitness:+.4f}" if a.fitness is not None else ""
    first_line = ((a.error or "").splitlines() or [""])[0]
    why = f": {first_line[:160]}" if a.status in ("invalid", "failed", "duplicate") or a.fitness is None else ""
    label = f" [{a.rescaling}]" if a.rescaling and a.status != "duplicate" else ""
    log(f"[gen {a.generation} slot {a.slot}] {a.name}: {a.status}{score}{label}{why}{best_text}")
