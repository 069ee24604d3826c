"""report.md: schema validation, claim checks (pure functions) and the rendered tables."""

import json
import math

import pytest

from lsc.eval import report
from eval_fixtures import entries, iv


def _by_key(results):
    return {r.claim.key: r for r in results}


def test_claim_verdicts_on_a_simulated_reproduction():
    res = _by_key(report.check_claims(entries()))
    assert set(res) == {c.key for c in report.DEFAULT_CLAIMS}
    assert res["base_is_chance"].verdict == report.YES
    assert res["bok_kl_bound"].verdict == report.YES
    assert res["lsc_vs_raw"].verdict == report.YES
    assert res["underfitting"].verdict == report.YES
    assert res["reward_hacking"].verdict == report.YES
    assert res["and_beats_sum"].verdict == report.YES
    assert res["or_beats_sum"].verdict == report.NO  # sigma_OR is worse than sum on OR here
    assert res["reference_matters"].verdict == report.YES
    assert res["and_or_differ"].verdict == report.NO  # sigma_OR does not win more on OR
    assert res["lsc_sum_vs_sum"].verdict == report.INCONCLUSIVE  # no such runs
    assert "no runs" in res["lsc_sum_vs_sum"].reason
    # Best-of-k is matched at equal k: one row per k for each comparison.
    assert [r.at for r in res["and_beats_sum"].rows] == ["k=4", "k=16"]
    # Predicted-median rows are shown but do not decide.
    assert any(not r.decisive for r in res["reference_matters"].rows)


def test_report_markdown_states_non_reproducing_claims_plainly(tmp_path):
    path = report.write_report(entries(), str(tmp_path / "out" / "report.md"),
                               preamble="Simulated entries.")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Reproduction report")
    assert text.count("## Claim ") == len(report.DEFAULT_CLAIMS)
    summary = text.split("## Claim 1")[0]
    or_row = [l for l in summary.splitlines() if "beats the raw sum on the OR" in l]
    assert len(or_row) == 1 and "**NO** (does not reproduce)" in or_row[0]
    assert "| comparison (A vs B) | metric | at | A | B | A - B | outcome |" in text
    assert "sigma_or_oracle_median vs sum" in text and "A worse" in text
    assert "lsc/lsc_sum vs raw/sum" in text and "A loses less gold" in text
    assert "_No runs to compare._" in text  # the missing lsc_sum vs sum runs
    assert "## All runs" in text and "rlhf/lsc/g0.03" in text


def test_rlhf_matching_interpolates_in_kl():
    def e(name, kl_mean, v):
        return {"name": name, "kl": {"mean": kl_mean}, "win_rate": {"helpful": iv(v, 0.1)}}

    a = [e("a1", 0.5, 0.6), e("a2", 1.0, 0.7), e("a3", 2.0, 0.8)]
    b = [e("b1", 0.25, 0.5), e("b2", 1.5, 0.75)]
    pts = report.matched_points(a, b, "win_rate.helpful", "rlhf")
    assert [p[0] for p in pts] == ["KL=0.5", "KL=1", "KL=1.5"]
    _, ia, ib = pts[1]
    assert ia["value"] == pytest.approx(0.7)
    assert ib["value"] == pytest.approx(0.5 + 0.25 * (1.0 - 0.25) / 1.25)
    assert ib["ci_high"] - ib["value"] == pytest.approx(0.1)
    assert pts[2][1]["value"] == pytest.approx(0.75)  # a interpolated at KL = 1.5
    assert report.matched_points(a, [e("b", 5.0, 0.5)], "win_rate.helpful", "rlhf") == []


def test_difference_interval_and_verdict_rule():
    d = report.difference_interval(iv(0.6, 0.1), iv(0.5, 0.05))
    assert d["value"] == pytest.approx(0.1)
    assert d["ci_high"] - d["value"] == pytest.approx(math.hypot(0.1, 0.05))
    up, down, flat = iv(0.1, 0.05), iv(-0.1, 0.05), iv(0.01, 0.05)
    assert report.comparison_verdict([up, flat])[0] == report.YES
    assert report.comparison_verdict([down, flat])[0] == report.NO
    assert report.comparison_verdict([up, down])[0] == report.INCONCLUSIVE
    assert report.comparison_verdict([flat])[0] == report.INCONCLUSIVE
    assert report.comparison_verdict([])[0] == report.INCONCLUSIVE
    assert report.combine_verdicts([report.YES, report.YES]) == report.YES
    assert report.combine_verdicts([report.YES, report.NO]) == report.NO
    assert report.combine_verdicts([report.YES, report.INCONCLUSIVE]) == report.INCONCLUSIVE
    assert report.combine_verdicts([]) == report.INCONCLUSIVE


def test_base_check_fails_when_ci_misses_half():
    es = entries()
    es[0]["win_rate"]["helpful"] = iv(0.6, 0.02)
    r = _by_key(report.check_claims(es))["base_is_chance"]
    assert r.verdict == report.NO and "helpful" in r.reason


def test_schema_validation_errors(tmp_path):
    good = entries()
    report.validate_entries(good)
    bad = dict(good[1])
    del bad["k"]
    with pytest.raises(ValueError, match="integer k"):
        report.validate_entry(bad)
    with pytest.raises(ValueError, match="procedure"):
        report.validate_entry({**good[1], "procedure": "ppo"})
    with pytest.raises(ValueError, match="missing field 'gold'"):
        report.validate_entry({k: v for k, v in good[1].items() if k != "gold"})
    broken = json.loads(json.dumps(good[1]))
    broken["win_rate"]["and"] = {"value": 0.5, "ci_low": 0.6, "ci_high": 0.4}
    with pytest.raises(ValueError, match="win_rate.and"):
        report.validate_entry(broken)
    with pytest.raises(ValueError, match="duplicate"):
        report.validate_entries([good[1], good[1]])
    with pytest.raises(ValueError, match="rewards must be a list"):
        report.validate_entry({k: v for k, v in good[1].items() if k != "rewards"})
    with pytest.raises(ValueError, match="kl_coef"):
        report.validate_entry({**good[-1], "kl_coef": -1.0})
    p = tmp_path / "results.json"
    p.write_text(json.dumps({"entries": good}))
    assert len(report.load_entries(str(p))) == len(good)
    p.write_text(json.dumps(good))
    assert report.load_entries(str(p))[0]["name"] == "base"
    p.write_text(json.dumps({"runs": 3}))
    with pytest.raises(ValueError, match="expected a list"):
        report.load_entries(str(p))


def test_labels_and_normalisation():
    assert report.normalized({"method": "sigma_and_nocenter", "reference": "oracle_median"}) \
        == ("sigma_and", "none")
    assert report.label({"method": "sigma_or", "reference": "zero"}) == "sigma_or"
    assert report.label({"method": "sigma_or", "reference": "predict_median"}) \
        == "sigma_or_predict_median"
    e = entries()[-1]
    assert report.metric_interval(e, "underfitting.worst_group")["value"] == pytest.approx(0.6)
    assert report.metric_interval(e, "underfitting.missing") is None
