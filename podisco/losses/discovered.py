"""The seven losses discovered by GPT-4 in the DiscoPOP paper (arXiv 2406.08414, Table 1 and App. E).

Each is registered twice (docs/paper.md §4):

* ``NAME``: the beta-consistent form of App. E. beta multiplies rho first (u = beta*rho), and terms the
  discovered code computed on the raw rho are computed on u/tau with tau = 0.05, so the two forms agree at the
  discovery beta of 0.05 and the loss scales sensibly with beta.
* ``NAME_original``: the code GPT-4 wrote, which the MT-Bench and AlpacaEval models were trained with.

For AQL and PFL the authors' repository (``gpo.py``, used for the TL;DR and IMDb runs) differs from App. E
at beta = 0.05; those versions are ``aql_repo`` and ``pfl_repo``. LRML's beta-consistent form is TRL's
``discopop`` (alias ``lrml``), registered in ``trl_losses``.

Batch statistics (mean, var, std) are recomputed per minibatch with gradients flowing through them, as in
the discovered code; a batch of one has variance 0 (the original code gives NaN there).
Notation: rho = margin, u = beta*rho, s = u/tau; f_dpo(x) = -log sigma(x), f_slic(x) = max(0, 1-x),
f_exp(x) = exp(-x).
"""

from __future__ import annotations

import torch

from podisco.losses.numerics import batch_std, batch_var, hinge, safe_exp, softplus_neg
from podisco.losses.registry import register
from podisco.losses.trl_losses import margin

TAU = 0.05  # App. E: the discovery beta, used to make the discovered code beta-consistent
PAPER = "Lu et al. 2024, DiscoPOP (arXiv 2406.08414)"
REPO = "SakanaAI/DiscoPOP src/alignment/gpo.py"


# --- LRML / DiscoPOP -----------------------------------------------------------------------------------------
@register(
    "lrml_original",
    family="discovered-original",
    formula="(1-σ(ρ))·f_dpo(βρ) + σ(ρ)·f_exp(βρ)",
    source=f"{PAPER}, App. E.6 (log_ratio_modulated_loss as discovered); {REPO} *_old",
    aliases=("discopop_original",),
)
def lrml_original(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """LRML as GPT-4 wrote it: the gate sigma(rho) does not see beta (equal to discopop at beta = tau)."""
    rho = margin(pc, pr, rc, rr)
    u, gate = beta * rho, torch.sigmoid(rho)
    return (1.0 - gate) * softplus_neg(u) + gate * safe_exp(-u)


# --- PADLL -----------------------------------------------------------------------------------------------------
def _padll(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """PADLL: 0.9·(1 - 0.5·1[rho<0])·f_dpo(beta*rho): logistic loss, halved weight on mis-ranked pairs."""
    rho = margin(pc, pr, rc, rr)
    weight = 0.9 * (1.0 - 0.5 * (rho < 0).to(rho.dtype))
    return weight * softplus_neg(beta * rho)


padll = register(
    "padll",
    family="discovered",
    formula="0.9·(1 - 0.5·1[ρ<0])·f_dpo(βρ)",
    source=f"{PAPER}, App. E (Performance Adaptive Decay Logistic Loss)",
)(_padll)
register(
    "padll_original",
    family="discovered-original",
    formula="0.9·(1 - 0.5·1[ρ<0])·f_dpo(βρ)  (identical: the code applied β first)",
    source=f"{REPO} performance_adaptive_decay_logistic_loss",
)(padll)


# --- CELL ------------------------------------------------------------------------------------------------------
def _cell(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """CELL: 0.5·f_dpo(beta*rho) + 0.5·f_exp(beta*rho), an even logistic / exponential mix."""
    u = beta * margin(pc, pr, rc, rr)
    return 0.5 * softplus_neg(u) + 0.5 * safe_exp(-u)


cell = register(
    "cell",
    family="discovered",
    formula="½·f_dpo(βρ) + ½·f_exp(βρ)",
    source=f"{PAPER}, App. E (Combined Exponential + Logistic Loss)",
)(_cell)
register(
    "cell_original",
    family="discovered-original",
    formula="½·f_exp(βρ) + ½·f_dpo(βρ)  (identical: the code applied β first)",
    source=f"{REPO} combined_exp_logistic_loss",
)(cell)


# --- DBAQL -----------------------------------------------------------------------------------------------------
def _dbaql(u: torch.Tensor, statistic_input: torch.Tensor) -> torch.Tensor:
    """w·f_dpo(u/0.9) + (1-w)·f_exp(0.9u), w = sigma(Var_batch[statistic_input]) (temperature 0.9)."""
    w = torch.sigmoid(batch_var(statistic_input))
    return w * softplus_neg(u / 0.9) + (1.0 - w) * safe_exp(-0.9 * u)


@register(
    "dbaql",
    family="discovered",
    formula="w·f_dpo(βρ/0.9) + (1-w)·f_exp(0.9βρ), w = σ(Var_batch[βρ/τ])",
    source=f"{PAPER}, App. E (Dynamic Blended Adaptive Quantile Loss); {REPO}",
    batch_dependent=True,
)
def dbaql(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """DBAQL, beta-consistent: the blend weight is the sigmoid of the batch variance of beta*rho/tau."""
    u = beta * margin(pc, pr, rc, rr)
    return _dbaql(u, u / TAU)


@register(
    "dbaql_original",
    family="discovered-original",
    formula="w·f_dpo(βρ/0.9) + (1-w)·f_exp(0.9βρ), w = σ(Var_batch[ρ])",
    source=f"{REPO} dynamic_blended_adaptive_quantile_loss_old (its unused moving-quantile line dropped)",
    batch_dependent=True,
)
def dbaql_original(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """DBAQL as discovered: the blend weight uses the variance of the raw margins."""
    rho = margin(pc, pr, rc, rr)
    return _dbaql(beta * rho, rho)


# --- AQL -------------------------------------------------------------------------------------------------------
def _moving_quantile(statistic_input: torch.Tensor) -> torch.Tensor:
    """m = 0.5 + 0.01·(sigma(mean_batch x) - 0.5): a target quantile nudged by the batch's mean margin."""
    return 0.5 + 0.01 * (torch.sigmoid(statistic_input.mean()) - 0.5)


def _logistic_hinge_blend(u: torch.Tensor, logistic_weight: torch.Tensor) -> torch.Tensor:
    """q·f_dpo(u) + (1-q)·f_slic(u)."""
    return logistic_weight * softplus_neg(u) + (1.0 - logistic_weight) * hinge(u)


@register(
    "aql",
    family="discovered",
    formula="q·f_dpo(βρ) + (1-q)·f_slic(βρ), q = σ(τm - βρ), m = 0.5 + 0.01(σ(mean βρ/τ) - 0.5)",
    source=f"{PAPER}, App. E (Adaptive Quantile Loss)",
    batch_dependent=True,
)
def aql(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """AQL, beta-consistent (App. E): logistic for low margins, hinge for high, switching at the moving
    quantile."""
    u = beta * margin(pc, pr, rc, rr)
    return _logistic_hinge_blend(u, torch.sigmoid(TAU * _moving_quantile(u / TAU) - u))


@register(
    "aql_original",
    family="discovered-original",
    formula="q·f_dpo(βρ) + (1-q)·f_slic(βρ), q = σ(-β(ρ - m)), m = 0.5 + 0.01(σ(mean ρ) - 0.5)",
    source=f"{REPO} adaptive_quantile_loss_old",
    batch_dependent=True,
)
def aql_original(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """AQL as discovered; matches the beta-consistent form at beta = 0.05."""
    rho = margin(pc, pr, rc, rr)
    return _logistic_hinge_blend(beta * rho, torch.sigmoid(-beta * (rho - _moving_quantile(rho))))


@register(
    "aql_repo",
    family="discovered-repo",
    formula="q·f_dpo(βρ) + (1-q)·f_slic(βρ), q = σ(-(βρ/τ - m)), m = 0.5 + 0.01(σ(mean βρ/τ) - 0.5)",
    source=f"{REPO} adaptive_quantile_loss (TL;DR and IMDb runs: its gate is 1/τ = 20× sharper at β = 0.05)",
    batch_dependent=True,
)
def aql_repo(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """AQL as corrected in the authors' repository; differs from App. E at every beta."""
    s = beta * margin(pc, pr, rc, rr) / TAU
    return _logistic_hinge_blend(TAU * s, torch.sigmoid(-(s - _moving_quantile(s))))


# --- AQFL ------------------------------------------------------------------------------------------------------
def _aqfl(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """r·f_dpo(u) + (1-r)·f_slic(u), r = sigma(0.1·|s - m2|), m1 = std(s)·mean(sigma(-s)),
    m2 = m1 + 0.05·(sigma(mean s) - m1)."""
    m1 = batch_std(s) * torch.sigmoid(-s).mean()
    m2 = m1 + 0.05 * (torch.sigmoid(s.mean()) - m1)
    return _logistic_hinge_blend(u, torch.sigmoid(0.1 * (s - m2).abs()))


@register(
    "aqfl",
    family="discovered",
    formula="r·f_dpo(βρ) + (1-r)·f_slic(βρ), r = σ(0.1|βρ/τ - m2|), m2 from std/mean of βρ/τ",
    source=f"{PAPER}, App. E (Adaptive Quantile Feedback Loss); {REPO}",
    batch_dependent=True,
)
def aqfl(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """AQFL, beta-consistent: the logistic share grows with the distance from an adaptive batch quantile."""
    u = beta * margin(pc, pr, rc, rr)
    return _aqfl(u, u / TAU)


@register(
    "aqfl_original",
    family="discovered-original",
    formula="r·f_dpo(βρ) + (1-r)·f_slic(βρ), r = σ(0.1|ρ - m2|), m2 from std/mean of ρ",
    source=f"{REPO} adaptive_quantile_feedback_loss_old",
    batch_dependent=True,
)
def aqfl_original(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """AQFL as discovered: the batch statistics use the raw margins."""
    rho = margin(pc, pr, rc, rr)
    return _aqfl(beta * rho, rho)


# --- PFL -------------------------------------------------------------------------------------------------------
def _pfl(pc: torch.Tensor, pr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """½·f_dpo(x) where the policy already ranks y_w above y_l (policy log-probs only), else 2·f_slic(x)."""
    return torch.where(pc > pr, softplus_neg(x) / 2.0, hinge(x) * 2.0)


@register(
    "pfl",
    family="discovered",
    formula="½·f_dpo(βρ/τ) if log π(y_w) > log π(y_l) else 2·f_slic(βρ/τ)",
    source=f"{PAPER}, App. E (Policy Focused Loss)",
)
def pfl(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """PFL, beta-consistent (App. E): de-emphasise pairs the policy already gets right."""
    return _pfl(pc, pr, beta * margin(pc, pr, rc, rr) / TAU)


@register(
    "pfl_original",
    family="discovered-original",
    formula="½·f_dpo(ρ) if log π(y_w) > log π(y_l) else 2·f_slic(ρ)  (no β)",
    source=f"{REPO} policy_focused_loss_old",
)
def pfl_original(pc, pr, rc, rr, **_) -> torch.Tensor:
    """PFL as discovered: beta never enters (equal to pfl at beta = 0.05)."""
    return _pfl(pc, pr, margin(pc, pr, rc, rr))


@register(
    "pfl_repo",
    family="discovered-repo",
    formula="½·f_dpo(βρ) if log π(y_w) > log π(y_l) else 2·f_slic(βρ)",
    source=f"{REPO} policy_focused_loss (TL;DR and IMDb runs: no /τ, so it differs from App. E at β = 0.05)",
)
def pfl_repo(pc, pr, rc, rr, *, beta: float, **_) -> torch.Tensor:
    """PFL as corrected in the authors' repository."""
    return _pfl(pc, pr, beta * margin(pc, pr, rc, rr))
