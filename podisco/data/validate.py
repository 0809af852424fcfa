"""Check and normalise preference rows before any tokenisation, so a bad file fails with its row and field named
instead of deep inside a tokenizer or a forward pass.

A row becomes ``{"row", "prompt", "chosen", "rejected"}`` (``row``: its 0-based index in the source, carried on
for later messages): all three strings (standard format) or all three lists of ``{"role", "content"}`` messages
(conversational format; extra message keys such as ``name`` are kept for the chat template).

**Implicit prompt.** Without a ``prompt`` column the prompt is what ``chosen`` and ``rejected`` share:

* conversations: the common leading messages, but each completion keeps at least one message (TRL's
  ``extract_prompt``);
* strings: the common character prefix, cut back to its last whitespace character, which goes to the
  completions. TRL cuts at the first differing character and only moves a space just before it into the
  completions, so "the movie was great" / "the movie was good" gives it the prompt "the movie was g"; we give
  "the movie was" with completions " great" / " good", so no word is split, and where the texts diverge at a
  word start both rules agree. With no whitespace in the shared prefix the prompt is empty. When one text is
  a prefix of the other the shared part is shortened by a character first so neither completion is empty.

**Errors.** Structural faults raise ``DataError`` whatever ``on_error`` says: a missing column (once, listing
the columns found), a row missing a field, a field that is neither text nor a message list (a number, None), a
message without a string role/content, text mixed with messages in one row. Every row's structure is checked
before raising, so the message counts the bad rows and lists the first few. An empty field (blank text, no
messages) is dropped and reported, or raised with ``on_error="raise"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from podisco.data.errors import DataError, DropReport, check_on_error, list_some

REQUIRED = ("chosen", "rejected")


class MalformedRow(Exception):
    """A structural fault of one row; collected, then raised together as one DataError."""


def common_prefix_length(*seqs: Sequence) -> int:
    """Length of the longest prefix all sequences share (strings, token ids or message lists)."""
    n = 0
    for items in zip(*seqs, strict=False):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


def check_messages(value: list, name: str) -> list[dict[str, Any]]:
    """The messages of one field, each a dict with string ``role`` and ``content``; raises ``MalformedRow``."""
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise MalformedRow(
                f"field {name!r}: message {i} must be a {{'role', 'content'}} object, got {message!r:.60}"
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise MalformedRow(f"field {name!r}: message {i} needs a string {key!r} (got {message.get(key)!r:.60})")
    return [dict(m) for m in value]


def _is_empty(value: str | list) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return not value or all(not m["content"].strip() for m in value)


def _implicit_text_prompt(chosen: str, rejected: str) -> int:
    """Where the implicit prompt ends: the common prefix cut back to its last whitespace (see module doc)."""
    n = common_prefix_length(chosen, rejected)
    if n in (len(chosen), len(rejected)):  # one text would have no completion left
        n -= 1
    cut = n
    while cut > 0 and not chosen[cut - 1].isspace():
        cut -= 1
    return max(cut - 1, 0)  # the prompt stops before that whitespace character


def _implicit_messages_prompt(chosen: list, rejected: list) -> int:
    """Shared leading messages, leaving at least one message to each completion."""
    return min(common_prefix_length(chosen, rejected), len(chosen) - 1, len(rejected) - 1)


def _structure(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The row's fields, checked for type; raises ``MalformedRow`` naming the field."""
    if not isinstance(row, dict):
        raise MalformedRow(f"expected an object with {', '.join(fields)}, got {type(row).__name__}")
    values = {}
    for name in fields:
        if name not in row:
            raise MalformedRow(f"missing field {name!r}")
        value = row[name]
        if not isinstance(value, (str, list)):
            raise MalformedRow(f"field {name!r} must be text or a list of messages, got {type(value).__name__}")
        values[name] = check_messages(value, name) if isinstance(value, list) else value
    kinds = {isinstance(v, list) for v in values.values()}
    if len(kinds) > 1:
        raise MalformedRow(f"mixes text and message lists across {', '.join(fields)}")
    return values


def validate_rows(
    rows: Sequence[dict[str, Any]], source: str = "data", on_error: str = "drop"
) -> tuple[list[dict[str, Any]], DropReport]:
    """Normalised rows (``{"row", "prompt", "chosen", "rejected"}``) and the report of the dropped ones.

    ``source`` only labels messages (a file name or hub id). Raises ``DataError`` on structural faults.
    """
    check_on_error(on_error)
    if not rows:
        raise DataError(f"{source}: no rows")
    columns = set().union(*(row for row in rows if isinstance(row, dict)))
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(sorted(columns)) or 'none'}); "
            "a preference dataset needs 'chosen' and 'rejected', and optionally 'prompt'"
        )
    fields = ("prompt", *REQUIRED) if "prompt" in columns else REQUIRED
    report = DropReport(total=len(rows))
    malformed: list[str] = []
    out = []
    for index, row in enumerate(rows):
        try:
            values = _structure(row, fields)
        except MalformedRow as fault:
            malformed.append(f"row {index}: {fault}")
            continue
        if malformed:  # already failing: only look for more faults to report
            continue
        empty = [name for name, value in values.items() if _is_empty(value)]
        if empty:
            report.add(index, f"field {empty[0]!r} is empty", on_error, source)
            continue
        if "prompt" not in values:
            chosen, rejected = values["chosen"], values["rejected"]
            if isinstance(chosen, str):
                n = _implicit_text_prompt(chosen, rejected)
            else:
                n = _implicit_messages_prompt(chosen, rejected)
            values = {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
        out.append({"row": index, **values})
    if malformed:
        head = f"{len(malformed)} malformed rows: " if len(malformed) > 1 else ""
        raise DataError(f"{source}: {head}{list_some(malformed)}")
    return out, report
