"""Scale-out for real: two CPU processes (gloo) under `accelerate launch`, each with half the batch, reach the
parameters of one process with the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_with_half_the_batch_match_one_process(tmp_path):
    script = ["-m", "tests.training.two_process_run"]
    cache = str(tmp_path / "cache")
    _run([sys.executable, *script, str(tmp_path / "one"), "8", cache], tmp_path)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
    ]
    _run([*launch, *script, str(tmp_path / "two"), "4", cache], tmp_path)
    one = torch.load(tmp_path / "one" / "params.pt")
    two = torch.load(tmp_path / "two" / "params.pt")
    assert (one["world"], two["world"]) == (1, 2)
    assert one["losses"] == pytest.approx(two["losses"], abs=1e-6)
    for a, b in zip(one["params"], two["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
