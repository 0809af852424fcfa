"""A real small LLM (SmolLM2-135M-Instruct through llama.cpp, `--local-model`) in one discovery generation on
digits. It asserts what must hold for any model, not the quality of its losses: every reply is accounted for
(evaluated, or invalid / duplicate / failed with its reason), the run finishes, the server is gone afterwards, and
the archive has each reply's timing. Skips, saying why, without the [local-llm] extra or the GGUF (.ci/run
fetches both)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from podisco.discovery.archive import Archive, proposer_cost
from podisco.local_llm import TEST_GGUF_ENV, find_test_gguf

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_a_real_small_model_runs_one_generation_on_digits(tmp_path):
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install 'podisco[local-llm]')")
    model = find_test_gguf()
    if model is None:
        pytest.skip(f"no SmolLM2-135M GGUF: set ${TEST_GGUF_ENV} or let .ci/run fetch it")
    command = [
        sys.executable, "-m", "podisco.cli", "discover", "--task", "digits", "--proposer", "llm",
        "--local-model", str(model), "--llm-max-tokens", "400", "--llm-timeout", "120", "--llm-temperature", "0.7",
        "--generations", "1", "--population", "3", "--refills", "1", "--seeds", "0", "--reevaluate-seeds", "1",
        "--no-transfer",
        "--workers", "2", "--threads", "1", "--allow-weak-isolation", "--root", str(tmp_path), "--run", "local",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    archive = Archive(tmp_path / "archive.sqlite")
    assert archive.run("local")["finished"]
    replies = [a for a in archive.attempts("local") if a.proposer == "llm"]
    # a duplicate's slot is proposed again, once more per slot here (--refills 1): 3 replies that are not
    # duplicates, unless the model spent all 6 on copies
    assert sum(a.status != "duplicate" for a in replies) == 3 or len(replies) == 3 * 2
    for a in replies:
        assert a.status in ("evaluated", "invalid", "duplicate", "failed")
        assert a.status == "evaluated" or a.error or a.duplicate_of, f"attempt {a.id} has no reason"
        call = a.llm_tokens
        assert call["latency_s"] > 0 and call["completion"] > 0 and call["mode"] == "json_schema"
    assert "replies" in proposer_cost(replies)
    # the server stopped with the run: no llama.cpp child serving this model is left (read /proc: no pgrep needed)
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _serves(p, model.name)]
    assert left == [], "the local LLM server outlived its run"


def _serves(cmdline: Path, model: str) -> bool:
    try:
        text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # the process ended while we looked
        return False
    return "podisco.local_llm" in text and model in text
