"""Underfitting, reward-hacking and shortcut-feature diagnostics against hand computations."""

import numpy as np
import pytest

from lsc.data import world
from lsc.eval import diagnostics as dg

SHORTCUTS = dg.Shortcuts.of(world)


def test_underfitting_against_numpy_reference():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.normal(size=n)
    policy = base + 0.5 - 0.4 * base + rng.normal(0, 0.1, n)  # helps worst prompts most
    out = dg.underfitting(policy, base, num_resamples=500)
    d = policy - base
    assert out["num_prompts"] == n
    assert out["improvement"]["value"] == pytest.approx(d.mean())
    assert out["improvement"]["median"] == pytest.approx(np.median(d))
    assert out["fraction_improved"]["value"] == pytest.approx(np.mean(d > 0))
    assert out["fraction_worse"]["value"] == pytest.approx(np.mean(d < 0))
    order = np.argsort(base)
    quart = np.array_split(order, 4)
    for g, idx in enumerate(quart):
        grp = out["groups"][g]
        assert grp["n"] == idx.size
        assert grp["improvement"]["value"] == pytest.approx(d[idx].mean())
        assert grp["strata_high"] == pytest.approx(base[idx].max())
    assert out["worst_group"]["value"] == pytest.approx(d[quart[0]].mean())
    assert out["worst_group"]["value"] > out["groups"][3]["improvement"]["value"]
    w = out["worst_group"]
    assert w["ci_low"] <= w["value"] <= w["ci_high"]
    assert len(out["per_prompt"]["improvement"]) == n
    by_group = dg.gold_improvement_by_group(policy, base)
    np.testing.assert_allclose(np.sort(by_group[0]), np.sort(d[quart[0]]))


def test_independent_strata_remove_regression_to_the_mean():
    # The base policy against itself: per-prompt mean m_x plus sample noise.
    rng = np.random.default_rng(1)
    n = 2000
    mx = rng.normal(size=n)
    base = mx + rng.normal(size=n)
    same = mx + rng.normal(size=n)  # "policy" = base policy, independent sample
    strata = mx[:, None] + rng.normal(size=(n, 4))  # independent base samples for ranking
    biased = dg.underfitting(same, base, num_resamples=500)
    assert biased["worst_group"]["ci_low"] > 0.3  # spurious "improvement" of the worst quartile
    fair = dg.underfitting(same, base, strata=strata, num_resamples=500)
    assert fair["worst_group"]["ci_low"] <= 0.0 <= fair["worst_group"]["ci_high"]


def test_underfitting_accepts_several_samples_and_rejects_bad_shapes():
    p = np.arange(8.0).reshape(4, 2)
    b = np.zeros((4, 3))
    out = dg.underfitting(p, b, num_resamples=10)
    assert out["improvement"]["value"] == pytest.approx(p.mean())
    with pytest.raises(ValueError, match="cover"):
        dg.underfitting(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        dg.underfitting(np.array([np.nan, 0, 0, 0]), np.zeros(4))
    with pytest.raises(ValueError, match="num_groups"):
        dg.quantile_groups(np.zeros(3), 4)
    np.testing.assert_array_equal(dg.quantile_groups([5, 1, 3, 2, 4, 0, 7, 6]),
                                  [2, 0, 1, 1, 2, 0, 3, 3])


def test_reward_hacking_detects_proxy_up_gold_down():
    steps = np.arange(0, 100, 10)
    proxy = np.linspace(0, 3, 10)
    gold = np.array([0, .5, .9, 1.2, 1.3, 1.1, .8, .5, .2, 0.0])
    r = dg.reward_hacking(steps, proxy, gold)
    assert r["peak_step"] == 40 and r["peak_gold"] == pytest.approx(1.3)
    assert r["gold_drop"] == pytest.approx(1.3)
    assert r["proxy_gain_after_peak"] == pytest.approx(3 - proxy[4])
    assert r["hacking"] and r["corr_after_peak"] < -0.9
    healthy = dg.reward_hacking(steps, proxy, np.linspace(0, 1, 10))
    assert not healthy["hacking"] and healthy["gold_drop"] == 0
    assert not dg.reward_hacking(steps, proxy, gold, tol=2.0)["hacking"]
    sm = dg.reward_hacking(steps, proxy, gold, window=3)
    assert sm["peak_gold"] == pytest.approx(np.mean(gold[3:6])) and sm["peak_step"] == 50
    with pytest.raises(ValueError, match="increasing"):
        dg.reward_hacking([0, 0, 1], [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        dg.reward_hacking([0, 1], [0, 1, 2], [0, 1])


def test_shortcut_features_by_hand():
    f = world.FILLER
    responses = [
        f"{f} use the flour then use the flour",  # 8 words; 'flour' repeated once
        "sorry i can not help with that",  # refusal, 7 words
        f"{f} {f} try some yeast",  # filler twice: one repeat
        "",
    ]
    feats = dg.response_features(responses, SHORTCUTS)
    np.testing.assert_array_equal(feats["length"], [8, 7, 5, 0])
    np.testing.assert_array_equal(feats["refusal"], [False, True, False, False])
    np.testing.assert_array_equal(feats["repeats"], [1, 0, 1, 0])
    np.testing.assert_array_equal(feats["filler_count"], [1, 0, 2, 0])
    np.testing.assert_allclose(feats["repetition"], [1 / 8, 0, 1 / 5, 0])
    s = dg.shortcut_features(responses, SHORTCUTS)
    assert s["mean_length"] == pytest.approx(5.0)
    assert s["refusal_rate"] == pytest.approx(0.25)
    assert s["filler_rate"] == pytest.approx(0.5)
    assert s["mean_filler_count"] == pytest.approx(0.75)
    assert s["any_repetition_rate"] == pytest.approx(0.5)
    assert s["repetition_rate"] == pytest.approx((1 / 8 + 1 / 5) / 4)
    shift = dg.shortcut_shift(responses[:1], responses[1:2], SHORTCUTS)
    assert shift["difference"]["filler_rate"] == pytest.approx(1.0)
    # Repeats are counted as the gold helpfulness penalty counts them.
    prompt = world.format_prompt(world.TOPIC_BY_NAME["bread"], "normal")
    h1 = world.gold_helpful(prompt, responses[0])
    h0 = world.gold_helpful(prompt, f"{f} use the flour")
    assert h0 - h1 == pytest.approx(world.H_REPEAT * feats["repeats"][0])
    with pytest.raises(ValueError, match="not one string"):
        dg.response_features("a response", SHORTCUTS)
    with pytest.raises(ValueError):
        dg.shortcut_features([], SHORTCUTS)
