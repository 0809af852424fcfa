"""The LLM-judged tasks (chat, alpaca, tldr) as a discovery fitness (pipeline.py does the work).

The sandboxed worker trains and answers (``run_seed``: no network, no key); the parent judges the answers
(``finish_seed``), so candidate code never meets the judge's key. Fitness of one seed: the judge's score of the
candidate's answers minus DPO's with the same training seed; 0 = as good as DPO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from podisco.tasks.base import Kind, TaskError, TaskLimits, TaskSpec, make_spec
from podisco.tasks.judged import pipeline
from podisco.tasks.seeds import PREFERENCE_SEEDS


@dataclass
class _JudgedTask:
    train_config: str = ""  # TrainConfig YAML: model, training data, schedule (loss and beta are set per job)
    train_overrides: tuple[str, ...] = ()  # TrainConfig key=value, e.g. max_steps=20
    eval_data: str = ""  # questions / instructions / posts; empty: the task's hub dataset
    eval_limit: int = 0  # evaluation prompts used; 0: all
    max_new_tokens: int = 256
    judge_model: str = ""  # empty: $PODISCO_LLM_MODEL, as for the proposer
    judge_base_url: str = ""
    judge_cache: str = ""
    gpus: str = "auto"  # "auto" (every visible GPU, one job each), "none", or ids like "0,1"
    _judge: ClassVar[Any] = None  # set per instance by prepare(): the parent's judge (never in the worker)

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "preference"
    paired: ClassVar[bool] = True
    reference_loss: ClassVar[str] = "sigmoid"
    staged: ClassVar[bool] = False  # the worker cannot score its own answers (no judge in the sandbox)
    # A judged evaluation trains a real model: one seed per candidate, as the paper did
    default_seeds: ClassVar[tuple[int, ...]] = (0,)
    # held out from the search; each is one real training per candidate, so 3 rather than the 10 of the CPU tasks
    default_reevaluate_seeds: ClassVar[tuple[int, ...]] = (100, 101, 102)
    # a resumed run may use another judge (the one it had failed): judging never changes what was trained
    replaceable_on_resume: ClassVar[tuple[str, ...]] = ("judge_model", "judge_base_url", "judge_cache")

    @property
    def version(self) -> str:
        return pipeline.task_version(self.name)

    def limits(self) -> TaskLimits:
        return TaskLimits(wall_s=6 * 3600.0, gpus=self._gpus())

    def _gpus(self) -> tuple[str, ...]:
        if self.gpus in ("", "none"):
            return ()
        if self.gpus != "auto":
            return tuple(g.strip() for g in self.gpus.split(",") if g.strip())
        import torch

        return tuple(str(i) for i in range(torch.cuda.device_count()))

    def describe(self) -> str:
        return (
            f"the LLM judge's {pipeline.SCORE_MEANING[self.name]} of the trained model's answers, minus DPO's with "
            "the same training seed (0 = as good as DPO, positive = better)"
        )

    def seed_archive(self) -> dict[str, str]:
        return dict(PREFERENCE_SEEDS)

    def prepare(self, folder: Path, log: Callable[[str], None]) -> TaskSpec:
        from podisco.tasks.judged.judge import make_judge

        if not self.train_config:
            raise TaskError(f"--task {self.name} needs --train-config YAML (model, data, schedule)")
        # the judge is checked now, not after hours of training
        self._judge = make_judge(self.judge_model or None, self.judge_base_url or None, self.judge_cache or None)
        request = pipeline.JudgedTask(
            self.name, self.train_config, self.eval_data, self.eval_limit, self.max_new_tokens, self.train_overrides
        )
        params = pipeline.prepare_spec(request, folder / "prepared", log)  # trusted: loads, checks, writes
        return make_spec(self, {k: v for k, v in params.items() if k not in ("name", "version")})

    def _pipeline_spec(self, spec: TaskSpec) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, **spec.params}

    def readonly_paths(self, spec: TaskSpec) -> tuple[str, ...]:
        from podisco.cache import cache_home

        # the reference log-probs, written by the trusted DPO reference runs, read by the candidates
        reference_cache = cache_home().resolve() / "reference"
        reference_cache.mkdir(parents=True, exist_ok=True)
        return (*pipeline.readonly_paths(self._pipeline_spec(spec)), str(reference_cache))

    def run_seed(
        self, spec: TaskSpec, loss_name: str, loss_fn: Callable | None, beta: float, seed: int, workdir: Path
    ) -> dict[str, Any]:
        """Train and answer only: the parent judges the answers (the worker has no network and no key)."""
        return pipeline.train_and_answer(self._pipeline_spec(spec), loss_name, beta, seed, workdir, loss_fn, log=print)

    # A job on several processes (--gpus-per-job N): the worker launches the training itself, on N ranks, with
    # the config below, then asks for the answers of the saved model (child/ranks.py).
    def seed_train_config(self, spec: TaskSpec, loss_name: str, beta: float, seed: int, workdir: Path):
        config = pipeline.train_config(self._pipeline_spec(spec), loss_name, beta, seed, workdir)
        config.save_model = True  # the model crosses from the ranks to the evaluating worker as final/
        return config

    def evaluate_trained(self, spec: TaskSpec, workdir: Path, seed: int, steps: int) -> dict[str, Any]:
        return pipeline.answer_trained(self._pipeline_spec(spec), workdir, seed, steps)

    def finish_seed(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        """The seed's row with the judge's ``score`` (its fitness before pairing), ``stderr`` and ``judged``."""
        if self._judge is None:
            raise TaskError(f"{self.name}: the judge is built by prepare(), which has not run")
        scores = pipeline.score_answers(self._pipeline_spec(spec), row["answers"], self._judge, int(row["seed"]))
        return {**row, **scores}

    def seed_fitness(self, row: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float:
        if reference is None:
            raise ValueError(f"the {self.name} fitness is paired: a reference run with the same seed is needed")
        return float(row["score"]) - float(reference["score"])

    def summarise(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not all("score" in r for r in rows):  # a failed judged attempt has answers but no score
            return {}
        return {"judge_score": round(sum(r["score"] for r in rows) / len(rows), 4)}


@dataclass
class ChatTask(_JudgedTask):
    name: ClassVar[str] = "chat"


@dataclass
class AlpacaTask(_JudgedTask):
    name: ClassVar[str] = "alpaca"


@dataclass
class TldrTask(_JudgedTask):
    name: ClassVar[str] = "tldr"
