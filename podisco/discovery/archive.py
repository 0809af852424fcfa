"""The archive of a discovery run: SQLite in WAL mode, one row per attempt, plus the proposer's message log.

An attempt is written as ``proposed`` (with its code) before anything runs, and moves once to its final
status — ``invalid``, ``duplicate``, ``failed`` or ``evaluated`` — in one transaction together with its
result. A crash at any moment therefore leaves each attempt either finished (kept, never redone) or
``proposed`` (re-dispatched on resume, with the same code: the proposer is not asked again).
Re-evaluations with more seeds are appended to their own table; finished rows are not rewritten.

The schema has a version, kept in SQLite's ``PRAGMA user_version``. Opening an older archive migrates it step
by step (``_MIGRATIONS[n]`` takes version n to n + 1) in one transaction; an archive from a newer podisco is
refused. Archives written before versions existed have user_version 0 and the version-1 tables.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from podisco.errors import PodiscoError

STATUSES = ("proposed", "invalid", "duplicate", "failed", "evaluated")
FINAL = frozenset(STATUSES[1:])

# Version 1, the schema before versions existed. Never edit it: change the schema with a new migration.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    task TEXT NOT NULL,
    task_version TEXT NOT NULL,
    isolation TEXT NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    generation INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    proposer TEXT NOT NULL,
    parents TEXT NOT NULL,
    name TEXT NOT NULL,
    thought TEXT NOT NULL,
    code TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    duplicate_of TEXT,
    fingerprint TEXT,
    shape TEXT,
    metrics TEXT,
    fitness REAL,
    fitness_stderr REAL,
    seeds TEXT,
    timings TEXT,
    llm_tokens TEXT,
    task TEXT NOT NULL,
    task_version TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    UNIQUE (run_id, generation, slot)
);
CREATE TABLE IF NOT EXISTS reevaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id),
    seeds TEXT NOT NULL,
    fitness REAL NOT NULL,
    fitness_stderr REAL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
"""

_JSON_FIELDS = ("parents", "fingerprint", "shape", "metrics", "seeds", "timings", "llm_tokens")


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _to_v1(db: sqlite3.Connection) -> None:
    """Create the version-1 tables; an unversioned archive already has them, which is checked (nothing changes).
    Statement by statement: ``executescript`` would commit the migration's transaction."""
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)
    reference = sqlite3.connect(":memory:")
    try:
        reference.executescript(_SCHEMA_V1)
        tables = [row[0] for row in reference.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        wanted = {t: _columns(reference, t) for t in tables if not t.startswith("sqlite_")}
    finally:
        reference.close()
    for table, columns in wanted.items():
        present = _columns(db, table)
        if missing := [c for c in columns if c not in present]:
            raise PodiscoError(
                f"its table {table!r} lacks the columns {missing}: it is not a podisco discovery archive, or damaged"
            )


def _to_v2(db: sqlite3.Connection) -> None:
    """The job's wall-clock limit and the label of a rescaling ("≈ dpo at β×2") per attempt; a run's verdict."""
    db.execute("ALTER TABLE attempts ADD COLUMN deadline_s REAL")
    db.execute("ALTER TABLE attempts ADD COLUMN rescaling TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN verdict TEXT")


_MIGRATIONS = (_to_v1, _to_v2)  # _MIGRATIONS[n] takes an archive from version n to n + 1
SCHEMA_VERSION = len(_MIGRATIONS)


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check_readable(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise PodiscoError(
            f"{path} is a discovery archive of schema version {version}, written by a newer podisco; this podisco "
            f"reads archive versions up to {SCHEMA_VERSION}: upgrade podisco to open it"
        )


def code_hash(code: str) -> str:
    """Hash of the code with trailing whitespace and blank lines ignored (cosmetic edits are the same code)."""
    lines = [line.rstrip() for line in code.strip().splitlines() if line.strip()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Attempt:
    id: int
    run_id: str
    generation: int
    slot: int
    proposer: str
    parents: list[int]
    name: str
    thought: str
    code: str
    code_hash: str
    status: str
    task: str
    task_version: str
    config_hash: str
    created: float
    error: str | None = None
    duplicate_of: str | None = None
    fingerprint: list[float] | None = None
    shape: dict | None = None
    metrics: dict = field(default_factory=dict)
    fitness: float | None = None
    fitness_stderr: float | None = None
    seeds: list[int] | None = None
    timings: dict | None = None
    llm_tokens: dict | None = None
    finished: float | None = None
    deadline_s: float | None = None  # schema 2: the job's wall-clock limit
    rescaling: str | None = None  # schema 2: a label like "≈ dpo at β×2"


_ATTEMPT_FIELDS = frozenset(f.name for f in fields(Attempt))


class Archive:
    """One SQLite file; safe to read from other processes (the report, ``podisco serve``) while a run writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a finished evaluation survives a power cut, not just a kill
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, all steps in one transaction; a current archive is only read, so
        readers (the report, ``podisco serve``) never take the write lock."""
        version = _user_version(self._db)
        _check_readable(version, self.path)
        if version == SCHEMA_VERSION:
            return
        with self._transaction() as db:
            version = _user_version(db)  # again under the lock: another process may have migrated meanwhile
            _check_readable(version, self.path)
            for step in range(version, SCHEMA_VERSION):
                try:
                    _MIGRATIONS[step](db)
                except PodiscoError as e:
                    raise PodiscoError(f"{self.path}: migrating the archive to version {step + 1}: {e}") from None
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return _user_version(self._db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # runs
    def create_run(self, run_id: str, config: dict, task: str, task_version: str, isolation: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, created, config, config_hash, task, task_version, isolation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    time.time(),
                    json.dumps(config, default=str),
                    config_hash(config),
                    task,
                    task_version,
                    isolation,
                ),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        run = dict(row)
        run["config"] = json.loads(run["config"])
        run["verdict"] = json.loads(run["verdict"]) if run.get("verdict") is not None else None
        return run

    def runs(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT r.run_id, r.created, r.task, r.task_version, r.isolation, r.finished,"
            " COUNT(a.id) AS attempts, MAX(a.fitness) AS best_fitness"
            " FROM runs r LEFT JOIN attempts a ON a.run_id = r.run_id GROUP BY r.run_id ORDER BY r.created"
        ).fetchall()
        return [dict(r) for r in rows]

    def finish_run(self, run_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (time.time(), run_id))

    def set_verdict(self, run_id: str, verdict: dict) -> None:
        """Store the run's verdict (JSON); a later verdict replaces an earlier one."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE runs SET verdict = ? WHERE run_id = ?", (json.dumps(verdict, default=str), run_id)
            ).rowcount
        if changed != 1:
            raise KeyError(f"no run {run_id!r} in {self.path}")

    # attempts
    def add_proposed(
        self,
        run_id: str,
        generation: int,
        slot: int,
        proposer: str,
        name: str,
        thought: str,
        code: str,
        parents: Sequence[int] = (),
        llm_tokens: dict | None = None,
    ) -> int:
        run = self.run(run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO attempts (run_id, generation, slot, proposer, parents, name, thought, code, code_hash,"
                " status, llm_tokens, task, task_version, config_hash, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'proposed', ?, ?, ?, ?, ?)",
                (
                    run_id,
                    generation,
                    slot,
                    proposer,
                    json.dumps(list(parents)),
                    name,
                    thought,
                    code,
                    code_hash(code),
                    json.dumps(llm_tokens) if llm_tokens else None,
                    run["task"],
                    run["task_version"],
                    run["config_hash"],
                    time.time(),
                ),
            )
            return int(cursor.lastrowid)

    def finish(self, attempt_id: int, status: str, **result: Any) -> None:
        """Move a ``proposed`` attempt to its final status with its result; a finished attempt is never rewritten."""
        if status not in FINAL:
            raise ValueError(f"final status must be one of {sorted(FINAL)}, got {status!r}")
        allowed = {"error", "duplicate_of", "fitness", "fitness_stderr", "deadline_s", "rescaling", *_JSON_FIELDS}
        unknown = set(result) - allowed
        if unknown:
            raise ValueError(f"unknown attempt fields {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in result.items()}
        columns = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE attempts SET status = ?, finished = ?{', ' if columns else ''}{columns}"
                " WHERE id = ? AND status = 'proposed'",
                (status, time.time(), *values.values(), attempt_id),
            ).rowcount
        if changed != 1:
            raise RuntimeError(f"attempt {attempt_id} is not a proposed attempt; finished results are not rewritten")

    def attempts(self, run_id: str, status: str | None = None) -> list[Attempt]:
        query, args = "SELECT * FROM attempts WHERE run_id = ?", [run_id]
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        return [_attempt(row) for row in self._db.execute(query + " ORDER BY generation, slot", args)]

    def attempt(self, attempt_id: int) -> Attempt:
        row = self._db.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise KeyError(f"no attempt {attempt_id}")
        return _attempt(row)

    def best(self, run_id: str, k: int = 1) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT * FROM attempts WHERE run_id = ? AND status = 'evaluated' AND fitness IS NOT NULL"
            " ORDER BY fitness DESC, id LIMIT ?",
            (run_id, k),
        )
        return [_attempt(row) for row in rows]

    # re-evaluations
    def add_reevaluation(
        self, attempt_id: int, seeds: Sequence[int], fitness: float, stderr: float | None, metrics: dict
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO reevaluations (attempt_id, seeds, fitness, fitness_stderr, metrics, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (attempt_id, json.dumps(list(seeds)), fitness, stderr, json.dumps(metrics), time.time()),
            )

    def reevaluations(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT e.*, a.name FROM reevaluations e JOIN attempts a ON a.id = e.attempt_id"
            " WHERE a.run_id = ? ORDER BY e.fitness DESC",
            (run_id,),
        )
        return [{**dict(r), "seeds": json.loads(r["seeds"]), "metrics": json.loads(r["metrics"])} for r in rows]

    # the proposer's conversation
    def add_message(self, run_id: str, generation: int, role: str, content: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO messages (run_id, generation, role, content, created) VALUES (?, ?, ?, ?, ?)",
                (run_id, generation, role, content, time.time()),
            )

    def messages(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM messages WHERE run_id = ? ORDER BY id", (run_id,))
        return [dict(r) for r in rows]


def _attempt(row: sqlite3.Row) -> Attempt:
    """Every column the dataclass knows is mapped; a column it does not know (from a later podisco) is ignored."""
    values = {key: value for key, value in dict(row).items() if key in _ATTEMPT_FIELDS}
    for key in _JSON_FIELDS:
        if values.get(key) is not None:
            values[key] = json.loads(values[key])
    values["metrics"] = values.get("metrics") or {}
    return Attempt(**values)


def proposer_cost(attempts: Sequence[Attempt]) -> str | None:
    """What the LLM cost, from the calls stored with the attempts: replies, tokens in and out, time, and the
    response formats used; None when no attempt came from an LLM call."""
    calls = [a.llm_tokens for a in attempts if a.llm_tokens]
    if not calls:
        return None
    prompt = sum(int(c.get("prompt", 0)) for c in calls)
    completion = sum(int(c.get("completion", 0)) for c in calls)
    requests = sum(int(c.get("requests", 0)) for c in calls)
    timed = [float(c["latency_s"]) for c in calls if c.get("latency_s") is not None]
    modes: dict[str, int] = {}
    for c in calls:
        if c.get("mode"):
            modes[c["mode"]] = modes.get(c["mode"], 0) + 1
    text = f"{len(calls)} replies ({requests} requests): {prompt} prompt + {completion} completion tokens"
    if timed:
        text += f", {sum(timed):.0f} s waiting ({sum(timed) / len(timed):.1f} s per reply)"
    if modes:
        text += "; formats " + ", ".join(f"{mode} {n}" for mode, n in sorted(modes.items()))
    return text
