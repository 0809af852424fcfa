"""Rows of a preference (or SFT) dataset from a local file, a saved ``datasets`` folder, or a hub id.

Everything comes back as a plain ``list[dict]`` so validation sees one shape whatever the source. Local paths
are tried first and a missing local path is reported as missing, never sent to the hub: a typo such as
``data/pairs.jsonl`` must not turn into a confusing network error (``podisco.hub.looks_like_hub_id``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from podisco.data.errors import DataError
from podisco.hub import looks_like_hub_id

__all__ = ["DataError", "load_rows"]

FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")


def _parse_jsonl(path: Path, lines: list[str]) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(lines, start=1):
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
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # many hub datasets ship JSON Lines under a .json name
            return _parse_jsonl(path, text.split("\n"))
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (found {', '.join(sorted(data))})")
        data = data[split]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects (or {{split: [objects]}}), got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {index}: expected a JSON object, got {type(row).__name__}")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    for index, row in enumerate(rows):
        if None in row:  # DictReader files surplus cells under the key None
            raise DataError(f"{path}: row {index}: more cells than the {len(reader.fieldnames or [])} header columns")
    return rows


def _read_datasets_folder(path: Path, split: str) -> list[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(
            f"{path}: a folder, but not one written by datasets' save_to_disk; pass a {'/'.join(FILE_TYPES)} file"
        ) from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (found {', '.join(sorted(data))})")
        data = data[split]
    return data.to_list()


def _read_hub(source: str, split: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    try:
        return load_dataset(source, split=split).to_list()
    except Exception as err:  # network, auth, unknown split: all one user-fixable message
        raise DataError(f"cannot load {source!r} split {split!r} from the hub: {err}") from err


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Every row of ``source`` as a dict.

    ``.jsonl`` (one object a line; a bad line is named by file and line number), ``.json`` (a list of objects,
    ``{split: [objects]}``, or JSON Lines), ``.csv`` (every value a string), ``.parquet``; a folder written by
    ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks from a DatasetDict); otherwise an
    ``owner/name`` hub id through ``datasets.load_dataset`` (needs network).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_datasets_folder(path, split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            # split on "\n" only: str.splitlines also breaks at U+2028, which JSON strings may hold raw
            return _parse_jsonl(path, path.read_text(encoding="utf-8-sig").split("\n"))
        if suffix == ".json":
            return _read_json(path, split)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        raise DataError(f"{path}: unsupported file type {suffix!r} (use {', '.join(FILE_TYPES)})")
    if looks_like_hub_id(source):
        return _read_hub(source, split)
    raise DataError(f"data path {source!r} does not exist (and is not a hub id of the form owner/name)")
