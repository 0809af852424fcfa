"""Writing a matplotlib figure to a file."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, out: str | Path, dpi: int = 120) -> Path:
    """Lay out ``fig`` and write it to ``out`` (parent folders created); returns the path."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
