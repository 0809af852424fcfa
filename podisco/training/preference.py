"""Preference training: a registered loss (or a weighted combination, or any function under the loss
contract) on policy vs reference log-probs, through the shared loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator

from podisco.data import PreferenceExample, collate_preference
from podisco.losses import LossFn, check_params, combine, get_spec, resolve
from podisco.training.config import ConfigError, TrainConfig
from podisco.training.logprobs import sequence_logps
from podisco.training.loop import StepOutput, TrainResult, make_accelerator, run_training
from podisco.training.reference import (
    cached_reference_logps,
    compute_reference_logps,
    is_sharded,
    sharded_reference_logps,
)


def parse_loss(name: str) -> str | dict[str, float]:
    """ "discopop" -> "discopop"; "sigmoid=0.8,sft=1" -> {"sigmoid": 0.8, "sft": 1.0} (TRL's loss_weights)."""
    if "=" not in name and "," not in name:
        get_spec(name)  # fail early, with suggestions
        return name
    weights: dict[str, float] = {}
    for part in name.split(","):
        key, _, weight = part.partition("=")
        weights[get_spec(key).name] = float(weight) if weight else 1.0
    return weights


def build_loss(config: TrainConfig, loss: str | Mapping[str, float] | LossFn | None = None) -> tuple[LossFn, dict]:
    """The loss function and its keyword hyperparameters; unknown hyperparameters are refused."""
    params = config.loss.params()
    chosen = loss if loss is not None else parse_loss(config.loss.name)
    if isinstance(chosen, str):
        check_params(chosen, params)
        spec = get_spec(chosen)
        return spec.fn, {**spec.params, **params}
    if isinstance(chosen, Mapping):
        # As in TRL, hyperparameters are shared by the components; each must be taken by at least one of them.
        defaults: dict[str, float] = {}
        for part in chosen:
            defaults.update(get_spec(part).params)
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigError(f"loss.{unknown[0]}: no component of {', '.join(chosen)} takes it")
        return combine(chosen), {**defaults, **params}
    return resolve(chosen), params


def resolve_layout(layout: str, model: torch.nn.Module, examples: Sequence[PreferenceExample]) -> str:
    """ "auto" shares the prompt when that saves at least a quarter of the tokens and the attention takes a
    custom 4-D mask (SDPA, eager). With short prompts the masked attention over prompt + chosen + rejected
    costs more than encoding the prompt twice (measured in benchmarks/trainer_vs_trl.py)."""
    if layout != "auto":
        return layout
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    prompt = sum(len(e.prompt_ids) for e in examples)
    concat = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    return "shared" if impl in {"sdpa", "eager"} and prompt >= 0.25 * concat else "concat"


def preference_step(loss_fn: LossFn, loss_params: dict, beta: float):
    """compute(scorer, (batch, ref)) for the loop: per-pair losses in float32, TRL's metric names."""

    def compute(scorer: torch.nn.Module, item) -> StepOutput:
        batch, ref = item
        n = ref.shape[0]
        logps = sequence_logps(scorer, batch, 2 * n).float()
        pc, pr = logps[:n], logps[n:]
        rc, rr = ref[:, 0], ref[:, 1]
        losses = loss_fn(
            pc,
            pr,
            rc,
            rr,
            beta=beta,
            chosen_lengths=batch.chosen_lengths,
            rejected_lengths=batch.rejected_lengths,
            **loss_params,
        )
        loss = losses.mean()
        with torch.no_grad():
            chosen_rewards = beta * (pc - rc)
            rejected_rewards = beta * (pr - rr)
            metrics = {
                "loss": loss.item(),
                "rewards/chosen": chosen_rewards.mean().item(),
                "rewards/rejected": rejected_rewards.mean().item(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
                "logps/chosen": pc.mean().item(),
                "logps/rejected": pr.mean().item(),
            }
        return StepOutput(loss, metrics, batch.num_tokens)

    return compute


def _reference_logps(
    config: TrainConfig,
    accelerator: Accelerator,
    reference: torch.nn.Module,
    sharded: bool,
    tokenizer,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    layout: str,
) -> torch.Tensor:
    """The (n, 2) reference log-probs, the same on every process."""
    cache_dir = config.reference_cache_dir or None
    max_length = config.data.max_length
    if sharded:
        # Each forward all-gathers the weights: every process runs it (the main process alone would hang).
        args = (reference, tokenizer, examples, pad_id, layout, max_length, cache_dir, config.cache_reference)
        return sharded_reference_logps(*args)[0]
    if not config.cache_reference:
        return compute_reference_logps(reference, examples, pad_id, layout)
    # The main process computes (or finds) the cache entry; the others then read it.
    with accelerator.main_process_first():
        return cached_reference_logps(reference, tokenizer, examples, pad_id, layout, max_length, cache_dir)[0]


def train_preference(
    config: TrainConfig,
    model: torch.nn.Module,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    tokenizer=None,
    loss: str | Mapping[str, float] | LossFn | None = None,
    ref_model: torch.nn.Module | None = None,
    accelerator: Accelerator | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` with a preference loss. The reference is ``ref_model`` if given, else the model as it
    is now (its log-probs are precomputed before the first step, so no second copy is kept)."""
    config.validate()
    accelerator = accelerator or make_accelerator(config)
    loss_fn, loss_params = build_loss(config, loss)
    layout = resolve_layout(config.data.layout, model, examples)
    reference = ref_model if ref_model is not None else model
    if any(p.is_meta for p in reference.parameters()):
        # FSDP's cpu_ram_efficient_loading (with the Accelerator made before the model) loads on one process only.
        raise ConfigError(
            "the reference model has no weights on this process (meta tensors): every process needs them for the "
            "reference pass; set fsdp_cpu_ram_efficient_loading: false (as recipes/accelerate/fsdp.yaml does)"
        )
    # Sharded weights (FSDP, ZeRO-3) are already placed, and moving them would undo the sharding.
    sharded = is_sharded(reference)
    if not sharded:
        reference.to(accelerator.device)
    # A peft policy's reference is the same model with its adapter disabled: no second copy.
    adapter_off = model.disable_adapter() if ref_model is None and hasattr(model, "disable_adapter") else nullcontext()
    with adapter_off:
        ref_logps = _reference_logps(config, accelerator, reference, sharded, tokenizer, examples, pad_id, layout)
    if ref_model is not None and not sharded:
        ref_model.to("cpu")  # no longer needed on the accelerator

    def make_batch(indices: Sequence[int]):
        batch = collate_preference([examples[i] for i in indices], pad_id, layout=layout)
        return batch.to(accelerator.device), ref_logps[list(indices)].to(accelerator.device)

    return run_training(
        config,
        model,
        len(examples),
        make_batch,
        preference_step(loss_fn, loss_params, config.loss.beta),
        accelerator,
        tokenizer=tokenizer,
        resume_from=resume_from,
    )
