"""The proposer's feedback: each outcome in words a model can act on (issue: real LLMs in the loop)."""

from __future__ import annotations

import pytest

from podisco.discovery.archive import Attempt, proposer_cost
from podisco.discovery.boundary.gate import GateError, check_code
from podisco.discovery.proposers import prompts


def attempt(status: str, **fields: object) -> Attempt:
    base = dict(
        id=7, run_id="r", generation=2, slot=0, proposer="llm", parents=[], name="mine", thought="", code="",
        code_hash="h", status=status, task="imdb", task_version="4", config_hash="c", created=0.0,
    )  # fmt: skip
    return Attempt(**{**base, **fields})


def test_a_resubmission_is_answered_with_the_earlier_attempt_and_its_outcome():
    same = attempt("duplicate", duplicate_of="attempt:3 hinge_dpo", fitness=-0.0123, error=prompts.SAME_CODE)
    text = prompts.feedback_message(same, best=0.01)
    assert "is the same code as attempt 3 (hinge_dpo), which scored fitness -0.0123" in text
    alike = attempt("duplicate", duplicate_of="registry:ipo", fitness=0.002, error="behaves like registry:ipo")
    assert "behaves like registry:ipo, which scored fitness 0.0020" in prompts.feedback_message(alike, None)


def test_invalid_feedback_ends_its_sentence_before_asking_for_a_fix():
    broken = attempt("invalid", error="the loss must return shape (8,), got (8, 10)")
    assert prompts.feedback_message(broken, None).endswith("got (8, 10). Please fix it.")
    done = attempt("invalid", error="line 2: syntax error.")
    assert "syntax error. Please fix it." in prompts.feedback_message(done, None)


def test_the_gate_says_what_is_allowed_instead():
    code = "def f(self, a, b, c, d):\n    return torch.special.expit(a - b)\n"
    with pytest.raises(GateError) as caught:
        check_code(code)
    message = str(caught.value)
    assert message.startswith("line 2: torch.special.expit is not allowed.")
    assert "Only torch.NAME with one of these NAMEs may be used:" in message and " sigmoid " in message
    with pytest.raises(GateError, match=r"Did you mean F\.logsigmoid, "):
        check_code("import torch.nn.functional as F\ndef f(self, a, b, c, d):\n    return F.log_sigmoid(a)\n")
    # the whole hint reaches the model: the feedback keeps it
    fed_back = prompts.feedback_message(attempt("invalid", error=f"rejected by the static gate: {message}"), None)
    assert " sigmoid " in fed_back and fed_back.endswith("Please fix it.")


def test_the_reply_schema_asks_for_the_three_keys():
    assert prompts.REPLY_SCHEMA["required"] == ["thought", "name", "code"]
    assert set(prompts.REPLY_SCHEMA["properties"]) == {"thought", "name", "code"}


def test_proposer_cost_sums_the_calls_and_counts_the_formats():
    calls = [
        attempt("evaluated", llm_tokens={"prompt": 100, "completion": 40, "requests": 2, "latency_s": 3.0,
                                          "mode": "json_schema"}),
        attempt("invalid", llm_tokens={"prompt": 120, "completion": 10, "requests": 1, "latency_s": 1.0,
                                        "mode": "text"}),
        attempt("evaluated"),  # a seed: no LLM call
    ]  # fmt: skip
    assert proposer_cost(calls) == (
        "2 replies (3 requests): 220 prompt + 50 completion tokens, 4 s waiting (2.0 s per reply); "
        "formats json_schema 1, text 1"
    )
    assert proposer_cost([attempt("evaluated")]) is None


def test_archive_mode_shows_a_worked_example_that_parses():
    from podisco.discovery.proposers.parse import parse_proposal
    from podisco.tasks.seeds import PREFERENCE_SEEDS

    name, code = next(iter(PREFERENCE_SEEDS.items()))
    example = prompts.example_reply(name, code)
    digest = prompts.archive_digest([], [], [], [], example)
    assert example in digest and digest.endswith("Propose one new loss function.")
    parsed = parse_proposal(example)
    assert (parsed.name, parsed.code) == (name, code)
    check_code(parsed.code)
