import sqlite3

import pytest

from podisco.discovery.archive import Archive, code_hash


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
