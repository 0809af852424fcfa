"""Candidates per hour: podisco's discovery loop vs a naive pipeline built like the paper's, on one stream.

The same replayed stream of 20 proposals (duplicates, invalid code, weak and good losses) is evaluated on
the IMDb task (``--preset default``) twice, in one run:

- **podisco**: ``run_discovery`` with the replay proposer: static gate, behavioural dedup, cached reference
  log-probs, racing over the seeds (boundary/racing.py; the README's rows ran the older fixed stage 1: 1 seed,
  then the rest only if within 0.02 of the best), sandboxed workers;
- **naive**: like the paper's loop, one fresh process per candidate that loads the SFT model, recomputes the
  reference log-probs (empty cache), and trains and evaluates every seed; no gate, no dedup, no staging.

Both score a candidate the same way (``ImdbTask.seed_fitness``: reward - 0.1 KL, paired with DPO run on
the same seeds; the DPO reference runs are computed once, before the clock starts, for both). Prints a table
with wall time, candidates per hour, and the top 3 of each.

    .venv/bin/python benchmarks/discovery_throughput.py --preset default --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHOD = (
    "def {name}(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):\n"
    "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
    "    return {body}\n"
)

STREAM = [
    ("logistic_x2", "-F.logsigmoid(2 * self.beta * logits)"),
    ("dpo_softplus", "F.softplus(-self.beta * logits)"),  # DPO, written differently: a behavioural duplicate
    ("exp_loss", "torch.exp(-self.beta * logits)"),
    ("bad_mean", "(-F.logsigmoid(self.beta * logits)).mean()"),  # returns a scalar: fails the battery
    ("hinge_wide", "torch.relu(2 - self.beta * logits)"),
    ("import_os", "__import__('os').getpid() * logits"),  # rejected by the gate
    ("weak_tanh", "0.01 * (1 - torch.tanh(self.beta * logits))"),
    ("logistic_x2", "-F.logsigmoid(2 * self.beta * logits)"),  # the same code again
    ("sq_hinge", "torch.relu(1 - self.beta * logits) ** 2"),
    ("dpo_again", "-F.logsigmoid(self.beta * logits)"),  # DPO itself
    ("half_logistic", "-F.logsigmoid(0.5 * self.beta * logits)"),
    ("syntax", "-F.logsigmoid(self.beta * logits"),  # a syntax error
    (
        "mix_exp",
        "torch.sigmoid(self.beta * logits) * torch.exp(-self.beta * logits) - F.logsigmoid(self.beta * logits)",
    ),
    ("ipo_like", "(logits - 1 / (2 * self.beta)) ** 2"),
    ("weak_linear", "-0.001 * self.beta * logits"),
    ("logistic_margin", "-F.logsigmoid(self.beta * logits - 0.5)"),
    ("smooth_hinge", "F.softplus(1 - self.beta * logits)"),
    ("exp_loss_again", "torch.exp(-(self.beta * logits))"),  # exp_loss again, written differently
    ("scaled_dpo", "-2 * F.logsigmoid(self.beta * logits)"),
    ("cubic", "(1 - self.beta * logits) ** 3"),  # unbounded below: weak or unstable
]

NAIVE_CHILD = r"""
import json, math, sys, tempfile, torch, torch.nn.functional as F
from types import SimpleNamespace
from podisco.tasks.imdb.prepare import prepare
from podisco.tasks.imdb.evaluate import ImdbTrainSettings, train_and_evaluate
job = json.loads(sys.argv[1])
namespace = {"torch": torch, "F": F, "math": math}
exec(job["code"], namespace)  # the paper's loop ran the LLM's code with no isolation
fn = namespace[job["name"]]
loss = lambda pc, pr, rc, rr, *, beta, **extra: fn(SimpleNamespace(beta=beta), pc, pr, rc, rr)
task = prepare(job["preset"], log=lambda *a: None)
rows = []
with tempfile.TemporaryDirectory() as fresh_cache:  # no reference cache: recomputed per candidate
    for seed in job["seeds"]:
        settings = ImdbTrainSettings(loss=job["name"], beta=0.05, seed=seed)
        out = tempfile.mkdtemp()
        r = train_and_evaluate(task, settings, out, (seed,), loss_fn=loss, reference_cache_dir=fresh_cache)
        rows.append(r.per_seed[0])
print("RESULT " + json.dumps(rows))
"""


def replay_file(directory: Path) -> Path:
    path = directory / "stream.jsonl"
    with path.open("w") as f:
        for name, body in STREAM:
            f.write(json.dumps({"name": name, "thought": "benchmark", "code": METHOD.format(name=name, body=body)}))
            f.write("\n")
    return path


def run_podisco(preset: str, seeds: tuple[int, ...], root: Path, stream: Path) -> tuple[float, list, dict]:
    from dataclasses import replace

    from podisco.discovery.archive import Archive
    from podisco.discovery.config import DiscoveryConfig, ExecutionSection, ProposerSection, SearchSection, TaskSection
    from podisco.discovery.loop import run_discovery
    from podisco.discovery.proposers.replay import ReplayProposer

    config = DiscoveryConfig(
        task=TaskSection("imdb", {"preset": preset}),
        proposer=ProposerSection(kind="replay", replay_file=str(stream)),
        search=SearchSection(generations=5, population=4, seeds=seeds, reevaluate_top=0),
        execution=ExecutionSection(allow_weak_isolation=True),
    )
    # Seeds and references first, off the clock (both pipelines get them for free).
    warm = replace(config, search=replace(config.search, generations=0))
    run_id = run_discovery(warm, root, log=lambda m: None, proposer=ReplayProposer(stream))
    start = time.perf_counter()
    run_discovery(config, root, run_id, resume=True, log=print, proposer=ReplayProposer(stream))
    wall = time.perf_counter() - start
    archive = Archive(root / "archive.sqlite")
    attempts = [a for a in archive.attempts(run_id) if a.generation > 0]
    statuses = {s: sum(a.status == s for a in attempts) for s in ("evaluated", "duplicate", "invalid", "failed")}
    # A duplicate carries the fitness of what it behaves like; the naive pipeline measures it again.
    ranked, seen = [], set()
    for a in sorted((a for a in attempts if a.fitness is not None), key=lambda a: -a.fitness):
        if a.name not in seen:  # the same proposal replayed twice is one candidate
            seen.add(a.name)
            ranked.append(a)
    references = {
        str(p.stem.rsplit("seed", 1)[1]): json.loads(p.read_text()) for p in (root / "references").glob("*.json")
    }
    return wall, [(a.name, a.fitness) for a in ranked[:3]], {"statuses": statuses, "references": references}


def run_naive(preset: str, seeds: tuple[int, ...], references: dict) -> tuple[float, list, int]:
    from podisco.stats import estimate
    from podisco.tasks.imdb.task import ImdbTask

    task = ImdbTask(preset=preset)
    scored, failures = [], 0
    start = time.perf_counter()
    for name, body in STREAM:
        job = {"name": name, "code": METHOD.format(name=name, body=body), "preset": preset, "seeds": list(seeds)}
        done = subprocess.run([sys.executable, "-c", NAIVE_CHILD, json.dumps(job)], capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            failures += 1
            print(f"naive: {name} failed")
            continue
        rows = json.loads(line.removeprefix("RESULT "))
        fitness = estimate([task.seed_fitness(r, references[str(r["seed"])]) for r in rows]).mean
        scored.append((name, fitness))
        print(f"naive: {name} {fitness:+.4f}")
    wall = time.perf_counter() - start
    seen, top = set(), []
    for name, fitness in sorted(scored, key=lambda x: -x[1]):
        if name not in seen:
            seen.add(name)
            top.append((name, fitness))
    return wall, top[:3], failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--skip-naive", action="store_true", help="only podisco (to rerun it after a change)")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours_wall, ours_top, info = run_podisco(args.preset, seeds, root / "podisco", replay_file(root))
        if args.skip_naive:
            print(f"podisco: {ours_wall:.0f} s, {info['statuses']}, top 3 {ours_top}")
            return
        naive_wall, naive_top, naive_failures = run_naive(args.preset, seeds, info["references"])
    n = len(STREAM)
    print(f"\n{n} proposals, IMDb preset {args.preset}, seeds {args.seeds}; podisco outcomes: {info['statuses']}")
    print(f"naive pipeline: {naive_failures} candidates crashed\n")
    print("| pipeline | wall s | candidates/hour | top 3 |")
    print("|---|---|---|---|")
    for label, wall, top in (("podisco", ours_wall, ours_top), ("naive (paper-like)", naive_wall, naive_top)):
        names = ", ".join(f"{name} {fitness:+.4f}" for name, fitness in top)
        print(f"| {label} | {wall:.0f} | {3600 * n / wall:.1f} | {names} |")
    same = {a for a, _ in ours_top} == {a for a, _ in naive_top}
    print(f"\nspeed-up: {naive_wall / ours_wall:.2f}x; same top 3 (as sets): {same}")


if __name__ == "__main__":
    main()
