"""The parent -> worker contract: one frozen ``Job``, written as ``job.json`` and read back by the worker.

Both sides import this module. Reading is strict: a missing or unknown key is an error that names it, so a
parent and a worker of different versions fail loudly instead of falling back to a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podisco.tasks.base import TaskSpec, exact_keys


@dataclass(frozen=True)
class Job:
    """One candidate (``code``) or one trusted reference run (``loss``, a registered name) on a task's seeds."""

    task: TaskSpec
    name: str  # the attempt's name, or the reference run's label
    beta: float
    seeds: tuple[int, ...]
    code: str = ""  # candidate source; empty for a trusted reference run
    loss: str = ""  # a registered loss (reference runs); empty for a candidate
    threads: int = 1  # torch threads in the worker
    dedup: bool = False  # stop as ``duplicate`` when the candidate behaves like ``known`` or a measured loss
    duplicate_distance: float = 0.05
    known: Mapping[str, list[float]] = field(default_factory=dict)  # label -> fingerprint
    registry_measured: tuple[str, ...] = ()  # registered losses this run has a fitness for
    # labels of ``known`` (or ``registry:NAME``) that may still be in the final top k: a candidate near one of
    # them but not identical to it is trained, not given its score (candidates._contenders)
    contenders: tuple[str, ...] = ()
    reference: Mapping[str, dict] = field(default_factory=dict)  # seed -> the reference row (paired tasks)
    baseline_grid: tuple[float, ...] = ()  # β values the reference loss was trained at (rescaled duplicates)
    stage1_seeds: int = 0
    stage_threshold: float | None = None  # stop after stage 1 when its fitness is below this
    race: Mapping[str, float] | None = None  # racing.Race as JSON: decide after each seed (replaces stage 1)
    # stage 0: {"task": the spec at a fraction of the steps, "reference": seed -> its reference row, "race": the
    # race there (racing.Race as JSON) or None (only record the score)}; the first seed runs so before the rest
    stage0: Mapping[str, Any] | None = None
    # training processes per seed (--gpus-per-job): >1 launches that many ranks inside the sandbox, with
    # ``accelerate_config`` (FSDP, DeepSpeed; a read-only path) or plain DDP
    processes: int = 1
    accelerate_config: str = ""
    wall_s: float = 0.0  # this job's deadline (dispatch.deadline); 0: the executor's limit. Not in identity()

    def __post_init__(self) -> None:
        if bool(self.code) == bool(self.loss):
            raise ValueError("a job has exactly one of code (a candidate) and loss (a registered reference loss)")

    @property
    def trusted(self) -> bool:
        """A reference run executes no candidate code."""
        return not self.code

    def identity(self) -> dict[str, Any]:
        """What identifies the work: a finished result is used again only for the same work."""
        data = self.to_json()
        return {k: data[k] for k in ("task", "seeds", "code", "loss", "name", "beta")}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = self.task.to_json()
        return json.loads(json.dumps(data))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        values = exact_keys(cls, data, "job")
        values["task"] = TaskSpec.from_json(values["task"])
        values["seeds"] = tuple(int(s) for s in values["seeds"])
        for key in ("registry_measured", "contenders", "baseline_grid"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def read(cls, path: str | Path) -> Job:
        return cls.from_json(json.loads(Path(path).read_text()))
