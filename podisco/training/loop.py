"""The one training loop, shared by preference optimisation and SFT; readable top to bottom.

setup (dropout off, optimizer, schedule, Accelerate) -> resume -> for each optimizer step: gradient
accumulation over micro-batches, clip, step, log, checkpoint -> save. What differs between preference
training and SFT is one function, ``compute(scorer, batch) -> StepOutput``.

Data order is ours, not a DataLoader's: epoch e is a permutation seeded by (seed, e), cut into global
micro-batches of ``batch_size * world_size`` indices, of which process r takes the r-th slice. So two
processes with half the batch see exactly the pairs one process sees, and a resumed run skips exactly the
micro-batches already done.

Under FSDP and DeepSpeed (``accelerate launch --config_file recipes/accelerate/...``) the same loop runs; what
differs is confined to small helpers: gradients are clipped on the prepared model's parameters, a full state
dict is gathered by every process before ``save_pretrained``, and DeepSpeed's engine does the accumulation,
clipping and optimizer step that the loop does itself otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from podisco.errors import PodiscoError
from podisco.training.config import ConfigError, TrainConfig, save_yaml, to_dict
from podisco.training.logprobs import CompletionScorer, _output_layer
from podisco.training.precision import cpu_auto_bf16


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
    precision: str = "fp32"  # what the loop computed in: "fp32" or "bf16" (autocast); "auto" resolved


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
    return "no"  # on a CPU, run_training measures whether bf16 pays (precision.py) and autocasts itself


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
    first = epoch_order(num_items, config.seed, 0)  # precision="auto" on a CPU times these items (precision.py)
    cpu_bf16 = cpu_auto_bf16(
        config, accelerator, model, lambda b: compute(scorer, b).loss, lambda n: make_batch(first[:n]), compute
    )
    autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if cpu_bf16 else accelerator.autocast
    if config.compile:  # in place: parameter names and saved state dicts stay the model's own
        scorer.compile(dynamic=True)
    if _sharded_engine(accelerator):
        _describe_for_sharding(scorer, model)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _configure_deepspeed(accelerator, config)
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
    if _is_zero3(accelerator):
        _register_head_with_zero3(accelerator, scorer)

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
                with autocast():
                    out = compute(scorer, batch)
                if not torch.isfinite(out.loss.detach()):
                    raise NonFiniteError(f"non-finite loss {out.loss.item()} at step {step + 1} (epoch {epoch})")
                _backward(accelerator, out.loss, config.grad_accum, last_micro)
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + value / config.grad_accum
            tokens += out.num_tokens
            micro_done += 1
            if micro_done % config.grad_accum == 0:
                max_norm = optim.max_grad_norm if optim.max_grad_norm > 0 else float("inf")
                grad_norm = _clip_grad_norm(accelerator, scorer, params, max_norm)  # None: not reported
                if grad_norm is not None and not math.isfinite(grad_norm):
                    raise NonFiniteError(f"non-finite gradient norm {grad_norm} at step {step + 1} (epoch {epoch})")
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                elapsed = time.perf_counter() - started
                metrics = _reduce(accelerator, sums)
                metrics.update(
                    grad_norm=math.nan if grad_norm is None else grad_norm,
                    learning_rate=lr,
                    epoch=micro_done / micro_per_epoch,
                )
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
        _save_model(accelerator, scorer, tokenizer, output_dir / "final")
    mixed = str(accelerator.mixed_precision)
    used = "bf16" if cpu_bf16 else "fp32" if mixed == "no" else mixed
    return TrainResult(output_dir, step, history, used)


def _reduce(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Mean over processes of per-process metrics (each already a mean over its micro-batches)."""
    if accelerator.num_processes == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="mean")
    return dict(zip(keys, t.tolist(), strict=True))


def _sharded_engine(accelerator: Accelerator) -> bool:
    """FSDP and DeepSpeed: weights (FSDP, ZeRO-3) or optimizer state and gradients (ZeRO-2) are split over the
    processes, so a full state dict is a collective and the prepared model's parameters are not the originals."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _is_zero3(accelerator: Accelerator) -> bool:
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return False
    return accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"] == 3


def _describe_for_sharding(scorer: CompletionScorer, model: torch.nn.Module) -> None:
    """Accelerate reads these off the module it prepares, which is the scorer, not the causal LM: FSDP's
    transformer auto-wrap takes the layer classes from ``_no_split_modules`` (without them the whole model is one
    shard group, all-gathered at once), DeepSpeed's "auto" bucket sizes take ``config.hidden_size``."""
    scorer._no_split_modules = getattr(model, "_no_split_modules", None)
    if hasattr(model, "config"):
        scorer.config = model.config


def _configure_deepspeed(accelerator: Accelerator, config: TrainConfig) -> None:
    """DeepSpeed's engine does the accumulation, clipping and step itself, from its own config: fill it from the
    TrainConfig (the source of truth; the accelerate YAML leaves these "auto"). There is no DataLoader for
    Accelerate to read the micro-batch size from."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    if ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") not in ("none", None):
        # Accelerate then swaps the AdamW for DeepSpeedCPUAdam, which the loop's learning-rate schedule never reaches.
        raise ConfigError("DeepSpeed offload_optimizer is not supported: use offload_optimizer_device: none")
    ds["train_micro_batch_size_per_gpu"] = config.batch_size
    ds["gradient_accumulation_steps"] = config.grad_accum
    ds["train_batch_size"] = config.batch_size * config.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = config.optim.max_grad_norm  # 0 disables it, as in the loop
    accelerator.gradient_accumulation_steps = config.grad_accum


def _register_head_with_zero3(accelerator: Accelerator, scorer) -> None:
    """The scorer applies the LM head's weight directly, without calling the head module, so ZeRO-3 would never
    gather it (its forward hooks gather a module's own parameters): make it a parameter of the scorer's forward."""
    from deepspeed.zero import register_external_parameter

    inner = accelerator.unwrap_model(scorer)
    head = _output_layer(inner.model)
    if head is not None:
        for param in head.parameters():
            register_external_parameter(inner, param)


def _backward(accelerator: Accelerator, loss: torch.Tensor, grad_accum: int, last_micro: bool) -> None:
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        accelerator.backward(loss / grad_accum)
        return
    # DeepSpeed's engine divides by its gradient_accumulation_steps (= grad_accum) itself, and clips and steps
    # the optimizer inside backward when Accelerate's sync_gradients says this is the last micro-batch.
    accelerator.gradient_state._set_sync_gradients(last_micro)
    try:
        accelerator.backward(loss)
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def _clip_grad_norm(accelerator: Accelerator, scorer, params: list[torch.Tensor], max_norm: float) -> float | None:
    """Clip and return the global gradient norm. Under FSDP the prepared model's parameters are new objects
    (sharded DTensors or flat parameters); Accelerate recognises the prepared model's own parameter list and
    computes the norm over all shards. DeepSpeed clipped inside backward and reports the norm it used."""
    if not _sharded_engine(accelerator):
        return float(accelerator.clip_grad_norm_(params, max_norm))
    norm = accelerator.clip_grad_norm_(list(scorer.parameters()), max_norm)
    if norm is None:  # DeepSpeed has not computed one
        return None
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor norm (FSDP2) is read as a plain tensor
    return float(full_tensor() if full_tensor is not None else norm)


def _save_pretrained(accelerator: Accelerator, scorer, tokenizer, path: Path) -> None:
    accelerator.unwrap_model(scorer).model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def _save_model(accelerator: Accelerator, scorer, tokenizer, path: Path) -> None:
    """``save_pretrained`` weights that load with ``from_pretrained``. Sharded weights are gathered into a full
    state dict first, a collective: every process calls this, the main process writes."""
    if not _sharded_engine(accelerator):
        if accelerator.is_main_process:
            _save_pretrained(accelerator, scorer, tokenizer, path)
        return
    state = accelerator.get_state_dict(scorer)  # the scorer's keys: "model." + the causal LM's
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(scorer).model
        weights = _without_tied_copies(model, {key.removeprefix("model."): value for key, value in state.items()})
        model.save_pretrained(path, state_dict=weights, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)


def _without_tied_copies(model: torch.nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """A gathered state dict holds a tied weight (the LM head = the input embeddings) once per name, as separate
    tensors, which save_pretrained would write twice: keep the first name of each shared parameter, as
    save_pretrained does with the model's own state dict (from_pretrained ties them again)."""
    first: dict[int, str] = {}
    copies = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(param), name) != name:
            copies.add(name)
    return {key: value for key, value in weights.items() if key not in copies}


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
    accelerator.save_state(str(path))  # under FSDP with SHARDED_STATE_DICT: one shard per process
    _save_model(accelerator, scorer, tokenizer, path / "model")
    if accelerator.is_main_process:
        (path / "progress.json").write_text(json.dumps({"step": step, "micro_done": micro_done}))


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", dynamic_ncols=True)
