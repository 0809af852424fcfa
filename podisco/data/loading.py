"""Rows of a preference (or SFT) dataset from a local file, a saved ``datasets`` folder, or a hub id."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from podisco.errors import PodiscoError
from podisco.hub import looks_like_hub_id


class DataError(PodiscoError, ValueError):
    """A dataset that cannot be used as given; the message names the file, row and field."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path, split: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (found {', '.join(sorted(data))})")
        data = data[split]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of objects (or {{split: [objects]}})")
    return data


def _read_datasets_folder(path: Path, split: str) -> list[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (found {', '.join(sorted(data))})")
        data = data[split]
    return [dict(row) for row in data]


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Every row as a dict. Files by extension (.jsonl, .json, .csv, .parquet); a folder written by
    ``datasets``' ``save_to_disk``; otherwise ``owner/name`` is loaded from the Hugging Face hub (needs network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_datasets_folder(path, split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path, split)
        if suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv or .parquet)")
    if looks_like_hub_id(source):
        from datasets import load_dataset

        try:
            return [dict(row) for row in load_dataset(source, split=split)]
        except Exception as err:
            raise DataError(f"cannot load {source!r} split {split!r} from the hub: {err}") from err
    raise DataError(f"data path {source!r} does not exist (and is not a hub id of the form owner/name)")
