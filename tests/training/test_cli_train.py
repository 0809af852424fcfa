"""`podisco train` and `podisco sft` once each, on a tiny model and tokenizer saved to disk (no download)."""

from __future__ import annotations

import json

import pytest
import yaml

from podisco.cli.main import main
from podisco.models import build_tiny_gpt2
from tests.training.tiny import make_rows, make_tokenizer


@pytest.fixture
def model_dir(tmp_path):
    tokenizer = make_tokenizer()
    path = tmp_path / "tiny"
    build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_command(tmp_path, model_dir, capsys):
    data = _write_jsonl(tmp_path / "pairs.jsonl", make_rows(16, seed=2))
    out = tmp_path / "out"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"optim": {"lr": 1e-3}, "batch_size": 4}))
    argv = [
        "train",
        "--config",
        str(config),
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--loss",
        "sigmoid=0.8,sft=1",
        "--beta",
        "0.05",
        "--output-dir",
        str(out),
        "--max_steps=2",
        f"--reference_cache_dir={tmp_path / 'c'}",
    ]
    assert main(argv) == 0
    assert "kept 16 of 16 pairs" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["loss"] == {
        "name": "sigmoid=0.8,sft=1",
        "beta": 0.05,
        "label_smoothing": None,
        "tau": None,
        "gamma": None,
    }
    assert saved["optim"]["lr"] == 1e-3 and saved["batch_size"] == 4 and saved["max_steps"] == 2
    assert (out / "final" / "model.safetensors").exists() and (out / "final" / "tokenizer.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_sft_command(tmp_path, model_dir):
    rows = [{"text": r["prompt"] + r["chosen"]} for r in make_rows(8, seed=4)]
    data = _write_jsonl(tmp_path / "text.jsonl", rows)
    out = tmp_path / "sft"
    argv = [
        "sft",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max_steps=2",
        "--batch_size=4",
        "--optim.lr=1e-3",
    ]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["perplexity"] > 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "discpop"], "Did you mean: discopop"),
        (["--beta", "-1"], "beta must be positive"),
        (["--epochs=0"], "epochs or max_steps must be positive"),
        (["--optim.lr=fast"], "optim.lr: expected a number"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--data", "/no/such.jsonl"], "does not exist"),
    ],
)
def test_train_errors_are_one_clear_line(tmp_path, model_dir, capsys, extra, message):
    data = _write_jsonl(tmp_path / "pairs.jsonl", make_rows(8))
    argv = ["train", "--model", str(model_dir), "--data", str(data), "--output-dir", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_row_is_named(tmp_path, model_dir, capsys):
    rows = make_rows(8)
    rows[5]["chosen"] = 42
    data = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert main(["train", "--model", str(model_dir), "--data", str(data), "--output-dir", str(tmp_path / "o")]) == 2
    assert "row 5: field 'chosen' must be text" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "sigmoid", "--loss.tau=0.1"], "loss 'sigmoid' takes no parameter 'tau'"),
        (["--loss", "sigmoid=1,hinge=1", "--loss.gamma=1"], "loss.gamma: no component of sigmoid, hinge takes it"),
    ],
)
def test_loss_parameters_are_checked(tmp_path, model_dir, capsys, extra, message):
    data = _write_jsonl(tmp_path / "pairs.jsonl", make_rows(8))
    argv = ["train", "--model", str(model_dir), "--data", str(data), "--output-dir", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
