"""The frontier fitness (``search.fitness: frontier``): a candidate at its own best β against DPO at its best β.

The tuned fitness pairs a candidate at the run's β with tuned DPO; a loss whose best β lies elsewhere is judged
off its optimum. Under the frontier fitness, a candidate that passed stage 1 and ran every search seed is also
trained at the other β values of the baseline grid (weak candidates never pay for the grid). Its best β is the
grid β with the best mean score on the search seeds, as for DPO (baseline.py), and its fitness is the per-seed
paired difference between the candidate at that β and tuned DPO: the paper's reward-vs-KL frontier idea
(docs/paper.md, IMDb) as one number, (best of the candidate over β) − (best of DPO over β).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from podisco.stats import Estimate, estimate
from podisco.tasks.base import Task


def grid_points(
    task: Task, rows_by_beta: Mapping[float, Sequence[dict]], references: Mapping[str, dict]
) -> dict[float, Estimate]:
    """Per β: the estimate of the candidate's paired difference against ``references`` (tuned DPO)."""
    return {
        beta: estimate([task.seed_fitness(r, references.get(str(r["seed"]))) for r in rows])
        for beta, rows in rows_by_beta.items()
    }


def best_beta(points: Mapping[float, Estimate], run_beta: float) -> float:
    """The β with the best mean; ties go to the β nearest the run's (log scale), as for tuned DPO."""
    return max(points, key=lambda b: (points[b].mean, -abs(math.log(b / run_beta))))


def grid_metrics(
    task: Task, rows_by_beta: Mapping[float, Sequence[dict]], errors: Mapping[float, str], run_beta: float, references
) -> tuple[float, Estimate, dict[str, Any]]:
    """The candidate's best β, its fitness there, and what the archive keeps of every β (the summaries, and the
    error of a β the candidate failed at)."""
    points = grid_points(task, rows_by_beta, references)
    beta = best_beta(points, run_beta)
    grid: dict[str, Any] = {
        f"{b:g}": {"mean": e.mean, "se": e.se, **task.summarise(list(rows_by_beta[b]))} for b, e in points.items()
    }
    grid.update({f"{b:g}": {"error": error} for b, error in errors.items()})
    return beta, points[beta], {"best_beta": beta, "grid": grid}
