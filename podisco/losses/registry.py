"""One registry of preference losses, keyed by name, plus weighted combinations.

A registered loss follows the contract of docs/loss-contract.md::

    loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
         *, beta, **extra) -> Tensor of shape (B,)

Log-probs are summed over completion tokens. ``extra`` may carry ``chosen_lengths`` / ``rejected_lengths``
(completion token counts, shape (B,)), ``label_smoothing``, ``tau`` and ``gamma``; each loss takes what it needs
and ignores the rest, so a trainer can always pass the same keywords. ``register`` wraps every function so that
inputs are promoted to float32 or wider before any arithmetic.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from podisco.errors import PodiscoError
from podisco.losses.numerics import promote

LossFn = Callable[..., torch.Tensor]

FAMILIES = {
    "trl": "TRL 1.16 loss_type",
    "baseline": "paper baseline / classic",
    "discovered": "discovered (beta-consistent, paper App. E)",
    "discovered-original": "discovered (original GPT-4 code)",
    "discovered-repo": "discovered (corrected code of the authors' repo)",
}


class UnknownLossError(PodiscoError, KeyError):
    """A loss name that is not registered; the message suggests the close ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class LossParameterError(PodiscoError, ValueError):
    """A hyperparameter the loss does not take, or a malformed combination."""


@dataclass(frozen=True)
class LossSpec:
    """What the registry knows about one loss."""

    name: str
    fn: LossFn
    family: str
    formula: str
    source: str
    params: Mapping[str, float] = field(default_factory=dict)  # hyperparameters besides beta, with defaults
    needs_lengths: bool = False  # uses chosen_lengths / rejected_lengths
    reference_free: bool = False  # ignores the reference log-probs
    batch_dependent: bool = False  # one pair's loss depends on the other pairs in the batch
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0]


_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def _promoting(fn: LossFn) -> LossFn:
    if getattr(fn, "_podisco_promoting", False):
        return fn

    @functools.wraps(fn)
    def wrapper(
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        **kwargs: object,
    ) -> torch.Tensor:
        inputs = promote(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        return fn(*inputs, **kwargs)

    wrapper._podisco_promoting = True  # type: ignore[attr-defined]
    return wrapper


def register(
    name: str,
    *,
    family: str,
    formula: str,
    source: str,
    params: Mapping[str, float] | None = None,
    needs_lengths: bool = False,
    reference_free: bool = False,
    batch_dependent: bool = False,
    aliases: tuple[str, ...] = (),
) -> Callable[[LossFn], LossFn]:
    """Decorator: register ``fn`` under ``name`` and return it wrapped to compute in float32 or wider."""
    if family not in FAMILIES:
        raise ValueError(f"unknown loss family {family!r}; one of {sorted(FAMILIES)}")

    def decorate(fn: LossFn) -> LossFn:
        safe = _promoting(fn)
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"loss name {key!r} is registered twice")
        _REGISTRY[name] = LossSpec(
            name=name,
            fn=safe,
            family=family,
            formula=formula,
            source=source,
            params=dict(params or {}),
            needs_lengths=needs_lengths,
            reference_free=reference_free,
            batch_dependent=batch_dependent,
            aliases=aliases,
        )
        for alias in aliases:
            _ALIASES[alias] = name
        return safe

    return decorate


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def get_spec(name: str) -> LossSpec:
    """The spec of a registered loss; an unknown name raises with the close matches."""
    key = _canonical(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    raise unknown_name_error(name, [*_REGISTRY, *_ALIASES], "Run `podisco losses list` to see them all.")


def unknown_name_error(name: str, known: list[str], fallback: str) -> UnknownLossError:
    """The error for a name that is not registered, suggesting the close ones."""
    close = difflib.get_close_matches(_canonical(name), sorted(known), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" {fallback}"
    return UnknownLossError(f"Unknown loss {name!r}.{hint}")


def get_loss(name: str) -> LossFn:
    """The (float32-promoting) function of a registered loss."""
    return get_spec(name).fn


def list_specs() -> list[LossSpec]:
    """Every registered loss, in registration order (TRL's, then the baselines, then the discovered ones)."""
    return list(_REGISTRY.values())


def check_params(name: str, params: Mapping[str, object]) -> None:
    """Reject hyperparameters the loss does not take (a misspelled ``label_smothing`` would pass silently)."""
    spec = get_spec(name)
    for key in params:
        if key not in spec.params:
            accepted = ", ".join(sorted(spec.params)) or "none besides beta"
            raise LossParameterError(f"loss {spec.name!r} takes no parameter {key!r} (accepted: {accepted})")


def combine(weights: Mapping[str, float]) -> LossFn:
    """Weighted sum of registered losses, per pair: sum_i w_i * L_i.

    TRL's ``loss_type=[...]`` with ``loss_weights=[...]`` computes sum_i w_i * mean(L_i); the batch mean of our
    per-pair sum is the same number. Extra keywords reach every component (TRL shares them too).
    """
    if not weights:
        raise LossParameterError("a loss combination needs at least one component")
    parts = [(get_spec(name).fn, float(w)) for name, w in weights.items()]

    def combined(
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        **kwargs: object,
    ) -> torch.Tensor:
        inputs = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        return sum(w * fn(*inputs, **kwargs) for fn, w in parts)

    combined.__name__ = "+".join(f"{w:g}*{get_spec(n).name}" for n, w in weights.items())
    combined.__doc__ = f"Weighted combination {combined.__name__}."
    return combined


def resolve(loss: str | Mapping[str, float] | LossFn) -> LossFn:
    """A loss given as a registered name, a ``{name: weight}`` mapping, or a function under the contract."""
    if isinstance(loss, str):
        return get_loss(loss)
    if isinstance(loss, Mapping):
        return combine(loss)
    if callable(loss):
        return _promoting(loss)
    raise TypeError(f"a loss is a name, a {{name: weight}} mapping or a function, not {type(loss).__name__}")
