import json
import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest

from podisco.discovery import archive as archive_module
from podisco.discovery.archive import SCHEMA_VERSION, Archive, Attempt, code_hash
from podisco.errors import PodiscoError

FIXTURES = Path(__file__).parent / "fixtures"
NEW_COLUMNS = {"attempts": {"deadline_s", "rescaling"}, "runs": {"verdict"}, "reevaluations": set(), "messages": set()}


@pytest.fixture
def archive(tmp_path):
    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r1", {"task": "imdb", "beta": 0.05}, "imdb", "2-tiny", "bwrap")
    yield archive
    archive.close()


def test_attempt_moves_once_from_proposed_to_final(archive):
    attempt_id = archive.add_proposed("r1", 1, 0, "evolve", "loss_a", "why", "def f(x):\n    return x\n", [3])
    assert archive.attempt(attempt_id).status == "proposed"
    archive.finish(attempt_id, "evaluated", fitness=0.25, fitness_stderr=0.01, seeds=[0, 1], metrics={"k": 1})
    attempt = archive.attempt(attempt_id)
    assert (attempt.status, attempt.fitness, attempt.seeds, attempt.parents) == ("evaluated", 0.25, [0, 1], [3])
    assert attempt.metrics == {"k": 1}
    assert attempt.task_version == "2-tiny" and attempt.config_hash
    with pytest.raises(RuntimeError, match="not rewritten"):
        archive.finish(attempt_id, "failed", error="again")
    with pytest.raises(ValueError, match="final status"):
        archive.finish(attempt_id, "proposed")


def test_one_row_per_generation_slot_and_best_ordering(archive):
    a = archive.add_proposed("r1", 1, 0, "evolve", "a", "", "code a")
    b = archive.add_proposed("r1", 1, 1, "evolve", "b", "", "code b")
    with pytest.raises(sqlite3.IntegrityError):
        archive.add_proposed("r1", 1, 0, "evolve", "again", "", "code c")
    archive.finish(a, "evaluated", fitness=0.1)
    archive.finish(b, "evaluated", fitness=0.3)
    assert [x.name for x in archive.best("r1", 2)] == ["b", "a"]
    assert archive.runs()[0]["attempts"] == 2 and archive.runs()[0]["best_fitness"] == 0.3


def test_archive_survives_reopening_and_keeps_messages(tmp_path, archive):
    archive.add_message("r1", 0, "user", "hello")
    archive.add_proposed("r1", 0, 0, "seed", "dpo", "", "code")
    again = Archive(tmp_path / "archive.sqlite")
    assert [m["content"] for m in again.messages("r1")] == ["hello"]
    assert len(again.attempts("r1", "proposed")) == 1
    assert again.run("r1")["config"] == {"task": "imdb", "beta": 0.05}
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_code_hash_ignores_cosmetic_whitespace():
    assert code_hash("def f(x):\n    return x\n") == code_hash("\ndef f(x):   \n\n    return x")
    assert code_hash("def f(x):\n    return x\n") != code_hash("def f(x):\n    return -x\n")


def test_finish_takes_deadline_and_rescaling_and_a_run_takes_a_verdict(archive):
    attempt_id = archive.add_proposed("r1", 1, 0, "evolve", "a", "", "code a")
    assert (archive.attempt(attempt_id).deadline_s, archive.attempt(attempt_id).rescaling) == (None, None)
    archive.finish(attempt_id, "duplicate", duplicate_of="dpo", deadline_s=600.0, rescaling="≈ dpo at β×2")
    attempt = archive.attempt(attempt_id)
    assert (attempt.deadline_s, attempt.rescaling) == (600.0, "≈ dpo at β×2")
    assert archive.run("r1")["verdict"] is None
    archive.set_verdict("r1", {"beats_dpo": False, "margin": -0.01})
    archive.set_verdict("r1", {"beats_dpo": True, "margin": 0.02})  # a later verdict replaces the earlier one
    assert archive.run("r1")["verdict"] == {"beats_dpo": True, "margin": 0.02}
    with pytest.raises(KeyError, match="no run"):
        archive.set_verdict("nope", {})


# schema versions and migrations


def _from_sql(path: Path, sql: str) -> Path:
    db = sqlite3.connect(path)
    db.executescript(sql)
    db.close()
    return path


def _v1_archive(tmp_path: Path) -> Path:
    """An archive written by the previous podisco (before schema versions), rebuilt from its SQL dump."""
    return _from_sql(tmp_path / "archive.sqlite", (FIXTURES / "archive_v1.sql").read_text())


def _raw(path: Path) -> dict[str, list[dict]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: [dict(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}
    finally:
        db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def _columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def test_a_fresh_archive_has_the_current_version_and_every_attempt_field_is_a_column(tmp_path):
    Archive(tmp_path / "archive.sqlite").close()
    assert _user_version(tmp_path / "archive.sqlite") == SCHEMA_VERSION == 2
    assert set(_columns(tmp_path / "archive.sqlite", "attempts")) == {f.name for f in fields(Attempt)}
    assert "verdict" in _columns(tmp_path / "archive.sqlite", "runs")


def test_an_archive_from_before_versions_is_migrated_and_reads_back_unchanged(tmp_path):
    path = _v1_archive(tmp_path)
    before = _raw(path)
    assert _user_version(path) == 0 and len(before["attempts"]) == 5
    archive = Archive(path)
    assert archive.schema_version == SCHEMA_VERSION and _user_version(path) == SCHEMA_VERSION
    assert archive._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert archive._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

    # every stored value is unchanged; the new columns are there and empty
    after = _raw(path)
    assert set(after) == set(before)
    for table, rows in before.items():
        assert after[table] == [{**row, **dict.fromkeys(NEW_COLUMNS.get(table, ()))} for row in rows], table

    # and reads back through the archive with the same values
    attempts = archive.attempts("r1")
    assert [a.id for a in attempts] == [r["id"] for r in before["attempts"]]
    for attempt, row in zip(attempts, before["attempts"], strict=True):
        for name, value in row.items():
            if name in archive_module._JSON_FIELDS and value is not None:
                value = json.loads(value)
            expected = value if name != "metrics" else (value or {})
            assert getattr(attempt, name) == expected, (attempt.name, name)
        assert (attempt.deadline_s, attempt.rescaling) == (None, None)
    seed, hinge, broken, dup, pending = attempts
    assert (seed.status, seed.fitness, seed.seeds, seed.shape) == ("evaluated", 0.25, [0, 1], {"monotone": True})
    assert hinge.parents == [1] and hinge.llm_tokens == {"prompt": 120, "completion": 40, "requests": 1}
    assert (broken.status, broken.error, broken.metrics) == ("invalid", "SyntaxError: invalid syntax (line 2)", {})
    assert (dup.status, dup.duplicate_of, dup.code_hash) == ("duplicate", "dpo", seed.code_hash)
    assert (pending.status, pending.parents, pending.finished) == ("proposed", [2, 1], None)
    assert [a.name for a in archive.best("r1", 3)] == ["hinge", "dpo"]
    run = archive.run("r1")
    assert run["config"] == {"task": "imdb", "beta": 0.05, "generations": 2} and run["verdict"] is None
    assert {k: v for k, v in run.items() if k not in ("config", "verdict")} == {
        k: v for k, v in before["runs"][0].items() if k != "config"
    }
    assert [(m["role"], m["content"]) for m in archive.messages("r1")] == [
        (r["role"], r["content"]) for r in before["messages"]
    ]
    (again,) = archive.reevaluations("r1")
    assert (again["name"], again["seeds"], again["fitness"], again["metrics"]) == (
        "hinge",
        [0, 1, 2, 3],
        0.3,
        {"reward": 0.58, "kl": 2.4},
    )

    # the migrated archive takes new work: the crashed attempt is finished, a new one written and finished
    archive.finish(pending.id, "evaluated", fitness=0.4, seeds=[0, 1], deadline_s=900.0, rescaling="≈ dpo at β×2")
    new = archive.add_proposed("r1", 2, 1, "llm", "fresh", "", "def loss(x):\n    return x * x\n", [hinge.id])
    assert new == 6  # the AUTOINCREMENT sequence carried over
    archive.finish(new, "failed", error="nan loss", deadline_s=900.0)
    archive.set_verdict("r1", {"best": "pending"})
    archive.finish_run("r1")
    archive.close()

    reopened = Archive(path)
    finished = reopened.attempt(pending.id)
    assert (finished.status, finished.fitness, finished.deadline_s, finished.rescaling) == (
        "evaluated",
        0.4,
        900.0,
        "≈ dpo at β×2",
    )
    assert (reopened.attempt(new).status, reopened.attempt(new).rescaling) == ("failed", None)
    assert reopened.run("r1")["verdict"] == {"best": "pending"} and reopened.run("r1")["finished"]
    assert reopened.attempt(hinge.id) == hinge  # finished rows are not rewritten
    reopened.close()


def test_opening_twice_is_idempotent(tmp_path):
    path = _v1_archive(tmp_path)
    first = Archive(path)
    rows = _raw(path)
    second = Archive(path)  # while the first is open
    second.close()
    first.close()
    Archive(path).close()
    assert _raw(path) == rows and _user_version(path) == SCHEMA_VERSION
    assert _columns(path, "attempts").count("deadline_s") == 1 and _columns(path, "runs").count("verdict") == 1


def test_an_archive_from_a_newer_podisco_is_refused(tmp_path):
    path = tmp_path / "archive.sqlite"
    archive = Archive(path)
    archive.create_run("r1", {}, "imdb", "2-tiny", "bwrap")
    archive._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    archive.close()
    with pytest.raises(PodiscoError, match=rf"schema version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"):
        Archive(path)
    assert _user_version(path) == SCHEMA_VERSION + 1 and len(_raw(path)["runs"]) == 1


def test_a_failed_migration_changes_nothing(tmp_path, monkeypatch):
    path = _v1_archive(tmp_path)
    rows = _raw(path)

    def broken(db):
        db.execute("ALTER TABLE runs ADD COLUMN half_done TEXT")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(archive_module, "_MIGRATIONS", (*archive_module._MIGRATIONS, broken))
    monkeypatch.setattr(archive_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Archive(path)
    assert _user_version(path) == 0 and _raw(path) == rows  # neither v2 nor the half step: one transaction
    assert "deadline_s" not in _columns(path, "attempts")
    monkeypatch.undo()
    Archive(path).close()
    assert _user_version(path) == SCHEMA_VERSION


def test_an_unversioned_file_with_other_tables_is_refused(tmp_path):
    path = _from_sql(tmp_path / "archive.sqlite", "CREATE TABLE attempts (id INTEGER PRIMARY KEY, note TEXT);")
    with pytest.raises(PodiscoError, match=r"table 'attempts' lacks the columns \['run_id'.*not a podisco"):
        Archive(path)
    assert _user_version(path) == 0 and _columns(path, "attempts") == ["id", "note"]


def test_columns_the_attempt_does_not_know_are_ignored(tmp_path, archive):
    attempt_id = archive.add_proposed("r1", 1, 0, "evolve", "a", "", "code a")
    archive.finish(attempt_id, "evaluated", fitness=0.5, rescaling="≈ ipo")
    archive._db.execute("ALTER TABLE attempts ADD COLUMN from_the_future TEXT DEFAULT 'x'")
    reader = Archive(tmp_path / "archive.sqlite")
    attempt = reader.attempt(attempt_id)
    reader.close()
    assert (attempt.name, attempt.fitness, attempt.rescaling) == ("a", 0.5, "≈ ipo")
    assert not hasattr(attempt, "from_the_future")
