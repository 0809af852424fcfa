"""The IMDb positive-sentiment task (docs/paper.md §3, §6) at laptop scale: preparation of everything the task needs.

``prepare(preset)`` builds, once per preset and caches under ``~/.cache/podisco/imdb/<key>``:
a byte-level BPE tokenizer trained on IMDb reviews, a small GPT-2 fine-tuned on them with the SFT loop (our
stand-in for ``lvwerra/gpt2-imdb``), the gold and evaluation sentiment scorers (``sentiment.py``), and
preference pairs: review prefixes as prompts, two completions sampled from the SFT model, the chosen one drawn
by Bradley-Terry on the gold reward, as the paper's ``ZHZisZZ/imdb_preference`` was built. Train and test
prompts come from disjoint reviews. Training and evaluating a policy are in ``imdb_eval.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from podisco.cache import atomic_output, cache_home
from podisco.tasks.imdb.data import Review, load_reviews
from podisco.tasks.imdb.sentiment import SentimentScorer, build_scorers

NAME = "imdb"
# DATA_VERSION keys the prepared caches (tokenizer, SFT model, scorers, pairs); VERSION names the task's numbers,
# which also depend on the default training settings (imdb_eval.ImdbTrainSettings). Bump what changed.
DATA_VERSION = "2"  # 2: the evaluation scorer rejects degenerate text
VERSION = "4"  # 4: three epochs (the margins leave DiscoPOP's basin); 3: lr 2.5e-4 (paired SE 0.004, was 0.013)
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ImdbPreset:
    name: str
    lm_reviews: int  # reviews for the tokenizer and the SFT model
    scorer_reviews: int  # IMDb reviews for the two scorers (0: all 25,000)
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    max_length: int  # tokens per SFT example
    sft_steps: int
    sft_lr: float
    train_prompts: int
    test_prompts: int
    prompt_tokens: int
    completion_tokens: int
    seed: int = 0


PRESETS = {
    "tiny": ImdbPreset("tiny", 300, 2000, 400, 1, 32, 2, 48, 40, 3e-3, 64, 16, 6, 10),
    "default": ImdbPreset("default", 6000, 0, 4096, 4, 128, 4, 128, 1500, 1e-3, 1024, 512, 8, 24),
    "paper": ImdbPreset("paper", 25000, 0, 8192, 12, 768, 12, 256, 20000, 2e-4, 20000, 1000, 8, 60),
}


@dataclass(frozen=True)
class PreparedTask:
    preset: ImdbPreset
    directory: Path
    tokenizer_dir: Path
    sft_dir: Path
    gold: SentimentScorer
    evaluation: SentimentScorer
    train_pairs: list[dict[str, str]]
    test_prompts: list[str]
    facts: dict  # scorer accuracies, agreement, SFT held-out perplexity


def cache_root() -> Path:
    return cache_home() / "imdb"


def preset_key(preset: ImdbPreset) -> str:
    blob = json.dumps({"task": NAME, "version": DATA_VERSION, **asdict(preset)}, sort_keys=True)
    return f"{preset.name}-{hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()}"


def _train_tokenizer(texts: list[str], vocab_size: int, out: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, pad_token=EOS, bos_token=EOS)
    tokenizer.save_pretrained(out)
    return tokenizer


def _train_sft(preset: ImdbPreset, tokenizer, texts: list[str], out: Path) -> None:
    from podisco.data import tokenize_sft
    from podisco.models import build_tiny_gpt2
    from podisco.training.config import TrainConfig
    from podisco.training.sft import train_sft

    examples, _ = tokenize_sft([{"text": t} for t in texts], tokenizer, preset.max_length)
    model = build_tiny_gpt2(
        len(tokenizer),
        preset.n_layer,
        preset.n_embd,
        preset.n_head,
        n_positions=max(256, preset.max_length),
        eos_id=tokenizer.eos_token_id,
        seed=preset.seed,
    )
    config = TrainConfig(
        output_dir=str(out.parent / "sft-run"), batch_size=16, max_steps=preset.sft_steps, seed=preset.seed
    )
    config.optim.lr = preset.sft_lr
    config.optim.warmup_ratio = 0.05
    config.precision = "fp32"
    config.log_every = max(1, preset.sft_steps // 20)
    train_sft(config, model, examples, tokenizer.eos_token_id, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_length: int) -> float:
    """exp(mean NLL per token) of ``texts`` (held-out reviews), each truncated to ``max_length`` tokens."""
    model.eval()
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            continue
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
        count += len(ids) - 1
    return math.exp(total / max(count, 1))


def prompt_prefix(tokenizer, text: str, prompt_tokens: int) -> str | None:
    """The first ``prompt_tokens`` tokens of a review, decoded; None for a review too short to continue."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:prompt_tokens]) if len(ids) > 2 * prompt_tokens else None


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, batch_size: int = 64):
    """One sampled completion per prompt (temperature 1, no top-k, as HF defaults in the paper's eval)."""
    model.eval()
    torch.manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chunk]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, e in enumerate(encoded):  # left padding, so that generation continues every prompt
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in generated[:, width:]:
            tokens = row.tolist()
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
            out.append(tokenizer.decode(tokens))
    return out


def _build_pairs(preset, tokenizer, model, gold: SentimentScorer, prompts: list[str]) -> list[dict[str, str]]:
    """Two SFT samples per prompt; chosen with probability sigma(r_1 - r_2) on the gold reward (Bradley-Terry)."""
    first = sample_completions(model, tokenizer, prompts, preset.completion_tokens, seed=preset.seed + 1)
    second = sample_completions(model, tokenizer, prompts, preset.completion_tokens, seed=preset.seed + 2)
    r1 = gold.reward([p + c for p, c in zip(prompts, first, strict=True)])
    r2 = gold.reward([p + c for p, c in zip(prompts, second, strict=True)])
    rng = random.Random(preset.seed + 3)
    pairs = []
    for p, a, b, ra, rb in zip(prompts, first, second, r1, r2, strict=True):
        if not a.strip() or not b.strip() or a == b:
            continue
        a_wins = rng.random() < 1.0 / (1.0 + math.exp(-(ra - rb)))
        chosen, rejected = (a, b) if a_wins else (b, a)
        pairs.append({"prompt": p, "chosen": chosen, "rejected": rejected, "gold_margin": abs(float(ra - rb))})
    return pairs


def prepare(preset_name: str = "default", cache_dir: str | Path | None = None, log=print) -> PreparedTask:
    """Build (or load) everything the task needs for a preset."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r} ({', '.join(PRESETS)})")
    preset = PRESETS[preset_name]
    directory = Path(cache_dir or cache_root()) / preset_key(preset)
    directory.mkdir(parents=True, exist_ok=True)
    imdb = load_reviews("imdb")
    random.Random(preset.seed).shuffle(imdb)
    # Disjoint slices: LM training reviews, train prompts, test prompts (the scorers see a subset of all).
    lm = [r.text for r in imdb[: preset.lm_reviews]]
    prompt_pool = imdb[preset.lm_reviews :]
    rotten_tomatoes = load_reviews("rotten_tomatoes")
    if preset.scorer_reviews:  # small presets: fewer reviews, faster scorers
        imdb_for_scorers = _balanced(imdb, preset.scorer_reviews)
        rotten_tomatoes = _balanced(rotten_tomatoes, preset.scorer_reviews)
    else:
        imdb_for_scorers = imdb
    facts_path, pairs_path = directory / "facts.json", directory / "pairs.jsonl"
    if not pairs_path.exists():
        log(f"[{NAME}] scorers ...")  # cached pickles load in a second on later runs
    held_out = max(200, len(imdb_for_scorers) // 8)
    # A prepared task keeps the scorers' report in facts.json: measuring it again cost each worker ~20 s
    prepared = pairs_path.exists()
    gold, evaluation, report = build_scorers(
        imdb_for_scorers, rotten_tomatoes, held_out, directory, measure=not prepared
    )
    tok_dir, sft_dir = directory / "tokenizer", directory / "sft"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        log(f"[{NAME}] tokenizer ...")
        tokenizer = _train_tokenizer(lm, preset.vocab_size, tok_dir)
    if not (sft_dir / "config.json").exists():
        log(f"[{NAME}] SFT model ({preset.sft_steps} steps) ...")
        _train_sft(preset, tokenizer, lm, sft_dir)
    if not prepared:
        log(f"[{NAME}] preference pairs ...")
        model = AutoModelForCausalLM.from_pretrained(sft_dir)
        wanted = preset.train_prompts + preset.test_prompts
        prompts = list(
            itertools.islice(
                (p for p in (prompt_prefix(tokenizer, r.text, preset.prompt_tokens) for r in prompt_pool) if p), wanted
            )
        )
        if len(prompts) < wanted:
            raise ValueError(f"only {len(prompts)} usable review prefixes for {wanted} prompts")
        train_prompts = prompts[: preset.train_prompts]
        test_prompts = prompts[preset.train_prompts : preset.train_prompts + preset.test_prompts]
        pairs = _build_pairs(preset, tokenizer, model, gold, train_prompts)
        held_out_texts = [r.text for r in prompt_pool[-200:]]
        facts = {
            **asdict(report),
            "sft_held_out_perplexity": perplexity(model, tokenizer, held_out_texts, preset.max_length),
            "pairs": len(pairs),
            "test_prompts": test_prompts,
        }
        facts_path.write_text(json.dumps(facts, indent=1))
        with atomic_output(pairs_path) as tmp:  # written last: its presence means the preparation finished
            tmp.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    facts = json.loads(facts_path.read_text())
    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    return PreparedTask(preset, directory, tok_dir, sft_dir, gold, evaluation, pairs, facts.pop("test_prompts"), facts)


def _balanced(reviews: list[Review], n: int) -> list[Review]:
    positive = [r for r in reviews if r.label == 1][: n // 2]
    negative = [r for r in reviews if r.label == 0][: n - n // 2]
    return positive + negative
