"""Run a command in an isolated child process: the boundary between candidate code and everything else.

Levels, strongest first (``detect_isolation`` probes which work here):

- ``bwrap`` (bubblewrap): the whole filesystem read-only except the job's work folder, the home folder
  hidden (only the interpreter, the project and the given read-only paths are mounted back), a private
  /tmp, no network (own network namespace), own pid namespace (killing the sandbox kills every process in
  it), all capabilities dropped, ``--die-with-parent``.
- ``unshare``: ``unshare -n``, a network namespace with nothing in it; the filesystem is NOT protected.
- ``process``: a plain child process; neither network nor filesystem is protected.

At every level: a scrubbed environment built from scratch (no API keys or tokens), the work folder as cwd
and HOME, rlimits (CPU seconds, address space, file size, open files, no core dumps; RLIMIT_NPROC too,
though the kernel does not apply it to root — under bwrap the pid namespace and the deadline bound process
trees), stdout/stderr to files whose tails are kept, and a wall-clock deadline after which the whole process
group is killed (and again after exit, for stragglers). The child also gets SIGKILL if its parent dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podisco.errors import PodiscoError

ISOLATION_LEVELS = ("bwrap", "unshare", "process")
_TAIL = 4000


class SandboxError(PodiscoError):
    """The sandbox cannot give the isolation that was asked for."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 600.0
    cpu_s: int = 3600
    memory_mb: int = 8192  # address space; torch reserves a lot of it, so keep this generous
    processes: int = 256
    file_mb: int = 256
    open_files: int = 512


@dataclass
class SandboxResult:
    returncode: int | None
    timed_out: bool
    killed_by_signal: int | None
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    isolation: str


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def detect_isolation() -> str:
    """The strongest level that really works on this machine (probed once per process)."""
    if _works(["bwrap", *_bwrap_args(Path("/tmp"), ()), "true"]):
        return "bwrap"
    if _works(["unshare", "-n", "true"]):
        return "unshare"
    return "process"


def require_isolation(level: str, allow_weak: bool) -> None:
    """Refuse to run model-written code without filesystem and network isolation unless explicitly allowed."""
    if level != "bwrap" and not allow_weak:
        raise SandboxError(
            f"only the {level!r} isolation level is available here (bubblewrap's `bwrap` is missing or does not "
            "work), which does not protect files outside the work folder"
            + (" or the network" if level == "process" else "")
            + ". Install bubblewrap, or pass --allow-weak-isolation to run LLM-written code anyway."
        )


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]  # the folder that holds the podisco package


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child environment built from nothing: no secrets can leak in by inheritance."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(_project_root()),
    }
    env.update(extra or {})
    return env


def _bwrap_args(workdir: Path, readonly_paths: Sequence[Path]) -> list[str]:
    args = [
        "--die-with-parent",
        "--new-session",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    home = Path.home().resolve()
    if home != Path("/") and home.is_dir():
        # Hide the home folder (keys, tokens, configs); mount back only what the child needs to run.
        args += ["--tmpfs", str(home)]
        needed = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), _project_root(), *readonly_paths}
        for path in sorted({p.resolve() for p in needed}):
            if path.is_relative_to(home) and path.exists():
                args += ["--ro-bind", str(path), str(path)]
    workdir = workdir.resolve()
    return [*args, "--bind", str(workdir), str(workdir), "--chdir", str(workdir)]


def _limit_child(limits: Limits):
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def apply() -> None:
        mb = 1024 * 1024
        for which, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_mb * mb),
            (resource.RLIMIT_FSIZE, limits.file_mb * mb),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(which, (value, value))
        if libc is not None:
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the discovery process

    return apply


def _tail(path: Path) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - _TAIL))
        return f.read().decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_sandboxed(
    argv: list[str],
    workdir: Path,
    limits: Limits = Limits(),
    isolation: str | None = None,
    readonly_paths: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run ``argv`` in ``workdir`` at ``isolation`` (default: the strongest available) within ``limits``."""
    level = isolation or detect_isolation()
    if level not in ISOLATION_LEVELS:
        raise SandboxError(f"unknown isolation level {level!r}: {', '.join(ISOLATION_LEVELS)}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    child_env = dict(env) if env is not None else scrubbed_env()
    child_env.setdefault("HOME", str(workdir))
    if level == "bwrap":
        command = ["bwrap", *_bwrap_args(workdir, readonly_paths), *argv]
    elif level == "unshare":
        command = ["unshare", "-n", *argv]
    else:
        command = list(argv)
    out_path, err_path = workdir / ".stdout", workdir / ".stderr"
    start = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_limit_child(limits),
        )
        timed_out = False
        try:
            process.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process.pid)
            process.wait()
        _kill_group(process.pid)  # grandchildren left behind by a child that exited
    code = process.returncode
    signal_number = -code if code < 0 else None
    if level == "bwrap" and code > 128:  # bwrap reports a child killed by signal N as 128 + N
        signal_number = code - 128
    return SandboxResult(
        returncode=code,
        timed_out=timed_out,
        killed_by_signal=signal_number,
        stdout_tail=_tail(out_path),
        stderr_tail=_tail(err_path),
        wall_s=time.monotonic() - start,
        isolation=level,
    )
