"""`podisco sweep` on an LLM-judged task at tiny scale (TL;DR here): train each (loss, beta, seed) from a
TrainConfig YAML, summarise, judge through a loopback judge; resumable at both stages."""

import csv
import json

import pytest
import yaml

from podisco.cli.main import main
from podisco.models import build_tiny_gpt2
from tests.discovery.fake_llm_server import FakeLLMServer, status
from tests.tasks.test_judged import fake_judge
from tests.training.tiny import make_rows, make_tokenizer


@pytest.fixture
def tldr_setup(tmp_path):
    tokenizer = make_tokenizer()
    build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=128).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    pairs = [{**r, "prompt": r["prompt"] + "\nTL;DR:"} for r in make_rows(16, seed=2)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in pairs))
    posts = [{"prompt": f"the movie {i} was good", "label": "good movie"} for i in range(4)]
    (tmp_path / "posts.jsonl").write_text("\n".join(json.dumps(p) for p in posts))
    train = {"model": str(tmp_path / "m"), "data": {"path": str(tmp_path / "pairs.jsonl"), "max_length": 64}}
    train.update(batch_size=8, max_steps=2, precision="fp32")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    return tmp_path


def _argv(folder, url: str) -> list[str]:
    argv = ["sweep", "--task", "tldr", "--losses", "sigmoid,hinge", "--betas", "0.05", "--seeds", "1"]
    argv += ["--train-config", str(folder / "train.yaml"), "--eval-data", str(folder / "posts.jsonl")]
    argv += ["--max-new-tokens", "5", "--out", str(folder / "sweep"), "--judge-model", "fake"]
    return argv + ["--judge-base-url", url, "--judge-cache", str(folder / "judge")]


def test_judged_sweep_writes_scores_and_resumes_without_training_or_asking_again(tldr_setup, capsys):
    with FakeLLMServer(default=fake_judge) as server:
        assert main(_argv(tldr_setup, server.base_url)) == 0
        asked = len(server.requests)
        rows = list(csv.DictReader((tldr_setup / "sweep" / "sweep.csv").read_text().splitlines()))
        assert [r["loss"] for r in rows] == ["sigmoid", "hinge"] and all(0 <= float(r["score"]) <= 1 for r in rows)
        assert all(r["judged"] == "4" for r in rows) and 0 < asked <= 8  # equal answers share a grade
        metrics = sorted((tldr_setup / "sweep" / "runs").glob("*/metrics.jsonl"))
        stamps = [m.stat().st_mtime_ns for m in metrics]
        assert main(_argv(tldr_setup, server.base_url)) == 0
        assert len(server.requests) == asked  # every cell finished: nothing trained, nothing asked
        assert [m.stat().st_mtime_ns for m in metrics] == stamps
    assert "win rate of the summaries" in capsys.readouterr().out
    assert (tldr_setup / "sweep" / "scores.png").stat().st_size > 10_000


def test_a_judge_that_fails_mid_sweep_keeps_the_trained_answers(tldr_setup, capsys):
    with FakeLLMServer([status(401, '{"error": {"message": "bad key"}}')]) as server:
        assert main(_argv(tldr_setup, server.base_url)) == 2
    assert "judging sigmoid beta=0.05 seed=0 failed" in capsys.readouterr().err
    (cell,) = (tldr_setup / "sweep" / "cells").glob("*/sigmoid-0.05-seed0.json")
    assert len(json.loads(cell.read_text())["answers"]) == 4
    metrics = tldr_setup / "sweep" / "runs" / "sigmoid-0.05-seed0" / "metrics.jsonl"
    stamp = metrics.stat().st_mtime_ns
    with FakeLLMServer(default=fake_judge) as server:
        assert main(_argv(tldr_setup, server.base_url)) == 0
    assert metrics.stat().st_mtime_ns == stamp  # judged again, not trained again


def test_prepare_tldr_writes_a_fraction_of_the_pairs_with_the_post_in_the_prompt(tmp_path):
    source = tmp_path / "comparisons.jsonl"
    rows = [{"prompt": f"POST: story {i}", "chosen": "TL;DR: short", "rejected": "TL;DR: long one"} for i in range(20)]
    source.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "pairs.jsonl"
    argv = ["task", "prepare", "tldr", "--source", str(source), "--fraction", "0.25", "-o", str(out)]
    assert main(argv) == 0
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == 5 and all(p["prompt"].startswith("POST: story") for p in pairs)
    assert all(p["prompt"].endswith("\nTL;DR:") and p["chosen"] == " short" for p in pairs)  # the marker once
