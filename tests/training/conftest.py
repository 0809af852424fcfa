"""Fixtures: a word-level tokenizer and a tiny GPT-2, both built offline."""

from __future__ import annotations

import pytest

from podisco.models import build_tiny_gpt2
from tests.training.tiny import make_tokenizer


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_model_factory(tokenizer):
    def build(seed: int = 0, attn_implementation: str = "sdpa"):
        return build_tiny_gpt2(
            len(tokenizer),
            n_layer=2,
            n_embd=32,
            n_head=2,
            n_positions=64,
            eos_id=0,
            seed=seed,
            attn_implementation=attn_implementation,
        )

    return build
