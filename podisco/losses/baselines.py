"""Preference losses outside TRL's DPOTrainer: KTO-pair as the paper's seed archive used it, and SimPO.

Notation as in ``trl_losses``: l_w, l_l are the chosen / rejected log-ratios, rho = l_w - l_l.
"""

from __future__ import annotations

import torch

from podisco.losses.registry import register
from podisco.losses.trl_losses import smoothed_sigmoid


@register(
    "kto_pair",
    family="baseline",
    formula="½[(1 - σ(β(l_w - KL_l))) + (1 - σ(β(KL_w - l_l)))], KL = clamp(mean_batch l, 0)",
    source="KTO, Ethayarajh et al. 2024 (arXiv 2402.01306); HALOs Eq. 7 pair form, as in the DiscoPOP seed archive",
    batch_dependent=True,
    aliases=("kto",),
)
def kto_pair(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """Pairwise KTO. KL_w = clamp(mean(l_w), 0) and KL_l likewise are batch estimates of the reference point;
    the chosen half is compared with KL_l and the rejected half with KL_w (the KTO report's cross estimate).

    The archive's code returns the concatenation of the two halves, shape (2B,), which breaks the (B,)
    contract; we return their per-pair average, whose batch mean equals the mean of that concatenation.
    """
    chosen_logratios, rejected_logratios = pc - rc, pr - rr
    chosen_kl = chosen_logratios.mean().clamp(min=0)
    rejected_kl = rejected_logratios.mean().clamp(min=0)
    chosen_loss = 1.0 - torch.sigmoid(beta * (chosen_logratios - rejected_kl))
    rejected_loss = 1.0 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))
    return 0.5 * (chosen_loss + rejected_loss)


@register(
    "simpo",
    family="baseline",
    formula="-log σ(β(log π_w/|y_w| - log π_l/|y_l|) - γ)  (reference-free)",
    source="SimPO, Meng et al. 2024 (arXiv 2405.14734), Eq. 6; TRL CPOTrainer loss_type='simpo'",
    params={"gamma": 0.5, "label_smoothing": 0.0},
    needs_lengths=True,
    reference_free=True,
)
def simpo(
    pc,
    pr,
    rc,
    rr,
    *,
    beta: float,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
    **_,
) -> torch.Tensor:
    """Simple preference optimisation: a length-normalised implicit reward with a target margin gamma and no
    reference model (the paper uses beta around 2-2.5, not DPO's 0.05-0.5)."""
    chosen = pc / chosen_lengths.to(pc).clamp(min=1.0)
    rejected = pr / rejected_lengths.to(pr).clamp(min=1.0)
    return smoothed_sigmoid(beta * (chosen - rejected) - gamma, label_smoothing)
