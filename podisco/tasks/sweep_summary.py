"""Summaries of sweep rows (one row per loss, beta and seed), shared by the sweeps, the CLI and the report.

Pure arithmetic on rows read back from ``sweep.csv``: nothing here trains, so the report can use it without
importing the training stack. The KL-aware score is ``kl_penalised(reward, kl) = reward - λ KL``, the RLHF
objective itself (λ = 0.1 by default; tasks/imdb/fitness.py says why).
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_KL_PENALTY = 0.1


def kl_penalised(reward: float, kl: float, lam: float = DEFAULT_KL_PENALTY) -> float:
    return reward - lam * kl


def frontier_score(points: list[tuple[float, float]], lam: float = DEFAULT_KL_PENALTY) -> float:
    """Best reward - lam * KL over a loss's (reward, KL) points, one per beta."""
    return max(kl_penalised(r, k, lam) for r, k in points)


def summarise_frontier(rows: Sequence[dict]) -> dict[str, dict]:
    """IMDb sweeps, per loss: mean (reward, KL) per beta over seeds, and the frontier score over betas."""
    by_loss: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        by_loss.setdefault(row["loss"], {}).setdefault(float(row["beta"]), []).append(row)
    summary = {}
    for loss, cells in by_loss.items():
        points = {
            b: (
                sum(float(r["reward"]) for r in rs) / len(rs),
                sum(float(r["kl"]) for r in rs) / len(rs),
            )
            for b, rs in cells.items()
        }
        summary[loss] = {"points": points, "frontier": frontier_score(list(points.values()))}
    return summary


def summarise_scores(rows: Sequence[dict]) -> dict[str, dict[float, float]]:
    """Judged sweeps, per loss: the mean score per beta over seeds."""
    cells: dict[str, dict[float, list[float]]] = {}
    for row in rows:
        cells.setdefault(row["loss"], {}).setdefault(float(row["beta"]), []).append(float(row["score"]))
    return {loss: {b: sum(v) / len(v) for b, v in sorted(by.items())} for loss, by in cells.items()}
