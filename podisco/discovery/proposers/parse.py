"""Turning a proposer's reply into a Proposal, or into an error message the LLM can act on.

Models wrap JSON in prose or code fences, put raw newlines inside strings, get cut off mid-reply, and write
more (or less) than one function. Each of these gets its own message, because the message is sent back to the
model verbatim and a vague one ("invalid reply") wastes a round trip.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import textwrap
from dataclasses import dataclass
from typing import Any

EXPECTED = 'a JSON object with the string keys "thought", "name" and "code"'
KEYS = ("thought", "name", "code")
MAX_BRACE_STARTS = 50  # bounds the scan on long prose; real replies have the object within the first few

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)```", re.DOTALL)
_CODE_FENCE_OPEN = re.compile(r"\A\s*```[A-Za-z0-9_+-]*[ \t]*\n?")
_CODE_FENCE_CLOSE = re.compile(r"\n?[ \t]*```\s*\Z")
_TRUNCATED = (
    "The JSON object is incomplete (truncated reply?): it opens with { but never closes. "
    f"Send the whole of {EXPECTED}, with a shorter thought if needed."
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Proposal:
    """A candidate objective: the model's reasoning, the loss name, and the source of one function."""

    thought: str
    name: str
    code: str

    @property
    def function_name(self) -> str:
        """The name of the top-level def in ``code`` (may differ from ``name``; that is what to call)."""
        return next((n.name for n in ast.parse(self.code).body if isinstance(n, ast.FunctionDef)), self.name)


class ProposalError(ValueError):
    """The reply cannot be used; ``str(e)`` tells the model exactly what to fix."""


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text``: the whole text, a fenced block, or the first balanced ``{...}`` that parses."""
    stripped = text.strip()
    whole = _loads(stripped)
    if whole is not None:
        if isinstance(whole[0], str) and "{" in whole[0]:  # the object was JSON-encoded twice
            return extract_json_object(whole[0])
        return _as_object(whole[0])
    for block in _FENCE.findall(stripped):
        fenced = _loads(block.strip())
        if fenced is not None:
            return _as_object(fenced[0])
    return _scan_for_object(stripped)


def _scan_for_object(text: str) -> dict[str, Any]:
    """Try each balanced ``{...}`` in turn. An object with one of the expected keys wins at once; a keyless one
    loses to a failed candidate that encloses it (it is then a fragment of a broken or truncated object)."""
    failures: list[tuple[int, int, str]] = []  # (start, end, message) of candidates that did not parse
    found: tuple[int, int, dict[str, Any]] | None = None
    for start in [i for i, ch in enumerate(text) if ch == "{"][:MAX_BRACE_STARTS]:
        end = _matching_brace(text, start)
        if end is None:
            failures.append((start, len(text), _TRUNCATED))
            continue
        candidate = text[start : end + 1]
        parsed = _loads(candidate)
        if parsed is None or not isinstance(parsed[0], dict):
            problem = (
                f"The reply contains {{...}} but it is not valid JSON ({_json_error(candidate)}); send {EXPECTED}."
            )
            failures.append((start, end, problem))
        elif any(k in parsed[0] for k in KEYS):
            return parsed[0]
        elif found is None:
            found = (start, end, parsed[0])
    if found is not None:
        enclosing = [m for s, e, m in failures if s < found[0] and e > found[1]]
        if not enclosing:
            return found[2]
        raise ProposalError(enclosing[0])
    messages = [m for _, _, m in failures]
    if messages:
        raise ProposalError(_TRUNCATED if _TRUNCATED in messages else messages[0])
    raise ProposalError(f"No JSON object found in the reply; expected {EXPECTED}.")


def parse_proposal(text: str) -> Proposal:
    """Validate the keys, the name and the code of a reply; raise ProposalError with the first problem found."""
    obj = extract_json_object(text)
    missing = [k for k in KEYS if k not in obj]
    if missing:
        listed = ", ".join(f'"{k}"' for k in missing)
        raise ProposalError(f"The JSON object is missing the key(s) {listed}; expected {EXPECTED}.")
    for key in KEYS:
        if not isinstance(obj[key], str):
            raise ProposalError(f'The key "{key}" must be a string, but it is a JSON {_json_kind(obj[key])}.')
    name, code = obj["name"].strip(), _strip_code_fence(obj["code"])
    if not name:
        raise ProposalError('The "name" is empty; give the loss a short snake_case name, e.g. "log_ratio_margin".')
    if not code.strip():
        raise ProposalError('The "code" is empty; it must be the Python source of one function.')
    if not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise ProposalError(
            f'The "name" {name!r} is not a valid Python identifier (it is used as the function and loss name); '
            f'use something like "{sanitize_name(name)}".'
        )
    _check_code(code)
    return Proposal(thought=obj["thought"].strip(), name=name, code=code)


def sanitize_name(name: str) -> str:
    """A snake_case identifier close to ``name``, used to suggest a fix."""
    cleaned = re.sub(r"[^0-9a-zA-Z_]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)).strip("_").lower()
    cleaned = re.sub(r"_+", "_", cleaned) or "loss"
    if cleaned[0].isdigit():
        cleaned = f"loss_{cleaned}"
    return f"{cleaned}_" if keyword.iskeyword(cleaned) else cleaned


def _loads(candidate: str) -> tuple[Any] | None:
    """json.loads, then leniently: raw control characters in strings, then stray backslashes (regex, LaTeX)."""
    for attempt in (candidate, _ESCAPE.sub(_fix_escape, candidate)):
        for strict in (True, False):
            try:
                return (json.loads(attempt, strict=strict),)
            except ValueError:
                continue
    return None


def _json_error(candidate: str) -> str:
    try:
        json.loads(candidate, strict=False)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "unknown error"


def _fix_escape(match: re.Match[str]) -> str:
    """Keep valid JSON escapes; double the backslash of invalid ones such as ``\\d`` in a regex."""
    return match.group(0) if match.group(1) in '"\\/bfnrtu' else "\\\\" + match.group(1)


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), "null")


def _as_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ProposalError(f"The reply is a JSON {_json_kind(value)}, not an object; send {EXPECTED}.")


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the brace closing ``text[start]``, skipping braces inside JSON strings; None if it never closes."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _strip_code_fence(code: str) -> str:
    """Drop a ```python fence the model put inside the code string, and a uniform indent."""
    code = _CODE_FENCE_CLOSE.sub("", _CODE_FENCE_OPEN.sub("", code, count=1), count=1)
    return textwrap.dedent(code).strip("\n") + "\n"


def _check_code(code: str) -> None:
    """One top-level def, plus only imports and docstrings; helpers must be nested inside the def."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "unknown line"
        text = f": {exc.text.strip()!r}" if exc.text and exc.text.strip() else ""
        raise ProposalError(f'The "code" is not valid Python: {exc.msg} at {where}{text}.') from None
    functions: list[str] = []
    lines = code.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.append(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ):
            continue
        else:
            what = {ast.AsyncFunctionDef: "async def", ast.ClassDef: "class"}.get(type(node), "statement")
            source = lines[node.lineno - 1].strip()
            raise ProposalError(
                f'The "code" has a top-level {what} at line {node.lineno} ({source!r}); only imports and one plain '
                "def may be at the top level. Move constants and helpers inside the function."
            )
    if not functions:
        raise ProposalError('The "code" has no function definition; it must define exactly one function with def.')
    if len(functions) > 1:
        raise ProposalError(
            f'The "code" defines {len(functions)} top-level functions ({", ".join(functions)}); define exactly one '
            "and nest any helpers inside it."
        )
