"""``podisco losses list|show|plot|compare|analyze``: the loss library."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from podisco.cli.common import UsageError, beta, output_dir, output_file, table

if TYPE_CHECKING:
    from podisco.losses.analysis import LossShape


class LazyChoices:
    """``choices`` for argparse read on first use: building the parser imports no torch."""

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load

    def __contains__(self, value: object) -> bool:
        return value in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())


def _families() -> list[str]:
    from podisco.losses import FAMILIES

    return sorted(FAMILIES)


def _rho_range(args: argparse.Namespace) -> tuple[float, float]:
    if args.range is None:
        from podisco.losses.analysis import DEFAULT_RHO_RANGE

        return DEFAULT_RHO_RANGE
    lo, hi = args.range
    if not lo < hi:
        raise UsageError(f"--range LO HI needs LO < HI, got {lo:g} {hi:g}")
    return lo, hi


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


def _figure_path(text: str) -> Path:
    """An output figure whose format matplotlib can write, in a folder that can be made."""
    from matplotlib.figure import Figure

    suffix = Path(text).suffix.lstrip(".").lower()
    formats = Figure().canvas.get_supported_filetypes()
    if suffix not in formats:
        raise UsageError(f"-o {text}: a figure ends in one of .{', .'.join(sorted(formats))}")
    return output_file(text, "-o")


def cmd_list(args: argparse.Namespace) -> int:
    from podisco.losses import list_specs

    specs = [s for s in list_specs() if args.family in (None, s.family)]
    rows = [(s.name, s.family, s.formula, s.source.split(";")[0]) for s in specs]
    print(table(rows, ("name", "family", "formula", "source")))
    aliases = ", ".join(f"{a} -> {s.name}" for s in specs for a in s.aliases)
    if aliases:
        print(f"\naliases: {aliases}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from podisco.losses import FAMILIES, get_spec
    from podisco.losses.analysis import analyze, nearest_known

    spec = get_spec(args.name)
    lo, hi = _rho_range(args)
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
    shape = analyze(spec.name, args.beta, (lo, hi))
    print(f"\nshape at beta = {args.beta:g} on rho in [{lo:g}, {hi:g}]:")
    for line in _describe_shape(shape):
        print(f"  {line}")
    near = ", ".join(f"{n} ({d:.3f})" for n, d in nearest_known(spec.name, args.beta, k=3))
    print(f"  nearest known losses (fingerprint distance): {near}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from podisco.losses import get_spec
    from podisco.reporting.loss_plots import plot_losses  # matplotlib only when drawing

    output = _figure_path(args.output)
    for name in args.names:
        get_spec(name)  # a misspelled name fails with its suggestions, before anything is drawn
    rho = _rho_range(args)
    out = plot_losses(args.names, args.beta or [0.05], output, rho)
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from podisco.losses import get_spec
    from podisco.losses.analysis import DUPLICATE_DISTANCE, compare

    a, b = get_spec(args.a).name, get_spec(args.b).name
    distance = compare(a, b, args.beta)
    verdict = "the same behaviour (duplicates)" if distance < DUPLICATE_DISTANCE else "different behaviour"
    print(f"fingerprint distance {a} vs {b} at beta = {args.beta:g}: {distance:.4f} -> {verdict}")
    print(f"(duplicate threshold {DUPLICATE_DISTANCE}; unrelated shapes score about 1.4)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Every registered loss at one beta: shape facts, nearest neighbour, duplicates; a CSV and two figures."""
    from podisco.losses import list_specs
    from podisco.losses.analysis import DUPLICATE_DISTANCE, analyze, nearest_known
    from podisco.reporting.loss_plots import plot_losses

    lo, hi = _rho_range(args)
    out = output_dir(args.out, "--out")
    rows = []
    for spec in list_specs():
        shape = analyze(spec.name, args.beta, (lo, hi))
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
    print(f"Every registered loss at beta = {args.beta:g}, rho in [{lo:g}, {hi:g}]\n")
    print(table(rows, header))
    with open(out / "losses.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    discovered = ["sigmoid", *(s.name for s in list_specs() if s.family == "discovered"), "discopop"]
    plot_losses(discovered, [args.beta], out / "discovered.png", (lo, hi))
    plot_losses(["sigmoid", "discopop"], [0.01, 0.05, 0.1, 0.5], out / "discopop_vs_dpo.png", (lo, hi))
    print(f"\nwrote {out / 'losses.csv'}, {out / 'discovered.png'}, {out / 'discopop_vs_dpo.png'}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    losses = commands.add_parser("losses", help="the loss library: list, show, plot, compare, analyze")
    sub = losses.add_subparsers(dest="losses_command", metavar="COMMAND", required=True)

    def rho_range(p: argparse.ArgumentParser) -> None:
        help = "the rho axis (default: the paper's Fig. 9/10 axis)"
        p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), help=help)

    def beta_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--beta", type=beta, default=0.05)

    p = sub.add_parser("list", help="every registered loss with its source and formula")
    # a metavar: argparse would otherwise list the choices, and import torch, while it builds the parser
    p.add_argument("--family", choices=LazyChoices(_families), metavar="FAMILY", help="trl, baseline, discovered, ...")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="formula, parameters, extrema and nearest losses of one loss")
    p.add_argument("name")
    beta_flag(p)
    rho_range(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("plot", help="loss and gradient side by side, one row per beta")
    p.add_argument("names", nargs="+")
    p.add_argument("--beta", type=beta, action="append", help="repeatable; default 0.05")
    p.add_argument("-o", "--output", default="losses.png")
    rho_range(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compare", help="behavioural fingerprint distance between two losses")
    p.add_argument("a")
    p.add_argument("b")
    beta_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("analyze", help="analyse every registered loss; write a CSV and figures")
    beta_flag(p)
    p.add_argument("--out", default="runs/losses")
    rho_range(p)
    p.set_defaults(func=cmd_analyze)
