"""Each `podisco losses` command once, in process; the console script once, as a subprocess."""

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
    assert "argument --beta: must be positive" in capsys.readouterr().err


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
