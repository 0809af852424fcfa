"""Reference log-probs, computed once and cached on disk.

Every discovery candidate trains from the same model on the same pairs, so the reference pass is the same
work every time. The cache key hashes what the numbers depend on: the reference weights, the tokenizer, the
tokenized pairs (which already reflect the data, the chat template and the length settings) and the
log-prob code's version.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from podisco.cache import atomic_output, cache_home
from podisco.data import PreferenceExample, collate_preference
from podisco.training.logprobs import CompletionScorer, sequence_logps

CACHE_VERSION = "1"  # bump when the way log-probs are computed changes


def default_cache_dir() -> Path:
    return cache_home() / "reference"


def _hash_weights(h: hashlib._Hash, model: torch.nn.Module) -> None:
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _hash_tokenizer(h: hashlib._Hash, tokenizer) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(
        backend.to_str().encode() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items())).encode()
    )
    h.update(
        json.dumps(
            [str(tokenizer.eos_token), str(tokenizer.pad_token), getattr(tokenizer, "chat_template", None)]
        ).encode()
    )


def reference_key(model: torch.nn.Module, tokenizer, examples: Sequence[PreferenceExample], max_length: int) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(f"podisco-reference-v{CACHE_VERSION}:{max_length}".encode())
    _hash_weights(h, model)
    if tokenizer is not None:
        _hash_tokenizer(h, tokenizer)
    for ex in examples:
        h.update(json.dumps([ex.prompt_ids, ex.chosen_ids, ex.rejected_ids]).encode())
    return h.hexdigest()


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    layout: str,
    batch_size: int = 16,
    chunk_tokens: int = 8192,
) -> torch.Tensor:
    """(n, 2) float32 tensor: summed log-probs of each pair's chosen and rejected completion."""
    was_training = model.training
    model.eval()
    scorer = CompletionScorer(model, chunk_tokens)
    device = next(model.parameters()).device
    out = torch.empty(len(examples), 2, dtype=torch.float32)
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate_preference(chunk, pad_id, layout=layout).to(device)
            logps = sequence_logps(scorer, batch, 2 * len(chunk)).float().cpu()
            out[start : start + len(chunk), 0] = logps[: len(chunk)]
            out[start : start + len(chunk), 1] = logps[len(chunk) :]
    finally:
        model.train(was_training)
    return out


def cached_reference_logps(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    layout: str,
    max_length: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
) -> tuple[torch.Tensor, bool]:
    """The (n, 2) reference log-probs and whether they came from the cache."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"{reference_key(model, tokenizer, examples, max_length)}.pt"
    if path.exists():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.shape == (len(examples), 2):
            return cached, True
    logps = compute_reference_logps(model, examples, pad_id, layout, batch_size)
    try:
        with atomic_output(path) as tmp:
            torch.save(logps, tmp)
    except OSError as error:  # a read-only cache (a sandboxed worker) only costs the recomputation next time
        warnings.warn(f"reference log-probs not cached: {error}", stacklevel=2)
    return logps, False
