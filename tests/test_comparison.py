"""Paired comparison of two models on the same queries (exact McNemar test, paired bootstrap)."""

from __future__ import annotations

import random
from math import comb

import pytest

from bioscan_clip_hf.comparison import exact_mcnemar_p, paired_comparison


def _brute_force_p(wins: int, losses: int) -> float:
    """Two-sided binomial test by summing every outcome at most as likely as the observed one."""
    n = wins + losses
    prob = [comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in prob if p <= prob[wins] * (1 + 1e-12)))


@pytest.mark.parametrize("wins, losses", [(0, 0), (3, 0), (9, 1), (12, 5), (20, 20), (2, 17)])
def test_exact_mcnemar_matches_the_binomial_test(wins, losses):
    assert exact_mcnemar_p(wins, losses) == pytest.approx(_brute_force_p(wins, losses))


def test_known_p_values():
    assert exact_mcnemar_p(9, 1) == pytest.approx(22 / 1024)
    assert exact_mcnemar_p(5, 5) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        exact_mcnemar_p(-1, 2)


def test_counts_difference_and_interval():
    rng = random.Random(0)
    a = [rng.random() < 0.9 for _ in range(400)]
    b = [x if rng.random() < 0.8 else not x for x in a]
    res = paired_comparison(a, b, n_bootstrap=4000)
    wins = sum(x and not y for x, y in zip(a, b))
    losses = sum(y and not x for x, y in zip(a, b))
    assert (res["wins"], res["losses"], res["n"]) == (wins, losses, 400)
    assert res["difference"] == pytest.approx(100 * (wins - losses) / 400)
    assert res["accuracy_a"] - res["accuracy_b"] == pytest.approx(res["difference"])
    assert res["ci_low"] < res["difference"] < res["ci_high"]
    # Paired bootstrap sd of the mean difference ~ sqrt(discordant share) / sqrt(n).
    half_width = (res["ci_high"] - res["ci_low"]) / 2
    expected = 1.96 * 100 * ((wins + losses) / 400 - ((wins - losses) / 400) ** 2) ** 0.5 / 400**0.5
    assert half_width == pytest.approx(expected, rel=0.15)


def test_identical_models_have_a_zero_width_interval_and_p_one():
    hits = [True, False, True, True]
    res = paired_comparison(hits, hits)
    assert (res["difference"], res["ci_low"], res["ci_high"], res["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison([True, False], [True])
    with pytest.raises(ValueError, match="non-empty"):
        paired_comparison([], [])
