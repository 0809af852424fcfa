"""Discovery fitness from per-seed results: the only place that says what "better" means for each task.

- ``imdb``: the paired KL-penalised reward against the reference loss (DPO) run with the same seed:
  ``(r_c - lam * KL_c) - (r_ref - lam * KL_ref)`` (imdb_fitness.kl_penalised); 0 = as good as DPO.
- ``digits``: validation accuracy.
- ``chat``, ``alpaca``, ``tldr`` (LLM-judged, tasks/judged.py): the judge's score of the candidate's answers
  minus that of DPO's answers with the same training seed; 0 = as good as DPO.

The fitness of a candidate is the mean over its seeds, with the standard error of that mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from podisco.tasks.imdb_fitness import DEFAULT_KL_PENALTY, kl_penalised
from podisco.tasks.judged import SCORE_MEANING
from podisco.tasks.judged import TASKS as JUDGED_TASKS

TASKS = ("imdb", "digits", *JUDGED_TASKS)


def seed_fitness(task: str, row: Mapping[str, float], reference: Mapping[str, float] | None = None) -> float:
    if task == "digits":
        return float(row["accuracy"])
    if reference is None:
        raise ValueError(f"the {task} fitness is paired: a reference run with the same seed is needed")
    if task in JUDGED_TASKS:
        return float(row["score"]) - float(reference["score"])
    return kl_penalised(row["reward"], row["kl"], DEFAULT_KL_PENALTY) - kl_penalised(
        reference["reward"], reference["kl"], DEFAULT_KL_PENALTY
    )


def aggregate(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (None for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def describe(task: str) -> str:
    """What the fitness number means, for prompts and reports."""
    if task == "digits":
        return "validation accuracy of a small network trained with the loss (higher is better)"
    if task in JUDGED_TASKS:
        return (
            f"the LLM judge's {SCORE_MEANING[task]} of the trained model's answers, minus DPO's with the same "
            "training seed (0 = as good as DPO, positive = better)"
        )
    return (
        f"evaluation reward minus {DEFAULT_KL_PENALTY:g} x KL(reference || policy) per token, relative to DPO "
        "trained with the same seeds (0 = as good as DPO, positive = better)"
    )
