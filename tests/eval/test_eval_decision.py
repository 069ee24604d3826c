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
    assert decision.decide_per_replicate([_iv(lo, hi)], delta)[0] == expected


def test_decide_all_above_zero_is_yes():
    verdict, reason = decision.decide_per_replicate([_iv(0.01, 0.2), _iv(0.1, 0.3), _iv(0.2, 0.25)], 0.05)
    assert verdict == decision.YES == "yes"
    assert "3" in reason


def test_decide_all_below_zero_is_no():
    verdict, reason = decision.decide_per_replicate([_iv(-0.2, -0.01), _iv(-0.3, -0.1)], 0.05)
    assert verdict == decision.NO == "no"
    assert "(2)" in reason and "(0)" in reason  # 2 below 0, 0 inside +-delta


def test_decide_all_inside_delta_is_no():
    verdict, reason = decision.decide_per_replicate([_iv(-0.01, 0.02), _iv(-0.03, 0.01)], 0.05)
    assert verdict == "no"
    assert "(0)" in reason and "(2)" in reason


def test_decide_below_and_inside_mixed_is_no():
    assert decision.decide_per_replicate([_iv(-0.2, -0.1), _iv(-0.01, 0.01)], 0.05)[0] == "no"


def test_decide_mixed_yes_and_no_is_inconclusive():
    verdict, reason = decision.decide_per_replicate([_iv(0.01, 0.2), _iv(-0.2, -0.01)], 0.05)
    assert verdict == decision.INCONCLUSIVE == "inconclusive"
    assert "1 above 0" in reason and "1 below 0" in reason


def test_decide_all_inside_delta_some_above_zero_is_no():
    # An effect on some replicates but below practical size on all: no effect of practical size.
    verdict, reason = decision.decide_per_replicate([_iv(0.001, 0.02), _iv(-0.002, 0.02), _iv(0.003, 0.04)],
                                      0.05)
    assert verdict == "no"
    assert "2 of them also above 0" in reason


def test_decide_above_zero_everywhere_wins_over_inside_delta():
    assert decision.decide_per_replicate([_iv(0.001, 0.02), _iv(0.002, 0.01)], 0.05)[0] == "yes"


def test_decide_inside_delta_and_above_delta_is_inconclusive():
    # One replicate shows a practically sized effect, another none: undecided.
    verdict, reason = decision.decide_per_replicate([_iv(0.06, 0.09), _iv(-0.01, 0.02)], 0.05)
    assert verdict == "inconclusive"
    assert "1 above 0" in reason and "1 inside" in reason and "0 neither" in reason


def test_decide_yes_and_undecided_is_inconclusive():
    assert decision.decide_per_replicate([_iv(0.01, 0.2), _iv(-0.1, 0.2)], 0.05)[0] == "inconclusive"


def test_decide_wide_straddling_intervals_are_inconclusive():
    verdict, reason = decision.decide_per_replicate([_iv(-0.1, 0.1), _iv(-0.2, 0.3)], 0.05)
    assert verdict == "inconclusive"
    assert "2 neither" in reason


def test_decide_with_no_replicates_is_inconclusive():
    assert decision.decide_per_replicate([], 0.05)[0] == "inconclusive"


def test_decide_rejects_negative_delta():
    with pytest.raises(ValueError, match="delta"):
        decision.decide_per_replicate([_iv(0.1, 0.2)], -0.01)


def test_decide_on_replicated_intervals_end_to_end():
    rng = np.random.default_rng(0)
    strong = 0.3 + rng.normal(0, 0.05, size=(3, 30))
    assert decision.decide_per_replicate(
        decision.replicated_intervals(strong, num_resamples=B)["replicates"], 0.05)[0] == "yes"
    assert decision.decide_per_replicate(
        decision.replicated_intervals(-strong, num_resamples=B)["replicates"], 0.05)[0] == "no"
    tiny = rng.normal(0, 0.01, size=(3, 30))
    assert decision.decide_per_replicate(
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
    assert decision.combine_per_replicate(verdicts) == expected



# --------------------------------------------------------------------------- the rule's outcomes

D = 0.01


@pytest.mark.parametrize("lo,hi,expected", [
    (0.002, 0.03, decision.REPRODUCES),
    (0.02, 0.05, decision.REPRODUCES),
    (0.002, 0.008, decision.BELOW_PRACTICAL_SIZE),
    (0.002, D, decision.BELOW_PRACTICAL_SIZE),          # u = delta is still below practical size
    (1e-12, D + 1e-12, decision.REPRODUCES),            # just above delta
    (0.0, 0.008, decision.NO_EFFECT),                   # l = 0 is not above 0
    (-0.004, 0.006, decision.NO_EFFECT),
    (-D, D, decision.NO_EFFECT),                        # both boundaries included
    (-D - 1e-12, 0.005, decision.INCONCLUSIVE),         # below -delta
    (-0.005, D + 1e-12, decision.INCONCLUSIVE),         # above delta while straddling 0
    (-0.02, 0.03, decision.INCONCLUSIVE),
    (-0.008, -0.001, decision.OPPOSITE_BELOW_PRACTICAL_SIZE),
    (-D, -0.001, decision.OPPOSITE_BELOW_PRACTICAL_SIZE),  # l = -delta is below practical size
    (-0.03, -0.001, decision.OPPOSITE),
    (-0.008, 0.0, decision.NO_EFFECT),                  # u = 0 is not below 0
])
def test_outcome_every_branch_and_boundary(lo, hi, expected):
    assert decision.outcome(lo, hi, D) == expected


def test_outcome_rejects_bad_input():
    with pytest.raises(ValueError, match="delta"):
        decision.outcome(0.0, 0.1, -0.01)
    with pytest.raises(ValueError, match="ci_low <= ci_high"):
        decision.outcome(0.1, 0.0, 0.01)


@pytest.mark.parametrize("outcome,expected", [
    (decision.REPRODUCES, (decision.REPRODUCES, False)),
    (decision.BELOW_PRACTICAL_SIZE, (decision.NO_EFFECT, True)),
    (decision.NO_EFFECT, (decision.NO_EFFECT, False)),
    (decision.OPPOSITE, (decision.OPPOSITE, False)),
    (decision.OPPOSITE_BELOW_PRACTICAL_SIZE, (decision.OPPOSITE, False)),
    (decision.INCONCLUSIVE, (decision.INCONCLUSIVE, False)),
])
def test_headline_merges_the_small_outcomes(outcome, expected):
    assert decision.headline(outcome) == expected
    assert decision.headline(outcome)[0] in decision.HEADLINES


@pytest.mark.parametrize("outcomes,expected", [
    ([decision.REPRODUCES, decision.REPRODUCES], decision.REPRODUCES),
    ([decision.REPRODUCES, decision.INCONCLUSIVE], decision.INCONCLUSIVE),
    ([decision.REPRODUCES, decision.BELOW_PRACTICAL_SIZE], decision.BELOW_PRACTICAL_SIZE),
    ([decision.INCONCLUSIVE, decision.NO_EFFECT], decision.NO_EFFECT),
    ([decision.REPRODUCES, decision.OPPOSITE], decision.OPPOSITE),
    ([decision.NO_EFFECT, decision.OPPOSITE_BELOW_PRACTICAL_SIZE],
     decision.OPPOSITE_BELOW_PRACTICAL_SIZE),
    ([], decision.INCONCLUSIVE),
])
def test_combine_takes_the_weakest(outcomes, expected):
    assert decision.combine(outcomes) == expected


# --------------------------------------------------------------------------- across replicates


def test_across_replicates_single_replicate_is_the_t_interval_over_prompts():
    from scipy import stats
    d = _diffs(r=1, p=20, seed=4)
    out = decision.across_replicates(d, 0.9)
    se = d[0].std(ddof=1) / np.sqrt(20)
    q = stats.t.ppf(0.95, 19)
    assert out["value"] == pytest.approx(d.mean())
    assert out["se"] == pytest.approx(se) and out["df"] == pytest.approx(19)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((d.mean() - q * se, d.mean() + q * se))
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(d.mean()) / se, 19))


def test_across_replicates_without_shared_prompt_effect_is_the_t_interval_over_means():
    # Each replicate's prompts are centred: the prompt means are all equal, so MS_P = 0 and only
    # the replicate means vary: the textbook t-interval over R means with R - 1 df.
    from scipy import stats
    rng = np.random.default_rng(1)
    e = rng.normal(0, 0.05, size=(5, 8))
    e -= e.mean(axis=0, keepdims=True)
    d = np.array([0.01, 0.03, -0.02, 0.05, 0.02])[:, None] + e
    m = d.mean(axis=1)
    se = m.std(ddof=1) / np.sqrt(5)
    q = stats.t.ppf(0.975, 4)
    out = decision.across_replicates(d)
    assert out["df"] == pytest.approx(4)
    assert out["se"] == pytest.approx(se)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((m.mean() - q * se, m.mean() + q * se))
    assert out["sd_between"] == pytest.approx(m.std(ddof=1))


def test_across_replicates_variance_is_the_crossed_anova_estimate():
    # Against a long-hand two-way ANOVA: Var = (MS_R + MS_P - MS_E) / (R P).
    d = _diffs(r=4, p=9, seed=5) + np.linspace(-0.3, 0.3, 9)[None, :]
    r, p = d.shape
    g = d.mean()
    ss_r = p * sum((d[i].mean() - g) ** 2 for i in range(r))
    ss_p = r * sum((d[:, j].mean() - g) ** 2 for j in range(p))
    ss_e = ((d - g) ** 2).sum() - ss_r - ss_p
    ms_r, ms_p, ms_e = ss_r / (r - 1), ss_p / (p - 1), ss_e / ((r - 1) * (p - 1))
    assert ms_p > ms_e
    out = decision.across_replicates(d)
    assert out["se"] ** 2 == pytest.approx((ms_r + ms_p - ms_e) / (r * p))
    df = (ms_r + ms_p - ms_e) ** 2 / (ms_r ** 2 / (r - 1) + ms_p ** 2 / (p - 1)
                                      + ms_e ** 2 / ((r - 1) * (p - 1)))
    assert out["df"] == pytest.approx(df)


def _coverage(sd_rep, sd_prompt, sd_noise, mu=0.004, r=6, p=200, sims=1500, seed=0):
    """Fraction of simulated experiments ``d = mu + a_r + b_p + e_rp`` whose interval covers
    ``mu``: the across-replicates interval, and each replicate's own bootstrap interval (the
    previous rule's; on a subset)."""
    rng = np.random.default_rng(seed)
    across, per_rep = [], []
    for i in range(sims):
        d = (mu + rng.normal(0, sd_rep, (r, 1)) + rng.normal(0, sd_prompt, (1, p))
             + rng.normal(0, sd_noise, (r, p)))
        a = decision.across_replicates(d)
        across.append(a["ci_low"] <= mu <= a["ci_high"])
        if i < 150:
            iv = decision.replicated_intervals(d, num_resamples=200, seed=i)
            per_rep.extend(x["ci_low"] <= mu <= x["ci_high"] for x in iv["replicates"])
    return np.mean(across), np.mean(per_rep)


def test_coverage_when_the_replicates_dominate():
    # Between-replicate SD 0.003 against a replicate's prompt standard error of 0.0017: the
    # regime of the main job. The across-replicates interval covers mu about 95% of the time; a
    # replicate's own interval (what the previous rule read) covers it about 60% of the time.
    across, per_rep = _coverage(0.003, 0.001, 0.02)
    assert 0.93 <= across <= 0.97
    assert per_rep < 0.7


def test_coverage_when_the_shared_prompts_dominate():
    # All replicates share the prompts: the t-interval over replicate means alone would miss
    # the shared prompt sampling (it covers about 40% here); the crossed interval keeps it.
    across, _ = _coverage(0.0, 0.02, 0.01, sims=1000)
    assert 0.93 <= across <= 0.97


# --------------------------------------------------------------------------- Holm


def test_holm_p_values_and_levels_by_hand():
    from scipy import stats
    # Three comparisons with p = 0.01, 0.04, 0.03 (alpha 0.05): sorted 0.01 (x3 = 0.03, reject
    # at 0.05/3), 0.03 (x2 = 0.06, not rejected at 0.025), 0.04 (x1 = 0.04 -> max 0.06).
    df = 7.0
    est = []
    for p in (0.01, 0.04, 0.03):
        se = 0.002
        est.append({"value": stats.t.isf(p / 2, df) * se, "se": se, "df": df, "p_value": p})
    out = decision.holm(est, 0.95)
    assert [o["p_value"] for o in out] == pytest.approx([0.03, 0.06, 0.06])
    assert [o["confidence"] for o in out] == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2,
                                                            1 - 0.05 / 2])
    for e, o in zip(est, out):
        q = stats.t.ppf(0.5 + o["confidence"] / 2, df)
        assert (o["ci_low"], o["ci_high"]) == pytest.approx((e["value"] - q * e["se"],
                                                             e["value"] + q * e["se"]))
    # Holm's intervals are consistent with its test: 0 is outside exactly the rejected ones.
    assert out[0]["ci_low"] > 0 and out[1]["ci_low"] <= 0 and out[2]["ci_low"] <= 0
    assert decision.holm([], 0.95) == []


def test_adjust_family_sets_outcomes_from_the_holm_interval():
    rng = np.random.default_rng(2)
    strong = 0.05 + rng.normal(0, 0.01, size=(6, 40))
    tiny = 0.003 + rng.normal(0, 0.002, size=(6, 40)) + rng.normal(0, 0.001, size=(6, 1))
    rows = [decision.compare(x, delta=D, num_resamples=B) for x in (strong, tiny)]
    decision.adjust_family(rows, D)
    assert rows[0]["outcome"] == decision.REPRODUCES
    assert rows[1]["holm"]["ci_high"] - rows[1]["holm"]["ci_low"] >= (
        rows[1]["across"]["ci_high"] - rows[1]["across"]["ci_low"])
    assert rows[1]["outcome"] == decision.outcome(rows[1]["holm"]["ci_low"],
                                                  rows[1]["holm"]["ci_high"], D)
    assert rows[0]["replicate_values"] == pytest.approx(strong.mean(axis=1))
    assert rows[0]["previous_rule"]["verdict"] == "yes"


# --------------------------------------------------------------------------- across seeds


def test_across_seeds_is_the_t_interval_over_seeds():
    from scipy import stats
    v = np.array([0.012, -0.004, 0.020, 0.007, 0.001])
    out = decision.across_seeds(v, 0.9)
    mean, sd = v.mean(), v.std(ddof=1)
    se = sd / np.sqrt(5)
    lo, hi = stats.t.interval(0.9, 4, loc=mean, scale=se)
    assert out["value"] == pytest.approx(mean) and out["se"] == pytest.approx(se)
    assert out["df"] == 4.0 and out["sd_between"] == pytest.approx(sd)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi))
    assert out["p_value"] == pytest.approx(stats.ttest_1samp(v, 0.0).pvalue)
    # Closed form: t_{0.95, 4} = 2.131847 (tables).
    assert out["ci_high"] - mean == pytest.approx(2.131847 * se, rel=1e-6)
    assert set(out) == set(decision.across_replicates(v[:, None]))
    # The family's adjustment and the rule take it unchanged.
    rows = [{"across": out}, {"across": decision.across_seeds(v + 0.05)}]
    decision.adjust_family(rows, D)
    assert rows[1]["outcome"] == decision.REPRODUCES
    assert rows[0]["holm"]["ci_low"] <= out["ci_low"]


@pytest.mark.parametrize("bad,match", [([0.1], "S >= 2"), ([], "S >= 2"),
                                       ([[0.1, 0.2]], "shape"), ([0.1, np.nan], "non-finite"),
                                       ([0.1, np.inf], "non-finite")])
def test_across_seeds_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        decision.across_seeds(bad)


@pytest.mark.parametrize("s", [10, 20])
def test_across_seeds_coverage(s):
    # Seed effects (SD 0.003) plus per-prompt noise averaged within a seed (SD 0.02 over 100
    # prompts: 0.002 per seed); each seed's value is its mean.
    rng = np.random.default_rng(s)
    sims, p, mu = 2000, 100, 0.004
    values = (mu + rng.normal(0.0, 0.003, (sims, s))
              + rng.normal(0.0, 0.02, (sims, s, p)).mean(axis=2))
    covered = [(a := decision.across_seeds(x))["ci_low"] <= mu <= a["ci_high"] for x in values]
    assert 0.93 <= np.mean(covered) <= 0.97
