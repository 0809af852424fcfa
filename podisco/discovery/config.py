"""What a discovery run is configured with, and the state its steps share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from podisco.discovery.archive import Archive
from podisco.tasks.imdb_fitness import DEFAULT_PAIRED_SEEDS


@dataclass
class DiscoveryConfig:
    task: str = "imdb"  # "imdb" (preference losses) or "digits" (classification losses)
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
    wall_s: float = 900.0
    memory_mb: int = 8192
    seed: int = 0

    def task_version(self) -> tuple[str, str]:
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


def config_from_dict(values: dict) -> DiscoveryConfig:
    tuples = {k for k, v in asdict(DiscoveryConfig()).items() if isinstance(v, tuple)}
    return DiscoveryConfig(**{k: tuple(v) if k in tuples else v for k, v in values.items()})
