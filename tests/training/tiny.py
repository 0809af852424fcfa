"""Offline builders for training tests: a word-level tokenizer and synthetic preference rows."""

from __future__ import annotations

import random

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = "the a movie film was is great good bad awful plot actor acting story loved hated boring fun and but".split(" ")


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def make_rows(
    n: int, seed: int = 0, prompt_words: tuple[int, int] = (2, 6), completion_words: tuple[int, int] = (1, 8)
):
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {
            "prompt": text(*prompt_words),
            "chosen": " " + text(*completion_words),
            "rejected": " " + text(*completion_words),
        }
        for _ in range(n)
    ]
