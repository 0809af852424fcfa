"""Loss and gradient curves side by side, one row per beta, in the style of the paper's Fig. 9/10 and 14."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot global state, no display backend needed

from podisco.losses.analysis import DEFAULT_RHO_RANGE, analyze, curve
from podisco.losses.registry import get_spec
from podisco.reporting.figures import save_figure


def plot_losses(
    names: Sequence[str],
    betas: Sequence[float],
    out: str | Path,
    rho_range: tuple[float, float] = DEFAULT_RHO_RANGE,
    points: int = 1201,
) -> Path:
    """Write a PNG with f(rho) (left) and df/drho (right) for each loss, one row per beta; local extrema are
    marked on the loss panel. Returns the path written."""
    specs = [get_spec(n) for n in names]  # fail on a misspelled name before drawing anything
    if not betas:
        raise ValueError("at least one beta is needed")
    rho = np.linspace(rho_range[0], rho_range[1], points)
    fig = Figure(figsize=(11, 3.6 * len(betas)))
    axes = fig.subplots(len(betas), 2, squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    for row, beta in enumerate(betas):
        ax_loss, ax_grad = axes[row]
        for i, spec in enumerate(specs):
            values, grads = curve(spec.name, beta, rho)
            colour = colours(i % 10)
            ax_loss.plot(rho, values, color=colour, label=spec.name)
            ax_grad.plot(rho, grads, color=colour, label=spec.name)
            for ext in analyze(spec.name, beta, rho_range).extrema:
                marker = "v" if ext.kind == "min" else "^"
                ax_loss.plot(ext.rho, ext.value, marker, color=colour, markersize=7)
                ax_loss.annotate(
                    f"{ext.kind} {ext.rho:.2f}",
                    (ext.rho, ext.value),
                    textcoords="offset points",
                    xytext=(4, -14) if ext.kind == "min" else (4, 6),
                    fontsize=8,
                    color=colour,
                )
        for ax, title in ((ax_loss, "loss f(ρ)"), (ax_grad, "gradient df/dρ")):
            ax.set_title(f"{title}, β = {beta:g}")
            ax.set_xlabel("ρ = log-ratio margin")
            ax.axvline(0.0, color="0.7", linewidth=0.8)
            ax.grid(alpha=0.3)
        ax_grad.axhline(0.0, color="0.7", linewidth=0.8)
        ax_loss.legend(fontsize=8)
    return save_figure(fig, out)
