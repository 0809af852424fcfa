"""Batches for a causal LM, in two exact layouts that share one scoring description.

``concat`` (TRL's): 2B rows, prompt+chosen then prompt+rejected. ``shared`` (prefix sharing): B rows of
prompt + chosen + rejected; the rejected tokens get the positions they would have right after the prompt and
an attention mask that hides the chosen tokens from them, so every log-prob equals the one of the separate
sequence while the prompt is encoded once.

Either way the batch lists K scored tokens: ``score_row``/``score_pos`` locate the hidden state that predicts
the token (position t-1, except that the first chosen and the first rejected token are both predicted by the
last prompt position), ``score_token`` is the token and ``score_seq`` the output slot (pair i's chosen
completion is slot i, its rejected one B + i; SFT batches have slots 0..B-1 only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from podisco.data.tokenize import PreferenceExample, SFTExample


@dataclass
class PreferenceBatch:
    input_ids: torch.Tensor  # (N, T) long, right-padded
    attention_mask: torch.Tensor  # (N, T) long 0/1, or (N, 1, T, T) bool (True = may attend) for "shared"
    position_ids: torch.Tensor  # (N, T) long
    score_row: torch.Tensor  # (K,)
    score_pos: torch.Tensor  # (K,)
    score_token: torch.Tensor  # (K,)
    score_seq: torch.Tensor  # (K,)
    chosen_lengths: torch.Tensor  # (B,) float: scored tokens per chosen completion (SFT: per example)
    rejected_lengths: torch.Tensor  # (B,) float (SFT: zeros)
    rows: list[int]
    num_tokens: int  # counted as TRL's num_tokens: the concatenated layout's attention_mask.sum()

    def to(self, device: torch.device | str) -> PreferenceBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return PreferenceBatch(**moved)


class _Scores:
    def __init__(self) -> None:
        self.row: list[int] = []
        self.pos: list[int] = []
        self.token: list[int] = []
        self.seq: list[int] = []

    def add(self, row: int, first_predictor: int, start: int, tokens: Sequence[int], slot: int) -> int:
        """Score ``tokens`` placed at positions start.. of ``row``; returns how many were scored."""
        count = 0
        for j, token in enumerate(tokens):
            predictor = first_predictor if j == 0 else start + j - 1
            if predictor < 0:  # no context before the first token of a sequence
                continue
            self.row.append(row)
            self.pos.append(predictor)
            self.token.append(token)
            self.seq.append(slot)
            count += 1
        return count

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.tensor(x, dtype=torch.long) for x in (self.row, self.pos, self.token, self.seq))


def _round_up(n: int, multiple: int | None) -> int:
    return -(-n // multiple) * multiple if multiple else n


def collate_preference(
    examples: Sequence[PreferenceExample], pad_id: int, layout: str = "concat", pad_to_multiple_of: int | None = None
) -> PreferenceBatch:
    if layout not in {"concat", "shared"}:
        raise ValueError(f"layout must be 'concat' or 'shared', got {layout!r}")
    b = len(examples)
    scores = _Scores()
    chosen_len, rejected_len = [0.0] * b, [0.0] * b
    num_tokens = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    if layout == "concat":
        seqs = [e.prompt_ids + e.chosen_ids for e in examples] + [e.prompt_ids + e.rejected_ids for e in examples]
        t = _round_up(max(len(s) for s in seqs), pad_to_multiple_of)
        input_ids = torch.full((2 * b, t), pad_id, dtype=torch.long)
        attention = torch.zeros((2 * b, t), dtype=torch.long)
        for r, seq in enumerate(seqs):
            input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[r, : len(seq)] = 1
        for i, e in enumerate(examples):
            p = len(e.prompt_ids)
            chosen_len[i] = scores.add(i, p - 1, p, e.chosen_ids, i)
            rejected_len[i] = scores.add(b + i, p - 1, p, e.rejected_ids, b + i)
        positions = torch.arange(t).expand(2 * b, t).clone()
    else:
        t = _round_up(
            max(len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples), pad_to_multiple_of
        )
        input_ids = torch.full((b, t), pad_id, dtype=torch.long)
        positions = torch.zeros((b, t), dtype=torch.long)
        causal = torch.ones((t, t), dtype=torch.bool).tril()
        attention = torch.zeros((b, 1, t, t), dtype=torch.bool)
        for i, e in enumerate(examples):
            p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
            n = p + c + r
            input_ids[i, :n] = torch.tensor(e.prompt_ids + e.chosen_ids + e.rejected_ids, dtype=torch.long)
            positions[i, : p + c] = torch.arange(p + c)
            positions[i, p + c : n] = torch.arange(p, p + r)
            mask = attention[i, 0]
            mask[:n, :n] = causal[:n, :n]
            mask[p + c : n, p : p + c] = False  # rejected tokens never see the chosen ones
            pad = torch.arange(n, t)
            mask[pad, pad] = True  # padding attends to itself only, so no softmax row is empty
            chosen_len[i] = scores.add(i, p - 1, p, e.chosen_ids, i)
            rejected_len[i] = scores.add(i, p - 1, p + c, e.rejected_ids, b + i)
    row, pos, token, seq = scores.tensors()
    return PreferenceBatch(
        input_ids,
        attention,
        positions,
        row,
        pos,
        token,
        seq,
        torch.tensor(chosen_len),
        torch.tensor(rejected_len),
        [e.row for e in examples],
        num_tokens,
    )


def collate_sft(examples: Sequence[SFTExample], pad_id: int, pad_to_multiple_of: int | None = None) -> PreferenceBatch:
    """One row per example; the completion tokens are scored (slot i), the prompt is context."""
    b = len(examples)
    t = _round_up(max(len(e.prompt_ids) + len(e.completion_ids) for e in examples), pad_to_multiple_of)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    scores = _Scores()
    lengths = []
    for i, e in enumerate(examples):
        seq = e.prompt_ids + e.completion_ids
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        p = len(e.prompt_ids)
        lengths.append(float(scores.add(i, p - 1, p, e.completion_ids, i)))
    row, pos, token, seq_ = scores.tensors()
    return PreferenceBatch(
        input_ids,
        attention,
        torch.arange(t).expand(b, t).clone(),
        row,
        pos,
        token,
        seq_,
        torch.tensor(lengths),
        torch.zeros(b),
        [e.row for e in examples],
        int(attention.sum()),
    )
