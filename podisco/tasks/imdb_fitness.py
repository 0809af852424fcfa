"""Fitness on the IMDb task: cached runs, paired comparison with a reference loss, KL-aware scores, sweeps.

At the same beta, sound losses differ by less than their seed-to-seed spread, so a candidate is compared with
a reference loss (DPO by default) trained and evaluated with the same seeds; both runs are cached as JSON, so
the reference is trained once per (task, beta, seed) however many candidates follow. The noise both share
cancels in the paired difference.

KL-aware score: ``kl_penalised(reward, kl) = reward - lam * kl``, the RLHF objective itself, with lam in
p(positive) per nat of per-token KL(ref || policy) (default 1.0). The frontier score of a loss over a beta
grid is its best KL-penalised reward: high reward only counts if it was bought cheaply in KL.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from podisco.cache import atomic_output
from podisco.tasks.imdb import PreparedTask, preset_key
from podisco.tasks.imdb_eval import ImdbResult, ImdbTrainSettings, train_and_evaluate

DEFAULT_KL_PENALTY = 1.0


def kl_penalised(reward: float, kl: float, lam: float = DEFAULT_KL_PENALTY) -> float:
    return reward - lam * kl


def frontier_score(points: list[tuple[float, float]], lam: float = DEFAULT_KL_PENALTY) -> float:
    """Best reward - lam * KL over a loss's (reward, KL) points, one per beta."""
    return max(kl_penalised(r, k, lam) for r, k in points)


def _run_key(task: PreparedTask, settings: ImdbTrainSettings, eval_seeds: tuple[int, ...]) -> str:
    blob = json.dumps({"task": preset_key(task.preset), "settings": asdict(settings), "eval": list(eval_seeds)})
    return hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()


def run_cached(
    task: PreparedTask, settings: ImdbTrainSettings, runs_dir: str | Path, eval_seeds: tuple[int, ...] = (0,)
) -> ImdbResult:
    """``train_and_evaluate`` once per (task, settings, eval seeds); later calls read the stored result."""
    runs_dir = Path(runs_dir)
    key = _run_key(task, settings, eval_seeds)
    path = runs_dir / f"run-{key}.json"
    if path.exists():
        return ImdbResult(**json.loads(path.read_text()))
    result = train_and_evaluate(task, settings, runs_dir / f"train-{key}", eval_seeds)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(asdict(result)))
    return result


@dataclass
class PairedFitness:
    loss: str
    reference: str
    beta: float
    difference: float  # mean over seeds of candidate reward - reference reward
    stderr: float
    ci95: tuple[float, float]
    candidate_reward: float
    reference_reward: float
    candidate_kl: float
    reference_kl: float


def paired_fitness(
    task: PreparedTask,
    loss: str,
    beta: float,
    runs_dir: str | Path,
    reference: str = "sigmoid",
    seeds: tuple[int, ...] = (0, 1, 2),
    base: ImdbTrainSettings | None = None,
) -> PairedFitness:
    """Candidate minus reference, per seed (the same training seed, data order and sampling seed for both)."""
    base = base or ImdbTrainSettings()
    differences, cand, ref = [], [], []
    for seed in seeds:
        c = run_cached(
            task, ImdbTrainSettings(**{**asdict(base), "loss": loss, "beta": beta, "seed": seed}), runs_dir, (seed,)
        )
        r = run_cached(
            task,
            ImdbTrainSettings(**{**asdict(base), "loss": reference, "beta": beta, "seed": seed}),
            runs_dir,
            (seed,),
        )
        differences.append(c.reward - r.reward)
        cand.append(c)
        ref.append(r)
    d = np.array(differences)
    stderr = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    mean = float(d.mean())
    return PairedFitness(
        loss,
        reference,
        beta,
        mean,
        stderr,
        (mean - 1.96 * stderr, mean + 1.96 * stderr),
        float(np.mean([c.reward for c in cand])),
        float(np.mean([r.reward for r in ref])),
        float(np.mean([c.kl for c in cand])),
        float(np.mean([r.kl for r in ref])),
    )


SWEEP_FIELDS = ("loss", "beta", "seed", "reward", "kl", "kl_penalised")


def sweep(
    task: PreparedTask,
    losses: list[str],
    betas: list[float],
    seeds: tuple[int, ...],
    out: str | Path,
    base: ImdbTrainSettings | None = None,
    log=print,
) -> list[dict]:
    """Every (loss, beta, seed): train, evaluate, append to ``sweep.csv``. Finished cells come from the run
    cache, so an interrupted sweep resumes where it stopped."""
    base = base or ImdbTrainSettings()
    out = Path(out)
    rows = []
    for loss in losses:
        for beta in betas:
            for seed in seeds:
                settings = ImdbTrainSettings(**{**asdict(base), "loss": loss, "beta": beta, "seed": seed})
                result = run_cached(task, settings, out / "runs", (seed,))
                rows.append(
                    {
                        "loss": loss,
                        "beta": beta,
                        "seed": seed,
                        "reward": result.reward,
                        "kl": result.kl,
                        "kl_penalised": kl_penalised(result.reward, result.kl),
                    }
                )
                log(f"{loss} beta={beta:g} seed={seed}: reward {result.reward:.4f}, KL {result.kl:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SWEEP_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per loss: mean (reward, KL) per beta over seeds, and the frontier score over betas."""
    by_loss: dict[str, dict[float, list[dict]]] = {}
    for row in rows:
        by_loss.setdefault(row["loss"], {}).setdefault(float(row["beta"]), []).append(row)
    summary = {}
    for loss, cells in by_loss.items():
        points = {
            b: (float(np.mean([r["reward"] for r in rs])), float(np.mean([r["kl"] for r in rs])))
            for b, rs in cells.items()
        }
        summary[loss] = {"points": points, "frontier": frontier_score(list(points.values()))}
    return summary
