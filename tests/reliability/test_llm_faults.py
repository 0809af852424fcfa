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
    # A content fault is fed back as an invalid attempt, or (seen once for the non-UTF-8 reply after a 1 MB
    # conversation) absorbed by a retry; either way the run goes on with one attempt per generation.
    invalid = [a for a in attempts if a.status == "invalid"]
    assert len(invalid) >= sum(1 for _, _, o in FAULTS if o != "retried") - 1
    assert "no JSON object" in outcome["feedback"] or "No JSON object" in outcome["feedback"]
    assert "incomplete" in outcome["feedback"]
