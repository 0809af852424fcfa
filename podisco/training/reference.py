"""Reference log-probs, computed once and cached on disk.

Every discovery candidate trains from the same model on the same pairs, so the reference pass is the same
work every time. The cache key hashes what the numbers depend on: the reference weights, the tokenizer, the
tokenized pairs (which already reflect the data, the chat template and the length settings) and the
log-prob code's version.

A reference whose weights are sharded over processes (FSDP, or ZeRO-3 partitions) all-gathers them inside its
forward, a collective: every process must then run every forward, in step (``sharded_reference_logps``); the
main process alone would hang waiting for the others.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from podisco.cache import atomic_output, cache_home
from podisco.data import PreferenceExample, collate_preference
from podisco.training.logprobs import CompletionScorer, sequence_logps

CACHE_VERSION = "1"  # bump when the way log-probs are computed changes


def default_cache_dir() -> Path:
    return cache_home() / "reference"


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support has no sharded weights either
        return None
    return DTensor


def _fsdp2_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _is_fsdp1(model: torch.nn.Module) -> bool:
    return any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether the weights are split over processes: FSDP2 (DTensor parameters), an FSDP1 wrapper, or ZeRO-3
    partitions (parameters with a ``ds_id``)."""
    dtensor = _dtensor_type()
    return _is_fsdp1(model) or any(
        hasattr(p, "ds_id") or (dtensor is not None and isinstance(p, dtensor)) for p in model.parameters()
    )


@contextmanager
def _zero3_gathered(model: torch.nn.Module) -> Iterator[None]:
    """ZeRO-3 partitions outside a DeepSpeed engine are empty placeholders, for the weight hash as for the
    forward: gather them for the duration (a collective; the full model is then on every device)."""
    partitioned = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


@contextmanager
def _fsdp_unsharded(model: torch.nn.Module) -> Iterator[None]:
    """The full FSDP weights on every process for the duration (a collective). The scorer calls the transformer
    body directly and applies the LM head's weight itself, so the forward hooks of the modules around the body
    (the causal LM, the head) never fire and would leave their weights sharded. The full model must fit on one
    device, as it does in the usual order (reference pass first, then sharding)."""
    with ExitStack() as stack:
        if _is_fsdp1(model):
            from torch.distributed.fsdp import FullyShardedDataParallel

            stack.enter_context(FullyShardedDataParallel.summon_full_params(model, writeback=False))
        fsdp2 = _fsdp2_modules(model)
        for module in fsdp2:
            module.unshard()  # not recursive: each shard group on its own
        for module in fsdp2:
            stack.callback(module.reshard)
        yield


def _hash_weights(h: hashlib._Hash, model: torch.nn.Module) -> None:
    dtensor = _dtensor_type()
    for name, tensor in sorted(model.state_dict().items()):
        if dtensor is not None and isinstance(tensor, dtensor):
            tensor = tensor.full_tensor()  # FSDP2 shards: a collective, so every process hashes, in name order
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
    path = _cache_path(cache_dir, reference_key(model, tokenizer, examples, max_length))
    cached = _read_cache(path, len(examples))
    if cached is not None:
        return cached, True
    logps = compute_reference_logps(model, examples, pad_id, layout, batch_size)
    _write_cache(path, logps)
    return logps, False


def sharded_reference_logps(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    layout: str,
    max_length: int,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 16,
) -> tuple[torch.Tensor, bool]:
    """``cached_reference_logps`` for a reference sharded over processes; every process calls it. Each one runs
    every forward (and the cache key's weight hash) in step; the cache is read only if every process finds the
    entry (else some would wait in a forward the others skip), and the main process writes it."""
    import torch.distributed as dist

    with _zero3_gathered(model):
        path = _cache_path(cache_dir, reference_key(model, tokenizer, examples, max_length)) if use_cache else None
        cached = _read_cache(path, len(examples)) if path is not None else None
        found = torch.tensor([int(cached is not None)], device=next(model.parameters()).device)
        dist.all_reduce(found, op=dist.ReduceOp.MIN)
        if cached is not None and bool(found.item()):
            return cached, True
        with _fsdp_unsharded(model):
            logps = compute_reference_logps(model, examples, pad_id, layout, batch_size)
    if path is not None and dist.get_rank() == 0:
        _write_cache(path, logps)
    return logps, False


def _cache_path(cache_dir: str | Path | None, key: str) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{key}.pt"


def _read_cache(path: Path, num_examples: int) -> torch.Tensor | None:
    if not path.exists():
        return None
    cached = torch.load(path, map_location="cpu", weights_only=True)
    return cached if cached.shape == (num_examples, 2) else None


def _write_cache(path: Path, logps: torch.Tensor) -> None:
    try:
        with atomic_output(path) as tmp:
            torch.save(logps, tmp)
    except OSError as error:  # a read-only cache (a sandboxed worker) only costs the recomputation next time
        warnings.warn(f"reference log-probs not cached: {error}", stacklevel=3)
