"""Loading, validation, tokenisation: every format, and every bad input named by row and field."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from podisco.data import DataError, load_rows, tokenize_pairs, tokenize_sft, validate_rows

ROWS = [
    {"prompt": "the movie", "chosen": " was great", "rejected": " was bad"},
    {"prompt": "a film", "chosen": " is fun", "rejected": " is boring"},
]
WORDS = "the a movie film was is great good bad fun boring mov ie <user> <assistant>".split(" ")
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


@pytest.fixture
def tokenizer():
    vocab = {"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")
    tok.chat_template = TEMPLATE
    return tok


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_every_file_format_loads(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "s.json").write_text(json.dumps({"train": ROWS, "test": ROWS[:1]}))
    with open(tmp_path / "a.csv", "w") as fh:
        fh.write(
            "prompt,chosen,rejected\n" + "".join(f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"\n' for r in ROWS)
        )
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    for name in ("a.jsonl", "a.json", "s.json", "a.csv", "a.parquet", "saved"):
        assert load_rows(str(tmp_path / name)) == ROWS, name
    assert load_rows(str(tmp_path / "s.json"), split="test") == ROWS[:1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"prompt": "x"}\n{"prompt": \n', r"bad.jsonl:2: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", r"list.jsonl:1: expected a JSON object"),
        ("s.json", '{"train": []}', r"no split 'test'"),
        ("a.txt", "hello", r"unsupported file type '.txt'"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_rows(str(tmp_path / name), split="test" if name == "s.json" else "train")


def test_missing_path_is_not_mistaken_for_a_hub_id():
    with pytest.raises(DataError, match="does not exist"):
        load_rows("./no/such/file.jsonl")


def test_missing_column_lists_what_was_found():
    with pytest.raises(DataError, match=r"missing column\(s\) rejected \(found: chosen, prompt\)"):
        validate_rows([{"prompt": "a", "chosen": "b"}], "pairs.jsonl")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"chosen": 3}, r"pairs.jsonl: row 1: field 'chosen' must be text or a list of messages, got int"),
        ({"rejected": None}, r"row 1: field 'rejected' must be text or a list of messages, got NoneType"),
        (
            {"chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "x"}]},
            r"row 1: mixes text",
        ),
    ],
)
def test_wrong_types_name_row_and_field(bad, message):
    rows = [dict(ROWS[0]), {**ROWS[1], **bad}]
    with pytest.raises(DataError, match=message):
        validate_rows(rows, "pairs.jsonl")


def test_message_without_content_is_named():
    rows = [
        {
            "chosen": [{"role": "user", "content": "a"}, {"role": "assistant"}],
            "rejected": [{"role": "user", "content": "a"}],
        }
    ]
    with pytest.raises(DataError, match=r"row 0, field 'chosen': message 1 needs a string 'content'"):
        validate_rows(rows)


def test_empty_field_is_dropped_and_reported_or_raised():
    rows = [dict(ROWS[0]), {**ROWS[1], "rejected": "  "}]
    kept, report = validate_rows(rows, "p")
    assert [r["row"] for r in kept] == [0]
    assert report.dropped == [(1, "empty field 'rejected'")] and "kept 1 of 2 pairs" in str(report)
    with pytest.raises(DataError, match="row 1: empty field 'rejected'"):
        validate_rows(rows, "p", on_error="raise")


def test_implicit_prompt_for_text_and_for_conversations():
    (text,), _ = validate_rows([{"chosen": "the movie was great", "rejected": "the movie is bad"}])
    assert (text["prompt"], text["chosen"], text["rejected"]) == ("the movie ", "was great", "is bad")
    user = {"role": "user", "content": "the movie"}
    (conv,), _ = validate_rows(
        [
            {
                "chosen": [user, {"role": "assistant", "content": "great"}],
                "rejected": [user, {"role": "assistant", "content": "bad"}],
            }
        ]
    )
    assert conv["prompt"] == [user] and conv["chosen"] == [{"role": "assistant", "content": "great"}]


def test_boundary_is_the_common_prefix_of_the_full_tokenizations(tokenizer):
    # "the mov" + "ie was great": tokenize(prompt) = [the, <unk>] is not a prefix of tokenize("the movie was great").
    rows, _ = validate_rows([{"prompt": "the mov", "chosen": "ie was great", "rejected": "ie was bad<eos>"}])
    (ex,), report = tokenize_pairs(rows, tokenizer, max_length=16)
    assert report.kept == 1
    assert ex.prompt_ids == _ids(tokenizer, "the")
    assert ex.chosen_ids == _ids(tokenizer, "movie was great") + [0]  # EOS appended
    assert ex.rejected_ids == _ids(tokenizer, "movie was bad") + [0]  # EOS already there: not doubled
    assert ex.prompt_ids + ex.chosen_ids[:-1] == _ids(tokenizer, "the movie was great")


def test_conversational_pairs_use_the_chat_template(tokenizer):
    user = {"role": "user", "content": "the movie"}
    rows, _ = validate_rows(
        [
            {
                "prompt": [user],
                "chosen": [{"role": "assistant", "content": "was great"}],
                "rejected": [{"role": "assistant", "content": "was bad"}],
            }
        ]
    )
    (ex,), _ = tokenize_pairs(rows, tokenizer, max_length=32)
    assert ex.prompt_ids == _ids(tokenizer, "<user> the movie <assistant>")
    assert ex.chosen_ids == _ids(tokenizer, "was great")  # the template ends the turn: no EOS added


def test_long_prompts_are_dropped_with_the_row_named_and_completions_truncated(tokenizer):
    rows, _ = validate_rows([dict(ROWS[0]), {"prompt": "the movie was great", "chosen": " good", "rejected": " bad"}])
    examples, report = tokenize_pairs(rows, tokenizer, max_length=4)
    assert [e.row for e in examples] == [0]
    assert report.dropped == [(1, "prompt has 4 tokens >= max_length 4")]
    assert len(examples[0].prompt_ids) + len(examples[0].chosen_ids) == 4  # " was great<eos>" cut to 2 tokens
    with pytest.raises(DataError, match="row 1: prompt has 4 tokens >= max_length 4"):
        tokenize_pairs(rows, tokenizer, max_length=4, on_error="raise")


def test_sft_rows(tokenizer):
    examples, report = tokenize_sft(
        [{"text": "the movie was great"}, {"prompt": "a film", "completion": " is fun"}, {"text": ""}], tokenizer, 16
    )
    assert [e.row for e in examples] == [0, 1] and report.dropped == [(2, "fewer than 2 tokens")]
    assert examples[1].prompt_ids == _ids(tokenizer, "a film") and examples[1].completion_ids == _ids(
        tokenizer, "is fun"
    ) + [0]
    with pytest.raises(DataError, match="row 0: needs a 'text' string"):
        tokenize_sft([{"body": "x"}], tokenizer, 16)


def test_a_missing_file_in_a_folder_is_not_sent_to_the_hub():
    with pytest.raises(DataError, match="does not exist"):
        load_rows("data/pairs.jsonl")
