"""Executor scheduling: one job per GPU at a time, each told its GPU; finished results reused only for the
same work and only from the parent's copy."""

import json
import threading
import time
from dataclasses import replace

import pytest

from podisco.discovery import executors
from podisco.discovery.boundary.job import Job
from podisco.discovery.executors import ExecutionSettings, LocalExecutor, finished_result
from podisco.tasks.base import TaskSpec

SPEC = TaskSpec("digits", "digits", "1", {}, {"data_dir": ""})


def test_gpu_jobs_hold_one_gpu_each_and_never_share_one(monkeypatch, tmp_path):
    lock, busy, seen = threading.Lock(), set(), []

    def fake_execute(job, workdir, settings, gpu=None):
        with lock:
            assert gpu not in busy, f"GPU {gpu} given to two jobs at once"
            busy.add(gpu)
            seen.append(gpu)
        time.sleep(0.05)
        with lock:
            busy.discard(gpu)
        return {"status": "evaluated", "gpu": gpu}

    monkeypatch.setattr(executors, "execute", fake_execute)
    executor = LocalExecutor(8, ExecutionSettings(isolation="process", gpus=("0", "3")))
    assert executor.workers == 2  # no more jobs at once than GPUs, whatever --workers says
    job = Job(task=SPEC, name="f", beta=0.05, seeds=(0,), code="def f(): ...")
    futures = [executor.submit(job, tmp_path / f"w{i}") for i in range(6)]
    assert sorted(f.result()["gpu"] for f in futures) == ["0", "0", "0", "3", "3", "3"]
    executor.shutdown()


def test_jobs_on_several_gpus_each_hold_their_own_group(monkeypatch, tmp_path):
    held = []
    monkeypatch.setattr(executors, "execute", lambda job, workdir, settings, gpu=None: held.append(gpu) or {})
    settings = ExecutionSettings(isolation="process", gpus=("0", "1", "2", "3", "4"), gpus_per_job=2)
    executor = LocalExecutor(8, settings)
    assert executor.workers == 2  # GPU 4 alone is too few for a job: left idle
    job = Job(task=SPEC, name="f", beta=0.05, seeds=(0,), code="def f(): ...", processes=2)
    for future in [executor.submit(job, tmp_path / f"w{i}") for i in range(4)]:
        future.result()
    executor.shutdown()
    assert sorted(set(held)) == ["0,1", "2,3"]
    with pytest.raises(ValueError, match="a job needs 8 GPUs; only 5"):
        executors.gpu_groups(settings.gpus, 8)


def test_a_finished_result_is_reused_only_for_the_same_work(tmp_path):
    job = Job(task=SPEC, name="f", beta=0.05, seeds=(0,), code="def f(): ...")
    workdir = tmp_path / "attempt-1"
    assert finished_result(job, workdir) is None
    kept = {"identity": job.identity(), "result": {"status": "evaluated", "per_seed": []}}
    (tmp_path / "attempt-1.finished.json").write_text(json.dumps(kept))
    assert finished_result(job, workdir) == {"status": "evaluated", "per_seed": [], "reused": True}
    assert finished_result(replace(job, seeds=(0, 1)), workdir) is None  # other seeds: other work
    assert finished_result(replace(job, stage_threshold=0.5), workdir) is not None  # how, not what: the same
    (tmp_path / "attempt-1").mkdir()
    (tmp_path / "attempt-1" / "result.json").write_text(json.dumps({"status": "evaluated"}))
    (tmp_path / "attempt-1.finished.json").unlink()
    assert finished_result(job, workdir) is None  # what the sandboxed child wrote in its own folder is never reused
