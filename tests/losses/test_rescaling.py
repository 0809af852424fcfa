"""Rescaling: a candidate that is a known loss at another beta (or times a constant) is recognised as such.

Notation: rho = (pc - pr) - (rc - rr), u = beta * rho. ``rescaled_distance(loss, reference, beta)`` finds the s
for which ``loss`` at beta behaves like ``reference`` at beta * s. For a loss that is g(k * beta * rho), i.e. g
at k*beta, and reference g, the match is exact at s = k: g(k beta rho) = g((beta s) rho) iff s = k.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from podisco.losses.analysis import (
    DEFAULT_SCALES,
    DUPLICATE_DISTANCE,
    RescaleMatch,
    fingerprint,
    fingerprint_at_scales,
    rescaled_distance,
    rescaled_match,
    rescaling_label,
)
from podisco.losses.registry import get_loss

BETA = 0.05


# --- Candidates as the discovery loop's code would write them -------------------------------------------------
def _logits(pc, pr, rc, rr):
    return (pc - pr) - (rc - rr)


def dpo_2beta(pc, pr, rc, rr, *, beta, **_):
    """-log sigma(2 beta rho): DPO at 2 beta."""
    return -F.logsigmoid(2 * beta * _logits(pc, pr, rc, rr))


def dpo_half_beta(pc, pr, rc, rr, *, beta, **_):
    """-log sigma(beta rho / 2): DPO at beta / 2."""
    return -F.logsigmoid(0.5 * beta * _logits(pc, pr, rc, rr))


def dpo_times_3(pc, pr, rc, rr, *, beta, **_):
    """3 * -log sigma(beta rho): DPO with its output scaled by 3."""
    return 3 * -F.logsigmoid(beta * _logits(pc, pr, rc, rr))


def softplus_form(pc, pr, rc, rr, *, beta, **_):
    """softplus(-u) = log(1 + e^-u) = -log sigma(u)."""
    return F.softplus(-beta * _logits(pc, pr, rc, rr))


def log1p_exp_form(pc, pr, rc, rr, *, beta, **_):
    """log(1 + e^-u), exponentiating only non-positive numbers: log1p(e^-u) for u >= 0, -u + log1p(e^u) below.

    (The shorter log1p(e^-|u|) + relu(-u) has autograd gradient 0 at u = 0, not -1/2, since |u|' and relu'
    are 0 there; at initialisation every rho is 0, so that spelling never trains. The fingerprint sees it, at
    distance 0.050 from DPO.)
    """
    u = beta * _logits(pc, pr, rc, rr)
    above = torch.log1p(torch.exp(-u.clamp(min=0)))
    below = -u + torch.log1p(torch.exp(u.clamp(max=0)))
    return torch.where(u >= 0, above, below)


def log_sigmoid_form(pc, pr, rc, rr, *, beta, **_):
    """-log(sigma(u)), the naive spelling."""
    return -torch.log(torch.sigmoid(beta * _logits(pc, pr, rc, rr)))


def hinge_2beta(pc, pr, rc, rr, *, beta, **_):
    """max(0, 1 - 2 beta rho): SLiC at 2 beta."""
    return torch.relu(1 - 2 * beta * _logits(pc, pr, rc, rr))


# --- Tests -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("candidate", "expected"), [(dpo_2beta, 2.0), (dpo_half_beta, 0.5)])
def test_dpo_at_another_beta_matches_dpo_at_that_scale(candidate, expected):
    """-log sigma(k beta rho) = DPO at beta * k, so s = k with distance 0 (k = 2 and 1/2)."""
    match = rescaled_distance(candidate, get_loss("sigmoid"), BETA)
    assert isinstance(match, RescaleMatch)
    assert match.scale == pytest.approx(expected, rel=0.05)
    assert match.distance < 1e-3
    assert match.output_scale == pytest.approx(1.0, rel=1e-3)  # same gradient at the matched beta


def test_a_scale_between_grid_points_is_refined():
    """-log sigma(1.37 beta rho): 1.37 lies between the grid points 2^(3/8) = 1.297 and 2^(4/8) = 1.414; the
    golden-section refinement in ln s lands on it."""
    k = 1.37

    def candidate(pc, pr, rc, rr, *, beta, **_):
        return -F.logsigmoid(k * beta * _logits(pc, pr, rc, rr))

    match = rescaled_distance(candidate, "sigmoid", BETA)
    assert match.scale == pytest.approx(k, rel=1e-3)
    assert match.distance < 1e-4


def test_output_scale_is_factored_out():
    """3 * DPO: every fingerprint block is standardised to unit RMS, so c * L (c > 0) has L's fingerprint; the
    match is at s = 1, and the least-squares output scale on the raw gradients is c = 3."""
    match = rescaled_distance(dpo_times_3, get_loss("sigmoid"), BETA)
    assert match.scale == pytest.approx(1.0, rel=0.02)
    assert match.distance < 1e-6
    assert match.output_scale == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("candidate", [softplus_form, log1p_exp_form, log_sigmoid_form])
def test_dpo_written_three_ways_matches_dpo_at_scale_one(candidate):
    """softplus(-u) = log1p(exp(-u)) = -log sigma(u): DPO itself, s = 1."""
    found = rescaled_match(candidate, BETA, {"sigmoid": get_loss("sigmoid"), "hinge": get_loss("hinge")})
    assert found is not None
    name, match = found
    assert name == "sigmoid"
    assert match.scale == pytest.approx(1.0, rel=0.02)
    assert match.distance < 1e-6


@pytest.mark.parametrize("other", ["cell", "discopop"])
def test_cell_and_discopop_are_not_dpo_at_any_scale(other):
    """CELL = (f_dpo(u) + e^-u) / 2 grows like e^-u for u -> -inf where DPO grows like -u; DiscoPOP gates
    between f_dpo and e^-u on u / tau, with bumps near u = 0 that no softplus(-s u) has. Neither way round,
    nor through a stored fingerprint, does any s bring them within the duplicate distance."""
    dpo = get_loss("sigmoid")
    other_fn = get_loss(other)
    assert rescaled_distance(other_fn, dpo, BETA).distance > 3 * DUPLICATE_DISTANCE
    assert rescaled_distance(dpo, other_fn, BETA).distance > 3 * DUPLICATE_DISTANCE
    assert rescaled_match(other_fn, BETA, {"sigmoid": dpo}) is None
    assert rescaled_match(dpo, BETA, {other: other_fn}) is None
    assert rescaled_match(other_fn, BETA, {"sigmoid": fingerprint("sigmoid", BETA)}) is None


def test_hinge_at_twice_beta_is_hinge_not_dpo():
    """max(0, 1 - 2u) = SLiC at 2 beta: s = 2 against hinge. Against DPO the corner at u = 1/2 (and the flat
    zero beyond it) has no softplus(-s u) counterpart."""
    match = rescaled_distance(hinge_2beta, get_loss("hinge"), BETA)
    assert match.scale == pytest.approx(2.0, rel=0.05)
    assert match.distance < 1e-3
    assert rescaled_distance(hinge_2beta, get_loss("sigmoid"), BETA).distance > 3 * DUPLICATE_DISTANCE
    found = rescaled_match(hinge_2beta, BETA, {"sigmoid": get_loss("sigmoid"), "hinge": get_loss("hinge")})
    assert found is not None and found[0] == "hinge"


def test_rescaled_match_picks_the_rescaled_loss_among_several():
    known = {name: get_loss(name) for name in ("sigmoid", "hinge", "ipo", "cell", "discopop")}
    found = rescaled_match(dpo_2beta, BETA, known)
    assert found is not None
    name, match = found
    assert name == "sigmoid" and match.scale == pytest.approx(2.0, rel=0.05)
    assert rescaling_label(name, match.scale) == "≈ sigmoid at β×2"
    assert rescaled_match(dpo_2beta, BETA, {}) is None


def test_stored_fingerprints_give_the_same_scale_direction():
    """With a stored fingerprint of known K at beta, the candidate C is called at beta / s instead:
    C at beta / s ~ K at beta is the same statement as C at beta ~ K at beta * s, so s = 2 for DPO at 2 beta
    either way. Row i of fingerprint_at_scales(C, beta, scales) is C at beta * scales[i] on beta's grid."""
    stored = {"sigmoid": fingerprint("sigmoid", BETA), "hinge": fingerprint("hinge", BETA)}
    found = rescaled_match(dpo_2beta, BETA, stored)
    assert found is not None
    name, match = found
    assert name == "sigmoid" and match.scale == pytest.approx(2.0, rel=0.05) and match.output_scale is None
    # Stored and callable entries can be mixed.
    found = rescaled_match(hinge_2beta, BETA, {"sigmoid": stored["sigmoid"], "hinge": get_loss("hinge")})
    assert found is not None and found[0] == "hinge" and found[1].scale == pytest.approx(2.0, rel=0.05)

    rows = fingerprint_at_scales(dpo_2beta, BETA, [0.5, 1.0, 2.0])
    assert rows.shape == (3, fingerprint("sigmoid", BETA).size)
    np.testing.assert_array_equal(rows[1], fingerprint(dpo_2beta, BETA))
    # C at beta / 2 = -log sigma(beta rho) = K at beta.
    np.testing.assert_allclose(rows[0], stored["sigmoid"], atol=1e-12)


def test_a_loss_that_fails_at_some_scales_is_matched_where_it_works():
    """A candidate that raises for beta > 0.2 (s > 4 at beta = 0.05) is DPO at 2 beta elsewhere."""

    def fragile(pc, pr, rc, rr, *, beta, **_):
        if beta > 0.2:
            raise ValueError("beta too large")
        return dpo_2beta(pc, pr, rc, rr, beta=beta)

    match = rescaled_distance(get_loss("sigmoid"), fragile, BETA)  # fragile at 0.05 * s: fails for s > 4
    assert match.scale == pytest.approx(0.5, rel=0.05) and match.distance < 1e-3
    assert np.isnan(fingerprint_at_scales(fragile, BETA, [8.0])).all()


def test_default_scales_span_one_eighth_to_eight_geometrically():
    scales = np.asarray(DEFAULT_SCALES)
    assert len(scales) == 49 and scales[0] == pytest.approx(1 / 8) and scales[-1] == pytest.approx(8)
    np.testing.assert_allclose(scales[1:] / scales[:-1], 2 ** (1 / 8))
    assert 1.0 in scales and 2.0 in scales and 0.5 in scales


def test_rescaling_label():
    assert rescaling_label("sigmoid", 2.0) == "≈ sigmoid at β×2"
    assert rescaling_label("sigmoid", 0.5) == "≈ sigmoid at β×0.5"
    assert rescaling_label("hinge", 1.23456) == "≈ hinge at β×1.23"
    assert rescaling_label("sigmoid", 1.019) == "≈ sigmoid at the same β"
    assert rescaling_label("sigmoid", 0.981) == "≈ sigmoid at the same β"
    assert rescaling_label("sigmoid", 1.03) == "≈ sigmoid at β×1.03"
    assert rescaling_label("cell", 0.123456) == "≈ cell at β×0.123"
