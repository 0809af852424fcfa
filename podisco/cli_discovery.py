"""``podisco discover``, ``podisco runs list|show`` and ``podisco export``: the discovery commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from podisco.errors import PodiscoError

DEFAULT_ROOT = "runs/discovery"


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def cmd_discover(args: argparse.Namespace) -> int:
    from podisco.discovery.loop import DiscoveryConfig, run_discovery
    from podisco.tasks.judged import TASKS as JUDGED

    if args.resume and not args.run:
        raise PodiscoError("--resume needs --run RUN_ID (see podisco runs list)")
    judged = args.task in JUDGED
    # A judged evaluation trains a real model: one seed per candidate, as the paper did, unless asked
    seeds = args.seeds or ("0" if judged else "0,1,2")
    config = DiscoveryConfig(
        task=args.task,
        preset=args.preset,
        cache_dir=args.cache_dir or "",
        beta=args.beta,
        proposer=args.proposer,
        prompt_mode=args.prompt_mode,
        llm_model=args.model or "",
        llm_base_url=args.base_url or "",
        replay_file=args.replay or "",
        generations=args.generations,
        population=args.population,
        workers=args.workers,
        threads=args.threads,
        seeds=_seeds(seeds),
        executor=args.executor,
        ray_address=args.address or "",
        isolation=args.isolation,
        allow_weak_isolation=args.allow_weak_isolation,
        steps=args.steps,
        wall_s=args.wall_s,
        seed=args.seed,
        train_config=args.train_config or "",
        train_overrides=tuple(args.train_override or ()),
        eval_data=args.eval_data or "",
        eval_limit=args.eval_limit,
        max_new_tokens=args.max_new_tokens,
        judge_model=args.judge_model or "",
        judge_base_url=args.judge_base_url or "",
        judge_cache=args.judge_cache or "",
        gpus=args.gpus,
    )
    if args.reevaluate_seeds or judged:
        config.reevaluate_seeds = _seeds(args.reevaluate_seeds or "0,1,2")
    run_id = run_discovery(config, args.root, args.run, args.resume)
    print(f"archive: {Path(args.root) / 'archive.sqlite'} (run {run_id})")
    print(f"next: podisco runs show {run_id}   |   podisco export {run_id} --best -o loss.py")
    return 0


def _open(root: str):
    from podisco.discovery.archive import Archive

    path = Path(root) / "archive.sqlite"
    if not path.exists():
        raise PodiscoError(f"no archive at {path}; run podisco discover first (or pass --root)")
    return Archive(path)


def cmd_runs_list(args: argparse.Namespace) -> int:
    from podisco.cli import _table

    archive = _open(args.root)
    rows = [
        (
            r["run_id"],
            f"{r['task']} v{r['task_version']}",
            str(r["attempts"]),
            "-" if r["best_fitness"] is None else f"{r['best_fitness']:+.4f}",
            r["isolation"],
            "finished" if r["finished"] else "open",
        )
        for r in archive.runs()
    ]
    print(_table(rows, ("run", "task", "attempts", "best", "isolation", "state")) if rows else "no runs yet")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from podisco.cli import _table

    archive = _open(args.root)
    run = archive.run(args.run)
    if run is None:
        raise PodiscoError(f"no run {args.run!r} in {archive.path}")
    attempts = archive.attempts(args.run)
    counts = {s: sum(1 for a in attempts if a.status == s) for s in ("evaluated", "duplicate", "invalid", "failed")}
    print(f"run {args.run}: {run['task']} v{run['task_version']}, isolation {run['isolation']}")
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    rows = []
    for a in sorted(attempts, key=lambda a: -(a.fitness if a.fitness is not None else float("-inf"))):
        fitness = "-" if a.fitness is None else f"{a.fitness:+.4f}"
        if a.fitness_stderr:
            fitness += f" +- {a.fitness_stderr:.4f}"
        note = (a.error or "").splitlines()[0][:70] if a.status != "evaluated" else ""
        rows.append((str(a.id), str(a.generation), a.name[:32], a.status, fitness, note))
    print(_table(rows, ("id", "gen", "name", "status", "fitness", "note")))
    for r in archive.reevaluations(args.run):
        spread = f"{r['fitness_stderr'] or 0:.4f}"
        print(f"re-evaluated {r['name']}: {r['fitness']:+.4f} +- {spread} over {len(r['seeds'])} seeds")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from podisco.discovery.export import export_attempt

    archive = _open(args.root)
    if args.attempt is not None:
        attempt = archive.attempt(args.attempt)
    else:
        reevaluated = archive.reevaluations(args.run)
        best = archive.best(args.run)
        if not best:
            raise PodiscoError(f"run {args.run!r} has no evaluated attempt")
        # Prefer the ranking after re-evaluation with more seeds.
        attempt = archive.attempt(reevaluated[0]["attempt_id"]) if reevaluated else best[0]
    path = export_attempt(attempt, args.output)
    print(f"wrote {path} ({attempt.name}, fitness {attempt.fitness})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from podisco.reporting.report import write_report

    _open(args.root).close()
    path = write_report(args.root, args.run, args.output, args.sweep or ())
    print(f"wrote {path} (self-contained; open it in a browser)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from podisco.reporting.serve import make_server

    server = make_server(args.root, args.run, args.host, args.port, args.allow_remote, sweeps=args.sweep or ())
    print(f"serving run {args.run} at {server.url}  (Ctrl-C to stop; the token is required on every request)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    from podisco.cli_judged import add_judged_task_arguments

    p = commands.add_parser("discover", help="LLM-driven (or evolutionary) discovery of new losses")
    p.add_argument("--task", default="imdb", choices=["imdb", "digits", "chat", "alpaca", "tldr"])
    p.add_argument("--preset", default="default", choices=["tiny", "default", "paper"])
    p.add_argument("--cache-dir", dest="cache_dir", help="where the prepared IMDb task is cached")
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--proposer", default="auto", choices=["auto", "llm", "evolve", "replay"])
    p.add_argument("--prompt-mode", dest="prompt_mode", default="paper", choices=["paper", "archive"])
    p.add_argument("--model", help="LLM model (also $PODISCO_LLM_MODEL)")
    p.add_argument("--base-url", dest="base_url", help="OpenAI-compatible endpoint (also $PODISCO_LLM_BASE_URL)")
    p.add_argument("--replay", help="JSONL of recorded replies for --proposer replay")
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--population", type=int, default=4, help="proposals per generation")
    p.add_argument("--workers", type=int, default=0, help="parallel jobs; 0: cores / threads")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--seeds", help="training/sampling seeds of a full evaluation (0,1,2; chat/alpaca/tldr: 0)")
    p.add_argument("--reevaluate-seeds", dest="reevaluate_seeds", help="seeds for re-evaluating the top 3")
    p.add_argument("--steps", type=int, default=0, help="IMDb optimizer steps per run; 0: one epoch")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (--executor ray)")
    p.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "unshare", "process"])
    p.add_argument("--allow-weak-isolation", dest="allow_weak_isolation", action="store_true")
    p.add_argument("--wall-s", dest="wall_s", type=float, default=0.0, help="per job; 0: 900 s, judged tasks 6 h")
    add_judged_task_arguments(p)
    p.add_argument("--gpus", default="auto", help="auto (every visible GPU, one job each), none, or 0,1,...")
    p.add_argument("--seed", type=int, default=0, help="random seed of the evolve proposer")
    p.add_argument("--root", default=DEFAULT_ROOT, help="where the archive and work files live")
    p.add_argument("--run", help="run id (to resume, or to name a new run)")
    p.add_argument("--resume", action="store_true", help="continue --run where it stopped")
    p.set_defaults(func=cmd_discover)

    runs = commands.add_parser("runs", help="discovery runs in an archive")
    sub = runs.add_subparsers(dest="runs_command", required=True)
    p = sub.add_parser("list", help="every run with its best fitness")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_runs_list)
    p = sub.add_parser("show", help="every attempt of a run")
    p.add_argument("run")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_runs_show)

    p = commands.add_parser("report", help="one self-contained HTML report of a run")
    p.add_argument("run")
    p.add_argument("-o", "--output", default="report.html")
    p.add_argument("--sweep", action="append", help="a sweep.csv: its reward-vs-KL frontier, or judged scores")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_report)

    p = commands.add_parser("serve", help="the report of a run as a live local page (token-protected)")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--allow-remote", dest="allow_remote", action="store_true", help="allow a non-loopback host")
    p.add_argument("--sweep", action="append")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("export", help="write a discovered loss as a Python file for --loss FILE:NAME")
    p.add_argument("run")
    p.add_argument("--best", action="store_true", help="the best attempt (the default)")
    p.add_argument("--attempt", type=int, help="a given attempt id instead")
    p.add_argument("-o", "--output", default="loss.py")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_export)
