"""Mean, standard error, confidence interval, paired difference and multiple-comparison correction: one
convention everywhere.

The convention for a single value: the mean is that value and the standard error is ``None`` (unknown, not
zero and not NaN), so a table prints "-" and JSON stores ``null``. The standard error is the sample standard
deviation (ddof = 1) over sqrt(n); the 95% interval is the normal one, mean ± 1.96 SE, as every podisco
table and the paper's error bars use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.96  # the two-sided 95% normal quantile, rounded as the paper and every podisco table round it


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float | None  # None for fewer than two values
    n: int

    @property
    def ci95(self) -> tuple[float, float] | None:
        return None if self.se is None else (self.mean - Z95 * self.se, self.mean + Z95 * self.se)


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and standard error of the mean of ``values`` (at least one)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to estimate a mean from")
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(var / n), n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """The mean of ``a[i] - b[i]`` (the same seed or prompt on both sides) with its standard error."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return estimate([x - y for x, y in zip(a, b, strict=True)])


def format_estimate(e: Estimate, digits: int = 4, signed: bool = True) -> str:
    """``+0.0123 ± 0.0045 (SE, n=5)``, or ``+0.0123 (n=1)`` when the SE is unknown."""
    mean = f"{e.mean:+.{digits}f}" if signed else f"{e.mean:.{digits}f}"
    return f"{mean} (n={e.n})" if e.se is None else f"{mean} ± {e.se:.{digits}f} (SE, n={e.n})"


def one_sided_p(e: Estimate) -> float:
    """P-value of "the mean is above 0" from a one-sample t-test on the values behind ``e`` (n - 1 degrees of
    freedom): P(T >= mean / SE). 1.0 when the SE is unknown (one value) and 0/1 for a zero SE."""
    from scipy.stats import t as student_t

    if e.se is None:
        return 1.0
    if e.se == 0:
        return 0.0 if e.mean > 0 else 1.0
    return float(student_t.sf(e.mean / e.se, e.n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: sort ascending, multiply the i-th smallest
    (1-based) by k - i + 1, keep the running maximum, cap at 1. Rejecting where adjusted <= alpha controls the
    family-wise error rate at alpha for any dependence between the tests (Holm 1979)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
