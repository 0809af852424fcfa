"""Every registered loss against a value worked out by hand from its closed form.

Each case gives float64 inputs chosen so that the formula is easy to evaluate (rho = 0, where sigma = 1/2, or
u = ln 3, where sigma(u) = 3/4, sigma(-u) = 1/4), the worked maths in a comment, and the expected numbers computed
with Python's ``math`` module from the closed form, never by calling podisco.

Notation: rho = (pc - pr) - (rc - rr), l_w = pc - rc, l_l = pr - rr, u = beta*rho, tau = 0.05 (App. E),
sp(x) = -log sigma(x) = log(1 + e^-x), so sp(0) = ln 2 = 0.693147, sp(1) = 0.313262, sp(-x) = sp(x) + x.
Batch variances / standard deviations are unbiased (correction = 1) for batches of more than one pair.

Sources checked: the ``formula`` fields and docstrings of ``podisco.losses``, TRL 1.16
``DPOTrainer._compute_loss``, and ``SakanaAI/DiscoPOP src/alignment/gpo.py`` (the ``*_old`` functions are the
discovered code, the others the repository's beta-consistent corrections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from podisco.losses import get_spec, list_specs

TAU = 0.05
LN2 = math.log(2.0)
LN3 = math.log(3.0)


def sig(x: float) -> float:
    """sigma(x) = 1 / (1 + e^-x)."""
    return 1.0 / (1.0 + math.exp(-x))


def sp(x: float) -> float:
    """-log sigma(x) = log(1 + e^-x) (inputs here are moderate, so the naive form is exact enough)."""
    return math.log1p(math.exp(-x))


def hinge(x: float) -> float:
    """max(0, 1 - x)."""
    return max(0.0, 1.0 - x)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def var(xs: list[float]) -> float:
    """Unbiased variance (0 for a single element, as podisco's batch_var)."""
    if len(xs) == 1:
        return 0.0
    m = mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


@dataclass
class Case:
    loss: str
    pc: list[float]
    pr: list[float]
    rc: list[float]
    rr: list[float]
    beta: float
    expected: list[float]
    why: str
    params: dict[str, float] = field(default_factory=dict)
    chosen_lengths: list[float] | None = None
    rejected_lengths: list[float] | None = None

    @property
    def id(self) -> str:
        return f"{self.loss}:{self.why.split(';')[0]}"


CASES: list[Case] = []


def case(loss, pc, pr, rc, rr, *, beta, expected, why, **kw) -> None:
    CASES.append(Case(loss, list(pc), list(pr), list(rc), list(rr), beta, list(expected), why, **kw))


# ---------------------------------------------------------------------------------------------------------------
# TRL 1.16 loss types
# ---------------------------------------------------------------------------------------------------------------

# sigmoid (DPO): -log sigma(u).
#   rho = 0 -> sp(0) = ln 2 = 0.693147.
#   pc=-1, pr=-3, rc=rr=-2 -> rho = 2; beta = 0.5 -> u = 1 -> log(1 + e^-1) = 0.313262.
case("sigmoid", [-5, -1], [-5, -3], [-7, -2], [-7, -2], beta=0.5, expected=[LN2, sp(1)], why="rho=0 and u=1")
# cDPO, eps = 0.1: (1-eps) sp(u) + eps sp(-u) = sp(u) + eps*u -> sp(1) + 0.1 = 0.413262.
case("sigmoid", [-1], [-3], [-2], [-2], beta=0.5, params={"label_smoothing": 0.1}, expected=[sp(1) + 0.1], why="cDPO")

# hinge: relu(1 - u), beta = 0.5: rho = 2, 0, -2, 1 -> u = 1, 0, -1, 0.5 -> 0, 1, 2, 0.5.
case("hinge", [2, 0, -2, 1], [0, 0, 0, 0], [0] * 4, [0] * 4, beta=0.5, expected=[0, 1, 2, 0.5], why="u=1,0,-1,.5")

# ipo: (rho_bar - 1/(2 beta))^2, rho_bar = l_w/|y_w| - l_l/|y_l|.
#   l_w = -10 - (-12) = 2, |y_w| = 4 -> 0.5; l_l = -9 - (-8) = -1, |y_l| = 2 -> -0.5; rho_bar = 1.
#   beta = 0.5 -> 1/(2 beta) = 1 -> 0;  beta = 0.25 -> 1/(2 beta) = 2 -> (1 - 2)^2 = 1.
#   token counts of 0 are clamped to 1: l_w = 3 / 1, l_l = 0 -> rho_bar = 3; beta = 0.5 -> (3 - 1)^2 = 4.
case(
    "ipo",
    [-10, 0],
    [-9, -1],
    [-12, -3],
    [-8, -1],
    beta=0.5,
    expected=[0, 4],
    why="beta=0.5; rho_bar=1,3",
    chosen_lengths=[4, 0],
    rejected_lengths=[2, 0],
)
case(
    "ipo", [-10], [-9], [-12], [-8], beta=0.25, expected=[1], why="beta=0.25", chosen_lengths=[4], rejected_lengths=[2]
)

# exo_pair: sigma(u)[log sigma(u) - log(1-eps)] + sigma(-u)[log sigma(-u) - log eps], eps = 1e-3 by default.
#   u = 0: KL([1/2, 1/2] || [1-eps, eps]) = -ln 2 - (1/2) ln(1-eps) - (1/2) ln eps = 2.761231.
#   beta = 1, rho = ln 3: sigma = 3/4 -> (3/4)(ln(3/4) - ln(1-eps)) + (1/4)(ln(1/4) - ln eps) = 1.165354.
_EPS = 1e-3
case(
    "exo_pair",
    [0, LN3],
    [0, 0],
    [0, 0],
    [0, 0],
    beta=1.0,
    expected=[
        -LN2 - 0.5 * math.log(1 - _EPS) - 0.5 * math.log(_EPS),
        0.75 * (math.log(0.75) - math.log(1 - _EPS)) + 0.25 * (math.log(0.25) - math.log(_EPS)),
    ],
    why="u=0 and u=ln3",
)
# eps = 0.25 at u = ln 3: the target is [3/4, 1/4] itself, so the KL divergence is exactly 0.
case("exo_pair", [LN3], [0], [0], [0], beta=1.0, params={"label_smoothing": 0.25}, expected=[0.0], why="KL=0")

# nca_pair: -log sigma(r_w) - (1/2) log sigma(-r_w) - (1/2) log sigma(-r_l), r = beta*l.
#   all zero: ln 2 + ln2/2 + ln2/2 = 2 ln 2 = 1.386294.
#   beta = 1, l_w = ln 3, l_l = -ln 3: -ln(3/4) - (1/2) ln(1/4) - (1/2) ln(3/4) = 0.287682 + 0.693147 + 0.143841
#   = 1.124670.
case(
    "nca_pair",
    [0, LN3 - 2],
    [0, -LN3 - 5],
    [0, -2],
    [0, -5],
    beta=1.0,
    expected=[2 * LN2, -math.log(0.75) - 0.5 * math.log(0.25) - 0.5 * math.log(0.75)],
    why="r=0 and r_w=ln3,r_l=-ln3",
)

# robust: [(1-eps) sp(u) - eps sp(-u)] / (1 - 2 eps) = sp(u) - eps*u/(1 - 2 eps).
#   eps = 0 -> DPO: rho = 2, beta = 0.5 -> sp(1) = 0.313262.
#   eps = 0.1, u = 1 -> sp(1) - 0.1/0.8 = 0.313262 - 0.125 = 0.188262.
case("robust", [-1], [-3], [-2], [-2], beta=0.5, expected=[sp(1)], why="eps=0")
case(
    "robust",
    [-1, -4],
    [-3, -4],
    [-2, -4],
    [-2, -4],
    beta=0.5,
    params={"label_smoothing": 0.1},
    expected=[(0.9 * sp(1) - 0.1 * sp(-1)) / 0.8, LN2],
    why="eps=0.1; u=1 and u=0",
)

# bco_pair: -log sigma(beta l_w) - log sigma(-beta l_l).
#   all zero -> 2 ln 2; beta = 1, l_w = ln 3, l_l = -ln 3 -> 2 ln(4/3) = 0.575364.
case(
    "bco_pair",
    [-1, LN3 - 1],
    [-2, -LN3 - 2],
    [-1, -1],
    [-2, -2],
    beta=1.0,
    expected=[2 * LN2, 2 * math.log(4 / 3)],
    why="l=0 and l_w=ln3,l_l=-ln3",
)

# sppo_hard: (l_w - 1/(2 beta))^2 + (l_l + 1/(2 beta))^2, beta = 0.5 -> 1/(2 beta) = 1.
#   l_w = 1, l_l = -1 -> 0;  l_w = l_l = 0 -> 1 + 1 = 2;  l_w = 3, l_l = 1 -> 4 + 4 = 8.
case("sppo_hard", [1, 0, 3], [-1, 0, 1], [0] * 3, [0] * 3, beta=0.5, expected=[0, 2, 8], why="l_w,l_l targets +-1")

# aot (batch): delta = sort(pc - pr) - sort(rc - rr), loss = sp(beta*delta) in sorted order.
#   pc - pr = [3, -1, 1] -> sorted [-1, 1, 3]; rc - rr = [1, -1, 0] -> sorted [-1, 0, 1]; delta = [0, 1, 2].
#   beta = 1 -> [ln 2, sp(1), sp(2)] = [0.693147, 0.313262, 0.126928].
#   (the per-pair margins rho = [2, 0, 1] would give a different DPO loss: sorting decouples the pairs.)
case("aot", [3, -1, 1], [0, 0, 0], [1, -1, 0], [0, 0, 0], beta=1.0, expected=[LN2, sp(1), sp(2)], why="delta=0,1,2")

# aot_unpaired (batch): delta = sort(l_w) - sort(l_l).
#   l_w = [3,0,1] - [1,0,2] = [2, 0, -1] -> sorted [-1, 0, 2]; l_l = [0,1,2] - [1,0,2] = [-1, 1, 0] -> [-1, 0, 1].
#   delta = [0, 0, 1]; beta = 1 -> [ln 2, ln 2, sp(1)].
case(
    "aot_unpaired",
    [3, 0, 1],
    [0, 1, 2],
    [1, 0, 2],
    [1, 0, 2],
    beta=1.0,
    expected=[LN2, LN2, sp(1)],
    why="delta=0,0,1",
)

# apo_zero: (1 - sigma(beta l_w)) + sigma(beta l_l).
#   zero -> 1/2 + 1/2 = 1;  beta = 1, l_w = ln 3, l_l = -ln 3 -> 1/4 + 1/4 = 1/2.
case("apo_zero", [0, LN3], [0, -LN3], [0, 0], [0, 0], beta=1.0, expected=[1.0, 0.5], why="l=0 and l=+-ln3")

# apo_down: sigma(beta l_w) + 1 - sigma(beta rho).
#   zero -> 1/2 + 1/2 = 1;  l_w = ln 3, l_l = -ln 3 -> rho = 2 ln 3, sigma(2 ln 3) = 9/10 -> 3/4 + 1/10 = 0.85.
case("apo_down", [0, LN3], [0, -LN3], [0, 0], [0, 0], beta=1.0, expected=[1.0, 0.85], why="l=0 and l=+-ln3")

# discopop (LRML, beta-consistent): (1 - sigma(u/tau)) sp(u) + sigma(u/tau) e^-u.
#   rho = 0: gate 1/2 -> (1/2) ln 2 + 1/2 = 0.846574.
#   beta = 0.05 = tau, rho = ln 3: u/tau = ln 3, gate 3/4, u = 0.05 ln 3
#   -> (1/4) sp(0.05 ln 3) + (3/4) 3^-0.05 = 0.166515 + 0.709913 = 0.876428.
case(
    "discopop",
    [-3, LN3 - 3],
    [-3, -3],
    [-1, -1],
    [-1, -1],
    beta=0.05,
    expected=[0.5 * LN2 + 0.5, 0.25 * sp(0.05 * LN3) + 0.75 * 3**-0.05],
    why="rho=0 and u/tau=ln3",
)
# tau = 0.1, beta = 0.1, rho = ln 3: u/tau = ln 3 again, u = 0.1 ln 3 -> (1/4) sp(0.1 ln 3) + (3/4) 3^-0.1.
case(
    "discopop",
    [LN3],
    [0],
    [0],
    [0],
    beta=0.1,
    params={"tau": 0.1},
    expected=[0.25 * sp(0.1 * LN3) + 0.75 * 3**-0.1],
    why="tau=0.1",
)

# sft (batch): per pair -pc * B / sum|y_w|, whose batch mean is TRL's token mean -sum(pc)/sum|y_w|.
#   pc = [-10, -20], |y_w| = [5, 15] -> sum 20, B = 2 -> [10*2/20, 20*2/20] = [1, 2], mean 1.5 = 30/20.
case(
    "sft",
    [-10, -20],
    [-1, -2],
    [-3, -4],
    [-5, -6],
    beta=0.1,
    expected=[1.0, 2.0],
    why="token mean 30/20",
    chosen_lengths=[5, 15],
    rejected_lengths=[1, 1],
)

# sigmoid_norm: sp(beta (l_w/|y_w| - l_l/|y_l|)).
#   l_w = 2, |y_w| = 4 -> 0.5; l_l = -1, |y_l| = 2 -> -0.5; difference 1; beta = 1 -> sp(1) = 0.313262.
#   l_w = 6, |y_w| = 3 -> 2; l_l = 4, |y_l| = 2 -> 2; difference 0 -> ln 2 (DPO would see rho = 2).
case(
    "sigmoid_norm",
    [-10, -1],
    [-9, -1],
    [-12, -7],
    [-8, -5],
    beta=1.0,
    expected=[sp(1), LN2],
    why="per-token diff 1 and 0",
    chosen_lengths=[4, 3],
    rejected_lengths=[2, 2],
)

# ---------------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------------

# kto_pair (batch): (1/2)[(1 - sigma(beta(l_w - KL_l))) + (1 - sigma(beta(KL_w - l_l)))], KL = clamp(mean l, 0).
#   l_w = [1, 3] -> KL_w = 2;  l_l = [-2, 0] -> mean -1 -> KL_l = 0;  beta = 1.
#   pair 1: (1/2)[(1 - sigma(1)) + (1 - sigma(2 + 2))] = (1/2)[sigma(-1) + sigma(-4)] = 0.143464
#   pair 2: (1/2)[(1 - sigma(3)) + (1 - sigma(2 - 0))] = (1/2)[sigma(-3) + sigma(-2)] = 0.083314
case(
    "kto_pair",
    [0, 2],
    [-3, -1],
    [-1, -1],
    [-1, -1],
    beta=1.0,
    expected=[0.5 * (sig(-1) + sig(-4)), 0.5 * (sig(-3) + sig(-2))],
    why="KL_w=2,KL_l=0",
)
# single pair at l_w = l_l = 0: KL = 0 -> (1/2)(1/2 + 1/2) = 1/2.
case("kto_pair", [-4], [-5], [-4], [-5], beta=0.1, expected=[0.5], why="l=0")

# simpo (reference-free): sp(beta (pc/|y_w| - pr/|y_l|) - gamma), defaults gamma = 0.5.
#   pc = -10, |y_w| = 5 -> -2; pr = -12, |y_l| = 4 -> -3; difference 1; beta = 2 -> 2 - 0.5 = 1.5 -> sp(1.5).
#   The reference log-probs (here +-100) must not matter.
case(
    "simpo",
    [-10],
    [-12],
    [100],
    [-100],
    beta=2.0,
    expected=[sp(1.5)],
    why="gamma=0.5",
    params={"gamma": 0.5, "label_smoothing": 0.0},
    chosen_lengths=[5],
    rejected_lengths=[4],
)
#   gamma = 2 -> u = 0 -> ln 2;  with label smoothing 0.1 still ln 2 (sp(0) = sp(-0)).
case(
    "simpo",
    [-10],
    [-12],
    [0],
    [0],
    beta=2.0,
    expected=[LN2],
    why="gamma=2",
    params={"gamma": 2.0, "label_smoothing": 0.1},
    chosen_lengths=[5],
    rejected_lengths=[4],
)

# ---------------------------------------------------------------------------------------------------------------
# Discovered losses (paper Table 1 / App. E, and gpo.py)
# ---------------------------------------------------------------------------------------------------------------

# lrml_original (gpo.py log_ratio_modulated_loss_old): (1 - sigma(rho)) sp(beta rho) + sigma(rho) e^(-beta rho).
#   rho = 0 -> (1/2) ln 2 + 1/2 = 0.846574.
#   beta = 0.1, rho = ln 3: gate sigma(ln 3) = 3/4 (beta is not in the gate), u = 0.1 ln 3
#   -> (1/4) sp(0.1 ln 3) + (3/4) 3^-0.1 = 0.159931 + 0.671969 = 0.831900.
case(
    "lrml_original",
    [0, LN3],
    [0, 0],
    [0, 0],
    [0, 0],
    beta=0.1,
    expected=[0.5 * LN2 + 0.5, 0.25 * sp(0.1 * LN3) + 0.75 * 3**-0.1],
    why="rho=0 and rho=ln3",
)

# padll / padll_original: 0.9 (1 - 0.5 [rho < 0]) sp(beta rho), beta = 0.5.
#   rho = -2 -> 0.45 sp(-1) = 0.45 * 1.313262 = 0.590968;  rho = 2 -> 0.9 sp(1) = 0.281936;
#   rho = 0 (not < 0) -> 0.9 ln 2 = 0.623832.
for _name in ("padll", "padll_original"):
    case(
        _name,
        [-2, 2, 0],
        [0, 0, 0],
        [0, 0, 0],
        [0, 0, 0],
        beta=0.5,
        expected=[0.45 * sp(-1), 0.9 * sp(1), 0.9 * LN2],
        why="rho=-2,2,0",
    )

# cell / cell_original: (1/2) sp(u) + (1/2) e^-u.
#   rho = 0 -> (1/2) ln 2 + 1/2 = 0.846574;  beta = 0.5, rho = 2 -> u = 1 -> (1/2) sp(1) + (1/2) e^-1 = 0.340571.
for _name in ("cell", "cell_original"):
    case(
        _name,
        [0, 2],
        [0, 0],
        [0, 0],
        [0, 0],
        beta=0.5,
        expected=[0.5 * LN2 + 0.5, 0.5 * sp(1) + 0.5 * math.exp(-1)],
        why="u=0 and u=1",
    )


# dbaql (batch): w sp(u/0.9) + (1 - w) e^(-0.9 u), w = sigma(Var[u/tau]).
#   rho = [0, 1, 2], beta = 0.1: u = [0, 0.1, 0.2], u/tau = [0, 2, 4] -> mean 2, Var = (4 + 0 + 4)/2 = 4
#   -> w = sigma(4).
# dbaql_original: the same blend with w = sigma(Var[rho]) = sigma((1 + 0 + 1)/2) = sigma(1) = 0.731059.
def _dbaql(us: list[float], w: float) -> list[float]:
    return [w * sp(u / 0.9) + (1 - w) * math.exp(-0.9 * u) for u in us]


case("dbaql", [0, 1, 2], [0] * 3, [0] * 3, [0] * 3, beta=0.1, expected=_dbaql([0, 0.1, 0.2], sig(4)), why="Var=4")
case(
    "dbaql_original",
    [0, 1, 2],
    [0] * 3,
    [0] * 3,
    [0] * 3,
    beta=0.1,
    expected=_dbaql([0, 0.1, 0.2], sig(1)),
    why="Var=1",
)
#   a batch of one has variance 0 -> w = 1/2; rho = 0 -> (1/2) ln 2 + 1/2 = 0.846574.
for _name in ("dbaql", "dbaql_original"):
    case(_name, [-3], [-4], [-3], [-4], beta=0.1, expected=[0.5 * LN2 + 0.5], why="B=1 -> Var=0")


# aql (batch, App. E): q sp(u) + (1 - q) relu(1 - u), q = sigma(tau m - u), m = 0.5 + 0.01 (sigma(mean u/tau) - 0.5).
#   rho = [-10, 0, 10], beta = 0.1: u = [-1, 0, 1], mean u/tau = 0 -> m = 0.5, tau m = 0.025
#   -> q = sigma(0.025 - u) = [sigma(1.025), sigma(0.025), sigma(-0.975)].
# aql_original (gpo.py adaptive_quantile_loss_old): q = sigma(-beta (rho - m)), m from mean rho = 0 -> m = 0.5
#   -> q = sigma(beta m - u) = sigma(0.05 - u).
# aql_repo (gpo.py adaptive_quantile_loss): s = u/tau = [-20, 0, 20], q = sigma(-(s - m)) = sigma(0.5 - s).
def _aql(us: list[float], qs: list[float]) -> list[float]:
    return [q * sp(u) + (1 - q) * hinge(u) for u, q in zip(us, qs, strict=True)]


_U = [-1.0, 0.0, 1.0]
_AQL_IN = ([-10, 0, 10], [0] * 3, [0] * 3, [0] * 3)
case("aql", *_AQL_IN, beta=0.1, expected=_aql(_U, [sig(0.025 - u) for u in _U]), why="m=0.5; beta=0.1")
case("aql_original", *_AQL_IN, beta=0.1, expected=_aql(_U, [sig(0.05 - u) for u in _U]), why="m=0.5; beta=0.1")
case("aql_repo", *_AQL_IN, beta=0.1, expected=_aql(_U, [sig(0.5 - u / TAU) for u in _U]), why="m=0.5; beta=0.1")
#   A batch whose mean is not 0: beta = 0.05 (s = rho), rho = [0, 2 ln 3] -> mean s = ln 3, sigma = 3/4
#   -> m = 0.5 + 0.01 * 0.25 = 0.5025; u = [0, 0.1 ln 3].
#   aql: q = sigma(0.05 * 0.5025 - u);  aql_original: q = sigma(-0.05 (rho - 0.5025)) = the same at beta = tau;
#   aql_repo: q = sigma(0.5025 - s) = sigma(0.5025 - rho).
_U2, _R2 = [0.0, 0.1 * LN3], [0.0, 2 * LN3]
_AQL_IN2 = ([0, 2 * LN3], [0, 0], [0, 0], [0, 0])
for _name in ("aql", "aql_original"):
    case(_name, *_AQL_IN2, beta=0.05, expected=_aql(_U2, [sig(0.05 * 0.5025 - u) for u in _U2]), why="m=0.5025")
case("aql_repo", *_AQL_IN2, beta=0.05, expected=_aql(_U2, [sig(0.5025 - r) for r in _R2]), why="m=0.5025")


# aqfl (batch): r sp(u) + (1 - r) relu(1 - u), r = sigma(0.1 |s - m2|), with s = u/tau,
#   m1 = std(s) * mean(sigma(-s)), m2 = m1 + 0.05 (sigma(mean s) - m1).
# aqfl_original: the same with s = rho (raw margins) for the statistics, u = beta rho in the blend.
#   s = [-ln 3, ln 3]: mean 0, std = sqrt(2 (ln 3)^2 / 1) = sqrt(2) ln 3, mean(sigma(-s)) = (3/4 + 1/4)/2 = 1/2
#   -> m1 = ln 3 / sqrt(2) = 0.776836, m2 = m1 + 0.05 (1/2 - m1) = 0.95 m1 + 0.025 = 0.762994.
#   aqfl at beta = 0.1: rho = [-ln3/2, ln3/2] gives s = 2 rho = [-ln 3, ln 3], u = tau s = [-0.05 ln 3, 0.05 ln 3].
#   aqfl_original at beta = 0.1: rho = [-ln 3, ln 3] = s, u = [-0.1 ln 3, 0.1 ln 3].
def _aqfl(ss: list[float], us: list[float]) -> list[float]:
    m1 = math.sqrt(var(ss)) * mean([sig(-s) for s in ss])
    m2 = m1 + 0.05 * (sig(mean(ss)) - m1)
    rs = [sig(0.1 * abs(s - m2)) for s in ss]
    return [r * sp(u) + (1 - r) * hinge(u) for r, u in zip(rs, us, strict=True)]


_M2 = 0.95 * LN3 / math.sqrt(2) + 0.025
_RS = [sig(0.1 * abs(-LN3 - _M2)), sig(0.1 * abs(LN3 - _M2))]
assert _aqfl([-LN3, LN3], [0.0, 0.0]) == pytest.approx([r * LN2 + (1 - r) for r in _RS], rel=1e-15)  # same maths
case(
    "aqfl",
    [-LN3 / 2, LN3 / 2],
    [0, 0],
    [0, 0],
    [0, 0],
    beta=0.1,
    expected=[r * sp(u) + (1 - r) * hinge(u) for r, u in zip(_RS, [-0.05 * LN3, 0.05 * LN3], strict=True)],
    why="s=+-ln3; beta=0.1",
)
case(
    "aqfl_original",
    [-LN3, LN3],
    [0, 0],
    [0, 0],
    [0, 0],
    beta=0.1,
    expected=_aqfl([-LN3, LN3], [-0.1 * LN3, 0.1 * LN3]),
    why="s=+-ln3; beta=0.1",
)
#   At initialisation every margin is 0: std = 0 -> m1 = 0, m2 = 0.05 * sigma(0) = 0.025, r = sigma(0.0025)
#   -> r ln 2 + (1 - r) * 1 for each of the 4 pairs.
for _name in ("aqfl", "aqfl_original"):
    _r0 = sig(0.1 * 0.025)
    case(_name, [-7] * 4, [-9] * 4, [-7] * 4, [-9] * 4, beta=0.05, expected=[_r0 * LN2 + 1 - _r0] * 4, why="init")


# pfl (App. E): (1/2) sp(x) if pc > pr else 2 relu(1 - x), x = beta rho / tau.
# pfl_original (gpo.py policy_focused_loss_old): the same with x = rho (no beta).
# pfl_repo (gpo.py policy_focused_loss): x = beta rho (no 1/tau).
#   A: pc = -1 > pr = -2, rc = -1.5, rr = -2 -> rho = 1 - 0.5 = 0.5.
#   B: pc = -3 < pr = -2, rc = -3.25, rr = -2 -> rho = -1 + 1.25 = 0.25.
#   C: pc = pr = -2 (a tie is not "correct"), rho = 0 -> 2 relu(1 - 0) = 2 for every variant.
#   beta = 0.1: pfl x = 2 rho = [1, 0.5, 0] -> [sp(1)/2, 2 * 0.5, 2] = [0.156631, 1, 2];
#   pfl_original x = rho -> [sp(0.5)/2, 2 * 0.75, 2] = [0.237039, 1.5, 2];
#   pfl_repo x = 0.1 rho -> [sp(0.05)/2, 2 * 0.975, 2] = [0.334230, 1.95, 2].
_PFL_IN = ([-1, -3, -2], [-2, -2, -2], [-1.5, -3.25, -2], [-2, -2, -2])
case("pfl", *_PFL_IN, beta=0.1, expected=[sp(1) / 2, 1.0, 2.0], why="x=1,.5,0")
case("pfl_original", *_PFL_IN, beta=0.1, expected=[sp(0.5) / 2, 1.5, 2.0], why="x=.5,.25,0")
case("pfl_repo", *_PFL_IN, beta=0.1, expected=[sp(0.05) / 2, 1.95, 2.0], why="x=.05,.025,0")


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------
def _t(xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def _run(c: Case) -> torch.Tensor:
    spec = get_spec(c.loss)
    params = {**spec.params, **c.params}
    kw = {}
    if c.chosen_lengths is not None:
        kw = {"chosen_lengths": _t(c.chosen_lengths), "rejected_lengths": _t(c.rejected_lengths)}
    return spec.fn(_t(c.pc), _t(c.pr), _t(c.rc), _t(c.rr), beta=c.beta, **kw, **params)


def test_every_registered_loss_has_a_closed_form_case():
    covered = {get_spec(c.loss).name for c in CASES}
    missing = sorted(s.name for s in list_specs() if s.name not in covered)
    assert not missing, f"registered losses without a hand-worked closed-form case: {missing}"
    for c in CASES:  # the cases name canonical losses, not aliases
        assert get_spec(c.loss).name == c.loss


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_closed_form(c: Case):
    spec = get_spec(c.loss)
    if spec.needs_lengths:
        assert c.chosen_lengths is not None, f"{c.loss} needs lengths"
    out = _run(c)
    assert out.dtype == torch.float64 and out.shape == (len(c.pc),)
    torch.testing.assert_close(out, _t(c.expected), rtol=1e-12, atol=1e-14)


def test_discopop_slope_at_zero_is_positive_unlike_dpo():
    """d/drho of DiscoPOP at rho = 0, beta = 0.05, tau = 0.05. With f(u) = (1 - g) sp(u) + g e^-u, g = sigma(u/tau):
    f'(u) = -(g'/tau) sp(u) + (1 - g) sp'(u) + (g'/tau) e^-u - g e^-u, and at u = 0: g = 1/2, g' = 1/4,
    sp = ln 2, sp' = -sigma(0) = -1/2, e^0 = 1, so f'(0) = (1/(4 tau))(1 - ln 2) - 1/4 - 1/2 = 5 * 0.306853 - 0.75
    = 0.784264, and d/drho = beta f'(0) = 0.0392132 > 0: the loss is non-convex and pushes away from 0.
    DPO: d/drho sp(beta rho) = -beta sigma(-beta rho) = -beta/2 = -0.025."""
    beta = 0.05
    expected_disco = beta * ((1 / (4 * TAU)) * (1 - LN2) - 0.25 - 0.5)
    assert expected_disco == pytest.approx(0.0392132, abs=1e-7)
    for name, expected in (("discopop", expected_disco), ("sigmoid", -beta / 2), ("lrml_original", None)):
        pc = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        zeros = torch.zeros(1, dtype=torch.float64)
        spec = get_spec(name)
        spec.fn(pc, zeros, zeros, zeros, beta=beta, **spec.params).sum().backward()
        # drho/dpc = 1; lrml_original equals discopop at beta = tau = 0.05.
        assert pc.grad.item() == pytest.approx(expected_disco if expected is None else expected, rel=1e-12)
    assert expected_disco > 0 > -beta / 2


def test_padll_weight_halves_on_the_wrong_side_of_zero():
    """PADLL = w(rho) sp(beta rho) with w = 0.45 for rho < 0 and 0.9 for rho >= 0."""
    rho = _t([-1e-3, 1e-3, -5.0, 5.0, 0.0])
    z = torch.zeros_like(rho)
    beta = 0.1
    for name in ("padll", "padll_original"):
        out = get_spec(name).fn(rho, z, z, z, beta=beta)
        dpo = get_spec("sigmoid").fn(rho, z, z, z, beta=beta)
        torch.testing.assert_close(out / dpo, _t([0.45, 0.9, 0.45, 0.9, 0.9]), rtol=1e-14, atol=0)


def _random_inputs(b: int = 8, seed: int = 0, scale: float = 2.0) -> list[torch.Tensor]:
    """Summed log-probs around -5 with margins rho of order 1 (so that sigma(Var) and the gates are not saturated)."""
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(b, generator=g, dtype=torch.float64) * scale + 5) for _ in range(4)]


ORIGINAL_PAIRS = [
    ("discopop", "lrml_original"),
    ("dbaql", "dbaql_original"),
    ("aql", "aql_original"),
    ("aqfl", "aqfl_original"),
    ("pfl", "pfl_original"),
    ("padll", "padll_original"),
    ("cell", "cell_original"),
]


@pytest.mark.parametrize(("consistent", "original"), ORIGINAL_PAIRS)
def test_original_and_beta_consistent_forms_agree_at_tau(consistent, original):
    """App. E: the beta-consistent form replaces the raw rho by beta*rho/tau, so both agree at beta = tau = 0.05."""
    for seed in range(3):
        x = _random_inputs(seed=seed)
        a = get_spec(consistent).fn(*x, beta=0.05, **get_spec(consistent).params)
        b = get_spec(original).fn(*x, beta=0.05, **get_spec(original).params)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("consistent", "original"), ORIGINAL_PAIRS[:5])
def test_original_and_beta_consistent_forms_differ_at_other_beta(consistent, original):
    x = _random_inputs(seed=1)
    a = get_spec(consistent).fn(*x, beta=0.1, **get_spec(consistent).params)
    b = get_spec(original).fn(*x, beta=0.1, **get_spec(original).params)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize(("repo", "paper"), [("aql_repo", "aql"), ("pfl_repo", "pfl")])
def test_repo_versions_differ_from_app_e_at_tau(repo, paper):
    """gpo.py's corrected AQL gate is 1/tau sharper, its PFL misses the 1/tau: both differ even at beta = 0.05."""
    x = _random_inputs(seed=2)
    a = get_spec(repo).fn(*x, beta=0.05)
    b = get_spec(paper).fn(*x, beta=0.05)
    assert (a - b).abs().max() > 1e-3
