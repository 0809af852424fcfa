"""Sweep figures: the reward-vs-KL frontier (IMDb; one line per loss, points labelled by beta, the paper's
Fig. 5) and, for the LLM-judged tasks, the judge's score against beta."""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from podisco.reporting.figures import save_figure


def plot_frontier(summary: dict[str, dict], out: str | Path, title: str = "IMDb: reward vs KL") -> Path:
    """``summary`` from ``sweep_summary.summarise_frontier``: {loss: {"points": {beta: (reward, kl)}, ...}}."""
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    for i, (loss, info) in enumerate(sorted(summary.items())):
        betas = sorted(info["points"])
        kls = [info["points"][b][1] for b in betas]
        rewards = [info["points"][b][0] for b in betas]
        ax.plot(kls, rewards, "o-", color=colours(i % 10), label=f"{loss} (frontier {info['frontier']:.3f})")
        for b, k, r in zip(betas, kls, rewards, strict=True):
            ax.annotate(
                f"β={b:g}", (k, r), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colours(i % 10)
            )
    ax.set_xlabel("KL(π_ref ‖ π_θ) per token")
    ax.set_ylabel("evaluation reward: mean p(positive)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def plot_scores(summary: dict[str, dict[float, float]], out: str | Path, title: str, ylabel: str) -> Path:
    """``summary`` as returned by ``judged.summarise``: {loss: {beta: mean score}}; one line per loss."""
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    for i, (loss, by_beta) in enumerate(sorted(summary.items())):
        betas = sorted(by_beta)
        ax.plot(betas, [by_beta[b] for b in betas], "o-", color=colours(i % 10), label=loss)
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
