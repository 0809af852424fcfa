"""What a discovery run is configured with, and the state its steps share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podisco.discovery.archive import Archive
from podisco.tasks.imdb_fitness import DEFAULT_PAIRED_SEEDS


@dataclass
class DiscoveryConfig:
    task: str = "imdb"  # "imdb", "chat", "alpaca", "tldr" (preference losses) or "digits" (classification)
    preset: str = "default"  # IMDb size preset
    cache_dir: str = ""
    beta: float = 0.05
    proposer: str = "auto"  # auto (llm when configured, else evolve) | llm | evolve | replay
    prompt_mode: str = "paper"  # llm: "paper" (the paper's conversation) or "archive"
    llm_model: str = ""
    llm_base_url: str = ""
    replay_file: str = ""
    generations: int = 3
    population: int = 4  # proposals per generation, evaluated in parallel
    workers: int = 0  # 0: the machine's cores / threads
    # torch threads per job. Measured on 2 cores (default preset, one DPO run): 1 thread 15.5 s, 2 threads
    # 10.8 s, two 1-thread jobs side by side 15.4 s each, so 2 workers x 1 thread evaluate 1.4x more.
    threads: int = 1
    seeds: tuple[int, ...] = (0, 1, 2)
    stage1_seeds: int = 1  # first stage: this many seeds; promoted if within promote_margin of the best
    promote_margin: float = 0.02
    reevaluate_top: int = 3
    reevaluate_seeds: tuple[int, ...] = DEFAULT_PAIRED_SEEDS
    steps: int = 0  # IMDb optimizer steps; 0: one epoch
    lr: float = 2.5e-4  # ImdbTrainSettings.lr
    epochs: int = 8  # digits
    duplicate_distance: float = 0.05
    executor: str = "local"  # local | ray
    ray_address: str = ""
    isolation: str = "auto"  # auto | bwrap | unshare | process
    allow_weak_isolation: bool = False
    wall_s: float = 0.0  # per job; 0: the task's default (900 s; 6 h for the LLM-judged tasks)
    memory_mb: int = 8192  # address-space limit per job; not applied to GPU jobs (CUDA maps far more)
    seed: int = 0
    # The LLM-judged tasks (chat | alpaca | tldr; tasks/judged.py)
    train_config: str = ""  # TrainConfig YAML: model, training data, schedule (loss and beta are set per job)
    train_overrides: tuple[str, ...] = ()  # TrainConfig key=value, e.g. max_steps=20
    eval_data: str = ""  # questions / instructions / posts; default: the task's hub dataset
    eval_limit: int = 0
    max_new_tokens: int = 256
    judge_model: str = ""  # default: $PODISCO_LLM_MODEL, as for the proposer
    judge_base_url: str = ""
    judge_cache: str = ""
    gpus: str = "auto"  # judged tasks: "auto" (every visible GPU, one job each), "none", or ids like "0,1"

    @property
    def judged(self) -> bool:
        from podisco.tasks.judged import TASKS

        return self.task in TASKS

    def wall_limit(self) -> float:
        return self.wall_s or (6 * 3600.0 if self.judged else 900.0)

    def task_version(self) -> tuple[str, str]:
        if self.judged:
            from podisco.tasks.judged import task_version

            return self.task, task_version(self.task)
        if self.task == "digits":
            from podisco.tasks.digits import NAME, VERSION

            return NAME, VERSION
        from podisco.tasks.imdb import NAME, VERSION

        return NAME, f"{VERSION}-{self.preset}"


@dataclass
class RunState:
    config: DiscoveryConfig
    run_id: str
    archive: Archive
    root: Path
    task_spec: dict
    references: dict[str, dict] = field(default_factory=dict)
    judge: Any = None  # the LLM judge of a judged task (tasks/judge.Judge), built before the run starts


def config_from_dict(values: dict) -> DiscoveryConfig:
    tuples = {k for k, v in asdict(DiscoveryConfig()).items() if isinstance(v, tuple)}
    return DiscoveryConfig(**{k: tuple(v) if k in tuples else v for k, v in values.items()})
