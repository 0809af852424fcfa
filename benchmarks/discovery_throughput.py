"""Candidates per hour: podisco's discovery loop vs a naive pipeline built like the paper's, on one stream.

The same replayed stream of proposals (``--stream short``: 20, duplicates, invalid code, weak and good losses;
``--stream long``: 60 shaped like a real LLM's output, ``long_stream``) is evaluated on the IMDb task
(``--preset default``) by both pipelines, in one run (``--levers``: podisco once per throughput lever):

- **podisco**: ``run_discovery`` with the replay proposer: static gate, behavioural dedup (rescalings too),
  cached reference log-probs, sandboxed workers; by default with its default levers (racing, steady state);
  ``--levers``: one row with the levers off (the fixed stage 1: one seed, the rest only within 0.02 of the
  best), one per lever on alone (racing, stage 0, steady state, warm workers) and one with all of them;
- **naive**: like the paper's loop, one fresh process per candidate that loads the SFT model, recomputes the
  reference log-probs (empty cache), and trains and evaluates every seed; no gate, no dedup, no staging.

Both score a candidate the same way (``ImdbTask.seed_fitness``: reward - 0.1 KL, paired with DPO run on
the same seeds; the DPO reference runs are computed once, before the clock starts, for both). Prints a table
with wall time, candidates per hour, and the top 3 of each.

    .venv/bin/python benchmarks/discovery_throughput.py --preset default --seeds 0,1,2
    .venv/bin/python benchmarks/discovery_throughput.py --stream long --levers
    .venv/bin/python benchmarks/discovery_throughput.py --levers --epochs 1   # the shorter regime (task v3)
"""

from __future__ import annotations

import argparse
import json
import shutil
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

# The longer stream (--stream long): 60 proposals shaped like a real LLM's output over a run. Per the issue: mostly
# rewrites of what the archive holds (near-duplicates: the same function written another way, or nudged by a
# tiny constant), DPO at another β (on and off the tuned baseline's grid), code that cannot be used (syntax,
# gate, wrong shape, NaN on negative margins), and a few distinct losses worth training.
_GOOD = [
    ("ipo", "(logits - 1 / (2 * self.beta)) ** 2"),
    ("exp_loss", "torch.exp(-self.beta * logits)"),
    ("hinge", "torch.relu(1 - self.beta * logits)"),
    ("sq_hinge", "torch.relu(1 - self.beta * logits) ** 2"),
    ("robust_dpo", "-0.9 * F.logsigmoid(self.beta * logits) - 0.1 * F.logsigmoid(-self.beta * logits)"),
    (
        "lrml",
        "torch.sigmoid(-self.beta * logits / 0.05) * torch.exp(-self.beta * logits)"
        " - torch.sigmoid(self.beta * logits / 0.05) * F.logsigmoid(self.beta * logits)",
    ),
    ("smooth_hinge", "F.softplus(1 - self.beta * logits)"),
    ("logistic_margin", "-F.logsigmoid(self.beta * logits - 0.5)"),
    ("tanh_loss", "1 - torch.tanh(self.beta * logits)"),
    ("sigmoid_loss", "torch.sigmoid(-self.beta * logits)"),
]
_REWRITES = [  # behaviourally the same as an earlier entry (or as DPO)
    ("dpo_softplus", "F.softplus(-self.beta * logits)"),
    ("dpo_log1p", "torch.log1p(torch.exp(-self.beta * logits))"),
    ("dpo_log_sigmoid", "-torch.log(torch.sigmoid(self.beta * logits))"),
    ("dpo_nudged", "-1.0001 * F.logsigmoid(self.beta * logits)"),
    ("dpo_offset", "-F.logsigmoid(self.beta * logits) + 1e-06"),
    ("ipo_expanded", "logits ** 2 - logits / self.beta + 1 / (4 * self.beta ** 2)"),
    ("ipo_nudged", "(logits - 0.5001 / self.beta) ** 2"),
    ("exp_neg", "torch.exp(-(self.beta * logits))"),
    ("exp_scaled", "1.0001 * torch.exp(-self.beta * logits)"),
    ("hinge_max", "torch.clamp(1 - self.beta * logits, min=0)"),
    ("hinge_nudged", "torch.relu(1.0001 - self.beta * logits)"),
    ("sq_hinge_mul", "torch.relu(1 - self.beta * logits) * torch.relu(1 - self.beta * logits)"),
    ("robust_dpo_softplus", "0.9 * F.softplus(-self.beta * logits) + 0.1 * F.softplus(self.beta * logits)"),
    ("smooth_hinge_log", "torch.log1p(torch.exp(1 - self.beta * logits))"),
    ("margin_softplus", "F.softplus(0.5 - self.beta * logits)"),
    ("tanh_nudged", "1.0001 - torch.tanh(self.beta * logits)"),
    ("sigmoid_one_minus", "1 - torch.sigmoid(self.beta * logits)"),
    ("dpo_twice_half", "-0.5 * F.logsigmoid(self.beta * logits) * 2"),
    (
        "lrml_again",
        "-torch.sigmoid(self.beta * logits / 0.05) * F.logsigmoid(self.beta * logits)"
        " + torch.sigmoid(-self.beta * logits / 0.05) * torch.exp(-self.beta * logits)",
    ),
    ("exp_loss_again", "torch.exp(-self.beta * logits)"),  # exactly an earlier code
    ("dpo_times_1000", "1000 * F.softplus(-self.beta * logits)"),  # DPO at another output scale
]
_RESCALES = [  # DPO at another β: on the baseline grid (x0.5, 2, 4, 10, 20) a duplicate, off it trained and labelled
    (f"dpo_beta_x{c:g}".replace(".", "_"), f"-F.logsigmoid({c:g} * self.beta * logits)")
    for c in (2, 4, 0.5, 10, 3, 1.5, 0.3, 6, 20, 0.7, 2.5, 8)
]
_INVALID = [
    ("syntax_error", "-F.logsigmoid(self.beta * logits"),
    ("imports_os", "__import__('os').getpid() * logits"),
    ("scalar_mean", "(-F.logsigmoid(self.beta * logits)).mean()"),
    ("scalar_sum", "torch.exp(-self.beta * logits).sum()"),
    ("log_of_margin", "-torch.log(self.beta * logits)"),  # NaN for negative margins
    ("sqrt_of_margin", "-torch.sqrt(self.beta * logits)"),
    ("opens_file", "open('/etc/passwd') and logits"),
    ("dunder", "logits.__class__"),
    ("no_grad", "torch.zeros_like(logits)"),  # no gradient reaches the policy
    ("inf_loss", "1 / (self.beta * logits * 0)"),
    ("eval_call", "eval('logits')"),
    ("wrong_shape", "torch.stack([logits, logits])"),
    ("pow_fraction", "(1 - self.beta * logits) ** 1.5"),  # NaN where the base is negative
    ("getattr_call", "getattr(torch, 'exp')(-logits)"),
    ("detached", "-F.logsigmoid(self.beta * logits.detach())"),
    ("nan_const", "logits * float('nan')"),
    ("linear", "-self.beta * logits"),  # unbounded below: weak or unstable, trained
]


def long_stream() -> list[tuple[str, str]]:
    """60 proposals in a fixed shuffled order, each good loss before its rewrites (as a search would find it)."""
    import random

    rng = random.Random(2406)
    later = _REWRITES + _RESCALES + _INVALID
    rng.shuffle(later)
    stream = list(_GOOD[:4]) + later[:20] + list(_GOOD[4:]) + later[20:]
    return stream[:60]


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
        settings = ImdbTrainSettings(loss=job["name"], beta=0.05, seed=seed, **job["settings"])
        out = tempfile.mkdtemp()
        r = train_and_evaluate(task, settings, out, (seed,), loss_fn=loss, reference_cache_dir=fresh_cache)
        rows.append(r.per_seed[0])
print("RESULT " + json.dumps(rows))
"""


def replay_file(directory: Path, stream: list[tuple[str, str]]) -> Path:
    path = directory / "stream.jsonl"
    with path.open("w") as f:
        for name, body in stream:
            f.write(json.dumps({"name": name, "thought": "benchmark", "code": METHOD.format(name=name, body=body)}))
            f.write("\n")
    return path


def run_podisco(
    preset: str, seeds: tuple[int, ...], root: Path, stream: Path, levers: dict, task_options: dict
) -> tuple[float, list, dict]:
    from dataclasses import replace

    from podisco.discovery.archive import Archive
    from podisco.discovery.config import DiscoveryConfig, ExecutionSection, ProposerSection, SearchSection, TaskSection
    from podisco.discovery.loop import run_discovery
    from podisco.discovery.proposers.replay import ReplayProposer
    from podisco.discovery.references import reference_key
    from podisco.tasks.base import get_task

    config = DiscoveryConfig(
        task=TaskSection("imdb", {"preset": preset, **task_options}),
        proposer=ProposerSection(kind="replay", replay_file=str(stream)),
        # generations enough for the whole stream; the replay proposer ends the search when it runs dry
        search=SearchSection(
            generations=100,
            population=4,
            seeds=seeds,
            reevaluate_top=0,
            racing=levers["racing"],
            stage0=levers["stage0"],
            steady_state=levers["steady_state"],
        ),
        execution=ExecutionSection(allow_weak_isolation=True, warm_workers=levers["warm_workers"]),
    )
    # Seeds and references first, off the clock (both pipelines get them for free).
    warm = replace(config, search=replace(config.search, generations=0))
    run_id = run_discovery(warm, root, log=lambda m: None, proposer=ReplayProposer(stream))
    start = time.perf_counter()
    run_discovery(config, root, run_id, resume=True, log=print, proposer=ReplayProposer(stream))
    wall = time.perf_counter() - start
    archive = Archive(root / "archive.sqlite")
    every = archive.attempts(run_id)
    attempts = [a for a in every if a.generation > 0]
    statuses = {s: sum(a.status == s for a in attempts) for s in ("evaluated", "duplicate", "invalid", "failed")}
    # A duplicate carries the fitness of what it behaves like; the naive pipeline measures it again.
    scored = [(a.name, a.fitness) for a in attempts if a.fitness is not None]
    rewrites = rewrite_classes(every)  # the seed archive too: a proposal may rewrite a seed loss
    # The naive pipeline is scored against the same tuned DPO: the reference runs at the β the grid chose.
    task = get_task("imdb", config.task.options)
    beta = archive.run(run_id)["verdict"]["baseline"]["beta"]
    key = reference_key(task.prepare(root, lambda m: None), task.reference_loss, beta)
    references = {str(s): json.loads((root / "references" / f"{key}-seed{s}.json").read_text()) for s in seeds}
    info = {"statuses": statuses, "references": references, "rewrites": rewrites}
    return wall, scored, info


def rewrite_classes(attempts) -> dict[str, str]:
    """Name -> the name of the function it rewrites: a duplicate whose fingerprint is identical to the attempt it
    duplicates (``EXACT_DUPLICATE_DISTANCE``) is that function written another way, and takes its exact score;
    the naive pipeline trains each rewrite and gets float-level differences, so a top 3 compares functions."""
    import numpy as np

    from podisco.losses.analysis import EXACT_DUPLICATE_DISTANCE, fingerprint_distance

    by_id = {a.id: a for a in attempts}
    target = {}
    for a in attempts:
        if a.status == "duplicate" and (a.duplicate_of or "").startswith("attempt:") and a.fingerprint:
            of = by_id.get(int(a.duplicate_of.split()[0].removeprefix("attempt:")))
            if of is not None and of.fingerprint:
                distance = fingerprint_distance(np.asarray(a.fingerprint), np.asarray(of.fingerprint))
                if distance <= EXACT_DUPLICATE_DISTANCE:
                    target[a.name] = of.name

    def root(name: str) -> str:
        while name in target and target[name] != name:
            name = target[name]
        return name

    return {name: root(name) for name in target}


def top3(scored: list[tuple[str, float]], rewrites: dict[str, str]) -> list[tuple[str, float]]:
    """The 3 best distinct functions: a proposal replayed twice, or a rewrite of a better-placed one, counts once."""
    seen, top = set(), []
    for name, fitness in sorted(scored, key=lambda x: -x[1]):
        function = rewrites.get(name, name)
        if function not in seen:
            seen.add(function)
            top.append((name, fitness))
    return top[:3]


def share_references(source: Path, target: Path) -> None:
    """Copy the reference runs ``source`` has and ``target`` lacks (named by task, loss and β, so any run of the
    same task may reuse them): each row's DPO grid is trained once per benchmark, not once per row."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.json"):
        if not (target / path.name).exists():
            shutil.copy2(path, target / path.name)


def run_naive(
    preset: str, seeds: tuple[int, ...], references: dict, stream: list[tuple[str, str]], task_options: dict
) -> tuple[float, list, int]:
    from podisco.stats import estimate
    from podisco.tasks.imdb.task import ImdbTask

    task = ImdbTask(preset=preset)
    scored, failures = [], 0
    start = time.perf_counter()
    for name, body in stream:
        job = {"name": name, "code": METHOD.format(name=name, body=body), "preset": preset, "seeds": list(seeds)}
        job["settings"] = task_options
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
    return time.perf_counter() - start, scored, failures


# Issue 17's throughput levers, each switched on alone over a base with all of them off, then all at once. The
# gate, behavioural dedup (rescalings included) and cached reference log-probs are always on.
_OFF = {"racing": False, "stage0": False, "steady_state": False, "warm_workers": False}
LEVERS = {
    "no levers (fixed stage 1)": _OFF,
    "racing": {**_OFF, "racing": True},
    "stage 0": {**_OFF, "stage0": True},
    "steady state": {**_OFF, "steady_state": True},
    "warm workers": {**_OFF, "warm_workers": True},
    "all levers": {"racing": True, "stage0": True, "steady_state": True, "warm_workers": True},
    # the two that save time on the default preset at one epoch (racing and stage 0 cost time there: README)
    "steady state + warm workers": {**_OFF, "steady_state": True, "warm_workers": True},
}
DEFAULTS = {**_OFF, "racing": True, "steady_state": True}  # podisco discover's defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--stream", choices=["short", "long"], default="short", help="20 or 60 proposals")
    parser.add_argument("--levers", action="store_true", help="one podisco row per lever (each a full run)")
    parser.add_argument("--rows", default="", help="with --levers, only these rows (comma-separated labels)")
    parser.add_argument("--skip-naive", action="store_true", help="only podisco (to rerun it after a change)")
    parser.add_argument("--epochs", type=float, default=0.0, help="training epochs per run (0: the task's)")
    parser.add_argument("--references", default="", help="a folder to reuse and keep the DPO reference runs in")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    stream = STREAM if args.stream == "short" else long_stream()
    variants = LEVERS if args.levers else {"defaults": DEFAULTS}
    if args.rows:
        variants = {label: LEVERS[label] for label in args.rows.split(",")}
    task_options = {"epochs": args.epochs} if args.epochs else {}
    ours = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = replay_file(root, stream)
        shared = Path(args.references) if args.references else root / "references"
        for label, options in variants.items():
            folder = root / label.replace(" ", "-").replace("(", "").replace(")", "")
            share_references(shared, folder / "references")
            ours[label] = run_podisco(args.preset, seeds, folder, path, options, task_options)
            share_references(folder / "references", shared)
            wall, scored, info = ours[label]
            print(f"podisco ({label}): {wall:.0f} s, {info['statuses']}, top 3 {top3(scored, info['rewrites'])}")
        if args.skip_naive:
            return
        references = next(iter(ours.values()))[2]["references"]
        naive_wall, naive_scored, naive_failures = run_naive(args.preset, seeds, references, stream, task_options)
    n = len(stream)
    print(f"\n{n} proposals, IMDb preset {args.preset}, seeds {args.seeds}")
    print(f"naive pipeline: {naive_failures} candidates crashed\n")
    print("| pipeline | wall s | candidates/hour | vs naive | same top 3 (up to rewrites) | top 3 |")
    print("|---|---|---|---|---|---|")
    rows = [(f"podisco: {label}", wall, scored, info["rewrites"]) for label, (wall, scored, info) in ours.items()]
    rewrites = rows[0][3] if rows else {}  # which proposals rewrite which is the stream's, the same in every row
    naive_functions = {rewrites.get(name, name) for name, _ in top3(naive_scored, rewrites)}
    for label, wall, scored, _ in [*rows, ("naive (paper-like)", naive_wall, naive_scored, rewrites)]:
        top = top3(scored, rewrites)
        same = {rewrites.get(name, name) for name, _ in top} == naive_functions
        names = ", ".join(f"{name} {fitness:+.4f}" for name, fitness in top)
        print(f"| {label} | {wall:.0f} | {3600 * n / wall:.1f} | {naive_wall / wall:.2f}x | {same} | {names} |")


if __name__ == "__main__":
    main()
