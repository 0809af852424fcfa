"""Wrap a causal LM in a LoRA adapter (peft), from the trainer's ``LoraSettings``."""

from __future__ import annotations

import torch

from podisco.errors import PodiscoError


def apply_lora(model: torch.nn.Module, r: int, alpha: float, dropout: float, target_modules: str = ""):
    """A peft model whose only trainable weights are the adapter's; ``model.disable_adapter()`` gives back the
    base model, which is the preference reference."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise PodiscoError("LoRA needs peft: pip install 'peft>=0.13'") from err
    targets = [t.strip() for t in target_modules.split(",") if t.strip()] or None
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)
