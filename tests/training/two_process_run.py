"""Run under `accelerate launch --num_processes N` (or torchrun): train a tiny model, save its parameters.

Used by test_distributed.py: N processes with batch_size 8/N must reach the parameters of one process."""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator

from podisco.data import tokenize_pairs, validate_rows
from podisco.models import build_tiny_gpt2
from podisco.training.config import TrainConfig
from podisco.training.preference import train_preference
from tests.training.tiny import make_rows, make_tokenizer


def main(out: str, batch_size: int, cache: str) -> None:
    tokenizer = make_tokenizer()
    rows, _ = validate_rows(make_rows(32, seed=5))
    examples, _ = tokenize_pairs(rows, tokenizer, max_length=48)
    model = build_tiny_gpt2(len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0)
    config = TrainConfig(output_dir=out, batch_size=batch_size, max_steps=3, reference_cache_dir=cache)
    config.loss.beta = 0.1
    config.optim.lr = 1e-3
    config.optim.schedule = "constant"
    config.optim.warmup_ratio = 0.0
    accelerator = Accelerator(cpu=True)
    result = train_preference(config, model, examples, 0, accelerator=accelerator)
    if accelerator.is_main_process:
        torch.save(
            {
                "params": [p.detach() for p in model.parameters()],
                "world": accelerator.num_processes,
                "losses": [h["loss"] for h in result.history],
            },
            f"{out}/params.pt",
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
