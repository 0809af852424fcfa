"""Does a cheap first look rank losses as the full training does? Stage 0's go/no-go (issue 17 item 2).

Trains each candidate (registered losses at the task's β, plus DPO at other βs: the rescalings a search
proposes) on the IMDb ``default`` preset twice per seed: the full schedule, and the same schedule cut to
``--fraction`` of its steps (stage 0: ``ImdbTask.at_fidelity``). Each candidate's score is the KL-penalised
reward (the fitness before the paired DPO baseline, which shifts every candidate of a seed alike, so ranks are
the same). Prints the Spearman correlation of the two rankings and both top 3s. Stage 0 stays on by default
only if the correlation is at least 0.8 and the top 3 are the same (discovery/config.py, SearchSection).
Runs are cached (``imdb.fitness.run_cached``): an interrupted benchmark resumes.

    .venv/bin/python benchmarks/stage0_fidelity.py --seeds 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CANDIDATES = [
    *[
        (name, 0.05)
        for name in (
            "sigmoid hinge ipo exo_pair nca_pair robust bco_pair sppo_hard aot aot_unpaired apo_zero apo_down "
            "discopop sigmoid_norm kto_pair simpo lrml_original padll cell dbaql aql aqfl pfl pfl_original aql_repo"
        ).split()
    ],
    ("sigmoid", 0.1),
    ("sigmoid", 0.25),
    ("sigmoid", 1.0),
]


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def main() -> None:
    from podisco.tasks.imdb.evaluate import ImdbTrainSettings
    from podisco.tasks.imdb.fitness import sweep
    from podisco.tasks.imdb.prepare import prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per candidate")
    parser.add_argument("--fraction", type=float, default=0.25, help="stage 0's share of the full steps")
    parser.add_argument("--out", default="runs/stage0-fidelity")
    args = parser.parse_args()
    task = prepare(args.preset, log=lambda *_: None)
    full = ImdbTrainSettings()
    cheap = ImdbTrainSettings(epochs=full.epochs * args.fraction)
    seeds = tuple(range(args.seeds))
    scores: dict[str, dict[str, float]] = {"full": {}, "stage 0": {}}
    for label, settings in (("stage 0", cheap), ("full", full)):
        for loss, beta in CANDIDATES:
            rows = sweep(task, [loss], [beta], seeds, Path(args.out) / label.replace(" ", ""), settings, log=print)
            scores[label][f"{loss}@{beta:g}"] = float(np.mean([r["kl_penalised"] for r in rows]))
    names = list(scores["full"])
    full_scores, cheap_scores = [scores["full"][n] for n in names], [scores["stage 0"][n] for n in names]
    rho = spearman(full_scores, cheap_scores)
    top = {label: sorted(names, key=lambda n: -scores[label][n])[:3] for label in scores}
    print(f"\n{len(names)} candidates, IMDb {args.preset}, seeds {seeds}, stage 0 = {args.fraction:g} of the steps")
    print("| candidate | full | stage 0 | rank full | rank stage 0 |")
    print("|---|---|---|---|---|")
    full_rank, cheap_rank = ranks(-np.asarray(full_scores)), ranks(-np.asarray(cheap_scores))
    for i in np.argsort(full_rank):
        n = names[i]
        print(f"| {n} | {full_scores[i]:.4f} | {cheap_scores[i]:.4f} | {full_rank[i] + 1:g} | {cheap_rank[i] + 1:g} |")
    same = set(top["full"]) == set(top["stage 0"])
    print(f"\nSpearman {rho:.3f}; top 3 full {top['full']}, stage 0 {top['stage 0']} (same: {same})")
    print("keep stage 0 on by default:", "yes" if rho >= 0.8 and same else "no")


if __name__ == "__main__":
    main()
