"""One convention for means, standard errors and intervals (podisco.stats), with worked numbers."""

import math

import pytest

from podisco.stats import Estimate, estimate, format_estimate, holm, one_sided_p, paired_difference


def test_mean_standard_error_and_interval_by_hand():
    # values 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, SE = sqrt(14/3 / 4)
    e = estimate([1.0, 2.0, 3.0, 6.0])
    assert (e.mean, e.n) == (3.0, 4) and e.se == pytest.approx(math.sqrt(14 / 12))
    assert e.ci95 == pytest.approx((3.0 - 1.96 * e.se, 3.0 + 1.96 * e.se))


def test_a_single_value_has_an_unknown_standard_error_not_zero_or_nan():
    e = estimate([0.25])
    assert e == Estimate(0.25, None, 1) and e.ci95 is None
    assert format_estimate(e) == "+0.2500 (n=1)"
    with pytest.raises(ValueError, match="no values"):
        estimate([])


def test_paired_difference_is_the_estimate_of_the_per_pair_differences():
    a, b = [0.50, 0.45, 0.52], [0.44, 0.43, 0.47]
    d, by_hand = paired_difference(a, b), estimate([0.06, 0.02, 0.05])
    assert (d.mean, d.se, d.n) == pytest.approx((by_hand.mean, by_hand.se, 3))
    assert format_estimate(paired_difference(a, b)) == "+0.0433 ± 0.0120 (SE, n=3)"
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference(a, b[:2])


def test_holm_adjusts_in_input_order():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_one_sided_p_by_hand():
    # mean 0.01, SE 0.004, n = 10: t = 2.5 on 9 degrees of freedom, P(T >= 2.5) = 0.0169 (t tables)
    assert one_sided_p(Estimate(0.01, 0.004, 10)) == pytest.approx(0.01692, abs=2e-5)
    assert one_sided_p(Estimate(-0.01, 0.004, 10)) == pytest.approx(1 - 0.01692, abs=2e-5)
    assert one_sided_p(Estimate(0.01, None, 1)) == 1.0
