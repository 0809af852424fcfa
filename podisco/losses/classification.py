"""Classification losses for the paper's sanity case (CIFAR-10 in the paper, scikit-learn digits here).

Contract (docs/loss-contract.md): ``loss(logits (B, C), targets (B,) long) -> (B,)``, computed in float32 or wider.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from podisco.losses.registry import unknown_name_error

ClassificationLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_CLASSIFICATION: dict[str, ClassificationLoss] = {}


def _register(name: str) -> Callable[[ClassificationLoss], ClassificationLoss]:
    def decorate(fn: ClassificationLoss) -> ClassificationLoss:
        _CLASSIFICATION[name] = fn
        return fn

    return decorate


@_register("cross_entropy")
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(z)_y."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


@_register("label_smoothing")
def label_smoothing(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 - eps) one-hot + eps / C (Szegedy et al. 2016), eps = 0.1; the paper's first
    discovered CIFAR-10 loss was a label-smoothed cross-entropy."""
    return F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=smoothing)


@_register("squared_error")
def squared_error(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Brier score sum_c (softmax(z)_c - 1[c = y])^2, the squared-error variant of the paper's CIFAR-10 run."""
    probs = logits.float().softmax(dim=-1)
    return ((probs - F.one_hot(targets, probs.shape[-1]).to(probs)) ** 2).sum(dim=-1)


def get_classification_loss(name: str) -> ClassificationLoss:
    if name in _CLASSIFICATION:
        return _CLASSIFICATION[name]
    raise unknown_name_error(name, list(_CLASSIFICATION), f"Classification losses: {', '.join(_CLASSIFICATION)}.")


def classification_loss_names() -> list[str]:
    return list(_CLASSIFICATION)
