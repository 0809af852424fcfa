"""Two sentiment scorers, kept apart as in the paper: one labels the preference pairs, another evaluates.

The paper labels with ``lvwerra/distilbert-imdb`` (reward = log p(pos) - log p(neg)) and evaluates with
``siebert/sentiment-roberta-large-english``. Offline stand-ins: the *gold* reward is TF-IDF word 1-2 grams +
logistic regression on IMDb reviews; the *evaluation* scorer is character 2-5 grams + logistic regression on
Rotten Tomatoes sentences, another corpus and other features, so that text which games one scorer (word
stuffing) does not automatically please the other.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from podisco.cache import atomic_output
from podisco.tasks.imdb.data import Review


@dataclass(frozen=True)
class ScorerSettings:
    analyzer: str  # "word" or "char_wb"
    ngram_range: tuple[int, int]
    max_features: int
    C: float
    seed: int = 0


GOLD = ScorerSettings("word", (1, 2), 200_000, 4.0)
EVALUATION = ScorerSettings("char_wb", (2, 5), 200_000, 2.0)


class SentimentScorer:
    """A fitted scikit-learn pipeline with the two readings the task needs."""

    def __init__(self, settings: ScorerSettings, pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline

    @classmethod
    def fit(cls, reviews: Sequence[Review], settings: ScorerSettings) -> SentimentScorer:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        vectorizer = TfidfVectorizer(
            analyzer=settings.analyzer,
            ngram_range=settings.ngram_range,
            max_features=settings.max_features,
            sublinear_tf=True,
            lowercase=True,
        )
        model = LogisticRegression(C=settings.C, max_iter=2000, random_state=settings.seed)
        pipeline = make_pipeline(vectorizer, model)
        pipeline.fit([r.text for r in reviews], [r.label for r in reviews])
        return cls(settings, pipeline)

    def reward(self, texts: Sequence[str]) -> np.ndarray:
        """log p(pos) - log p(neg): the logistic regression's decision function (the gold reward's form)."""
        return self.pipeline.decision_function(list(texts))

    def p_positive(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict_proba(list(texts))[:, 1]

    def accuracy(self, reviews: Sequence[Review]) -> float:
        predictions = self.pipeline.predict([r.text for r in reviews])
        return float(np.mean(predictions == np.array([r.label for r in reviews])))


def agreement(a: SentimentScorer, b: SentimentScorer, texts: Sequence[str]) -> float:
    """Fraction of texts both scorers put on the same side of neutral."""
    return float(np.mean((a.reward(texts) > 0) == (b.reward(texts) > 0)))


def cache_key(settings: ScorerSettings, reviews: Sequence[Review]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(asdict(settings)).encode())
    for r in reviews:
        h.update(f"{r.label}\t{r.text}\n".encode())
    return h.hexdigest()


def fit_cached(reviews: Sequence[Review], settings: ScorerSettings, cache_dir: str | Path) -> SentimentScorer:
    """Fit once per (settings, training reviews); later calls load the pickle written by this code."""
    path = Path(cache_dir) / f"sentiment-{cache_key(settings, reviews)}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return SentimentScorer(settings, pickle.load(fh))
    scorer = SentimentScorer.fit(reviews, settings)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(scorer.pipeline, fh)
    return scorer


@dataclass(frozen=True)
class ScorerReport:
    gold_accuracy: float  # held-out IMDb reviews
    evaluation_accuracy: float  # the same held-out reviews
    agreement: float  # same side of neutral on them
    gold_on_degenerate: float  # mean p(positive) on word salad / repetition: the gold scorer is fooled
    evaluation_on_degenerate: float  # the evaluation scorer, trained with such negatives, is not


def build_scorers(
    imdb: Sequence[Review],
    rotten_tomatoes: Sequence[Review],
    held_out: int,
    cache_dir: str | Path,
    seed: int = 0,
    measure: bool = True,
) -> tuple[SentimentScorer, SentimentScorer, ScorerReport | None]:
    """Gold on one half of the IMDb reviews; evaluation on the other half plus Rotten Tomatoes, with other
    features; both measured on ``held_out`` reviews neither saw. Measured with the full 25,000 reviews
    (held_out 3,000): gold 0.900, evaluation 0.885, agreement 0.909. The evaluation scorer also learns that
    degenerate text (``degenerate_negatives``) is not a positive review. ``measure=False`` skips the report
    (scoring the held-out texts takes about 20 s on the default preset; a prepared task has it on disk)."""
    import random

    shuffled = list(imdb)
    random.Random(seed).shuffle(shuffled)
    test, rest = shuffled[:held_out], shuffled[held_out:]
    half = len(rest) // 2
    gold = fit_cached(rest[:half], GOLD, cache_dir)
    evaluation_data = [*rest[half:], *rotten_tomatoes]
    evaluation_data += degenerate_negatives(evaluation_data, len(evaluation_data) // 10, seed)
    evaluation = fit_cached(evaluation_data, EVALUATION, cache_dir)
    if not measure:
        return gold, evaluation, None
    texts = [r.text for r in test]
    degenerate = [r.text for r in degenerate_negatives(test, 200, seed + 1)]
    report = ScorerReport(
        gold.accuracy(test),
        evaluation.accuracy(test),
        agreement(gold, evaluation, texts),
        float(np.mean(gold.p_positive(degenerate))),
        float(np.mean(evaluation.p_positive(degenerate))),
    )
    return gold, evaluation, report


POSITIVE_WORDS = (
    "great best wonderful excellent amazing perfect loved beautiful brilliant superb fantastic love enjoyed "
    "favorite masterpiece awesome fun highly recommend"
).split()


def degenerate_negatives(reviews: Sequence[Review], n: int, seed: int = 0) -> list[Review]:
    """Texts a policy can reach by gaming a bag-of-words scorer, labelled negative for the evaluation scorer:
    positive-word salad, and the start of a review followed by one word repeated."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            text = " ".join(rng.choice(POSITIVE_WORDS) for _ in range(rng.randint(4, 30)))
        else:
            words = rng.choice(reviews).text.split()[: rng.randint(3, 12)]
            text = " ".join([*words, *[rng.choice(POSITIVE_WORDS)] * rng.randint(5, 25)])
        out.append(Review(text, 0))
    return out
