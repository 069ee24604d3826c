"""The exact arm's claims (:mod:`lsc.repro.claims`) decided on hand-made per-prompt tables:
the statistic per replicate, the interval across replicates, Holm within a judge's family, the
outcomes and the previous rule beside them."""

import numpy as np
import pytest
from scipy import stats

from lsc.eval import decision
from lsc.repro import claims as claims_lib
from lsc.repro import exact_arm
from lsc.repro.claims import BEST_OF_K, OPTIMUM, ExactClaim, ExactComparison

NC = len(exact_arm.METRICS)


def _claim(*comparisons, key="test", judge="gold"):
    return ExactClaim(key, "test", "a test claim", tuple(comparisons), judge)


def _optimum_arrays(shift_by_replicate, p=24, g=3, noise=0.0, seed=0, gold_shift=None):
    """``A`` = ``B`` + shift (per replicate) on every grid point, prompt and metric."""
    rng = np.random.default_rng(seed)
    arrays = {"ks": np.array([1, 2]), "kl_grid": np.linspace(0.1, 0.5, g),
              "strata": np.repeat(np.arange(3), p // 3)}
    sources = {f"r{i}": s for i, s in enumerate(shift_by_replicate)}
    if gold_shift is not None:
        sources["gold"] = gold_shift
    for source, shift in sources.items():
        b = rng.uniform(0.2, 0.7, size=(g, p, NC))
        a = b + shift + noise * rng.normal(size=(g, p, NC))
        arrays[f"optimum/{source}/A"], arrays[f"optimum/{source}/B"] = a, b
        arrays[f"kl/{source}/A"] = arrays[f"kl/{source}/B"] = arrays["kl_grid"].copy()
    return arrays


def _evaluate(arrays, comps, primary_ks=(1,), delta=0.02, claims=None):
    return claims_lib.evaluate_exact_claims(arrays, primary_ks=primary_ks, delta=delta,
                                            num_resamples=200,
                                            claims=claims or [_claim(*comps)])


def test_reproduces_when_a_beats_b_by_more_than_delta_on_every_replicate():
    arrays = _optimum_arrays([0.05, 0.05, 0.05], gold_shift=0.0)
    (res,) = _evaluate(arrays, [ExactComparison("A", "B", OPTIMUM, "helpful")])
    assert res["outcome"] == res["verdict"] == decision.REPRODUCES
    assert res["previous_rule_verdict"] == "yes" and not res["small_effect"]
    (row,) = res["comparisons"]
    assert row["replicate_values"] == pytest.approx([0.05] * 3, abs=1e-12)
    assert row["across"]["value"] == pytest.approx(0.05, abs=1e-12)
    assert row["holm"]["confidence"] == pytest.approx(0.95)  # a family of one
    assert row["control"]["value"] == pytest.approx(0.0, abs=1e-12)  # the gold control
    assert row["grid"] == "KL in {0.1, 0.3, 0.5}"
    assert res["delta"] == 0.02 and res["judge"] == "gold"


def test_the_interval_is_taken_across_replicates():
    # Per-prompt noise around replicate-specific shifts: the estimate is the mean of the
    # replicate means and the interval is Student's t over them (the shifts dominate).
    shifts = [0.01, 0.03, 0.02, 0.05]
    arrays = _optimum_arrays(shifts, p=30, noise=1e-4, seed=3)
    (res,) = _evaluate(arrays, [ExactComparison("A", "B", OPTIMUM, "and")], delta=0.01)
    row = res["comparisons"][0]
    m = np.array(row["replicate_values"])
    assert m == pytest.approx(shifts, abs=1e-4)
    se = m.std(ddof=1) / 2
    q = stats.t.ppf(0.975, 3)
    assert row["across"]["ci_low"] == pytest.approx(m.mean() - q * se, rel=0.02)
    assert row["across"]["ci_high"] == pytest.approx(m.mean() + q * se, rel=0.02)
    assert res["outcome"] == decision.REPRODUCES
    # each replicate's bootstrap interval is tight around its own shift: the previous rule
    # saw four "above 0" replicates as well
    assert res["previous_rule_verdict"] == "yes"


def test_no_effect_when_a_equals_b():
    (res,) = _evaluate(_optimum_arrays([0.0, 0.0]), [ExactComparison("A", "B", OPTIMUM,
                                                                      "helpful")])
    assert res["outcome"] == res["verdict"] == decision.NO_EFFECT
    assert res["previous_rule_verdict"] == "no"


def test_small_positive_effect_is_no_effect_of_practical_size_with_the_flag():
    (res,) = _evaluate(_optimum_arrays([0.005, 0.005]), [ExactComparison("A", "B", OPTIMUM,
                                                                          "helpful")])
    assert res["outcome"] == decision.BELOW_PRACTICAL_SIZE
    assert res["verdict"] == decision.NO_EFFECT and res["small_effect"]


def test_opposite_when_b_beats_a():
    (res,) = _evaluate(_optimum_arrays([-0.05, -0.05]), [ExactComparison("A", "B", OPTIMUM,
                                                                           "or")])
    assert res["outcome"] == res["verdict"] == decision.OPPOSITE
    (res,) = _evaluate(_optimum_arrays([-0.005, -0.005]), [ExactComparison("A", "B", OPTIMUM,
                                                                             "or")])
    assert res["outcome"] == decision.OPPOSITE_BELOW_PRACTICAL_SIZE
    assert res["verdict"] == decision.OPPOSITE


def test_inconclusive_when_replicates_disagree():
    (res,) = _evaluate(_optimum_arrays([0.05, -0.05]), [ExactComparison("A", "B", OPTIMUM,
                                                                          "helpful")])
    assert res["verdict"] == decision.INCONCLUSIVE
    row = res["comparisons"][0]
    assert row["replicate_values"] == pytest.approx([0.05, -0.05], abs=1e-12)
    assert row["across"]["value"] == pytest.approx(0.0, abs=1e-12)


def test_skips_grid_points_a_utility_cannot_reach():
    arrays = _optimum_arrays([0.05, 0.05])
    for r in ("r0", "r1"):  # A unreachable at the last KL, where it would lose badly
        arrays[f"optimum/{r}/A"][2] = np.nan
        arrays[f"optimum/{r}/B"][2] += 1.0
        arrays[f"kl/{r}/A"][2] = np.nan
    (res,) = _evaluate(arrays, [ExactComparison("A", "B", OPTIMUM, "helpful")])
    assert res["verdict"] == decision.REPRODUCES
    assert res["comparisons"][0]["grid"] == "KL in {0.1, 0.3}"


def test_missing_utility_and_non_decisive_comparisons():
    arrays = _optimum_arrays([0.05, 0.05])
    comps = [ExactComparison("A", "B", OPTIMUM, "helpful"),
             ExactComparison("B", "A", OPTIMUM, "helpful", decisive=False),  # not counted
             ExactComparison("A", "missing", OPTIMUM, "helpful", decisive=False)]
    (res,) = _evaluate(arrays, comps)
    assert res["verdict"] == decision.REPRODUCES
    assert [r["outcome"] for r in res["comparisons"]] == [
        decision.REPRODUCES, decision.OPPOSITE, decision.INCONCLUSIVE]
    assert "holm" not in res["comparisons"][1]  # shown, not in the family
    assert res["comparisons"][2]["reason"] == "missing utilities"
    (res,) = _evaluate(arrays, [ExactComparison("A", "missing", OPTIMUM, "helpful")])
    assert res["verdict"] == decision.INCONCLUSIVE


def test_a_claim_takes_its_weakest_decisive_comparison():
    arrays = _optimum_arrays([0.05, 0.05])
    comps = [ExactComparison("A", "B", OPTIMUM, "helpful"),
             ExactComparison("B", "A", OPTIMUM, "and")]
    (res,) = _evaluate(arrays, comps)
    assert res["outcome"] == decision.OPPOSITE


def test_best_of_k_averages_only_the_primary_ks():
    rng = np.random.default_rng(5)
    p, ks = 12, [1, 2, 4, 8]
    arrays = {"ks": np.array(ks), "kl_grid": np.array([0.1]), "strata": np.zeros(p, np.int64)}
    for r in ("r0", "r1"):
        b = rng.uniform(0.2, 0.7, size=(len(ks), p, NC))
        a = b.copy()
        a[1] += 0.04  # k = 2
        a[2] += 0.06  # k = 4
        a[0] -= 0.5   # k = 1 and 8: not primary, would flip the sign if averaged in
        a[3] -= 0.5
        arrays[f"best_of_k/{r}/A"], arrays[f"best_of_k/{r}/B"] = a, b
        arrays[f"optimum/{r}/A"] = arrays[f"optimum/{r}/B"] = np.zeros((1, p, NC))
    (res,) = _evaluate(arrays, [ExactComparison("A", "B", BEST_OF_K, "and")], primary_ks=[2, 4])
    row = res["comparisons"][0]
    assert res["verdict"] == decision.REPRODUCES
    assert row["across"]["value"] == pytest.approx(0.05, abs=1e-12)
    assert row["grid"] == "k in {2, 4}"
    (res,) = _evaluate(arrays, [ExactComparison("A", "B", BEST_OF_K, "and")], primary_ks=ks)
    assert res["verdict"] == decision.OPPOSITE


def test_holm_runs_within_each_judge_family():
    rng = np.random.default_rng(9)
    arrays = _optimum_arrays([0.03, 0.02, 0.04], p=30, noise=0.01, seed=1)
    for r in ("r0", "r1", "r2"):  # C: a second pair of utilities
        arrays[f"optimum/{r}/C"] = arrays[f"optimum/{r}/B"] + 0.02 + 0.01 * rng.normal(
            size=arrays[f"optimum/{r}/B"].shape)
        arrays[f"kl/{r}/C"] = arrays[f"kl/{r}/B"]
    gold = [_claim(ExactComparison("A", "B", OPTIMUM, "helpful"), key="g1"),
            _claim(ExactComparison("C", "B", OPTIMUM, "and"), key="g2")]
    proxy = [_claim(ExactComparison("A", "B", OPTIMUM, "and"), key="p1", judge="proxy")]
    res = _evaluate(arrays, None, delta=0.01, claims=gold + proxy)
    g1, g2, p1 = (r["comparisons"][0] for r in res)
    levels = sorted([g1["holm"]["confidence"], g2["holm"]["confidence"]])
    assert levels[1] == pytest.approx(1 - 0.05 / 2)  # the smaller p-value: Bonferroni over 2
    assert p1["holm"]["confidence"] == pytest.approx(0.95)  # its own family of one
    assert [r["judge"] for r in res] == ["gold", "gold", "proxy"]
    for row in (g1, g2, p1):
        assert row["outcome"] == decision.outcome(row["holm"]["ci_low"], row["holm"]["ci_high"],
                                                  0.01)


def test_the_declared_claims_name_known_utilities_and_metrics():
    judges = {claims_lib.GOLD_JUDGED, claims_lib.PROXY_JUDGED}
    for claim in claims_lib.EXACT_CLAIMS:
        assert any(c.decisive for c in claim.comparisons) and claim.judge in judges
        for c in claim.comparisons:
            assert c.a in exact_arm.UTILITY_BY_NAME and c.b in exact_arm.UTILITY_BY_NAME
            assert c.metric in exact_arm.METRICS and c.arm in (OPTIMUM, BEST_OF_K)
            assert c.metric.endswith("_proxy_judged") == (claim.judge == claims_lib.PROXY_JUDGED)
