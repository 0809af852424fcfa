"""Preference-optimisation losses: pure per-pair functions, one registry, and their analysis.

>>> from podisco.losses import get_loss
>>> loss = get_loss("discopop")(pc, pr, rc, rr, beta=0.05)   # shape (B,)
"""

from podisco.losses import baselines, discovered, trl_losses  # noqa: F401  (importing registers the losses)
from podisco.losses.registry import (
    FAMILIES,
    LossFn,
    LossSpec,
    UnknownLossError,
    check_params,
    combine,
    get_loss,
    get_spec,
    list_specs,
    register,
    resolve,
)
from podisco.losses.trl_losses import margin

TRL_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

__all__ = [
    "FAMILIES",
    "TRL_LOSS_TYPES",
    "LossFn",
    "LossSpec",
    "UnknownLossError",
    "check_params",
    "combine",
    "get_loss",
    "get_spec",
    "list_specs",
    "margin",
    "register",
    "resolve",
]
