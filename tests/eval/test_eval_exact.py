"""The exact arm against brute force on small hand-made banks, and the stratified bootstrap."""

import itertools

import numpy as np
import pytest

from lsc.eval import exact
from lsc.eval import win_rate as win_rate_lib

# Two prompts, banks of 5 with ties and a -inf utility.
U = np.array([[0.3, 1.2, 1.2, -0.5, 0.0],
              [2.0, -np.inf, 2.0, 2.0, 1.0]])


def test_optimum_weights_match_the_closed_form():
    gamma = 0.37
    w = exact.optimum_weights(U, gamma)
    for row, u in zip(w, U):
        e = np.array([np.exp(x / gamma) if np.isfinite(x) else 0.0 for x in u])
        np.testing.assert_allclose(row, e / e.sum(), rtol=1e-12)
    assert w[1, 1] == 0.0
    np.testing.assert_allclose(exact.optimum_weights(U, np.inf)[0], np.full(5, 0.2))
    np.testing.assert_allclose(exact.optimum_weights(U, np.inf)[1], [0.25, 0, 0.25, 0.25, 0.25])
    # Huge utilities do not overflow.
    big = exact.optimum_weights(np.array([[1e4, 1e4 - 1.0]]), 1e-3)
    np.testing.assert_allclose(big, [[1.0, 0.0]], atol=1e-300)


def test_bank_kl_is_the_kl_to_the_uniform_bank_and_grows_as_gamma_falls():
    w = exact.optimum_weights(U, 0.5)
    direct = [sum(p * np.log(p / (1 / 5)) for p in row if p > 0) for row in w]
    np.testing.assert_allclose(exact.bank_kl(w), direct, rtol=1e-12)
    kls = [exact.bank_kl(exact.optimum_weights(U, g)).mean() for g in (10.0, 1.0, 0.3, 0.1, 0.01)]
    assert all(a < b for a, b in zip(kls, kls[1:]))
    # gamma -> inf: uniform over the finite candidates; gamma -> 0: over the maximisers.
    low, high = exact.kl_range(U)
    assert low == pytest.approx(np.mean([0.0, np.log(5 / 4)]))
    assert high == pytest.approx(np.mean([np.log(5 / 2), np.log(5 / 3)]))
    assert low - 1e-12 <= kls[0] and kls[-1] <= high + 1e-12


@pytest.mark.parametrize("target", [0.12, 0.3, 0.7])
def test_gamma_for_kl_reaches_the_target(target):
    gamma = exact.gamma_for_kl(U, target)
    assert exact.bank_kl(exact.optimum_weights(U, gamma)).mean() == pytest.approx(target, abs=1e-7)


def test_gamma_for_kl_refuses_targets_the_bank_cannot_reach():
    low, high = exact.kl_range(U)
    with pytest.raises(ValueError, match="outside what the bank supports"):
        exact.gamma_for_kl(U, high)
    with pytest.raises(ValueError, match="outside"):
        exact.gamma_for_kl(U, low / 2)  # the -inf candidate can never get weight
    assert exact.gamma_for_kl(U, low) == np.inf
    assert exact.gamma_for_kl(U[:1], 0.0) == np.inf


def _brute_force_best_of_k(u, k):
    """Every ordered draw of k indices with replacement; among the draws with the highest
    utility one is kept uniformly at random."""
    n = len(u)
    w = np.zeros(n)
    for draw in itertools.product(range(n), repeat=k):
        vals = [u[i] for i in draw]
        top = max(vals)
        winners = [i for i, v in zip(draw, vals) if v == top]
        for i in winners:
            w[i] += 1.0 / len(winners) / n ** k
    return w


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_best_of_k_weights_match_enumeration_with_ties(k):
    w = exact.best_of_k_weights(U, k)
    for row, u in zip(w, U):
        np.testing.assert_allclose(row, _brute_force_best_of_k(list(u), k), atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(exact.best_of_k_weights(U, 1), np.full((2, 5), 0.2))


def test_best_of_k_is_invariant_to_monotone_transforms():
    # Raw and LSC (a monotone transform) pick the same sample: identical weights.
    u = np.array([[0.3, 1.2, 1.2, -0.5, 0.0, 4.0]])
    lsc = -np.log1p(np.exp(-(u - 0.7)))
    np.testing.assert_array_equal(exact.best_of_k_weights(u, 8), exact.best_of_k_weights(lsc, 8))


def test_win_scores_match_a_loop_over_opponents():
    rng = np.random.default_rng(0)
    cand = rng.integers(0, 3, size=(2, 4, 2)).astype(float)  # integer scores: many ties
    opp = rng.integers(0, 3, size=(2, 3, 2)).astype(float)
    w = exact.win_scores(cand, opp)
    assert w.shape == (2, 4, 4)
    for p in range(2):
        for i in range(4):
            outs = []
            for j in range(3):
                o = win_rate_lib.outcomes(cand[p, i][None], opp[p, j][None])[0]
                outs.append(list(o) + [o.min(), o.max()])
            np.testing.assert_allclose(w[p, i], np.mean(outs, axis=0))


def test_weighted_win_and_frontier():
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(2, 5, 3))
    w = exact.optimum_weights(U, 0.4)
    np.testing.assert_allclose(exact.weighted_win(w, scores),
                               [[np.dot(w[p], scores[p, :, c]) for c in range(3)]
                                for p in range(2)])
    f = exact.frontier(U, scores, [0.15, 0.3], tol=1e-10)
    assert f["win"].shape == (2, 2, 3)
    np.testing.assert_allclose(f["kl"], [0.15, 0.3], atol=1e-7)
    np.testing.assert_allclose(f["win"][1], exact.weighted_win(
        exact.optimum_weights(U, f["gamma"][1]), scores))


def test_frontier_targets_the_bank_cannot_reach_are_nan():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(5, 4))
    scores = rng.uniform(size=(5, 4, 2))
    front = exact.frontier(u, scores, [0.2, np.log(4.0) + 0.1, 8.0])  # KL <= log N = log 4
    assert np.isfinite(front["win"][0]).all()
    np.testing.assert_allclose(front["kl"][0], 0.2, atol=1e-6)
    assert np.isnan(front["win"][1:]).all() and np.isnan(front["gamma"][1:]).all()
    assert np.isnan(front["kl"][1:]).all()


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="every candidate"):
        exact.optimum_weights(np.array([[-np.inf, -np.inf]]), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        exact.best_of_k_weights(np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(ValueError, match="k must be"):
        exact.best_of_k_weights(U, 0)
    with pytest.raises(ValueError, match="gamma"):
        exact.optimum_weights(U, 0.0)
    with pytest.raises(ValueError, match="same P and m"):
        exact.win_scores(np.zeros((2, 3, 2)), np.zeros((2, 3, 1)))


def test_stratified_bootstrap_keeps_strata_sizes_and_matches_the_stratified_variance():
    rng = np.random.default_rng(2)
    strata = np.repeat([0, 1, 2], [30, 50, 20])
    values = rng.normal(loc=strata * 3.0, scale=1.0 + strata)  # strata differ in mean and spread
    in_first = (strata == 0).astype(float)
    means = win_rate_lib.bootstrap_means(np.stack([values, in_first], 1), 20000, seed=5,
                                         strata=strata)
    np.testing.assert_array_equal(means[:, 1], 0.3)  # every resample keeps 30 of stratum 0
    n = len(values)
    direct = sum((np.sum(strata == s) / n) ** 2 * values[strata == s].var() / np.sum(strata == s)
                 for s in range(3))
    assert means[:, 0].var() == pytest.approx(direct, rel=0.05)
    # Unstratified resampling also carries the between-strata variance: larger here.
    plain = win_rate_lib.bootstrap_means(values, 20000, seed=5)
    assert plain.var() > 1.5 * direct


def test_paired_difference_of_identical_procedures_is_exactly_zero():
    rng = np.random.default_rng(3)
    a = rng.uniform(size=40)
    strata = rng.integers(0, 4, size=40)
    d = win_rate_lib.paired_difference(a, a, 500, strata=strata)
    assert d == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    with pytest.raises(ValueError, match="strata"):
        win_rate_lib.paired_difference(a, a, 10, strata=strata[:-1])
