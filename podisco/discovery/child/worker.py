"""CHILD ONLY: the sandboxed worker, ``python -m podisco.discovery.child.worker JOB.json RESULT.json``.

This is the only place a candidate's code is loaded. One job per process: whatever a candidate does to
``torch`` dies with the process. The job (boundary/job.py) names the candidate code (or, for a trusted
reference run, a registered loss), the task's spec and its seeds; the task is rebuilt from the spec and its
``run_seed`` trains and evaluates each seed. The result reports one of ``invalid`` (failed the gate, its
definition or the unit battery), ``duplicate`` (behaves like a known loss; not trained), ``failed`` (training
or evaluation raised) or ``evaluated`` with per-seed rows. With ``stage_threshold`` set, training stops after
the stage-1 seeds when their fitness falls below it (staged evaluation). A job file that is not a valid Job
(a missing or unknown key) is reported as a failed result naming the key.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from podisco.cache import atomic_output
from podisco.discovery.boundary.job import Job
from podisco.tasks.base import Task

_CURVE_POINTS = 40  # training-curve points kept per seed
_CURVE_GRID = 121  # loss-curve points kept per candidate


def _error_text(error: BaseException) -> str:
    tail = traceback.format_exception(error)[-3:]
    return f"{type(error).__name__}: {error}\n" + "".join(tail)[-1500:]


def _shape_summary(loss, beta: float) -> dict[str, Any]:
    """Fingerprint, extrema, nearest known losses, and f / df/drho on a grid: the report draws the curves
    from the archive, never by running candidate code itself. Extrema and convexity need the curvature, which a
    loss with batch statistics may not have (std of identical margins): then they are left out, with the reason."""
    from podisco.losses.analysis import DEFAULT_RHO_RANGE, analyze, curve, fingerprint, nearest_known

    rho = np.linspace(*DEFAULT_RHO_RANGE, _CURVE_GRID)
    values, grads = curve(loss, beta, rho)
    shape: dict[str, Any] = {
        "nearest_known": nearest_known(loss, beta, k=3),
        "curve": {"rho": rho.tolist(), "f": values.tolist(), "grad": grads.tolist()},
    }
    try:
        found = analyze(loss, beta)
    except ValueError as error:
        shape["analysis_error"] = str(error)
    else:
        shape["extrema"] = [{"kind": e.kind, "rho": e.rho, "value": e.value} for e in found.extrema]
        shape["grad_at_zero"], shape["convex"] = found.grad_at_zero, found.convex
    return {"fingerprint": fingerprint(loss, beta).tolist(), "shape": shape}


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


def _loss_for(job: Job, task: Task):
    """The candidate's loss (re-gated, defined, battery-checked), or None for a trusted reference run."""
    from podisco.discovery.child.battery import check_classification_loss, check_preference_loss
    from podisco.discovery.child.candidate import classification_loss, preference_loss

    if not job.code:
        return None, None
    if task.kind == "classification":
        loss_fn = classification_loss(job.code)
        return loss_fn, check_classification_loss(loss_fn)
    loss_fn = preference_loss(job.code)
    return loss_fn, check_preference_loss(loss_fn, job.beta)


def _seed_on_ranks(task: Task, job: Job, workdir: Path, seed: int, out: Path) -> dict[str, Any]:
    """Train one seed on ``job.processes`` launched ranks (child/ranks.py), then evaluate here."""
    from podisco.discovery.child.ranks import train_on_ranks
    from podisco.tasks.base import trains_on_several_processes

    if not trains_on_several_processes(task):
        raise ValueError(f"the {task.name} task trains in one process; --gpus-per-job needs seed_train_config")
    config = task.seed_train_config(job.task, job.loss or job.name, job.beta, seed, out)  # type: ignore[attr-defined]
    steps = train_on_ranks(job, workdir / "job.json", config, job.processes, job.accelerate_config)
    return task.evaluate_trained(job.task, out, seed, steps)  # type: ignore[attr-defined]


def run_job(job: Job, workdir: Path) -> dict[str, Any]:
    """Everything the worker does for one job; never raises for a candidate's fault."""
    from podisco.discovery.boundary.gate import GateError
    from podisco.discovery.boundary.racing import Race, decide
    from podisco.discovery.child.battery import BatteryError
    from podisco.discovery.child.candidate import CandidateError
    from podisco.losses.analysis import (
        CLASSIFICATION_DUPLICATE_DISTANCE,
        EXACT_DUPLICATE_DISTANCE,
        classification_fingerprint,
        fingerprint_distance,
    )
    from podisco.stats import estimate
    from podisco.tasks.base import task_from_spec

    torch.set_num_threads(job.threads)
    task = task_from_spec(job.task)  # trusted task code: built-in, a plugin, or the user's own file
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"timings": timings}
    start = time.perf_counter()
    try:
        loss_fn, flags = _loss_for(job, task)
    except (GateError, CandidateError, BatteryError) as error:
        return {**result, "status": "invalid", "error": str(error)}
    if flags is not None:
        result["flags"] = flags
    timings["check_s"] = time.perf_counter() - start
    if task.kind == "preference":
        start = time.perf_counter()
        try:
            result.update(_shape_summary(loss_fn if loss_fn is not None else job.loss, job.beta))
        except Exception as error:
            # The battery already found the loss finite and differentiable on real batches; a curve that is not
            # (std of identical margins has a NaN second derivative, say) costs the shape and the dedup only.
            result["flags"] = {**result.get("flags", {}), "shape_unavailable": _error_text(error)}
        timings["analysis_s"] = time.perf_counter() - start
    elif task.kind == "classification" and loss_fn is not None:
        start = time.perf_counter()
        try:
            result["fingerprint"] = classification_fingerprint(loss_fn).tolist()
        except Exception as error:  # the battery passed it: a probe it cannot take costs the dedup only
            result["flags"] = {**result.get("flags", {}), "shape_unavailable": _error_text(error)}
        timings["analysis_s"] = time.perf_counter() - start
    if job.code and job.dedup and "fingerprint" in result:
        # rewrites of a known loss stop here instead of training again
        threshold = job.duplicate_distance if task.kind == "preference" else CLASSIFICATION_DUPLICATE_DISTANCE
        duplicate = _duplicate_of(result, job, fingerprint_distance, threshold)
        if duplicate is not None and duplicate[0] in job.contenders and duplicate[1] > EXACT_DUPLICATE_DISTANCE:
            # close to an entry that may end in the top k, but not identical: its own score can reorder the top
            # (measured: DPO at β×2.5 scored 0.0026 below the β×3 it was 0.029 from, and left the top 3)
            note = f"{duplicate[0]} (distance {duplicate[1]:.3f}), which may end in the top k: trained"
            result["flags"] = {**result.get("flags", {}), "near_contender": note}
        elif duplicate is not None:
            return {**result, "status": "duplicate", "duplicate_of": duplicate[0], "distance": duplicate[1]}
        if task.kind == "preference":
            start = time.perf_counter()
            result["rescaling"] = _rescaling_of(loss_fn, job, task.reference_loss)
            timings["rescaling_s"] = time.perf_counter() - start
            rescaled = result["rescaling"]
            if rescaled and rescaled["on_grid"]:  # the reference loss at a β the baseline already trained
                return {
                    **result,
                    "status": "duplicate",
                    "duplicate_of": rescaled["of"],
                    "distance": rescaled["distance"],
                }
    if job.stage0 is not None:
        start = time.perf_counter()
        try:
            result["stage0"] = _stage0(job, loss_fn, workdir)
        except Exception as error:
            return {**result, "status": "failed", "error": f"stage 0, seed {job.seeds[0]}: {_error_text(error)}"}
        timings["stage0_s"] = time.perf_counter() - start
        if result["stage0"].get("decision") == "stop":  # no full run: it cannot be the best
            return {**result, "status": "evaluated", "per_seed": [], "promoted": False}
    rows: list[dict[str, Any]] = []
    race = Race.from_json(job.race) if job.race is not None else None
    raced_through = False
    values: list[float] = []  # per-seed fitness against the reference rows: only to stop early
    start = time.perf_counter()
    for seed in job.seeds:
        out = workdir / f"seed-{seed}"
        try:
            if job.processes > 1:
                row = _seed_on_ranks(task, job, workdir, seed, out)
            else:
                row = task.run_seed(job.task, job.loss or job.name, loss_fn, job.beta, seed, out)
        except Exception as error:
            return {**result, "status": "failed", "error": f"seed {seed}: {_error_text(error)}", "per_seed": rows}
        if (out / "metrics.jsonl").exists():
            row["train"] = _training_curve(out / "metrics.jsonl")
        rows.append(row)
        if race is not None or job.stage_threshold is not None:
            values.append(task.seed_fitness(row, job.reference.get(str(row["seed"]))))
        if race is not None and not raced_through and len(rows) < len(job.seeds):
            decision, why = decide(values, race)
            result["race"] = {**why, "decision": decision}
            if decision == "stop":
                result["promoted"] = False
                break
            raced_through = decision == "promote"  # clearly ahead: every seed, no more checks
        stage1_done = job.stage1_seeds and len(rows) == job.stage1_seeds and job.stage_threshold is not None
        if stage1_done and estimate(values).mean < job.stage_threshold:
            result["promoted"] = False
            break
    timings["train_eval_s"] = time.perf_counter() - start
    return {**result, "status": "evaluated", "per_seed": rows, "promoted": result.get("promoted", True)}


def _stage0(job: Job, loss_fn, workdir: Path) -> dict[str, Any]:
    """Stage 0: the first seed trained at a fraction of the steps (the task's ``at_fidelity`` spec), its fitness
    against the reference run at that fidelity, and, given a race, whether to stop before the full runs. Only
    a stop counts: a candidate clearly ahead at stage 0 still has to show it at full length."""
    from podisco.discovery.boundary.racing import Race, decide
    from podisco.tasks.base import TaskSpec, task_from_spec

    spec = TaskSpec.from_json(job.stage0["task"])
    task, seed = task_from_spec(spec), job.seeds[0]
    row = task.run_seed(spec, job.loss or job.name, loss_fn, job.beta, seed, workdir / f"stage0-seed-{seed}")
    value = task.seed_fitness(row, (job.stage0.get("reference") or {}).get(str(seed)))
    out: dict[str, Any] = {"seed": seed, "fitness": value, "row": row}
    if job.stage0.get("race") is not None:
        decision, why = decide([value], Race.from_json(job.stage0["race"]))
        out.update(why, decision="stop" if decision == "stop" else "continue")
    return out


def _duplicate_of(result: dict, job: Job, distance, threshold: float) -> tuple[str, float] | None:
    """The closest archive entry, or registered loss whose fitness the run knows, within the duplicate
    distance. A candidate that behaves like a registered loss nobody measured here is trained: its fitness
    would otherwise be unknown (measured: torch.exp(-beta * rho) behaves like CELL and scored third of 20)."""
    mine = np.asarray(result["fingerprint"])
    candidates = [(label, distance(mine, np.asarray(fp))) for label, fp in job.known.items()]
    measured = set(job.registry_measured)
    nearest = result.get("shape", {}).get("nearest_known", [])  # preference losses: the registered ones
    candidates += [(f"registry:{name}", d) for name, d in nearest if name in measured]
    if not candidates:
        return None
    label, best = min(candidates, key=lambda item: item[1])
    return (label, best) if best < threshold else None


def _rescaling_of(loss_fn, job: Job, reference_loss: str) -> dict[str, Any] | None:
    """The known loss this candidate matches at a rescaled β (``loss at β ≈ known at β×s``, s in 1/8..8, any
    positive output scale), or None. Known: archive entries (their stored fingerprints) and the registered
    losses this run measured. A match with the reference loss at a β of the baseline grid is a duplicate (it
    takes that run's score); any other match is trained as usual and labelled."""
    from podisco.losses.analysis import rescaled_match, rescaling_label
    from podisco.losses.registry import get_spec

    reference = f"registry:{get_spec(reference_loss).name}"
    known: dict[str, Any] = {label: np.asarray(fp) for label, fp in job.known.items()}
    known.update({f"registry:{name}": name for name in job.registry_measured})
    # the reference loss first: an archive entry that is DPO itself ties with it, and DPO is what has a grid
    match = None
    if reference in known:
        match = rescaled_match(loss_fn, job.beta, {reference: known.pop(reference)}, job.duplicate_distance)
    if match is None and known:
        match = rescaled_match(loss_fn, job.beta, known, job.duplicate_distance)
    if match is None:
        return None
    label, found = match
    name = label.split(" ", 1)[-1] if label.startswith("attempt:") else label.removeprefix("registry:")
    target_beta = job.beta * found.scale
    on_grid = next((b for b in job.baseline_grid if abs(b / target_beta - 1) <= 0.02), None)
    is_reference = label == reference
    return {
        "of": label,
        "label": rescaling_label(name, found.scale),
        "scale": found.scale,
        "distance": found.distance,
        "grid_beta": on_grid if is_reference else None,
        "on_grid": bool(is_reference and on_grid is not None),
    }


def main(argv: list[str] | None = None) -> int:
    job_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    workdir = Path(job_path).resolve().parent
    start = time.perf_counter()
    try:
        result = run_job(Job.read(job_path), workdir)
    except Exception as error:  # a fault of the worker itself, not of the candidate: report it all the same
        result = {"status": "failed", "error": f"worker error: {_error_text(error)}"}
    result.setdefault("timings", {})["worker_s"] = time.perf_counter() - start
    with atomic_output(result_path) as tmp:
        tmp.write_text(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
