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
