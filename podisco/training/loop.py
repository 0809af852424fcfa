"""The one training loop, shared by preference optimisation and SFT; readable top to bottom.

setup (dropout off, optimizer, schedule, Accelerate) -> resume -> for each optimizer step: gradient
accumulation over micro-batches, clip, step, log, checkpoint -> save. What differs between preference
training and SFT is one function, ``compute(scorer, batch) -> StepOutput``.

Data order is ours, not a DataLoader's: epoch e is a permutation seeded by (seed, e), cut into global
micro-batches of ``batch_size * world_size`` indices, of which process r takes the r-th slice. So two
processes with half the batch see exactly the pairs one process sees, and a resumed run skips exactly the
micro-batches already done.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from podisco.errors import PodiscoError
from podisco.training.config import ConfigError, TrainConfig, save_yaml, to_dict
from podisco.training.logprobs import CompletionScorer


class NonFiniteError(PodiscoError, RuntimeError):
    """The loss or the gradient norm stopped being finite; the message names the optimizer step."""


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, the mean loss of the micro-batch
    metrics: dict[str, float]  # averaged over the micro-batches of one optimizer step
    num_tokens: int  # counted as TRL's num_tokens


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout would make the policy's log-probs differ from the (dropout-free) reference at step 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup from 0, then cosine / linear decay to 0, or constant: transformers' schedules exactly, so
    runs compare step by step with TRL's."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return factor


def mixed_precision(precision: str) -> str:
    if precision == "bf16":
        return "bf16"
    if precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"  # CPU autocast in bf16 is slower than fp32 on most CPUs


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g).tolist()


class _Loggers:
    """JSONL always; TensorBoard or Weights & Biases when asked for and installed."""

    def __init__(self, config: TrainConfig, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled or config.report_to == "none":
            return
        try:
            if config.report_to == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(output_dir / "tensorboard"))
            elif config.report_to == "wandb":
                import wandb

                self.wandb = wandb.init(project="podisco", dir=str(output_dir), config=to_dict(config))
        except ImportError as err:
            raise PodiscoError(f"report_to={config.report_to} needs its package installed: {err}") from err

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def run_training(
    config: TrainConfig,
    model: torch.nn.Module,
    num_items: int,
    make_batch: Callable[[Sequence[int]], Any],
    compute: Callable[[torch.nn.Module, Any], StepOutput],
    accelerator: Accelerator,
    tokenizer=None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` on ``num_items`` items; ``make_batch(indices)`` builds a micro-batch on the device.
    Checkpoints and ``final/`` hold the model's ``save_pretrained`` output, and the tokenizer's if given."""
    output_dir = Path(config.output_dir)
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(config, output_dir / "config.yaml")
    if config.disable_dropout:
        disable_dropout(model)
    if config.gradient_checkpointing:
        # transformers 5 renamed gradient checkpointing to activation checkpointing; older versions lack the new name.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()

    world, rank = accelerator.num_processes, accelerator.process_index
    global_micro = config.batch_size * world
    micro_per_epoch = num_items // global_micro  # a ragged last micro-batch would break the 1-vs-N equivalence
    if micro_per_epoch == 0:
        raise ConfigError(f"batch_size: {num_items} items are fewer than one global batch of {global_micro}")
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))

    scorer = CompletionScorer(model, config.logprob_chunk_tokens)
    params = [p for p in scorer.parameters() if p.requires_grad]
    optim = config.optim
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=optim.adam_betas, eps=optim.adam_eps, weight_decay=optim.weight_decay
    )
    warmup = math.ceil(optim.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim.schedule, warmup, total_steps))
    # The scheduler is not prepared: Accelerate would step it once per process, for data loaders it shards.
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    step, micro_done = 0, 0  # micro-batches consumed, over all epochs
    if resume_from:
        accelerator.load_state(str(resume_from))
        progress = json.loads((Path(resume_from) / "progress.json").read_text())
        step, micro_done = progress["step"], progress["micro_done"]

    loggers = _Loggers(config, output_dir, main)
    history: list[dict[str, float]] = []
    bar = _progress_bar(total_steps, step, main)
    sums: dict[str, float] = {}
    tokens, total_tokens, started = 0, 0.0, time.perf_counter()
    try:
        while step < total_steps:
            epoch, in_epoch = divmod(micro_done, micro_per_epoch)
            order = epoch_order(num_items, config.seed, epoch)
            start = in_epoch * global_micro + rank * config.batch_size
            batch = make_batch(order[start : start + config.batch_size])
            last_micro = (micro_done + 1) % config.grad_accum == 0
            # Gradients are all-reduced only on the last micro-batch of an optimizer step.
            sync = contextlib.nullcontext() if last_micro else accelerator.no_sync(scorer)
            with sync:
                with accelerator.autocast():
                    out = compute(scorer, batch)
                if not torch.isfinite(out.loss.detach()):
                    raise NonFiniteError(f"non-finite loss {out.loss.item()} at step {step + 1} (epoch {epoch})")
                accelerator.backward(out.loss / config.grad_accum)
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + value / config.grad_accum
            tokens += out.num_tokens
            micro_done += 1
            if micro_done % config.grad_accum == 0:
                max_norm = optim.max_grad_norm if optim.max_grad_norm > 0 else float("inf")
                grad_norm = float(accelerator.clip_grad_norm_(params, max_norm))
                if not math.isfinite(grad_norm):
                    raise NonFiniteError(f"non-finite gradient norm {grad_norm} at step {step + 1} (epoch {epoch})")
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                elapsed = time.perf_counter() - started
                metrics = _reduce(accelerator, sums)
                metrics.update(grad_norm=grad_norm, learning_rate=lr, epoch=micro_done / micro_per_epoch)
                step_tokens = _reduce(accelerator, {"t": tokens})["t"] * world
                total_tokens += step_tokens
                metrics["num_tokens"] = total_tokens  # cumulative, as TRL logs it
                metrics["tokens/s"] = step_tokens / max(elapsed, 1e-9)
                sums, tokens, started = {}, 0, time.perf_counter()
                history.append(metrics)
                if step % config.log_every == 0 or step == total_steps:
                    loggers.log(step, metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}")
                if config.save_every and step % config.save_every == 0 and step < total_steps:
                    _save(accelerator, scorer, output_dir / f"checkpoint-{step}", step, micro_done, tokenizer)
    finally:
        bar.close()
        loggers.close()
    if config.save_model:
        _save(accelerator, scorer, output_dir / f"checkpoint-{step}", step, micro_done, tokenizer)
        accelerator.wait_for_everyone()
        if main:
            _save_pretrained(accelerator, scorer, tokenizer, output_dir / "final")
    return TrainResult(output_dir, step, history)


def _reduce(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Mean over processes of per-process metrics (each already a mean over its micro-batches)."""
    if accelerator.num_processes == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="mean")
    return dict(zip(keys, t.tolist(), strict=True))


def _save_pretrained(accelerator: Accelerator, scorer, tokenizer, path: Path) -> None:
    accelerator.unwrap_model(scorer).model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An Accelerator for ``config.precision``. Accelerate keeps one process-wide state whose precision cannot
    change; a single process that trains again with another precision (a sweep, a notebook) gets a fresh one."""
    from accelerate.state import AcceleratorState

    wanted = mixed_precision(config.precision)
    state = AcceleratorState._shared_state
    if state and AcceleratorState().num_processes == 1 and str(AcceleratorState().mixed_precision) != wanted:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=wanted)


def _save(accelerator: Accelerator, scorer, path: Path, step: int, micro_done: int, tokenizer) -> None:
    """Model weights (save_pretrained), optimizer, scheduler and RNG state, and where the data order stands."""
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        _save_pretrained(accelerator, scorer, tokenizer, path / "model")
        (path / "progress.json").write_text(json.dumps({"step": step, "micro_done": micro_done}))


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)
