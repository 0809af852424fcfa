"""Token ids of prompts and completions, with a robust prompt / completion boundary.

**Boundary.** BPE tokenizers may merge across the join ("the movie " + "was" tokenizes as "the", " movie",
" was", not "the", " movie", " ", "was"), so tokenize(prompt) is not always a prefix of tokenize(prompt +
completion). We tokenize the full texts and take as prompt the longest prefix shared by tokenize(prompt),
tokenize(prompt + chosen) and tokenize(prompt + rejected). Then prompt + completion is exactly the full text's
tokenization (what the model would see at inference), and chosen and rejected share their prompt ids, which
prefix sharing needs. Rows where the prompt had to be cut back are listed in the report (TRL warns about the
same mismatch). No special tokens are added by the tokenizer call; a chat template adds its own.

**EOS.** Standard-format completions get ``eos_token_id`` appended unless they already end with it, as TRL does,
so the model learns to stop. Conversational completions get nothing: the chat template ends the turn.

**Truncation** keeps the start (TRL's ``keep_start``): len(prompt) + max(len(chosen), len(rejected)) <=
max_length, completions cut to fit. A pair whose prompt alone has >= max_length tokens has nothing left to
score, so it is dropped and reported (or raised with ``on_error="raise"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from podisco.data.errors import DataError, DropReport, check_on_error
from podisco.data.validate import MalformedRow, check_messages, common_prefix_length

CHUNK = 1024  # rows per batched tokenizer call: the Rust tokenizer parallelises within a call


@dataclass(frozen=True)
class PreferenceExample:
    row: int  # index in the source, for error messages
    prompt_ids: list[int]
    chosen_ids: list[int]  # completion tokens only, EOS appended (standard format), truncated
    rejected_ids: list[int]


@dataclass(frozen=True)
class SFTExample:
    row: int  # index in the source, for error messages
    prompt_ids: list[int]  # context, not scored (may be empty)
    completion_ids: list[int]  # scored (with no prompt, all but the first token)


def _encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _chat(tokenizer, messages: list, row: int, generation_prompt: bool) -> str:
    """Text of ``messages`` through the tokenizer's chat template; a template that rejects them is a hard error
    (the data and the model disagree about roles, which no amount of dropping fixes)."""
    if not messages:
        return ""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"row {row}: conversational data needs a tokenizer with a chat_template")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as err:
        raise DataError(f"row {row}: the chat template rejects these messages: {err}") from None


def _texts(tokenizer, prompt: str | list, completions: Sequence[str | list], row: int) -> list[str]:
    """[prompt text, prompt + completion text for each completion]; message lists go through the chat template
    (the prompt with the generation prompt that opens the assistant turn)."""
    if isinstance(prompt, str) and all(isinstance(c, str) for c in completions):
        return [prompt, *(prompt + c for c in completions)]
    if isinstance(prompt, list) and all(isinstance(c, list) for c in completions):
        return [_chat(tokenizer, prompt, row, True), *(_chat(tokenizer, prompt + c, row, False) for c in completions)]
    raise DataError(f"row {row}: prompt and completion must both be text or both message lists")


def _with_eos(ids: list[int], eos: int | None) -> list[int]:
    return [*ids, eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _check_max_length(max_length: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (a prompt token and a completion token), got {max_length}")


def tokenize_pairs(
    rows: Sequence[dict[str, Any]], tokenizer, max_length: int, on_error: str = "drop"
) -> tuple[list[PreferenceExample], DropReport]:
    """Tokenize validated rows (``validate_rows`` output; a row's ``"row"`` key, else its index, names it).

    Returns the kept examples, in order, and the report of the dropped ones.
    """
    check_on_error(on_error)
    _check_max_length(max_length)
    eos = tokenizer.eos_token_id
    report = DropReport(total=len(rows))
    examples = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        sources = [row.get("row", start + i) for i, row in enumerate(chunk)]
        texts = [
            _texts(tokenizer, row["prompt"], (row["chosen"], row["rejected"]), src)
            for src, row in zip(sources, chunk, strict=True)
        ]
        prompts, chosens, rejecteds = (_encode_all(tokenizer, list(column)) for column in zip(*texts, strict=True))
        for src, row, prompt, chosen_full, rejected_full in zip(
            sources, chunk, prompts, chosens, rejecteds, strict=True
        ):
            n = common_prefix_length(prompt, chosen_full, rejected_full)
            if n < len(prompt):
                report.boundary_merged.append(src)
            chosen, rejected = chosen_full[n:], rejected_full[n:]
            if isinstance(row["prompt"], str):
                chosen, rejected = _with_eos(chosen, eos), _with_eos(rejected, eos)
            if n >= max_length:
                report.add(src, f"prompt has {n} tokens >= max_length {max_length}", on_error)
            elif not chosen or not rejected:
                report.add(src, f"{'chosen' if not chosen else 'rejected'} completion has no tokens", on_error)
            else:
                room = max_length - n
                examples.append(PreferenceExample(src, prompt[:n], chosen[:room], rejected[:room]))
    return examples, report


def _sft_parts(row: Any, index: int) -> tuple[str | list, str | list]:
    """(prompt, completion) of one SFT row: text, a conversation, or a prompt-completion pair of either kind."""
    if isinstance(row, str):
        return "", row
    if isinstance(row, dict):
        if isinstance(row.get("text"), str):
            return "", row["text"]
        if isinstance(row.get("messages"), list):
            try:
                return [], check_messages(row["messages"], "messages")
            except MalformedRow as fault:
                raise DataError(f"row {index}: {fault}") from None
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            return prompt, completion
        if isinstance(prompt, list) and isinstance(completion, list):
            try:
                return check_messages(prompt, "prompt"), check_messages(completion, "completion")
            except MalformedRow as fault:
                raise DataError(f"row {index}: {fault}") from None
        found = ", ".join(f"{k}: {type(v).__name__}" for k, v in row.items())
    else:
        found = type(row).__name__
    raise DataError(
        f"row {index}: an SFT row needs a 'text' string, a 'messages' list, or 'prompt' + 'completion' "
        f"(both text or both message lists); found {found or 'nothing'}"
    )


def tokenize_sft(
    rows: Sequence[dict[str, Any] | str], tokenizer, max_length: int, on_error: str = "drop"
) -> tuple[list[SFTExample], DropReport]:
    """Tokenize SFT rows: a plain string or ``{"text"}`` (all tokens scored, EOS appended), ``{"messages"}``
    (the whole conversation through the chat template, all scored, as TRL's SFT does by default), or
    ``{"prompt", "completion"}`` as text (EOS appended) or message lists (only the completion is scored).

    Truncation keeps the start; a row with nothing left to score (prompt >= max_length, or a lone token with
    no context to predict it from) is dropped and reported, or raised with ``on_error="raise"``.
    """
    check_on_error(on_error)
    _check_max_length(max_length)
    eos = tokenizer.eos_token_id
    report = DropReport(total=len(rows), unit="examples")
    examples = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        parts = [_sft_parts(row, start + i) for i, row in enumerate(chunk)]
        texts = [_texts(tokenizer, p, (c,), start + i) for i, (p, c) in enumerate(parts)]
        prompts = _encode_all(tokenizer, [t[0] for t in texts])
        fulls = _encode_all(tokenizer, [t[1] for t in texts])
        for i, ((prompt_part, _), prompt, full) in enumerate(zip(parts, prompts, fulls, strict=True)):
            index = start + i
            n = common_prefix_length(prompt, full)
            if n < len(prompt):
                report.boundary_merged.append(index)
            completion = _with_eos(full[n:], eos) if isinstance(prompt_part, str) else full[n:]
            if n >= max_length:
                report.add(index, f"prompt has {n} tokens >= max_length {max_length}", on_error)
            elif n == 0 and len(completion) < 2:  # the first token has no context to be predicted from
                report.add(index, "nothing to score (fewer than 2 tokens)", on_error)
            elif not completion:
                report.add(index, "nothing to score (no completion tokens)", on_error)
            else:
                examples.append(SFTExample(index, full[:n], completion[: max_length - n]))
    return examples, report
