"""validate_rows: normalisation, implicit prompts, and every bad input named by row and field."""

from __future__ import annotations

import pytest

from podisco.data import DataError, validate_rows

ROWS = [
    {"prompt": "the movie", "chosen": " was great", "rejected": " was bad"},
    {"prompt": "a film", "chosen": " is fun", "rejected": " is boring"},
]
USER = {"role": "user", "content": "the movie?"}


def _turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_rows_are_normalised_with_their_source_index():
    rows, report = validate_rows([{**ROWS[0], "extra": 1}, ROWS[1]], "pairs.jsonl")
    assert rows == [{"row": 0, **ROWS[0]}, {"row": 1, **ROWS[1]}]
    assert report.kept == 2 and not report.dropped and str(report) == "kept 2 of 2 pairs"


def test_a_missing_column_is_reported_once_with_the_columns_found():
    rows = [{"prompt": "a", "chosen": "b", "score": 1}] * 3
    with pytest.raises(DataError, match=r"^pairs.jsonl: missing column\(s\) rejected \(found: chosen, prompt, score\)"):
        validate_rows(rows, "pairs.jsonl")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"chosen": 3}, r"^pairs.jsonl: row 1: field 'chosen' must be text or a list of messages, got int$"),
        ({"rejected": None}, r"^pairs.jsonl: row 1: field 'rejected' must be text or a list of messages, got NoneType"),
        ({"prompt": 2.5}, r"row 1: field 'prompt' must be text or a list of messages, got float"),
        ({"chosen": _turn("x"), "rejected": _turn("y")}, r"row 1: mixes text and message lists"),
    ],
)
def test_wrong_types_name_row_and_field(bad, message):
    with pytest.raises(DataError, match=message):
        validate_rows([dict(ROWS[0]), {**ROWS[1], **bad}], "pairs.jsonl")


def test_a_field_missing_from_one_row_is_named():
    with pytest.raises(DataError, match=r"row 1: missing field 'prompt'"):
        validate_rows([dict(ROWS[0]), {"chosen": "a", "rejected": "b"}], "p")


def test_every_malformed_row_is_counted_and_the_first_few_listed():
    rows = [{**ROWS[0], "chosen": i} for i in range(8)]
    with pytest.raises(DataError, match=r"^p: 8 malformed rows: row 0: field 'chosen'.*; row 4: .*; and 3 more$"):
        validate_rows(rows, "p", on_error="drop")  # structural faults raise whatever on_error says


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "assistant"}, r"row 0: field 'chosen': message 1 needs a string 'content' \(got None\)"),
        ({"content": "x"}, r"row 0: field 'chosen': message 1 needs a string 'role'"),
        ({"role": "assistant", "content": ["parts"]}, r"message 1 needs a string 'content' \(got \['parts'\]\)"),
        ("hello", r"row 0: field 'chosen': message 1 must be a \{'role', 'content'\} object"),
    ],
)
def test_a_bad_message_is_named(message, expected):
    rows = [{"chosen": [USER, message], "rejected": [USER, *_turn("no")]}]
    with pytest.raises(DataError, match=expected):
        validate_rows(rows)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"rejected": "  "}, "rejected"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [USER], "chosen": [], "rejected": _turn("x")}, "chosen"),
        ({"prompt": [USER], "chosen": _turn("x"), "rejected": _turn(" ")}, "rejected"),
    ],
)
def test_an_empty_field_is_dropped_and_reported_or_raised(bad, field):
    rows = [dict(ROWS[0]), {**ROWS[1], **bad}]
    kept, report = validate_rows(rows, "p")
    assert [r["row"] for r in kept] == [0]
    assert report.dropped == [(1, f"field {field!r} is empty")]
    assert str(report) == f"kept 1 of 2 pairs; dropped 1: row 1: field {field!r} is empty"
    with pytest.raises(DataError, match=f"^p: row 1: field {field!r} is empty$"):
        validate_rows(rows, "p", on_error="raise")


@pytest.mark.parametrize(
    ("chosen", "rejected", "split"),
    [
        # Diverging at a word start: as TRL, the space before the divergence goes to the completions.
        ("the movie was great", "the movie is bad", ("the movie", " was great", " is bad")),
        # Diverging inside a word: TRL would give "the movie was g" / "reat"; we cut back to the last space.
        ("the movie was great", "the movie was good", ("the movie was", " great", " good")),
        ("Q: why?\nA: yes", "Q: why?\nA: no", ("Q: why?\nA:", " yes", " no")),
        # One text a prefix of the other: neither completion may end up empty.
        ("the movie was", "the movie was bad", ("the movie", " was", " was bad")),
        ("great", "good", ("", "great", "good")),  # no shared whitespace: no prompt
    ],
)
def test_implicit_prompt_for_text(chosen, rejected, split):
    (row,), _ = validate_rows([{"chosen": chosen, "rejected": rejected}])
    assert (row["prompt"], row["chosen"], row["rejected"]) == split
    assert row["prompt"] + row["chosen"] == chosen and row["prompt"] + row["rejected"] == rejected


def test_implicit_prompt_for_conversations():
    system = {"role": "system", "content": "be brief"}
    rows = [
        {"chosen": [system, USER, *_turn("great")], "rejected": [system, USER, *_turn("bad")]},
        {"chosen": [USER, *_turn("same")], "rejected": [USER, *_turn("same")]},  # identical: keep a message each
    ]
    (first, second), _ = validate_rows(rows)
    assert first["prompt"] == [system, USER] and first["chosen"] == _turn("great") and first["rejected"] == _turn("bad")
    assert second["prompt"] == [USER] and second["chosen"] == second["rejected"] == _turn("same")


def test_explicit_conversational_rows_keep_extra_message_keys():
    named = {"role": "user", "content": "hi", "name": "ann"}
    (row,), _ = validate_rows([{"prompt": [named], "chosen": _turn("a"), "rejected": _turn("b")}])
    assert row["prompt"] == [named]


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_error must be 'drop' or 'raise'"):
        validate_rows(ROWS, on_error="skip")
    with pytest.raises(DataError, match="p: no rows"):
        validate_rows([], "p")
