"""What the data layer says about bad input: ``DataError`` for what stops the run, ``DropReport`` for rows left out.

Every message names the source, the 0-based row and the field, so a user can open the file and fix it. The
split between the two is deliberate: a structural fault (a missing column, a number where text belongs, a
message without a role) means the file is not what the user thinks it is, so it always raises; a row that is
well formed but unusable (an empty answer, a prompt longer than ``max_length``) is a property of that one row,
so by default it is dropped and counted, and ``on_error="raise"`` turns it into an error too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from podisco.errors import PodiscoError

ON_ERROR = ("drop", "raise")
SHOWN = 5  # how many rows a message or report lists before "and N more"


class DataError(PodiscoError, ValueError):
    """A dataset that cannot be used as given; the message names the file, row and field."""


def check_on_error(on_error: str) -> None:
    """Reject a misspelt ``on_error`` up front rather than silently treating it as "drop"."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'drop' or 'raise', got {on_error!r}")


def list_some(items: Sequence[str], shown: int = SHOWN) -> str:
    """'a; b; c; and 4 more': long lists of bad rows stay one readable line."""
    text = "; ".join(items[:shown])
    return text + (f"; and {len(items) - shown} more" if len(items) > shown else "")


@dataclass
class DropReport:
    """Which rows were left out and why (``dropped``: (source row, reason)), and how many were kept.

    ``boundary_merged`` lists the rows whose prompt tokens were cut back because the tokenizer merged
    across the prompt / completion join (TRL warns about the same mismatch); they are kept, not dropped.
    """

    total: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)
    boundary_merged: list[int] = field(default_factory=list)
    unit: str = "pairs"

    @property
    def kept(self) -> int:
        return self.total - len(self.dropped)

    def merge(self, later: DropReport) -> DropReport:
        """One report for two stages (validation, then tokenisation of what survived): ``total`` is this
        (earlier) stage's, the drops of both add up."""
        return DropReport(
            self.total,
            sorted(self.dropped + later.dropped),
            sorted(self.boundary_merged + later.boundary_merged),
            self.unit,
        )

    def add(self, row: int, reason: str, on_error: str, source: str = "") -> None:
        """Record a dropped row, or raise naming it when the caller asked for ``on_error="raise"``."""
        if on_error == "raise":
            raise DataError(f"{source + ': ' if source else ''}row {row}: {reason}")
        self.dropped.append((row, reason))

    def __str__(self) -> str:
        text = f"kept {self.kept} of {self.total} {self.unit}"
        if self.dropped:
            text += f"; dropped {len(self.dropped)}: " + list_some([f"row {r}: {why}" for r, why in self.dropped])
        if self.boundary_merged:
            rows = ", ".join(str(r) for r in self.boundary_merged[:SHOWN])
            more = ", ..." if len(self.boundary_merged) > SHOWN else ""
            text += (
                f"; {len(self.boundary_merged)} had the tokenizer merge across the prompt/completion boundary "
                f"(rows {rows}{more}); the merged tokens count as completion"
            )
        return text
