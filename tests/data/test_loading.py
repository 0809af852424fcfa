"""load_rows: every file format, saved datasets folders, the hub branch (faked), and unreadable input named."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from podisco.data import DataError, load_rows

ROWS = [
    {"prompt": "the movie", "chosen": " was great", "rejected": " was bad"},
    {"prompt": 'a film, "quoted"', "chosen": " is fun", "rejected": " is boring"},
]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_every_file_format_loads(tmp_path):
    from datasets import Dataset, DatasetDict

    (tmp_path / "a.jsonl").write_text(_jsonl(ROWS) + "\n")  # a trailing blank line is fine
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "lines.json").write_text(_jsonl(ROWS))  # JSON Lines under a .json name, as on the hub
    (tmp_path / "s.json").write_text(json.dumps({"train": ROWS, "test": ROWS[:1]}))
    with open(tmp_path / "a.csv", "w", newline="") as fh:
        import csv

        writer = csv.DictWriter(fh, fieldnames=["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows(ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[1:])}).save_to_disk(
        str(tmp_path / "dict")
    )
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    for name in ("a.jsonl", "a.json", "lines.json", "s.json", "a.csv", "a.parquet", "dict", "single"):
        assert load_rows(str(tmp_path / name)) == ROWS, name
    assert load_rows(str(tmp_path / "s.json"), split="test") == ROWS[:1]
    assert load_rows(str(tmp_path / "dict"), split="test") == ROWS[1:]


def test_conversational_rows_survive_parquet_and_saved_datasets(tmp_path):
    from datasets import Dataset

    rows = [{"chosen": [{"role": "user", "content": "hi"}], "rejected": [{"role": "user", "content": "yo"}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "c"))
    assert load_rows(str(tmp_path / "c.parquet")) == rows
    assert load_rows(str(tmp_path / "c")) == rows


@pytest.mark.parametrize(
    ("name", "content", "split", "message"),
    [
        ("bad.jsonl", '{"prompt": "x"}\n\n{"prompt": \n', "train", r"bad.jsonl:3: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "train", r"list.jsonl:1: expected a JSON object, got list"),
        ("bad.json", '[{"a": 1}, 2]', "train", r"bad.json: row 1: expected a JSON object, got int"),
        ("broken.json", '{"a": ', "train", r"broken.json: not valid JSON"),
        ("s.json", '{"train": []}', "test", r"no split 'test' \(found train\)"),
        ("wide.csv", "prompt,chosen\na,b\nc,d,e\n", "train", r"wide.csv: row 1: more cells than the 2 header"),
        ("a.txt", "hello", "train", r"unsupported file type '.txt'"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, split, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_rows(str(tmp_path / name), split=split)


def test_a_folder_that_is_not_a_saved_dataset_is_named(tmp_path):
    (tmp_path / "x.jsonl").write_text(_jsonl(ROWS))
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        load_rows(str(tmp_path))


@pytest.mark.parametrize("source", ["./no/such/file.jsonl", "data/pairs.jsonl", "/abs/missing", "just-a-name"])
def test_a_missing_local_path_is_not_sent_to_the_hub(source, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not reach the hub"))
    with pytest.raises(DataError, match="does not exist"):
        load_rows(source)


def test_a_hub_id_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(source, split):
        calls.append((source, split))
        if split == "nope":
            raise ValueError("Unknown split 'nope'")
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_rows("owner/prefs", split="test") == ROWS and calls == [("owner/prefs", "test")]
    with pytest.raises(DataError, match=r"cannot load 'owner/prefs' split 'nope' from the hub: Unknown split"):
        load_rows("owner/prefs", split="nope")
