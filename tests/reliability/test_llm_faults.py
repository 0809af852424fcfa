"""Issue 7: LLM faults against a loopback server; the loop retries or feeds back, and never crashes."""

import pytest

from tests.reliability.llm_faults import FAULTS, run_with_faults

pytestmark = pytest.mark.slow


def test_every_fault_is_retried_or_fed_back(tmp_path):
    outcome = run_with_faults(tmp_path)
    attempts = outcome["attempts"]
    assert outcome["finished"] and len(attempts) == len(FAULTS)
    retried = [a for a in attempts if a.name.startswith("smooth_")]
    assert len(retried) == sum(1 for _, _, o in FAULTS if o == "retried")
    assert all(a.status == "evaluated" for a in retried)
    invalid = [a for a in attempts if a.status == "invalid"]
    assert len(invalid) == sum(1 for _, _, o in FAULTS if o != "retried")
    assert "no JSON object" in outcome["feedback"] or "No JSON object" in outcome["feedback"]
    assert "incomplete" in outcome["feedback"]
