"""Executor scheduling: one job per GPU at a time, each told its GPU; finished results reused only for the
same work and only from the parent's copy."""

import json
import sys
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


@pytest.mark.slow
def test_warm_slots_fork_a_fresh_child_per_candidate_and_survive_a_killed_one(tmp_path):
    """--warm-workers: one slot starts once and runs every job in a child of its own; a spinning candidate is
    killed at its deadline without the slot; each job's folder leaves the slot; a dead slot is started again."""
    from podisco.discovery.boundary.sandbox import detect_isolation
    from podisco.tasks.seeds import CLASSIFICATION_SEEDS
    from tests.discovery.configs import job_spec

    spec = job_spec("digits", epochs=2)
    settings = ExecutionSettings(isolation=detect_isolation(), warm_workers=True, slots_folder=str(tmp_path / "slots"))
    pool = LocalExecutor(1, settings)
    good = Job(task=spec, name="ce", beta=0.05, seeds=(0,), code=CLASSIFICATION_SEEDS["cross_entropy"], wall_s=120)
    spin = replace(good, name="spin", code="def spin(logits, targets):\n    for i in range(10 ** 15):\n        pass\n")
    try:
        first = pool.submit(good, tmp_path / "attempt-1").result(timeout=300)
        started = time.monotonic()
        killed = pool.submit(replace(spin, wall_s=5), tmp_path / "attempt-2").result(timeout=300)
        assert time.monotonic() - started < 60
        again = pool.submit(good, tmp_path / "attempt-3").result(timeout=300)
        (slot,) = pool.slots
        assert slot.starts == 1
        assert first["status"] == again["status"] == "evaluated"
        assert first["per_seed"][0]["accuracy"] == again["per_seed"][0]["accuracy"] > 0.8  # fresh, same seed
        assert killed["status"] == "failed" and "ran past its deadline of 5 s" in killed["error"]
        assert "warm slot" in first["sandbox"]["isolation"]
        assert (tmp_path / "attempt-1" / "result.json").exists() and (tmp_path / "attempt-1.finished.json").exists()
        assert not list((tmp_path / "slots" / "slot-0").glob("job-*"))  # every job's folder moved out
        slot._server.process.kill()  # the slot dies between jobs: the next job starts a fresh one
        assert pool.submit(good, tmp_path / "attempt-4").result(timeout=300)["status"] == "evaluated"
        assert slot.starts == 2
    finally:
        pool.shutdown()
    assert slot._server is None


def test_a_warm_slot_never_imports_what_a_candidate_left_in_its_folder(tmp_path):
    """A job's folder lies inside its slot's, so a candidate can write there; the slot's interpreter must not
    look there for modules (``python -m`` puts its working directory first on sys.path), or a file a candidate
    left would run in a later candidate's child."""
    import subprocess

    from podisco.discovery.boundary.sandbox import scrubbed_env
    from podisco.discovery.executors import warm_slot_argv

    marker = tmp_path / "planted-ran"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n")  # the slot imports json itself

    def start(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=tmp_path, env=scrubbed_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )

    done = start(warm_slot_argv("process"))  # end-of-file on stdin: the slot says it is ready and ends
    assert done.returncode == 0 and b'"ready"' in done.stdout, done.stderr[-2000:]
    assert not marker.exists()
    start([arg for arg in warm_slot_argv("process") if arg != "-P"])  # the same slot without -P runs the planted file
    assert marker.exists()


def test_a_warm_slot_kills_what_a_child_left_running_in_its_sandbox(tmp_path):
    """A child that leaves its process group (setsid) escapes the slot's killpg; in a bwrap sandbox the slot is
    alone in its pid namespace and kills every other process there once the child ended."""
    import subprocess

    from podisco.discovery.boundary.sandbox import Limits, detect_isolation, reap, start_sandboxed

    if detect_isolation() != "bwrap":
        pytest.skip("needs bubblewrap (a pid namespace of the slot's own)")
    script = """
import os, subprocess, time
from podisco.discovery.child.forkserver import kill_leftovers
left = subprocess.Popen(["sleep", "60"], start_new_session=True)  # out of our group, as a hostile child would be
time.sleep(0.2)
killed = kill_leftovers()
left.wait(timeout=10)
print(killed, left.returncode)
"""
    sandboxed = start_sandboxed(
        [sys.executable, "-P", "-c", script], tmp_path, Limits(wall_s=60), "bwrap", stdout=subprocess.PIPE
    )
    try:
        out, _ = sandboxed.process.communicate(timeout=120)
    finally:
        reap(sandboxed)
    assert out.split() == [b"1", b"-9"]  # the sleep, and nothing else: not the script, not the sandbox's init
