"""Summed completion log-probs of a batch, from one forward pass, without a (batch x seq x vocab) log-softmax.

The batch says which hidden state predicts which token (``score_row``, ``score_pos``, ``score_token``) and
which output slot it adds to (``score_seq``: pair i's chosen completion is slot i, its rejected one B + i), so
the same code serves TRL's concatenated layout and the prefix-shared one. Only the K scored positions go
through the output layer, in chunks; with several chunks each is recomputed in the backward pass instead of
keeping its (chunk x vocab) logits alive.

``CompletionScorer`` is an ``nn.Module`` so that Accelerate wraps it (DDP / FSDP hooks fire on its forward);
the causal LM is its submodule and is what gets saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from podisco.data import PreferenceBatch


def _output_layer(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The LM head when logits are a plain linear map of the last hidden state, else None."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "final_logit_softcapping", None):
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if isinstance(head, torch.nn.Linear) else None


def _chunk_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor):
    """log p(token) = logit[token] - logsumexp(logits), in float32. hidden (k, H), tokens (k,) -> (k,)."""
    logits = F.linear(hidden, weight, bias).float()  # (k, V)
    return logits.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


class CompletionScorer(torch.nn.Module):
    """forward(batch fields) -> log p of each scored token, shape (K,), float32."""

    def __init__(self, model: torch.nn.Module, chunk_tokens: int = 8192) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        score_row: torch.Tensor,
        score_pos: torch.Tensor,
        score_token: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        if attention_mask.dim() == 4:
            # The prefix-shared layout's additive mask (0 = attend). SDPA gets it as booleans, which stay valid
            # under autocast whatever the query dtype; eager attention adds it, so it takes the model's dtype.
            if getattr(model.config, "_attn_implementation", None) == "sdpa":
                attention_mask = attention_mask == 0
            else:
                attention_mask = attention_mask.to(next(model.parameters()).dtype)
        head = _output_layer(model)
        if head is None:  # e.g. softcapped logits: use the model's own, still no full log-softmax
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
            picked = logits[score_row, score_pos].float()  # (K, V)
            return picked.gather(1, score_token[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the HF model
        hidden = inner.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (N, T, H)
        scored = hidden[score_row, score_pos]  # (K, H)
        return head_logps(scored, head.weight, head.bias, score_token, self.chunk_tokens)


def head_logps(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """log p(token) through the LM head, ``chunk_tokens`` rows at a time, each chunk recomputed in the backward
    pass: at most (chunk x vocab) logits ever exist, never (tokens x vocab). hidden (K, H), tokens (K,) -> (K,)."""
    if hidden.shape[0] <= chunk_tokens:
        return _chunk_logps(hidden, weight, bias, tokens)
    parts = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], tokens[start : start + chunk_tokens]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logps, h, weight, bias, t, use_reentrant=False))
        else:
            parts.append(_chunk_logps(h, weight, bias, t))
    return torch.cat(parts)


def sequence_logps(scorer: torch.nn.Module, batch: PreferenceBatch, num_slots: int) -> torch.Tensor:
    """Summed completion log-probs per output slot, shape (num_slots,): (2B,) for preference batches, chosen
    first; (B,) for SFT batches."""
    per_token = scorer(
        batch.input_ids, batch.attention_mask, batch.position_ids, batch.score_row, batch.score_pos, batch.score_token
    )
    out = torch.zeros(num_slots, dtype=per_token.dtype, device=per_token.device)
    return out.index_add(0, batch.score_seq, per_token)
