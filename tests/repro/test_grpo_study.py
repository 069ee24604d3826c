"""The GRPO study's declared pieces, without running it: the config's runs, the wall-time
estimate, the contrasts (difference-in-differences) on hand-made trajectories against a numpy
computation, the level's common grid and Holm family, and every branch of the declared
reading."""

import numpy as np
import pytest

from configs.repro import grpo_study as study_config
from lsc.eval import decision
from lsc.repro import exact_arm, grpo_study

HELPFUL = exact_arm.GOLD_JUDGED.index("helpful")
GRID = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
P, T = 5, 6  # prompts, snapshots


# --------------------------------------------------------------------------- the config


def utility_of(name):
    return name.split("_")[1]


@pytest.mark.parametrize("variant", ["default", "tiny"])
def test_every_run_is_declared_with_its_estimator_reduction_and_gamma(variant):
    config = study_config.get_config(variant)
    assert tuple(study_config.ESTIMATORS) == grpo_study.ESTIMATORS
    want = {}
    for level, (g_raw, g_lsc) in enumerate(zip((0.005, 0.01), (0.0015, 0.003)), start=1):
        for estimator, algorithm, reduction in [
                ("grpo", "grpo", "sequence"), ("dr_grpo", "dr_grpo", "constant"),
                ("grpo_const", "grpo", "constant"), ("dr_grpo_seq", "dr_grpo", "sequence")]:
            for utility, gamma in (("raw", g_raw), ("lsc", g_lsc)):
                want[f"helpful_{utility}_{estimator}_g{level}"] = (
                    algorithm, reduction, gamma, {"raw": "raw", "lsc": "lsc_sum"}[utility])
    runs = config.rlhf.runs
    assert set(runs) == set(want)
    for name, (algorithm, reduction, gamma, method) in want.items():
        run = runs[name]
        assert (run.rl.algorithm, run.rl.loss_reduction, run.kl_coef, run.rewards.method) == (
            algorithm, reduction, gamma, method), name
        assert list(run.rewards.properties) == ["helpful"]
        ref = run.rewards.properties.helpful.reference
        if utility_of(name) == "lsc":
            assert (ref.source, ref.quantile) == ("quantile", 0.85)
        assert run.rl.num_samples == 4
        if variant == "default":
            assert run.rl.num_samples * run.rl.batch_size == 12
    assert sorted(grpo_study.level_runs(1) + grpo_study.level_runs(2)) == sorted(want)
    assert config.study.primary_level == 1
    assert config.rl.stop_kl == config.rl_arm.kl_grid[-1] + 1.5
    assert config.rl.save_every == 100
    if variant == "default":
        assert config.rl.seed == tuple(range(10))
        assert config.rl_arm.kl_grid == tuple(GRID)
        assert (config.rl.snapshot_every_early, config.rl.snapshot_early_until,
                config.rl.snapshot_every, config.rl.snapshot_kl) == (2, 24, 10, 0.5)
        assert config.rl.policy_optim.learning_rate == 2e-4 and config.rl.num_steps == 150
        assert config.rl_arm.points == "per_seed"
    else:
        assert len(config.rl.seed) == 2 and config.rl.num_steps <= 10


def test_the_wall_time_estimate_counts_every_run_step_snapshot_and_compile():
    """Default: 16 runs x 10 seeds, 150 steps, snapshots at pi0, every 2 steps to 24 and every
    10 to 150 (26), two workers. (No early stop: an upper bound; the measured time is in
    docs/grpo_study.md.)"""
    est = grpo_study.estimate_seconds(study_config.get_config())
    runs, snaps = 160, 1 + 12 + 13
    assert est["runs"] == runs and est["snapshots_per_run"] == snaps
    assert est["rl"] == pytest.approx(runs * 150 * 0.09 / 2)
    assert est["judging"] == pytest.approx(runs * (snaps * 0.4 + 1.0) / 2)
    assert est["compile"] == pytest.approx(16 * 10 / 2)
    assert est["total"] == pytest.approx(est["rl"] + est["judging"] + est["compile"])


# --------------------------------------------------------------------------- the contrasts


def _traj(rng, top=4.5):
    kl = np.concatenate([[0.0], np.sort(rng.uniform(0.1, top, T - 2)), [top]])
    metrics = np.full((T, P, len(exact_arm.GOLD_JUDGED)), 0.5)
    metrics[..., HELPFUL] = rng.uniform(0.0, 1.0, (T, P))
    return {"kl_k1": kl, "metrics": metrics}


def _trajs(seeds=(0, 1, 2), short=None, level=1, seed=0):
    """Every run of ``level`` with monotone KL up to 4.5 (``short``: a run reaching 3.5)."""
    rng = np.random.default_rng(seed)
    return {name: {s: _traj(rng, 3.5 if name == short else 4.5) for s in seeds}
            for name in grpo_study.level_runs(level)}


def _reading(run, grid):
    """``float64[G, P]`` by linear interpolation (monotone KL: every path reads the same)."""
    win = run["metrics"][..., HELPFUL]
    return np.stack([np.interp(grid, run["kl_k1"], win[:, p]) for p in range(P)], axis=1)


def _lsc_minus_raw(trajs, estimator, seed, grid, level=1):
    def at(u):
        return _reading(trajs[grpo_study.run_name(u, estimator, level)][seed], grid)
    return at("lsc") - at("raw")


def test_the_contrast_is_the_numpy_difference_in_differences_on_the_bracketed_points():
    short = grpo_study.run_name("raw", "dr_grpo", 1)
    trajs = _trajs(short=short)
    got = grpo_study.contrast_values(trajs, "grpo", "dr_grpo", 1, GRID, path="isotonic",
                                     max_gap=10.0)
    used = [g for g in GRID if g <= 3.5]
    assert got["seeds"] == [0, 1, 2] and got["missing"] == []
    np.testing.assert_array_equal(got["used"], [g <= 3.5 for g in GRID])
    want = [np.mean(_lsc_minus_raw(trajs, "grpo", s, used)
                    - _lsc_minus_raw(trajs, "dr_grpo", s, used)) for s in (0, 1, 2)]
    np.testing.assert_allclose(got["seed_values"], want, rtol=0, atol=1e-12)
    # a point is used only when bracketed in all four runs; a missing run decides nothing
    other = grpo_study.contrast_values(trajs, "grpo", "grpo_const", 1, GRID, path="isotonic",
                                       max_gap=10.0)
    assert other["used"].all() and other["points_per_seed"] == [len(GRID)] * 3
    del trajs[grpo_study.run_name("lsc", "grpo_const", 1)]
    missing = grpo_study.contrast_values(trajs, "grpo_const", "dr_grpo", 1, GRID,
                                         path="isotonic", max_gap=10.0)
    assert missing["missing"] == ["helpful_lsc_grpo_const_g1"] and not missing["used"].any()


def test_a_level_decides_its_seven_claims_each_on_the_points_its_runs_bracket():
    short = grpo_study.run_name("lsc", "dr_grpo_seq", 1)  # shortens that run's claims' points
    trajs = _trajs(short=short)
    lv = grpo_study.decide_level(trajs, 1, GRID, path="isotonic", max_gap=10.0, delta=0.01)
    common = [g for g in GRID if g <= 3.5]
    assert lv["level"] == "g1" and lv["grid_common"] == common and lv["kl_grid"] == GRID
    assert lv["points"] == "per_seed"
    rows = {r["key"]: r for r in lv["claims"]}
    assert list(rows) == [f"lsc_vs_raw_{e}" for e in grpo_study.ESTIMATORS] + [
        "diff_in_diff", "std_division_alone", "normalisation_alone"]
    grids = {f"lsc_vs_raw_{e}": GRID for e in grpo_study.ESTIMATORS}
    grids.update(lsc_vs_raw_dr_grpo_seq=common, diff_in_diff=GRID, std_division_alone=GRID,
                 normalisation_alone=common)
    for e in grpo_study.ESTIMATORS:
        g = grids[f"lsc_vs_raw_{e}"]
        want = [np.mean(_lsc_minus_raw(trajs, e, s, g)) for s in (0, 1, 2)]
        np.testing.assert_allclose(rows[f"lsc_vs_raw_{e}"]["seed_values"], want, atol=1e-12)
    for c in grpo_study.CONTRASTS:
        g = grids[c.key]
        want = [np.mean(_lsc_minus_raw(trajs, c.x, s, g) - _lsc_minus_raw(trajs, c.y, s, g))
                for s in (0, 1, 2)]
        np.testing.assert_allclose(rows[c.key]["seed_values"], want, atol=1e-12)
        # the common points beside it: the level's, for this contrast's four runs
        beside = rows[c.key]["other_points"]["common"]
        assert beside["grid_used"] == g
    for r in rows.values():
        assert r["grid_used"] == grids[r["key"]], r["key"]
        assert r["level"] == "g1" and "holm" in r, r["key"]
        assert r["outcome"] == decision.outcome(r["holm"]["ci_low"], r["holm"]["ci_high"], 0.01)
        assert r["verdict"] == decision.headline(r["outcome"])[0]
    p = [r["across"]["p_value"] for r in rows.values()]
    first = int(np.argmin(p))
    assert list(rows.values())[first]["holm"]["p_value"] == pytest.approx(min(1.0, 7 * p[first]))


def test_one_seed_or_no_common_point_decides_nothing():
    lv = grpo_study.decide_level(_trajs(seeds=(0,)), 1, GRID, path="isotonic", max_gap=10.0,
                                 delta=0.01)
    assert all(r["outcome"] == decision.INCONCLUSIVE for r in lv["claims"])
    lv = grpo_study.decide_level(_trajs(), 1, [9.0], path="isotonic", max_gap=10.0, delta=0.01)
    assert lv["grid_common"] == []
    assert all(r["outcome"] == decision.INCONCLUSIVE for r in lv["claims"])


# --------------------------------------------------------------------------- the reading

YES, NO, OPP, INC = (decision.REPRODUCES, decision.NO_EFFECT, decision.OPPOSITE,
                     decision.INCONCLUSIVE)


def _rows(grpo, dr_grpo, d, std, norm=INC, others=(INC, INC)):
    verdicts = dict(zip(grpo_study.ESTIMATORS, (grpo, dr_grpo) + tuple(others)))
    return ([{"key": f"lsc_vs_raw_{e}", "verdict": v} for e, v in verdicts.items()]
            + [{"key": "diff_in_diff", "verdict": d},
               {"key": "std_division_alone", "verdict": std},
               {"key": "normalisation_alone", "verdict": norm}])


@pytest.mark.parametrize("rows,reading", [
    (_rows(OPP, YES, OPP, OPP), grpo_study.STD_UNDOES_LSC),
    (_rows(INC, YES, OPP, OPP), grpo_study.STD_UNDOES_LSC),
    (_rows(OPP, YES, OPP, INC), grpo_study.AS_IS),  # not attributed to the std division
    (_rows(OPP, YES, OPP, NO, norm=OPP), grpo_study.AS_IS),
    (_rows(INC, YES, INC, OPP), grpo_study.ONE_ESTIMATOR_ONLY),
    (_rows(YES, INC, INC, INC), grpo_study.ONE_ESTIMATOR_ONLY),
    (_rows(YES, YES, INC, INC), grpo_study.AS_IS),  # the same verdict under both
    (_rows(INC, YES, NO, NO), grpo_study.AS_IS),  # D decided: no difference
    (_rows(YES, INC, YES, YES), grpo_study.AS_IS),  # GRPO's gain above Dr. GRPO's
])
def test_the_declared_reading(rows, reading):
    got = grpo_study.undone_verdict(rows)
    assert got["reading"] == reading
    assert got["undone"] == (reading == grpo_study.STD_UNDOES_LSC)
    assert got["verdicts"]["grpo"] == rows[0]["verdict"]
    assert got["contrasts"]["diff_in_diff"] == rows[4]["verdict"]
    assert got["text"]


def test_study_md_lists_each_level_with_its_grid_reading_and_claims():
    trajs = {**_trajs(level=1), **_trajs(level=2, seed=1)}
    config = study_config.get_config()
    config.rl_arm.max_gap = 10.0
    levels, readings = grpo_study.decide(trajs, config)
    assert [lv["level"] for lv in levels] == ["g1", "g2"]
    md = grpo_study.render(levels, readings, study_config.GAMMAS, {}, {})
    assert "## Level g1 (primary): gamma raw 0.005, LSC 0.0015" in md
    assert "## Level g2 (sensitivity" in md
    assert "| diff_in_diff | (LSC - raw | grpo) - (LSC - raw | dr_grpo) |" in md
    assert readings[0]["text"] in md
    assert md.count("Grid (KL): 0.5, 1, 1.5, 2, 3, 4; points per seed: per_seed; bracketed in "
                    "every trajectory of the level: 0.5, 1, 1.5, 2, 3, 4") == 2
