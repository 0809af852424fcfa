"""Turning a worker's result into an archive row: status, fitness against the reference runs, metrics."""

from __future__ import annotations

from podisco.discovery.archive import Attempt
from podisco.discovery.config import RunState
from podisco.errors import PodiscoError
from podisco.stats import Estimate, estimate


def finish_rows(state: RunState, rows: list[dict], what: str) -> list[dict]:
    """Each seed's row as the task scores it in the parent (a judged task judges the answers here). A failure
    stops the run with a clear error and loses nothing: the worker's result stays on disk, so ``--resume``
    scores it again without training (loop._submit)."""
    out = []
    for row in rows:
        try:
            out.append(state.task.finish_seed(state.spec, row))
        except PodiscoError as error:  # LLMError (unreachable, refused) or not one usable verdict
            raise PodiscoError(
                f"scoring {what} (seed {row['seed']}) failed: {error}\n"
                f"the trained results are kept; podisco discover --resume --run {state.run_id} scores them "
                "again without training"
            ) from error
    return out


def record(state: RunState, attempt: Attempt, result: dict, grid: dict[float, dict] | None = None) -> None:
    """Finish ``attempt`` with its worker's ``result``; ``grid`` holds its results at the other β values of the
    baseline grid under the frontier fitness (frontier.py), which then decide its fitness."""
    status = result.get("status", "failed")
    if status == "evaluated":
        what = f"attempt {attempt.id} ({attempt.name})"
        result = {**result, "per_seed": finish_rows(state, result["per_seed"], what)}
    fields = {
        "error": result.get("error"),
        "fingerprint": result.get("fingerprint"),
        "shape": result.get("shape"),
        "timings": result_timings(result),
        "deadline_s": (result.get("sandbox") or {}).get("deadline_s"),
    }
    rescaling = result.get("rescaling") or {}
    if rescaling:
        fields["rescaling"] = rescaling["label"]
    if status == "duplicate" and rescaling.get("on_grid"):  # the reference loss at a β the baseline trained
        fields["duplicate_of"] = rescaling["of"]
        fields["fitness"] = _reference_at(state, rescaling["grid_beta"])
        fields["error"] = (
            f"behaves like {rescaling['label']} (distance {rescaling['distance']:.3f}), a β the baseline was "
            "tuned over: it scores what that run scored"
        )
    elif status == "duplicate":
        fields["duplicate_of"] = result.get("duplicate_of")
        fields["fitness"] = _fitness_of(state, result.get("duplicate_of") or "")
        fields["error"] = f"behaves like {result.get('duplicate_of')} (distance {result.get('distance', 0):.3f})"
    stage0 = result.get("stage0") or {}
    if status == "evaluated" and stage0.get("decision") == "stop":  # stopped at stage 0: no full-length fitness
        fields["metrics"] = {"per_seed": [], "promoted": False, "stage0": stage0, "flags": result.get("flags")}
        fields["seeds"] = []
        fields["error"] = stage0_text(stage0)
    if status in ("evaluated", "failed") and result.get("per_seed"):
        rows = result["per_seed"]
        fields["metrics"] = _metrics(state, rows, result)
        fields["seeds"] = [r["seed"] for r in rows]
        if status == "evaluated" and grid:
            fitness, fields["metrics"] = _grid_fitness(state, attempt, rows, grid, fields["metrics"])
            fields["fitness"], fields["fitness_stderr"] = fitness.mean, fitness.se
        elif status == "evaluated":
            fitness = run_fitness(state, rows)
            fields["fitness"], fields["fitness_stderr"] = fitness.mean, fitness.se
    if status not in ("invalid", "duplicate", "failed", "evaluated"):
        status, fields["error"] = "failed", f"the worker reported an unknown status {status!r}"
    state.archive.finish(attempt.id, status, **fields)


def result_timings(result: dict) -> dict:
    """A worker result's timings with the sandbox's (wall time, deadline), as the archive keeps them."""
    return {**result.get("timings", {}), "sandbox": result.get("sandbox")}


def seed_differences(state: RunState, rows: list[dict], references: dict[str, dict]) -> list[float]:
    """Each row's fitness, paired with the reference row of the same seed (``references``: seed -> row)."""
    return [state.task.seed_fitness(r, references.get(str(r["seed"]))) for r in rows]


def run_fitness(state: RunState, rows: list[dict]) -> Estimate:
    """The mean of the per-seed fitness (paired with tuned DPO's row of the same seed) and its SE."""
    return estimate(seed_differences(state, rows, state.references))


def _grid_fitness(state: RunState, attempt: Attempt, rows: list[dict], grid: dict[float, dict], metrics: dict):
    """The frontier fitness: the candidate at its best grid β against tuned DPO (frontier.py)."""
    from podisco.discovery.frontier import grid_metrics

    rows_by_beta, errors = {state.config.search.beta: rows}, {}
    for beta, result in grid.items():
        if result.get("status") == "evaluated" and len(result.get("per_seed", [])) == len(rows):
            what = f"attempt {attempt.id} ({attempt.name}) at β={beta:g}"
            rows_by_beta[beta] = finish_rows(state, result["per_seed"], what)
        else:
            errors[beta] = (result.get("error") or result.get("status") or "no result").splitlines()[0]
    _, fitness, extra = grid_metrics(state.task, rows_by_beta, errors, state.config.search.beta, state.references)
    return fitness, {**metrics, **extra}


def stage0_text(stage0: dict) -> str:
    """Why a candidate stopped at stage 0, for the archive, the log and the proposer's feedback."""
    return (
        f"stopped at stage 0 (a short first training run, seed {stage0['seed']}): fitness {stage0['fitness']:+.4f} "
        f"there, at most {stage0['upper']:+.4f} at 95% against the best's {stage0['incumbent_lower']:+.4f} or more"
    )


def _metrics(state: RunState, rows: list[dict], result: dict) -> dict:
    metrics = {"per_seed": rows, "promoted": result.get("promoted", True), "flags": result.get("flags")}
    if result.get("stage0"):
        metrics["stage0"] = result["stage0"]
    if result.get("race"):  # the racing decision after the last seed it ran (boundary/racing.py)
        metrics["race"] = result["race"]
    if state.task.kind != "preference":
        return metrics
    last = [r.get("train", {}) for r in rows]
    metrics["dynamics"] = {
        **state.task.summarise(rows),
        "final_margin": _mean_last(last, "rewards/margins"),
        "final_accuracy": _mean_last(last, "rewards/accuracies"),
    }
    return metrics


def _mean_last(curves: list[dict], key: str) -> float | None:
    values = [c[key][-1] for c in curves if c.get(key)]
    return round(sum(values) / len(values), 4) if values else None


def _reference_at(state: RunState, beta: float) -> float | None:
    """The fitness of the reference loss trained at ``beta`` (a grid β), paired with tuned DPO per seed."""
    rows = state.reference_rows.get(beta)
    if not rows:
        return None
    return estimate([state.task.seed_fitness(rows[str(s)], state.references.get(str(s))) for s in state.seeds]).mean


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
