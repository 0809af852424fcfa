"""Turning a worker's result into an archive row: status, fitness against the reference runs, metrics."""

from __future__ import annotations

from podisco.discovery import fitness as fitness_mod
from podisco.discovery.archive import Attempt
from podisco.discovery.config import RunState
from podisco.discovery.judging import judged_rows


def record(state: RunState, attempt: Attempt, result: dict) -> None:
    status = result.get("status", "failed")
    if state.config.judged and status == "evaluated":  # the worker answered; the judge scores here
        what = f"attempt {attempt.id} ({attempt.name})"
        result = {**result, "per_seed": judged_rows(state, result["per_seed"], what)}
    fields = {
        "error": result.get("error"),
        "fingerprint": result.get("fingerprint"),
        "shape": result.get("shape"),
        "timings": {**result.get("timings", {}), "sandbox": result.get("sandbox")},
    }
    if status == "duplicate":
        fields["duplicate_of"] = result.get("duplicate_of")
        fields["fitness"] = _fitness_of(state, result.get("duplicate_of") or "")
        fields["error"] = f"behaves like {result.get('duplicate_of')} (distance {result.get('distance', 0):.3f})"
    if status in ("evaluated", "failed") and result.get("per_seed"):
        rows = result["per_seed"]
        fields["metrics"] = _metrics(state, rows, result)
        fields["seeds"] = [r["seed"] for r in rows]
        if status == "evaluated":
            fields["fitness"], fields["fitness_stderr"] = run_fitness(state, rows)
    if status not in ("invalid", "duplicate", "failed", "evaluated"):
        status, fields["error"] = "failed", f"the worker reported an unknown status {status!r}"
    state.archive.finish(attempt.id, status, **fields)


def run_fitness(state: RunState, rows: list[dict]) -> tuple[float, float | None]:
    task, references = state.config.task, state.references
    return fitness_mod.aggregate([fitness_mod.seed_fitness(task, r, references.get(str(r["seed"]))) for r in rows])


def _metrics(state: RunState, rows: list[dict], result: dict) -> dict:
    metrics = {"per_seed": rows, "promoted": result.get("promoted", True), "flags": result.get("flags")}
    if state.config.task == "digits":
        return metrics
    last = [r.get("train", {}) for r in rows]
    if state.config.task == "imdb":
        outcome = {"reward": _mean(rows, "reward"), "kl": _mean(rows, "kl")}
    else:  # a failed judged attempt has answers but no score
        outcome = {"judge_score": _mean(rows, "score")} if all("score" in r for r in rows) else {}
    metrics["dynamics"] = {
        **outcome,
        "final_margin": _mean_last(last, "rewards/margins"),
        "final_accuracy": _mean_last(last, "rewards/accuracies"),
    }
    return metrics


def _mean(rows: list[dict], key: str) -> float:
    return round(sum(r[key] for r in rows) / len(rows), 4)


def _mean_last(curves: list[dict], key: str) -> float | None:
    values = [c[key][-1] for c in curves if c.get(key)]
    return round(sum(values) / len(values), 4) if values else None


def _fitness_of(state: RunState, label: str) -> float | None:
    """The fitness of what a duplicate behaves like: an archive entry, or a seed that is the registered loss."""
    if label.startswith("attempt:"):
        return state.archive.attempt(int(label.split()[0].split(":")[1])).fitness
    if label.startswith("registry:"):
        from podisco.losses.registry import get_spec

        target = label.removeprefix("registry:")
        for a in state.archive.attempts(state.run_id, "evaluated"):
            if a.proposer == "seed" and get_spec(a.name).name == target:
                return a.fitness
    return None
