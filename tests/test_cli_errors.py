"""Every user error of the command line: exit status 2, one line ``podisco: error: ...`` on stderr, no traceback.

In process (``main([...])`` returns the status; nothing raises ``SystemExit``); where a run is needed, a tiny
archive in ``tmp_path``. None of these loads a model or a data set."""

from __future__ import annotations

import pytest

from podisco.cli.main import main
from podisco.discovery.archive import Archive

DPO = (
    "def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(beta * logits)\n"
)


def fails(capsys, argv: list[str], *expected: str) -> str:
    """Run ``podisco argv``; check the one error line and that it says each of ``expected``; return it."""
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("podisco: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.fixture
def root(tmp_path):
    """An archive with run ``r`` (one evaluated attempt, id 1) and run ``empty`` (no attempt)."""
    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r", {"beta": 0.05}, "imdb", "3-tiny", "process")
    attempt = archive.add_proposed("r", 1, 0, "evolve", "dpo", "the DPO seed", DPO)
    archive.finish(attempt, "evaluated", fitness=0.01)
    archive.create_run("empty", {"beta": 0.05}, "imdb", "3-tiny", "process")
    archive.close()
    return str(tmp_path)


# the command line itself (argparse), in the same one-line form


def test_no_command(capsys):
    fails(capsys, [], "the following arguments are required: COMMAND", "(see podisco --help)")


def test_unknown_command(capsys):
    fails(capsys, ["discovr"], "invalid choice: 'discovr'")


def test_unknown_sub_command(capsys):
    fails(capsys, ["losses", "lst"], "losses: argument COMMAND: invalid choice: 'lst'", "podisco losses --help")


def test_missing_argument(capsys):
    fails(capsys, ["losses", "show"], "losses show: the following arguments are required: name")


def test_unknown_flag_names_its_command(capsys):
    fails(capsys, ["losses", "list", "--colour"], "losses list: unrecognized arguments: --colour")


def test_bad_override_of_train(capsys):
    fails(capsys, ["train", "lr=1"], "train: unrecognized argument 'lr=1'", "--optim.lr=1e-5")


def test_flag_value_that_is_not_a_number(capsys):
    fails(capsys, ["losses", "show", "dpo", "--beta", "x"], "argument --beta: expected a number, got 'x'")


def test_negative_beta(capsys):
    fails(capsys, ["losses", "show", "dpo", "--beta", "-1"], "argument --beta: beta must be positive")


def test_discover_beta_is_checked_too(capsys, tmp_path):
    fails(capsys, ["discover", "--beta", "0", "--root", str(tmp_path)], "--beta: beta must be positive")


def test_bad_seeds(capsys):
    fails(capsys, ["task", "digits", "--seeds", "0,one"], "argument --seeds: seeds are comma-separated integers")


def test_bad_betas_of_a_sweep(capsys):
    fails(capsys, ["sweep", "--betas", "0.1,-1"], "argument --betas: expected positive comma-separated numbers")


def test_zero_epochs(capsys):
    fails(capsys, ["task", "digits", "--epochs", "0"], "argument --epochs: must be 1 or more")


def test_fraction_above_one(capsys):
    fails(capsys, ["task", "prepare", "tldr", "--fraction", "2"], "argument --fraction: a fraction is in (0, 1]")


def test_empty_rho_range(capsys):
    fails(capsys, ["losses", "show", "dpo", "--range", "5", "-5"], "--range LO HI needs LO < HI")


def test_unknown_family(capsys):
    fails(capsys, ["losses", "list", "--family", "nope"], "invalid choice: 'nope'", "'discovered'")


def test_port_out_of_range(capsys, root):
    fails(capsys, ["serve", "r", "--root", root, "--port", "70000"], "argument --port: a port is 0")


def test_best_and_attempt_together(capsys, root):
    fails(capsys, ["export", "r", "--best", "--attempt", "1", "--root", root], "not allowed with argument")


def test_cifar10_without_its_folder(capsys):
    fails(capsys, ["task", "digits", "--dataset", "cifar10"], "--dataset cifar10 needs --data-dir")


def test_against_beta_without_against(capsys):
    fails(capsys, ["task", "imdb", "--against-beta", "0.5"], "--against-beta is the beta of the --against loss")


# names


def test_unknown_loss(capsys):
    fails(capsys, ["losses", "compare", "dpo", "discpop"], "Unknown loss 'discpop'", "discopop")


def test_unknown_loss_in_a_sweep(capsys):
    fails(capsys, ["sweep", "--losses", "sigmoid,hingee"], "Unknown loss 'hingee'")


# the discovery archive: a missing archive, an unknown run or attempt


def test_no_archive(capsys, tmp_path):
    fails(capsys, ["runs", "list", "--root", str(tmp_path / "none")], "no archive at", "run podisco discover first")


def test_unknown_run_in_runs_show(capsys, root):
    fails(capsys, ["runs", "show", "nope", "--root", root], "no run 'nope'", "runs there: r, empty")


def test_unknown_run_in_report(capsys, root, tmp_path):
    fails(capsys, ["report", "no-such-run", "--root", root, "-o", str(tmp_path / "r.html")], "no run 'no-such-run'")
    assert not (tmp_path / "r.html").exists()


def test_unknown_run_in_serve(capsys, root):
    fails(capsys, ["serve", "nope", "--root", root, "--port", "0"], "no run 'nope'")


def test_unknown_run_in_export(capsys, root, tmp_path):
    fails(capsys, ["export", "nope", "--root", root, "-o", str(tmp_path / "l.py")], "no run 'nope'")


def test_unknown_attempt_in_export(capsys, root, tmp_path):
    fails(capsys, ["export", "r", "--attempt", "999", "--root", root, "-o", str(tmp_path / "l.py")], "no attempt 999")


def test_attempt_of_another_run(capsys, root, tmp_path):
    fails(capsys, ["export", "empty", "--attempt", "1", "--root", root, "-o", str(tmp_path / "l.py")], "no attempt 1")


def test_run_without_an_evaluated_attempt(capsys, root, tmp_path):
    fails(capsys, ["export", "empty", "--root", root, "-o", str(tmp_path / "l.py")], "has no evaluated attempt")


def test_export_onto_a_folder(capsys, root, tmp_path):
    fails(capsys, ["export", "r", "--root", root, "-o", str(tmp_path)], "is a folder; give a file name")


def test_serve_on_a_remote_host(capsys, root):
    fails(capsys, ["serve", "r", "--root", root, "--host", "8.8.8.8", "--port", "0"], "only loopback addresses")


# files


def test_missing_config_file(capsys, tmp_path):
    argv = ["train", "--config", str(tmp_path / "nope.yaml"), "--model", "m", "--data", "d"]
    fails(capsys, argv, "--config", "nope.yaml: no such file")


def test_config_that_is_not_yaml(capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    argv = ["train", "--config", str(tmp_path / "bad.yaml"), "--model", "m", "--data", "d"]
    fails(capsys, argv, "bad.yaml: not valid YAML", "line 2")


def test_bad_value_in_a_config(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: fast\n")
    argv = ["train", "--config", str(tmp_path / "c.yaml"), "--model", "m", "--data", "d"]
    fails(capsys, argv, "optim.lr")


def test_missing_model(capsys, tmp_path):
    (tmp_path / "pairs.jsonl").write_text("")
    argv = ["train", "--model", str(tmp_path / "nope"), "--data", str(tmp_path / "pairs.jsonl")]
    fails(capsys, argv, "--model", "nope does not exist")


def test_missing_data_file(capsys, tmp_path):
    argv = ["sft", "--model", str(tmp_path), "--data", str(tmp_path / "nope.jsonl")]
    fails(capsys, argv, "--data", "nope.jsonl does not exist")


def test_missing_loss_file(capsys, tmp_path):
    argv = ["train", "--model", str(tmp_path), "--data", str(tmp_path), "--loss", f"{tmp_path / 'l.py'}:mine"]
    fails(capsys, argv, "loss file", "l.py does not exist")


def test_missing_loss_file_in_a_sweep(capsys, tmp_path):
    fails(capsys, ["sweep", "--losses", f"sigmoid,{tmp_path / 'l.py'}:mine"], "l.py does not exist")


def test_missing_resume_checkpoint(capsys, tmp_path):
    argv = ["train", "--model", str(tmp_path), "--data", str(tmp_path), "--resume", str(tmp_path / "ckpt")]
    fails(capsys, argv, "--resume", "no such folder")


def test_missing_comparisons_file(capsys, tmp_path):
    argv = ["task", "prepare", "tldr", "--source", str(tmp_path / "c.jsonl"), "-o", str(tmp_path / "p.jsonl")]
    fails(capsys, argv, "c.jsonl' does not exist")


def test_missing_sweep_csv_of_a_report(capsys, root, tmp_path):
    argv = ["report", "r", "--root", root, "--sweep", str(tmp_path / "s.csv"), "-o", str(tmp_path / "r.html")]
    fails(capsys, argv, "--sweep", "s.csv: no such file")


def test_figure_of_an_unknown_format(capsys, tmp_path):
    fails(capsys, ["losses", "plot", "dpo", "-o", str(tmp_path / "x.docx")], "a figure ends in one of", ".png")


def test_output_folder_that_cannot_be_made(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    fails(capsys, ["losses", "analyze", "--out", str(tmp_path / "file" / "sub")], "cannot create the folder")


# the judged tasks


def test_judged_sweep_without_a_train_config(capsys):
    fails(capsys, ["sweep", "--task", "tldr"], "--task tldr needs --train-config")


def test_judged_sweep_with_a_missing_train_config(capsys, tmp_path):
    argv = ["sweep", "--task", "chat", "--train-config", str(tmp_path / "t.yaml")]
    fails(capsys, argv, "--train-config", "t.yaml: no such file")


def test_judged_discover_without_a_train_config(capsys, tmp_path):
    fails(capsys, ["discover", "--task", "alpaca", "--root", str(tmp_path)], "--task alpaca needs --train-config")


def test_judged_task_without_a_judge(capsys, monkeypatch, tmp_path):
    for key in ("OPENAI_API_KEY", "PODISCO_LLM_MODEL", "PODISCO_LLM_BASE_URL", "PODISCO_JUDGE_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    fails(capsys, ["task", "chat", "--model", str(tmp_path)], "no usable LLM judge")
