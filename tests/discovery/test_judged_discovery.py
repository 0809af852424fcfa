"""Discovery on an LLM-judged task at tiny scale: sandboxed workers train a tiny model from a TrainConfig YAML
and answer the questions; the parent judges the answers through a loopback judge. A judge that fails stops the
run with the answers kept, and --resume judges them without training again."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from podisco.discovery.archive import Archive
from podisco.discovery.boundary.sandbox import detect_isolation
from podisco.discovery.config import DiscoveryConfig
from podisco.discovery.loop import run_discovery
from podisco.errors import PodiscoError
from podisco.models import build_tiny_gpt2
from tests.discovery.configs import make_config
from tests.discovery.fake_llm_server import FakeLLMServer, status
from tests.tasks.test_judged import fake_judge
from tests.training.tiny import make_rows, make_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-task")
    tokenizer = make_tokenizer()
    model = build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=128)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in make_rows(24, seed=5)))
    questions = [
        {"question_id": 1, "category": "writing", "turns": ["the movie was", "and the plot"]},
        {"question_id": 2, "category": "roleplay", "turns": ["a good story"]},
    ]
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    train = {
        "model": str(folder / "model"),
        "data": {"path": str(folder / "pairs.jsonl"), "max_length": 64},
        "optim": {"lr": 0.05, "warmup_ratio": 0.0},
        "batch_size": 8,
        "max_steps": 3,
        "precision": "fp32",
    }
    (folder / "train.yaml").write_text(yaml.safe_dump(train))
    return folder


def _config(folder: Path, judge_url: str, cache: Path, **extra) -> DiscoveryConfig:
    values = dict(
        train_config=str(folder / "train.yaml"),
        eval_data=str(folder / "questions.jsonl"),
        max_new_tokens=6,
        judge_model="fake-judge",
        judge_base_url=judge_url,
        judge_cache=str(cache),
        proposer="evolve",
        generations=1,
        population=2,
        workers=2,
        seeds=(0,),
        reevaluate_top=1,
        reevaluate_seeds=(0, 1),
        wall_s=300,
    )
    return make_config("chat", **{**values, **extra})


def test_chat_discovery_trains_in_the_sandbox_and_judges_in_the_parent(chat_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))  # the reference log-probs land here
    with FakeLLMServer(default=fake_judge) as server:
        config = _config(chat_setup, server.base_url, tmp_path / "judge")
        run_id = run_discovery(config, tmp_path / "runs", log=lambda message: None)
        asked = len(server.requests)
    archive = Archive(tmp_path / "runs" / "archive.sqlite")
    attempts = archive.attempts(run_id)
    assert [a.name for a in attempts if a.generation == 0] == ["dpo", "slic", "ipo", "kto"]
    evaluated = [a for a in attempts if a.status == "evaluated"]
    assert len(evaluated) >= 4 and all(a.fitness is not None for a in evaluated)
    reference = json.loads(next((tmp_path / "runs" / "references").glob("*-seed0.json")).read_text())
    assert 1 <= reference["score"] <= 10 and reference["judged"] == 3  # 2 questions: 2 + 1 turns graded
    for a in evaluated:  # fitness = this loss's judged score - DPO's, same training seed
        row = a.metrics["per_seed"][0]
        assert len(row["answers"]) == 2 and len(row["answers"][0]) == 2
        assert a.fitness == pytest.approx(row["score"] - reference["score"])
        assert a.metrics["dynamics"]["judge_score"] == pytest.approx(row["score"], abs=1e-4)
    dpo = next(a for a in attempts if a.name == "dpo")
    assert dpo.metrics["per_seed"][0]["answers"] == reference["answers"]  # same loss, same seed, same answers
    assert dpo.fitness == 0.0
    # every candidate ran at the run's isolation level, the strongest this machine has (trusted runs alone
    # run as a plain process)
    isolation = archive.run(run_id)["isolation"]
    assert isolation == detect_isolation()
    levels = [a.timings["sandbox"]["isolation"].removesuffix(" (warm slot)") for a in evaluated]  # warm: the default
    assert levels == [isolation] * len(evaluated)
    (reevaluated,) = archive.reevaluations(run_id)
    assert reevaluated["seeds"] == [1]  # held out: seed 0 was the search's
    assert archive.run(run_id)["verdict"]["baseline"]["description"] == "DPO at β=0.05 (untuned: no β grid)"
    # every grade is now cached: judging the same answers again costs no request
    assert asked > 0 and all("response_format" not in r.json for r in server.requests)
    from podisco.reporting.report import build_report

    page = build_report(archive, run_id)
    assert page.count("Answers (seed 0, 2 of 2)") == len(evaluated)  # what the judge scored, beside the code


def test_a_failing_judge_stops_the_run_and_resume_judges_without_training_again(chat_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    with FakeLLMServer([status(401, '{"error": {"message": "invalid api key"}}')]) as server:
        config = _config(chat_setup, server.base_url, tmp_path / "judge", generations=0, reevaluate_top=0)
        with pytest.raises(
            PodiscoError,
            match=r"(?s)scoring the reference run \(sigmoid, β=0.05\) \(seed 0\) failed: .*invalid api key"
            r".*--resume --run r1",
        ):
            run_discovery(config, root, run_id="r1", log=lambda message: None)
    (finished,) = (root / "work").glob("reference-*.finished.json")
    kept = finished.stat().st_mtime_ns
    with FakeLLMServer(default=fake_judge) as working:  # --resume with another judge endpoint
        config = _config(chat_setup, working.base_url, tmp_path / "judge", generations=0, reevaluate_top=0)
        run_discovery(config, root, run_id="r1", resume=True, log=lambda message: None)
    assert finished.stat().st_mtime_ns == kept  # the reference's worker did not run again
    attempts = Archive(root / "archive.sqlite").attempts("r1")
    assert {a.status for a in attempts} == {"evaluated"} and len(attempts) == 4


def test_a_judged_task_without_a_usable_judge_is_refused_before_training(chat_setup, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = _config(chat_setup, "https://judge.example.com/v1", tmp_path / "judge")
    with pytest.raises(PodiscoError, match="no usable LLM judge"):
        run_discovery(config, tmp_path / "runs", log=lambda message: None)
    assert not list((tmp_path / "runs").glob("work/*"))


def test_cli_discover_takes_the_judged_task_arguments(chat_setup, tmp_path, monkeypatch, capsys):
    from podisco.cli.main import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = ["discover", "--task", "chat", "--train-config", str(chat_setup / "train.yaml"), "--root", str(tmp_path)]
    argv += ["--eval-data", str(chat_setup / "questions.jsonl"), "--judge-base-url", "https://judge.example.com/v1"]
    assert main(argv) == 2
    assert "no usable LLM judge: https://judge.example.com/v1 needs $OPENAI_API_KEY" in capsys.readouterr().err


def test_jobs_on_two_processes_launch_their_ranks_inside_the_sandbox(chat_setup, tmp_path, monkeypatch):
    """--gpus-per-job 2 on a CPU: every job (the DPO reference and the seed losses) trains on two gloo ranks
    that the sandboxed worker launches, and answers with the model they saved; DDP on 2 ranks x half the batch
    takes the same steps as one process, so DPO's answers match a one-process run's."""
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))
    with FakeLLMServer(default=fake_judge) as server:
        answers = {}
        for processes in (1, 2):
            root = tmp_path / f"runs{processes}"
            config = _config(
                chat_setup, server.base_url, tmp_path / "judge", generations=0, reevaluate_top=0, gpus_per_job=2
            )
            config.execution.gpus_per_job = processes
            run_id = run_discovery(config, root, log=lambda message: None)
            attempts = Archive(root / "archive.sqlite").attempts(run_id)
            assert {a.status for a in attempts} == {"evaluated"}, [a.error for a in attempts]
            answers[processes] = {a.name: a.metrics["per_seed"][0]["answers"] for a in attempts}
    assert answers[2]["dpo"] == answers[1]["dpo"]
    seed_folder = next((tmp_path / "runs2" / "work").glob("*/attempt-*/seed-0"))
    assert (seed_folder / "trained.json").exists() and (seed_folder / "final").is_dir()  # the ranks' output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_jobs_train_and_answer_on_their_gpu_inside_the_sandbox(chat_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PODISCO_CACHE", str(tmp_path / "cache"))
    with FakeLLMServer(default=fake_judge) as server:
        config = _config(
            chat_setup, server.base_url, tmp_path / "judge", generations=0, reevaluate_top=0, workers=0, gpus="auto"
        )
        config.task.options["train_overrides"] = ["precision=bf16"]
        run_id = run_discovery(config, tmp_path / "runs", log=print)
    attempts = Archive(tmp_path / "runs" / "archive.sqlite").attempts(run_id)
    for a in attempts:
        row = a.metrics["per_seed"][0]
        print(f"{a.name}: {a.status} on {row['device']} ({a.timings['sandbox']}), fitness {a.fitness:+.3f}")
    assert {a.status for a in attempts} == {"evaluated"}
    assert all(a.metrics["per_seed"][0]["device"].startswith("cuda") for a in attempts)


def test_a_hub_cache_model_is_readable_in_the_sandbox_through_its_blob_links(tmp_path):
    """snapshot_download returns .../models--x/snapshots/REV whose files link to ../../blobs: both must be
    mounted back, or every candidate would fail to load the model under bwrap (checked: with only the
    snapshot folder mounted, the read fails with FileNotFoundError)."""
    import sys

    from podisco.discovery.boundary.sandbox import run_sandboxed
    from podisco.tasks.judged.pipeline import readonly_paths

    if detect_isolation() != "bwrap":
        pytest.skip("needs bwrap")
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "abc123").write_text('{"model_type": "gpt2"}')
    snapshot = repo / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to("../../blobs/abc123")
    data = tmp_path / "prepared" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}")
    spec = {"train": {"model": str(snapshot), "data": {"path": str(data)}}}
    work = tmp_path / "work"
    work.mkdir()
    code = f"print(open({str(snapshot / 'config.json')!r}).read(), open({str(data)!r}).read())"
    paths = [Path(p) for p in readonly_paths(spec)]
    result = run_sandboxed([sys.executable, "-c", code], work, readonly_paths=paths, isolation="bwrap")
    assert result.returncode == 0, result.stderr_tail
    assert '{"model_type": "gpt2"} {}' in result.stdout_tail
