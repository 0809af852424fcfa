"""`podisco <command>`: the command line. Builds the parser from the command groups (losses, train, tasks, discovery,
llm); nothing imports this module but ``__main__.py`` and the console script."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from podisco.cli import discovery, llm, losses, tasks, train
from podisco.cli.common import PROG, Parser, UsageError, print_error, quiet_libraries, usage_error
from podisco.errors import PodiscoError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="preference-optimisation losses: the library, training, tasks, discovery")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    losses.add_commands(commands)
    tasks.add_commands(commands)
    discovery.add_commands(commands)
    train.add_commands(commands)
    llm.add_commands(commands)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_overrides = getattr(args, "takes_overrides", False)
    if extra and not takes_overrides:
        raise usage_error(args.parser_prog, f"unrecognized arguments: {' '.join(extra)}")
    quiet_libraries(getattr(args, "verbose", False))
    beta = getattr(args, "beta", None)  # a command whose --beta is a plain float still gets a positive one
    if beta is not None and any(not b > 0 for b in (beta if isinstance(beta, list) else [beta])):
        raise UsageError(f"argument --beta: beta must be positive, got {beta}")
    return args.func(args, extra) if takes_overrides else args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The exit status: 0, 2 for every user error (one ``podisco: error:`` line on stderr), 1 for a failed loss."""
    try:
        return _run(argv)
    except PodiscoError as error:
        return print_error(error)
    except BrokenPipeError:  # `podisco runs show RUN | head`: the reader left; not an error of ours
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
