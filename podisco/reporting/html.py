"""HTML pieces for the report: escaping and Python syntax highlighting.

Everything that came from an LLM (names, thoughts, code, errors) goes through ``text`` or ``highlight``,
which escape it: it is shown as text and can never become markup or script.
"""

from __future__ import annotations

import html
import io
import keyword
import tokenize


def text(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def highlight(code: str) -> str:
    """Python source as escaped HTML with spans for keywords, names of modules, strings, numbers, comments."""
    out: list[str] = []
    lines = code.splitlines(keepends=True)
    position = (1, 0)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text(code)  # not Python (a raw reply): plain escaped text
    for token in tokens:
        if token.start > position:  # the whitespace and anything tokenize skipped, verbatim
            out.append(text(_slice(lines, position, token.start)))
        kind = _css_class(token)
        value = text(token.string)
        out.append(f'<span class="{kind}">{value}</span>' if kind else value)
        position = max(position, token.end)
    return "".join(out)


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0 - 1][c0:c1] if r0 - 1 < len(lines) else ""
    parts = [lines[r0 - 1][c0:]] + lines[r0 : r1 - 1]
    if r1 - 1 < len(lines):
        parts.append(lines[r1 - 1][:c1])
    return "".join(parts)


def _css_class(token: tokenize.TokenInfo) -> str:
    if token.type == tokenize.NAME:
        if keyword.iskeyword(token.string):
            return "kw"
        if token.string in ("torch", "F", "math", "self"):
            return "mod"
        return ""
    return {tokenize.STRING: "str", tokenize.NUMBER: "num", tokenize.COMMENT: "com"}.get(token.type, "")
