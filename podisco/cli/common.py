"""What the command groups share: the parser with one-line errors, flag value types, tables, the archive, and the
quiet console. Imports nothing heavy (no torch, no transformers), so building the parser stays cheap."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from podisco.errors import PodiscoError

if TYPE_CHECKING:
    from podisco.discovery.archive import Archive, Attempt

PROG = "podisco"
DEFAULT_ROOT = "runs/discovery"

# What keeps transformers, huggingface_hub, datasets and accelerate to errors only, with no progress bars, in a
# process that has not imported them yet. The libraries read these when they are imported.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own bars ("Writing model shards") follow this one too
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


class UsageError(PodiscoError, argparse.ArgumentTypeError):
    """A bad command line or flag value. As a flag's ``type``, argparse reports it with the flag's name."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a ``UsageError`` (one line, exit 2, like every user error) instead of
    usage text and ``SystemExit``; every parser and sub-parser takes ``--verbose``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a sub-parser that is not given --verbose leaves the one given before the command alone
        self.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS,
            help="keep the warnings and progress bars of transformers, huggingface_hub and datasets",
        )  # fmt: skip
        self.set_defaults(parser_prog=self.prog)  # the innermost parser's wins: it names the command

    def error(self, message: str) -> NoReturn:
        raise usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> UsageError:
    """``losses show: MESSAGE (see podisco losses show --help)`` for the parser named ``prog``."""
    command = prog.removeprefix(PROG).strip()
    return UsageError(f"{command + ': ' if command else ''}{message} (see {prog} --help)")


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def print_error(error: BaseException | str) -> int:
    """``podisco: error: ...`` on stderr; returns 2, the exit status of every user error."""
    message = error if isinstance(error, str) else one_line(error)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain text table: left-aligned columns, a dashed rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# flag value types: each raises a UsageError, which argparse reports as "argument --flag: ..."


def seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``: non-negative integers."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"seeds are comma-separated integers like 0,1,2, got {text!r}") from None
    if any(v < 0 for v in values):
        raise UsageError(f"seeds must be non-negative, got {text!r}")
    return values


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise UsageError(f"{what} positive, got {text}")
    return value


def positive_float(text: str) -> float:
    return _positive(text, "must be")


def beta(text: str) -> float:
    """A positive ``--beta``."""
    return _positive(text, "beta must be")


def positive_floats(text: str) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> ``(0.05, 0.1)``: positive numbers."""
    try:
        return tuple(positive_float(x) for x in text.split(","))
    except UsageError:
        raise UsageError(f"expected positive comma-separated numbers like 0.05,0.1, got {text!r}") from None


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise UsageError(f"must be 0 or more, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise UsageError("must be 1 or more, got 0")
    return value


def existing_file(path: str | Path | None, what: str) -> None:
    """Refuse a local file that is not there, naming the flag (``what``) it came from."""
    if path and not Path(path).expanduser().is_file():
        where = "no such file" if not Path(path).expanduser().exists() else "not a file"
        raise PodiscoError(f"{what} {path}: {where}")


def existing_dir(path: str | Path | None, what: str) -> None:
    """Refuse a local folder that is not there, naming the flag (``what``) it came from."""
    if path and not Path(path).expanduser().is_dir():
        where = "no such folder" if not Path(path).expanduser().exists() else "not a folder"
        raise PodiscoError(f"{what} {path}: {where}")


def output_dir(path: str | Path, what: str) -> Path:
    """A folder to write into, made when missing; a clear error when it cannot be."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PodiscoError(f"{what} {path}: cannot create the folder ({error.strerror})") from error
    if not os.access(folder, os.W_OK):
        raise PodiscoError(f"{what} {path}: the folder is not writable")
    return folder


def output_file(path: str | Path, what: str) -> Path:
    """A file to write, its folder made when missing; a clear error when it cannot be written there."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise PodiscoError(f"{what} {path}: is a folder; give a file name")
    output_dir(file.parent, what)
    return file


# the discovery archive


def open_archive(root: str | Path) -> Archive:
    """The archive under ``root``; a clear error when there is none (never creates one)."""
    from podisco.discovery.archive import Archive

    path = Path(root) / "archive.sqlite"
    if not path.is_file():
        raise PodiscoError(f"no archive at {path}; run podisco discover first (or pass --root)")
    return Archive(path)


def require_run(archive: Archive, run_id: str) -> dict:
    """The run ``run_id``; a ``PodiscoError`` naming the runs there are when it is not in the archive."""
    run = archive.run(run_id)
    if run is None:
        known = [r["run_id"] for r in archive.runs()]
        hint = f"runs there: {', '.join(known[-5:])}" if known else "it holds no runs yet"
        raise PodiscoError(f"no run {run_id!r} in {archive.path} ({hint}; see podisco runs list)")
    return run


def require_attempt(archive: Archive, run_id: str, attempt_id: int) -> Attempt:
    """Attempt ``attempt_id`` of run ``run_id``; a ``PodiscoError`` when there is none or it is another run's."""
    try:
        attempt = archive.attempt(attempt_id)
    except KeyError:
        attempt = None
    if attempt is None or attempt.run_id != run_id:
        raise PodiscoError(f"run {run_id!r} has no attempt {attempt_id} (see podisco runs show {run_id})")
    return attempt


# the console


def quiet_libraries(verbose: bool = False) -> None:
    """Errors only and no progress bars from transformers, huggingface_hub, datasets and accelerate, unless
    ``verbose``. Environment variables for what is not imported yet (they are read on import, nothing is imported
    here), the libraries' own switches for what is. A value the user set in the environment is kept."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "ACCELERATE_LOG_LEVEL" not in os.environ:  # "Removed shared tensor ... while saving" is accelerate's
        logging.getLogger("accelerate").setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub

        huggingface_hub.utils.logging.set_verbosity_error()
        huggingface_hub.utils.disable_progress_bars()
    if "datasets" in sys.modules:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
