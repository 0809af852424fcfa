"""The held-out stage: the search's top k re-run on seeds the search never used, paired with tuned DPO on the
same seeds; confirm.py's Holm-corrected tests turn them into the run's verdict."""

from __future__ import annotations

from concurrent.futures import as_completed

from podisco.discovery.config import RunState
from podisco.discovery.confirm import confirm, headline
from podisco.discovery.dispatch import merge_seed_results, submit_per_seed
from podisco.discovery.executors import Executor
from podisco.discovery.references import ensure_references, update_verdict
from podisco.discovery.results import finish_rows, seed_differences
from podisco.progress import Console
from podisco.stats import estimate, format_estimate


def confirm_top(state: RunState, executor: Executor, log: Console) -> None:
    """The top candidates of the search, re-run on held-out seeds (disjoint from every search seed) against
    tuned DPO on the same seeds; Holm-corrected one-sided tests decide "better" or "not distinguishable"
    (confirm.py). A resumed run re-runs only what is missing and corrects over all of them."""
    search = state.config.search
    heldout = [s for s in state.reevaluate_seeds if s not in state.seeds]
    if search.reevaluate_top <= 0 or not heldout:
        return
    if len(heldout) < len(state.reevaluate_seeds):
        log(f"held-out seeds exclude the search seeds: confirming on {','.join(map(str, heldout))}")
    done = {r["attempt_id"] for r in state.archive.reevaluations(state.run_id) if r["metrics"].get("heldout")}
    top = state.archive.best(state.run_id, search.reevaluate_top)
    baseline_beta = state.baseline.beta if state.baseline else search.beta
    ensure_references(state, executor, heldout, [baseline_beta], log)
    references = state.reference_rows.get(baseline_beta, {})
    todo = {a.id: a for a in top if a.id not in done}
    runs = {
        # at the candidate's own best β under the frontier fitness (frontier.py), else at the run's β
        a.id: submit_per_seed(
            executor,
            state,
            heldout,
            state.root / "work" / state.run_id / f"heldout-{a.id}",
            beta=a.metrics.get("best_beta"),
            name=a.name,
            code=a.code,
        )
        for a in todo.values()
    }
    owner = {future: todo[aid] for aid, futures in runs.items() for future in futures}
    left = {aid: len(futures) for aid, futures in runs.items()}
    with log.step("held-out confirmation", len(owner), "runs") as progress:
        for future in as_completed(owner):
            a = owner[future]
            progress.advance(note=a.name)
            left[a.id] -= 1
            if left[a.id]:  # counted, not f.done(): two seeds finishing together must not merge twice
                continue
            result = merge_seed_results([f.result() for f in runs[a.id]])
            if result["status"] != "evaluated":
                log(f"held-out run of {a.name} failed: {(result.get('error') or '').splitlines()[:1]}")
                continue
            rows = finish_rows(state, result["per_seed"], f"the held-out run of {a.name}")
            diffs = seed_differences(state, rows, references)
            fitness = estimate(diffs)
            metrics = {"per_seed": rows, "differences": diffs, "heldout": True, "baseline_beta": baseline_beta}
            state.archive.add_reevaluation(a.id, [r["seed"] for r in rows], fitness.mean, fitness.se, metrics)
            log(f"held out: {a.name} over {len(rows)} seeds: {format_estimate(fitness)}")
    rows = [r for r in state.archive.reevaluations(state.run_id) if r["metrics"].get("heldout")]
    if not rows:
        return
    results = confirm([(r["attempt_id"], r["name"], r["seeds"], r["metrics"]["differences"]) for r in rows])
    against = state.baseline.describe() if state.baseline else "the search's fitness"
    if state.task.paired:
        update_verdict(
            state,
            confirmations=[c.to_json() for c in results],
            headline=headline(results, "tuned DPO" if state.baseline and state.baseline.tuned else "DPO"),
            against=against,
        )
