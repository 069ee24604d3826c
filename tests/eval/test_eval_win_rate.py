"""Win rates: hand-computed outcomes with ties, AND/OR semantics, bootstrap CIs."""

import math

import numpy as np
import pytest

from lsc.data import world, world_data
from lsc.eval import win_rate as wr


def test_hand_computed_outcomes_with_ties():
    policy = [[1, 2], [3, 3], [0, 5], [2, 1]]
    base = [[0, 2], [3, 4], [1, 1], [2, 1]]
    o = wr.outcomes(policy, base)
    np.testing.assert_array_equal(o, [[1, .5], [.5, 0], [0, 1], [.5, .5]])
    c = wr.combine_outcomes(o)
    np.testing.assert_array_equal(c["and"], [.5, 0, 0, .5])
    np.testing.assert_array_equal(c["or"], [1, .5, 1, .5])
    res = wr.win_rates(policy, base, ["helpful", "harmless"], num_resamples=200)
    assert res["helpful"]["value"] == pytest.approx(0.5)
    assert res["harmless"]["value"] == pytest.approx(0.5)
    assert res["and"]["value"] == pytest.approx(0.25)
    assert res["or"]["value"] == pytest.approx(0.75)
    for iv in res.values():
        assert iv["ci_low"] <= iv["value"] <= iv["ci_high"]


def test_tie_tolerance():
    o = wr.outcomes([1.0, 1.05, 2.0], [1.02, 1.0, 1.0], tie_tol=0.1)
    np.testing.assert_array_equal(o[:, 0], [.5, .5, 1])
    with pytest.raises(ValueError, match="tie_tol"):
        wr.outcomes([1.0], [1.0], tie_tol=-1)


def test_and_or_duality_and_single_property():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (500, 3)).astype(float)
    b = rng.integers(0, 3, (500, 3)).astype(float)
    ab = wr.combine_outcomes(wr.outcomes(a, b))
    ba = wr.combine_outcomes(wr.outcomes(b, a))
    np.testing.assert_allclose(ab["and"], 1 - ba["or"])
    np.testing.assert_allclose(ab["or"], 1 - ba["and"])
    one = wr.win_rates(a[:, :1], b[:, :1], ["x"], num_resamples=100)
    assert one["and"]["value"] == one["or"]["value"] == one["x"]["value"]
    # Without ties AND / OR are the strict logical definitions.
    c, d = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    res = wr.win_rates(c, d, num_resamples=50)
    assert res["and"]["value"] == pytest.approx(np.mean(np.all(c > d, axis=1)))
    assert res["or"]["value"] == pytest.approx(np.mean(np.any(c > d, axis=1)))


def test_bootstrap_matches_normal_approximation_for_large_n():
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.3).astype(float)
    ci = wr.bootstrap_ci(x, num_resamples=4000, seed=3)
    p = x.mean()
    half = 1.959964 * math.sqrt(p * (1 - p) / x.size)
    assert ci["ci_low"] == pytest.approx(p - half, abs=3e-3)
    assert ci["ci_high"] == pytest.approx(p + half, abs=3e-3)


def test_bootstrap_is_seeded_and_paired_across_columns():
    x = np.random.default_rng(2).random((50, 2))
    a = wr.bootstrap_means(x, 300, seed=7)
    b = wr.bootstrap_means(x, 300, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:, 0], wr.bootstrap_means(x[:, 0], 300, seed=7))
    assert not np.array_equal(a, wr.bootstrap_means(x, 300, seed=8))


def test_bootstrap_ci_covers_true_win_rate_in_simulation():
    # policy ~ N(0.4, 1), base ~ N(0, 1): P(win) = Phi(0.4 / sqrt(2)).
    true = 0.5 * (1 + math.erf(0.4 / math.sqrt(2) / math.sqrt(2)))
    rng = np.random.default_rng(123)
    reps, covered = 200, 0
    for r in range(reps):
        p = rng.normal(0.4, 1.0, (200, 1))
        b = rng.normal(0.0, 1.0, (200, 1))
        iv = wr.win_rates(p, b, ["h"], num_resamples=400, seed=r)["h"]
        covered += iv["ci_low"] <= true <= iv["ci_high"]
    assert 0.88 <= covered / reps <= 0.99


def test_ci_shrinks_with_n():
    rng = np.random.default_rng(5)
    widths = []
    for n in (400, 1600):
        iv = wr.win_rates(rng.normal(0.3, 1, n), rng.normal(0, 1, n), num_resamples=2000)["p0"]
        widths.append(iv["ci_high"] - iv["ci_low"])
    assert 0.35 < widths[1] / widths[0] < 0.65


def test_base_vs_base_covers_half_on_the_synthetic_world():
    # Ten seeded replicates of the base policy (the demonstrator) judged by the gold judge
    # against independent base samples; a 95% CI should cover 0.5 in nearly all of them.
    demo = world_data.Demonstrator()
    keys = ("helpful", "harmless", "and_or_mean")
    covered = dict.fromkeys(keys, 0)
    for rep in range(10):
        rng = np.random.default_rng(100 + rep)
        prompts = [world.sample_prompt(rng, 0.25) for _ in range(300)]
        y1 = [demo.sample(p, rng) for p in prompts]
        y0 = [demo.sample(p, rng) for p in prompts]  # independent base samples
        res = wr.judged_win_rates(world.gold_judge(), prompts, y1, y0, ["helpful", "harmless"],
                                  and_or_mean=True, num_resamples=500, seed=rep)
        for key in keys:
            covered[key] += res[key]["ci_low"] <= 0.5 <= res[key]["ci_high"]
        # AND / OR of two exchangeable policies are not 0.5 (they sum to 1 in expectation).
        assert res["and"]["value"] < 0.5 < res["or"]["value"]
    assert all(c >= 8 for c in covered.values()), covered


def test_judged_win_rates_checks_the_judge_output():
    def bad_judge(prompts, responses):
        return np.zeros((len(prompts), 3))

    with pytest.raises(ValueError, match="judge returned"):
        wr.judged_win_rates(bad_judge, ["a"], ["b"], ["c"], ["x", "y"])
    with pytest.raises(ValueError, match="must all be equal|all must be equal"):
        wr.judged_win_rates(bad_judge, ["a", "b"], ["b"], ["c"], ["x"])
    with pytest.raises(ValueError, match="unknown gold property"):
        world.gold_judge(["funny"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        wr.win_rates(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        wr.win_rates([[np.nan]], [[0.0]])
    with pytest.raises(ValueError, match="property names"):
        wr.win_rates(np.zeros((3, 2)), np.zeros((3, 2)), ["and", "x"])
    with pytest.raises(ValueError, match="2 property names for 1"):
        wr.win_rates(np.zeros((3, 1)), np.zeros((3, 1)), ["a", "b"])
    with pytest.raises(ValueError, match="N = 0"):
        wr.win_rates(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="confidence"):
        wr.bootstrap_ci(np.zeros(3), confidence=1.5)


def test_paired_difference_and_across_seeds():
    rng = np.random.default_rng(3)
    a = (rng.random(500) < 0.7).astype(float)
    b = (rng.random(500) < 0.5).astype(float)
    d = wr.paired_difference(a, b, num_resamples=1000)
    assert d["value"] == pytest.approx(a.mean() - b.mean())
    assert d["ci_low"] > 0
    runs = [wr.win_rates(rng.normal(0.2, 1, 100), rng.normal(0, 1, 100), ["h"],
                         num_resamples=50) for _ in range(4)]
    s = wr.across_seeds(runs)
    vals = np.array([r["h"]["value"] for r in runs])
    assert s["h"]["mean"] == pytest.approx(vals.mean())
    assert s["h"]["std"] == pytest.approx(vals.std(ddof=1))
    assert s["h"]["se"] == pytest.approx(vals.std(ddof=1) / 2)
    assert s["h"]["num_seeds"] == 4 and s["and"]["min"] <= s["and"]["max"]
    with pytest.raises(ValueError):
        wr.across_seeds([])
