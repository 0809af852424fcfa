"""The Task protocol: what a fitness task is, to the discovery loop, its sandboxed worker, the CLI and the report.

A task is an object behind this protocol, never a string that modules branch on. Built-in tasks, installed
plugins (entry-point group ``podisco.tasks``) and a user's own ``path/to/file.py:ClassName`` are all found by
``get_task``. A task class is a dataclass whose fields are its options (``--task.options.preset=tiny``); it has
two halves:

- parent side (trusted code, runs in the discovery process): ``prepare`` builds what the task needs once (caches,
  checked data, a judge) and returns a frozen, JSON-round-trippable ``TaskSpec``; ``readonly_paths`` says what a
  sandboxed worker must read; ``finish_seed`` turns a worker's row into a scored row (identity, or the judge);
  ``seed_fitness`` says what "better" means for one seed; ``summarise`` gives the archive's outcome metrics.
- child side (runs inside the sandboxed worker): ``run_seed`` trains and evaluates one seed with a loss.

A user's task file is trusted code, like a training script: it runs in the parent for ``prepare`` and in the
worker for ``run_seed``. Candidate code is what the sandbox is for, not task code.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from podisco.errors import PodiscoError

Kind = Literal["preference", "classification"]
ENTRY_POINT_GROUP = "podisco.tasks"


class TaskError(PodiscoError, ValueError):
    """A task that cannot be found, configured or prepared; the message names what was wrong."""


@dataclass(frozen=True)
class TaskLimits:
    """Defaults for a job of this task; ``podisco discover`` flags override them."""

    wall_s: float = 900.0  # per job, before the job is killed
    gpus: tuple[str, ...] = ()  # GPUs the jobs may use, one per job at a time; () trains on the CPU


@dataclass(frozen=True)
class TaskSpec:
    """What ``prepare`` hands the worker: enough to rebuild the task and run it with no network.

    ``task`` is the registry reference (``imdb``, ``pkg.module:Class``, ``/abs/file.py:Class``), ``options`` the
    task's option values, ``params`` what ``prepare`` resolved (cache folders, checked data, prompts)."""

    task: str
    name: str
    version: str
    options: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskSpec:
        return cls(**exact_keys(cls, data, "task spec"))

    def key(self) -> str:
        """A short hash that changes whenever anything the worker reads changes."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


@runtime_checkable
class Task(Protocol):
    name: str  # the registry name and the archive's task column
    version: str  # bump whenever anything changes the numbers
    kind: Kind  # "preference": losses of four log-prob tensors; "classification": loss(logits, targets)
    paired: bool  # fitness is a paired difference against ``reference_loss`` trained with the same seed
    reference_loss: str  # the registered loss of the reference runs ("sigmoid": DPO)
    staged: bool  # the worker can score a seed itself, so weak candidates may stop after stage 1
    default_seeds: tuple[int, ...]  # of a full evaluation in the search
    default_reevaluate_seeds: tuple[int, ...]  # held-out seeds of the confirmation (search seeds are dropped)
    # Optional: ``baseline_multiples`` (tuple of floats): the β grid the reference loss is tuned over, as
    # multiples of the run's β (default (1.0,): untuned). ``warm(spec)``: child side, load what every seed
    # needs once in a warm worker slot, before it forks a child per job (discovery/child/forkserver.py).

    def limits(self) -> TaskLimits: ...

    def describe(self) -> str:
        """One line: what the fitness number means (prompts, reports)."""
        ...

    def seed_archive(self) -> dict[str, str]:
        """Name -> code of the losses generation 0 evaluates, in the form a proposer writes them."""
        ...

    def prepare(self, folder: Path, log: Callable[[str], None]) -> TaskSpec:
        """Parent side, trusted: build or load what the task needs (``folder`` is the run root's)."""
        ...

    def readonly_paths(self, spec: TaskSpec) -> tuple[str, ...]:
        """Folders a sandboxed worker reads besides the interpreter and the project."""
        ...

    def run_seed(
        self, spec: TaskSpec, loss_name: str, loss_fn: Callable | None, beta: float, seed: int, workdir: Path
    ) -> dict[str, Any]:
        """Child side: train with the loss and evaluate; one row with ``seed``. ``loss_fn`` None means the
        registered loss ``loss_name`` (reference runs); otherwise ``loss_name`` only labels the result."""
        ...

    def finish_seed(self, spec: TaskSpec, row: dict[str, Any]) -> dict[str, Any]:
        """Parent side: the row the fitness is computed from (the judged tasks judge the answers here)."""
        ...

    def seed_fitness(self, row: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float:
        """One seed's fitness; ``reference`` is the reference loss's row with the same seed when ``paired``."""
        ...

    def summarise(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Outcome metrics over the seeds for the archive and the proposer (e.g. mean reward and KL)."""
        ...


class MultiProcessTask(Task, Protocol):
    """A task whose jobs may train on several processes (``--gpus-per-job N``): the sandboxed worker launches
    ``accelerate launch --num_processes N`` with ``seed_train_config``, then evaluates the saved model in one
    process (discovery/child/ranks.py)."""

    def seed_train_config(self, spec: TaskSpec, loss_name: str, beta: float, seed: int, workdir: Path) -> Any:
        """The TrainConfig one seed trains with (``output_dir`` = ``workdir``)."""
        ...

    def evaluate_trained(self, spec: TaskSpec, workdir: Path, seed: int, steps: int) -> dict[str, Any]:
        """Child side: the seed's row from the model saved in ``workdir / "final"`` after ``steps`` steps."""
        ...


def trains_on_several_processes(task: Task) -> bool:
    return callable(getattr(task, "seed_train_config", None)) and callable(getattr(task, "evaluate_trained", None))


@runtime_checkable
class FidelityTask(Task, Protocol):
    """A task that can train for a fraction of its steps: discovery's stage 0 (a cheap first look,
    ``--stage0``) runs each candidate's first seed at ``at_fidelity(spec, fraction)`` before the full runs."""

    def at_fidelity(self, spec: TaskSpec, fraction: float) -> TaskSpec:
        """The spec of the same task trained for ``fraction`` (0 < f < 1) of the steps."""
        ...


def has_fidelity(task: Task) -> bool:
    return callable(getattr(task, "at_fidelity", None))


# the registry
def _builtin() -> dict[str, str]:
    """Built-in task names -> ``module:Class``; imported only when asked for (the judged tasks pull in more)."""
    return {
        "imdb": "podisco.tasks.imdb.task:ImdbTask",
        "digits": "podisco.tasks.classification.task:DigitsTask",
        "cifar10": "podisco.tasks.classification.task:Cifar10Task",
        "chat": "podisco.tasks.judged.task:ChatTask",
        "alpaca": "podisco.tasks.judged.task:AlpacaTask",
        "tldr": "podisco.tasks.judged.task:TldrTask",
    }


def available_tasks() -> dict[str, str]:
    """Every task name a user may pass: the built-ins, then installed plugins (which may not shadow them)."""
    names = dict(_builtin())
    for point in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(point.name, point.value)
    return names


def _load_file_class(path_text: str, class_name: str) -> type:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise TaskError(f"task file {path_text} does not exist")
    module_name = "podisco_user_task_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise TaskError(f"task file {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the file runs
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise TaskError(f"task file {path} failed to import: {type(error).__name__}: {error}") from error
    try:
        return getattr(module, class_name)
    except AttributeError:
        defined = [n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module_name]
        raise TaskError(f"{path} defines no {class_name!r} (classes there: {', '.join(defined) or 'none'})") from None


def _load_class(reference: str) -> type:
    module_name, _, class_name = reference.partition(":")
    if not class_name:
        raise TaskError(f"task {reference!r}: expected module:Class or file.py:Class")
    if module_name.endswith(".py"):
        return _load_file_class(module_name, class_name)
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise TaskError(f"task {reference!r} cannot be loaded: {error}") from error


def resolve_reference(name: str) -> str:
    """A task name as the user wrote it -> a reference a worker can load again (absolute for files)."""
    known = available_tasks()
    if name in known:
        return name
    if ":" in name:
        path_text, _, class_name = name.rpartition(":")
        if path_text.endswith(".py"):
            return f"{Path(path_text).expanduser().resolve()}:{class_name}"
        return name
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise TaskError(
        f"unknown task {name!r}{hint} (known: {', '.join(known)}; or a plugin as module:Class or file.py:Class)"
    )


def get_task(name: str, options: Mapping[str, Any] | None = None) -> Task:
    """The task ``name`` (a registered name, ``module:Class`` or ``file.py:Class``) with ``options`` applied,
    each type-checked against the task's dataclass fields."""
    from podisco.training.config import ConfigError, apply

    reference = resolve_reference(name)
    cls = _load_class(available_tasks().get(reference, reference))
    try:
        task = cls()
    except TypeError as error:
        raise TaskError(f"task {name!r}: the class must build with no arguments ({error})") from error
    missing = [m for m in _REQUIRED if not hasattr(task, m)]
    if missing:
        raise TaskError(f"task {name!r} ({cls.__name__}) lacks {', '.join(missing)} of the Task protocol")
    if options:
        if not is_dataclass(task):
            raise TaskError(f"task {name!r} takes no options, got {', '.join(options)}")
        try:
            apply(task, dict(options), "task.options.")
        except ConfigError as error:
            raise TaskError(f"task {task.name}: {error}") from error
    task.reference = reference  # type: ignore[attr-defined]  # how a worker or a resumed run finds it again
    return task


def task_options(task: Task) -> dict[str, Any]:
    """The option values of ``task`` (its dataclass fields), JSON-ready."""
    if not is_dataclass(task):
        return {}
    return json.loads(json.dumps({f.name: getattr(task, f.name) for f in fields(task)}))


def make_spec(task: Task, params: Mapping[str, Any]) -> TaskSpec:
    """The spec of a prepared ``task``: how to rebuild it, its options, and what ``prepare`` resolved."""
    reference = getattr(task, "reference", task.name)
    return TaskSpec(reference, task.name, task.version, task_options(task), json.loads(json.dumps(dict(params))))


def source_paths(spec: TaskSpec) -> tuple[str, ...]:
    """The folder of a user's task file: the sandboxed worker imports the file again from there."""
    module, _, _ = spec.task.rpartition(":")
    return (str(Path(module).parent),) if module.endswith(".py") else ()


def task_from_spec(spec: TaskSpec) -> Task:
    """Worker side: the same task, rebuilt from the spec (a user's file is imported again, by absolute path)."""
    return get_task(spec.task, spec.options)


def exact_keys(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` checked against the dataclass ``cls``: a missing or unknown key is an error naming it."""
    if not isinstance(data, Mapping):
        raise TaskError(f"{what}: expected a mapping, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in required if n not in data]
    if unknown:
        raise TaskError(f"{what}: unknown key {', '.join(unknown)} (known: {', '.join(names)})")
    if missing:
        raise TaskError(f"{what}: missing key {', '.join(missing)}")
    return dict(data)


_REQUIRED = (
    "name",
    "version",
    "kind",
    "paired",
    "reference_loss",
    "staged",
    "default_seeds",
    "default_reevaluate_seeds",
    "limits",
    "describe",
    "seed_archive",
    "prepare",
    "readonly_paths",
    "run_seed",
    "finish_seed",
    "seed_fitness",
    "summarise",
)
