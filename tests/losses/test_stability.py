"""Numerical stability of every registered loss, and the numerics that make it so.

The loss contract (podisco/losses/numerics.py): every loss stays finite, with finite gradients, for margins
|beta*rho| up to 1e4 in float32 and bfloat16 inputs, and computes in float32 or wider. The two primitives that
break there are exp (overflow) and batch statistics (a std written as sqrt(Var) has an infinite derivative at
variance 0; the unbiased variance of one pair divides by 0); ``safe_exp``, ``batch_var`` and ``batch_std`` replace
them, and in float64 inside [-600, 600] they agree with the naive formulas.
"""

from __future__ import annotations

import math

import pytest
import torch

from podisco.losses import get_spec, list_specs
from podisco.losses.numerics import EXP_HEADROOM, batch_std, batch_var, hinge, promote, safe_exp, softplus_neg

TAU = 0.05
BETAS = (0.05, 1.0)
# Margins in beta*rho units: 0, +-1, the float32 exp overflow edge (+-88), just past it, and far past it.
U_MIX = (0.0, 1.0, -1.0, 88.0, -88.0, 100.0, -100.0, 1e3, -1e3, 1e4, -1e4)
U_EXTREME = (1e4, -1e4, 1e3, -1e3)


def _inputs(rho: torch.Tensor, layout: str) -> tuple[torch.Tensor, ...]:
    """Four float64 log-prob tensors with margin rho: all of it in pc, or spread over the four inputs.

    spread: pc - pr = 0.7 rho + 2 and rc - rr = -0.3 rho + 2, so (pc - pr) - (rc - rr) = rho.
    """
    if layout == "pc":
        z = torch.zeros_like(rho)
        return rho, z, z, z
    return 0.4 * rho - 10, -0.3 * rho - 12, -0.15 * rho - 9, 0.15 * rho - 11


def _batches(beta: float) -> list[torch.Tensor]:
    """Margins rho (float64): the mixed batch, single pairs and all-equal batches of 4 (batch variance 0) at the
    extremes; e.g. beta = 0.05, beta*rho = -1e4 is rho = -2e5."""
    mixed = torch.tensor(U_MIX, dtype=torch.float64) / beta
    singles = [torch.tensor([u], dtype=torch.float64) / beta for u in U_EXTREME]
    equal = [torch.full((4,), u, dtype=torch.float64) / beta for u in U_EXTREME]
    return [mixed, *singles, *equal]


def _lengths(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion lengths between 1 and 50 tokens."""
    chosen = torch.linspace(1, 50, b).round() if b > 1 else torch.tensor([1.0])
    rejected = torch.linspace(50, 1, b).round() if b > 1 else torch.tensor([50.0])
    return chosen, rejected


def _check_finite(name: str, dtype: torch.dtype, beta: float, layout: str, rho: torch.Tensor) -> None:
    spec = get_spec(name)
    leaves = [t.to(dtype).detach().requires_grad_(True) for t in _inputs(rho, layout)]
    chosen_lengths, rejected_lengths = _lengths(rho.shape[0])
    where = f"{name} dtype={dtype} beta={beta} layout={layout} beta*rho={(beta * rho).tolist()}"
    out = spec.fn(*leaves, beta=beta, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths, **spec.params)
    assert out.dtype == torch.float32, f"{where}: output dtype {out.dtype}"
    assert out.shape == rho.shape, where
    assert torch.isfinite(out).all(), f"{where}: loss {out.tolist()}"
    out.mean().backward()
    for label, leaf in zip(("pc", "pr", "rc", "rr"), leaves, strict=True):
        grad = leaf.grad
        if grad is None:
            # Only a reference-free loss may leave inputs out of the graph (sft also ignores pr).
            assert spec.reference_free and label != "pc", f"{where}: no gradient on {label}"
            continue
        assert grad.dtype == dtype, where
        assert torch.isfinite(grad.float()).all(), f"{where}: d/d{label} = {grad.tolist()}"
        if spec.reference_free and label in ("rc", "rr"):
            assert (grad == 0).all(), f"{where}: reference-free loss depends on {label}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", [s.name for s in list_specs()])
def test_loss_is_finite_with_finite_gradients_at_extreme_margins(name, dtype):
    for beta in BETAS:
        for layout in ("pc", "spread"):
            for rho in _batches(beta):
                _check_finite(name, dtype, beta, layout, rho)


# ---------------------------------------------------------------------------------------------------------------
# Float64 agreement with the naive formulas (plain torch.exp, Tensor.var(), Tensor.std()).
#
# safe_exp is exact up to log(max) - EXP_HEADROOM = 709.78 - 20 = 689.8 in float64 (68.7 in float32) and is
# continued linearly above, to leave headroom for batch sums (podisco/losses/numerics.py). On beta*rho in
# [-600, 600] every exp argument (-u, -0.9u) stays below 689.8, so the safe and the naive formulas must agree.
# ---------------------------------------------------------------------------------------------------------------
def _nsp(u: torch.Tensor) -> torch.Tensor:
    """Naive -log sigma(u) = log(1 + e^-u); fine in float64 for |u| <= 600."""
    return torch.log1p(torch.exp(-u))


def _nhinge(u: torch.Tensor) -> torch.Tensor:
    return torch.relu(1 - u)


def _rho(pc, pr, rc, rr):
    return (pc - pr) - (rc - rr)


def naive_discopop(pc, pr, rc, rr, beta):  # TRL 1.16 / gpo.py log_ratio_modulated_loss
    u = beta * _rho(pc, pr, rc, rr)
    gate = torch.sigmoid(u / TAU)
    return (1 - gate) * _nsp(u) + gate * torch.exp(-u)


def naive_lrml_original(pc, pr, rc, rr, beta):  # gpo.py log_ratio_modulated_loss_old
    rho = _rho(pc, pr, rc, rr)
    gate = torch.sigmoid(rho)
    return (1 - gate) * _nsp(beta * rho) + gate * torch.exp(-beta * rho)


def naive_cell(pc, pr, rc, rr, beta):  # gpo.py combined_exp_logistic_loss
    u = beta * _rho(pc, pr, rc, rr)
    return 0.5 * torch.exp(-u) + 0.5 * _nsp(u)


def _naive_dbaql(u, stat):
    w = torch.sigmoid(stat.var())
    return w * _nsp(u / 0.9) + (1 - w) * torch.exp(-u * 0.9)


def naive_dbaql(pc, pr, rc, rr, beta):  # gpo.py dynamic_blended_adaptive_quantile_loss
    u = beta * _rho(pc, pr, rc, rr)
    return _naive_dbaql(u, u / TAU)


def naive_dbaql_original(pc, pr, rc, rr, beta):  # gpo.py dynamic_blended_adaptive_quantile_loss_old
    rho = _rho(pc, pr, rc, rr)
    return _naive_dbaql(beta * rho, rho)


def _naive_aqfl(u, s):
    m = s.std() * torch.sigmoid(-s).mean()
    m = m + 0.05 * (torch.sigmoid(s.mean()) - m)
    r = torch.sigmoid(0.1 * (s - m).abs())
    return r * _nsp(u) + (1 - r) * _nhinge(u)


def naive_aqfl(pc, pr, rc, rr, beta):  # gpo.py adaptive_quantile_feedback_loss
    u = beta * _rho(pc, pr, rc, rr)
    return _naive_aqfl(u, u / TAU)


def naive_aqfl_original(pc, pr, rc, rr, beta):  # gpo.py adaptive_quantile_feedback_loss_old
    rho = _rho(pc, pr, rc, rr)
    return _naive_aqfl(beta * rho, rho)


NAIVE = {
    "discopop": naive_discopop,
    "lrml_original": naive_lrml_original,
    "cell": naive_cell,
    "cell_original": naive_cell,
    "dbaql": naive_dbaql,
    "dbaql_original": naive_dbaql_original,
    "aqfl": naive_aqfl,
    "aqfl_original": naive_aqfl_original,
}


def _float64_batches() -> list[torch.Tensor]:
    """beta*rho batches (size >= 2) over [-600, 600]: a wide grid, and tight clusters, whose small batch variance
    keeps DBAQL's exponential share (1 - sigma(Var)) and AQFL's quantile non-trivial."""
    grid = torch.linspace(-600, 600, 25, dtype=torch.float64)
    offsets = torch.tensor([0.0, 0.01, -0.02, 0.03], dtype=torch.float64)
    clusters = [c + offsets for c in (-599.95, -350.0, -60.0, -1.0, 0.0, 2.0, 80.0, 599.95)]
    pairs = [torch.tensor([-600.0, 600.0], dtype=torch.float64), torch.tensor([-3.0, 5.0], dtype=torch.float64)]
    return [grid, *clusters, *pairs]


@pytest.mark.parametrize("name", sorted(NAIVE))
def test_safe_forms_match_the_naive_formulas_in_float64(name):
    spec = get_spec(name)
    for beta in BETAS:
        for u in _float64_batches():
            for layout in ("pc", "spread"):
                x = _inputs(u / beta, layout)
                got = spec.fn(*x, beta=beta, **spec.params)
                want = NAIVE[name](*x, beta=beta)
                assert torch.isfinite(want).all()
                torch.testing.assert_close(got, want, rtol=1e-6, atol=0, msg=f"{name} beta={beta} u={u.tolist()}")


def test_dbaql_exp_share_is_exercised():
    """The cluster batches do reach DBAQL's exponential branch: w = sigma(Var[u/tau]) stays well below 1."""
    u = torch.tensor([-60.0, -59.99, -60.02, -59.97], dtype=torch.float64)
    w = torch.sigmoid((u / TAU).var())
    assert 0.5 < w < 0.9


def test_aqfl_at_initialisation_has_finite_gradients_where_naive_sqrt_var_gives_nan():
    """Step 0: policy == reference, every margin is 0, batch variance 0. d sqrt(v)/dv = inf at v = 0 and
    dv/ds = 0, so a standard deviation written as sqrt(Var) backpropagates inf * 0 = NaN;
    batch_std (Tensor.std) gives 0.

    Note (torch 2.13): ``Tensor.std()`` itself does not NaN here; its backward masks the result == 0 case
    (``std_backward``: (grad / (2 std)).masked_fill_(std == 0, 0)). So gpo.py's ``.std()`` is safe at exactly
    equal margins in this torch, and the failing naive form below is sqrt(Tensor.var()). podisco must agree with
    the masked ``.std()`` gradient (0 through the std term).
    """
    beta = 0.05
    for name, naive in (("aqfl", naive_aqfl), ("aqfl_original", naive_aqfl_original)):
        for dtype in (torch.float32, torch.float64):
            z = torch.zeros(4, dtype=dtype)
            pc = torch.zeros(4, dtype=dtype, requires_grad=True)
            out = get_spec(name).fn(pc, z, z, z, beta=beta)
            out.mean().backward()
            assert torch.isfinite(out).all() and torch.isfinite(pc.grad).all(), name

            # The naive formula with the std written as sqrt(Var): finite forward, NaN backward.
            pc_sqrt = torch.zeros(4, dtype=dtype, requires_grad=True)
            u = beta * _rho(pc_sqrt, z, z, z)
            s = u / TAU if name == "aqfl" else _rho(pc_sqrt, z, z, z)
            m = torch.sqrt(s.var()) * torch.sigmoid(-s).mean()
            m = m + 0.05 * (torch.sigmoid(s.mean()) - m)
            r = torch.sigmoid(0.1 * (s - m).abs())
            naive_sqrt = r * _nsp(u) + (1 - r) * _nhinge(u)
            naive_sqrt.mean().backward()
            assert torch.isfinite(naive_sqrt).all()  # the forward pass is fine ...
            assert torch.isnan(pc_sqrt.grad).all(), name  # ... the backward pass is not

            # gpo.py's Tensor.std(): same value, and (torch's masked std backward) the same finite gradient.
            pc_std = torch.zeros(4, dtype=dtype, requires_grad=True)
            naive_std = naive(pc_std, z, z, z, beta=beta)
            naive_std.mean().backward()
            torch.testing.assert_close(out.detach().to(dtype), naive_std.detach())
            torch.testing.assert_close(pc.grad, pc_std.grad)
            torch.testing.assert_close(out.detach().to(dtype), naive_sqrt.detach())


def test_naive_discopop_overflows_in_float32_where_podisco_does_not():
    """u = beta*rho = -1e3: e^-u = e^1000 = inf in float32 and the gate sigma(u/tau) = 0, so 0 * inf = NaN."""
    beta = 0.05
    pc = torch.tensor([-1e3 / beta], dtype=torch.float32)
    z = torch.zeros(1, dtype=torch.float32)
    naive = naive_discopop(pc, z, z, z, beta=beta)
    assert not torch.isfinite(naive).all()
    got = get_spec("discopop").fn(pc, z, z, z, beta=beta)
    assert torch.isfinite(got).all()
    # Where the gate is 0 the loss is the logistic part, -log sigma(-1e3) = 1e3.
    torch.testing.assert_close(got, torch.tensor([1e3]))


# ---------------------------------------------------------------------------------------------------------------
# podisco.losses.numerics
# ---------------------------------------------------------------------------------------------------------------
def _x_max(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).max) - EXP_HEADROOM


def test_exp_threshold_values():
    assert _x_max(torch.float64) == pytest.approx(689.78, abs=0.01)
    assert _x_max(torch.float32) == pytest.approx(68.72, abs=0.01)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_exp_is_exp_below_the_threshold(dtype):
    x_max = _x_max(dtype)
    x = torch.cat([torch.linspace(-80, x_max, 1001, dtype=dtype), torch.tensor([x_max], dtype=dtype)])
    x = x[x <= x_max]
    torch.testing.assert_close(safe_exp(x), torch.exp(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_exp_is_c1_at_the_threshold(dtype):
    x_max = _x_max(dtype)
    e_max = math.exp(x_max)
    h = 1e-3
    x = torch.tensor([x_max - h, x_max, x_max + h, x_max + 100.0, 1e4], dtype=dtype, requires_grad=True)
    y = safe_exp(x)
    y.sum().backward()
    values, grads = (y.detach().double() / e_max).tolist(), (x.grad.double() / e_max).tolist()
    # Value: exp(x_max - h) = e_max (1 - h + h^2/2) on the left, e_max (1 + h) on the right: a jump-free kink.
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    assert values[0] == pytest.approx(math.exp(-h), rel=rtol)
    assert values[1] == pytest.approx(1.0, rel=rtol)
    assert values[2] == pytest.approx(1 + h, rel=rtol)
    assert values[3] == pytest.approx(101.0, rel=rtol)
    # Derivative: e^x on the left, the constant e_max at and beyond x_max (continuous at x_max).
    assert grads[0] == pytest.approx(math.exp(-h), rel=rtol)
    assert grads[1] == pytest.approx(1.0, rel=rtol)
    assert grads[2] == pytest.approx(1.0, rel=rtol)
    assert grads[3] == pytest.approx(1.0, rel=rtol)
    assert abs(grads[2] - grads[0]) < 2 * h
    assert math.isfinite(values[4] * e_max) and math.isfinite(grads[4] * e_max)


def test_batch_var_matches_tensor_var_and_is_zero_for_one_element():
    x = torch.tensor([1.0, 2.0, 3.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(batch_var(x), x.var())  # unbiased, correction = 1
    assert batch_var(torch.tensor([1.0, 3.0])).item() == pytest.approx(2.0)  # (1 + 1) / (2 - 1)
    one = torch.tensor([5.0], requires_grad=True)
    v = batch_var(one)
    assert v.item() == 0.0  # Tensor.var() of one element is NaN (0 degrees of freedom)
    v.backward()
    assert one.grad.item() == 0.0


def test_batch_std_matches_tensor_std_and_has_zero_gradient_at_equal_inputs():
    x = torch.tensor([1.0, 2.0, 3.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(batch_std(x), x.std())
    equal = torch.full((4,), 3.0, requires_grad=True)
    s = batch_std(equal)
    s.backward()
    assert s.item() == 0.0
    assert torch.equal(equal.grad, torch.zeros(4))
    naive = torch.full((4,), 3.0, requires_grad=True)
    torch.sqrt(naive.var()).backward()
    assert torch.isnan(naive.grad).all()  # what batch_std protects against (Tensor.std() masks this case itself)
    single = torch.tensor([2.0], requires_grad=True)
    batch_std(single).backward()
    assert single.grad.item() == 0.0


def test_promote_never_computes_below_float32():
    bf, f64 = torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float64)
    assert all(t.dtype == torch.float32 for t in promote(bf, bf.half()))
    assert all(t.dtype == torch.float64 for t in promote(bf, f64))


def test_softplus_neg_is_finite_at_huge_margins():
    """-log sigma(u) = u-independent of overflow: log1p(exp(-u)) would be inf at u = -1e4 in float32."""
    u = torch.tensor([-1e4, -88.0, 0.0, 1.0, 1e4], requires_grad=True)
    got = softplus_neg(u)
    torch.testing.assert_close(got, torch.tensor([1e4, 88.0, math.log(2), math.log1p(math.exp(-1)), 0.0]))
    assert torch.isinf(torch.log1p(torch.exp(-u.detach()[:1]))).all()
    got.sum().backward()
    torch.testing.assert_close(u.grad, -torch.sigmoid(-u.detach()))  # d/du -log sigma(u) = -sigma(-u)
    torch.testing.assert_close(hinge(torch.tensor([-1.0, 0.5, 2.0])), torch.tensor([2.0, 0.5, 0.0]))
