"""The β-transfer stage: does the run's best candidate hold up away from the β it was found at?

The confirmed best candidate (else the best on held-out seeds, else the search's best) is trained at every β of a
wide grid, as the paper's IMDb figure does (docs/paper.md, IMDb: β from 0.01 to 2.5), on the held-out seeds, and
compared at each β with the reference loss (DPO) trained at that β on the same seeds: the task's summary (IMDb:
reward and KL) of both, and the paired difference of the task's score (IMDb: reward − λ·KL). The result is kept
in the run's verdict, one β at a time, so a resumed run trains only the β values still missing; the report draws
it as a reward-vs-KL frontier.
"""

from __future__ import annotations

from concurrent.futures import as_completed

from podisco.discovery.archive import Attempt
from podisco.discovery.config import RunState
from podisco.discovery.dispatch import merge_seed_results, submit_per_seed
from podisco.discovery.executors import Executor
from podisco.discovery.references import ensure_references, update_verdict
from podisco.discovery.results import finish_rows, seed_differences
from podisco.progress import Console
from podisco.stats import estimate, format_estimate


def transfer_betas(state: RunState) -> tuple[float, ...]:
    """The config's β values, else the task's (``transfer_betas``); empty: no transfer stage."""
    search = state.config.search
    if not search.transfer or search.reevaluate_top <= 0:  # no held-out stage asked for: no stage after it
        return ()
    return tuple(search.transfer_betas or getattr(state.task, "transfer_betas", ()))


def transfer_seeds(state: RunState) -> tuple[int, ...]:
    """The held-out seeds (search seeds dropped), the first ``transfer_seeds`` of them when that is set."""
    heldout = [s for s in state.reevaluate_seeds if s not in state.seeds]
    count = state.config.search.transfer_seeds
    return tuple(heldout[:count] if count else heldout)


def _subject(state: RunState) -> Attempt | None:
    """The confirmed best candidate, else the best held-out mean, else the search's best."""
    verdict = (state.archive.run(state.run_id) or {}).get("verdict") or {}
    confirmations = verdict.get("confirmations") or []
    chosen = next((c for c in confirmations if c["better"]), confirmations[0] if confirmations else None)
    if chosen is not None:
        return state.archive.attempt(chosen["attempt_id"])
    best = state.archive.best(state.run_id, 1)
    return best[0] if best else None


def sweep_beta(state: RunState, executor: Executor, log: Console) -> None:
    """Train the subject and the reference loss at every transfer β still missing from the verdict."""
    betas, seeds = transfer_betas(state), transfer_seeds(state)
    if not (state.task.paired and betas and seeds):
        return
    subject = _subject(state)
    if subject is None:
        return
    stored = ((state.archive.run(state.run_id) or {}).get("verdict") or {}).get("transfer") or {}
    if stored.get("attempt_id") != subject.id or stored.get("seeds") != list(seeds):
        reference = "DPO" if state.task.reference_loss == "sigmoid" else state.task.reference_loss
        stored = {"attempt_id": subject.id, "name": subject.name, "reference": reference, "seeds": list(seeds)}
        stored["points"] = {}
    points: dict[str, dict] = stored["points"]
    missing = [b for b in betas if f"{b:g}" not in points]
    if not missing:
        return
    ensure_references(state, executor, seeds, missing, log)
    runs = {
        beta: submit_per_seed(
            executor,
            state,
            seeds,
            state.root / "work" / state.run_id / f"transfer-{subject.id}-beta{beta:g}",
            beta=beta,
            name=subject.name,
            code=subject.code,
        )
        for beta in missing
    }
    owner = {future: beta for beta, futures in runs.items() for future in futures}
    left = {beta: len(futures) for beta, futures in runs.items()}
    with log.step(f"β transfer of {subject.name}", len(owner), "runs") as progress:
        for future in as_completed(owner):
            beta = owner[future]
            progress.advance(note=f"β={beta:g}")
            left[beta] -= 1
            if left[beta]:  # counted, not f.done(): two seeds finishing together must not merge twice
                continue
            result = merge_seed_results([f.result() for f in runs[beta]])
            points[f"{beta:g}"] = _point(state, subject, beta, seeds, result, log)
            update_verdict(state, transfer=stored)  # one β at a time: a kill loses at most the βs in flight


def _point(state: RunState, subject: Attempt, beta: float, seeds, result: dict, log: Console) -> dict:
    """One β: the candidate's and the reference's summaries and the paired difference of the task's score."""
    task, references = state.task, state.reference_rows[beta]
    reference_rows = [references[str(s)] for s in seeds]
    point = {"beta": beta, "reference": task.summarise(reference_rows)}
    if result.get("status") != "evaluated" or len(result.get("per_seed", [])) < len(seeds):
        error = (result.get("error") or result.get("status") or "no result").splitlines()[0]
        log(f"β transfer: {subject.name} at β={beta:g} failed: {error}")
        return {**point, "error": error}
    rows = finish_rows(state, result["per_seed"], f"the β-transfer run of {subject.name} at β={beta:g}")
    difference = estimate(seed_differences(state, rows, references))
    name = "DPO" if task.reference_loss == "sigmoid" else task.reference_loss
    log(f"β transfer: {subject.name} minus {name}, both at β={beta:g}: {format_estimate(difference)}")
    return {
        **point,
        "candidate": task.summarise(rows),
        "difference": difference.mean,
        "se": difference.se,
        "per_seed": rows,
    }
