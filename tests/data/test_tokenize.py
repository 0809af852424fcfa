"""tokenize_pairs / tokenize_sft: the common-prefix boundary, EOS, chat templates, keep_start truncation."""

from __future__ import annotations

import pytest

from podisco.data import DataError, DropReport, tokenize_pairs, tokenize_sft, validate_rows
from tests.data.conftest import ids

USER = {"role": "user", "content": "the movie?"}


def _turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_boundary_is_the_common_prefix_of_the_full_tokenizations(tokenizer):
    prompt, chosen, rejected = "the movie ", "was great", "was bad<eos>"
    # Byte-level BPE: " was" is one token, so tokenize(prompt) (ending in a lone space) is no prefix of the full.
    assert ids(tokenizer, prompt) + ids(tokenizer, chosen) != ids(tokenizer, prompt + chosen)
    rows, _ = validate_rows([{"prompt": prompt, "chosen": chosen, "rejected": rejected}])
    (ex,), report = tokenize_pairs(rows, tokenizer, max_length=32)
    full_chosen, full_rejected = ids(tokenizer, prompt + chosen), ids(tokenizer, prompt + rejected)
    assert ex.prompt_ids == ids(tokenizer, "the movie") == full_chosen[: len(ex.prompt_ids)]
    eos = tokenizer.eos_token_id
    assert ex.chosen_ids == full_chosen[len(ex.prompt_ids) :] + [eos]  # EOS appended once
    assert ex.rejected_ids == full_rejected[len(ex.prompt_ids) :] and ex.rejected_ids.count(eos) == 1  # not doubled
    assert report.kept == 1 and report.boundary_merged == [0]
    assert "1 had the tokenizer merge across the prompt/completion boundary (rows 0)" in str(report)


def test_a_clean_boundary_keeps_the_prompt_tokenization(tokenizer):
    rows, _ = validate_rows([{"prompt": "the movie", "chosen": " was great", "rejected": " was bad"}])
    (ex,), report = tokenize_pairs(rows, tokenizer, max_length=32)
    assert ex.prompt_ids == ids(tokenizer, "the movie") and not report.boundary_merged
    assert ex.chosen_ids == ids(tokenizer, " was great") + [tokenizer.eos_token_id]


def test_conversational_pairs_use_the_chat_template_and_no_extra_eos(tokenizer):
    rows, _ = validate_rows([{"chosen": [USER, *_turn("great")], "rejected": [USER, *_turn("bad")]}])  # implicit
    (ex,), report = tokenize_pairs(rows, tokenizer, max_length=32)
    assert ex.prompt_ids == ids(tokenizer, "<|user|>the movie?<eos><|assistant|>")
    assert ex.chosen_ids == ids(tokenizer, "great<eos>")  # the template ends the turn
    assert ex.rejected_ids == ids(tokenizer, "bad<eos>") and not report.boundary_merged


def test_conversational_data_needs_a_chat_template(tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>")
    rows, _ = validate_rows([{"prompt": [USER], "chosen": _turn("a"), "rejected": _turn("b")}])
    with pytest.raises(DataError, match="row 0: conversational data needs a tokenizer with a chat_template"):
        tokenize_pairs(rows, plain, max_length=32)


def test_truncation_keeps_the_start_and_long_prompts_are_dropped_naming_the_row(tokenizer):
    rows, _ = validate_rows(
        [
            {"prompt": "the movie", "chosen": " was great and the acting was good", "rejected": " was bad"},
            {"prompt": "the film was bad and the plot", "chosen": " was", "rejected": " is"},  # > 6 tokens
            {"prompt": "a", "chosen": " great story", "rejected": " bad"},
        ]
    )
    examples, report = tokenize_pairs(rows, tokenizer, max_length=6)
    assert [e.row for e in examples] == [0, 2]
    first = examples[0]
    assert len(first.prompt_ids) + max(len(first.chosen_ids), len(first.rejected_ids)) == 6
    assert first.chosen_ids == ids(tokenizer, " was great and the acting was good")[:4]  # keep_start: EOS cut off
    assert first.rejected_ids == ids(tokenizer, " was bad") + [tokenizer.eos_token_id]  # fits: untouched
    n = len(ids(tokenizer, "the film was bad and the plot"))
    assert n > 6 and report.dropped == [(1, f"prompt has {n} tokens >= max_length 6")]
    assert str(report) == f"kept 2 of 3 pairs; dropped 1: row 1: prompt has {n} tokens >= max_length 6"
    with pytest.raises(DataError, match=rf"^row 1: prompt has {n} tokens >= max_length 6$"):
        tokenize_pairs(rows, tokenizer, max_length=6, on_error="raise")


def test_source_rows_survive_validation_drops(tokenizer):
    rows, checked = validate_rows(
        [
            {"prompt": "the", "chosen": " movie", "rejected": " film"},
            {"prompt": "the", "chosen": "", "rejected": " film"},  # dropped by validation
            {"prompt": "the film was bad and the plot", "chosen": " was", "rejected": " is"},  # by tokenisation
        ]
    )
    examples, tokenized = tokenize_pairs(rows, tokenizer, max_length=4)
    assert [e.row for e in examples] == [0]
    merged = checked.merge(tokenized)
    assert merged.kept == 1 and [r for r, _ in merged.dropped] == [1, 2]
    assert str(merged).startswith("kept 1 of 3 pairs; dropped 2: row 1: field 'chosen' is empty; row 2: prompt has")


def test_drop_report_lists_a_few_rows_then_counts():
    report = DropReport(total=10, dropped=[(i, "bad") for i in range(7)])
    assert (
        str(report)
        == "kept 3 of 10 pairs; dropped 7: row 0: bad; row 1: bad; row 2: bad; row 3: bad; row 4: bad; and 2 more"
    )


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        tokenize_pairs([], tokenizer, max_length=1)
    with pytest.raises(ValueError, match="on_error"):
        tokenize_sft([], tokenizer, max_length=8, on_error="ignore")


def test_sft_rows_of_every_shape(tokenizer):
    eos = tokenizer.eos_token_id
    rows = [
        "the movie was great",
        {"text": "the film was bad"},
        {"prompt": "the movie", "completion": " was fun"},
        {"messages": [USER, *_turn("great")]},
        {"prompt": [USER], "completion": _turn("great")},
        {"text": ""},
    ]
    examples, report = tokenize_sft(rows, tokenizer, max_length=32)
    assert [e.row for e in examples] == [0, 1, 2, 3, 4]
    assert report.dropped == [(5, "nothing to score (fewer than 2 tokens)")] and "of 6 examples" in str(report)
    assert examples[0].prompt_ids == [] and examples[0].completion_ids == ids(tokenizer, "the movie was great") + [eos]
    assert examples[2].prompt_ids == ids(tokenizer, "the movie")
    assert examples[2].completion_ids == ids(tokenizer, " was fun") + [eos]
    assert examples[3].prompt_ids == [] and examples[3].completion_ids == ids(
        tokenizer, "<|user|>the movie?<eos><|assistant|>great<eos>"
    )
    assert examples[4].prompt_ids == ids(tokenizer, "<|user|>the movie?<eos><|assistant|>")
    assert examples[4].completion_ids == ids(tokenizer, "great<eos>")


def test_sft_truncation_and_bad_rows(tokenizer):
    examples, report = tokenize_sft(
        [{"prompt": "the movie was great", "completion": " ok"}, "the film was bad"], tokenizer, 3
    )
    assert report.dropped == [(0, "prompt has 4 tokens >= max_length 3")]
    assert examples[0].completion_ids == ids(tokenizer, "the film was")
    with pytest.raises(DataError, match=r"row 1: an SFT row needs a 'text' string.*found body: str"):
        tokenize_sft(["fine", {"body": "x"}], tokenizer, 16)
    with pytest.raises(DataError, match=r"row 0: field 'messages': message 0 needs a string 'role'"):
        tokenize_sft([{"messages": [{"content": "x"}]}], tokenizer, 16)


def test_a_chat_template_that_rejects_the_messages_is_a_hard_error_naming_the_row(tokenizer):
    strict = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<eos>")
    strict.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    rows, _ = validate_rows([{"prompt": [USER], "chosen": _turn("a"), "rejected": _turn("b")}])
    with pytest.raises(DataError, match="row 0: the chat template rejects these messages: Conversation roles must"):
        tokenize_pairs(rows, strict, max_length=32)


def test_an_sft_conversation_with_no_completion_is_dropped(tokenizer):
    _, report = tokenize_sft([{"prompt": [USER], "completion": []}], tokenizer, 32)
    assert report.dropped == [(0, "nothing to score (no completion tokens)")]
