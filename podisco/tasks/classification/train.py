"""The paper's classification sanity case (CIFAR-10, ResNet-18, 5 epochs; docs/paper.md §2) at CPU scale: a small
network trained for a few epochs with a candidate classification loss; fitness = validation accuracy, the
mean over seeds. Runs on scikit-learn's digits by default, on CIFAR-10 given a local copy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from podisco.losses.classification import ClassificationLoss, get_classification_loss
from podisco.tasks.classification.data import ImageSplits, load_cifar10, load_digits_splits

NAME = "digits"
VERSION = "1"  # bump when anything below changes the numbers


@dataclass
class DigitsConfig:
    dataset: str = "digits"  # "digits" or "cifar10"
    data_dir: str = ""  # CIFAR-10 location
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    hidden: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 1  # the MLP's ops are tiny: a second thread costs 10x in sync overhead (measured)


@dataclass
class ClassificationResult:
    fitness: float  # mean validation accuracy over seeds (NaN if failed)
    accuracies: list[float] = field(default_factory=list)
    std: float = 0.0
    error: str = ""  # why the candidate failed, for the proposer

    @property
    def ok(self) -> bool:
        return not self.error


def _network(splits: ImageSplits, hidden: int) -> nn.Module:
    channels, height, _ = splits.train_x.shape[1:]
    if height <= 8:  # digits: an MLP on the 64 pixels
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * height, hidden),
            nn.ReLU(),
            nn.Linear(hidden, splits.num_classes),
        )
    return nn.Sequential(  # CIFAR-10: a small CNN, the CPU stand-in for the paper's ResNet-18
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (height // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, splits.num_classes),
    )


def train_once(loss_fn: ClassificationLoss, splits: ImageSplits, config: DigitsConfig, seed: int) -> float:
    """Validation accuracy after training with ``loss_fn``; raises FloatingPointError on a non-finite loss."""
    torch.manual_seed(seed)
    model = _network(splits, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x, y = torch.from_numpy(splits.train_x), torch.from_numpy(splits.train_y)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            losses = loss_fn(model(x[idx]), y[idx])
            if losses.shape != (len(idx),):
                raise ValueError(f"the loss must return shape ({len(idx)},), got {tuple(losses.shape)}")
            loss = losses.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, batch {start // config.batch_size}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(splits.val_x)).argmax(dim=-1).numpy()
    return float((predictions == splits.val_y).mean())


def load_splits(config: DigitsConfig) -> ImageSplits:
    return load_cifar10(config.data_dir) if config.dataset == "cifar10" else load_digits_splits()


def evaluate_loss(
    loss: str | ClassificationLoss, config: DigitsConfig | None = None, splits: ImageSplits | None = None
) -> ClassificationResult:
    """Train once per seed; a candidate that errors or goes non-finite gets a failed result with the reason."""
    config = config or DigitsConfig()
    loss_fn = get_classification_loss(loss) if isinstance(loss, str) else loss
    splits = splits or load_splits(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    accuracies = []
    try:
        for seed in config.seeds:
            accuracies.append(train_once(loss_fn, splits, config, seed))
    except (FloatingPointError, ValueError, RuntimeError, TypeError) as err:
        return ClassificationResult(math.nan, accuracies, error=f"seed {seed}: {err}")
    finally:
        torch.set_num_threads(threads)
    return ClassificationResult(float(np.mean(accuracies)), accuracies, float(np.std(accuracies)))
