"""Issue 7: every hostile candidate is rejected by the gate or contained by the sandbox, at the real isolation
level and at the fallback level; and the next candidate runs on an unpatched torch."""

import pytest

from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.boundary.sandbox import detect_isolation
from tests.reliability.containment import contain
from tests.reliability.hostile import HOSTILE, code

pytestmark = pytest.mark.slow

PASSES_GATE = []
for _name, _, _ in HOSTILE:
    try:
        check_code(code(_name))
        PASSES_GATE.append(_name)
    except GateError:
        pass


def test_there_are_at_least_forty_distinct_attacks():
    assert len({name for name, _, _ in HOSTILE}) >= 40 and len({what for _, what, _ in HOSTILE}) >= 15


@pytest.mark.parametrize("name", [name for name, _, _ in HOSTILE])
def test_hostile_candidate_is_rejected_or_contained(name, tmp_path):
    result = contain(name, detect_isolation(), tmp_path / "work")
    assert result["outcome"] in ("rejected", "contained"), result


@pytest.mark.parametrize("name", PASSES_GATE)
def test_at_the_fallback_level_too(name, tmp_path):
    result = contain(name, "process", tmp_path / "work")
    assert result["outcome"] == "contained", result


def test_a_patching_candidate_cannot_reach_the_next_one(tmp_path):
    # Rejected by the gate; and were it not, one job is one process, so the next job imports a fresh torch.
    assert contain("patch_torch", detect_isolation(), tmp_path / "a")["outcome"] == "rejected"
    from podisco.discovery.boundary.job import Job
    from podisco.discovery.executors import ExecutionSettings, execute
    from podisco.tasks.seeds import PREFERENCE_SEEDS
    from tests.discovery.configs import job_spec

    job = Job(task=job_spec("imdb"), name="dpo", beta=0.05, seeds=(), code=PREFERENCE_SEEDS["dpo"])
    result = execute(job, tmp_path / "b", ExecutionSettings(isolation=detect_isolation()))
    assert result["status"] == "evaluated" and result["shape"]["nearest_known"][0][0] == "sigmoid"
