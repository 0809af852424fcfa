"""Issue 7: kill -9 the discovery process, and separately its workers, during real runs on the tiny task."""

import random

import pytest

from tests.reliability.crashes import kill_and_resume, kill_workers

pytestmark = pytest.mark.slow

SEEDS_AND_CANDIDATES = 4 + 2 * 2  # the paper's 4 seed losses, then 2 generations of 2


@pytest.fixture(scope="module")
def tiny_args(tmp_path_factory):
    from podisco.tasks.imdb.prepare import prepare

    cache = tmp_path_factory.mktemp("imdb")
    prepare("tiny", cache, log=lambda message: None)
    return ["--task", "imdb", "--preset", "tiny", "--cache-dir", str(cache)]


def test_killing_the_discovery_process_loses_and_repeats_nothing(tiny_args, tmp_path):
    records = kill_and_resume(tmp_path, "crash", tiny_args, 3, random.Random(11), SEEDS_AND_CANDIDATES)
    assert len(records) == 3


def test_killing_workers_fails_their_attempts_and_the_run_goes_on(tiny_args, tmp_path):
    killed = kill_workers(tmp_path, "workers", tiny_args, 2, random.Random(5), SEEDS_AND_CANDIDATES)
    assert killed >= 1
