"""Token ids of prompts and completions, with a robust prompt / completion boundary.

BPE tokenizers may merge across the join of prompt and completion, so tokenize(prompt) is not always a prefix
of tokenize(prompt + completion). We tokenize the full texts and take as prompt the longest prefix shared by
tokenize(prompt), tokenize(prompt + chosen) and tokenize(prompt + rejected): prompt + completion is then
exactly the full text's tokenization, and chosen and rejected share their prompt ids (prefix sharing needs
that). Standard-format completions get EOS appended, as TRL does; chat templates end the turn themselves.
Truncation keeps the start (TRL's keep_start): completions are cut to fit ``max_length`` after the prompt,
and a pair whose prompt alone fills ``max_length`` is dropped and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from podisco.data.loading import DataError
from podisco.data.validate import DropReport, common_prefix_length


@dataclass(frozen=True)
class PreferenceExample:
    row: int  # index in the source, for error messages
    prompt_ids: list[int]
    chosen_ids: list[int]  # completion tokens only
    rejected_ids: list[int]


@dataclass(frozen=True)
class SFTExample:
    row: int
    prompt_ids: list[int]  # context, not scored (may be empty)
    completion_ids: list[int]  # scored


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _texts(tokenizer, prompt, completion) -> tuple[str, str]:
    """(prompt text, prompt + completion text), through the chat template for message lists."""
    if isinstance(prompt, str):
        return prompt, prompt + completion
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data needs a tokenizer with a chat template")
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) if prompt else ""
    return prompt_text, tokenizer.apply_chat_template(prompt + completion, tokenize=False)


def _with_eos(ids: list[int], eos: int | None, standard: bool) -> list[int]:
    return [*ids, eos] if standard and eos is not None and (not ids or ids[-1] != eos) else ids


def _drop_or_raise(report: DropReport, row: int, reason: str, on_error: str) -> None:
    if on_error == "raise":
        raise DataError(f"row {row}: {reason}")
    report.dropped.append((row, reason))


def tokenize_pairs(
    rows: Sequence[dict[str, Any]], tokenizer, max_length: int, on_error: str = "drop"
) -> tuple[list[PreferenceExample], DropReport]:
    """Tokenize validated rows (``validate_rows`` output); returns the kept examples and the drop report."""
    eos = tokenizer.eos_token_id
    report = DropReport(total=len(rows))
    examples = []
    for index, row in enumerate(rows):
        source_row = row.get("row", index)
        prompt_text, chosen_text = _texts(tokenizer, row["prompt"], row["chosen"])
        _, rejected_text = _texts(tokenizer, row["prompt"], row["rejected"])
        prompt_ids, chosen_full, rejected_full = (
            _encode(tokenizer, t) for t in (prompt_text, chosen_text, rejected_text)
        )
        n = common_prefix_length(prompt_ids, chosen_full, rejected_full)
        standard = isinstance(row["prompt"], str)
        chosen = _with_eos(chosen_full[n:], eos, standard)
        rejected = _with_eos(rejected_full[n:], eos, standard)
        if n >= max_length:
            _drop_or_raise(report, source_row, f"prompt has {n} tokens >= max_length {max_length}", on_error)
            continue
        room = max_length - n
        examples.append(PreferenceExample(source_row, prompt_ids[:n], chosen[:room], rejected[:room]))
    return examples, report


def tokenize_sft(
    rows: Sequence[dict[str, Any]], tokenizer, max_length: int, on_error: str = "drop"
) -> tuple[list[SFTExample], DropReport]:
    """Rows with ``text`` (all scored), ``prompt`` + ``completion`` (completion scored) or ``messages``
    (a conversation through the chat template, all scored)."""
    eos = tokenizer.eos_token_id
    report = DropReport(total=len(rows))
    examples = []
    for index, row in enumerate(rows):
        if isinstance(row.get("text"), str):
            prompt_text, full_text = "", row["text"]
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            prompt_text, full_text = row["prompt"], row["prompt"] + row["completion"]
        elif isinstance(row.get("messages"), list):
            prompt_text, full_text = _texts(tokenizer, [], row["messages"])
        else:
            raise DataError(f"row {index}: needs a 'text' string, 'prompt' + 'completion' strings, or 'messages'")
        full = _encode(tokenizer, full_text)
        prompt_ids = _encode(tokenizer, prompt_text) if prompt_text else []
        n = common_prefix_length(prompt_ids, full)
        completion = _with_eos(full[n:], eos, "messages" not in row)
        if n >= max_length:
            _drop_or_raise(report, index, f"prompt has {n} tokens >= max_length {max_length}", on_error)
            continue
        if n == 0 and len(completion) < 2:  # with no context the first token is never scored
            _drop_or_raise(report, index, "fewer than 2 tokens", on_error)
            continue
        examples.append(SFTExample(index, full[:n], completion[: max_length - n]))
    return examples, report
