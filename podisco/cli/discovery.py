"""``podisco runs list|show``, ``report``, ``serve``, ``export``: reading discovery runs (``discover``: discover.py)."""

from __future__ import annotations

import argparse

from podisco.cli.common import (
    DEFAULT_ROOT,
    UsageError,
    existing_file,
    open_archive,
    output_file,
    require_attempt,
    require_run,
    table,
)
from podisco.errors import PodiscoError


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"a port is a whole number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise UsageError(f"a port is 0 (any free one) to 65535, got {value}")
    return value


def cmd_runs_list(args: argparse.Namespace) -> int:
    archive = open_archive(args.root)
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
    print(table(rows, ("run", "task", "attempts", "best", "isolation", "state")) if rows else "no runs yet")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    archive = open_archive(args.root)
    run = require_run(archive, args.run)
    attempts = archive.attempts(args.run)
    counts = {s: sum(1 for a in attempts if a.status == s) for s in ("evaluated", "duplicate", "invalid", "failed")}
    from podisco.discovery.confirm import verdict_lines

    print(f"run {args.run}: {run['task']} v{run['task_version']}, isolation {run['isolation']}")
    for line in verdict_lines(run.get("verdict")):  # what held up on held-out seeds comes first
        print(line)
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    from podisco.discovery.archive import proposer_cost

    cost = proposer_cost(attempts)
    if cost:
        print(f"  LLM: {cost}")
    rows = []
    for a in sorted(attempts, key=lambda a: -(a.fitness if a.fitness is not None else float("-inf"))):
        fitness = "-" if a.fitness is None else f"{a.fitness:+.4f}"
        if a.fitness_stderr:
            fitness += f" +- {a.fitness_stderr:.4f}"
        # a reason where there is one (invalid, failed, duplicate, stopped at stage 0); none while running
        note = ((a.error or "").splitlines() or [""])[0][:70] if a.status != "evaluated" or a.error else ""
        if a.metrics.get("best_beta") is not None:  # the frontier fitness: scored at its own best grid β
            note = f"at its best β={a.metrics['best_beta']:g}"
        rows.append((str(a.id), str(a.generation), a.name[:32], a.status, fitness, note))
    print(table(rows, ("id", "gen", "name", "status", "fitness", "note")))
    for r in archive.reevaluations(args.run):
        spread = f"{r['fitness_stderr'] or 0:.4f}"
        what = "held out" if r["metrics"].get("heldout") else "re-evaluated"
        print(f"{what}: {r['name']}: {r['fitness']:+.4f} +- {spread} over {len(r['seeds'])} seeds")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from podisco.discovery.export import export_attempt

    archive = open_archive(args.root)
    require_run(archive, args.run)
    if args.attempt is not None:
        attempt = require_attempt(archive, args.run, args.attempt)
    else:
        reevaluated = archive.reevaluations(args.run)
        best = archive.best(args.run)
        if not best:
            raise PodiscoError(f"run {args.run!r} has no evaluated attempt")
        # Prefer the ranking after re-evaluation with more seeds.
        attempt = archive.attempt(reevaluated[0]["attempt_id"]) if reevaluated else best[0]
    path = export_attempt(attempt, output_file(args.output, "-o"), format=args.format)
    print(f"wrote {path} ({attempt.name}, fitness {attempt.fitness})")
    if args.format == "trl":  # the file's docstring has the rest
        print(f"use it with TRL: from {path.stem} import make_trainer_class; make_trainer_class(trl.DPOTrainer)")
    return 0


def _check_report_inputs(args: argparse.Namespace) -> None:
    """``report`` and ``serve``: the run exists and every ``--sweep`` file is there, before any page is built."""
    archive = open_archive(args.root)
    try:
        require_run(archive, args.run)
    finally:
        archive.close()
    for sweep in args.sweep or ():
        existing_file(sweep, "--sweep")


def cmd_report(args: argparse.Namespace) -> int:
    from podisco.reporting.report import write_report

    _check_report_inputs(args)
    path = write_report(args.root, args.run, output_file(args.output, "-o"), args.sweep or ())
    print(f"wrote {path} (self-contained; open it in a browser)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from podisco.reporting.serve import make_server

    _check_report_inputs(args)
    try:
        server = make_server(args.root, args.run, args.host, args.port, args.allow_remote, sweeps=args.sweep or ())
    except OSError as error:  # the port is taken, or the host is not this machine's
        raise PodiscoError(f"cannot serve on {args.host}:{args.port} ({error.strerror or error})") from error
    print(f"serving run {args.run} at {server.url}  (Ctrl-C to stop; the token is required on every request)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    from podisco.cli.discover import add_discover_command

    add_discover_command(commands)

    runs = commands.add_parser("runs", help="discovery runs in an archive")
    sub = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
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
    p.add_argument("--port", type=port, default=8765, help="0: any free port")
    p.add_argument("--allow-remote", dest="allow_remote", action="store_true", help="allow a non-loopback host")
    p.add_argument("--sweep", action="append")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("export", help="write a discovered loss as a Python file for --loss FILE:NAME or TRL")
    p.add_argument("run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the best attempt (the default)")
    which.add_argument("--attempt", type=int, help="a given attempt id instead (see podisco runs show RUN)")
    p.add_argument(
        "--format",
        choices=("podisco", "trl"),
        default="podisco",
        help="podisco: the function, for --loss FILE:NAME; trl: also a DPOTrainer subclass for TRL 1.16 (needs "
        "only torch, not podisco)",
    )
    p.add_argument("-o", "--output", default="loss.py")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.set_defaults(func=cmd_export)
