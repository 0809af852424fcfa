"""Loss shapes: the paper's DiscoPOP extrema, convexity, jumps, and the behavioural fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from podisco.losses import get_spec, list_specs
from podisco.losses.analysis import (
    DUPLICATE_DISTANCE,
    analyze,
    compare,
    curve,
    fingerprint,
    fingerprint_distance,
    nearest_known,
)


def test_discopop_extrema_match_the_paper():
    """Paper App. D.2 / Fig. 14 at beta = 0.05: local minimum f = 0.785929 at rho = -2.3714 and local maximum
    f = 0.87829 at rho = 1.44012; df/drho(0) = beta * [(1 - ln 2) / (4 tau) - 3/4] = 0.05 * 0.78427 = +0.0392."""
    shape = analyze("discopop", 0.05)
    kinds = [e.kind for e in shape.extrema]
    assert kinds == ["min", "max"]
    low, high = shape.extrema
    assert low.rho == pytest.approx(-2.3714, abs=1e-3)
    assert low.value == pytest.approx(0.785929, abs=1e-4)
    assert high.rho == pytest.approx(1.44012, abs=1e-3)
    assert high.value == pytest.approx(0.87829, abs=1e-4)
    assert shape.grad_at_zero == pytest.approx(0.05 * ((1 - np.log(2)) / (4 * 0.05) - 0.75), rel=1e-9)
    # One non-convex stretch between two inflection points, holding the maximum; the minimum is in the convex
    # part to its left (f'' > 0 there).
    assert [s.convex for s in shape.segments] == [True, False, True]
    assert low.rho < shape.segments[1].start < high.rho < shape.segments[1].end
    assert not shape.convex


def test_dpo_is_convex_without_extrema_and_raises_the_margin():
    shape = analyze("sigmoid", 0.05)
    assert shape.extrema == [] and shape.jumps == [] and shape.convex
    assert shape.grad_at_zero == pytest.approx(-0.025)  # -beta * sigma(0)


def test_ipo_minimum_sits_at_its_target_margin():
    """IPO (one token per completion): (rho - 1/(2 beta))^2 has its minimum 0 at rho = 1/(2*0.05) = 10."""
    (minimum,) = analyze("ipo", 0.05).extrema
    assert minimum.kind == "min"
    assert minimum.rho == pytest.approx(10.0, abs=1e-6)
    assert minimum.value == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("name", ["padll", "pfl"])
def test_discontinuous_losses_report_a_jump_at_zero(name):
    shape = analyze(name, 0.05)
    assert len(shape.jumps) == 1 and abs(shape.jumps[0]) < 0.02
    assert not shape.convex


def test_hinge_kink_is_not_a_jump_and_its_plateau_is_not_an_extremum():
    shape = analyze("hinge", 0.05)
    assert shape.jumps == [] and shape.extrema == [] and shape.convex


def test_curve_matches_the_closed_form_and_its_derivative():
    rho = np.linspace(-30, 30, 61)
    values, grads = curve("sigmoid", 0.1, rho)
    np.testing.assert_allclose(values, np.log1p(np.exp(-0.1 * rho)), rtol=1e-12)
    np.testing.assert_allclose(grads, -0.1 / (1 + np.exp(0.1 * rho)), rtol=1e-12)


def test_every_registered_loss_can_be_analysed():
    for spec in list_specs():
        shape = analyze(spec.name, 0.05, points=601)
        assert np.isfinite(shape.grad_at_zero), spec.name
        assert np.all(np.isfinite(fingerprint(spec.name, 0.05))), spec.name


def _dpo_by_hand(pc, pr, rc, rr, *, beta, **_):
    """DPO coded differently: log(1 + exp(-beta * ((pc - rc) - (pr - rr)))), via softplus."""
    return F.softplus(-beta * ((pc - rc) - (pr - rr)))


def _dpo_scaled_and_shifted(pc, pr, rc, rr, *, beta, **_):
    """3 * DPO + 7: the same gradient directions; AdamW is invariant to the scale, the offset has no gradient."""
    z = beta * (pc - pr - rc + rr)
    return 3.0 * torch.log1p(torch.exp(-z)) + 7.0


@pytest.mark.parametrize("coding", [_dpo_by_hand, _dpo_scaled_and_shifted])
def test_two_codings_of_dpo_have_the_same_fingerprint(coding):
    distance = fingerprint_distance(fingerprint("sigmoid"), fingerprint(coding))
    assert distance < 1e-6
    assert nearest_known(coding, 0.05, k=1)[0][1] < 1e-6


def test_dpo_and_discopop_have_different_fingerprints():
    assert compare("sigmoid", "discopop") > 5 * DUPLICATE_DISTANCE


def test_fingerprint_sees_batch_behaviour():
    """AOT sorts the batch: one pair per batch it is DPO, on the probe batch it is not."""
    rho = np.linspace(-20, 20, 41)
    np.testing.assert_allclose(curve("aot", 0.05, rho)[0], curve("sigmoid", 0.05, rho)[0], rtol=1e-12)
    assert compare("aot", "sigmoid") > DUPLICATE_DISTANCE


def test_fingerprint_sees_more_than_the_margin():
    """bco_pair and sigmoid both reduce to a function of rho on the symmetric split only approximately;
    the probe batch, with unequal chosen / rejected log-ratios, separates them."""
    assert compare("bco_pair", "sigmoid") > DUPLICATE_DISTANCE


def test_nearest_known_finds_the_original_code_of_a_discovered_loss():
    near = nearest_known("lrml_original", 0.05, k=2)
    assert near[0] == ("discopop", pytest.approx(0.0, abs=1e-9))
    assert get_spec(near[1][0]).name != "lrml_original"


def test_fingerprint_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        fingerprint_distance(np.zeros(3), np.zeros(4))


def test_convexity_agrees_with_finite_differences_for_every_loss():
    """Where the second finite difference of f is clearly negative (away from corners and jumps), analyze must
    report a non-convex segment there. This caught Tensor.std's NaN second derivative hiding AQFL's bump."""
    rho = np.linspace(-20, 40, 3001)
    h = rho[1] - rho[0]
    for spec in list_specs():
        shape = analyze(spec.name, 0.05, points=3001)
        values, _ = curve(spec.name, 0.05, rho)
        fd = (values[2:] - 2 * values[1:-1] + values[:-2]) / h**2
        special = [k.rho for k in shape.kinks] + shape.jumps
        for x, c in zip(rho[1:-1], fd, strict=True):
            if c < -1e-4 * max(1.0, float(np.max(np.abs(fd)))) and all(abs(x - s) > 3 * h for s in special):
                assert any(not seg.convex and seg.start - h <= x <= seg.end + h for seg in shape.segments), (
                    spec.name,
                    x,
                )


def test_corners_are_found_and_classified():
    (corner,) = analyze("hinge", 0.05).kinks
    assert corner.rho == pytest.approx(20.0, abs=0.01) and corner.convex  # relu(1 - beta*rho) at beta*rho = 1
    concave = [k for k in analyze("aqfl", 0.05).kinks if not k.convex]
    assert len(concave) == 1 and abs(concave[0].rho) < 0.05  # |s - m2| in the blend weight
    assert analyze("sigmoid", 0.05).kinks == [] and analyze("discopop", 0.05).kinks == []


def test_a_loss_that_goes_nan_is_named():
    def nan_for_positive_margins(pc, pr, rc, rr, *, beta, **_):
        u = beta * (pc - pr - rc + rr)
        return torch.where(u > 0.5, torch.full_like(u, float("nan")), -F.logsigmoid(u))

    with pytest.raises(ValueError, match=r"non-finite value at rho = 10"):
        analyze(nan_for_positive_margins, 0.05)


def test_classification_fingerprint_merges_rewrites_and_keeps_distinct_losses_apart():
    from podisco.losses.analysis import CLASSIFICATION_DUPLICATE_DISTANCE, classification_fingerprint
    from podisco.losses.classification import get_classification_loss

    def brier_scaled(logits, targets):  # the squared error, times 3, plus 1: the same training
        p = torch.softmax(logits, -1)
        return ((p - torch.nn.functional.one_hot(targets, p.shape[-1]).to(p)) ** 2).sum(-1) * 3 + 1

    def brier_expanded(logits, targets):  # sum p^2 - 2 p_y: the squared error less a constant 1
        p = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
        return (p**2).sum(-1) - 2 * p.gather(1, targets[:, None]).squeeze(1)

    fp = {name: classification_fingerprint(get_classification_loss(name)) for name in ("cross_entropy",
          "label_smoothing", "squared_error")}  # fmt: skip
    for rewrite in (brier_scaled, brier_expanded):
        assert fingerprint_distance(fp["squared_error"], classification_fingerprint(rewrite)) < 1e-5
    # label smoothing 0.1 is 0.078 from cross-entropy: kept apart, as the paper's CIFAR-10 discovery needs
    assert fingerprint_distance(fp["cross_entropy"], fp["label_smoothing"]) > 50 * CLASSIFICATION_DUPLICATE_DISTANCE
    assert fingerprint_distance(fp["cross_entropy"], fp["squared_error"]) > 0.5
