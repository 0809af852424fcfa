"""The discovery loop: propose, parse, gate, evaluate in the sandbox, record, feed back; resumable.

A candidate's way (ARCHITECTURE.md): proposer -> ``parse.parse_proposal`` (LLM replies) -> ``gate.check_code``
-> archive row ``proposed`` -> worker job (battery, fingerprint and dedup, training and evaluation on the
task, staged) -> archive row final -> feedback to the proposer. The parent never executes candidate code.
Generation 0 evaluates the seed losses (the paper's DPO, SLiC, IPO, KTO); after the last generation the best
candidates are re-evaluated with more seeds.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import asdict, replace
from pathlib import Path

from podisco.discovery.archive import Archive, Attempt, code_hash
from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.boundary.racing import Race, pooled_se, prior_sd
from podisco.discovery.boundary.sandbox import Limits, detect_isolation, require_isolation
from podisco.discovery.config import DiscoveryConfig, RunState, config_from_dict
from podisco.discovery.confirm import verdict_lines
from podisco.discovery.dispatch import describe_deadline, job_seconds, make_job, submit, typical_seconds
from podisco.discovery.executors import (
    ExecutionSettings,
    Executor,
    LocalExecutor,
    RayExecutor,
    default_workers,
)
from podisco.discovery.heldout import confirm_top
from podisco.discovery.proposers import prompts
from podisco.discovery.proposers.base import Context, Proposal, Proposer, ReplayExhausted
from podisco.discovery.proposers.parse import ProposalError, parse_proposal
from podisco.discovery.references import tune_baseline
from podisco.discovery.results import record, seed_differences
from podisco.discovery.transfer import sweep_beta
from podisco.errors import PodiscoError
from podisco.progress import Console
from podisco.tasks.base import get_task, source_paths, task_options, trains_on_several_processes
from podisco.training.config import ConfigError, save_yaml


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def make_proposer(config: DiscoveryConfig) -> Proposer:
    from podisco.discovery.proposers.evolve import EvolveProposer
    from podisco.discovery.proposers.llm import LLMProposer
    from podisco.discovery.proposers.replay import ReplayProposer
    from podisco.llm_client import ChatClient, llm_configured, settings_from_env

    section = config.proposer
    kind = section.kind
    settings = replace(
        settings_from_env(section.llm_model or None, section.llm_base_url or None),
        temperature=section.llm_temperature,
        max_tokens=section.llm_max_tokens or None,
        timeout_s=section.llm_timeout_s,
        max_retries=section.llm_retries,
    )
    if section.local_model:  # llama.cpp on 127.0.0.1, started at the first proposal, stopped with the run
        from podisco.local_llm import LocalLLMServer, check_gguf, require_local_llm

        if kind not in ("auto", "llm"):
            raise PodiscoError(f"--local-model needs --proposer llm, not {kind}")
        require_local_llm()
        # 8192 tokens of context: the paper-mode conversation grows by a reply and its feedback per proposal
        server = LocalLLMServer(check_gguf(section.local_model), ctx_size=8192)
        return LLMProposer(mode=section.prompt_mode, local=server, settings=settings)
    if kind == "auto":  # an LLM only when one was named: a stray OPENAI_API_KEY must not start spending
        named = section.llm_model or section.llm_base_url or os.environ.get("PODISCO_LLM_MODEL")
        kind = "llm" if named and llm_configured(settings) else "evolve"
    if kind == "llm":
        return LLMProposer(ChatClient(settings), section.prompt_mode)
    if kind == "replay":
        if not section.replay_file:
            raise PodiscoError("--proposer replay needs --replay FILE (a JSONL of recorded replies)")
        return ReplayProposer(section.replay_file)
    if kind == "evolve":
        return EvolveProposer(section.seed)
    raise PodiscoError(f"unknown proposer {kind!r}: auto, llm, evolve or replay")


def run_discovery(
    config: DiscoveryConfig,
    root: str | Path = "runs/discovery",
    run_id: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    proposer: Proposer | None = None,
    progress: bool = False,
) -> str:
    """Run (or ``resume``) a discovery run; returns its id. ``progress`` shows one progress line with an ETA
    per long step (preparing the task, the reference runs, each generation, the re-evaluation)."""
    root = Path(root)
    log = Console(log, progress)
    archive = Archive(root / "archive.sqlite")
    if resume:
        config = _resumed_config(archive, run_id, config)
    config.validate()
    task = get_task(config.task.name, config.task.options)
    # resolved: every option typed and filled in, a user's file by its absolute path (resume from anywhere)
    config.task.name, config.task.options = task.reference, task_options(task)
    proposer = proposer or make_proposer(config)
    execution = config.execution
    isolation = detect_isolation() if execution.isolation == "auto" else execution.isolation
    if proposer.kind in ("llm", "replay"):
        require_isolation(isolation, execution.allow_weak_isolation)
    with log.step(f"preparing the {task.name} task"):  # trusted: caches, checked data, a judge, before any run
        spec = task.prepare(root, log)
    if not resume:
        run_id = run_id or new_run_id()
        archive.create_run(run_id, asdict(config), task.name, task.version, isolation)
    assert run_id is not None
    save_yaml(config, root / "configs" / f"{run_id}.yaml")  # the resolved config, beside the archive
    log(f"run {run_id}: task {task.name} v{task.version}, proposer {proposer.kind}, isolation {isolation}")
    search = config.search
    state = RunState(
        config,
        run_id,
        archive,
        root,
        task,
        spec,
        search.seeds or task.default_seeds,
        search.reevaluate_seeds or task.default_reevaluate_seeds,
        _baseline_grid(task, search),
    )
    limits = task.limits()
    gpus, per_job = limits.gpus, execution.gpus_per_job
    if per_job > 1 and not trains_on_several_processes(task):
        raise ConfigError(f"execution.gpus_per_job: the {task.name} task trains each seed in one process")
    if gpus:
        log(f"GPUs {', '.join(gpus)}: {per_job} per job")
    wall = execution.wall_s or limits.wall_s
    state.wall_cap_s = wall
    settings = ExecutionSettings(
        isolation=isolation,
        # GPU jobs: no address-space limit (CUDA maps far more than it uses); CPU time scales with the wall time
        limits=Limits(wall_s=wall, cpu_s=int(max(3600, 8 * wall)), memory_mb=0 if gpus else execution.memory_mb),
        readonly_paths=(*task.readonly_paths(spec), *source_paths(spec), *_accelerate_config(execution)),
        env=_job_env(execution.threads, bool(gpus)),
        gpus=gpus,
        gpus_per_job=per_job,
    )
    workers = execution.workers or (len(gpus) // per_job if gpus else default_workers(execution.threads * per_job))
    executor: Executor = (
        RayExecutor(execution.ray_address, settings, execution.threads)
        if execution.executor == "ray"
        else LocalExecutor(workers, settings)
    )
    try:
        tune_baseline(state, executor, log)
        _generation_zero(state, executor, log)
        log(describe_deadline(state))
        for generation in range(1, search.generations + 1):
            if not _generation(state, executor, proposer, generation, log):
                break
        confirm_top(state, executor, log)
        sweep_beta(state, executor, log)
        archive.finish_run(run_id)
    finally:
        executor.shutdown()
        close = getattr(proposer, "close", None)
        if close is not None:  # a local LLM server the proposer started
            close()
    _log_outcome(state, log)
    return run_id


def _log_outcome(state: RunState, log: Console) -> None:
    """The final lines: the held-out verdict first, then the ranking (held-out numbers wherever they exist)."""
    for line in verdict_lines((state.archive.run(state.run_id) or {}).get("verdict")):
        log(line)
    for a in state.archive.best(state.run_id, 3):
        log(f"best in the search: {a.name} fitness {a.fitness:+.4f} (attempt {a.id}, generation {a.generation})")


def _baseline_grid(task, search) -> tuple[float, ...]:
    """The β grid DPO is tuned over: the config's, else the task's default multiples of the run's β (the
    judged tasks default to the run's β alone: one 7B training per β and seed is the user's call)."""
    if search.baseline_betas:
        grid = set(search.baseline_betas) | {search.beta}
    else:
        grid = {search.beta * m for m in getattr(task, "baseline_multiples", (1.0,))}
    return tuple(sorted(round(b, 12) for b in grid))


def _resumed_config(archive: Archive, run_id: str | None, given: DiscoveryConfig) -> DiscoveryConfig:
    """The run's own config; more generations may be asked for, and options the task names as replaceable
    (a judge that failed, say) are taken from ``given``."""
    stored = archive.run(run_id or "")
    if stored is None:
        raise PodiscoError(f"no run {run_id!r} to resume in {archive.path}")
    config = config_from_dict(stored["config"])
    config.search.generations = max(config.search.generations, given.search.generations)
    replaceable = getattr(get_task(config.task.name, config.task.options), "replaceable_on_resume", ())
    for key in replaceable:
        if given.task.options.get(key):
            config.task.options[key] = given.task.options[key]
    return config


def _accelerate_config(execution) -> tuple[str, ...]:
    return (str(Path(execution.accelerate_config).resolve()),) if execution.accelerate_config else ()


def _job_env(threads: int, gpus: bool = False) -> dict[str, str]:
    from podisco.cache import cache_home

    env = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # the worker's console is a log nobody watches live: no progress bars or advisory warnings in it
        "TRANSFORMERS_VERBOSITY": "error",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_VERBOSITY": "error",
        "DATASETS_VERBOSITY": "error",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "ACCELERATE_LOG_LEVEL": "error",  # "Removed shared tensor ... while saving"
        "PODISCO_CACHE": str(cache_home().resolve()),
    }
    if gpus and os.environ.get("LD_LIBRARY_PATH"):  # where some machines keep libcuda; not a secret
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


# generations
def _generation_zero(state: RunState, executor: Executor, log: Console) -> None:
    """The seed archive, evaluated like any candidate (no dedup: they are the known losses)."""
    existing = {a.slot for a in state.archive.attempts(state.run_id) if a.generation == 0}
    for slot, (name, code) in enumerate(state.task.seed_archive().items()):
        if slot not in existing:
            state.archive.add_proposed(state.run_id, 0, slot, "seed", name, f"seed loss {name}", code)
    _dispatch(state, executor, 0, log)
    if state.reference_seconds is None:  # a task without reference runs (digits): the seed losses' time
        seeds = [a for a in state.archive.attempts(state.run_id, "evaluated") if a.generation == 0]
        state.reference_seconds = typical_seconds([job_seconds(a.timings, len(a.seeds or [])) for a in seeds])


def _generation(state: RunState, executor: Executor, proposer: Proposer, generation: int, log: Console) -> bool:
    """Fill the generation's slots, evaluate, feed back; then refill the slots that duplicates took (a
    duplicate trains nothing, so it should not use up the generation), up to ``search.refills`` × population
    proposals more. False: the proposer ran dry."""
    archive, run = state.archive, state.run_id
    population = state.config.search.population
    cap = population * (1 + state.config.search.refills)  # proposals a generation may make
    taken = {a.slot for a in archive.attempts(run) if a.generation == generation}
    batch, first = [slot for slot in range(population) if slot not in taken], True
    while True:
        exhausted = _propose(state, proposer, generation, batch, log)
        _dispatch(state, executor, generation, log)
        attempts = [a for a in archive.attempts(run) if a.generation == generation]
        # the first batch reports the whole generation (a resumed run may have proposed some before), a refill
        # only itself
        finished, first = (attempts if first else [a for a in attempts if a.slot in batch]), False
        context = Context(run, state.task, generation, 0, population, archive, _baseline_text(state))
        proposer.feedback(context, finished)
        missing = population - sum(1 for a in attempts if a.status != "duplicate")
        if exhausted or missing <= 0 or len(attempts) >= cap:
            return not exhausted
        batch = list(range(len(attempts), len(attempts) + min(missing, cap - len(attempts))))
        log(f"gen {generation}: {missing} of {population} slots went to duplicates; proposing again")


def _propose(state: RunState, proposer: Proposer, generation: int, slots: list[int], log: Console) -> bool:
    """Admit one proposal per slot; True when the proposer ran dry."""
    population = state.config.search.population
    for slot in slots:
        context = Context(state.run_id, state.task, generation, slot, population, state.archive, _baseline_text(state))
        try:
            proposal = proposer.propose(context)
        except ReplayExhausted as error:
            log(f"proposer: {error}")
            return True
        attempt = state.archive.attempt(_admit(state, generation, slot, proposer.kind, proposal))
        if attempt.status != "proposed":  # settled without a worker: say so as the dispatched ones do
            _log_attempt(state, attempt, log)
    return False


def _baseline_text(state: RunState) -> str:
    return state.baseline.describe() if state.baseline else ""


def _admit(state: RunState, generation: int, slot: int, kind: str, proposal: Proposal) -> int:
    """Record a proposal; settle at once what needs no worker: unusable replies, gate rejections, same code."""
    archive, run = state.archive, state.run_id
    name, thought, code, error = proposal.name, proposal.thought, proposal.code, proposal.error
    if error is None and proposal.reply is not None:
        try:
            parsed = parse_proposal(proposal.reply)
            name, thought, code = parsed.name, parsed.thought, parsed.code
        except ProposalError as parse_error:
            cut = (proposal.llm_tokens or {}).get("finish_reason") == "length"
            hint = " (the reply was cut off at the token limit: raise --llm-max-tokens)" if cut else ""
            name, thought, error = (
                "(unparsed reply)",
                proposal.reply[:20000],
                f"the reply could not be used: {parse_error}{hint}",
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
        reason = f"it is identical to attempt {first.id} ({first.name}), which could not be used either: {first.error}"
        archive.finish(attempt_id, "invalid", error=reason)
    elif settled:
        archive.finish(
            attempt_id,
            "duplicate",
            duplicate_of=f"attempt:{settled[0].id} {settled[0].name}",
            fitness=settled[0].fitness,
            error=prompts.SAME_CODE,
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
        if a.proposer == "seed" and state.task.kind == "preference":
            names.append(get_spec(a.name).name)
    return names


def _stage_threshold(state: RunState) -> float | None:
    """Stage 1 promotes a candidate within ``promote_margin`` of the best fully evaluated attempt."""
    search = state.config.search
    full = _fully_evaluated(state)
    if not full or search.stage1_seeds >= len(state.seeds):
        return None
    if not state.task.staged:  # e.g. a judged task: the worker cannot score its own answers
        return None
    return max(a.fitness for a in full) - search.promote_margin


def _race(state: RunState) -> dict[str, float] | None:
    """Racing's terms from the archive: the incumbent (best fully evaluated attempt) and the per-seed noise of
    the attempts that ran every seed; None (the fixed stage 1 then) when racing is off or nothing is known."""
    search = state.config.search
    full = _fully_evaluated(state)
    if not search.racing or not full or len(state.seeds) < 2 or not state.task.staged:
        return None
    differences = {a.id: seed_differences(state, a.metrics.get("per_seed") or [], state.references) for a in full}
    noise = prior_sd(list(differences.values()))
    if noise is None:
        return None
    best = max(full, key=lambda a: a.fitness)
    return Race(best.fitness, pooled_se(differences[best.id], noise), noise, z=search.racing_z).to_json()


def _fully_evaluated(state: RunState) -> list[Attempt]:
    return [
        a
        for a in state.archive.attempts(state.run_id, "evaluated")
        if a.fitness is not None and len(a.seeds or []) >= len(state.seeds)
    ]


def _dispatch(state: RunState, executor: Executor, generation: int, log: Console) -> None:
    pending = [a for a in state.archive.attempts(state.run_id, "proposed") if a.generation == generation]
    if not pending:
        return
    seed_stage = generation == 0
    race = None if seed_stage else _race(state)
    threshold = None if seed_stage or race is not None else _stage_threshold(state)
    known = {} if seed_stage else _known_fingerprints(state)
    futures = {}
    for a in pending:
        job = make_job(
            state,
            state.seeds,
            name=a.name,
            code=a.code,
            known=known,
            registry_measured=tuple(_registry_measured(state)),
            dedup=not seed_stage,
            reference=state.references,
            baseline_grid=state.baseline_grid if state.baseline else (),
            stage1_seeds=state.config.search.stage1_seeds,
            stage_threshold=threshold,
            race=race,
        )
        futures[submit(executor, job, _workdir(state, a))] = (a, None)
    label = "seed losses" if seed_stage else f"gen {generation}/{state.config.search.generations}"
    waiting: dict[int, dict] = {}  # attempt id -> its results so far (frontier fitness: one per grid β)
    with log.step(label, len(futures), "jobs") as progress:
        while futures:
            future = next(as_completed(futures))
            (attempt, beta), result = futures.pop(future), future.result()
            if beta is None and _wants_grid(state, result):  # promoted: now it pays for the rest of the grid
                waiting[attempt.id] = {"result": result, "grid": {}}
                for other in _other_betas(state):
                    job = make_job(state, state.seeds, beta=other, name=attempt.name, code=attempt.code)
                    futures[submit(executor, job, _workdir(state, attempt, other))] = (attempt, other)
                continue
            grid = None
            if beta is not None:
                waiting[attempt.id]["grid"][beta] = result
                if len(waiting[attempt.id]["grid"]) < len(_other_betas(state)):
                    continue
                result, grid = waiting[attempt.id]["result"], waiting.pop(attempt.id)["grid"]
            record(state, attempt, result, grid)
            _log_attempt(state, state.archive.attempt(attempt.id), log)
            progress.advance(note=attempt.name)


def _workdir(state: RunState, attempt: Attempt, beta: float | None = None) -> Path:
    suffix = "" if beta is None else f"-beta{beta:g}"
    return state.root / "work" / state.run_id / f"attempt-{attempt.id}{suffix}"


def _other_betas(state: RunState) -> list[float]:
    return [b for b in state.baseline_grid if b != state.config.search.beta]


def _wants_grid(state: RunState, result: dict) -> bool:
    """Frontier fitness: a candidate that ran every search seed (it passed stage 1) is trained at the grid too."""
    return (
        state.config.search.fitness == "frontier"
        and state.task.paired
        and bool(_other_betas(state))
        and result.get("status") == "evaluated"
        and result.get("promoted", True)
        and len(result.get("per_seed", [])) == len(state.seeds)
    )


def _log_attempt(state: RunState, a: Attempt, log) -> None:
    best = state.archive.best(state.run_id)
    best_text = f" | best {best[0].fitness:+.4f} ({best[0].name})" if best else ""
    score = f" fitness {a.fitness:+.4f}" if a.fitness is not None else ""
    why = f": {(a.error or '').splitlines()[0][:120]}" if a.status in ("invalid", "failed", "duplicate") else ""
    label = f" [{a.rescaling}]" if a.rescaling and a.status != "duplicate" else ""
    log(f"[gen {a.generation} slot {a.slot}] {a.name}: {a.status}{score}{label}{why}{best_text}")
