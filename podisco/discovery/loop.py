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
from concurrent.futures import as_completed
from dataclasses import asdict
from pathlib import Path

from podisco.cache import atomic_output
from podisco.discovery import fitness as fitness_mod
from podisco.discovery.archive import Archive, Attempt, code_hash
from podisco.discovery.config import DiscoveryConfig, RunState, config_from_dict
from podisco.discovery.executors import ExecutionSettings, Job, LocalExecutor, RayExecutor, default_workers
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
        generations = config.generations
        config = config_from_dict(stored["config"])
        config.generations = max(config.generations, generations)
    proposer = proposer or make_proposer(config)
    isolation = detect_isolation() if config.isolation == "auto" else config.isolation
    if proposer.kind in ("llm", "replay"):
        require_isolation(isolation, config.allow_weak_isolation)
    name, version = config.task_version()
    if not resume:
        run_id = run_id or new_run_id()
        archive.create_run(run_id, asdict(config), name, version, isolation)
    log(f"run {run_id}: task {name} v{version}, proposer {proposer.kind}, isolation {isolation}")
    state = RunState(config, run_id, archive, root, _task_spec(config))
    settings = ExecutionSettings(
        isolation=isolation,
        limits=Limits(wall_s=config.wall_s, memory_mb=config.memory_mb),
        readonly_paths=tuple(p for p in [state.task_spec.get("cache_dir")] if p),
        env=_job_env(config, state.task_spec),
    )
    workers = config.workers or default_workers(config.threads)
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


def _task_spec(config: DiscoveryConfig) -> dict:
    if config.task == "digits":
        return {"name": "digits", "epochs": config.epochs}
    if config.task != "imdb":
        raise PodiscoError(f"unknown discovery task {config.task!r}: imdb or digits")
    from podisco.tasks.imdb import cache_root, prepare

    prepare(config.preset, config.cache_dir or None)  # trusted: builds the caches once, before any candidate
    cache = str(Path(config.cache_dir or cache_root()).resolve())
    return {"name": "imdb", "preset": config.preset, "cache_dir": cache, "steps": config.steps, "lr": config.lr}


def _job_env(config: DiscoveryConfig, spec: dict) -> dict[str, str]:
    env = {
        "OMP_NUM_THREADS": str(config.threads),
        "MKL_NUM_THREADS": str(config.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    from podisco.cache import cache_home

    env["PODISCO_CACHE"] = str(cache_home().resolve())
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


# reference runs (IMDb: DPO with the same seeds), cached across runs of the same settings
def _reference_path(state: RunState, seed: int) -> Path:
    key = code_hash(json.dumps({"task": state.task_spec, "beta": state.config.beta}, sort_keys=True))
    return state.root / "references" / f"{key}-seed{seed}.json"


def _ensure_references(state: RunState, executor, seeds) -> None:
    if state.config.task != "imdb":
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
        return executor.submit(Job(payload, str(state.root / "work" / f"reference-{seed}"), trusted=True))

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
        futures[executor.submit(job)] = a
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
        futures[executor.submit(Job(payload, str(state.root / "work" / state.run_id / f"reeval-{a.id}")))] = a
    for future in as_completed(futures):
        a, result = futures[future], future.result()
        if result.get("status") != "evaluated":
            log(f"re-evaluation of {a.name} failed: {(result.get('error') or '').splitlines()[:1]}")
            continue
        rows = a.metrics.get("per_seed", []) + result["per_seed"]
        mean, stderr = run_fitness(state, rows)
        state.archive.add_reevaluation(a.id, [r["seed"] for r in rows], mean, stderr, {"per_seed": rows})
        log(f"re-evaluated {a.name} over {len(rows)} seeds: {mean:+.4f} +- {stderr or 0:.4f} (SE)")
