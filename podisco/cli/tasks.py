"""``podisco task digits|prepare|imdb`` and ``podisco sweep``: one fitness task, or a grid of (loss, beta, seed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from podisco.cli import judged
from podisco.cli.common import (
    UsageError,
    beta,
    non_negative_int,
    output_file,
    positive_float,
    positive_floats,
    positive_int,
    seeds,
    table,
)

PRESETS = ["tiny", "default", "paper"]


def fraction(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise UsageError(f"a fraction is in (0, 1], got {text}")
    return value


def cmd_task_digits(args: argparse.Namespace) -> int:
    from podisco.tasks.classification.train import NAME, VERSION, DigitsConfig, evaluate_loss

    if args.dataset == "cifar10" and not args.data_dir:
        raise UsageError("--dataset cifar10 needs --data-dir (CIFAR-10 in its python format)")
    config = DigitsConfig(dataset=args.dataset, data_dir=args.data_dir or "", epochs=args.epochs, seeds=args.seeds)
    result = evaluate_loss(args.loss, config)
    if not result.ok:  # the loss ran and failed (not a user error): exit 1
        print(f"podisco: error: {args.loss} failed on {NAME} v{VERSION}: {result.error}", file=sys.stderr)
        return 1
    per_seed = ", ".join(f"{a:.4f}" for a in result.accuracies)
    print(
        f"{NAME} v{VERSION} ({args.dataset}) {args.loss}: fitness {result.fitness:.4f} +- {result.std:.4f} "
        f"(validation accuracy per seed: {per_seed})"
    )
    return 0


def cmd_task_prepare(args: argparse.Namespace) -> int:
    if args.name == "tldr":
        from podisco.tasks.judged.tldr import HUB_PAIRS, load_pairs, write_pairs

        output = output_file(args.output, "-o")
        pairs = load_pairs(args.source or HUB_PAIRS, args.fraction, args.seed)
        print(f"wrote {len(pairs)} pairs (fraction {args.fraction:g}) to {write_pairs(pairs, output)}")
        return 0
    from podisco.tasks.imdb.prepare import prepare

    task = prepare(args.preset, args.cache_dir)
    print(f"prepared {task.directory}")
    for key, value in task.facts.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def cmd_task_imdb(args: argparse.Namespace) -> int:
    from podisco.losses import get_spec
    from podisco.stats import Estimate, format_estimate, one_sided_p
    from podisco.tasks.imdb.evaluate import ImdbTrainSettings, train_and_evaluate
    from podisco.tasks.imdb.fitness import paired_fitness
    from podisco.tasks.imdb.prepare import prepare
    from podisco.tasks.sweep_summary import DEFAULT_KL_PENALTY

    get_spec(args.loss)  # misspelled names fail before the task is loaded
    if args.against_beta is not None and not args.against:
        raise UsageError("--against-beta is the beta of the --against loss: give --against too")
    if args.against:
        get_spec(args.against)
    task = prepare(args.preset, args.cache_dir)
    settings = ImdbTrainSettings(loss=args.loss, beta=args.beta, steps=args.steps)
    settings.lr, settings.epochs = args.lr or settings.lr, args.epochs or settings.epochs
    if args.against:
        paired = paired_fitness(
            task, args.loss, args.beta, args.out, args.against, args.seeds, settings, reference_beta=args.against_beta
        )
        n = len(args.seeds)
        reward = format_estimate(Estimate(paired.difference, paired.stderr, n))
        penalised = Estimate(paired.penalised_difference, paired.penalised_stderr, n)
        against = f"{args.against} at beta={paired.reference_beta:g}"
        print(
            f"{args.loss} at beta={args.beta:g} - {against} over {n} paired seeds:\n"
            f"  reward       {reward}  [{paired.candidate_reward:.4f} vs {paired.reference_reward:.4f}]\n"
            f"  reward - {DEFAULT_KL_PENALTY:g} KL  {format_estimate(penalised)}  "
            f"[KL {paired.candidate_kl:.4f} vs {paired.reference_kl:.4f}]\n"
            f"  one-sided p (reward - {DEFAULT_KL_PENALTY:g} KL above {against}): {one_sided_p(penalised):.4f}"
            " (one test: correct it yourself for how many candidates or betas were tried)"
        )
        return 0
    result = train_and_evaluate(task, settings, Path(args.out) / f"{args.loss}-{args.beta:g}", args.seeds)
    print(
        f"{result.task} {result.loss} beta={result.beta:g}: reward {result.reward:.4f} +- {result.reward_std:.4f}, "
        f"KL(ref||policy) per token {result.kl:.4f} +- {result.kl_std:.4f} over seeds "
        f"{','.join(map(str, args.seeds))}"
    )
    return 0


def _sweep_losses(text: str) -> tuple[list[str], dict]:
    """Registered names (canonical) and exported loss files (labelled with their code hash, loaded)."""
    from podisco.losses import get_spec
    from podisco.losses.forms import is_loss_file, load_loss_file

    losses, loss_fns = [], {}
    for name in text.split(","):
        if is_loss_file(name):
            label, loss_fns[label] = load_loss_file(name)
            losses.append(label)
        else:
            losses.append(get_spec(name).name)
    return losses, loss_fns


def cmd_sweep(args: argparse.Namespace) -> int:
    """``podisco sweep``: each task family sweeps its own way (IMDb: reward vs KL; judged: scores)."""
    return _SWEEPS[args.task](args)


def _sweep_judged(args: argparse.Namespace) -> int:
    spec = judged.judged_task(args)  # a missing --train-config is refused before any loss is loaded
    losses, loss_fns = _sweep_losses(args.losses)
    return judged.cmd_sweep_judged(args, spec, losses, loss_fns, list(args.betas))


def _sweep_imdb(args: argparse.Namespace) -> int:
    from podisco.reporting.frontier_plot import plot_frontier
    from podisco.tasks.imdb.evaluate import ImdbTrainSettings
    from podisco.tasks.imdb.fitness import sweep
    from podisco.tasks.imdb.prepare import prepare
    from podisco.tasks.sweep_summary import DEFAULT_KL_PENALTY
    from podisco.tasks.sweep_summary import summarise_frontier as summarise

    losses, loss_fns = _sweep_losses(args.losses)
    task = prepare(args.preset, args.cache_dir)
    base = ImdbTrainSettings(steps=args.steps)
    base.lr, base.epochs = args.lr or base.lr, args.epochs or base.epochs
    rows = sweep(task, losses, list(args.betas), tuple(range(args.seeds)), args.out, base, loss_fns=loss_fns)
    summary = summarise(rows)
    figure = plot_frontier(summary, Path(args.out) / "frontier.png", f"IMDb ({args.preset}): reward vs KL")
    rows = [
        (
            loss,
            f"{info['frontier']:.4f}",
            "  ".join(f"b={b:g}: {r:.3f}/{k:.3f}" for b, (r, k) in sorted(info["points"].items())),
        )
        for loss, info in sorted(summary.items(), key=lambda item: -item[1]["frontier"])
    ]
    print(table(rows, ("loss", f"frontier (reward - {DEFAULT_KL_PENALTY:g} KL)", "reward/KL per beta")))
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {figure}")
    return 0


_SWEEPS = {"imdb": _sweep_imdb, **dict.fromkeys(judged.TASKS, _sweep_judged)}


def add_commands(commands: argparse._SubParsersAction) -> None:
    task = commands.add_parser("task", help="run a fitness task")
    task_sub = task.add_subparsers(dest="task_name", metavar="TASK", required=True)
    p = task_sub.add_parser("digits", help="the classification sanity task: validation accuracy of a loss")
    p.add_argument("--loss", default="cross_entropy", help="cross_entropy, label_smoothing or squared_error")
    p.add_argument("--seeds", type=seeds, default="0,1,2")
    p.add_argument("--epochs", type=positive_int, default=8)
    p.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    p.add_argument("--data-dir", dest="data_dir", help="CIFAR-10 in its python format")
    p.set_defaults(func=cmd_task_digits)

    p = task_sub.add_parser("prepare", help="build and cache what a task needs (tokenizer, SFT model, scorers, pairs)")
    p.add_argument("name", choices=["imdb", "tldr"])
    p.add_argument("--preset", default="default", choices=PRESETS)
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--fraction", type=fraction, default=0.1, help="tldr: share of the comparisons (the paper: 10%%)")
    p.add_argument("--source", help="tldr: comparisons (JSONL or hub id; default the CarperAI comparisons)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="tldr: which fraction")
    p.add_argument("-o", "--output", default="data/tldr_pairs.jsonl", help="tldr: the JSONL written")
    p.set_defaults(func=cmd_task_prepare)

    p = task_sub.add_parser("imdb", help="train one loss at one beta on the IMDb pairs; reward and KL")
    p.add_argument("--loss", default="sigmoid")
    p.add_argument("--beta", type=beta, default=0.05)
    p.add_argument("--steps", type=non_negative_int, default=0, help="optimizer steps; > 0 overrides --epochs")
    p.add_argument("--epochs", type=positive_float, help="default: the task's (ImdbTrainSettings.epochs)")
    p.add_argument("--lr", type=positive_float, help="default: the task's (ImdbTrainSettings.lr)")
    p.add_argument(
        "--seeds", type=seeds, default="0,1,2",
        help="evaluation sampling seeds (training seeds too with --against)",
    )  # fmt: skip
    p.add_argument("--against", help="paired comparison with this loss: same training and sampling seed per run")
    p.add_argument(
        "--against-beta", dest="against_beta", type=beta,
        help="the --against loss's beta (default: --beta), e.g. DPO at the beta it was tuned to",
    )  # fmt: skip
    p.add_argument("--preset", default="default", choices=PRESETS)
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--out", default="runs/imdb")
    p.set_defaults(func=cmd_task_imdb)

    judged.add_commands(task_sub)

    p = commands.add_parser("sweep", help="train every (loss, beta, seed) on a task; CSV and reward-vs-KL frontier")
    p.add_argument("--task", default="imdb", choices=list(_SWEEPS))
    p.add_argument("--preset", default="default", choices=PRESETS)
    p.add_argument("--losses", default="sigmoid,hinge,discopop", help="registered names or exported FILE.py:NAME")
    p.add_argument("--betas", type=positive_floats, default="0.025,0.05,0.1,0.25")
    p.add_argument("--seeds", type=positive_int, default=1, help="how many seeds: 0, 1, ... N-1")
    p.add_argument("--steps", type=non_negative_int, default=0, help="optimizer steps per run; > 0 overrides --epochs")
    p.add_argument("--epochs", type=positive_float, help="IMDb: default the task's (ImdbTrainSettings.epochs)")
    p.add_argument("--lr", type=positive_float, help="default: the task's (ImdbTrainSettings.lr)")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--out", default="runs/sweep")
    judged.add_judged_task_arguments(p)
    p.set_defaults(func=cmd_sweep)
