"""The sandboxed worker: ``python -m podisco.discovery.worker JOB.json RESULT.json``.

This is the only place a candidate's code is loaded. One job per process: whatever a candidate does to
``torch`` dies with the process. The job names the candidate code (or, for a trusted reference run, a
registered loss), the task and its seeds; the result reports one of ``invalid`` (failed the gate, its
definition or the unit battery), ``duplicate`` (behaves like a known loss; not trained), ``failed``
(training or evaluation raised) or ``evaluated`` with per-seed metrics. With ``stage_threshold`` set,
training stops after the stage-1 seeds when their fitness falls below it (staged evaluation).
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from podisco.cache import atomic_output
from podisco.discovery.fitness import aggregate, seed_fitness

_CURVE_POINTS = 40  # training-curve points kept per seed
_CURVE_GRID = 121  # loss-curve points kept per candidate


def _error_text(error: BaseException) -> str:
    tail = traceback.format_exception(error)[-3:]
    return f"{type(error).__name__}: {error}\n" + "".join(tail)[-1500:]


def _shape_summary(loss, beta: float) -> dict[str, Any]:
    """Fingerprint, extrema, nearest known losses, and f / df/drho on a grid: the report draws the curves
    from the archive, never by running candidate code itself."""
    from podisco.losses.analysis import DEFAULT_RHO_RANGE, analyze, curve, fingerprint, nearest_known

    shape = analyze(loss, beta)
    rho = np.linspace(*DEFAULT_RHO_RANGE, _CURVE_GRID)
    values, grads = curve(loss, beta, rho)
    return {
        "fingerprint": fingerprint(loss, beta).tolist(),
        "shape": {
            "extrema": [{"kind": e.kind, "rho": e.rho, "value": e.value} for e in shape.extrema],
            "grad_at_zero": shape.grad_at_zero,
            "convex": shape.convex,
            "nearest_known": nearest_known(loss, beta, k=3),
            "curve": {"rho": rho.tolist(), "f": values.tolist(), "grad": grads.tolist()},
        },
    }


def _training_curve(metrics_path: Path) -> dict[str, list[float]]:
    """Loss, reward margins and accuracies over steps, thinned to at most ``_CURVE_POINTS`` points."""
    if not metrics_path.exists():
        return {}
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    records = [r for r in records if "loss" in r]
    stride = max(1, len(records) // _CURVE_POINTS)
    keep = records[::stride] + ([records[-1]] if records and (len(records) - 1) % stride else [])
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies")
    return {k: [float(r[k]) for r in keep if k in r] for k in keys}


@functools.cache
def _prepared(preset: str, cache_dir: str | None):
    from podisco.tasks.imdb import prepare

    return prepare(preset, cache_dir, log=lambda *_: None)  # loads the cached task once per worker


def _train_imdb(job: dict, loss_fn, seed: int, workdir: Path) -> dict[str, Any]:
    from podisco.tasks.imdb_eval import ImdbTrainSettings, train_and_evaluate

    spec = job["task"]
    task = _prepared(spec["preset"], spec.get("cache_dir") or None)
    settings = ImdbTrainSettings(
        loss=job.get("loss") or job["name"],
        beta=job["beta"],
        steps=spec.get("steps", 0),
        lr=spec.get("lr", ImdbTrainSettings.lr),
        batch_size=spec.get("batch_size", ImdbTrainSettings.batch_size),
        seed=seed,
    )
    out = workdir / f"seed-{seed}"
    result = train_and_evaluate(task, settings, out, (seed,), loss_fn=loss_fn, reference_cache_dir=None)
    row = dict(result.per_seed[0])
    row["train"] = _training_curve(out / "metrics.jsonl")
    return row


def _train_judged(job: dict, loss_fn, seed: int, workdir: Path) -> dict[str, Any]:
    """Train and answer only: the parent judges the answers (the worker has no network and no key)."""
    from podisco.tasks.judged import train_and_answer

    out = workdir / f"seed-{seed}"
    row = train_and_answer(job["task"], job.get("loss") or job["name"], job["beta"], seed, out, loss_fn, log=print)
    row["train"] = _training_curve(out / "metrics.jsonl")
    return row


def _train_digits(job: dict, loss_fn, seed: int) -> dict[str, Any]:
    from podisco.losses.classification import get_classification_loss
    from podisco.tasks.digits import DigitsConfig, load_splits, train_once

    spec = job["task"]
    config = DigitsConfig(dataset=spec.get("dataset", "digits"), epochs=spec.get("epochs", 8), seeds=(seed,))
    fn = loss_fn if loss_fn is not None else get_classification_loss(job["loss"])
    return {"seed": seed, "accuracy": train_once(fn, load_splits(config), config, seed)}


def run_job(job: dict, workdir: Path) -> dict[str, Any]:
    """Everything the worker does for one job; never raises for a candidate's fault."""
    from podisco.discovery.battery import BatteryError, check_classification_loss, check_preference_loss
    from podisco.discovery.candidate import CandidateError, classification_loss, preference_loss
    from podisco.discovery.gate import GateError
    from podisco.losses.analysis import fingerprint_distance

    torch.set_num_threads(int(job.get("threads", 1)))
    task, beta = job["task"]["name"], float(job.get("beta", 0.05))
    classification = task == "digits"
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"timings": timings}
    start = time.perf_counter()
    loss_fn = None
    if job.get("code"):
        try:
            loss_fn = classification_loss(job["code"]) if classification else preference_loss(job["code"])
            flags = check_classification_loss(loss_fn) if classification else check_preference_loss(loss_fn, beta)
        except (GateError, CandidateError, BatteryError) as error:
            return {**result, "status": "invalid", "error": str(error)}
        result["flags"] = flags
    timings["check_s"] = time.perf_counter() - start
    if not classification:
        start = time.perf_counter()
        try:
            result.update(_shape_summary(loss_fn if loss_fn is not None else job["loss"], beta))
        except Exception as error:
            return {**result, "status": "invalid", "error": f"analysing the loss curve failed: {_error_text(error)}"}
        timings["analysis_s"] = time.perf_counter() - start
        if job.get("code") and job.get("dedup", True):
            duplicate = _duplicate_of(result, job, fingerprint_distance)
            if duplicate is not None:
                return {**result, "status": "duplicate", "duplicate_of": duplicate[0], "distance": duplicate[1]}
    rows: list[dict[str, Any]] = []
    stage1 = int(job.get("stage1_seeds", 0))
    start = time.perf_counter()
    for seed in job["seeds"]:
        try:
            if classification:
                rows.append(_train_digits(job, loss_fn, seed))
            elif task == "imdb":
                rows.append(_train_imdb(job, loss_fn, seed, workdir))
            else:
                rows.append(_train_judged(job, loss_fn, seed, workdir))
        except Exception as error:
            return {**result, "status": "failed", "error": f"seed {seed}: {_error_text(error)}", "per_seed": rows}
        if stage1 and len(rows) == stage1 and job.get("stage_threshold") is not None:
            reference = job.get("reference") or {}
            values = [seed_fitness(task, r, reference.get(str(r["seed"]))) for r in rows]
            if aggregate(values)[0] < job["stage_threshold"]:
                result["promoted"] = False
                break
    timings["train_eval_s"] = time.perf_counter() - start
    return {**result, "status": "evaluated", "per_seed": rows, "promoted": result.get("promoted", True)}


def _duplicate_of(result: dict, job: dict, distance) -> tuple[str, float] | None:
    """The closest archive entry, or registered loss whose fitness the run knows, within the duplicate
    distance. A candidate that behaves like a registered loss nobody measured here is trained: its fitness
    would otherwise be unknown (measured: torch.exp(-beta * rho) behaves like CELL and scored third of 20)."""
    mine = np.asarray(result["fingerprint"])
    candidates = [(label, distance(mine, np.asarray(fp))) for label, fp in job.get("known", {}).items()]
    measured = set(job.get("registry_measured", ()))
    candidates += [(f"registry:{name}", d) for name, d in result["shape"]["nearest_known"] if name in measured]
    if not candidates:
        return None
    label, best = min(candidates, key=lambda item: item[1])
    return (label, best) if best < float(job.get("duplicate_distance", 0.05)) else None


def main(argv: list[str] | None = None) -> int:
    job_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    workdir = Path(job_path).resolve().parent
    job = json.loads(Path(job_path).read_text())
    start = time.perf_counter()
    try:
        result = run_job(job, workdir)
    except Exception as error:  # a fault of the worker itself, not of the candidate: report it all the same
        result = {"status": "failed", "error": f"worker error: {_error_text(error)}"}
    result.setdefault("timings", {})["worker_s"] = time.perf_counter() - start
    with atomic_output(result_path) as tmp:
        tmp.write_text(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
