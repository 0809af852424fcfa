"""Racing: seeds are added one at a time, and a candidate stops as soon as it cannot be the best (both sides:
the parent sizes the race from the archive, the worker applies it after each seed).

After n seeds with paired differences x_1..x_n against the baseline, the candidate's one-sided bounds are
mean ± z·SE with SE = s/√n, where s² pools the archive's typical per-seed variance (``prior_sd``, weight
``prior_weight`` pseudo-seeds) with the candidate's own sample variance: s² = (w·σ₀² + (n−1)·s_n²) / (w + n − 1).
With one seed, s = σ₀: the first seed can already stop a hopeless candidate. The rule
(Maron & Moore's Hoeffding races, with normal bounds):

- stop when the candidate's upper bound falls below the incumbent's lower bound (mean − z·SE of the best fully
  evaluated attempt): it is very unlikely to be better;
- promote when its lower bound clears the incumbent's mean: it runs every seed without further checks;
- otherwise add the next seed.

A fixed margin (the old stage 1) ignores how noisy a task is: 0.02 is hopeless on one task and noise on another.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Decision = Literal["stop", "promote", "continue"]


@dataclass(frozen=True)
class Race:
    incumbent_mean: float  # the best fully evaluated attempt's fitness
    incumbent_se: float  # and its standard error, pooled with the prior as a candidate's (pooled_se)
    prior_sd: float  # the archive's per-seed sd of paired differences: the noise of one seed
    z: float = 1.645  # one-sided 95% bounds
    prior_weight: float = 2.0  # pseudo-seeds the prior variance counts as

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, float]) -> Race:
        return cls(**{k: float(v) for k, v in data.items()})


def pooled_se(values: Sequence[float], prior_sd: float, prior_weight: float = 2.0) -> float:
    """The SE of the mean of ``values`` with their variance pooled with the prior's (module docstring): three
    seeds alone can show a spread of almost nothing by chance, which would make a bound far too tight."""
    n = len(values)
    own = statistics.variance(values) if n > 1 else 0.0
    return math.sqrt((prior_weight * prior_sd**2 + (n - 1) * own) / (prior_weight + n - 1) / n)


def candidate_bounds(values: Sequence[float], race: Race) -> tuple[float, float, float]:
    """(mean, lower, upper) of the candidate after ``len(values)`` seeds (module docstring)."""
    mean = statistics.fmean(values)
    half = race.z * pooled_se(values, race.prior_sd, race.prior_weight)
    return mean, mean - half, mean + half


def decide(values: Sequence[float], race: Race) -> tuple[Decision, dict[str, float]]:
    """What to do after these seeds, and the numbers behind it (kept in the archive)."""
    mean, lower, upper = candidate_bounds(values, race)
    incumbent_lower = race.incumbent_mean - race.z * race.incumbent_se
    why = {"seeds": len(values), "mean": mean, "lower": lower, "upper": upper, "incumbent_lower": incumbent_lower}
    if upper < incumbent_lower:
        return "stop", why
    if lower > race.incumbent_mean:
        return "promote", why
    return "continue", why


def prior_sd(per_seed_differences: Sequence[Sequence[float]]) -> float | None:
    """The per-seed sd of a typical attempt, from the attempts that ran two or more seeds; None when none did.

    The median over those attempts of s²/m_k, where s² is an attempt's sample variance on k = n − 1 degrees of
    freedom and m_k = median(χ²_k)/k is what s²/σ² is at the median when the noise is normal: with equal noise
    everywhere it estimates that noise, as pooling would. A median, because the noise is not equal everywhere:
    one drifting loss (KTO: per-seed sd 0.06 on the default IMDb preset where others have 0.01,
    docs/results/imdb-discovery.md §5) would otherwise widen every race's bounds and keep hopeless candidates
    running for seeds they cannot use. A candidate noisier than the prior still widens its own bounds from its
    second seed on (pooled_se).
    """
    from scipy.stats import chi2

    groups = [d for d in per_seed_differences if len(d) > 1]
    if not groups:
        return None
    scaled = [statistics.variance(d) / (chi2.median(len(d) - 1) / (len(d) - 1)) for d in groups]
    return math.sqrt(statistics.median(scaled))
