"""The statistics behind every reading (mcmikd.stats), on numbers worked out by hand or from published tables."""

import math

import pytest

from mcmikd import stats


def test_paired_t_interval_and_p_value():
    r = stats.paired([1.0, 1.5, 1.0])
    assert r["n"] == 3 and r["mean"] == pytest.approx(7 / 6) and r["std"] == pytest.approx(0.288675, 1e-5)
    # t_{0.975, 2} = 4.302653 (any t table); t = mean/se = 7.0 on 2 df: two-sided p = 0.0198
    assert r["ci"] == pytest.approx(4.302653 * 0.288675 / math.sqrt(3), 1e-5)
    assert r["p"] == pytest.approx(0.01981, abs=1e-4) and not r["zero_width"]


def test_an_interval_without_width_or_with_one_seed_is_never_resolved():
    same = stats.paired([0.22, 0.22, 0.22])  # accuracy moves in steps of one test image: three equal gains
    assert same["zero_width"] and math.isnan(same["p"])
    assert stats.resolved(same["n"], same["zero_width"], 0.0, same["mean"]) == ""
    one = stats.paired([5.0])
    assert one["n"] == 1 and math.isnan(one["ci"])
    assert stats.resolved(2, False, 0.001, 3.0) == ""  # fewer than MIN_SEEDS
    assert stats.resolved(3, False, 0.001, -3.0) == "−" and stats.resolved(3, False, 0.2, 3.0) == ""


def test_holm_and_benjamini_hochberg_adjust_as_published():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 × 4, 3, 2, 1 → 0.02, 0.03, 0.06, 0.06 (monotone)
    assert stats.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(stats.holm(p)[4])
    # BH: × m/rank → 0.02, 0.04, 0.04, 0.04 (step-up minimum)
    assert stats.benjamini_hochberg(p)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_minimal_detectable_effect_shrinks_with_seeds():
    # (t_{0.975, 2} + t_{0.8, 2}) · s/√3 = (4.3027 + 1.0607) · 1/√3
    assert stats.mde(1.0, 3) == pytest.approx((4.302653 + 1.060660) / math.sqrt(3), 1e-4)
    assert stats.mde(1.0, 10) < stats.mde(1.0, 5) < stats.mde(1.0, 3)
    assert math.isnan(stats.mde(1.0, 1))


def test_difference_of_two_runs_floors_each_spread_at_the_resolution():
    d = stats.difference([99.11, 99.11, 99.11], [98.89, 98.89, 98.89], floor=0.22)
    assert d["d"] == pytest.approx(0.22) and d["se"] == pytest.approx(0.22 * math.sqrt(2 / 3))
    one = stats.difference([95.0], [94.0, 96.0, 95.0])  # a single run: the other side's spread stands for both
    assert one["se"] == pytest.approx(1.0 * math.sqrt(1 + 1 / 3)) and one["df"] == 2
    assert math.isnan(stats.difference([1.0], [2.0])["se"])  # neither side has a spread


def test_equivalence_and_difference_tests_against_a_margin():
    close = stats.equivalence(0.1, 0.2, 10, 1.0)
    assert close["p_agree"] < 0.05 and close["p_differ"] > 0.5
    far = stats.equivalence(4.0, 0.5, 10, 1.0)
    assert far["p_differ"] < 0.001 and far["p_agree"] > 0.99
    unclear = stats.equivalence(1.0, 2.0, 2, 1.0)
    assert unclear["p_agree"] == pytest.approx(0.5) and unclear["p_differ"] == pytest.approx(0.5)
