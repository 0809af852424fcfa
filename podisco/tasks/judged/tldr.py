"""The TL;DR summarisation task (docs/paper.md §3): preference pairs from ``CarperAI/openai_summarize_comparisons``
(a fraction of them, as the paper trained on), the post itself in the prompt; evaluation posts with human
reference summaries; win rates of the model's summaries against the human ones and against the SFT model's.

Local JSONL files of the same shape work offline: pairs with ``prompt``/``chosen``/``rejected``, evaluation
rows with ``prompt`` (the post) and ``label`` or ``summary`` (the human reference).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from podisco.data import load_rows
from podisco.errors import PodiscoError
from podisco.tasks.judged.generation import generate
from podisco.tasks.judged.judge import Judge
from podisco.tasks.judged.pairwise import WinRate, compare

NAME = "tldr"
VERSION = "1"
HUB_PAIRS = "CarperAI/openai_summarize_comparisons"
HUB_POSTS = "CarperAI/openai_summarize_tldr"
INSTRUCTION = "Write a TL;DR summary of this Reddit post."


def as_prompt(post: str) -> str:
    """The post really is in the prompt, ending where the summary starts."""
    post = post.strip()
    return post if post.rstrip().endswith("TL;DR:") else f"{post}\nTL;DR:"


def _summary(text: str) -> str:
    """The completion after the prompt's "TL;DR:" (the hub's summaries repeat that marker; drop it once)."""
    text = text.strip()
    return " " + (text.removeprefix("TL;DR:").strip() if text.startswith("TL;DR:") else text)


def write_pairs(pairs: list[dict], path: str | Path) -> Path:
    """The pairs as JSONL, for a TrainConfig's data.path (``podisco task prepare tldr``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def load_pairs(source: str = HUB_PAIRS, fraction: float = 1.0, seed: int = 0, split: str = "train") -> list[dict]:
    rows = load_rows(source, split)
    pairs = []
    for i, row in enumerate(rows):
        if not all(isinstance(row.get(k), str) and row[k].strip() for k in ("prompt", "chosen", "rejected")):
            raise PodiscoError(f"{source}: row {i}: needs non-empty text in 'prompt', 'chosen' and 'rejected'")
        pairs.append(
            {
                "prompt": as_prompt(row["prompt"]),
                "chosen": _summary(row["chosen"]),
                "rejected": _summary(row["rejected"]),
            }
        )
    random.Random(seed).shuffle(pairs)
    return pairs[: max(1, int(len(pairs) * fraction))]


def load_posts(source: str = HUB_POSTS, limit: int = 0, split: str = "test") -> list[dict]:
    rows = load_rows(source, split)
    posts = []
    for i, row in enumerate(rows):
        reference = row.get("label") or row.get("summary")
        if not isinstance(row.get("prompt"), str) or not isinstance(reference, str):
            raise PodiscoError(f"{source}: row {i}: needs text in 'prompt' and in 'label' (or 'summary')")
        posts.append({"prompt": as_prompt(row["prompt"]), "reference": reference.strip()})
    return posts[:limit] if limit else posts


def summarise(model, tokenizer, posts: list[dict], max_new_tokens: int = 64, seed: int = 0) -> list[str]:
    return generate(model, tokenizer, [p["prompt"] for p in posts], max_new_tokens, seed)


def rate_summaries(judge: Judge, posts: list[dict], mine: list[str], theirs: list[str], against: str, seed: int = 0):
    return compare(judge, [f"{INSTRUCTION}\n\n{p['prompt']}" for p in posts], mine, theirs, against, seed)


def evaluate_tldr(
    model, tokenizer, posts: list[dict], judge: Judge, sft_model=None, max_new_tokens: int = 64, seed: int = 0
) -> list[WinRate]:
    """Win rate against the human references, and against the SFT model's summaries when given."""
    summaries = summarise(model, tokenizer, posts, max_new_tokens, seed)
    rates = [rate_summaries(judge, posts, summaries, [p["reference"] for p in posts], "human reference", seed)]
    if sft_model is not None:
        baseline = summarise(sft_model, tokenizer, posts, max_new_tokens, seed)
        rates.append(rate_summaries(judge, posts, summaries, baseline, "SFT model", seed))
    return rates
