"""Batches for a causal LM, in two exact layouts that share one scoring description.

``concat`` (TRL's): 2B rows, prompt+chosen then prompt+rejected, a (2B, T) 0/1 attention mask. ``shared``
(prefix sharing): B rows of prompt + chosen + rejected; the rejected tokens get the positions they would have
right after the prompt and a 4-D additive mask hides the chosen tokens from them, so every log-prob equals
the one of the separate sequence while the prompt is encoded once. Padding keys are blocked, but each padding
query sees itself: a softmax over nothing but blocked keys is NaN in SDPA, and a NaN in an unscored row still
poisons the backward pass.

Either way the batch lists K scored tokens: ``score_row``/``score_pos`` locate the hidden state that predicts
the token (position t-1, except that the first chosen and the first rejected token are both predicted by the
last prompt position), ``score_token`` is the token and ``score_seq`` the output slot (pair i's chosen
completion is slot i, its rejected one B + i; SFT batches have slots 0..B-1 only). So the log-prob code is::

    lp = model(input_ids, attention_mask=..., position_ids=...).logits.log_softmax(-1)
    out = zeros(num_slots).index_add_(0, score_seq, lp[score_row, score_pos, score_token])

A token with no context (the first token of a completion after an empty prompt) cannot be predicted and is
not scored; ``chosen_lengths``/``rejected_lengths`` count the scored tokens. Padding gets position id 0, so a
shared row longer than the model's position table is fine as long as its real positions fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from podisco.data.tokenize import PreferenceExample, SFTExample

LAYOUTS = ("concat", "shared")
BLOCKED = torch.finfo(torch.float32).min


@dataclass
class PreferenceBatch:
    input_ids: torch.Tensor  # (N, T) long, right-padded with pad_id
    attention_mask: torch.Tensor  # concat/SFT: (N, T) long 0/1; shared: (N, 1, T, T) float32, 0 or BLOCKED
    position_ids: torch.Tensor  # (N, T) long
    score_row: torch.Tensor  # (K,) long: row of input_ids whose hidden state predicts the token
    score_pos: torch.Tensor  # (K,) long: the predicting position in that row
    score_token: torch.Tensor  # (K,) long: the target token id
    score_seq: torch.Tensor  # (K,) long: output slot in [0, num_slots)
    chosen_lengths: torch.Tensor  # (B,) float: scored tokens per chosen completion (SFT: per example)
    rejected_lengths: torch.Tensor  # (B,) float (SFT: zeros)
    rows: list[int]  # source rows, for error messages
    # Tokens fed to the model counted as TRL's num_tokens: attention_mask.sum() of the concat layout, i.e. the
    # prompt twice per pair whatever layout this batch uses, so tokens/s compares with TRL's like for like.
    num_tokens: int
    num_slots: int  # length of the per-sequence output: 2B (preference; chosen first) or B (SFT)

    def to(self, device: torch.device | str, mask_dtype: torch.dtype | None = None) -> PreferenceBatch:
        """Tensors moved to ``device``. ``mask_dtype`` casts a 4-D additive mask to the model's dtype (SDPA
        kernels may insist on it); BLOCKED becomes -inf in bf16/fp16, which is safe because every query row
        keeps a finite entry (itself)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device)
        if mask_dtype is not None and moved["attention_mask"].is_floating_point():
            moved["attention_mask"] = moved["attention_mask"].to(mask_dtype)
        return replace(self, **moved)


class _Scores:
    """Accumulates the K scored tokens of a batch."""

    def __init__(self) -> None:
        self.row: list[int] = []
        self.pos: list[int] = []
        self.token: list[int] = []
        self.seq: list[int] = []

    def add(self, row: int, first_predictor: int, start: int, tokens: Sequence[int], slot: int) -> float:
        """Score ``tokens`` placed at positions start.. of ``row``: token 0 is predicted by ``first_predictor``,
        token j > 0 by start + j - 1. Returns how many were scored."""
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
        return float(count)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        row, pos, token, seq = (torch.tensor(x, dtype=torch.long) for x in (self.row, self.pos, self.token, self.seq))
        return row, pos, token, seq


def _round_up(n: int, multiple: int | None) -> int:
    return -(-n // multiple) * multiple if multiple else n


def _padded(seqs: Sequence[Sequence[int]], pad_id: int, multiple: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, 0/1 mask), both (len(seqs), T), right-padded to the longest (rounded up to ``multiple``)."""
    t = _round_up(max(len(s) for s in seqs), multiple)
    input_ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for r, seq in enumerate(seqs):
        input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
    return input_ids, mask


def _shared_mask(prompt: torch.Tensor, chosen: torch.Tensor, total: torch.Tensor, t: int) -> torch.Tensor:
    """(B, 1, t, t) additive mask for rows of prompt + chosen + rejected tokens (lengths (B,) each, ``total`` =
    all three): causal, rejected queries blind to chosen keys, padding keys blocked, every query sees itself."""
    q = torch.arange(t).view(1, t, 1)
    k = torch.arange(t).view(1, 1, t)
    p, c, n = (x.view(-1, 1, 1) for x in (prompt, chosen, total))
    rejected_q = (q >= p + c) & (q < n)
    chosen_k = (k >= p) & (k < p + c)
    allowed = ((k <= q) & (q < n) & ~(rejected_q & chosen_k)) | (q == k)  # (B, t, t)
    return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, BLOCKED).unsqueeze(1)


def collate_preference(
    examples: Sequence[PreferenceExample], pad_id: int, layout: str = "concat", pad_to_multiple_of: int | None = None
) -> PreferenceBatch:
    """A batch of B pairs in the ``concat`` (2B rows) or ``shared`` (B rows) layout; see the module doc."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'concat' or 'shared', got {layout!r}")
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    b = len(examples)
    scores = _Scores()
    chosen_len, rejected_len = [0.0] * b, [0.0] * b
    num_tokens = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    if layout == "concat":
        seqs = [e.prompt_ids + e.chosen_ids for e in examples] + [e.prompt_ids + e.rejected_ids for e in examples]
        input_ids, attention = _padded(seqs, pad_id, pad_to_multiple_of)
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids) * attention  # padding -> 0
        for i, e in enumerate(examples):
            p = len(e.prompt_ids)
            chosen_len[i] = scores.add(i, p - 1, p, e.chosen_ids, i)
            rejected_len[i] = scores.add(b + i, p - 1, p, e.rejected_ids, b + i)
    else:
        seqs = [e.prompt_ids + e.chosen_ids + e.rejected_ids for e in examples]
        input_ids, _ = _padded(seqs, pad_id, pad_to_multiple_of)
        positions = torch.zeros_like(input_ids)
        for i, e in enumerate(examples):
            p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
            positions[i, : p + c] = torch.arange(p + c)
            positions[i, p + c : p + c + r] = torch.arange(p, p + r)  # as if right after the prompt
            chosen_len[i] = scores.add(i, p - 1, p, e.chosen_ids, i)
            rejected_len[i] = scores.add(i, p - 1, p + c, e.rejected_ids, b + i)  # first one: after the prompt
        attention = _shared_mask(
            torch.tensor([len(e.prompt_ids) for e in examples]),
            torch.tensor([len(e.chosen_ids) for e in examples]),
            torch.tensor([len(s) for s in seqs]),
            input_ids.shape[1],
        )
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
        2 * b,
    )


def collate_sft(
    examples: Sequence[SFTExample | Sequence[int]], pad_id: int, pad_to_multiple_of: int | None = None
) -> PreferenceBatch:
    """One row per example, the same scoring fields with chosen slots only (slot i, ``num_slots`` = B): the
    completion tokens are scored, the prompt is context. A plain token list is an example with no prompt (all
    tokens but the first scored; its row is its index in ``examples``)."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    items = [e if isinstance(e, SFTExample) else SFTExample(i, [], list(e)) for i, e in enumerate(examples)]
    input_ids, attention = _padded([e.prompt_ids + e.completion_ids for e in items], pad_id, pad_to_multiple_of)
    scores = _Scores()
    lengths = []
    for i, e in enumerate(items):
        p = len(e.prompt_ids)
        lengths.append(scores.add(i, p - 1, p, e.completion_ids, i))
    row, pos, token, seq = scores.tensors()
    return PreferenceBatch(
        input_ids,
        attention,
        torch.arange(input_ids.shape[1]).expand_as(input_ids) * attention,
        row,
        pos,
        token,
        seq,
        torch.tensor(lengths),
        torch.zeros(len(items)),
        [e.row for e in items],
        int(attention.sum()),
        len(items),
    )
