"""Replicated intervals and the decision rule, against hand computations and numpy references."""

import numpy as np
import pytest

from lsc.eval import decision
from lsc.eval import win_rate

B = 400  # bootstrap resamples (small: every test here is a few milliseconds)


def _diffs(r=3, p=12, seed=0, shift=None):
    rng = np.random.default_rng(seed)
    d = rng.normal(0.02, 0.1, size=(r, p))
    if shift is not None:
        d = d + np.asarray(shift, np.float64)[:, None]
    return d


def _reference_means(d, strata, num_resamples, seed):
    """``float64[B, R]`` resample means drawn by hand the way ``bootstrap_means`` documents it:
    one ``default_rng(seed)``, per resample block the strata in sorted order, each drawing its
    own rows' counts from a uniform multinomial of its size."""
    r, p = d.shape
    labels = np.zeros(p, np.int64) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(seed)
    counts = np.zeros((num_resamples, p), np.int64)
    for s in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == s)
        counts[:, rows] = rng.multinomial(rows.size, [1.0 / rows.size] * rows.size,
                                          size=num_resamples)
    # every stratum keeps its size in every resample
    for s in set(labels.tolist()):
        assert np.all(counts[:, labels == s].sum(axis=1) == np.sum(labels == s))
    means = np.empty((num_resamples, r))
    for b in range(num_resamples):
        for j in range(r):
            means[b, j] = sum(counts[b, i] * d[j, i] for i in range(p)) / p
    return means


def _quantiles(x, confidence):
    a = (1 - confidence) / 2
    return np.quantile(x, a), np.quantile(x, 1 - a)


@pytest.mark.parametrize("strata", [None, [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]])
@pytest.mark.parametrize("confidence,seed", [(0.95, 0), (0.8, 7)])
def test_replicate_intervals_equal_bootstrap_ci_of_each_row(strata, confidence, seed):
    d = _diffs()
    out = decision.replicated_intervals(d, strata, num_resamples=B, confidence=confidence,
                                        seed=seed)
    assert len(out["replicates"]) == d.shape[0]
    for r, iv in enumerate(out["replicates"]):
        ref = win_rate.bootstrap_ci(d[r], B, confidence, seed, strata)
        assert iv["value"] == pytest.approx(ref["value"], abs=1e-12)
        assert iv["ci_low"] == pytest.approx(ref["ci_low"], abs=1e-12)
        assert iv["ci_high"] == pytest.approx(ref["ci_high"], abs=1e-12)
        assert iv["value"] == pytest.approx(d[r].sum() / d.shape[1], abs=1e-15)
        assert set(iv) == {"value", "ci_low", "ci_high"}
        assert all(isinstance(v, float) for v in iv.values())


@pytest.mark.parametrize("strata", [None, [2, 0, 2, 1, 1, 0, 1, 2, 0, 2, 1, 2]])
def test_intervals_match_a_hand_drawn_bootstrap(strata):
    d = _diffs(r=2, seed=3)
    seed, confidence = 5, 0.9
    out = decision.replicated_intervals(d, strata, num_resamples=B, confidence=confidence,
                                        seed=seed)
    means = _reference_means(d, strata, B, seed)
    for r, iv in enumerate(out["replicates"]):
        lo, hi = _quantiles(means[:, r], confidence)
        assert iv["ci_low"] == pytest.approx(lo, abs=1e-12)
        assert iv["ci_high"] == pytest.approx(hi, abs=1e-12)
    # pooled: the documented two-level bootstrap, replicates drawn by default_rng(seed + 1)
    pick = np.random.default_rng(seed + 1).integers(d.shape[0], size=(B, d.shape[0]))
    pooled = np.array([means[b, pick[b]].mean() for b in range(B)])
    lo, hi = _quantiles(pooled, confidence)
    assert out["pooled"]["ci_low"] == pytest.approx(lo, abs=1e-12)
    assert out["pooled"]["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert out["pooled"]["value"] == pytest.approx(d.mean(), abs=1e-15)


def test_pooled_value_is_the_mean_over_replicates():
    d = _diffs(r=4, p=9, seed=11)
    out = decision.replicated_intervals(d, num_resamples=B)
    rep_means = [iv["value"] for iv in out["replicates"]]
    assert out["pooled"]["value"] == pytest.approx(np.mean(rep_means), abs=1e-14)


def test_pooled_interval_includes_replicate_to_replicate_variation():
    shifts = [-1.0, -0.5, 0.0, 0.5, 1.0]
    d = _diffs(r=5, p=20, seed=2, shift=shifts)
    out = decision.replicated_intervals(d, num_resamples=B)
    width = lambda iv: iv["ci_high"] - iv["ci_low"]  # noqa: E731
    pooled = out["pooled"]
    rep_means = np.array([iv["value"] for iv in out["replicates"]])
    for iv in out["replicates"]:
        # per-replicate widths are set by the prompt noise (sd 0.1 / sqrt(20)): about 0.09
        assert width(iv) < 0.2
        assert width(pooled) > 3 * width(iv)
    # the mean of 5 replicates drawn with replacement from {-1, -0.5, 0, 0.5, 1} (+ noise) has
    # sd sqrt(0.5 / 5) ~ 0.32: the pooled interval covers the middle of the replicate means'
    # range but not its extremes (five draws of the lowest have probability 5**-5)
    assert rep_means.min() < pooled["ci_low"] < pooled["value"] < pooled["ci_high"] < \
        rep_means.max()
    assert pooled["ci_low"] < -0.3 and pooled["ci_high"] > 0.3


def test_identical_replicates_pool_to_the_per_replicate_interval():
    row = _diffs(r=1, p=15, seed=4)[0]
    d = np.stack([row, row, row])
    out = decision.replicated_intervals(d, [0, 1, 2] * 5, num_resamples=B, seed=3)
    first = out["replicates"][0]
    for iv in out["replicates"]:
        assert iv == first
    # every replicate choice gives the same resample mean: pooled samples == per-replicate ones
    for key in ("value", "ci_low", "ci_high"):
        assert out["pooled"][key] == pytest.approx(first[key], abs=1e-12)


def test_constant_differences_give_a_degenerate_interval():
    d = np.full((2, 7), 0.25)
    out = decision.replicated_intervals(d, num_resamples=50)
    for iv in out["replicates"] + [out["pooled"]]:
        assert iv["value"] == pytest.approx(0.25)
        assert iv["ci_low"] == pytest.approx(0.25)
        assert iv["ci_high"] == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 4)), np.zeros((3, 0)),
                                 np.zeros((2, 3, 4))])
def test_replicated_intervals_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="shape"):
        decision.replicated_intervals(bad, num_resamples=10)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_replicated_intervals_rejects_non_finite(value):
    d = np.zeros((2, 4))
    d[1, 2] = value
    with pytest.raises(ValueError, match="non-finite"):
        decision.replicated_intervals(d, num_resamples=10)


def test_replicated_intervals_rejects_wrong_strata_length():
    with pytest.raises(ValueError, match="strata"):
        decision.replicated_intervals(np.zeros((2, 4)), [0, 1, 0], num_resamples=10)


# --------------------------------------------------------------------------- the rule


def _iv(lo, hi):
    return {"value": 0.5 * (lo + hi), "ci_low": lo, "ci_high": hi}


@pytest.mark.parametrize("lo,hi,delta,expected", [
    (0.01, 0.3, 0.05, "yes"),          # above 0
    (1e-9, 0.01, 0.05, "yes"),         # above 0, even inside +-delta: above 0 wins
    (-0.3, -0.01, 0.05, "no"),         # below 0
    (-0.04, 0.04, 0.05, "no"),         # inside (-delta, delta)
    (-0.1, 0.04, 0.05, "inconclusive"),  # straddles 0, wider than delta below
    (-0.04, 0.1, 0.05, "inconclusive"),  # straddles 0, wider than delta above
    (-0.05, 0.04, 0.05, "inconclusive"),  # the open interval: touching -delta is not inside
    (0.0, 0.3, 0.05, "inconclusive"),  # touching 0 is not above 0
    (-0.3, 0.0, 0.5, "no"),            # touching 0 from below but inside +-0.5
    (-0.3, 0.0, 0.0, "inconclusive"),  # delta 0: nothing is inside
])
def test_one_replicate_every_branch(lo, hi, delta, expected):
    assert decision.decide([_iv(lo, hi)], delta)[0] == expected


def test_decide_all_above_zero_is_yes():
    verdict, reason = decision.decide([_iv(0.01, 0.2), _iv(0.1, 0.3), _iv(0.2, 0.25)], 0.05)
    assert verdict == decision.YES == "yes"
    assert "3" in reason


def test_decide_all_below_zero_is_no():
    verdict, reason = decision.decide([_iv(-0.2, -0.01), _iv(-0.3, -0.1)], 0.05)
    assert verdict == decision.NO == "no"
    assert "(2)" in reason and "(0)" in reason  # 2 below 0, 0 inside +-delta


def test_decide_all_inside_delta_is_no():
    verdict, reason = decision.decide([_iv(-0.01, 0.02), _iv(-0.03, 0.01)], 0.05)
    assert verdict == "no"
    assert "(0)" in reason and "(2)" in reason


def test_decide_below_and_inside_mixed_is_no():
    assert decision.decide([_iv(-0.2, -0.1), _iv(-0.01, 0.01)], 0.05)[0] == "no"


def test_decide_mixed_yes_and_no_is_inconclusive():
    verdict, reason = decision.decide([_iv(0.01, 0.2), _iv(-0.2, -0.01)], 0.05)
    assert verdict == decision.INCONCLUSIVE == "inconclusive"
    assert "1 above 0" in reason and "1 below 0" in reason


def test_decide_all_inside_delta_some_above_zero_is_no():
    # An effect on some replicates but below practical size on all: no effect of practical size.
    verdict, reason = decision.decide([_iv(0.001, 0.02), _iv(-0.002, 0.02), _iv(0.003, 0.04)],
                                      0.05)
    assert verdict == "no"
    assert "2 of them also above 0" in reason


def test_decide_above_zero_everywhere_wins_over_inside_delta():
    assert decision.decide([_iv(0.001, 0.02), _iv(0.002, 0.01)], 0.05)[0] == "yes"


def test_decide_inside_delta_and_above_delta_is_inconclusive():
    # One replicate shows a practically sized effect, another none: undecided.
    verdict, reason = decision.decide([_iv(0.06, 0.09), _iv(-0.01, 0.02)], 0.05)
    assert verdict == "inconclusive"
    assert "1 above 0" in reason and "1 inside" in reason and "0 neither" in reason


def test_decide_yes_and_undecided_is_inconclusive():
    assert decision.decide([_iv(0.01, 0.2), _iv(-0.1, 0.2)], 0.05)[0] == "inconclusive"


def test_decide_wide_straddling_intervals_are_inconclusive():
    verdict, reason = decision.decide([_iv(-0.1, 0.1), _iv(-0.2, 0.3)], 0.05)
    assert verdict == "inconclusive"
    assert "2 neither" in reason


def test_decide_with_no_replicates_is_inconclusive():
    assert decision.decide([], 0.05)[0] == "inconclusive"


def test_decide_rejects_negative_delta():
    with pytest.raises(ValueError, match="delta"):
        decision.decide([_iv(0.1, 0.2)], -0.01)


def test_decide_on_replicated_intervals_end_to_end():
    rng = np.random.default_rng(0)
    strong = 0.3 + rng.normal(0, 0.05, size=(3, 30))
    assert decision.decide(
        decision.replicated_intervals(strong, num_resamples=B)["replicates"], 0.05)[0] == "yes"
    assert decision.decide(
        decision.replicated_intervals(-strong, num_resamples=B)["replicates"], 0.05)[0] == "no"
    tiny = rng.normal(0, 0.01, size=(3, 30))
    assert decision.decide(
        decision.replicated_intervals(tiny, num_resamples=B)["replicates"], 0.05)[0] == "no"


@pytest.mark.parametrize("verdicts,expected", [
    (["yes"], "yes"),
    (["yes", "yes", "yes"], "yes"),
    (["no"], "no"),
    (["yes", "no"], "no"),
    (["inconclusive", "no", "yes"], "no"),
    (["yes", "inconclusive"], "inconclusive"),
    (["inconclusive"], "inconclusive"),
    ([], "inconclusive"),
])
def test_combine(verdicts, expected):
    assert decision.combine(verdicts) == expected


def test_half_widths():
    assert decision.half_widths([_iv(-0.1, 0.3), _iv(0.2, 0.2)]) == pytest.approx([0.2, 0.0])
