"""Check and normalise preference rows before any tokenisation.

A row becomes ``{"prompt", "chosen", "rejected"}``, all strings (standard format) or all lists of
``{"role", "content"}`` messages (conversational format). Structural faults (a missing column, a field of the
wrong type, a message without role/content) are errors naming the row and field; an empty field makes the
pair unusable and is dropped and reported, or raised with ``on_error="raise"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from podisco.data.loading import DataError

Messages = list[dict[str, str]]


@dataclass
class DropReport:
    """Which rows were left out and why."""

    total: int = 0
    dropped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.total - len(self.dropped)

    def merge(self, other: DropReport) -> DropReport:
        return DropReport(self.total, sorted(self.dropped + other.dropped))

    def __str__(self) -> str:
        text = f"kept {self.kept} of {self.total} pairs"
        if self.dropped:
            shown = "; ".join(f"row {row}: {why}" for row, why in self.dropped[:5])
            more = f"; and {len(self.dropped) - 5} more" if len(self.dropped) > 5 else ""
            text += f"; dropped {len(self.dropped)}: {shown}{more}"
        return text


def common_prefix_length(*seqs: Sequence) -> int:
    """Length of the longest prefix all sequences share."""
    n = 0
    for items in zip(*seqs, strict=False):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


def _is_messages(value: Any) -> bool:
    return isinstance(value, list)


def _check_messages(value: list, where: str) -> Messages:
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: message {i} needs a string 'role' (got {message!r:.80})")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: message {i} needs a string 'content' (got {message.get('content')!r:.80})")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _common_prefix_messages(a: Messages, b: Messages) -> int:
    """Shared leading messages, leaving at least one message of each completion."""
    return min(common_prefix_length(a, b), len(a) - 1, len(b) - 1)


def _implicit_prompt_text(chosen: str, rejected: str) -> int:
    """Length of the shared prefix, cut back to just after the last whitespace so no word is split."""
    n = common_prefix_length(chosen, rejected)
    if n in (len(chosen), len(rejected)):  # one completion would be empty: leave a word of it
        n -= 1
    cut = max(chosen.rfind(" ", 0, n), chosen.rfind("\n", 0, n))
    return cut + 1 if cut >= 0 else 0


def validate_rows(
    rows: list[dict[str, Any]], source: str = "data", on_error: str = "drop"
) -> tuple[list[dict[str, Any]], DropReport]:
    """Normalised rows (each with its source index under ``"row"``) and the report of dropped ones."""
    if not rows:
        raise DataError(f"{source}: no rows")
    columns = set(rows[0])
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(sorted(columns))})")
    explicit = "prompt" in columns
    report = DropReport(total=len(rows))
    out = []
    for index, row in enumerate(rows):
        where = f"{source}: row {index}"
        fields = ("prompt", "chosen", "rejected") if explicit else ("chosen", "rejected")
        for name in fields:
            if name not in row:
                raise DataError(f"{where}: missing field {name!r}")
            value = row[name]
            if not isinstance(value, (str, list)):
                raise DataError(
                    f"{where}: field {name!r} must be text or a list of messages, got {type(value).__name__}"
                )
        conversational = _is_messages(row["chosen"])
        values = {name: row[name] for name in fields}
        if any(_is_messages(v) != conversational for v in values.values()):
            raise DataError(f"{where}: mixes text and message lists across {', '.join(fields)}")
        if conversational:
            values = {name: _check_messages(v, f"{where}, field {name!r}") for name, v in values.items()}
        empty = [name for name, v in values.items() if (not v.strip() if isinstance(v, str) else not v)]
        if empty:
            reason = f"empty field {empty[0]!r}"
            if on_error == "raise":
                raise DataError(f"{where}: {reason}")
            report.dropped.append((index, reason))
            continue
        if not explicit:
            if conversational:
                n = _common_prefix_messages(values["chosen"], values["rejected"])
            else:
                n = _implicit_prompt_text(values["chosen"], values["rejected"])
            values = {
                "prompt": values["chosen"][:n],
                "chosen": values["chosen"][n:],
                "rejected": values["rejected"][n:],
            }
        out.append({"row": index, **values})
    return out, report
