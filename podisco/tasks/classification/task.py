"""The classification sanity case as a discovery fitness: validation accuracy of a small network trained with
the candidate loss (docs/paper.md §2). ``digits`` runs on scikit-learn's bundled digits; ``cifar10`` on a local
copy of CIFAR-10 in its python format (``--data-dir``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from podisco.tasks.base import Kind, TaskError, TaskLimits, TaskSpec, make_spec
from podisco.tasks.classification.train import VERSION, DigitsConfig
from podisco.tasks.seeds import CLASSIFICATION_SEEDS


@functools.cache
def _splits(dataset: str, data_dir: str):
    from podisco.tasks.classification.train import load_splits

    return load_splits(DigitsConfig(dataset=dataset, data_dir=data_dir))


@dataclass
class DigitsTask:
    epochs: int = DigitsConfig.epochs
    batch_size: int = DigitsConfig.batch_size
    lr: float = DigitsConfig.lr
    hidden: int = DigitsConfig.hidden

    name: ClassVar[str] = "digits"
    version: ClassVar[str] = VERSION
    kind: ClassVar[Kind] = "classification"
    paired: ClassVar[bool] = False
    reference_loss: ClassVar[str] = "cross_entropy"
    staged: ClassVar[bool] = True
    default_seeds: ClassVar[tuple[int, ...]] = (0, 1, 2)
    default_reevaluate_seeds: ClassVar[tuple[int, ...]] = tuple(range(100, 110))  # held out from the search
    dataset: ClassVar[str] = "digits"

    def _data_dir(self) -> str:
        return ""

    def limits(self) -> TaskLimits:
        return TaskLimits(wall_s=900.0)

    def describe(self) -> str:
        return "validation accuracy of a small network trained with the loss (higher is better)"

    def seed_archive(self) -> dict[str, str]:
        return dict(CLASSIFICATION_SEEDS)

    def prepare(self, folder: Path, log: Callable[[str], None]) -> TaskSpec:
        try:
            splits = _splits(self.dataset, self._data_dir())  # a missing or broken data set fails here, once
        except (OSError, ValueError, KeyError) as error:
            raise TaskError(f"{self.name}: cannot load the data set: {error}") from error
        log(f"{self.name}: {len(splits.train_y)} training and {len(splits.val_y)} validation images")
        return make_spec(self, {"data_dir": self._data_dir()})

    def at_fidelity(self, spec: TaskSpec, fraction: float) -> TaskSpec:
        """Stage 0's cheap first look: ``fraction`` of the epochs (at least one)."""
        return replace(spec, options={**spec.options, "epochs": max(1, round(self.epochs * fraction))})

    def readonly_paths(self, spec: TaskSpec) -> tuple[str, ...]:
        return (spec.params["data_dir"],) if spec.params["data_dir"] else ()

    def run_seed(
        self, spec: TaskSpec, loss_name: str, loss_fn: Callable | None, beta: float, seed: int, workdir: Path
    ) -> dict[str, Any]:
        from podisco.losses.classification import get_classification_loss
        from podisco.tasks.classification.train import train_once

        config = DigitsConfig(
            dataset=self.dataset,
            data_dir=spec.params["data_dir"],
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            hidden=self.hidden,
            seeds=(seed,),
        )
        fn = loss_fn if loss_fn is not None else get_classification_loss(loss_name)
        return {"seed": seed, "accuracy": train_once(fn, _splits(self.dataset, config.data_dir), config, seed)}

    def finish_seed(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        return row

    def seed_fitness(self, row: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float:
        return float(row["accuracy"])

    def summarise(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"accuracy": round(sum(r["accuracy"] for r in rows) / len(rows), 4)}


@dataclass
class Cifar10Task(DigitsTask):
    """CIFAR-10 at CPU scale: a small CNN (the paper used ResNet-18 for 5 epochs) on a local copy."""

    data_dir: str = ""  # the extracted cifar-10-batches-py folder (or its parent)
    epochs: int = 5

    name: ClassVar[str] = "cifar10"
    dataset: ClassVar[str] = "cifar10"

    def _data_dir(self) -> str:
        if not self.data_dir:
            raise TaskError("cifar10 needs --data-dir DIR: a local copy of CIFAR-10 in its python format")
        return str(Path(self.data_dir).expanduser().resolve())
