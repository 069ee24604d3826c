"""Claim checks (pure functions): matching, difference intervals, the verdict rule and the
reproduction's claims on simulated entries."""

import math

import pytest

from lsc.eval import claims
from eval_fixtures import CLAIMS, entries, iv


def _by_key(results):
    return {r.claim.key: r for r in results}


def test_claim_verdicts_on_a_simulated_reproduction():
    res = _by_key(claims.check_claims(entries(), CLAIMS))
    assert set(res) == {c.key for c in CLAIMS}
    assert res["base_is_chance"].verdict == claims.YES
    assert res["bok_kl_bound"].verdict == claims.YES
    assert res["lsc_vs_raw"].verdict == claims.YES
    assert res["underfitting"].verdict == claims.YES
    assert res["reward_hacking"].verdict == claims.YES
    assert res["and_beats_sum"].verdict == claims.YES
    assert res["or_beats_sum"].verdict == claims.NO  # sigma_OR is worse than sum on OR here
    assert res["reference_matters"].verdict == claims.YES
    assert res["and_or_differ"].verdict == claims.NO  # sigma_OR does not win more on OR
    assert res["lsc_sum_vs_sum"].verdict == claims.INCONCLUSIVE  # no such runs
    assert "no runs" in res["lsc_sum_vs_sum"].reason
    # Best-of-k is matched at equal k: one row per k for each comparison.
    assert [r.at for r in res["and_beats_sum"].rows] == ["k=4", "k=16"]
    # Predicted-median rows are shown but do not decide.
    assert any(not r.decisive for r in res["reference_matters"].rows)


def test_rlhf_matching_interpolates_in_kl():
    def e(name, kl_mean, v):
        return {"name": name, "kl": {"mean": kl_mean}, "win_rate": {"helpful": iv(v, 0.1)}}

    a = [e("a1", 0.5, 0.6), e("a2", 1.0, 0.7), e("a3", 2.0, 0.8)]
    b = [e("b1", 0.25, 0.5), e("b2", 1.5, 0.75)]
    pts = claims.matched_points(a, b, "win_rate.helpful", "rlhf")
    assert [p[0] for p in pts] == ["KL=0.5", "KL=1", "KL=1.5"]
    _, ia, ib = pts[1]
    assert ia["value"] == pytest.approx(0.7)
    assert ib["value"] == pytest.approx(0.5 + 0.25 * (1.0 - 0.25) / 1.25)
    assert ib["ci_high"] - ib["value"] == pytest.approx(0.1)
    assert pts[2][1]["value"] == pytest.approx(0.75)  # a interpolated at KL = 1.5
    assert claims.matched_points(a, [e("b", 5.0, 0.5)], "win_rate.helpful", "rlhf") == []


def test_difference_interval_and_verdict_rule():
    d = claims.difference_interval(iv(0.6, 0.1), iv(0.5, 0.05))
    assert d["value"] == pytest.approx(0.1)
    assert d["ci_high"] - d["value"] == pytest.approx(math.hypot(0.1, 0.05))
    up, down, flat = iv(0.1, 0.05), iv(-0.1, 0.05), iv(0.01, 0.05)
    assert claims.comparison_verdict([up, flat])[0] == claims.YES
    assert claims.comparison_verdict([down, flat])[0] == claims.NO
    assert claims.comparison_verdict([up, down])[0] == claims.INCONCLUSIVE
    assert claims.comparison_verdict([flat])[0] == claims.INCONCLUSIVE
    assert claims.comparison_verdict([])[0] == claims.INCONCLUSIVE
    assert claims.combine_verdicts([claims.YES, claims.YES]) == claims.YES
    assert claims.combine_verdicts([claims.YES, claims.NO]) == claims.NO
    assert claims.combine_verdicts([claims.YES, claims.INCONCLUSIVE]) == claims.INCONCLUSIVE
    assert claims.combine_verdicts([]) == claims.INCONCLUSIVE


def test_base_check_fails_when_ci_misses_half():
    es = entries()
    es[0]["win_rate"]["helpful"] = iv(0.6, 0.02)
    r = _by_key(claims.check_claims(es, CLAIMS))["base_is_chance"]
    assert r.verdict == claims.NO and "helpful" in r.reason
