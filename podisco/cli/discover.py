"""``podisco discover``: a DiscoveryConfig from ``--config run.yaml``, then flags, then ``--key=value`` overrides."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from podisco.cli.common import (
    DEFAULT_ROOT,
    beta,
    existing_file,
    non_negative_int,
    positive_floats,
    positive_int,
    seeds,
)
from podisco.errors import PodiscoError

# flag -> the config key it sets; a flag left out keeps the YAML's (or the default) value
_FLAGS = {
    "task": "task.name",
    "beta": "search.beta",
    "generations": "search.generations",
    "population": "search.population",
    "refills": "search.refills",
    "steady_state": "search.steady_state",
    "seeds": "search.seeds",
    "reevaluate_seeds": "search.reevaluate_seeds",
    "fitness": "search.fitness",
    "racing": "search.racing",
    "stage0": "search.stage0",
    "stage0_fraction": "search.stage0_fraction",
    "transfer": "search.transfer",
    "transfer_betas": "search.transfer_betas",
    "transfer_seeds": "search.transfer_seeds",
    "proposer": "proposer.kind",
    "prompt_mode": "proposer.prompt_mode",
    "model": "proposer.llm_model",
    "base_url": "proposer.llm_base_url",
    "llm_temperature": "proposer.llm_temperature",
    "llm_max_tokens": "proposer.llm_max_tokens",
    "llm_timeout": "proposer.llm_timeout_s",
    "llm_retries": "proposer.llm_retries",
    "local_model": "proposer.local_model",
    "replay": "proposer.replay_file",
    "seed": "proposer.seed",
    "executor": "execution.executor",
    "address": "execution.ray_address",
    "workers": "execution.workers",
    "gpus_per_job": "execution.gpus_per_job",
    "accelerate_config": "execution.accelerate_config",
    "threads": "execution.threads",
    "warm_workers": "execution.warm_workers",
    "isolation": "execution.isolation",
    "allow_weak_isolation": "execution.allow_weak_isolation",
    "wall_s": "execution.wall_s",
}
# flags that are a task's own options (task.options.NAME); a task without that option refuses it by name
_TASK_OPTION_FLAGS = (
    "preset",
    "cache_dir",
    "steps",
    "data_dir",
    "epochs",
    "train_config",
    "eval_data",
    "eval_limit",
    "max_new_tokens",
    "judge_model",
    "judge_base_url",
    "judge_cache",
    "gpus",
)


def _text(value) -> str:
    """A flag's parsed value as an override's text (a tuple of seeds as 0,1,2)."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def discover_config(args: argparse.Namespace, overrides: list[str]):
    """The run's config: defaults < ``--config`` YAML < flags < ``--key=value`` overrides, type-checked."""
    from podisco.discovery.config import DiscoveryConfig
    from podisco.training.config import ConfigError, load_config, override

    flags = [f"{key}={_text(getattr(args, flag))}" for flag, key in _FLAGS.items() if getattr(args, flag) is not None]
    existing_file(args.config, "--config")
    config = load_config(DiscoveryConfig, args.config, flags)
    config.task.options.update({f: getattr(args, f) for f in _TASK_OPTION_FLAGS if getattr(args, f) is not None})
    if args.train_override:
        config.task.options["train_overrides"] = list(args.train_override)
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"unrecognized argument {item!r}; overrides look like --search.generations=5")
        override(config, item[2:])
    config.validate()
    return config


def cmd_discover(args: argparse.Namespace, overrides: list[str]) -> int:
    from podisco.discovery.loop import run_discovery

    if args.resume and not args.run:
        raise PodiscoError("--resume needs --run RUN_ID (see podisco runs list)")
    config = discover_config(args, overrides)
    # a run's lines as they happen, also into a log file (`podisco discover > run.log`), not a buffer at a time
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # a progress line with an ETA where someone watches a terminal; a log gets the per-attempt lines only
    run_id = run_discovery(config, args.root, args.run, args.resume, progress=sys.stderr.isatty())
    print(f"archive: {Path(args.root) / 'archive.sqlite'} (run {run_id}); config: {args.root}/configs/{run_id}.yaml")
    print(f"next: podisco runs show {run_id}   |   podisco export {run_id} --best -o loss.py")
    return 0


def add_discover_command(commands: argparse._SubParsersAction) -> None:
    from podisco.cli.judged import add_judged_task_arguments

    p = commands.add_parser(
        "discover",
        help="LLM-driven (or evolutionary) discovery of new losses",
        description="LLM-driven (or evolutionary) discovery of new losses. Settings come from --config YAML, then "
        "the flags below, then type-checked overrides such as --search.generations=5 --task.options.lr=1e-4.",
    )
    p.add_argument("--config", help="YAML file holding a DiscoveryConfig (task, proposer, search, execution)")
    p.add_argument("--task", help="imdb (default), digits, cifar10, chat, alpaca, tldr, module:Class or file.py:Class")
    p.add_argument("--preset", help="IMDb size preset: tiny, default, paper")
    p.add_argument("--cache-dir", dest="cache_dir", help="where the prepared IMDb task is cached")
    p.add_argument("--steps", type=non_negative_int, help="IMDb optimizer steps per run; > 0 overrides epochs")
    p.add_argument("--data-dir", dest="data_dir", help="cifar10: the local CIFAR-10 copy (python format)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (IMDb default 3, digits 8)")
    p.add_argument("--beta", type=beta)
    p.add_argument("--proposer", choices=["auto", "llm", "evolve", "replay"])
    p.add_argument("--prompt-mode", dest="prompt_mode", choices=["paper", "archive"])
    p.add_argument("--model", help="LLM model (also $PODISCO_LLM_MODEL)")
    p.add_argument("--base-url", dest="base_url", help="OpenAI-compatible endpoint (also $PODISCO_LLM_BASE_URL)")
    p.add_argument("--llm-temperature", dest="llm_temperature", type=float, help="sampling temperature (default 1)")
    p.add_argument(
        "--llm-max-tokens",
        dest="llm_max_tokens",
        type=non_negative_int,
        help="cap on a reply's tokens; 0: the server's",
    )
    p.add_argument("--llm-timeout", dest="llm_timeout", type=float, help="seconds per request (default 120)")
    p.add_argument(
        "--llm-retries", dest="llm_retries", type=non_negative_int, help="retries of a failed request (default 6)"
    )
    p.add_argument(
        "--local-model",
        dest="local_model",
        help="a GGUF file: start llama.cpp's server on 127.0.0.1 for this run (needs podisco[local-llm])",
    )
    p.add_argument("--replay", help="JSONL of recorded replies for --proposer replay")
    p.add_argument("--generations", type=non_negative_int)
    p.add_argument("--population", type=positive_int, help="proposals per generation")
    p.add_argument(
        "--steady-state",
        dest="steady_state",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="propose whenever a worker is free (default); --no-steady-state: a generation at a time, as the paper",
    )
    p.add_argument(
        "--refills",
        type=non_negative_int,
        help="a duplicate's slot is proposed again, up to this many times the population per generation "
        "(default 3); 0: a duplicate uses up its slot",
    )
    p.add_argument("--workers", type=non_negative_int, help="parallel jobs; 0: cores / threads")
    p.add_argument("--threads", type=positive_int, help="torch threads per job")
    p.add_argument(
        "--warm-workers",
        dest="warm_workers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each worker's sandbox starts once (torch imported, task loaded) and forks a fresh child per "
        "candidate (default); --no-warm-workers: a fresh sandboxed process per job",
    )
    p.add_argument(
        "--gpus-per-job",
        dest="gpus_per_job",
        type=positive_int,
        help="training processes per job, launched inside its sandbox (accelerate launch); with GPUs, the GPUs "
        "each job holds (judged tasks)",
    )
    p.add_argument(
        "--accelerate-config",
        dest="accelerate_config",
        help="Accelerate config for jobs on several processes, e.g. recipes/accelerate/zero3.yaml",
    )
    p.add_argument("--seeds", type=seeds, help="seeds of a full evaluation, e.g. 0,1,2 (default: the task's)")
    p.add_argument("--reevaluate-seeds", dest="reevaluate_seeds", type=seeds, help="seeds for re-evaluating the top 3")
    p.add_argument(
        "--fitness",
        choices=["tuned", "frontier"],
        help="tuned: at the run's β vs tuned DPO (default); frontier: at the candidate's best grid β vs tuned DPO",
    )
    p.add_argument(
        "--racing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add seeds one at a time and stop a candidate once it cannot be the best (default); "
        "--no-racing: one seed, then the rest only within --search.promote_margin of the best",
    )
    p.add_argument(
        "--stage0",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the first seed for a fraction of the steps first, and stop a candidate there once it cannot "
        "be the best (off by default: see benchmarks/stage0_fidelity.py)",
    )
    p.add_argument("--stage0-fraction", dest="stage0_fraction", type=float, help="stage 0's share of the steps (0.25)")
    p.add_argument(
        "--transfer-betas",
        dest="transfer_betas",
        type=positive_floats,
        help="β values the best candidate and DPO are compared at after the search (default: the task's)",
    )
    p.add_argument(
        "--transfer-seeds", dest="transfer_seeds", type=non_negative_int, help="how many held-out seeds; 0: all"
    )
    p.add_argument("--no-transfer", dest="transfer", action="store_false", default=None, help="skip the β transfer")
    p.add_argument("--executor", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (--executor ray)")
    p.add_argument("--isolation", choices=["auto", "bwrap", "unshare", "process"])
    p.add_argument("--allow-weak-isolation", dest="allow_weak_isolation", action="store_true", default=None)
    p.add_argument("--wall-s", dest="wall_s", type=float, help="per job; 0: the task's default")
    add_judged_task_arguments(p)
    p.set_defaults(eval_limit=None, max_new_tokens=None)  # here a flag left out keeps the config's value
    p.add_argument("--gpus", help="judged tasks: auto (every visible GPU, one job each), none, or 0,1,...")
    p.add_argument("--seed", type=int, help="random seed of the evolve proposer")
    p.add_argument("--root", default=DEFAULT_ROOT, help="where the archive and work files live")
    p.add_argument("--run", help="run id (to resume, or to name a new run)")
    p.add_argument("--resume", action="store_true", help="continue --run where it stopped")
    p.set_defaults(func=cmd_discover, takes_overrides=True)
