"""`podisco <command>`: the command line. Nothing imports this module."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from podisco.errors import PodiscoError
from podisco.losses import FAMILIES, get_spec, list_specs
from podisco.losses.analysis import (
    DEFAULT_RHO_RANGE,
    DUPLICATE_DISTANCE,
    LossShape,
    analyze,
    compare,
    nearest_known,
)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _describe_shape(shape: LossShape) -> list[str]:
    lo, hi = shape.rho_range
    direction = "lowers" if shape.grad_at_zero > 0 else "raises" if shape.grad_at_zero < 0 else "leaves"
    lines = [f"df/drho at rho=0: {shape.grad_at_zero:+.6g} (gradient descent {direction} the margin at init)"]
    if shape.extrema:
        for e in shape.extrema:
            lines.append(f"local {e.kind}: rho = {e.rho:.5g}, f = {e.value:.6g}  (beta*rho = {shape.beta * e.rho:.4g})")
    else:
        lines.append(f"local extrema on [{lo:g}, {hi:g}]: none")
    lines += [f"discontinuity near rho = {j:.3g}" for j in shape.jumps]
    lines += [f"{'convex' if k.convex else 'concave'} corner near rho = {k.rho:.3g}" for k in shape.kinks]
    segs = ", ".join(f"[{s.start:.3g}, {s.end:.3g}] {'convex' if s.convex else 'non-convex'}" for s in shape.segments)
    lines.append(f"segments: {segs}")
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    specs = [s for s in list_specs() if args.family in (None, s.family)]
    rows = [(s.name, s.family, s.formula, s.source.split(";")[0]) for s in specs]
    print(_table(rows, ("name", "family", "formula", "source")))
    aliases = ", ".join(f"{a} -> {s.name}" for s in specs for a in s.aliases)
    if aliases:
        print(f"\naliases: {aliases}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    spec = get_spec(args.name)
    print(f"{spec.name}  ({FAMILIES[spec.family]})")
    print(f"  {spec.summary}")
    print(f"formula: {spec.formula}")
    print(f"source:  {spec.source}")
    params = ", ".join(f"{k}={v:g}" for k, v in spec.params.items())
    print(f"parameters: beta{', ' + params if params else ''}")
    flags = [
        n
        for n, on in (
            ("uses completion lengths", spec.needs_lengths),
            ("reference-free", spec.reference_free),
            ("depends on the whole batch (curves: one pair per batch)", spec.batch_dependent),
        )
        if on
    ]
    if flags:
        print("notes: " + "; ".join(flags))
    if spec.aliases:
        print(f"aliases: {', '.join(spec.aliases)}")
    shape = analyze(spec.name, args.beta, tuple(args.range))
    print(f"\nshape at beta = {args.beta:g} on rho in [{args.range[0]:g}, {args.range[1]:g}]:")
    for line in _describe_shape(shape):
        print(f"  {line}")
    near = ", ".join(f"{n} ({d:.3f})" for n, d in nearest_known(spec.name, args.beta, k=3))
    print(f"  nearest known losses (fingerprint distance): {near}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from podisco.reporting.loss_plots import plot_losses  # matplotlib only when drawing

    out = plot_losses(args.names, args.beta or [0.05], args.output, tuple(args.range))
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = get_spec(args.a).name, get_spec(args.b).name
    distance = compare(a, b, args.beta)
    verdict = "the same behaviour (duplicates)" if distance < DUPLICATE_DISTANCE else "different behaviour"
    print(f"fingerprint distance {a} vs {b} at beta = {args.beta:g}: {distance:.4f} -> {verdict}")
    print(f"(duplicate threshold {DUPLICATE_DISTANCE}; unrelated shapes score about 1.4)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Every registered loss at one beta: shape facts, nearest neighbour, duplicates; a CSV and two figures."""
    from podisco.reporting.loss_plots import plot_losses

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in list_specs():
        shape = analyze(spec.name, args.beta, tuple(args.range))
        nearest, distance = nearest_known(spec.name, args.beta, k=1)[0]
        extrema = "; ".join(f"{e.kind} {e.rho:.3g}" for e in shape.extrema) or "-"
        rows.append(
            (
                spec.name,
                spec.family,
                f"{shape.grad_at_zero:+.4g}",
                extrema,
                "yes" if shape.convex else "no",
                f"{nearest} ({distance:.3f})" + (" DUPLICATE" if distance < DUPLICATE_DISTANCE else ""),
            )
        )
    header = ("loss", "family", "df/drho(0)", "local extrema (rho)", "convex", "nearest (distance)")
    print(f"Every registered loss at beta = {args.beta:g}, rho in [{args.range[0]:g}, {args.range[1]:g}]\n")
    print(_table(rows, header))
    with open(out / "losses.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    discovered = ["sigmoid", *(s.name for s in list_specs() if s.family == "discovered"), "discopop"]
    plot_losses(discovered, [args.beta], out / "discovered.png", tuple(args.range))
    plot_losses(["sigmoid", "discopop"], [0.01, 0.05, 0.1, 0.5], out / "discopop_vs_dpo.png", tuple(args.range))
    print(f"\nwrote {out / 'losses.csv'}, {out / 'discovered.png'}, {out / 'discopop_vs_dpo.png'}")
    return 0


def _train_config(args: argparse.Namespace, extra: Sequence[str]):
    from podisco.training.config import ConfigError, TrainConfig, load_config

    overrides = []
    for flag, key in (("model", "model"), ("data", "data.path"), ("output_dir", "output_dir")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "loss", None) is not None:
        overrides.append(f"loss.name={args.loss}")
    if getattr(args, "beta", None) is not None:
        overrides.append(f"loss.beta={args.beta}")
    for item in extra:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"unrecognised argument {item!r}; overrides look like --optim.lr=1e-5")
        overrides.append(item[2:])
    config = load_config(TrainConfig, args.config, overrides)
    config.validate()
    if not config.model or not config.data.path:
        raise ConfigError("both a model (--model) and data (--data) are needed")
    return config


def cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from podisco.discovery.export import is_loss_file, load_loss_file
    from podisco.training.pipeline import train_from_config
    from podisco.training.preference import parse_loss

    config = _train_config(args, extra)
    loss_fn = None
    if is_loss_file(config.loss.name):  # an exported discovery: path.py:NAME
        config.loss.name, loss_fn = load_loss_file(config.loss.name)
    else:
        parse_loss(config.loss.name)  # a misspelled loss fails before anything is loaded
    result, _, _ = train_from_config(config, loss_fn, resume_from=args.resume)
    print(
        f"trained {result.steps} steps; model in {result.output_dir / 'final'}; metrics in "
        f"{result.output_dir / 'metrics.jsonl'}"
    )
    return 0


def cmd_sft(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from podisco.data import load_rows, tokenize_sft
    from podisco.models import load_model, load_tokenizer
    from podisco.training.pipeline import maybe_lora
    from podisco.training.sft import train_sft

    config = _train_config(args, extra)
    tokenizer = load_tokenizer(config.model)
    rows = load_rows(config.data.path, config.data.split)
    examples, report = tokenize_sft(rows, tokenizer, config.data.max_length, on_error=config.data.on_error)
    print(report)
    model = maybe_lora(load_model(config.model), config)
    result = train_sft(config, model, examples, tokenizer.pad_token_id, tokenizer, resume_from=args.resume)
    print(f"trained {result.steps} steps; model in {result.output_dir / 'final'}")
    return 0


def cmd_task_digits(args: argparse.Namespace) -> int:
    from podisco.tasks.digits import NAME, VERSION, DigitsConfig, evaluate_loss

    seeds = tuple(int(x) for x in args.seeds.split(","))
    config = DigitsConfig(dataset=args.dataset, data_dir=args.data_dir or "", epochs=args.epochs, seeds=seeds)
    result = evaluate_loss(args.loss, config)
    if not result.ok:
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
        from podisco.tasks.tldr import HUB_PAIRS, load_pairs, write_pairs

        pairs = load_pairs(args.source or HUB_PAIRS, args.fraction, args.seed)
        print(f"wrote {len(pairs)} pairs (fraction {args.fraction:g}) to {write_pairs(pairs, args.output)}")
        return 0
    from podisco.tasks.imdb import prepare

    task = prepare(args.preset, args.cache_dir)
    print(f"prepared {task.directory}")
    for key, value in task.facts.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def cmd_task_imdb(args: argparse.Namespace) -> int:
    from podisco.tasks.imdb import prepare
    from podisco.tasks.imdb_eval import ImdbTrainSettings, train_and_evaluate
    from podisco.tasks.imdb_fitness import DEFAULT_KL_PENALTY, paired_fitness

    get_spec(args.loss)
    task = prepare(args.preset, args.cache_dir)
    settings = ImdbTrainSettings(loss=args.loss, beta=args.beta, steps=args.steps)
    settings.lr = args.lr or settings.lr
    seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.against:
        get_spec(args.against)
        paired = paired_fitness(task, args.loss, args.beta, args.out, args.against, seeds, settings)
        print(
            f"{args.loss} - {args.against} at beta={args.beta:g} over {len(seeds)} paired seeds:\n"
            f"  reward       {paired.difference:+.4f} +- {paired.stderr:.4f} (SE)  "
            f"[{paired.candidate_reward:.4f} vs {paired.reference_reward:.4f}]\n"
            f"  reward - {DEFAULT_KL_PENALTY:g} KL  {paired.penalised_difference:+.4f}"
            f" +- {paired.penalised_stderr:.4f} (SE)  "
            f"[KL {paired.candidate_kl:.4f} vs {paired.reference_kl:.4f}]"
        )
        return 0
    result = train_and_evaluate(task, settings, Path(args.out) / f"{args.loss}-{args.beta:g}", seeds)
    print(
        f"{result.task} {result.loss} beta={result.beta:g}: reward {result.reward:.4f} +- {result.reward_std:.4f}, "
        f"KL(ref||policy) per token {result.kl:.4f} +- {result.kl_std:.4f} over seeds {args.seeds}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from podisco.discovery.export import is_loss_file, load_loss_file
    from podisco.reporting.frontier_plot import plot_frontier
    from podisco.tasks.imdb import prepare
    from podisco.tasks.imdb_eval import ImdbTrainSettings
    from podisco.tasks.imdb_fitness import DEFAULT_KL_PENALTY, summarise, sweep

    losses, loss_fns = [], {}
    for name in args.losses.split(","):
        if is_loss_file(name):  # an exported discovery, labelled with its code hash
            label, loss_fns[label] = load_loss_file(name)
            losses.append(label)
        else:
            losses.append(get_spec(name).name)
    betas = [float(b) for b in args.betas.split(",")]
    if any(b <= 0 for b in betas):
        print(f"podisco: error: betas must be positive, got {betas}", file=sys.stderr)
        return 2
    if args.task != "imdb":
        from podisco.cli_judged import cmd_sweep_judged

        return cmd_sweep_judged(args, losses, loss_fns, betas)
    task = prepare(args.preset, args.cache_dir)
    base = ImdbTrainSettings(steps=args.steps)
    base.lr = args.lr or base.lr
    rows = sweep(task, losses, betas, tuple(range(args.seeds)), args.out, base, loss_fns=loss_fns)
    summary = summarise(rows)
    figure = plot_frontier(summary, Path(args.out) / "frontier.png", f"IMDb ({args.preset}): reward vs KL")
    table = [
        (
            loss,
            f"{info['frontier']:.4f}",
            "  ".join(f"b={b:g}: {r:.3f}/{k:.3f}" for b, (r, k) in sorted(info["points"].items())),
        )
        for loss, info in sorted(summary.items(), key=lambda item: -item[1]["frontier"])
    ]
    print(_table(table, ("loss", f"frontier (reward - {DEFAULT_KL_PENALTY:g} KL)", "reward/KL per beta")))
    print(f"wrote {Path(args.out) / 'sweep.csv'} and {figure}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podisco", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    losses = commands.add_parser("losses", help="the loss library: list, show, plot, compare, analyze")
    sub = losses.add_subparsers(dest="losses_command", required=True)

    def rho_range(p: argparse.ArgumentParser) -> None:
        p.add_argument("--range", nargs=2, type=float, default=list(DEFAULT_RHO_RANGE), metavar=("LO", "HI"))

    p = sub.add_parser("list", help="every registered loss with its source and formula")
    p.add_argument("--family", choices=sorted(FAMILIES))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="formula, parameters, extrema and nearest losses of one loss")
    p.add_argument("name")
    p.add_argument("--beta", type=float, default=0.05)
    rho_range(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("plot", help="loss and gradient side by side, one row per beta")
    p.add_argument("names", nargs="+")
    p.add_argument("--beta", type=float, action="append", help="repeatable; default 0.05")
    p.add_argument("-o", "--output", default="losses.png")
    rho_range(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compare", help="behavioural fingerprint distance between two losses")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--beta", type=float, default=0.05)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("analyze", help="analyse every registered loss; write a CSV and figures")
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--out", default="runs/losses")
    rho_range(p)
    p.set_defaults(func=cmd_analyze)

    task = commands.add_parser("task", help="run a fitness task")
    task_sub = task.add_subparsers(dest="task_name", required=True)
    p = task_sub.add_parser("digits", help="the classification sanity task: validation accuracy of a loss")
    p.add_argument("--loss", default="cross_entropy", help="cross_entropy, label_smoothing or squared_error")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    p.add_argument("--data-dir", dest="data_dir", help="CIFAR-10 in its python format")
    p.set_defaults(func=cmd_task_digits)

    p = task_sub.add_parser("prepare", help="build and cache what a task needs (tokenizer, SFT model, scorers, pairs)")
    p.add_argument("name", choices=["imdb", "tldr"])
    p.add_argument("--preset", default="default", choices=["tiny", "default", "paper"])
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--fraction", type=float, default=0.1, help="tldr: share of the comparisons (the paper: 10%%)")
    p.add_argument("--source", help="tldr: comparisons (JSONL or hub id; default the CarperAI comparisons)")
    p.add_argument("--seed", type=int, default=0, help="tldr: which fraction")
    p.add_argument("-o", "--output", default="data/tldr_pairs.jsonl", help="tldr: the JSONL written")
    p.set_defaults(func=cmd_task_prepare)
    p = task_sub.add_parser("imdb", help="train one loss at one beta on the IMDb pairs; reward and KL")
    p.add_argument("--loss", default="sigmoid")
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=0, help="0: one epoch over the pairs")
    p.add_argument("--lr", type=float, help="default: the task's (ImdbTrainSettings.lr)")
    p.add_argument("--seeds", default="0,1,2", help="evaluation sampling seeds (training seeds too with --against)")
    p.add_argument("--against", help="paired comparison with this loss: same training and sampling seed per run")
    p.add_argument("--preset", default="default", choices=["tiny", "default", "paper"])
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--out", default="runs/imdb")
    p.set_defaults(func=cmd_task_imdb)

    from podisco.cli_judged import add_commands as add_judged_tasks
    from podisco.cli_judged import add_judged_task_arguments

    add_judged_tasks(task_sub)

    p = commands.add_parser("sweep", help="train every (loss, beta, seed) on a task; CSV and reward-vs-KL frontier")
    p.add_argument("--task", default="imdb", choices=["imdb", "chat", "alpaca", "tldr"])
    p.add_argument("--preset", default="default", choices=["tiny", "default", "paper"])
    p.add_argument("--losses", default="sigmoid,hinge,discopop")
    p.add_argument("--betas", default="0.025,0.05,0.1,0.25")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per run; 0: one epoch")
    p.add_argument("--lr", type=float, help="default: the task's (ImdbTrainSettings.lr)")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--out", default="runs/sweep")
    add_judged_task_arguments(p)
    p.set_defaults(func=cmd_sweep)

    from podisco.cli_discovery import add_commands

    add_commands(commands)

    for name, func, text in (
        ("train", cmd_train, "preference-train a causal LM with any registered loss"),
        ("sft", cmd_sft, "supervised fine-tuning of a causal LM"),
    ):
        p = commands.add_parser(
            name,
            help=text,
            description=f"{text}. Further options as type-checked overrides: --optim.lr=1e-5 --batch_size=4 ...",
        )
        p.add_argument("--config", help="YAML file holding a TrainConfig")
        p.add_argument("--model", help="local folder or hub id")
        p.add_argument("--data", help="jsonl / json / csv / parquet file, saved datasets folder, or hub id")
        p.add_argument("--output-dir", dest="output_dir")
        p.add_argument("--resume", help="a checkpoint folder written by an earlier run")
        if name == "train":
            p.add_argument("--loss", help="registered loss, or a combination like sigmoid=0.8,sft=1")
            p.add_argument("--beta", type=float)
        p.set_defaults(func=func, takes_overrides=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "beta", None) is not None:
        betas = args.beta if isinstance(args.beta, list) else [args.beta]
        if any(b <= 0 for b in betas):
            print(f"podisco: error: beta must be positive, got {betas}", file=sys.stderr)
            return 2
    try:
        return args.func(args, extra) if getattr(args, "takes_overrides", False) else args.func(args)
    except PodiscoError as err:
        print(f"podisco: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
