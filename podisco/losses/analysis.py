"""The shape of a preference loss: f(rho) and df/drho on a grid, extrema, convexity, jumps, and a behavioural
fingerprint that recognises two losses as the same behaviour even when their code differs.

The 1-D view follows the paper's Fig. 9/10 and App. D.2: one pair whose log-ratio margin is rho. A loss that
looks at the chosen and rejected log-ratios separately (nca_pair, apo_*, sppo_hard, kto_pair, PFL's
correctness test) sees them split evenly, l_w = rho/2 and l_l = -rho/2, with the reference log-probs at 0 and
one completion token each. Batch-dependent losses are evaluated one pair per batch; the fingerprint adds a
fixed, seeded batch probe so that their batch behaviour is compared as well. Everything is float64.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import grad, vmap

from podisco.losses.registry import LossFn, check_params, get_spec, list_specs, resolve

LossLike = str | Mapping[str, float] | LossFn
DEFAULT_RHO_RANGE = (-20.0, 40.0)  # the paper's Fig. 9/10 axis
DUPLICATE_DISTANCE = 0.05  # fingerprints closer than this behave the same (DPO vs DiscoPOP: ~0.4)


@dataclass(frozen=True)
class Extremum:
    kind: str  # "min" | "max"
    rho: float
    value: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    convex: bool


@dataclass(frozen=True)
class Kink:
    rho: float
    convex: bool  # the slope jumps up (a convex corner, like the hinge's) or down (a concave one)


@dataclass(frozen=True)
class LossShape:
    """What ``analyze`` finds on a rho range at one beta."""

    label: str
    beta: float
    rho_range: tuple[float, float]
    grad_at_zero: float  # df/drho at rho = 0; > 0 means gradient descent pushes the margin down at init
    extrema: list[Extremum] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    jumps: list[float] = field(default_factory=list)  # rho where f is discontinuous (PADLL, PFL at 0)
    kinks: list[Kink] = field(default_factory=list)  # rho where df/drho jumps

    @property
    def convex(self) -> bool:
        return all(s.convex for s in self.segments) and not self.jumps and all(k.convex for k in self.kinks)


def _bind(loss: LossLike, params: Mapping[str, float] | None) -> tuple[str, Callable[..., torch.Tensor]]:
    """(label, fn with hyperparameters bound); a registered loss gets its defaults, overridden by ``params``."""
    params = dict(params or {})
    if isinstance(loss, str):
        spec = get_spec(loss)
        check_params(spec.name, params)
        return spec.name, functools.partial(spec.fn, **{**spec.params, **params})
    fn = resolve(loss)
    return getattr(fn, "__name__", "loss"), functools.partial(fn, **params)


def _pair_loss(fn: Callable[..., torch.Tensor], beta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """rho (a 0-d tensor) -> the loss of one pair with margin rho, split evenly between l_w and l_l."""
    ones = torch.ones(1, dtype=torch.float64)

    def f(rho: torch.Tensor) -> torch.Tensor:
        half = (rho / 2).reshape(1)
        zero = torch.zeros_like(half)
        return fn(half, -half, zero, zero, beta=beta, chosen_lengths=ones, rejected_lengths=ones).sum()

    return f


def curve(
    loss: LossLike, beta: float, rho: np.ndarray | torch.Tensor, params: Mapping[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """f(rho) and df/drho at each rho (float64 numpy arrays)."""
    _, fn = _bind(loss, params)
    f = _pair_loss(fn, beta)
    r = torch.as_tensor(np.asarray(rho, dtype=np.float64))
    with torch.no_grad():
        values = vmap(f)(r)
    return values.numpy(), vmap(grad(f))(r).detach().numpy()


def _refine_root(g: Callable[[torch.Tensor], torch.Tensor], lo: float, hi: float, iters: int = 80) -> float:
    """Bisection for a sign change of g on [lo, hi]."""
    g_lo = float(g(torch.tensor(lo, dtype=torch.float64)))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        g_mid = float(g(torch.tensor(mid, dtype=torch.float64)))
        if (g_mid > 0) == (g_lo > 0):
            lo, g_lo = mid, g_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _signs(x: np.ndarray, rel_tol: float) -> np.ndarray:
    tol = rel_tol * max(float(np.max(np.abs(x))), 1e-300)
    return np.where(x > tol, 1, np.where(x < -tol, -1, 0))


def analyze(
    loss: LossLike,
    beta: float,
    rho_range: tuple[float, float] = DEFAULT_RHO_RANGE,
    points: int = 6001,
    params: Mapping[str, float] | None = None,
) -> LossShape:
    """Local extrema (refined by bisection on df/drho), convex / non-convex segments (sign of the second
    derivative), discontinuities, and the gradient at rho = 0.

    For DiscoPOP at beta = 0.05 this finds the paper's local minimum near rho = -2.37 and local maximum near
    rho = 1.44 (App. D.2, Fig. 14).
    """
    label, fn = _bind(loss, params)
    f = _pair_loss(fn, beta)
    df, d2f = grad(f), grad(grad(f))
    rho = torch.linspace(rho_range[0], rho_range[1], points, dtype=torch.float64)
    with torch.no_grad():
        values = vmap(f)(rho).numpy()
    grads = vmap(df)(rho).detach().numpy()
    curvature = vmap(d2f)(rho).detach().numpy()
    r = rho.numpy()
    h = r[1] - r[0]
    for what, array in (("value", values), ("gradient", grads), ("curvature", curvature)):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(f"{label}: non-finite {what} at rho = {r[bad][0]:.4g} (beta = {beta:g})")

    # Jumps: the trapezoid rule predicts f[i+1] - f[i] from the derivative. A kink inside a cell can miss it by
    # at most h * (|f'_i| + |f'_i+1|) / 2; a discontinuity misses it by the jump, however small h is.
    predicted = 0.5 * h * (grads[1:] + grads[:-1])
    kink_bound = h * (np.abs(grads[1:]) + np.abs(grads[:-1]))
    scale = 1.0 + float(np.max(np.abs(values)))
    jump_idx = np.nonzero(np.abs(np.diff(values) - predicted) > kink_bound + 1e-4 * scale)[0]
    jumps = [float(0.5 * (r[i] + r[i + 1])) for i in jump_idx]

    # Kinks: df/drho jumps by more than its smooth change h * f'' predicts (hinge corners, |x| in a gate).
    predicted_dg = 0.5 * h * (curvature[1:] + curvature[:-1])
    kink_idx = np.nonzero(np.abs(np.diff(grads) - predicted_dg) > 1e-3 * (float(np.max(np.abs(grads))) + 1e-12))[0]
    kinks = [Kink(float(0.5 * (r[i] + r[i + 1])), bool(grads[i + 1] > grads[i])) for i in kink_idx if i not in jump_idx]

    # Extrema: sign changes of df/drho (flat zero runs in between, e.g. a hinge's plateau, are skipped).
    extrema: list[Extremum] = []
    signs = _signs(grads, 1e-9)
    nonzero = np.nonzero(signs)[0]
    for a, b in itertools.pairwise(nonzero):
        if signs[a] == signs[b] or any(r[a] < j < r[b] for j in jumps):
            continue
        root = _refine_root(df, float(r[a]), float(r[b])) if b == a + 1 else float(0.5 * (r[a + 1] + r[b - 1]))
        kind = "min" if signs[a] < 0 else "max"
        extrema.append(Extremum(kind, root, float(f(torch.tensor(root, dtype=torch.float64)))))

    # Convexity: runs of f'' >= 0 (convex) and f'' < 0 (non-convex), on a tolerance relative to max |f''|.
    convex = _signs(curvature, 1e-7) >= 0
    segments: list[Segment] = []
    start = 0
    for i in range(1, points + 1):
        if i == points or convex[i] != convex[start]:
            segments.append(Segment(float(r[start]), float(r[i - 1]), bool(convex[start])))
            start = i

    grad_at_zero = float(df(torch.tensor(0.0, dtype=torch.float64)))
    return LossShape(label, beta, (float(r[0]), float(r[-1])), grad_at_zero, extrema, segments, jumps, kinks)


# --- Behavioural fingerprint ----------------------------------------------------------------------------------
# beta*rho grid, dense near 0 where the discovered losses differ (DiscoPOP's bumps sit at |beta*rho| < 0.12).
_FINGERPRINT_U = 0.5 * np.sinh(np.linspace(-3.0, 3.0, 121))
_PROBE_PAIRS = 16


def _probe_batch(beta: float) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """A fixed batch of pairs with realistic summed log-probs and margins beta*rho of order 1."""
    g = torch.Generator().manual_seed(20240612)
    n = _PROBE_PAIRS
    rc = -torch.empty(n, dtype=torch.float64).uniform_(10.0, 60.0, generator=g)
    rr = -torch.empty(n, dtype=torch.float64).uniform_(10.0, 60.0, generator=g)
    pc = rc + torch.randn(n, dtype=torch.float64, generator=g) * (1.0 / beta)
    pr = rr + torch.randn(n, dtype=torch.float64, generator=g) * (1.0 / beta)
    lc = torch.randint(5, 40, (n,), generator=g).to(torch.float64)
    lr = torch.randint(5, 40, (n,), generator=g).to(torch.float64)
    return (pc, pr, rc, rr), lc, lr


def _standardise(x: np.ndarray, center: bool) -> np.ndarray:
    """Zero-mean (for values: a constant offset does not change training) and unit RMS (AdamW is invariant to
    the loss scale), so only the shape is compared."""
    x = x - x.mean() if center else x
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 1e-12 else np.zeros_like(x)


def fingerprint(loss: LossLike, beta: float = 0.05, params: Mapping[str, float] | None = None) -> np.ndarray:
    """Four standardised blocks: f and df/drho on a fixed beta*rho grid, and on a fixed probe batch the
    per-pair losses and the gradient of their mean with respect to the two policy log-probs."""
    values, grads = curve(loss, beta, _FINGERPRINT_U / beta, params)
    _, fn = _bind(loss, params)
    (pc, pr, rc, rr), lc, lr = _probe_batch(beta)
    pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    per_pair = fn(pc, pr, rc, rr, beta=beta, chosen_lengths=lc, rejected_lengths=lr)
    per_pair.mean().backward()
    # A loss that ignores an input (sft ignores the rejected completion) leaves its .grad as None.
    policy_grads = torch.cat([torch.zeros_like(t) if t.grad is None else t.grad for t in (pc, pr)]).numpy()
    blocks = [
        _standardise(values, center=True),
        _standardise(grads, center=False),
        _standardise(per_pair.detach().numpy(), center=True),
        _standardise(policy_grads, center=False),
    ]
    return np.concatenate(blocks)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two fingerprints: 0 for the same behaviour, about 1.4 for unrelated shapes, at most 2."""
    if a.shape != b.shape:
        raise ValueError(f"fingerprints of different shapes {a.shape} and {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


@functools.lru_cache(maxsize=512)
def _known_fingerprint(name: str, beta: float) -> np.ndarray:
    return fingerprint(name, beta)


def nearest_known(
    loss: LossLike, beta: float = 0.05, k: int = 3, params: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """The k registered losses whose behaviour is closest to ``loss`` at this beta, with their distances.

    A registered name is not compared with itself.
    """
    own = get_spec(loss).name if isinstance(loss, str) else None
    target = fingerprint(loss, beta, params)
    scored = [
        (spec.name, fingerprint_distance(target, _known_fingerprint(spec.name, beta)))
        for spec in list_specs()
        if spec.name != own
    ]
    return sorted(scored, key=lambda item: item[1])[:k]


def compare(a: LossLike, b: LossLike, beta: float = 0.05) -> float:
    """Fingerprint distance between two losses at one beta."""
    return fingerprint_distance(fingerprint(a, beta), fingerprint(b, beta))
