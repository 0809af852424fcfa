"""The Task protocol and its registry: built-ins, entry-point plugins and a user's file.py:Class; typed options;
a custom task and CIFAR-10 discovered end to end in the sandbox."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from podisco.discovery.archive import Archive
from podisco.tasks import base
from podisco.tasks.base import Task, TaskError, TaskSpec, available_tasks, get_task, make_spec, task_from_spec
from tests.tasks.test_digits import _write_cifar_fixture

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_task.py"


@pytest.mark.parametrize("name", ["imdb", "digits", "cifar10", "chat", "alpaca", "tldr"])
def test_every_built_in_task_implements_the_protocol(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name and task.version
    assert task.kind in ("preference", "classification") and task.describe()
    assert task.seed_archive() and task.limits().wall_s > 0


def test_a_misspelt_task_gets_close_names():
    with pytest.raises(TaskError, match="unknown task 'imbd'; did you mean imdb"):
        get_task("imbd")


def test_options_are_type_checked_and_unknown_ones_named():
    assert get_task("imdb", {"preset": "tiny", "steps": "20"}).steps == 20
    with pytest.raises(TaskError, match=r"task\.options\.steps: expected an integer"):
        get_task("imdb", {"steps": "many"})
    with pytest.raises(TaskError, match=r"task.options.data_dir: unknown key \(known: batch_size, cache_dir"):
        get_task("imdb", {"data_dir": "/x"})


def test_an_installed_plugin_is_found_through_its_entry_point(monkeypatch):
    plugin = EntryPoint("toy", "podisco.tasks.classification.task:DigitsTask", base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "entry_points", lambda group: [plugin] if group == base.ENTRY_POINT_GROUP else [])
    assert available_tasks()["toy"] == "podisco.tasks.classification.task:DigitsTask"
    assert get_task("toy").kind == "classification"
    shadow = EntryPoint("imdb", "podisco.tasks.classification.task:DigitsTask", base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "entry_points", lambda group: [shadow])
    assert get_task("imdb").kind == "preference"  # a plugin cannot take a built-in's name


def test_a_users_file_is_loaded_and_rebuilt_from_its_spec(tmp_path):
    task = get_task(f"{EXAMPLE}:ToyBanditTask", {"steps": 20})
    spec = task.prepare(tmp_path, lambda message: None)
    again = TaskSpec.from_json(spec.to_json())
    assert again == spec and again.task == f"{EXAMPLE}:ToyBanditTask"
    rebuilt = task_from_spec(again)
    row = rebuilt.run_seed(again, "sigmoid", None, 0.1, 0, tmp_path / "seed-0")
    assert rebuilt.steps == 20 and row["reward"] > 0 and row["kl"] >= 0
    assert base.source_paths(spec) == (str(EXAMPLE.parent),)  # mounted into the sandbox for the worker


def test_a_users_file_that_lacks_the_class_or_the_protocol_is_refused(tmp_path):
    with pytest.raises(TaskError, match=r"defines no 'Nope' .*ToyBanditTask"):
        get_task(f"{EXAMPLE}:Nope")
    broken = tmp_path / "half.py"
    broken.write_text("class Half:\n    name = 'half'\n")
    with pytest.raises(TaskError, match="lacks version, kind"):
        get_task(f"{broken}:Half")
    with pytest.raises(TaskError, match="does not exist"):
        get_task(f"{tmp_path}/missing.py:Task")


def test_a_spec_hash_changes_with_what_the_worker_reads():
    one, other = get_task("digits"), get_task("digits", {"epochs": 2})
    assert make_spec(one, {"data_dir": ""}).key() != make_spec(other, {"data_dir": ""}).key()


def _discover(root: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "podisco.cli", "discover", *args, "--proposer", "evolve", "--generations", "1"]
    argv += ["--population", "2", "--seeds", "0", "--reevaluate-seeds", "0", "--root", str(root), "--run", "r"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.integration
def test_discover_runs_a_custom_task_file_end_to_end_in_the_sandbox(tmp_path):
    done = _discover(tmp_path, "--task", "examples/custom_task.py:ToyBanditTask", "--task.options.steps=60")
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Archive(tmp_path / "archive.sqlite")
    assert archive.run("r")["task"] == "toy-bandit"
    attempts = archive.attempts("r")
    seeds = {a.name: a for a in attempts if a.generation == 0}
    assert list(seeds) == ["dpo", "slic", "ipo", "kto"] and all(a.status == "evaluated" for a in seeds.values())
    assert seeds["dpo"].fitness == 0.0  # paired against DPO itself, same seed
    assert len([a for a in attempts if a.generation == 1]) == 2
    assert (tmp_path / "configs" / "r.yaml").read_text().count("steps: 60") == 1  # the resolved config, saved


@pytest.mark.slow
@pytest.mark.integration
def test_discover_runs_cifar10_from_a_local_copy(tmp_path):
    (tmp_path / "data").mkdir()
    _write_cifar_fixture(tmp_path / "data")
    done = _discover(tmp_path / "runs", "--task", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Archive(tmp_path / "runs" / "archive.sqlite")
    seeds = [a for a in archive.attempts("r") if a.generation == 0]
    assert archive.run("r")["task"] == "cifar10" and len(seeds) == 3
    assert all(a.status == "evaluated" and 0 <= a.fitness <= 1 for a in seeds)
    missing = _discover(tmp_path / "other", "--task", "cifar10")
    assert missing.returncode == 2 and "cifar10 needs --data-dir" in missing.stderr
