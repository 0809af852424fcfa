"""The fifteen ``loss_type`` values of TRL 1.16's ``DPOTrainer``, as pure per-pair functions.

Notation (TRL's, shared by every docstring here): l_w = log pi(y_w|x) - log pi_ref(y_w|x) and
l_l = log pi(y_l|x) - log pi_ref(y_l|x) are the chosen / rejected log-ratios, Delta = l_w - l_l = rho,
u = beta * Delta, eps = label_smoothing, |y| a completion's token count. In signatures, pc, pr, rc, rr abbreviate
the contract's four positional inputs (policy chosen/rejected, reference chosen/rejected log-probs, each (B,)).
Formulas follow ``trl/trainer/dpo_trainer.py::_compute_loss`` of the 1.16.0 wheel;
tests/losses/test_trl_parity.py runs that code.
"""

from __future__ import annotations

import torch

from podisco.losses.numerics import safe_exp, softplus_neg
from podisco.losses.registry import register

F_LOGSIG = torch.nn.functional.logsigmoid


def margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """rho = (log pi_w - log pi_l) - (log ref_w - log ref_l), shape (B,)."""
    return (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)


def _per_token_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> torch.Tensor:
    """l_w/|y_w| - l_l/|y_l| (TRL clamps token counts at 1)."""
    chosen = (policy_chosen_logps - reference_chosen_logps) / chosen_lengths.to(policy_chosen_logps).clamp(min=1.0)
    rejected = (policy_rejected_logps - reference_rejected_logps) / rejected_lengths.to(policy_rejected_logps).clamp(
        min=1.0
    )
    return chosen - rejected


def smoothed_sigmoid(u: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """cDPO: -(1 - eps) log sigma(u) - eps log sigma(-u)."""
    return -(1.0 - label_smoothing) * F_LOGSIG(u) - label_smoothing * F_LOGSIG(-u)


@register(
    "sigmoid",
    family="trl",
    formula="-(1-eps)·log σ(βρ) - eps·log σ(-βρ)",
    source="DPO, Rafailov et al. 2023 (arXiv 2305.18290), Eq. 7; cDPO label smoothing (Mitchell 2023)",
    params={"label_smoothing": 0.0},
    aliases=("dpo",),
)
def sigmoid(pc, pr, rc, rr, *, beta: float, label_smoothing: float = 0.0, **_) -> torch.Tensor:
    """DPO: -log sigma(beta*rho); with label smoothing eps > 0 it is conservative DPO (cDPO).

    TRL 1.16's ``sigmoid`` ignores ``label_smoothing``; at eps = 0 (our default) the two agree exactly.
    """
    return smoothed_sigmoid(beta * margin(pc, pr, rc, rr), label_smoothing)


@register(
    "hinge",
    family="trl",
    formula="max(0, 1 - βρ)",
    source="SLiC-HF, Zhao et al. 2023 (arXiv 2305.10425); RSO, Liu et al. 2023 (arXiv 2309.06657)",
    aliases=("slic",),
)
def hinge(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """SLiC / RSO hinge loss: relu(1 - beta*rho)."""
    return torch.relu(1.0 - beta * margin(pc, pr, rc, rr))


@register(
    "ipo",
    family="trl",
    formula="(ρ̄ - 1/(2β))², ρ̄ = l_w/|y_w| - l_l/|y_l|",
    source="IPO, Azar et al. 2023 (arXiv 2310.12036), Eq. 17; per-token averaging as TRL (confirmed with authors)",
    needs_lengths=True,
)
def ipo(pc, pr, rc, rr, *, beta: float, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor, **_):
    """IPO: (rho_bar - 1/(2 beta))^2 on log-ratios averaged per completion token, as TRL computes it."""
    rho_bar = _per_token_margin(pc, pr, rc, rr, chosen_lengths, rejected_lengths)
    return (rho_bar - 1.0 / (2.0 * beta)) ** 2


@register(
    "exo_pair",
    family="trl",
    formula="σ(u)[log σ(u) - log(1-eps)] + σ(-u)[log σ(-u) - log eps], u = βρ",
    source="EXO, Ji et al. 2024 (arXiv 2402.00856), Eq. 16",
    params={"label_smoothing": 1e-3},
)
def exo_pair(pc, pr, rc, rr, *, beta: float, label_smoothing: float = 1e-3, **_) -> torch.Tensor:
    """EXO-pref: KL(softmax(beta * log-ratios) || [1-eps, eps]) over {chosen, rejected}; needs eps > 0."""
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair needs 0 < label_smoothing < 1, got {label_smoothing}")
    u = beta * margin(pc, pr, rc, rr)
    eps = torch.as_tensor(label_smoothing, dtype=u.dtype)
    return torch.sigmoid(u) * (F_LOGSIG(u) - torch.log1p(-eps)) + torch.sigmoid(-u) * (F_LOGSIG(-u) - torch.log(eps))


@register(
    "nca_pair",
    family="trl",
    formula="-log σ(βl_w) - ½ log σ(-βl_w) - ½ log σ(-βl_l)",
    source="NCA, Chen et al. 2024 (arXiv 2402.05369)",
)
def nca_pair(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """Noise-contrastive alignment on the two rewards r_w = beta*l_w, r_l = beta*l_l."""
    r_w, r_l = beta * (pc - rc), beta * (pr - rr)
    return -F_LOGSIG(r_w) - 0.5 * F_LOGSIG(-r_w) - 0.5 * F_LOGSIG(-r_l)


@register(
    "robust",
    family="trl",
    formula="[-(1-eps) log σ(βρ) + eps log σ(-βρ)] / (1-2eps)",
    source="Robust DPO, Chowdhury et al. 2024 (arXiv 2403.00409), Eq. 9",
    params={"label_smoothing": 0.0},
)
def robust(pc, pr, rc, rr, *, beta: float, label_smoothing: float = 0.0, **_) -> torch.Tensor:
    """Robust DPO: an unbiased loss under label noise of rate eps in [0, 0.5)."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    u = beta * margin(pc, pr, rc, rr)
    eps = label_smoothing
    return (-(1.0 - eps) * F_LOGSIG(u) + eps * F_LOGSIG(-u)) / (1.0 - 2.0 * eps)


@register(
    "bco_pair",
    family="trl",
    formula="-log σ(βl_w) - log σ(-βl_l)",
    source="BCO, Jung et al. 2024 (arXiv 2404.04656); TRL 1.16 form (no running reward shift)",
)
def bco_pair(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """Binary classifier optimisation on paired data: chosen reward up, rejected reward down, independently."""
    return -F_LOGSIG(beta * (pc - rc)) - F_LOGSIG(-beta * (pr - rr))


@register(
    "sppo_hard",
    family="trl",
    formula="(l_w - 1/(2β))² + (l_l + 1/(2β))²",
    source="SPPO, Wu et al. 2024 (arXiv 2405.00675), Eq. 4.7 with hard labels P = 1 / 0",
)
def sppo_hard(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """Self-play preference optimisation, hard-label version: regress each log-ratio to +-1/(2 beta)."""
    return (pc - rc - 0.5 / beta) ** 2 + (pr - rr + 0.5 / beta) ** 2


@register(
    "aot",
    family="trl",
    formula="cDPO on β·(sort(log π_w - log π_l) - sort(log ref_w - log ref_l))",
    source="AOT, Melnyk et al. 2024 (arXiv 2406.05882), paired version",
    params={"label_smoothing": 0.0},
    batch_dependent=True,
)
def aot(pc, pr, rc, rr, *, beta: float, label_smoothing: float = 0.0, **_) -> torch.Tensor:
    """Alignment via optimal transport: the batch's policy and reference margins are sorted separately, so
    the loss asks for first-order stochastic dominance of the policy's margin distribution."""
    delta = torch.sort(pc - pr, dim=0).values - torch.sort(rc - rr, dim=0).values
    return smoothed_sigmoid(beta * delta, label_smoothing)


@register(
    "aot_unpaired",
    family="trl",
    formula="cDPO on β·(sort(l_w) - sort(l_l))",
    source="AOT, Melnyk et al. 2024 (arXiv 2406.05882), unpaired version",
    params={"label_smoothing": 0.0},
    batch_dependent=True,
)
def aot_unpaired(pc, pr, rc, rr, *, beta: float, label_smoothing: float = 0.0, **_) -> torch.Tensor:
    """AOT for unpaired data: chosen and rejected log-ratios are sorted independently."""
    delta = torch.sort(pc - rc, dim=0).values - torch.sort(pr - rr, dim=0).values
    return smoothed_sigmoid(beta * delta, label_smoothing)


@register(
    "apo_zero",
    family="trl",
    formula="(1 - σ(βl_w)) + σ(βl_l)",
    source="APO, D'Oosterlinck et al. 2024 (arXiv 2408.06266), Eq. 7",
)
def apo_zero(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """Anchored preference optimisation, zero anchor: push chosen likelihood up and rejected down."""
    return (1.0 - torch.sigmoid(beta * (pc - rc))) + torch.sigmoid(beta * (pr - rr))


@register(
    "apo_down",
    family="trl",
    formula="σ(βl_w) + (1 - σ(βρ))",
    source="APO, D'Oosterlinck et al. 2024 (arXiv 2408.06266), Eq. 8",
)
def apo_down(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """APO-down: both likelihoods go down, the rejected one more (chosen answers worse than the model's)."""
    return torch.sigmoid(beta * (pc - rc)) + (1.0 - torch.sigmoid(beta * margin(pc, pr, rc, rr)))


@register(
    "discopop",
    family="trl",
    formula="(1-σ(βρ/τ))·(-log σ(βρ)) + σ(βρ/τ)·exp(-βρ)",
    source="DiscoPOP / LRML, Lu et al. 2024 (arXiv 2406.08414), Eq. 5 and App. E; TRL discopop_tau",
    params={"tau": 0.05},
    aliases=("lrml",),
)
def discopop(pc, pr, rc, rr, *, beta: float, tau: float = 0.05, **_) -> torch.Tensor:
    """DiscoPOP (Log Ratio Modulated Loss): a logistic / exponential blend gated by sigma(beta*rho/tau).

    This is also the beta-consistent form of the discovered LRML (paper App. E). exp(-u) is the linearised
    ``safe_exp``; where exp(-u) is huge the gate sigma(u/tau) is 0, so the value is unchanged while finite.
    """
    u = beta * margin(pc, pr, rc, rr)
    gate = torch.sigmoid(u / tau)
    return (1.0 - gate) * softplus_neg(u) + gate * safe_exp(-u)


@register(
    "sft",
    family="trl",
    formula="Σ_batch NLL(y_w) / Σ_batch |y_w|  (token mean over the batch)",
    source="RPO / MPO-style SFT term (Pang et al. 2024, arXiv 2404.19733); TRL 1.16 loss_type='sft'",
    needs_lengths=True,
    reference_free=True,
    batch_dependent=True,
)
def sft(pc, pr, rc, rr, *, chosen_lengths: torch.Tensor, **_) -> torch.Tensor:
    """Negative log-likelihood of the chosen completions, averaged over all chosen tokens of the batch.

    Per pair we return -log pi(y_w) * B / sum(|y_w|), whose batch mean is exactly TRL's token mean.
    """
    total_tokens = chosen_lengths.to(pc).sum().clamp(min=1.0)
    return -pc * pc.shape[0] / total_tokens


@register(
    "sigmoid_norm",
    family="trl",
    formula="-log σ(β(l_w/|y_w| - l_l/|y_l|))",
    source="TRL 1.16 'sigmoid_norm' (length-normalised DPO, in the spirit of SimPO, Meng et al. 2024)",
    needs_lengths=True,
)
def sigmoid_norm(pc, pr, rc, rr, *, beta: float, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor, **_):
    """DPO on per-token log-ratios, with the reference kept."""
    return softplus_neg(beta * _per_token_margin(pc, pr, rc, rr, chosen_lengths, rejected_lengths))
