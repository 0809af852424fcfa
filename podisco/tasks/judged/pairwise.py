"""Pairwise win rates, AlpacaEval style: the model's output against a reference output, judged by an LLM with
the order randomised per item (cancelling the judge's position bias), plus a length-controlled win rate.

Length control follows AlpacaEval 2.0's idea: fit P(model wins) = sigmoid(b0 + b1 * tanh(d / sd(d))), d the
length difference in characters, and report sigmoid(b0), the win rate the model would have at equal length.
Standard errors: binomial for the raw rate, a seeded bootstrap for the length-controlled one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from podisco.errors import PodiscoError
from podisco.stats import estimate
from podisco.tasks.judged.judge import Judge

JUDGE_SYSTEM = "You are a careful, impartial judge comparing two AI assistants' responses."
_PROMPT = """Compare the two responses to the instruction below. Judge which one follows the instruction better and
is more helpful, accurate and clear. Do not let the order of the responses, their length or the assistants'
names sway you. Explain briefly, then give your verdict in exactly this format: "[[A]]" if A is better, "[[B]]" if
B is better, "[[C]]" for a tie.

[Instruction]
{instruction}

[The Start of Response A]
{a}
[The End of Response A]

[The Start of Response B]
{b}
[The End of Response B]"""


def judge_pairs(
    judge: Judge, instructions: Sequence[str], outputs: Sequence[str], references: Sequence[str], seed: int = 0
) -> list[float | None]:
    """Per item: 1 if the model's output wins, 0 if the reference wins, 0.5 for a tie, None if malformed."""
    rng = random.Random(seed)
    preferences: list[float | None] = []
    for instruction, mine, theirs in zip(instructions, outputs, references, strict=True):
        mine_first = rng.random() < 0.5
        a, b = (mine, theirs) if mine_first else (theirs, mine)
        verdict = judge.verdict(JUDGE_SYSTEM, _PROMPT.format(instruction=instruction, a=a, b=b))
        if verdict is None:
            preferences.append(None)
        elif verdict == "C":
            preferences.append(0.5)
        else:
            preferences.append(1.0 if (verdict == "A") == mine_first else 0.0)
    return preferences


def win_rate(preferences: Sequence[float | None]) -> tuple[float, float | None]:
    """Mean preference (ties count half) and its standard error (podisco.stats: None for one verdict), over the
    well-formed verdicts; NaN when there is none."""
    values = [float(p) for p in preferences if p is not None]
    if not values:
        return float("nan"), None
    result = estimate(values)
    return result.mean, result.se


def _fit_intercept(y: np.ndarray, x: np.ndarray, iterations: int = 50) -> float:
    """Logistic regression y ~ b0 + b1 x by Newton's method (ties enter as y = 0.5); returns b0."""
    design = np.stack([np.ones_like(x), x], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ w)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, design.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0])


def length_controlled_win_rate(
    preferences: Sequence[float | None],
    output_lengths: Sequence[int],
    reference_lengths: Sequence[int],
    bootstrap: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    keep = [i for i, p in enumerate(preferences) if p is not None]
    y = np.array([preferences[i] for i in keep], dtype=float)
    d = np.array([output_lengths[i] - reference_lengths[i] for i in keep], dtype=float)
    scale = d.std() or 1.0
    x = np.tanh(d / scale)
    lc = 1 / (1 + math.exp(-_fit_intercept(y, x)))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        samples.append(1 / (1 + math.exp(-_fit_intercept(y[idx], x[idx]))))
    return lc, float(np.std(samples, ddof=1))


@dataclass
class WinRate:
    against: str
    win_rate: float
    stderr: float | None  # None for a single verdict (podisco.stats)
    length_controlled: float
    lc_stderr: float
    judged: int


def compare(
    judge: Judge, instructions: Sequence[str], mine: Sequence[str], theirs: Sequence[str], against: str, seed: int = 0
) -> WinRate:
    """Raw and length-controlled win rate of ``mine`` over ``theirs``, judged pairwise in randomised order."""
    prefs = judge_pairs(judge, instructions, mine, theirs, seed)
    judged = sum(p is not None for p in prefs)
    if not judged:
        raise PodiscoError(f"the judge gave no usable verdict on {len(prefs)} comparisons (every reply malformed)")
    rate, se = win_rate(prefs)
    lc, lc_se = length_controlled_win_rate(prefs, [len(m) for m in mine], [len(t) for t in theirs], seed=seed)
    return WinRate(against, rate, se, lc, lc_se, judged)
