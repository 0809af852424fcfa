"""IMDb reviews (offline bundle and hub-shaped files), the paper's preference pairs, and the two scorers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from podisco.data import DataError
from podisco.tasks.imdb.data import Review, clean, load_labelled_texts, load_preference_pairs, load_reviews
from podisco.tasks.imdb.sentiment import EVALUATION, GOLD, build_scorers, cache_key, fit_cached


@pytest.fixture(scope="module")
def bundled():
    return load_reviews("imdb"), load_reviews("rotten_tomatoes")


def test_bundled_reviews_are_the_imdb_train_split_and_rt(bundled):
    imdb, rt = bundled
    assert len(imdb) == 25_000 and len(rt) == 8_530
    assert sum(r.label for r in imdb) == 12_500  # balanced
    assert all("<br" not in r.text for r in imdb[:500])


def test_clean_removes_markup():
    assert clean("Great!<br /><br />Really &amp; truly") == "Great! Really & truly"


def test_hub_shaped_files_load(tmp_path):
    texts = tmp_path / "imdb.jsonl"
    texts.write_text(
        json.dumps({"text": "good<br/>film", "label": 1}) + "\n" + json.dumps({"text": "bad", "label": 0}) + "\n"
    )
    assert load_labelled_texts(str(texts)) == [Review("good film", 1), Review("bad", 0)]
    pairs = tmp_path / "pairs.jsonl"
    row = {"prompt": "This movie", "responses": [" was dull.", " was wonderful."], "scores": [-2.1, 3.4], "chosen": 1}
    pairs.write_text(json.dumps(row) + "\n")
    assert load_preference_pairs(str(pairs)) == [
        {"prompt": "This movie", "chosen": " was wonderful.", "rejected": " was dull."}
    ]
    pairs.write_text(json.dumps({**row, "chosen": 2}) + "\n")
    with pytest.raises(DataError, match="row 0: 'chosen' must be 0 or 1"):
        load_preference_pairs(str(pairs))


def test_bad_csv_row_is_named(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label,source\ngood,1,imdb\nbad,maybe,imdb\n")
    with pytest.raises(DataError, match=r"r.csv:3: expected text and a 0/1 label"):
        load_reviews("imdb", str(path))


@pytest.mark.slow
def test_two_scorers_learn_agree_and_are_cached(bundled, tmp_path):
    imdb, rt = bundled
    gold, evaluation, report = build_scorers(imdb[:2500] + imdb[-2500:], rt[:2000], held_out=1000, cache_dir=tmp_path)
    assert report.gold_accuracy > 0.8 and report.evaluation_accuracy > 0.75 and report.agreement > 0.75
    # Word salad and repetition fool a bag-of-words gold scorer; the evaluation scorer was taught otherwise.
    assert report.gold_on_degenerate > 0.8 and report.evaluation_on_degenerate < 0.3
    texts = ["a wonderful, moving film", "a dull and awful mess"]
    assert np.all(np.diff(gold.reward(texts)) < 0) and np.all(np.diff(evaluation.p_positive(texts)) < 0)
    # reward = log p(pos) - log p(neg)
    p = gold.p_positive(texts)
    np.testing.assert_allclose(gold.reward(texts), np.log(p) - np.log1p(-p), rtol=1e-6)
    assert len(list(tmp_path.glob("sentiment-*.pkl"))) == 2
    again = fit_cached(imdb[:5] + imdb[-5:], GOLD, tmp_path)  # new data, new entry
    assert len(list(tmp_path.glob("sentiment-*.pkl"))) == 3 and again.settings == GOLD


def test_cache_key_changes_with_settings_and_data():
    reviews = [Review("good", 1), Review("bad", 0)]
    assert cache_key(GOLD, reviews) != cache_key(EVALUATION, reviews)
    assert cache_key(GOLD, reviews) != cache_key(GOLD, reviews[:1])
    assert cache_key(GOLD, reviews) == cache_key(GOLD, list(reviews))
