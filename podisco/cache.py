"""Where podisco keeps its caches, and how an entry is written so that a crash never leaves half of one."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def cache_home() -> Path:
    """``$PODISCO_CACHE``, else ``~/.cache/podisco``."""
    return Path(os.environ.get("PODISCO_CACHE", Path.home() / ".cache" / "podisco"))


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it only when the block completes: readers see the whole
    entry or none (its presence can then mean "finished")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: str | Path, rows: Sequence[Mapping], fields: Sequence[str]) -> Path:
    """``rows`` as CSV with ``fields`` as the header, written atomically (a sweep's ``sweep.csv``)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
