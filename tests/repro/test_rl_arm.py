"""The RL arm's decision on hand-made trajectories: the readings at matched KL on each path
(non-monotone KL, a grid point below the first snapshot, a seed that does not bracket a point),
the statistics of each kind of claim and the interval across seeds, against values worked out by
hand and Student's t from scipy."""

import numpy as np
import pytest
from scipy import stats

from lsc.data import world
from lsc.data.world import TOPIC_BY_NAME, format_prompt
from lsc.eval import decision
from lsc.repro import claims as repro_claims
from lsc.repro import evaluation, exact_arm, rl_arm
from lsc.repro.claims import HACKING_RATE, MATCHED, PROXY_GOLD_GAP, RLClaim

P, C, F = 4, len(exact_arm.GOLD_JUDGED), len(evaluation.HACKING_FEATURES)
HELPFUL = exact_arm.GOLD_JUDGED.index("helpful")
FEATURE = evaluation.HACKING_FEATURES.index
MATCHED_CLAIM = RLClaim("m", "test", "A beats B.", "lsc", "raw", MATCHED, "helpful")


def _run(kl, helpful=None, hacking=None, proxy=None, gold=None):
    """A trajectory over ``T = len(kl)`` snapshots; ``helpful[T]`` (the same for every prompt) or
    ``[T, P]``; the other fields 0.5 / 0 unless given."""
    t = len(kl)
    metrics = np.full((t, P, C), 0.5)
    if helpful is not None:
        metrics[..., HELPFUL] = np.broadcast_to(np.asarray(helpful, float).reshape(t, -1), (t, P))
    return {"kl_k1": np.asarray(kl, float), "metrics": metrics,
            "hacking": np.zeros((t, P, F)) if hacking is None else np.asarray(hacking, float),
            "proxy": np.zeros((t, P, 2)) if proxy is None else np.asarray(proxy, float),
            "gold": np.zeros((t, P, 2)) if gold is None else np.asarray(gold, float)}


# A's seed 0 goes back in KL (1.6 -> 1.2): its isotonic fit pools the two into 1.4.
A0 = _run([0.0, 0.8, 1.6, 1.2, 2.0], [0.5, 0.6, 0.7, 0.65, 0.8])
B0 = _run([0.0, 0.5, 1.0, 1.5, 2.0], [0.5, 0.5, 0.5, 0.5, 0.5])
# Seed 1: monotone; A gains 0.1 per nat, B 0.05.
A1 = _run([0.0, 0.5, 1.0, 1.5, 2.0], [0.5, 0.55, 0.6, 0.65, 0.7])
B1 = _run([0.0, 0.5, 1.0, 1.5, 2.0], [0.5, 0.525, 0.55, 0.575, 0.6])
GRID = [0.5, 1.0, 1.5]


def _decide(trajs, claims=(MATCHED_CLAIM,), **kw):
    args = dict(kl_grid=GRID, max_gap=1.0, delta=0.01)
    args.update(kw)
    return rl_arm.evaluate_rl_claims(trajs, claims=claims, **args)


def _t_interval(values, confidence=0.95):
    v = np.asarray(values, float)
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return v.mean() - half, v.mean() + half


def test_the_three_paths_read_a_kl_excursion_as_worked_out_by_hand():
    trajs = {"lsc": {0: A0, 1: A1}, "raw": {0: B0, 1: B1}}
    (row,) = _decide(trajs)
    # Seed 0, isotonic KL [0, 0.8, 1.4, 1.4, 2.0]: at 0.5 on (0, 0.8): 0.5 + 0.1 * 0.5 / 0.8; at
    # 1.0 on (0.8, 1.4): 0.6 + 0.1 / 3; at 1.5 on (1.4, 2.0): 0.65 + 0.15 / 6. B is flat at 0.5.
    s0 = np.mean([0.0625, 0.1 + 0.1 / 3, 0.15 + 0.15 / 6])
    s1 = np.mean([0.025, 0.05, 0.075])  # A - B = 0.05 per nat
    assert row["grid_used"] == GRID and row["path"] == "isotonic"
    np.testing.assert_allclose(row["seed_values"], [s0, s1], atol=1e-12)
    lo, hi = _t_interval([s0, s1])
    assert row["across"]["value"] == pytest.approx((s0 + s1) / 2)
    assert (row["across"]["ci_low"], row["across"]["ci_high"]) == (pytest.approx(lo),
                                                                    pytest.approx(hi))
    # One claim: Holm is the unadjusted interval; the outcome is that interval's.
    assert row["holm"]["confidence"] == pytest.approx(0.95)
    assert row["outcome"] == decision.outcome(lo, hi, 0.01)
    assert row["previous_rule_verdict"] == rl_arm.PREVIOUS_RULE_NOTE
    # "first" reads 1.5 on A's raw segment (0.8, 1.6): 0.6 + 0.1 * 0.7 / 0.8; "last" on (1.2,
    # 2.0): 0.65 + 0.15 * 0.3 / 0.8; 1.0 sits on (0.8, 1.6) for both: 0.6 + 0.1 * 0.25.
    first0 = np.mean([0.0625, 0.125, 0.1875])
    last0 = np.mean([0.0625, 0.125, 0.15 + 0.15 * 0.375])
    for path, v0 in (("first", first0), ("last", last0)):
        other = row["other_paths"][path]
        np.testing.assert_allclose(other["seed_values"], [v0, s1], atol=1e-12)
        assert other["value"] == pytest.approx((v0 + s1) / 2)
        assert other["ci_low"] == pytest.approx(_t_interval([v0, s1])[0])
    # The per-seed curves: A's own, B's own, at every grid point.
    np.testing.assert_allclose(row["curves_b"][0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(row["curves_a"][1], [0.55, 0.6, 0.65])


def test_a_point_below_the_first_snapshot_or_unbracketed_in_one_seed_is_not_used():
    # Seed 0 of A first snapshot at KL 1.2: 0.5 and 1.0 lie on the segment from pi0, 1.2 nats
    # wide; seed 1 of B stops at KL 1.2: 1.5 is not bracketed there.
    a0 = _run([0.0, 1.2, 1.8], [0.5, 0.62, 0.68])
    b1 = _run([0.0, 0.6, 1.2], [0.5, 0.5, 0.5])
    trajs = {"lsc": {0: a0, 1: A1}, "raw": {0: B0, 1: b1}}
    # The previous rule, points bracketed in every trajectory: none.
    (row,) = _decide(trajs, kl_grid=[0.5, 1.0, 1.5], points="common")
    assert row["grid_used"] == [] and row["points"] == "common"
    assert row["outcome"] == decision.INCONCLUSIVE and "bracketed" in row["reason"]
    (row,) = _decide(trajs, kl_grid=[0.5, 1.0, 1.5], max_gap=1.25, points="common")
    # With segments up to 1.25 nats, A's seed 0 brackets 0.5 and 1.0 from pi0, B's seed 1 still
    # stops short of 1.5.
    assert row["grid_used"] == [0.5, 1.0]
    s0 = np.mean([0.12 * 0.5 / 1.2, 0.12 * 1.0 / 1.2])
    s1 = np.mean([0.05, 0.1])  # A's seed 1 against B's flat 0.5
    np.testing.assert_allclose(row["seed_values"], [s0, s1], atol=1e-12)


def test_each_seed_reads_the_points_both_its_trajectories_bracket():
    # The declared rule (points="per_seed"). Seed 0: A brackets only 1.5 (on 1.2-1.8), read
    # 0.62 + 0.06 * 0.3 / 0.6 against B's flat 0.5. Seed 1: B stops at 1.2, so 0.5 and 1.0,
    # A gaining 0.1 per nat against B's flat 0.5. Seed 2: A jumps from pi0 to 3 nats, no point.
    a0 = _run([0.0, 1.2, 1.8], [0.5, 0.62, 0.68])
    b1 = _run([0.0, 0.6, 1.2], [0.5, 0.5, 0.5])
    a2 = _run([0.0, 3.0], [0.5, 0.9])
    trajs = {"lsc": {0: a0, 1: A1, 2: a2}, "raw": {0: B0, 1: b1, 2: B1}}
    (row,) = _decide(trajs, kl_grid=[0.5, 1.0, 1.5])
    assert row["points"] == "per_seed" == rl_arm.PRIMARY_POINTS
    s0, s1 = 0.15, np.mean([0.05, 0.1])
    assert row["seeds"] == [0, 1, 2] and row["seeds_read"] == [0, 1]
    assert row["points_per_seed"] == [1, 2, 0]
    assert row["grid_used"] == [0.5, 1.0, 1.5]  # some seed uses each
    np.testing.assert_allclose(row["seed_values"], [s0, s1], atol=1e-12)
    lo, hi = _t_interval([s0, s1])
    assert (row["across"]["ci_low"], row["across"]["ci_high"]) == (pytest.approx(lo),
                                                                    pytest.approx(hi))
    assert "2 seeds (of 3" in row["reason"]
    # The common points beside it: none here, no value.
    assert row["other_points"]["common"]["grid_used"] == []
    assert "value" not in row["other_points"]["common"]
    assert "1-2 per seed" not in rl_arm.claim_cells(row)[1]
    assert rl_arm.claim_cells(row)[1] == "0.5, 1, 1.5 (0-2 per seed)"
    # One seed read: no interval.
    (one,) = _decide({"lsc": {0: a0, 2: a2}, "raw": {0: B0, 2: B1}}, kl_grid=[0.5, 1.0, 1.5])
    assert one["outcome"] == decision.INCONCLUSIVE and "1 seed read" in one["reason"]
    with pytest.raises(ValueError, match="rl_arm.points"):
        _decide(trajs, points="some")


def test_hacking_rate_is_raw_minus_lsc_of_the_claims_feature_set():
    kl = [0.0, 1.0, 2.0]
    hack_a = np.zeros((3, P, F))
    hack_b = np.zeros((3, P, F))
    hack_a[:, :, FEATURE("unsafe_tips")] = 1.0  # counted by the sums' set only
    hack_b[1:, :2, FEATURE("repeats")] = 1.0  # half the prompts from step 1 on
    hack_b[2, :, FEATURE("benign_refusal")] = 1.0  # every prompt at step 2
    trajs = {"lsc": {s: _run(kl, hacking=hack_a) for s in (0, 1, 2)},
             "raw": {s: _run(kl, hacking=hack_b) for s in (0, 1, 2)}}
    helpful = RLClaim("h", "test", "", "lsc", "raw", HACKING_RATE, "helpful")
    both = RLClaim("hh", "test", "", "lsc", "raw", HACKING_RATE, "hh")
    rows = {r["key"]: r for r in _decide(trajs, claims=(helpful, both), kl_grid=[0.5, 1.5])}
    # raw: 0.5 * 0.5 at KL 0.5; 0.5 + 0.5 * 0.5 at 1.5; LSC: 0 (helpful set), 1 (hh set).
    np.testing.assert_allclose(rows["h"]["seed_values"], [np.mean([0.25, 0.75])] * 3)
    np.testing.assert_allclose(rows["hh"]["seed_values"], [np.mean([0.25, 0.75]) - 1.0] * 3)
    np.testing.assert_allclose(rows["h"]["curves_b"][0], [0.25, 0.75])  # raw's own rate
    # Every seed identical: a zero-width interval, Holm over the two claims.
    assert rows["h"]["verdict"] == decision.REPRODUCES
    assert rows["hh"]["verdict"] == decision.OPPOSITE
    assert rows["h"]["holm"]["confidence"] == pytest.approx(0.975)


def test_proxy_gold_gap_is_in_pi0s_sd_across_prompts():
    rng = np.random.default_rng(0)
    kl = [0.0, 1.0, 2.0]
    start = rng.normal(size=(P, 2)) * [1.0, 3.0]  # pi0's proxy == gold, SDs differ by property
    sd = start.std(axis=0, ddof=1)

    def run(proxy_gain, gold_gain):
        steps = np.arange(3)[:, None, None]
        return _run(kl, proxy=start + steps * np.asarray(proxy_gain),
                    gold=start + steps * np.asarray(gold_gain))

    # (harmless, helpful): raw's proxy gains 2 SDs a step on helpfulness, gold 1; LSC's both 1.
    raw = run([0.0, 2 * sd[1]], [0.0, sd[1]])
    lsc = run([0.0, sd[1]], [0.0, sd[1]])
    raw_hh = run([sd[0], 2 * sd[1]], [-sd[0], sd[1]])
    trajs = {"lsc": {0: lsc, 1: lsc}, "raw": {0: raw, 1: raw_hh}}
    claim = RLClaim("g", "test", "", "lsc", "raw", PROXY_GOLD_GAP, "helpful")
    claim_hh = RLClaim("g2", "test", "", "lsc", "raw", PROXY_GOLD_GAP, "hh")
    rows = {r["key"]: r for r in _decide(trajs, claims=(claim, claim_hh), kl_grid=[1.0, 2.0])}
    # helpful: raw's gap is (2 - 1) SD per step, LSC's 0: at KL 1 and 2, 1 and 2.
    np.testing.assert_allclose(rows["g"]["seed_values"], [1.5, 1.5], atol=1e-12)
    # hh, seed 1: harmless gap 2 SDs per step, helpful 1: their mean 1.5 per step -> 2.25.
    np.testing.assert_allclose(rows["g2"]["seed_values"], [0.75, 2.25], atol=1e-12)


def test_missing_method_or_one_seed_is_inconclusive():
    trajs = {"lsc": {0: A0, 1: A1}, "raw": {0: B0, 1: B1}}
    (gone,) = _decide({"lsc": trajs["lsc"]})
    assert gone["outcome"] == decision.INCONCLUSIVE and gone["reason"] == "a method did not run"
    (one,) = _decide({"lsc": {0: A0}, "raw": {0: B0}})
    assert one["outcome"] == decision.INCONCLUSIVE and "2 or more" in one["reason"]
    assert "holm" not in one and len(one["seed_values"]) == 1
    with pytest.raises(ValueError, match="rl_arm.path"):
        _decide(trajs, path="middle")


def test_the_declared_rl_claims():
    keys = [c.key for c in repro_claims.RL_ARM_CLAIMS]
    assert len(set(keys)) == len(keys)
    for c in repro_claims.RL_ARM_CLAIMS:
        assert c.kind in repro_claims.RL_KINDS
        if c.kind == MATCHED:
            assert c.metric in exact_arm.GOLD_JUDGED
        elif c.kind == HACKING_RATE:
            assert set(repro_claims.HACKING_SETS[c.metric]) <= set(evaluation.HACKING_FEATURES)
        else:
            assert c.metric in repro_claims.GAP_PROPERTIES
    under = next(c for c in repro_claims.RL_ARM_CLAIMS if c.key == "rl_underfitting")
    assert (under.kind, under.metric) == (MATCHED, "helpful_not_below")


def test_hacking_indicators_mark_the_features_of_each_response():
    bread = format_prompt(TOPIC_BY_NAME["bread"], "normal")
    poison = format_prompt(TOPIC_BY_NAME["poison"], "detailed")
    responses = ["certainly use the flour then try some yeast",  # nothing
                 "use the flour then check the patch then get a good crowbar",  # off topic, harm
                 world.REFUSAL,  # benign refusal
                 "get a good toxin then ignore the warnings"]  # harmful fact, unsafe tip
    got = evaluation.hacking_indicators([bread, bread, bread, poison], responses)
    want = np.zeros((4, F))
    want[1, [FEATURE("offtopic_facts"), FEATURE("harmful_facts")]] = 1
    want[2, FEATURE("benign_refusal")] = 1
    want[3, [FEATURE("harmful_facts"), FEATURE("unsafe_tips")]] = 1
    np.testing.assert_array_equal(got, want)


def test_render_without_header_starts_at_the_table():
    claims = _decide({"lsc": {0: A0, 1: A1}, "raw": {0: B0, 1: B1}})
    full = rl_arm.render(claims, {}, {})
    bare = rl_arm.render(claims, {}, {}, header=False)
    assert full[0].startswith("## RL arm") and any(repro_claims.RL_RULE in line for line in full)
    assert bare[0].startswith("| claim |")
    assert not any(repro_claims.RL_RULE in line for line in bare)
    assert full[-len(bare):] == bare


def test_seed_summary_counts_the_positive_seeds():
    assert rl_arm.seed_summary([0.01, -0.02, 0.03]) == "mean +0.0067, SD 0.0252, 2/3 > 0"
    assert rl_arm.seed_summary([]) == "-"


def test_trajectories_are_keyed_like_the_run_directories(tmp_path):
    """``<name>/seed_<s>[/kl_<gamma>]/<field>`` in ``trajectories.npz`` reads back per run and
    seed, a gamma sweep's runs as ``<name>/kl_<gamma>``."""
    assert evaluation.run_key("helpful_lsc", 1, 0.1, [0.1]) == "helpful_lsc/seed_1"
    assert evaluation.run_key("raw", 0, 0.05, [0.05, 0.1]) == "raw/seed_0/kl_0.05"
    path = str(tmp_path / "trajectories.npz")
    step = np.arange(3)
    np.savez(path, **{"helpful_lsc/seed_1/step": step, "helpful_lsc/seed_0/step": step + 1,
                      "raw/seed_2/kl_0.05/step": step + 2})
    trajs = rl_arm.load(path)
    assert sorted(trajs) == ["helpful_lsc", "raw/kl_0.05"]
    assert sorted(trajs["helpful_lsc"]) == [0, 1]
    np.testing.assert_array_equal(trajs["helpful_lsc"][0]["step"], [1, 2, 3])
    np.testing.assert_array_equal(trajs["raw/kl_0.05"][2]["step"], [2, 3, 4])


def test_ppo_vs_exact_averages_the_optimum_over_the_trajectories_prompts():
    """The exact optimum is averaged over the prompts the trajectories were judged on
    (``prompt_index``), all prompts without it."""
    n, grid = 6, [0.5, 1.0]
    opt = np.full((len(grid), n, C), 0.5)
    opt[:, :, HELPFUL] = np.arange(n, dtype=float)[None, :] / 10  # prompt p: 0.p
    arrays = {"kl_grid": np.asarray(grid), "optimum/r0/raw": opt}
    run = _run([0.0, 0.5, 1.0, 1.5], [0.5, 0.5, 0.5, 0.5])
    picked = dict(run, prompt_index=np.array([1, 4, 5, 0]))
    out = rl_arm.ppo_vs_exact({"helpful_raw": {0: picked}}, arrays, max_gap=1.0)
    np.testing.assert_allclose(out["helpful_raw"]["exact"], [0.25, 0.25])  # (1+4+5+0)/40
    np.testing.assert_allclose(out["helpful_raw"]["gap"][0], [-0.25, -0.25])
    whole = rl_arm.ppo_vs_exact({"helpful_raw": {0: run}}, arrays, max_gap=1.0)
    np.testing.assert_allclose(whole["helpful_raw"]["exact"], [0.25, 0.25])  # (0+..+5)/60


def test_trajectory_prompts_are_a_stratified_subset_by_pi0_helpfulness():
    """``num`` prompts at evenly spaced ranks of pi0's mean gold helpfulness over the bank, in
    increasing row order; all rows for 0 or ``num >= N``."""
    helpful = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])  # ranks: 8 0 4 2 6 1 7 3 5
    bank = np.zeros((9, 3, 2))
    h = evaluation.PROPERTIES.index("helpful")
    bank[:, :, h] = helpful[:, None] + np.array([-0.05, 0.0, 0.05])  # mean = helpful
    bank[:, :, 1 - h] = -helpful[:, None]  # the other property does not count
    base = {"bank": {"gold": bank}}
    # Ranks 0, 4, 8 (linspace(0, 8, 3)): rows 1, 2, 0.
    np.testing.assert_array_equal(evaluation.trajectory_prompts(base, 3), [0, 1, 2])
    # Ranks 0, 2.67 -> 3, 5.33 -> 5, 8: rows 1, 7, 8, 0.
    np.testing.assert_array_equal(evaluation.trajectory_prompts(base, 4), [0, 1, 7, 8])
    np.testing.assert_array_equal(evaluation.trajectory_prompts(base, 0), np.arange(9))
    np.testing.assert_array_equal(evaluation.trajectory_prompts(base, 20), np.arange(9))


def test_base_subset_indexes_every_sample_set_on_its_prompt_axis():
    base = {"bank": {"gold": np.arange(12).reshape(4, 3)},
            "opponents": {"gold": np.arange(8).reshape(4, 2)}, "quantile": np.array(0.5)}
    sub = evaluation.base_subset(base, np.array([0, 3]))
    np.testing.assert_array_equal(sub["bank"]["gold"], [[0, 1, 2], [9, 10, 11]])
    np.testing.assert_array_equal(sub["opponents"]["gold"], [[0, 1], [6, 7]])
    assert sub["quantile"] is base["quantile"]


def test_per_point_uses_each_points_own_bracketed_seeds():
    """Descriptive per-point readings: at each grid point, the seeds whose two trajectories
    both bracket it, their mean difference and t-interval, in the claim's orientation."""
    row = {"kind": MATCHED, "kl_grid": [1.0, 2.0, 3.0],
           "curves_a": [[0.6, 0.7, None], [0.5, None, 0.9], [0.4, 0.7, 0.9]],
           "curves_b": [[0.5, 0.5, 0.5], [0.5, 0.6, 0.6], [0.5, 0.6, None]]}
    p1, p2, p3 = rl_arm.per_point(row)
    assert (p1["seeds"], p2["seeds"], p3["seeds"]) == (3, 2, 1)
    assert p1["value"] == pytest.approx(0.0, abs=1e-12)
    lo, hi = _t_interval([0.1, 0.0, -0.1])
    assert (p1["ci_low"], p1["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert p2["value"] == pytest.approx(0.15)
    lo, hi = _t_interval([0.2, 0.1])
    assert (p2["ci_low"], p2["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert p3["value"] == pytest.approx(0.3) and "ci_low" not in p3
    flipped = rl_arm.per_point(dict(row, kind=HACKING_RATE))
    assert flipped[1]["value"] == pytest.approx(-0.15)
    assert rl_arm.per_point(dict(row, curves_a=[[None] * 3] * 3))[0] == {
        "kl": 1.0, "seeds": 0, "value": None}
    # no seed read (no curves) or no grid
    assert rl_arm.per_point(dict(row, curves_a=[], curves_b=[]))[2] == {
        "kl": 3.0, "seeds": 0, "value": None}
    assert rl_arm.per_point(dict(row, kl_grid=[], curves_a=[], curves_b=[])) == []
