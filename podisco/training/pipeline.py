"""A ``TrainConfig`` to a trained model, as ``podisco train`` runs it: rows -> checked, tokenized pairs ->
model (with a LoRA adapter if asked) -> ``train_preference``. Also what a discovery worker runs for the
LLM-judged tasks, with the candidate as ``loss_fn``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from podisco.losses.registry import LossFn
from podisco.training.config import TrainConfig
from podisco.training.loop import TrainResult


def maybe_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    if config.lora.r <= 0:
        return model
    from podisco.models.lora import apply_lora

    lora = config.lora
    return apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)


def train_from_config(
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    resume_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[TrainResult, torch.nn.Module, object]:
    """Train with ``config`` (its registered loss, or ``loss_fn``); the result, the trained model and its
    tokenizer. Bad rows are dropped and reported (or raise, with ``data.on_error=raise``) before any step."""
    from podisco.data import load_rows, tokenize_pairs, validate_rows
    from podisco.models import load_model, load_tokenizer
    from podisco.training.preference import train_preference

    tokenizer = load_tokenizer(config.model)
    rows, checked = validate_rows(
        load_rows(config.data.path, config.data.split), config.data.path, config.data.on_error
    )
    examples, tokenized = tokenize_pairs(rows, tokenizer, config.data.max_length, on_error=config.data.on_error)
    log(str(checked.merge(tokenized)))
    model = maybe_lora(load_model(config.model), config)
    result = train_preference(
        config, model, examples, tokenizer.pad_token_id, tokenizer, loss=loss_fn, resume_from=resume_from
    )
    return result, model, tokenizer
