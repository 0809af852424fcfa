"""Figures of a discovery run, drawn from archive rows only (never by running candidate code).

Each function returns a matplotlib ``Figure`` (object API, no pyplot state); ``data_uri`` turns one into an
inline PNG for the self-contained report.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from podisco.discovery.archive import Attempt

STATUS_STYLE = {
    "evaluated": ("o", "tab:blue"),
    "duplicate": ("s", "tab:gray"),
    "invalid": ("x", "tab:red"),
    "failed": ("v", "tab:orange"),
    "proposed": (".", "tab:purple"),
}


def data_uri(fig: Figure, dpi: int = 110) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _label(text: str, limit: int = 28) -> str:
    # Names come from an LLM: in a PNG they cannot be markup, but "$" would switch matplotlib to mathtext.
    text = text.replace("$", "S")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fitness_over_attempts(attempts: Sequence[Attempt]) -> Figure:
    """Fitness per attempt in order, best-so-far as a step line; attempts without fitness on the floor."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    fits = [a.fitness for a in attempts if a.fitness is not None and math.isfinite(a.fitness)]
    floor = (min(fits) - 0.05 * (max(fits) - min(fits) + 1e-9)) if fits else 0.0
    for status, (marker, color) in STATUS_STYLE.items():
        xs = [i for i, a in enumerate(attempts) if a.status == status]
        ys = [
            a.fitness if a.fitness is not None and status != "invalid" else floor
            for a in attempts
            if a.status == status
        ]
        if xs:
            ax.scatter(xs, ys, marker=marker, color=color, label=f"{status} ({len(xs)})", zorder=3)
    best, line = -math.inf, []
    for a in attempts:
        if a.status == "evaluated" and a.fitness is not None:
            best = max(best, a.fitness)
        line.append(best if best > -math.inf else np.nan)
    ax.step(range(len(attempts)), line, where="post", color="black", lw=1.2, label="best so far")
    boundaries = [i for i in range(1, len(attempts)) if attempts[i].generation != attempts[i - 1].generation]
    for x in boundaries:
        ax.axvline(x - 0.5, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("attempt (generations separated by grey lines)")
    ax.set_ylabel("fitness")
    ax.legend(fontsize=7, ncol=3)
    return fig


def loss_curves(top: Sequence[Attempt], reference: tuple[np.ndarray, np.ndarray, np.ndarray], beta: float) -> Figure:
    """The paper's figure style: loss and gradient against rho for the top candidates and DPO, with extrema."""
    fig = Figure(figsize=(9, 3.6))
    ax_f, ax_g = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rho, f, g = reference
    ax_f.plot(rho, f, color="black", lw=2, label="DPO")
    ax_g.plot(rho, g, color="black", lw=2, label="DPO")
    for a in top:
        curve = (a.shape or {}).get("curve")
        if not curve:
            continue
        (line,) = ax_f.plot(curve["rho"], curve["f"], lw=1.4, label=_label(a.name))
        ax_g.plot(curve["rho"], curve["grad"], lw=1.4, color=line.get_color())
        for e in (a.shape or {}).get("extrema", []):
            ax_f.plot([e["rho"]], [e["value"]], marker="v" if e["kind"] == "min" else "^", color=line.get_color())
    ax_f.set_title(f"loss f(rho) at beta={beta:g}")
    ax_g.set_title("gradient df/drho")
    for ax in (ax_f, ax_g):
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_xlabel("rho (log-ratio margin)")
    ax_f.legend(fontsize=7)
    return fig


def training_curves(top: Sequence[Attempt]) -> Figure:
    """Loss, reward margin and preference accuracy over optimizer steps (first seed of each candidate)."""
    fig = Figure(figsize=(10, 3.2))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    keys = ("loss", "rewards/margins", "rewards/accuracies")
    for a in top:
        seeds = (a.metrics or {}).get("per_seed") or [{}]
        train = seeds[0].get("train") or {}
        if not train.get("step"):
            continue
        for ax, key in zip(axes, keys, strict=True):
            if train.get(key):
                ax.plot(train["step"][: len(train[key])], train[key], lw=1.3, label=_label(a.name))
    for ax, key in zip(axes, keys, strict=True):
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    return fig
