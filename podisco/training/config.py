"""Training configuration: one dataclass per concern, nested under ``TrainConfig``; YAML is a serialised
``TrainConfig``, and ``--key=value`` overrides (``optim.lr=1e-5``) are type-checked against the fields."""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from podisco.errors import PodiscoError


class ConfigError(PodiscoError, ValueError):
    """A configuration value that cannot be used, named by its dotted key."""


@dataclass
class DataConfig:
    path: str = ""  # jsonl / json / csv / parquet file, a saved datasets folder, or a hub id
    split: str = "train"
    max_length: int = 512  # prompt + longest completion, in tokens (TRL keep_start truncation)
    layout: str = "auto"  # "shared": prompt encoded once per pair (exact); "concat": TRL's layout; "auto"
    on_error: str = "drop"  # a bad row is "drop"ped and reported, or "raise"s


@dataclass
class LossConfig:
    name: str = "sigmoid"  # a registered loss, or "sigmoid=0.8,sft=1.0" for a weighted combination
    beta: float = 0.1
    label_smoothing: float | None = None
    tau: float | None = None
    gamma: float | None = None

    def params(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (("label_smoothing", self.label_smoothing), ("tau", self.tau), ("gamma", self.gamma))
            if v is not None
        }


@dataclass
class OptimConfig:
    lr: float = 5e-6
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    schedule: str = "cosine"  # "cosine" | "linear" | "constant", each after a linear warmup
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # 0 disables clipping


@dataclass
class LoraSettings:
    r: int = 0  # 0: train every weight; > 0: a LoRA adapter of this rank (needs peft); the reference is then
    # the same model with the adapter disabled, so no second copy is kept
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str = ""  # comma-separated module names; empty: peft's default for the architecture


@dataclass
class TrainConfig:
    model: str = ""  # a local folder with save_pretrained weights, or a hub id
    output_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    batch_size: int = 8  # pairs per optimizer step and process, before gradient accumulation
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    seed: int = 42
    precision: str = "auto"  # "auto" (bf16 autocast where supported), "bf16", "fp32"
    gradient_checkpointing: bool = False
    disable_dropout: bool = True
    cache_reference: bool = True  # reference log-probs are always precomputed; this keeps them on disk
    reference_cache_dir: str = ""  # default: ~/.cache/podisco/reference
    logprob_chunk_tokens: int = 8192  # lm_head is applied to at most this many tokens at a time
    # torch.compile of the log-prob forward (model body + chunked head; dynamic shapes, since batch lengths
    # vary): a GPU speed-up that costs its compile time in the first steps (benchmarks/trainer_vs_trl.py)
    compile: bool = False
    log_every: int = 1
    save_every: int = 0  # steps between checkpoints; 0: only at the end
    save_model: bool = True  # False: no end checkpoint, no final/ weights (a discovery worker answers from memory)
    report_to: str = "none"  # "none" | "tensorboard" | "wandb"

    def validate(self) -> None:
        checks = [
            (self.loss.beta > 0, "loss.beta", f"must be positive, got {self.loss.beta}"),
            (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}"),
            (self.optim.lr > 0, "optim.lr", f"must be positive, got {self.optim.lr}"),
            (0 <= self.optim.warmup_ratio < 1, "optim.warmup_ratio", "must be in [0, 1)"),
            (self.optim.schedule in {"cosine", "linear", "constant"}, "optim.schedule", "cosine, linear or constant"),
            (self.data.layout in {"auto", "shared", "concat"}, "data.layout", "auto, shared or concat"),
            (self.data.on_error in {"drop", "raise"}, "data.on_error", "drop or raise"),
            (self.data.max_length >= 2, "data.max_length", "must be >= 2"),
            (self.precision in {"auto", "bf16", "fp32"}, "precision", "auto, bf16 or fp32"),
            (self.epochs > 0 or self.max_steps > 0, "epochs", "epochs or max_steps must be positive"),
            (self.report_to in {"none", "tensorboard", "wandb"}, "report_to", "none, tensorboard or wandb"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key}: {message}")


def to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML or command-line value to a field's declared type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        is_null = value is None or (isinstance(value, str) and value.lower() in {"none", "null"})
        if is_null and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot use {value!r}")
    if origin is tuple and typing.get_args(annotation)[-1:] == (Ellipsis,):  # tuple[int, ...]: any length
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        return tuple(_coerce(v, typing.get_args(annotation)[0], key) for v in items)
    if origin is dict:  # free-form options, checked by their owner (a task's option dataclass)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is typing.Any:
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        args = typing.get_args(annotation)
        if len(items) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(items, args, strict=True))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply(config: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """Apply nested ``updates`` (from YAML) to a dataclass instance, type-checking every value."""
    names = {f.name for f in fields(config)}
    hints = _field_types(type(config))
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key (known: {', '.join(sorted(names))})")
        current = getattr(config, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a mapping of {', '.join(f.name for f in fields(current))}")
            apply(current, value, f"{dotted}.")
        elif isinstance(current, dict) and isinstance(value, dict):  # merged: key.sub=value sets one entry
            setattr(config, key, {**current, **value})
        else:
            setattr(config, key, _coerce(value, hints[key], dotted))
    return config


def override(config: Any, assignment: str) -> Any:
    """Apply one ``key.sub=value`` override."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    key, value = assignment.split("=", 1)
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return apply(config, nested)


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """A ``cls`` instance from defaults, then a YAML file, then ``key=value`` overrides."""
    config = cls()
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "cannot be parsed"
            raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the YAML file must hold a mapping")
        apply(config, data)
    for assignment in overrides or []:
        override(config, assignment)
    return config
