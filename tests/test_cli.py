"""Each `podisco losses` command once, in process; the console script once, as a subprocess; the package's structure
and its quiet console."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from podisco.cli.main import main
from podisco.losses import list_specs


def test_list_prints_every_loss(capsys):
    assert main(["losses", "list"]) == 0
    out = capsys.readouterr().out
    for spec in list_specs():
        assert f"\n{spec.name} " in out
    assert "lrml -> discopop" in out


def test_list_filters_by_family(capsys):
    assert main(["losses", "list", "--family", "discovered-original"]) == 0
    out = capsys.readouterr().out
    assert "lrml_original" in out and "\nsigmoid " not in out


def test_show_gives_formula_parameters_and_extrema(capsys):
    assert main(["losses", "show", "lrml", "--beta", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "discopop" in out and "tau=0.05" in out
    assert "local min: rho = -2.371" in out and "local max: rho = 1.44" in out
    assert "nearest known losses" in out and "lrml_original (0.000)" in out


def test_misspelled_name_is_a_clear_error(capsys):
    assert main(["losses", "show", "discpop"]) == 2
    err = capsys.readouterr().err
    assert "Unknown loss 'discpop'" in err and "discopop" in err


def test_negative_beta_is_refused(capsys):
    assert main(["losses", "compare", "dpo", "ipo", "--beta", "-0.1"]) == 2
    assert "argument --beta: beta must be positive" in capsys.readouterr().err


def test_plot_writes_a_two_panel_figure(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["losses", "plot", "discopop", "sigmoid", "--beta", "0.05", "--beta", "0.5", "-o", str(out)]) == 0
    image = imread(out)
    height, width = image.shape[:2]
    assert width > height  # two rows of two panels side by side, 11 x 7.2 inches
    assert image.std() > 0.05  # not a blank canvas
    assert f"wrote {out}" in capsys.readouterr().out


def test_compare_flags_duplicates(capsys):
    assert main(["losses", "compare", "padll", "padll_original"]) == 0
    assert "duplicates" in capsys.readouterr().out
    assert main(["losses", "compare", "dpo", "discopop"]) == 0
    assert "different behaviour" in capsys.readouterr().out


def test_analyze_writes_the_table_and_figures(tmp_path, capsys):
    assert main(["losses", "analyze", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "losses.csv") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + len(list_specs())
    discopop = next(r for r in rows if r[0] == "discopop")
    assert discopop[3] == "min -2.37; max 1.44"
    assert (tmp_path / "discovered.png").stat().st_size > 10_000
    assert (tmp_path / "discopop_vs_dpo.png").stat().st_size > 10_000
    assert "DUPLICATE" in capsys.readouterr().out


@pytest.mark.integration
def test_console_script_runs():
    beside_python = Path(sys.executable).with_name("podisco")  # the venv's own script, not another on PATH
    exe = str(beside_python) if beside_python.exists() else shutil.which("podisco")
    assert exe, "the podisco console script is not installed"
    result = subprocess.run([exe, "losses", "list"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "discopop" in result.stdout
    bad = subprocess.run([exe, "losses", "show", "dpoo"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "Did you mean" in bad.stderr and "Traceback" not in bad.stderr


# the package: its structure, the cheap parser, the quiet console


def _imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_nothing_outside_the_cli_imports_it_and_no_group_imports_main():
    package = Path(__file__).resolve().parents[1] / "podisco"
    for path in package.rglob("*.py"):
        imported = _imports(path)
        if path.parent.name != "cli":
            assert not any(n == "podisco.cli" or n.startswith("podisco.cli.") for n in imported), path
        elif path.name not in ("main.py", "__main__.py"):
            assert "podisco.cli.main" not in imported, path


def test_every_command_has_help(capsys):
    from podisco.cli.main import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0 and parser.prog in capsys.readouterr().out


def test_table():
    from podisco.cli.common import table

    assert table([("a", 1), ("bbb", 22)], ("x", "y")).splitlines() == ["x    y", "---  --", "a    1", "bbb  22"]


def test_seeds_and_positive_numbers():
    from podisco.cli.common import UsageError, positive_floats, seeds
    from podisco.errors import PodiscoError

    assert seeds("0,1,2") == (0, 1, 2) and positive_floats("0.05,1") == (0.05, 1.0)
    for bad in ("", "1,,2", "a", "-1"):
        with pytest.raises(UsageError):
            seeds(bad)
    with pytest.raises(PodiscoError):  # a PodiscoError too: cmd code may call these directly
        positive_floats("0.1,nan")


def test_runs_list_and_show_on_a_tiny_archive(tmp_path, capsys):
    from podisco.discovery.archive import Archive

    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r1", {}, "digits", "1", "process")
    first = archive.add_proposed("r1", 1, 0, "evolve", "mine", "", "def mine(logits, targets):\n    return 0\n")
    archive.finish(first, "evaluated", fitness=0.5)
    second = archive.add_proposed("r1", 1, 1, "evolve", "bad", "", "x")
    archive.finish(second, "invalid", error="not a function\nmore")
    archive.add_proposed("r1", 1, 2, "evolve", "running", "", "x")  # a run in progress: not finished yet
    archive.close()
    assert main(["runs", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "task", "attempts", "best", "isolation", "state"]
    assert out[2].split() == ["r1", "digits", "v1", "3", "+0.5000", "process", "open"]
    assert main(["runs", "show", "r1", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 evaluated, 0 duplicate, 1 invalid, 0 failed" in out and "not a function" in out and "more" not in out


_CHILD = """
import os, sys
from podisco.cli.main import main
from podisco.cli.common import QUIET_ENV
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "datasets", "huggingface_hub") if m in sys.modules)
quiet = {k: os.environ.get(k) for k in QUIET_ENV}
import transformers, huggingface_hub.utils
print(status, heavy, quiet == QUIET_ENV, transformers.utils.logging.get_verbosity(),
      transformers.utils.logging.is_progress_bar_enabled(), huggingface_hub.utils.are_progress_bars_disabled())
"""


@pytest.mark.integration
@pytest.mark.parametrize("verbose", [False, True])
def test_a_command_is_quiet_without_importing_what_it_does_not_need(tmp_path, verbose):
    import logging
    import os

    from podisco.cli.common import QUIET_ENV

    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV and k != "ACCELERATE_LOG_LEVEL"}
    argv = ["runs", "list", "--root", str(tmp_path)] + (["--verbose"] if verbose else [])
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "podisco: error: no archive at " + str(tmp_path / "archive.sqlite") + (
        "; run podisco discover first (or pass --root)\n"
    )
    status, _, rest = done.stdout.partition(" [")
    heavy, _, flags = rest.partition("] ")
    assert status == "2" and heavy == ""  # not even torch: the parser is built from light modules only
    if verbose:  # the libraries as they come: warnings and progress bars on
        assert flags.split() == ["False", str(logging.WARNING), "True", "False"]
    else:  # set before they were imported, read when they were
        assert flags.split() == ["True", str(logging.ERROR), "False", "True"]


@pytest.mark.integration
def test_python_m_podisco_cli(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "podisco.cli", "runs", "list", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("podisco: error: no archive at") and not done.stdout
