"""``precision="auto"`` on a CPU: bf16 autocast only where a short timed probe finds it faster on this model.

Whether bf16 autocast pays on a CPU depends on the CPU (AVX512-BF16, AMX), the thread count and the model's
size: on one machine fwd+bwd+AdamW of a random GPT-2 ran 2.35x faster in bf16 at 12 layers x 768 but five
times slower at 4 x 128; on another (AVX512-BF16, no AMX, one thread) bf16 was slower at both (0.63x and
0.65x, benchmarks/cpu_precision.py). So ``choose_cpu_precision`` measures instead of guessing: a few fwd+bwd
steps of the real training step on the first training items, after a warm-up step of each, fp32 and bf16
interleaved (ABBA) and the fastest of each kept (noise on a shared machine only adds time). bf16 is chosen
only when it is at least ``MIN_SPEEDUP`` times faster. The probe costs a bounded number of steps: it first
times one item in fp32, then probes with as many items as fit in ``PROBE_STEP_S`` per step (at most the batch
size), and stops after the round that passes ``PROBE_BUDGET_S``. The decision is cached per machine and
shape under ``cache_home()/precision/`` (key: CPU model and flags, torch version, threads, the model's class,
config and parameter shapes, the batch's bucketed shapes, the step function) and reused without timing.
The probe runs on the model itself but never steps an optimizer: parameters, buffers, existing gradients and
torch's RNG state are as before. ``PODISCO_CPU_PRECISION=fp32|bf16`` forces the choice without a probe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from podisco.cache import atomic_output, cache_home
from podisco.training.config import ConfigError

ENV = "PODISCO_CPU_PRECISION"  # "fp32" | "bf16": what precision="auto" uses on a CPU, without a probe
MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by this factor; below it fp32 wins (the same speed, exact numerics)
PROBE_STEP_S = 0.5  # the probe batch holds as many items as one fp32 fwd+bwd runs in this time
PROBE_BUDGET_S = 3.0  # no timed round starts after this much probing
MAX_ROUNDS = 3  # timed rounds (one fp32 and one bf16 step each), after the warm-up steps
PROBE_VERSION = 1  # part of the cache key: bump when the probe or the rule changes
_VOLATILE_CONFIG = {"_name_or_path", "name_or_path", "transformers_version", "_commit_hash"}

_clock = time.perf_counter
_DECIDED: dict[str, Decision] = {}  # this process's decisions, so that a read-only cache does not re-probe
_LOGGED: set[str] = set()


class _Bf16Failed(RuntimeError):
    pass


@dataclass(frozen=True)
class Measurement:
    fp32_s: float  # the fastest timed fwd+bwd step of the probe batch in fp32
    bf16_s: float  # the same under bf16 autocast
    items: int  # items in the probe batch
    rounds: int  # timed rounds
    cost_s: float  # the whole probe, warm-up included


@dataclass(frozen=True)
class Decision:
    precision: str  # "bf16" | "fp32"
    source: str  # "measured" (here, now), "cached" (by an earlier run), "forced" (by $PODISCO_CPU_PRECISION)
    key: str = ""  # the cache key's digest ("" when forced)
    fp32_s: float | None = None
    bf16_s: float | None = None
    probe_s: float = 0.0  # what the probe cost, when it ran (cached: what it cost then)
    items: int = 0
    note: str = ""  # why bf16 was not measured (it failed)

    @property
    def speedup(self) -> float | None:
        """fp32 time / bf16 time of one fwd+bwd step (above 1: bf16 is faster)."""
        return self.fp32_s / self.bf16_s if self.fp32_s and self.bf16_s else None

    def describe(self) -> str:
        if self.source == "forced":
            return f"precision auto: {self.precision} (forced by {ENV}; not measured)"
        if self.note:
            return f"precision auto: {self.precision} ({self.note})"
        how = f"probe {self.probe_s:.1f} s" if self.source == "measured" else "measured earlier, cached"
        times = f"fwd+bwd {self.fp32_s * 1e3:.0f} ms fp32, {self.bf16_s * 1e3:.0f} ms bf16; {how}"
        if self.precision == "bf16":
            return f"precision auto: bf16 {self.speedup:.2f}x faster than fp32 on this CPU for this model ({times})"
        return f"precision auto: fp32 (bf16 {self.speedup:.2f}x fp32's speed on this CPU for this model; {times})"


def forced_precision() -> str | None:
    """``$PODISCO_CPU_PRECISION`` if set to fp32 or bf16; None when unset, empty or "auto"."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in {"", "auto"}:
        return None
    if value not in {"fp32", "bf16"}:
        raise ConfigError(f"{ENV}: fp32, bf16 or auto, got {value!r}")
    return value


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


@functools.cache
def cpu_signature() -> dict[str, Any]:
    """The CPU's model name and a digest of its feature flags (/proc/cpuinfo; platform elsewhere)."""
    name, flags = "", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in {"model name", "Hardware", "Processor"} and not name:
                name = value.strip()
            elif key in {"flags", "Features"} and not flags:
                flags = value.strip()
    words = sorted(set(flags.split()))
    return {
        "cpu": name or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "flags": _digest(words),
        "bf16_flags": [w for w in words if "bf16" in w or w.startswith("amx")],
    }


def model_signature(model: torch.nn.Module) -> dict[str, Any]:
    """Class, size, config (without paths and versions) and parameter shapes: what the speed depends on."""
    config = getattr(model, "config", None)
    settings = config.to_dict() if hasattr(config, "to_dict") else {}
    settings = {k: v for k, v in settings.items() if k not in _VOLATILE_CONFIG}
    settings["_attn_implementation"] = getattr(config, "_attn_implementation", None)
    params = [(n, list(p.shape), str(p.dtype), p.requires_grad) for n, p in model.named_parameters()]
    shape_keys = ("n_layer", "num_hidden_layers", "n_embd", "hidden_size", "n_head", "vocab_size")
    return {
        "class": type(model).__name__,
        "shape": {k: settings[k] for k in shape_keys if k in settings},
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "config": _digest(settings),
        "layout": _digest(params),
        "gradient_checkpointing": _checkpointing(model),
    }


def _checkpointing(model: torch.nn.Module) -> bool:
    # transformers 5 renamed gradient checkpointing to activation checkpointing (the old name warns)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if name in dir(type(model)):
            return bool(getattr(model, name))
    return False


def _bucket(size: int) -> int:
    return size if size <= 1 else 1 << (size - 1).bit_length()


def batch_signature(batch: Any) -> list[list]:
    """dtype and shape of every tensor in a batch (dataclasses, mappings, sequences are walked), each size
    rounded up to a power of two, so that batches padded to slightly different lengths share a key."""
    found: list[list] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            found.append([str(value.dtype).removeprefix("torch."), *(_bucket(s) for s in value.shape)])
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, Mapping):
            for k in sorted(value, key=str):
                walk(value[k])
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(batch)
    return found


def probe_key(model: torch.nn.Module, batch: Any, label: str = "") -> dict[str, Any]:
    return {
        **cpu_signature(),
        "probe": PROBE_VERSION,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": model_signature(model),
        "batch": batch_signature(batch),
        "step": label,
    }


def _fwd_bwd(loss_of: Callable[[Any], torch.Tensor], batch: Any, bf16: bool, params: list[torch.Tensor]) -> float:
    """Seconds of one forward (autocast as the loop does it) and backward; gradients are dropped first."""
    for p in params:
        p.grad = None
    start = _clock()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(batch)
        loss.backward()
    except RuntimeError as error:
        if bf16:  # an op without a bf16 CPU kernel; an fp32 failure is training's own, raised as it is
            raise _Bf16Failed(str(error)) from error
        raise
    return _clock() - start


def measure(
    loss_of: Callable[[Any], torch.Tensor],
    make_batch: Callable[[int], Any],
    batch_size: int,
    params: list[torch.Tensor],
) -> Measurement:
    """Time fwd+bwd in fp32 and bf16: one item in fp32 sizes the probe batch; a warm-up step of each at that
    size; then rounds fp32, bf16 / bf16, fp32 / ... until ``MAX_ROUNDS`` or ``PROBE_BUDGET_S``."""
    start = _clock()
    batch = make_batch(1)
    one = _fwd_bwd(loss_of, batch, False, params)  # also the fp32 warm-up when the probe keeps one item
    items = max(1, min(batch_size, int(PROBE_STEP_S / max(one, 1e-9))))
    if items > 1:
        batch = make_batch(items)
        _fwd_bwd(loss_of, batch, False, params)
    _fwd_bwd(loss_of, batch, True, params)
    times: dict[bool, list[float]] = {False: [], True: []}
    rounds = 0
    while rounds < MAX_ROUNDS:
        for bf16 in (False, True) if rounds % 2 == 0 else (True, False):
            times[bf16].append(_fwd_bwd(loss_of, batch, bf16, params))
        rounds += 1
        if _clock() - start > PROBE_BUDGET_S:
            break
    return Measurement(min(times[False]), min(times[True]), items, rounds, _clock() - start)


@contextlib.contextmanager
def preserved(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """The model's trainable parameters, for a probe; afterwards gradients, buffers and torch's CPU RNG state
    are as they were (parameters are never stepped)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[]):
            yield params
    finally:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def choose_cpu_precision(
    model: torch.nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    make_batch: Callable[[int], Any],
    batch_size: int,
    label: str = "",
    cache_dir: str | Path | None = None,
) -> Decision:
    """What ``precision="auto"`` trains ``model`` in on a CPU. ``loss_of(batch)`` is the training step's
    forward (a scalar loss); ``make_batch(n)`` a micro-batch of the first ``n`` training items; ``batch_size``
    the micro-batch size of training. Forced by ``$PODISCO_CPU_PRECISION``, else cached, else measured."""
    forced = forced_precision()
    if forced:
        return Decision(forced, "forced")
    key = probe_key(model, make_batch(batch_size), label)
    digest = _digest(key)
    if digest in _DECIDED:
        return _DECIDED[digest]
    path = Path(cache_dir or cache_home() / "precision") / f"{digest}.json"
    decision = _read(path, digest)
    if decision is None:
        decision = _measured(model, loss_of, make_batch, batch_size, digest)
        record = {**dataclasses.asdict(decision), "source": "cached", "signature": key, "created": time.time()}
        try:
            with atomic_output(path) as tmp:
                tmp.write_text(json.dumps(record, indent=1))
        except OSError as error:  # a read-only cache only costs another probe in the next process
            warnings.warn(f"precision decision not cached: {error}", stacklevel=2)
    _DECIDED[digest] = decision
    return decision


def _measured(model, loss_of, make_batch, batch_size: int, digest: str) -> Decision:
    with preserved(model) as params:
        try:
            m = measure(loss_of, make_batch, batch_size, params)
        except _Bf16Failed as error:
            return Decision("fp32", "measured", digest, note=f"bf16 failed in the probe: {error}"[:200])
    choice = "bf16" if m.fp32_s >= MIN_SPEEDUP * m.bf16_s else "fp32"
    return Decision(choice, "measured", digest, m.fp32_s, m.bf16_s, m.cost_s, m.items)


def _read(path: Path, digest: str) -> Decision | None:
    try:
        record = json.loads(path.read_text())
        decision = Decision(**{f.name: record[f.name] for f in dataclasses.fields(Decision)})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if decision.precision not in {"bf16", "fp32"} or decision.key != digest:
        return None
    return decision


def log_once(decision: Decision, log: Callable[[str], None]) -> None:
    """``log(decision.describe())`` the first time this process meets the decision."""
    tag = decision.key or f"{ENV}={decision.precision}"
    if tag not in _LOGGED:
        _LOGGED.add(tag)
        log(decision.describe())


def cpu_auto_bf16(
    config,
    accelerator,
    model: torch.nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    make_batch: Callable[[int], Any],
    step: Callable,
) -> bool:
    """Whether the loop trains ``config.precision="auto"`` in bf16 autocast on this CPU (its Accelerator was
    made without mixed precision there). The main process decides, logs the decision once, and tells the
    others; ``step`` (the loop's compute function) is part of the cache key."""
    if config.precision != "auto" or accelerator.device.type != "cpu" or accelerator.mixed_precision != "no":
        return False
    choice = "fp32"
    if accelerator.is_main_process and all(p.device.type == "cpu" for p in model.parameters()):
        label = f"{getattr(step, '__module__', '')}.{getattr(step, '__qualname__', type(step).__name__)}"
        decision = choose_cpu_precision(model, loss_of, make_batch, config.batch_size, label)
        log_once(decision, lambda line: print(line, file=sys.stderr, flush=True))
        choice = decision.precision
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        choice = broadcast_object_list([choice])[0]
    return choice == "bf16"
