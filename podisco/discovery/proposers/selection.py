"""Choosing archive entries: parents for ``evolve``, diverse examples for the archive-mode prompt."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from podisco.discovery.archive import Attempt


def tournament(evaluated: Sequence[Attempt], rng: random.Random, size: int = 3) -> Attempt:
    """The fittest of ``size`` entries drawn at random: selection pressure without losing diversity."""
    if not evaluated:
        raise ValueError("no evaluated entries to select from")
    drawn = rng.sample(list(evaluated), min(size, len(evaluated)))
    return max(drawn, key=lambda a: (a.fitness if a.fitness is not None else -np.inf, -a.id))


def novelty(entry: Attempt, evaluated: Sequence[Attempt], k: int = 3) -> float:
    """Mean RMS distance from ``entry``'s fingerprint (its loss on a fixed margin battery) to its ``k``
    nearest neighbours in ``evaluated``: how unlike anything else in the archive it behaves (0: no fingerprint)."""
    if entry.fingerprint is None:
        return 0.0
    others = np.array([a.fingerprint for a in evaluated if a.fingerprint is not None and a.id != entry.id])
    if not len(others):
        return 0.0
    distances = np.sort(np.sqrt(((others - np.array(entry.fingerprint)) ** 2).mean(1)))
    return float(distances[:k].mean())


def choose_parent(evaluated: Sequence[Attempt], rng: random.Random, novelty_share: float = 0.5) -> Attempt:
    """A parent for ``evolve``: by fitness (tournament), or with probability ``novelty_share`` the most novel
    of a tournament drawn from the fitter half: quality-diversity, so the search does not spend every child
    on the incumbent's neighbourhood (the v4 study: 6 of 7 trained children were IPO at another β)."""
    if rng.random() >= novelty_share or len(evaluated) < 3:
        return tournament(evaluated, rng)
    ranked = sorted(evaluated, key=lambda a: (-(a.fitness if a.fitness is not None else -np.inf), a.id))
    fitter = ranked[: max(2, (len(ranked) + 1) // 2)]
    drawn = rng.sample(fitter, min(3, len(fitter)))
    return max(drawn, key=lambda a: (novelty(a, evaluated), -a.id))


def diverse_entries(evaluated: Sequence[Attempt], chosen: Sequence[Attempt], k: int) -> list[Attempt]:
    """Farthest-first: repeatedly the entry whose behaviour (fingerprint) is farthest from all chosen so far."""
    picked = [a for a in chosen if a.fingerprint is not None]
    pool = [a for a in evaluated if a.fingerprint is not None and all(a.id != c.id for c in chosen)]
    out: list[Attempt] = []
    while pool and len(out) < k:
        if not picked:
            best = pool[0]
        else:
            refs = np.array([p.fingerprint for p in picked])
            best = max(pool, key=lambda a: float(np.min(np.sqrt(((refs - np.array(a.fingerprint)) ** 2).mean(1)))))
        out.append(best)
        picked.append(best)
        pool.remove(best)
    return out
