"""Load a causal LM and its tokenizer from a folder or a hub id, with a clear error for a bad path."""

from __future__ import annotations

from pathlib import Path

import torch

from podisco.errors import PodiscoError
from podisco.hub import looks_like_hub_id


class ModelLoadError(PodiscoError, ValueError):
    """A model or tokenizer that cannot be loaded, with the path or id that was asked for."""


def _check_source(name: str) -> None:
    if not name:
        raise ModelLoadError("no model given: pass --model PATH_OR_HUB_ID")
    if not Path(name).exists() and not looks_like_hub_id(name):
        raise ModelLoadError(f"model path {name!r} does not exist (and is not a hub id of the form owner/name)")


def load_model(name: str, dtype: torch.dtype | None = None, attn_implementation: str | None = "sdpa"):
    """AutoModelForCausalLM from a folder or a hub id (hub ids need network)."""
    from transformers import AutoModelForCausalLM

    _check_source(name)
    try:
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation=attn_implementation)
    except OSError as err:
        raise ModelLoadError(f"cannot load model {name!r}: {err}") from err


def load_tokenizer(name: str):
    """AutoTokenizer; a missing pad token falls back to EOS (GPT-2 has none)."""
    from transformers import AutoTokenizer

    _check_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as err:
        raise ModelLoadError(f"cannot load tokenizer {name!r}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tiny_gpt2(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    eos_id: int = 0,
    seed: int = 0,
    attn_implementation: str = "sdpa",
):
    """A randomly initialised GPT-2 built from a config (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation=attn_implementation)
