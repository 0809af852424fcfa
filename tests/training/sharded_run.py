"""Run under `accelerate launch --config_file recipes/accelerate/{fsdp,zero2,zero3}.yaml --num_processes N` (or
plainly, for one process): train a tiny GPT-2 for 4 steps (2 micro-batches each), checkpoint at step 2, write
final/ and summary.json.

    python -m tests.training.sharded_run OUT BATCH_SIZE CACHE [--cpu] [--resume CKPT] [--sharded-reference]

On CPU, Accelerate (1.15) silently drops the FSDP plugin: ``AcceleratorState`` switches to FSDP only for
accelerator devices (MULTI_GPU, MULTI_XPU, ...), never MULTI_CPU, so ``--use_fsdp`` on CPU trains with DDP.
``promote_to_fsdp`` puts the plugin (read from the environment the launch set from fsdp.yaml) back into the
state, after which ``prepare`` shards with ``fully_shard`` over gloo: the same Accelerate code path as on GPUs,
with gloo instead of NCCL. DeepSpeed has no such path: it needs CUDA.

Used by test_sharded.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from podisco.data import tokenize_pairs, validate_rows
from podisco.models import build_tiny_gpt2
from podisco.training.config import TrainConfig
from podisco.training.preference import train_preference
from tests.training.tiny import make_rows, make_tokenizer

STEPS, SAVE_EVERY, GRAD_ACCUM = 4, 2, 2


def promote_to_fsdp(accelerator: Accelerator) -> None:
    """Give the MULTI_CPU state the FSDP plugin that Accelerate dropped (see the module docstring)."""
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables `accelerate launch` set
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    # Every later AcceleratorState() copies PartialState's fields over its own, as Accelerate itself keeps them.
    PartialState().distributed_type = DistributedType.FSDP
    assert accelerator.is_fsdp2, "fsdp.yaml should select FSDP2"


def make_config(out: str, batch_size: int, cache: str) -> TrainConfig:
    config = TrainConfig(output_dir=out, batch_size=batch_size, grad_accum=GRAD_ACCUM, max_steps=STEPS)
    config.save_every = SAVE_EVERY
    config.reference_cache_dir = cache
    config.precision = "fp32"  # "auto" may time bf16 autocast on a CPU and pick it: the comparisons need fp32
    config.loss.beta = 0.1
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"  # a schedule whose state matters on resume
    config.optim.warmup_ratio = 0.25
    config.optim.max_grad_norm = 0.05  # small enough to clip: the norm must span every shard
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("batch_size", type=int)
    parser.add_argument("cache")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--sharded-reference", action="store_true")
    args = parser.parse_args()

    tokenizer = make_tokenizer()
    rows, _ = validate_rows(make_rows(32, seed=5))
    examples, _ = tokenize_pairs(rows, tokenizer, max_length=48)
    model = build_tiny_gpt2(len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0)
    accelerator = Accelerator(cpu=args.cpu)
    if args.cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        promote_to_fsdp(accelerator)
    ref_model = None
    if args.sharded_reference:
        from torch.distributed.fsdp import fully_shard

        ref_model = copy.deepcopy(model)  # the same weights, sharded (per layer, then the rest) before the pass
        for block in ref_model.transformer.h:
            fully_shard(block)
        fully_shard(ref_model)
    result = train_preference(
        make_config(args.out, args.batch_size, args.cache),
        model,
        examples,
        0,
        tokenizer=tokenizer,
        ref_model=ref_model,
        accelerator=accelerator,
        resume_from=args.resume,
    )
    from torch.distributed.fsdp import FSDPModule

    if accelerator.is_main_process:
        summary = {
            "world": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "sharded_layers": sum(isinstance(block, FSDPModule) for block in model.transformer.h),
            "history": result.history,
        }
        (Path(args.out) / "summary.json").write_text(json.dumps(summary))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
