"""The discovery loop: propose, parse, gate, evaluate in the sandbox, record, feed back; resumable.

A candidate's way (ARCHITECTURE.md): proposer -> ``parse.parse_proposal`` (LLM replies) -> ``gate.check_code``
-> archive row ``proposed`` -> worker job (battery, fingerprint and dedup, training and evaluation on the
task, staged) -> archive row final -> feedback to the proposer. The parent never executes candidate code.
Generation 0 evaluates the seed losses (the paper's DPO, SLiC, IPO, KTO); after the last generation the best
candidates are re-evaluated with more seeds.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from dataclasses import asdict
from pathlib import Path

from podisco.cache import atomic_output
from podisco.discovery import fitness as fitness_mod
from podisco.discovery import judging
from podisco.discovery.archive import Archive, Attempt, code_hash
from podisco.discovery.config import DiscoveryConfig, RunState, config_from_dict
from podisco.discovery.executors import (
    ExecutionSettings,
    Job,
    LocalExecutor,
    RayExecutor,
    default_workers,
    finished_result,
)
from podisco.discovery.gate import GateError, check_code
from podisco.discovery.parse import ProposalError, parse_proposal
from podisco.discovery.prompts import seeds_for
from podisco.discovery.proposers import Context, Proposal, ReplayExhausted
from podisco.discovery.results import record, run_fitness
from podisco.discovery.sandbox import Limits, detect_isolation, require_isolation
from podisco.errors import PodiscoError

REFERENCE_ATTEMPTS = 3


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def make_proposer(config: DiscoveryConfig):
    from podisco.discovery.evolve import EvolveProposer
    from podisco.discovery.proposers import LLMProposer, ReplayProposer
    from podisco.llm_client import ChatClient, llm_configured, settings_from_env

    kind = config.proposer
    settings = settings_from_env(config.llm_model or None, config.llm_base_url or None)
    if kind == "auto":  # an LLM only when one was named: a stray OPENAI_API_KEY must not start spending
        named = config.llm_model or config.llm_base_url or os.environ.get("PODISCO_LLM_MODEL")
        kind = "llm" if named and llm_configured(settings) else "evolve"
    if kind == "llm":
        return LLMProposer(ChatClient(settings), config.prompt_mode)
    if kind == "replay":
        if not config.replay_file:
            raise PodiscoError("--proposer replay needs --replay FILE (a JSONL of recorded replies)")
        return ReplayProposer(config.replay_file)
    if kind == "evolve":
        return EvolveProposer(config.seed)
    raise PodiscoError(f"unknown proposer {kind!r}: auto, llm, evolve or replay")


def run_discovery(
    config: DiscoveryConfig,
    root: str | Path = "runs/discovery",
    run_id: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    proposer=None,
) -> str:
    root = Path(root)
    archive = Archive(root / "archive.sqlite")
    if resume:
        stored = archive.run(run_id or "")
        if stored is None:
            raise PodiscoError(f"no run {run_id!r} to resume in {archive.path}")
        given, config = config, config_from_dict(stored["config"])
        config.generations = max(config.generations, given.generations)
        for key in ("judge_model", "judge_base_url", "judge_cache"):  # a judge that failed may be replaced
            setattr(config, key, getattr(given, key) or getattr(config, key))
    proposer = proposer or make_proposer(config)
    isolation = detect_isolation() if config.isolation == "auto" else config.isolation
    if proposer.kind in ("llm", "replay"):
        require_isolation(isolation, config.allow_weak_isolation)
    name, version = config.task_version()
    judge = judging.make(config) if config.judged else None  # refused now, not after hours of training
    if not resume:
        run_id = run_id or new_run_id()
        archive.create_run(run_id, asdict(config), name, version, isolation)
    log(f"run {run_id}: task {name} v{version}, proposer {proposer.kind}, isolation {isolation}")
    state = RunState(config, run_id, archive, root, _task_spec(config, root, log), judge=judge)
    gpus = _gpus(config)
    if gpus:
        log(f"GPUs {', '.join(gpus)}: one job per GPU")
    wall = config.wall_limit()
    settings = ExecutionSettings(
        isolation=isolation,
        # GPU jobs: no address-space limit (CUDA maps far more than it uses); CPU time scales with the wall time
        limits=Limits(wall_s=wall, cpu_s=int(max(3600, 8 * wall)), memory_mb=0 if gpus else config.memory_mb),
        readonly_paths=_readonly_paths(state.task_spec),
        env=_job_env(config, state.task_spec, bool(gpus)),
        gpus=gpus,
    )
    workers = config.workers or (len(gpus) if gpus else default_workers(config.threads))
    executor = (
        RayExecutor(config.ray_address, settings, config.threads)
        if config.executor == "ray"
        else LocalExecutor(workers, settings)
    )
    try:
        _ensure_references(state, executor, config.seeds)
        _generation_zero(state, executor, log)
        for generation in range(1, config.generations + 1):
            if not _generation(state, executor, proposer, generation, log):
                break
        _reevaluate(state, executor, log)
        archive.finish_run(run_id)
    finally:
        executor.shutdown()
    best = archive.best(run_id, 3)
    for a in best:
        log(f"best: {a.name} fitness {a.fitness:+.4f} (attempt {a.id}, generation {a.generation})")
    return run_id


def _task_spec(config: DiscoveryConfig, root: Path, log) -> dict:
    if config.task == "digits":
        return {"name": "digits", "epochs": config.epochs}
    if config.judged:
        from podisco.tasks.judged import JudgedTask, prepare_spec

        if not config.train_config:
            raise PodiscoError(f"--task {config.task} needs --train-config YAML (model, data, schedule)")
        task = JudgedTask(
            config.task,
            config.train_config,
            config.eval_data,
            config.eval_limit,
            config.max_new_tokens,
            tuple(config.train_overrides),
        )
        return prepare_spec(task, root / "prepared", log)  # trusted: loads, checks and writes, before any candidate
    if config.task != "imdb":
        raise PodiscoError(f"unknown discovery task {config.task!r}: imdb, digits, chat, alpaca or tldr")
    from podisco.tasks.imdb import cache_root, prepare

    prepare(config.preset, config.cache_dir or None)  # trusted: builds the caches once, before any candidate
    cache = str(Path(config.cache_dir or cache_root()).resolve())
    return {"name": "imdb", "preset": config.preset, "cache_dir": cache, "steps": config.steps, "lr": config.lr}


def _gpus(config: DiscoveryConfig) -> tuple[str, ...]:
    """The GPUs jobs may use: only the judged tasks train models big enough to want them."""
    if not config.judged or config.gpus in ("", "none"):
        return ()
    if config.gpus != "auto":
        return tuple(g.strip() for g in config.gpus.split(",") if g.strip())
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count()))


def _readonly_paths(spec: dict) -> tuple[str, ...]:
    """What a bwrap'd worker reads besides the interpreter and the project: the task's prepared files."""
    if spec["name"] == "imdb":
        return (spec["cache_dir"],)
    if spec["name"] == "digits":
        return ()
    from podisco.cache import cache_home
    from podisco.tasks.judged import readonly_paths

    # the reference log-probs, written by the trusted DPO reference runs, read by the candidates
    reference_cache = cache_home().resolve() / "reference"
    reference_cache.mkdir(parents=True, exist_ok=True)
    return (*readonly_paths(spec), str(reference_cache))


def _job_env(config: DiscoveryConfig, spec: dict, gpus: bool = False) -> dict[str, str]:
    env = {
        "OMP_NUM_THREADS": str(config.threads),
        "MKL_NUM_THREADS": str(config.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    from podisco.cache import cache_home

    env["PODISCO_CACHE"] = str(cache_home().resolve())
    if gpus and os.environ.get("LD_LIBRARY_PATH"):  # where some machines keep libcuda; not a secret
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def _payload(state: RunState, seeds, **extra) -> dict:
    return {
        "task": state.task_spec,
        "beta": state.config.beta,
        "seeds": list(seeds),
        "threads": state.config.threads,
        "duplicate_distance": state.config.duplicate_distance,
        **extra,
    }


def _submit(executor, job: Job) -> Future:
    """Run ``job``, unless its worker already finished (the run was killed, or the judge failed, after it):
    then its result, kept by ``executors.execute`` outside the sandbox's folder, is used again."""
    result = finished_result(job)
    if result is None:
        return executor.submit(job)
    done: Future = Future()
    done.set_result(result)
    return done


# reference runs (DPO with the same seeds, for the paired tasks), cached across runs of the same settings
def _reference_key(state: RunState) -> str:
    return code_hash(json.dumps({"task": state.task_spec, "beta": state.config.beta}, sort_keys=True))


def _reference_path(state: RunState, seed: int) -> Path:
    return state.root / "references" / f"{_reference_key(state)}-seed{seed}.json"


def _ensure_references(state: RunState, executor, seeds) -> None:
    if state.config.task == "digits":
        return
    missing = []
    for seed in seeds:
        path = _reference_path(state, seed)
        if path.exists():
            state.references[str(seed)] = json.loads(path.read_text())
        else:
            missing.append(seed)

    def submit(seed: int):
        payload = _payload(state, [seed], loss="sigmoid", name="dpo")
        workdir = state.root / "work" / f"reference-{_reference_key(state)}-{seed}"
        return _submit(executor, Job(payload, str(workdir), trusted=True))

    # A reference run is trusted code: when it fails, the machine did (a killed worker, a full disk), so it is
    # tried again before the run gives up; a candidate's failure is the candidate's and is recorded instead.
    jobs = {submit(seed): (seed, 1) for seed in missing}
    while jobs:
        future = next(as_completed(jobs))
        (seed, attempt), result = jobs.pop(future), future.result()
        if result.get("status") != "evaluated":
            if attempt < REFERENCE_ATTEMPTS:
                jobs[submit(seed)] = (seed, attempt + 1)
                continue
            raise PodiscoError(f"the reference run (DPO, seed {seed}) failed {attempt} times: {result.get('error')}")
        row = result["per_seed"][0]
        if state.config.judged:
            row = judging.judged_rows(state, [row], "the DPO reference run")[0]
        path = _reference_path(state, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:  # a kill mid-write must not leave half a file for --resume
            tmp.write_text(json.dumps(row))
        state.references[str(seed)] = row


# generations
def _generation_zero(state: RunState, executor, log) -> None:
    """The seed archive, evaluated like any candidate (no dedup: they are the known losses)."""
    existing = {a.slot for a in state.archive.attempts(state.run_id) if a.generation == 0}
    for slot, (name, code) in enumerate(seeds_for(state.config.task).items()):
        if slot not in existing:
            state.archive.add_proposed(state.run_id, 0, slot, "seed", name, f"seed loss {name}", code)
    _dispatch(state, executor, 0, log)


def _generation(state: RunState, executor, proposer, generation: int, log) -> bool:
    """Fill the generation's missing slots, evaluate what is pending, feed back. False: the proposer ran dry."""
    archive, run = state.archive, state.run_id
    taken = {a.slot for a in archive.attempts(run) if a.generation == generation}
    meaning = fitness_mod.describe(state.config.task)
    exhausted = False
    for slot in range(state.config.population):
        if slot in taken:
            continue
        context = Context(run, state.config.task, generation, slot, state.config.population, archive, meaning)
        try:
            proposal = proposer.propose(context)
        except ReplayExhausted as error:
            log(f"proposer: {error}")
            exhausted = True
            break
        attempt = state.archive.attempt(_admit(state, generation, slot, proposer.kind, proposal))
        if attempt.status != "proposed":  # settled without a worker: say so as the dispatched ones do
            _log_attempt(state, attempt, log)
    _dispatch(state, executor, generation, log)
    attempts = [a for a in archive.attempts(run) if a.generation == generation]
    proposer.feedback(
        Context(run, state.config.task, generation, 0, state.config.population, archive, meaning), attempts
    )
    return not exhausted


def _admit(state: RunState, generation: int, slot: int, kind: str, proposal: Proposal) -> int:
    """Record a proposal; settle at once what needs no worker: unusable replies, gate rejections, same code."""
    archive, run = state.archive, state.run_id
    name, thought, code, error = proposal.name, proposal.thought, proposal.code, proposal.error
    if error is None and proposal.reply is not None:
        try:
            parsed = parse_proposal(proposal.reply)
            name, thought, code = parsed.name, parsed.thought, parsed.code
        except ProposalError as parse_error:
            name, thought, error = (
                "(unparsed reply)",
                proposal.reply[:20000],
                f"the reply could not be used: {parse_error}",
            )
    if error is None:
        try:
            check_code(code)
        except GateError as gate_error:
            error = f"rejected by the static gate: {gate_error}"
    attempt_id = archive.add_proposed(
        run, generation, slot, kind, name or "(none)", thought, code, proposal.parents, proposal.llm_tokens
    )
    if error is not None:
        status = "failed" if proposal.error else "invalid"
        archive.finish(attempt_id, status, error=error)
        return attempt_id
    same = [a for a in archive.attempts(run) if a.code_hash == code_hash(code) and a.id != attempt_id]
    settled = [a for a in same if a.status in ("evaluated", "duplicate")]
    rejected = [a for a in same if a.status == "invalid"]
    if rejected and not settled:  # the same code fails the same way: no worker needed to say so again
        first = rejected[0]
        reason = f"the same code as attempt {first.id} ({first.name}): {first.error}"
        archive.finish(attempt_id, "invalid", error=reason)
    elif settled:
        archive.finish(
            attempt_id,
            "duplicate",
            duplicate_of=f"attempt:{settled[0].id} {settled[0].name}",
            fitness=settled[0].fitness,
            error="the same code as an earlier attempt",
        )
    return attempt_id


def _known_fingerprints(state: RunState) -> dict[str, list[float]]:
    evaluated = state.archive.attempts(state.run_id, "evaluated")
    return {f"attempt:{a.id} {a.name}": a.fingerprint for a in evaluated if a.fingerprint}


def _registry_measured(state: RunState) -> list[str]:
    """Registered losses whose fitness this run has: the seeds (dpo -> sigmoid, slic -> hinge, ...)."""
    from podisco.losses.registry import get_spec

    names = []
    for a in state.archive.attempts(state.run_id, "evaluated"):
        if a.proposer == "seed" and state.config.task != "digits":
            names.append(get_spec(a.name).name)
    return names


def _stage_threshold(state: RunState) -> float | None:
    """Stage 1 promotes a candidate within ``promote_margin`` of the best fully evaluated attempt."""
    full = [
        a
        for a in state.archive.attempts(state.run_id, "evaluated")
        if a.fitness is not None and len(a.seeds or []) >= len(state.config.seeds)
    ]
    if not full or state.config.stage1_seeds >= len(state.config.seeds):
        return None
    if state.config.judged:  # the worker cannot score its own answers (no judge in the sandbox): no stages
        return None
    return max(a.fitness for a in full) - state.config.promote_margin


def _dispatch(state: RunState, executor, generation: int, log) -> None:
    pending = [a for a in state.archive.attempts(state.run_id, "proposed") if a.generation == generation]
    if not pending:
        return
    seed_stage = generation == 0
    threshold = None if seed_stage else _stage_threshold(state)
    known = {} if seed_stage else _known_fingerprints(state)
    futures = {}
    for a in pending:
        payload = _payload(
            state,
            state.config.seeds,
            name=a.name,
            code=a.code,
            known=known,
            registry_measured=_registry_measured(state),
            dedup=not seed_stage,
            reference=state.references,
            stage1_seeds=state.config.stage1_seeds,
            stage_threshold=threshold,
        )
        job = Job(payload, str(state.root / "work" / state.run_id / f"attempt-{a.id}"))
        futures[_submit(executor, job)] = a
    for future in as_completed(futures):
        attempt = futures[future]
        record(state, attempt, future.result())
        _log_attempt(state, state.archive.attempt(attempt.id), log)


def _log_attempt(state: RunState, a: Attempt, log) -> None:
    best = state.archive.best(state.run_id)
    best_text = f" | best {best[0].fitness:+.4f} ({best[0].name})" if best else ""
    score = f" fitness {a.fitness:+.4f}" if a.fitness is not None else ""
    why = f": {(a.error or '').splitlines()[0][:120]}" if a.status in ("invalid", "failed", "duplicate") else ""
    log(f"[gen {a.generation} slot {a.slot}] {a.name}: {a.status}{score}{why}{best_text}")


def _reevaluate(state: RunState, executor, log) -> None:
    """The top candidates with more seeds (their first seeds are reused), before the run reports them."""
    config = state.config
    done = {r["attempt_id"] for r in state.archive.reevaluations(state.run_id)}
    top = [a for a in state.archive.best(state.run_id, config.reevaluate_top) if a.id not in done]
    extra = [s for s in config.reevaluate_seeds if s not in config.seeds]
    if not top or not extra:
        return
    _ensure_references(state, executor, extra)
    futures = {}
    for a in top:
        new_seeds = [s for s in config.reevaluate_seeds if s not in (a.seeds or [])]
        payload = _payload(state, new_seeds, name=a.name, code=a.code, dedup=False)
        futures[_submit(executor, Job(payload, str(state.root / "work" / state.run_id / f"reeval-{a.id}")))] = a
    for future in as_completed(futures):
        a, result = futures[future], future.result()
        if result.get("status") != "evaluated":
            log(f"re-evaluation of {a.name} failed: {(result.get('error') or '').splitlines()[:1]}")
            continue
        new_rows = result["per_seed"]
        if state.config.judged:
            new_rows = judging.judged_rows(state, new_rows, f"the re-evaluation of {a.name}")
        rows = a.metrics.get("per_seed", []) + new_rows
        mean, stderr = run_fitness(state, rows)
        state.archive.add_reevaluation(a.id, [r["seed"] for r in rows], mean, stderr, {"per_seed": rows})
        log(f"re-evaluated {a.name} over {len(rows)} seeds: {mean:+.4f} +- {stderr or 0:.4f} (SE)")
