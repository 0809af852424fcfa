"""Supervised fine-tuning of a causal LM on the same machinery: token-mean NLL of the scored tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator

from podisco.data import SFTExample, collate_sft
from podisco.training.config import TrainConfig
from podisco.training.logprobs import sequence_logps
from podisco.training.loop import StepOutput, TrainResult, make_accelerator, run_training


def sft_step(scorer: torch.nn.Module, batch) -> StepOutput:
    """Mean negative log-likelihood over every scored token of the micro-batch (as transformers' LM loss)."""
    n = int(batch.chosen_lengths.shape[0])
    logps = sequence_logps(scorer, batch, n).float()
    tokens = batch.chosen_lengths.sum().clamp(min=1.0)
    loss = -logps.sum() / tokens
    return StepOutput(loss, {"loss": loss.item(), "perplexity": float(torch.exp(loss.detach()))}, batch.num_tokens)


def train_sft(
    config: TrainConfig,
    model: torch.nn.Module,
    examples: Sequence[SFTExample],
    pad_id: int,
    tokenizer=None,
    accelerator: Accelerator | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``examples`` (prompt tokens, if any, are context and not scored)."""
    config.validate()
    accelerator = accelerator or make_accelerator(config)

    def make_batch(indices: Sequence[int]):
        return collate_sft([examples[i] for i in indices], pad_id).to(accelerator.device)

    return run_training(
        config,
        model,
        len(examples),
        make_batch,
        sft_step,
        accelerator,
        tokenizer=tokenizer,
        resume_from=resume_from,
    )
