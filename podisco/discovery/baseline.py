"""The baseline a candidate must beat: the task's reference loss (DPO) at its best β on a grid, not at one β.

A candidate paired only against DPO at the task's β wins by moving along DPO's own reward/KL curve (DPO at 2β
scored +0.0086 that way). So the reference loss is trained at every β of the grid on the search seeds, and
"tuned DPO" is the grid β with the best mean score. Scores are compared through the task's own paired
``seed_fitness`` against the reference at the task's β, so any task that defines a paired fitness can be tuned
without a new method: the ranking of β by mean paired difference is the ranking by mean score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podisco.stats import estimate
from podisco.tasks.base import Task


@dataclass(frozen=True)
class Baseline:
    loss: str  # the task's reference loss ("sigmoid": DPO)
    beta: float  # the grid β with the best mean score on the search seeds: "tuned DPO"
    grid: tuple[float, ...]
    task_beta: float
    # β -> mean over the search seeds of (reference at β) - (reference at the task's β), in fitness units
    gains: Mapping[float, float]
    seeds: tuple[int, ...]

    @property
    def tuned(self) -> bool:
        return len(self.grid) > 1

    @property
    def gain(self) -> float:
        """What tuning bought: tuned DPO's mean score minus DPO's at the task's β."""
        return self.gains[self.beta]

    def describe(self) -> str:
        name = "DPO" if self.loss == "sigmoid" else self.loss
        if not self.tuned:
            return f"{name} at β={self.task_beta:g} (untuned: no β grid)"
        grid = ", ".join(f"{b:g}" for b in self.grid)
        # at an end of the grid the optimum may lie beyond it: the baseline is then only as tuned as the grid
        edge = "; at the grid's edge: a wider --search.baseline_betas may tune it further" if self.at_edge else ""
        return (
            f"{name} at its best β={self.beta:g} of {{{grid}}} ({self.gain:+.4f} over β={self.task_beta:g} on "
            f"seeds {','.join(map(str, self.seeds))}{edge})"
        )

    @property
    def at_edge(self) -> bool:
        return self.tuned and self.beta in (min(self.grid), max(self.grid))

    def to_json(self) -> dict:
        return {
            "loss": self.loss,
            "beta": self.beta,
            "grid": list(self.grid),
            "task_beta": self.task_beta,
            "gains": {str(b): g for b, g in self.gains.items()},
            "seeds": list(self.seeds),
            "description": self.describe(),
        }


def tune(
    task: Task,
    rows: Mapping[float, Mapping[str, dict]],
    task_beta: float,
    seeds: Sequence[int],
) -> Baseline:
    """``rows[β][seed]``: the reference loss's row at β for each search seed. Ties go to the β nearest the
    task's β (in log scale), so an untouched grid changes nothing."""
    import math

    base = rows[task_beta]
    gains = {
        beta: estimate([task.seed_fitness(by_seed[str(s)], base[str(s)]) for s in seeds]).mean
        for beta, by_seed in rows.items()
    }
    best = max(gains, key=lambda b: (gains[b], -abs(math.log(b / task_beta))))
    return Baseline(task.reference_loss, best, tuple(sorted(rows)), task_beta, gains, tuple(seeds))
