"""What a discovery run is configured with (nested dataclasses, saved with the run as YAML and in the archive),
and the state its steps share.

``podisco discover --config run.yaml``, then flags, then type-checked ``--key=value`` overrides
(``--search.generations=5``, ``--task.options.preset=tiny``), exactly as ``podisco train`` reads a TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podisco.discovery.archive import Archive
from podisco.discovery.baseline import Baseline
from podisco.tasks.base import Task, TaskSpec
from podisco.training.config import ConfigError, apply


@dataclass
class TaskSection:
    name: str = "imdb"  # a registered task (podisco task list), module:Class, or path/to/file.py:Class
    options: dict[str, Any] = field(default_factory=dict)  # the task's own options, checked by the task


@dataclass
class ProposerSection:
    kind: str = "auto"  # auto (llm when an LLM is named, else evolve) | llm | evolve | replay
    prompt_mode: str = "paper"  # llm: "paper" (the paper's conversation) or "archive"
    llm_model: str = ""
    llm_base_url: str = ""
    # the request: a CPU-served 1.5B model took 147 s for one reply, so the timeout and a length cap must be
    # the user's; llm_retries bounds the retries of one request (timeouts, 429/5xx, dropped connections)
    llm_temperature: float = 1.0
    llm_max_tokens: int = 0  # 0: the server's default
    llm_timeout_s: float = 120.0
    llm_retries: int = 6
    local_model: str = ""  # a GGUF file: the run starts llama.cpp's server on 127.0.0.1 for itself (local_llm.py)
    replay_file: str = ""
    seed: int = 0  # random seed of the evolve proposer


@dataclass
class SearchSection:
    beta: float = 0.05
    generations: int = 3
    population: int = 4  # proposals per generation, evaluated in parallel
    seeds: tuple[int, ...] = ()  # seeds of a full evaluation; empty: the task's default
    # racing (boundary/racing.py): seeds one at a time, a candidate stops once its upper bound is below the
    # incumbent's lower bound; off: the fixed stage 1 below (stage1_seeds, then within promote_margin of the best)
    racing: bool = True
    racing_z: float = 1.645  # one-sided bounds at 95%
    stage1_seeds: int = 1  # first stage: this many seeds; promoted if within promote_margin of the best
    # stage 0 (tasks with at_fidelity): the first seed trained for stage0_fraction of the steps first; a candidate
    # whose upper bound there falls below the incumbent's lower bound there stops before any full run. Off by
    # default: on the IMDb default preset a quarter of the steps ranked 28 losses with a Spearman correlation of
    # 0.45 to the full runs, and none of the full top 3 was in its top 3 (benchmarks/stage0_fidelity.py; the
    # bar to keep it on: 0.8 and the same top 3). Losses whose KL grows late (IPO, SimPO) look fine early.
    stage0: bool = False
    stage0_fraction: float = 0.25
    promote_margin: float = 0.02
    reevaluate_top: int = 3  # the top k of the search, confirmed on held-out seeds against tuned DPO
    reevaluate_seeds: tuple[int, ...] = ()  # held-out seeds (search seeds are dropped); empty: the task's
    baseline_betas: tuple[float, ...] = ()  # β grid DPO is tuned over (the run's β is always in); empty: task's
    # β transfer of the best candidate against DPO at each β (discovery/transfer.py), on the held-out seeds
    transfer: bool = True
    transfer_betas: tuple[float, ...] = ()  # empty: the task's (IMDb: the paper's 0.01..2.5)
    transfer_seeds: int = 0  # how many of the held-out seeds; 0: all
    duplicate_distance: float = 0.05
    # steady state: a new proposal whenever a worker is free (generations only count); off: the paper's
    # protocol, a generation's proposals at once, the next generation when all have finished
    steady_state: bool = True
    # a slot a behavioural duplicate took is proposed again (a duplicate trains nothing), up to refills x
    # population extra proposals per generation; 0: a duplicate uses up its slot
    refills: int = 3
    # tuned: the candidate at the run's β vs tuned DPO; frontier: also trained at the grid's β values once it
    # passes stage 1, and scored at its own best β vs tuned DPO (discovery/frontier.py)
    fitness: str = "tuned"


@dataclass
class ExecutionSection:
    executor: str = "local"  # local | ray
    ray_address: str = ""
    workers: int = 0  # 0: the machine's cores / threads (GPU tasks: one job per GPU)
    # torch threads per job. Measured on 2 cores (default preset, one DPO run): 1 thread 15.5 s, 2 threads
    # 10.8 s, two 1-thread jobs side by side 15.4 s each, so 2 workers x 1 thread evaluate 1.4x more.
    threads: int = 1
    isolation: str = "auto"  # auto | bwrap | unshare | process
    allow_weak_isolation: bool = False
    wall_s: float = 0.0  # per job, the cap; 0: the task's default
    # A job's deadline: this multiple of the reference loss's measured time for the same seeds plus the worker's
    # start-up, never past the cap; 0: every job gets the cap. A spinning candidate then holds a worker for a
    # minute on the tiny preset, not 15 (measured reference runs: references.py stores their seconds)
    deadline_multiple: float = 4.0
    memory_mb: int = 8192  # address-space limit per job; not applied to GPU jobs (CUDA maps far more)
    # training processes per job (the paper: 8 GPUs per candidate): the worker launches that many ranks inside
    # its sandbox; with GPUs each job holds this many of them at a time, without, they are CPU processes (gloo)
    gpus_per_job: int = 1
    accelerate_config: str = ""  # for jobs on several processes: recipes/accelerate/{fsdp,zero2,zero3}.yaml
    # warm worker slots (child/forkserver.py): each worker's sandboxed process starts once, imports torch and
    # loads the task, then forks one fresh child per candidate job; off: a fresh sandboxed process per job.
    # On by default: 5 s saved per job on the default preset, 15 s on tiny (README, benchmarks/warm_workers.py)
    warm_workers: bool = True


@dataclass
class DiscoveryConfig:
    task: TaskSection = field(default_factory=TaskSection)
    proposer: ProposerSection = field(default_factory=ProposerSection)
    search: SearchSection = field(default_factory=SearchSection)
    execution: ExecutionSection = field(default_factory=ExecutionSection)

    def validate(self) -> None:
        checks = [
            (self.proposer.kind in {"auto", "llm", "evolve", "replay"}, "proposer.kind", "auto, llm, evolve, replay"),
            (self.proposer.prompt_mode in {"paper", "archive"}, "proposer.prompt_mode", "paper or archive"),
            (self.proposer.llm_temperature >= 0, "proposer.llm_temperature", "must be >= 0"),
            (self.proposer.llm_max_tokens >= 0, "proposer.llm_max_tokens", "must be >= 0 (0: the server's)"),
            (self.proposer.llm_timeout_s > 0, "proposer.llm_timeout_s", "must be > 0"),
            (self.proposer.llm_retries >= 0, "proposer.llm_retries", "must be >= 0"),
            (self.search.generations >= 0, "search.generations", "must be >= 0"),
            (self.search.population >= 1, "search.population", "must be >= 1"),
            (self.search.refills >= 0, "search.refills", "must be >= 0"),
            (self.search.beta > 0, "search.beta", "must be > 0"),
            (self.search.fitness in {"tuned", "frontier"}, "search.fitness", "tuned or frontier"),
            (self.search.stage1_seeds >= 1, "search.stage1_seeds", "must be >= 1"),
            (self.search.racing_z > 0, "search.racing_z", "must be > 0"),
            (0 < self.search.stage0_fraction < 1, "search.stage0_fraction", "must be between 0 and 1"),
            (all(b > 0 for b in self.search.transfer_betas), "search.transfer_betas", "must all be > 0"),
            (self.search.transfer_seeds >= 0, "search.transfer_seeds", "must be >= 0"),
            (self.execution.executor in {"local", "ray"}, "execution.executor", "local or ray"),
            (self.execution.threads >= 1, "execution.threads", "must be >= 1"),
            (self.execution.gpus_per_job >= 1, "execution.gpus_per_job", "must be >= 1"),
            (
                not self.execution.accelerate_config or Path(self.execution.accelerate_config).is_file(),
                "execution.accelerate_config",
                f"no such file: {self.execution.accelerate_config}",
            ),
            (self.execution.deadline_multiple >= 0, "execution.deadline_multiple", "must be >= 0 (0: the cap)"),
            (
                self.execution.isolation in {"auto", "bwrap", "unshare", "process"},
                "execution.isolation",
                "auto, bwrap, unshare or process",
            ),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key}: {message}")


@dataclass
class RunState:
    config: DiscoveryConfig
    run_id: str
    archive: Archive
    root: Path
    task: Task
    spec: TaskSpec
    seeds: tuple[int, ...]  # of a full evaluation (the config's, else the task's default)
    reevaluate_seeds: tuple[int, ...]  # held-out seeds of the confirmation
    baseline_grid: tuple[float, ...] = ()  # β values the reference loss is trained at
    reference_rows: dict[float, dict[str, dict]] = field(default_factory=dict)  # β -> seed -> reference row
    references: dict[str, dict] = field(default_factory=dict)  # seed -> tuned DPO's row: what fitness pairs with
    baseline: Baseline | None = None
    wall_cap_s: float = 0.0  # the longest any job may run (execution.wall_s, else the task's limit)
    reference_seconds: tuple[float, float] | None = None  # the reference runs' (seconds per seed, start-up)
    stage0_spec: TaskSpec | None = None  # the task at search.stage0_fraction of the steps (stage 0 on)
    stage0_references: dict[str, dict] = field(default_factory=dict)  # seed -> tuned DPO's row at stage 0


def config_from_dict(values: dict) -> DiscoveryConfig:
    """A config as saved with a run (the archive's runs table) back into the dataclasses, type-checked."""
    if "search" not in values and "task" in values and isinstance(values["task"], str):
        raise ConfigError(
            "this run was saved by podisco before configs were nested (task, proposer, search, execution); "
            "it can be read and reported, but not resumed: start a new run"
        )
    return apply(DiscoveryConfig(), values)
