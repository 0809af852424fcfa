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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import grad, vmap

from podisco.losses.registry import LossFn, check_params, get_spec, list_specs, resolve

LossLike = str | Mapping[str, float] | LossFn
DEFAULT_RHO_RANGE = (-20.0, 40.0)  # the paper's Fig. 9/10 axis
DUPLICATE_DISTANCE = 0.05  # fingerprints closer than this behave the same (DPO vs DiscoPOP: ~0.4)
# the same function written another way: rewrites print as 0.000 apart, where DPO at β×2.5 and at β×3 are 0.029
EXACT_DUPLICATE_DISTANCE = 1e-3
# classification_fingerprint's own threshold: rewrites only. Measured: rewrites of one loss 2e-7 apart (float32
# vs float64); label smoothing moves it about 0.8 per unit of smoothing (0.05 vs 0.1: 0.040, cross-entropy vs
# 0.1: 0.078), so smoothings 0.01 apart stay distinct; cross-entropy vs squared error 0.91
CLASSIFICATION_DUPLICATE_DISTANCE = EXACT_DUPLICATE_DISTANCE


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
    """rho (a 0-d tensor) -> the loss of one pair with margin rho, split evenly between l_w and l_l.

    The pair is evaluated in a batch of two identical pairs: a loss with batch statistics (the paper's DBAQL
    and AQFL take ``.var()`` / ``.std()`` of the batch) is then defined (variance 0, as ``numerics.batch_var``
    gives a batch of one), and every per-pair loss is unchanged."""
    ones = torch.ones(2, dtype=torch.float64)

    def f(rho: torch.Tensor) -> torch.Tensor:
        half = (rho / 2).reshape(1).expand(2)
        zero = torch.zeros_like(half)
        return fn(half, -half, zero, zero, beta=beta, chosen_lengths=ones, rejected_lengths=ones)[0]

    return f


def curve(
    loss: LossLike, beta: float, rho: np.ndarray | torch.Tensor, params: Mapping[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """f(rho) and df/drho at each rho (float64 numpy arrays)."""
    _, fn = _bind(loss, params)
    return _curve_of(fn, beta, rho)


def _curve_of(
    fn: Callable[..., torch.Tensor], beta: float, rho: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
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
    _, fn = _bind(loss, params)
    return _standardised(_raw_blocks(fn, beta, beta))


def _raw_blocks(fn: Callable[..., torch.Tensor], loss_beta: float, probe_beta: float) -> list[np.ndarray]:
    """The fingerprint's four blocks before standardising: the loss called with ``beta=loss_beta`` on the
    beta*rho grid and probe batch of ``probe_beta`` (``fingerprint`` uses one beta for both)."""
    values, grads = _curve_of(fn, loss_beta, _FINGERPRINT_U / probe_beta)
    (pc, pr, rc, rr), lc, lr = _probe_batch(probe_beta)
    pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    per_pair = fn(pc, pr, rc, rr, beta=loss_beta, chosen_lengths=lc, rejected_lengths=lr)
    per_pair.mean().backward()
    # A loss that ignores an input (sft ignores the rejected completion) leaves its .grad as None.
    policy_grads = torch.cat([torch.zeros_like(t) if t.grad is None else t.grad for t in (pc, pr)]).numpy()
    return [values, grads, per_pair.detach().numpy(), policy_grads]


def _standardised(blocks: list[np.ndarray]) -> np.ndarray:
    values, grads, per_pair, policy_grads = blocks
    return np.concatenate(
        [
            _standardise(values, center=True),
            _standardise(grads, center=False),
            _standardise(per_pair, center=True),
            _standardise(policy_grads, center=False),
        ]
    )


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two fingerprints: 0 for the same behaviour, about 1.4 for unrelated shapes, at most 2."""
    if a.shape != b.shape:
        raise ValueError(f"fingerprints of different shapes {a.shape} and {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def classification_fingerprint(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], classes: int = 10, batch: int = 64
) -> np.ndarray:
    """The behaviour of ``loss`` on a fixed probe, as the preference losses are fingerprinted
    (``fingerprint``): per-example losses, centred (a constant offset does not change training), and
    the gradient of their mean with respect to the logits, each scaled to unit RMS (AdamW is invariant to the
    loss scale). Two rewrites of one loss give the same vector; ``fingerprint_distance`` compares them, and
    below ``CLASSIFICATION_DUPLICATE_DISTANCE`` they are the same loss.

    The probe mixes confident-right, confident-wrong and uncertain examples (logit scales 0.3 to 5), since
    losses that agree near a uniform prediction often differ on confident ones."""
    g = torch.Generator().manual_seed(1234)
    scale = torch.linspace(0.3, 5.0, batch, dtype=torch.float64).unsqueeze(1)
    logits = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, classes, (batch,), generator=g)
    # every other example confidently right (target logit ahead by 2..10): where label smoothing and
    # cross-entropy part ways (measured: 0.045 apart without these rows, 0.078 with them)
    right = torch.arange(0, batch, 2)
    logits[right, targets[right]] += torch.linspace(2.0, 10.0, len(right), dtype=torch.float64)
    logits.requires_grad_(True)
    per_example = loss(logits, targets)
    per_example.mean().backward()
    grads = torch.zeros_like(logits) if logits.grad is None else logits.grad
    return np.concatenate(
        [_standardise(per_example.detach().double().numpy(), True), _standardise(grads.flatten().numpy(), False)]
    )


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


# --- Rescaling: a loss that is a known one at another beta ----------------------------------------------------
# s runs over a geometric grid from 1/8 to 8 (ratio 2^(1/8) ~ 1.09 between neighbours, 1 and 2 are on it); the
# best grid point is refined by a golden-section search in ln s between its two neighbours.
DEFAULT_SCALES: tuple[float, ...] = tuple(float(2.0**k) for k in np.linspace(-3.0, 3.0, 49))
_REFINE_TOL = 1e-4  # width in ln s at which the golden-section search stops
_REFINE_TOP = 3  # rescaled_match refines this many known losses (the closest on the grid) ...
_REFINE_MARGIN = 4.0  # ... and every other whose grid distance is under this many thresholds

KnownLoss = LossLike | np.ndarray  # a loss, or its stored fingerprint at the run's beta


@dataclass(frozen=True)
class RescaleMatch:
    """``loss`` at beta behaves like ``reference`` at ``beta * scale``, at this fingerprint distance.

    scale > 1: the loss is steeper in rho than the reference at the same beta (DPO written as -log sigma(2 beta
    rho) has scale 2 against DPO). ``output_scale`` is c in loss ~ c * reference (at beta and beta * scale),
    least squares on the raw gradients; it is None where the reference was a stored fingerprint, which keeps
    only the shape. The distance does not depend on it (see ``rescaled_distance``).
    """

    scale: float
    distance: float
    output_scale: float | None = None


def rescaling_label(name: str, scale: float) -> str:
    """'≈ sigmoid at β×2': ``name`` at the rescaled beta, the scale to 3 significant digits; within 2% of 1,
    '≈ sigmoid at the same β' (a look-alike of a registered loss, not a rescaling)."""
    if abs(scale - 1.0) <= 0.02:
        return f"≈ {name} at the same β"
    return f"≈ {name} at β×{scale:.3g}"


def _row(fn: Callable[..., torch.Tensor], loss_beta: float, probe_beta: float) -> np.ndarray:
    """fingerprint of fn called with loss_beta, on probe_beta's grid and batch; all NaN where fn fails or
    gives a non-finite number there (such a scale never matches)."""
    try:
        row = _standardised(_raw_blocks(fn, loss_beta, probe_beta))
    except Exception:  # a loss (often a candidate's code) that breaks at another beta has no fingerprint there
        row = np.full(len(_FINGERPRINT_U) * 2 + _PROBE_PAIRS * 3, np.nan)
    return row if np.all(np.isfinite(row)) else np.full_like(row, np.nan)


def _distances(rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    """fingerprint_distance of each row to target; inf for a NaN row or target."""
    if rows.shape[-1:] != target.shape:
        raise ValueError(f"fingerprints of different shapes {rows.shape[-1:]} and {target.shape}")
    d = np.sqrt(np.mean((rows - target) ** 2, axis=-1))
    return np.where(np.isfinite(d), d, np.inf)


def fingerprint_at_scales(
    loss: LossLike, beta: float, scales: Sequence[float] = DEFAULT_SCALES, params: Mapping[str, float] | None = None
) -> np.ndarray:
    """(len(scales), D): row i is the fingerprint of ``loss`` called with ``beta * scales[i]``, on the beta*rho
    grid and probe batch of ``beta`` (not of beta * scales[i]: only the loss's beta changes). The row at scale 1
    is ``fingerprint(loss, beta)``; a row where the loss fails or is not finite is NaN.

    Row i is ``rescaled_distance``'s reference side at s = scales[i]. To compare a candidate with stored
    fingerprints of known losses at ``beta``, take its rows at 1/s: candidate at beta/s ~ known at beta is the
    same statement as candidate at beta ~ known at beta * s (``rescaled_match`` does this for stored ones).
    """
    _, fn = _bind(loss, params)
    return np.stack([_row(fn, beta * float(s), beta) for s in scales])


def _golden_min(g: Callable[[float], float], lo: float, hi: float) -> tuple[float, float]:
    """(x, g(x)) near the minimum of g on [lo, hi], by golden-section search."""
    inv_phi = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    gc, gd = g(c), g(d)
    while hi - lo > _REFINE_TOL:
        if gc <= gd:
            hi, d, gd = d, c, gc
            c = hi - inv_phi * (hi - lo)
            gc = g(c)
        else:
            lo, c, gc = c, d, gd
            d = lo + inv_phi * (hi - lo)
            gd = g(d)
    return (c, gc) if gc <= gd else (d, gd)


def _refine(log_scales: np.ndarray, grid: np.ndarray, g: Callable[[float], float]) -> tuple[float, float]:
    """(ln s, distance): the best grid point, refined between its neighbours where that is better."""
    i = int(np.argmin(grid))
    best = (float(log_scales[i]), float(grid[i]))
    if not np.isfinite(best[1]) or len(log_scales) < 2:
        return best
    x, d = _golden_min(g, float(log_scales[max(i - 1, 0)]), float(log_scales[min(i + 1, len(log_scales) - 1)]))
    return (x, d) if d < best[1] else best


def _output_scale(
    loss_fn: Callable[..., torch.Tensor], ref_fn: Callable[..., torch.Tensor], beta: float, s: float
) -> float | None:
    """c minimising |grad loss(beta) - c * grad reference(beta * s)|^2 over the raw gradient blocks."""
    try:
        a, b = _raw_blocks(loss_fn, beta, beta), _raw_blocks(ref_fn, beta * s, beta)
    except Exception:
        return None
    ga, gb = np.concatenate([a[1], a[3]]), np.concatenate([b[1], b[3]])
    denominator = float(gb @ gb)
    c = float(ga @ gb) / denominator if denominator > 0 else float("nan")
    return c if np.isfinite(c) else None


class _Side:
    """How one known loss is compared with the candidate over scales; s always means candidate at beta ~
    known at beta * s."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor], known: KnownLoss, beta: float) -> None:
        self.loss_fn, self.beta = loss_fn, beta
        self.stored: np.ndarray | None = None
        self.known_fn: Callable[..., torch.Tensor] | None = None
        if isinstance(known, np.ndarray):
            self.stored = np.asarray(known, dtype=np.float64)
        else:
            _, self.known_fn = _bind(known, None)

    def distance(self, log_s: float, target: np.ndarray | None) -> float:
        s = float(np.exp(log_s))
        if self.stored is None:  # known called at beta * s; target is the candidate's fingerprint at beta
            return float(_distances(_row(self.known_fn, self.beta * s, self.beta), target)[()])
        return float(_distances(_row(self.loss_fn, self.beta / s, self.beta), self.stored)[()])

    def match(self, log_s: float, d: float) -> RescaleMatch:
        s = float(np.exp(log_s))
        c = None if self.known_fn is None else _output_scale(self.loss_fn, self.known_fn, self.beta, s)
        return RescaleMatch(scale=s, distance=d, output_scale=c)


def _grid_distances(
    loss_fn: Callable[..., torch.Tensor], beta: float, sides: Mapping[str, _Side], scales: np.ndarray
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The candidate's fingerprint at beta (None if only stored fingerprints are known) and, per known loss,
    the distance at each scale. The candidate's rows at beta / s are computed once for all stored ones."""
    target = _row(loss_fn, beta, beta) if any(side.stored is None for side in sides.values()) else None
    if target is not None and not np.all(np.isfinite(target)):
        raise ValueError(f"the loss has no finite fingerprint at beta = {beta:g}")
    inverse = None
    out: dict[str, np.ndarray] = {}
    for name, side in sides.items():
        if side.stored is None:
            rows = np.stack([_row(side.known_fn, beta * float(s), beta) for s in scales])
            out[name] = _distances(rows, target)
        else:
            if inverse is None:
                inverse = np.stack([_row(loss_fn, beta / float(s), beta) for s in scales])
            out[name] = _distances(inverse, side.stored)
    return target, out


def _scale_grid(scales: Sequence[float]) -> np.ndarray:
    grid = np.unique(np.asarray(scales, dtype=np.float64))
    if grid.size == 0 or grid[0] <= 0:
        raise ValueError("scales must be a non-empty sequence of positive numbers")
    return grid


def rescaled_distance(
    loss: LossLike, reference: KnownLoss, beta: float, scales: Sequence[float] = DEFAULT_SCALES
) -> RescaleMatch:
    """How close ``loss`` at ``beta`` comes to ``reference`` at ``beta * s``, minimised over s.

    The distance is ``fingerprint_distance(fingerprint(loss, beta), F(reference, beta * s))``, where F calls the
    reference with beta * s on the beta*rho grid and probe batch of ``beta`` (row s of
    ``fingerprint_at_scales(reference, beta)``), so both losses see the same margins. s is searched on
    ``scales`` (default 49 points, 1/8 to 8, geometric), then refined in ln s between the best point's
    neighbours; a scale the reference fails at never matches.

    A positive output scale needs no search: every fingerprint block is standardised to unit RMS (the value
    blocks also centred), so c * reference + constant, c > 0, has the reference's fingerprint exactly. (A
    negative c is not factored out: it turns descent into ascent.) ``output_scale`` reports c for information.

    ``reference`` may be a stored fingerprint of the reference at ``beta`` instead of a loss: then the loss is
    called with beta / s against it (loss at beta / s ~ reference at beta, the same statement with the same s).
    That is exactly ``rescaled_distance(reference, loss, beta)`` with s inverted, so the distance is not the
    same number as the callable route's: for losses of beta*rho alone both find the same exact rescalings
    (distance 0 at the same s), but away from a match they can differ a lot, since the side that is rescaled
    sees the grid's margins multiplied by s (CELL against DPO: 0.73 at best one way, 0.20 the other).
    """
    _, loss_fn = _bind(loss, None)
    grid = _scale_grid(scales)
    side = _Side(loss_fn, reference, beta)
    target, distances = _grid_distances(loss_fn, beta, {"reference": side}, grid)
    log_s, d = _refine(np.log(grid), distances["reference"], lambda x: side.distance(x, target))
    return side.match(log_s, d)


def rescaled_match(
    loss: LossLike,
    beta: float,
    known: Mapping[str, KnownLoss],
    threshold: float = DUPLICATE_DISTANCE,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> tuple[str, RescaleMatch] | None:
    """The known loss that ``loss`` at ``beta`` comes closest to at any rescaled beta, if closer than
    ``threshold``: (name, match) with match.scale = s for 'loss at beta ~ known at beta * s'.

    ``known`` maps names to losses (a registered name, a {name: weight} mapping, or a function under the
    contract) or to stored fingerprints at ``beta`` (``fingerprint(known, beta)``, as the archive keeps them);
    both can be mixed. Every known loss is scanned on the grid of scales; the closest few are refined.
    """
    _, loss_fn = _bind(loss, None)
    grid = _scale_grid(scales)
    sides = {name: _Side(loss_fn, k, beta) for name, k in known.items()}
    if not sides:
        return None
    target, distances = _grid_distances(loss_fn, beta, sides, grid)
    order = sorted(sides, key=lambda name: float(np.min(distances[name])))
    chosen = [n for i, n in enumerate(order) if i < _REFINE_TOP or np.min(distances[n]) < _REFINE_MARGIN * threshold]
    best: tuple[str, float, float] | None = None
    for name in chosen:
        side = sides[name]
        log_s, d = _refine(np.log(grid), distances[name], lambda x, side=side: side.distance(x, target))
        if best is None or d < best[2]:
            best = (name, log_s, d)
    if best is None or not best[2] < threshold:
        return None
    name, log_s, d = best
    return name, sides[name].match(log_s, d)
