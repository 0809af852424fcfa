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
from dataclasses import asdict, replace
from pathlib import Path

from podisco.discovery.archive import Archive, code_hash
from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.boundary.sandbox import Limits, detect_isolation, require_isolation
from podisco.discovery.candidates import CandidateJobs, log_attempt
from podisco.discovery.config import DiscoveryConfig, RunState, config_from_dict
from podisco.discovery.confirm import verdict_lines
from podisco.discovery.dispatch import accelerate_config, describe_deadline, job_seconds, typical_seconds
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
from podisco.discovery.references import prepare_stage0, tune_baseline
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
        readonly_paths=(*task.readonly_paths(spec), *source_paths(spec), *filter(None, [accelerate_config(execution)])),
        env=_job_env(execution.threads, bool(gpus)),
        gpus=gpus,
        gpus_per_job=per_job,
        warm_workers=execution.warm_workers,
        slots_folder=str(root / "work" / run_id / "slots"),
    )
    workers = execution.workers or (len(gpus) // per_job if gpus else default_workers(execution.threads * per_job))
    executor: Executor = (
        RayExecutor(execution.ray_address, settings, execution.threads)
        if execution.executor == "ray"
        else LocalExecutor(workers, settings)
    )
    try:
        tune_baseline(state, executor, log)
        prepare_stage0(state, executor, log)
        _generation_zero(state, executor, log)
        log(describe_deadline(state))
        _search(state, executor, proposer, log)
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
    pending = [a for a in state.archive.attempts(state.run_id, "proposed") if a.generation == 0]
    jobs = CandidateJobs(state, executor, log)
    for attempt in pending:
        jobs.submit(attempt)
    with log.step("seed losses", len(pending), "jobs") as progress:
        while jobs:
            finished = jobs.finish_next()
            if finished is not None:
                progress.advance(note=finished.name)
    if state.reference_seconds is None:  # a task without reference runs (digits): the seed losses' time
        seeds = [a for a in state.archive.attempts(state.run_id, "evaluated") if a.generation == 0]
        state.reference_seconds = typical_seconds([job_seconds(a.timings, len(a.seeds or [])) for a in seeds])


def _search(state: RunState, executor: Executor, proposer: Proposer, log: Console) -> None:
    """Generations 1..G. A generation takes ``population`` proposals that are not behavioural duplicates (a
    duplicate trains nothing, so its slot is proposed again, up to ``refills`` x population proposals).

    Steady state (``search.steady_state``, as OpenEvolve and ShinkaEvolve): a proposal whenever a worker is
    free, into the earliest generation with room, so no worker waits for a generation's slowest job; the
    generation is only a counter for lineage and feedback. Off: the paper's protocol, a generation's proposals
    all at once, then the next only when every one has finished. Either way the proposer hears the outcomes
    that finished since it last heard, in one batch, before its next proposal (and once at the end)."""
    archive, run, search = state.archive, state.run_id, state.config.search
    jobs = CandidateJobs(state, executor, log)
    for attempt in archive.attempts(run, "proposed"):  # a resumed run: proposed before the stop, never finished
        if attempt.generation >= 1:
            jobs.submit(attempt)
    current = _open_generation(state, search.steady_state) or search.generations + 1
    fed = {a.id for a in archive.attempts(run) if 1 <= a.generation < current and a.status != "proposed"}
    exhausted = False
    with log.step("search", search.generations * search.population, "candidates") as progress:
        while True:
            while not exhausted and (not search.steady_state or jobs.attempts() < executor.workers):
                generation = _open_generation(state, search.steady_state)
                if generation is None:
                    break
                _feed_back(state, proposer, fed, generation)
                slot = sum(1 for a in archive.attempts(run) if a.generation == generation)
                context = Context(run, state.task, generation, slot, search.population, archive, _baseline_text(state))
                try:
                    proposal = proposer.propose(context)
                except ReplayExhausted as error:
                    log(f"proposer: {error}")
                    exhausted = True
                    break
                attempt = archive.attempt(_admit(state, generation, slot, proposer.kind, proposal))
                if attempt.status == "proposed":
                    jobs.submit(attempt)
                else:  # settled without a worker: say so as the dispatched ones do
                    log_attempt(state, attempt, log)
                    progress.advance(note=attempt.name)
            if not jobs:
                break
            finished = jobs.finish_next()
            if finished is not None:
                progress.advance(note=finished.name)
    _feed_back(state, proposer, fed, search.generations)


def _open_generation(state: RunState, steady: bool) -> int | None:
    """The earliest generation with room for a proposal: fewer than ``population`` proposals that are not
    duplicates (running ones count as not), and fewer than its cap. Without the steady state a later generation
    opens only once the earlier ones are full and finished: a generation's proposals are made at once and run
    side by side, and a slot that a duplicate took is proposed again as soon as that is known."""
    search = state.config.search
    cap = search.population * (1 + search.refills)
    attempts = state.archive.attempts(state.run_id)
    for generation in range(1, search.generations + 1):
        mine = [a for a in attempts if a.generation == generation]
        running = any(a.status == "proposed" for a in mine)
        has_room = sum(a.status != "duplicate" for a in mine) < search.population and len(mine) < cap
        if has_room:
            return generation
        if not steady and running:
            return None
    return None


def _feed_back(state: RunState, proposer: Proposer, fed: set[int], generation: int) -> None:
    """Tell the proposer the outcomes that finished since it last heard (generation 0, the seeds, it is shown
    otherwise)."""
    archive = state.archive
    news = [
        a for a in archive.attempts(state.run_id) if a.generation >= 1 and a.status != "proposed" and a.id not in fed
    ]
    if news:
        population = state.config.search.population
        proposer.feedback(
            Context(state.run_id, state.task, generation, 0, population, archive, _baseline_text(state)), news
        )
        fed.update(a.id for a in news)


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
