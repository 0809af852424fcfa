"""parse_proposal on the replies models really send, and the exact advice each broken reply gets back."""

from __future__ import annotations

import json

import pytest

from podisco.discovery.proposers.parse import (
    Proposal,
    ProposalError,
    extract_json_object,
    parse_proposal,
    sanitize_name,
)

DPO_LIKE = '''import torch
import torch.nn.functional as F


def my_loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps) -> torch.FloatTensor:
    """Logistic loss on the log-ratio margin, with a small hinge so that confident pairs still move."""

    def margin(a, b):
        return a - b

    logits = margin(policy_chosen_logps, policy_rejected_logps) - margin(
        reference_chosen_logps, reference_rejected_logps
    )
    losses = -F.logsigmoid(self.beta * logits) + 0.1 * torch.relu(1 - self.beta * logits)
    return losses
'''  # noqa: E501 (the signature line is the one DiscoPOP's prompt asks for)


def reply(thought: object = "Add a hinge.", name: object = "my_loss", code: object = DPO_LIKE) -> str:
    return json.dumps({"thought": thought, "name": name, "code": code})


def error_of(text: str) -> str:
    with pytest.raises(ProposalError) as caught:
        parse_proposal(text)
    return str(caught.value)


def test_typical_dpo_like_reply() -> None:
    proposal = parse_proposal(reply())
    assert proposal == Proposal(thought="Add a hinge.", name="my_loss", code=DPO_LIKE)
    assert proposal.function_name == "my_loss"
    assert "self.beta" in proposal.code and "F.logsigmoid" in proposal.code


def test_function_name_may_differ_from_name() -> None:
    proposal = parse_proposal(reply(name="hinge_logistic"))
    assert (proposal.name, proposal.function_name) == ("hinge_logistic", "my_loss")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda j: f"```json\n{j}\n```",
        lambda j: f"```\n{j}\n```",
        lambda j: f"Here is my proposal:\n\n{j}\n\nI think it will work {{well}}.",
        lambda j: f"Thinking {{about sets}} first.\n```json\n{j}\n```\nDone.",
        lambda j: json.dumps(j),  # encoded twice
    ],
    ids=["json-fence", "bare-fence", "prose", "prose-and-fence", "double-encoded"],
)
def test_object_is_found_wherever_it_is(wrap) -> None:
    assert parse_proposal(wrap(reply())).code == DPO_LIKE


def test_braces_and_escaped_quotes_inside_strings() -> None:
    code = 'def f(self, a):\n    d = {"k": "}{"}\n    return a * len(d)\n'
    text = "Sure! " + reply(thought='I like "braces" like } and {', name="f", code=code) + " {trailing"
    proposal = parse_proposal(text)
    assert proposal.code == code and proposal.thought == 'I like "braces" like } and {'


def test_raw_newlines_inside_strings() -> None:
    text = '{"thought": "line one\nline two", "name": "f", "code": "def f(x):\n    return x\n"}'
    proposal = parse_proposal("Proposal:\n" + text)
    assert proposal.thought == "line one\nline two" and proposal.code == "def f(x):\n    return x\n"


def test_invalid_backslash_escapes_are_tolerated() -> None:
    text = r'{"thought": "match \d+ and keep \\n", "name": "f", "code": "def f(x):\n    return x\n"}'
    assert parse_proposal(text).thought == "match \\d+ and keep \\n"


@pytest.mark.parametrize(
    "code",
    [f"```python\n{DPO_LIKE}```", f"```\n{DPO_LIKE}\n```\n", f"```py\n{DPO_LIKE}"],
    ids=["python-fence", "bare-fence", "unclosed-fence"],
)
def test_code_fence_inside_code_is_stripped(code: str) -> None:
    assert parse_proposal(reply(code=code)).code == DPO_LIKE


def test_code_fences_inside_a_fenced_reply() -> None:
    escaped = "```json\n" + reply(code=f"```python\n{DPO_LIKE}```") + "\n```"
    assert parse_proposal(escaped).code == DPO_LIKE
    raw_newlines = '```json\n{"thought": "t", "name": "f", "code": "```python\ndef f(x):\n    return x\n```"}\n```'
    assert parse_proposal(raw_newlines).code == "def f(x):\n    return x\n"


def test_uniformly_indented_code_is_dedented() -> None:
    assert parse_proposal(reply(code="    def f(x):\n        return x\n", name="f")).code == "def f(x):\n    return x\n"


def test_no_json_object() -> None:
    message = error_of("I would use a hinge loss with margin 1.")
    assert "No JSON object found" in message and '"thought", "name" and "code"' in message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1, 2]", "list"), ('```json\n["a"]\n```', "list"), ('"just text"', "string"), ("42", "number")],
)
def test_json_that_is_not_an_object(text: str, kind: str) -> None:
    assert f"The reply is a JSON {kind}, not an object" in error_of(text)


@pytest.mark.parametrize(
    "text",
    [
        reply()[:-40],
        reply()[:25],
        "Here you go:\n```json\n" + reply()[:120],
        'Sure {x} here: {"thought": "a {b} c", "name": "f", "code": "def f(',
    ],
    ids=["mid-code", "mid-thought", "in-open-fence", "after-prose-braces"],
)
def test_truncated_reply(text: str) -> None:
    assert "The JSON object is incomplete (truncated reply?)" in error_of(text)


def test_balanced_but_invalid_json() -> None:
    message = error_of('Here: {"thought": "x", "name": "f", "code": "def f(): pass",}')
    assert "is not valid JSON" in message and "line 1 column" in message


def test_inner_fragment_of_broken_object_is_not_taken() -> None:
    text = '{"thought": "x" "name": "f", "code": "def f():\n    return {}\n"}'
    assert "is not valid JSON" in error_of(text)


def test_missing_keys_are_named() -> None:
    message = error_of(json.dumps({"name": "f"}))
    assert 'missing the key(s) "thought", "code"' in message


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [("code", ["def f(): pass"], "list"), ("name", 3, "number"), ("thought", None, "null"), ("code", {}, "object")],
)
def test_wrong_type(key: str, value: object, kind: str) -> None:
    fields = {"thought": "t", "name": "f", "code": "def f():\n    return 1\n", key: value}
    assert f'The key "{key}" must be a string, but it is a JSON {kind}' in error_of(json.dumps(fields))


def test_empty_name_and_code() -> None:
    assert 'The "name" is empty' in error_of(reply(name="  "))
    assert 'The "code" is empty' in error_of(reply(code="\n  \n"))
    assert 'The "code" is empty' in error_of(reply(code="```python\n```"))


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("log-ratio loss", "log_ratio_loss"),
        ("HingeLogistic!", "hinge_logistic"),
        ("2step", "loss_2step"),
        ("lambda", "lambda_"),
        ("σ_loss", "loss"),
        ("!!!", "loss"),
    ],
)
def test_name_must_be_an_identifier(name: str, suggestion: str) -> None:
    message = error_of(reply(name=name))
    assert "is not a valid Python identifier" in message and f'use something like "{suggestion}"' in message
    assert sanitize_name(name).isidentifier()


def test_syntax_error_names_the_line() -> None:
    message = error_of(reply(code="def f(x):\n    return x +\n"))
    assert 'The "code" is not valid Python: invalid syntax at line 2' in message
    assert "'return x +'" in message


def test_no_function() -> None:
    assert 'The "code" has no function definition' in error_of(reply(code="import torch\n"))


def test_more_than_one_function_is_named() -> None:
    code = "def helper(x):\n    return x\n\n\ndef f(x):\n    return helper(x)\n"
    assert "defines 2 top-level functions (helper, f)" in error_of(reply(code=code, name="f"))


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("import torch\nALPHA = 0.5\n\ndef f(x):\n    return x\n", "top-level statement at line 2 ('ALPHA = 0.5')"),
        ("def f(x):\n    return x\n\nprint(f(1))\n", "top-level statement at line 4 ('print(f(1))')"),
        ("class L:\n    pass\n\ndef f(x):\n    return x\n", "top-level class at line 1"),
        ("async def f(x):\n    return x\n", "top-level async def at line 1"),
    ],
)
def test_other_top_level_statements(code: str, fragment: str) -> None:
    assert fragment in error_of(reply(code=code, name="f"))


def test_imports_docstring_and_nested_helpers_are_fine() -> None:
    code = '"""Module doc."""\nimport math\nfrom torch import nn\n\n'
    code += "def f(x):\n    def g(y):\n        return y\n\n    return g(x)\n"
    assert parse_proposal(reply(code=code, name="f")).code == code


def test_extract_json_object_directly() -> None:
    assert extract_json_object('noise {"a": {"b": [1, "}"]}} noise') == {"a": {"b": [1, "}"]}}
    with pytest.raises(ProposalError, match="No JSON object found"):
        extract_json_object("")


def test_a_long_reply_is_quick() -> None:
    noise = "{ " * 5000  # thousands of unmatched braces must not make the scan quadratic in practice
    with pytest.raises(ProposalError, match="incomplete"):
        parse_proposal(noise)
