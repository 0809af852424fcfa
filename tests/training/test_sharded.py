"""FSDP and DeepSpeed through `accelerate launch --config_file recipes/accelerate/...`, two processes against one:
(a) the same losses and parameters after the same global batches, (b) final/ and a checkpoint's model/ load with
from_pretrained, (c) a resume from a sharded checkpoint continues exactly.

FSDP2 runs on CPU with gloo: Accelerate 1.15 drops its FSDP plugin on CPU (see sharded_run.py), so the helper
puts it back, and `prepare` shards with `fully_shard` as on GPUs. With two or more GPUs the same tests run on
them, unpatched. DeepSpeed needs CUDA and the `deepspeed` package; its tests skip without them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"
ON_GPUS = torch.cuda.device_count() >= 2  # else the FSDP tests run on CPU (two processes cannot share one GPU)
# On CPU the sharded runs reduce in the same order as one process, to rounding, and a resume repeats the same
# operations bit for bit; CUDA kernels reduce in other orders.
CPU_CLOSE, GPU_CLOSE = {"rtol": 1e-5, "atol": 1e-6}, {"rtol": 1e-3, "atol": 2e-3}
FSDP_CLOSE = GPU_CLOSE if ON_GPUS else CPU_CLOSE
FSDP_SAME = GPU_CLOSE if ON_GPUS else {"rtol": 0.0, "atol": 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def _train(out: Path, cache: Path, processes: int, config: str | None, *extra: str, cpu: bool = False) -> dict:
    """Train with sharded_run.py: plainly without ``config``, else under `accelerate launch --config_file`.
    Every run sees global micro-batches of 4 pairs (2 per optimizer step), split over its processes."""
    script = ["-m", "tests.training.sharded_run", str(out), str(4 // processes), str(cache), *extra]
    if cpu:
        script.append("--cpu")
    if config is None:
        _run([sys.executable, *script])
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        launch = [accelerate, "launch", "--config_file", str(CONFIGS / config), "--num_processes", str(processes)]
        launch += ["--mixed_precision", "no", "--main_process_port", str(_free_port())]
        _run([*launch, *script])
    return json.loads((out / "summary.json").read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _assert_same_weights(a: Path, b: Path, **tolerance) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], msg=key, **tolerance)


def _losses(summary: dict) -> list[float]:
    return [h["loss"] for h in summary["history"]]


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> Path:
    """One process with the whole batch; FSDP2 on two processes with half of it each, whose reference model is
    itself sharded (per layer, then the rest) before the reference pass; a checkpoint at step 2 of 4."""
    root = tmp_path_factory.mktemp("fsdp")
    cpu = not ON_GPUS
    _train(root / "one", root / "cache-one", 1, None, cpu=cpu)
    _train(root / "fsdp", root / "cache-fsdp", 2, "fsdp.yaml", "--sharded-reference", cpu=cpu)
    return root


@pytest.mark.slow
@pytest.mark.integration
def test_fsdp_two_processes_match_one_process_and_save_loadable_weights(fsdp_runs):
    one = json.loads((fsdp_runs / "one" / "summary.json").read_text())
    fsdp = json.loads((fsdp_runs / "fsdp" / "summary.json").read_text())
    assert (one["world"], fsdp["world"]) == (1, 2)
    assert fsdp["distributed_type"] == "DistributedType.FSDP"
    assert fsdp["sharded_layers"] == 2  # fsdp.yaml's transformer auto-wrap: one shard group per GPT2Block
    assert _losses(fsdp) == pytest.approx(_losses(one), abs=FSDP_CLOSE["atol"])
    # max_grad_norm 0.05 clips every step: the norm spans both shards
    norms = [h["grad_norm"] for h in fsdp["history"]]
    assert norms == pytest.approx([h["grad_norm"] for h in one["history"]], rel=FSDP_CLOSE["rtol"])
    # (a) + (b): gathered full weights, written by save_pretrained, load with from_pretrained
    _assert_same_weights(fsdp_runs / "one" / "final", fsdp_runs / "fsdp" / "final", **FSDP_CLOSE)
    checkpoint = fsdp_runs / "fsdp" / "checkpoint-2"
    _assert_same_weights(fsdp_runs / "one" / "checkpoint-2" / "model", checkpoint / "model", **FSDP_CLOSE)
    # the checkpoint itself is sharded: one file per process (torch.distributed.checkpoint)
    assert len(list((checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    assert len(list((checkpoint / "optimizer_0").glob("*.distcp"))) == 2
    # the sharded reference gave the unsharded numbers, under the unsharded cache key
    (entry,) = (fsdp_runs / "cache-one").iterdir()
    assert [p.name for p in (fsdp_runs / "cache-fsdp").iterdir()] == [entry.name]
    torch.testing.assert_close(torch.load(fsdp_runs / "cache-fsdp" / entry.name), torch.load(entry), **FSDP_CLOSE)


@pytest.mark.slow
@pytest.mark.integration
def test_fsdp_resume_from_a_sharded_checkpoint_continues_exactly(fsdp_runs):
    unbroken = json.loads((fsdp_runs / "fsdp" / "summary.json").read_text())
    resumed = _train(
        fsdp_runs / "resumed",
        fsdp_runs / "cache-resumed",
        2,
        "fsdp.yaml",
        "--resume",
        str(fsdp_runs / "fsdp" / "checkpoint-2"),
        cpu=not ON_GPUS,
    )
    assert len(resumed["history"]) == 2  # steps 3 and 4
    assert _losses(resumed) == pytest.approx(_losses(unbroken)[2:], abs=FSDP_SAME["atol"])
    _assert_same_weights(fsdp_runs / "fsdp" / "final", fsdp_runs / "resumed" / "final", **FSDP_SAME)


def _deepspeed_missing() -> str | None:
    if not torch.cuda.is_available():
        return "DeepSpeed needs CUDA (its ZeRO engine has no CPU path that Accelerate uses)"
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return "the deepspeed package is not installed"
    return None


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(_deepspeed_missing() is not None, reason=str(_deepspeed_missing()))
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_matches_one_process_saves_and_resumes(tmp_path, config):
    processes = min(2, torch.cuda.device_count())
    one = _train(tmp_path / "one", tmp_path / "cache", 1, None)
    ds = _train(tmp_path / "ds", tmp_path / "cache", processes, config)
    assert ds["distributed_type"] == "DistributedType.DEEPSPEED"
    assert _losses(ds) == pytest.approx(_losses(one), abs=GPU_CLOSE["atol"])
    _assert_same_weights(tmp_path / "one" / "final", tmp_path / "ds" / "final", **GPU_CLOSE)
    resumed = _train(
        tmp_path / "resumed", tmp_path / "cache", processes, config, "--resume", str(tmp_path / "ds" / "checkpoint-2")
    )
    assert _losses(resumed) == pytest.approx(_losses(ds)[2:], abs=GPU_CLOSE["atol"])
    _assert_same_weights(tmp_path / "ds" / "final", tmp_path / "resumed" / "final", **GPU_CLOSE)
