"""Run one hostile candidate the way the discovery loop would: the static gate, then a sandboxed worker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.boundary.job import Job
from podisco.discovery.boundary.sandbox import Limits
from podisco.discovery.executors import ExecutionSettings, execute
from tests.discovery.configs import job_spec
from tests.reliability.hostile import CANARY, code

SECRET = "podisco-parent-secret-7f3a"


def contain(name: str, isolation: str, workdir: Path, wall_s: float = 15.0) -> dict:
    """{"outcome": "rejected" | "contained" | "ESCAPED", "detail": ..., "seconds": ...}."""
    source = code(name)
    start = time.monotonic()
    try:
        check_code(source)
    except GateError as error:
        return {"outcome": "rejected", "detail": f"gate: {error}", "seconds": time.monotonic() - start}
    canary = Path(CANARY)
    before = canary.stat().st_mtime_ns if canary.exists() else None
    os.environ["PODISCO_TEST_SECRET"] = SECRET  # a secret in the parent's environment
    try:
        # No seeds: the worker defines the function, runs the battery and the shape analysis, which is where a
        # candidate's code runs; training would only run it more.
        job = Job(task=job_spec("imdb"), name=name, beta=0.05, seeds=(), code=source)
        limits = Limits(wall_s=wall_s, memory_mb=4096)
        result = execute(job, workdir, ExecutionSettings(isolation=isolation, limits=limits))
    finally:
        del os.environ["PODISCO_TEST_SECRET"]
    after = canary.stat().st_mtime_ns if canary.exists() else None
    leaked = SECRET in json.dumps(result) or SECRET in _read(workdir / ".stdout") + _read(workdir / ".stderr")
    escaped = after != before or leaked  # finishing within the limits is no escape; touching the machine is
    detail = f"{result.get('status')}: {(result.get('error') or '').strip().splitlines()[0][:160]}"
    return {"outcome": "ESCAPED" if escaped else "contained", "detail": detail, "seconds": time.monotonic() - start}


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
