"""The RL arm's decision on hand-made trajectories: verdicts, the prompts and grid points used,
and the reward-hacking drop, against direct computations."""

import numpy as np

from lsc.eval import decision
from lsc.repro import claims as repro_claims
from lsc.repro import exact_arm, rl_arm

P, C = 40, len(exact_arm.GOLD_JUDGED)
HELPFUL = exact_arm.METRICS.index("helpful")


def _run(kl, helpful):
    """A trajectory with per-prompt helpful win rates ``helpful[T, P]`` (other metrics 0.5)."""
    metrics = np.full((len(kl), P, C), 0.5)
    metrics[..., HELPFUL] = helpful
    return {"kl_k1": np.asarray(kl, float), "metrics": metrics}


def _trajs(shift_a, drop_a=0.0, drop_b=0.0, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    base = 0.5 + 0.05 * rng.standard_normal(P)
    kl = [0.0, 1.0, 2.0, 4.0]
    rise = np.array([0.0, 0.1, 0.15, 0.15])[:, None]
    out = {"helpful_lsc": {}, "helpful_raw": {}}
    for s in seeds:
        noise = 0.01 * rng.standard_normal((4, P))
        b = base + rise + noise
        b[-1] -= drop_b
        a = base + rise + shift_a * (np.arange(4) > 0)[:, None] + noise
        a[-1] -= drop_a
        out["helpful_lsc"][s] = _run(kl, a)
        out["helpful_raw"][s] = _run(kl, b)
    return out


def _decide(trajs, **kw):
    claims = [c for c in repro_claims.RL_ARM_CLAIMS if c.a == "helpful_lsc"]
    args = dict(kl_grid=[1.0, 2.0, 3.0, 8.0], strata=np.arange(P) % 4,
                low_quartile=np.arange(P) < P // 4, delta=0.01, num_resamples=300)
    args.update(kw)
    return {c["key"]: c for c in rl_arm.evaluate_rl_claims(trajs, claims=claims, **args)}


def test_a_clear_gain_on_every_seed_reproduces_and_none_is_no_effect():
    out = _decide(_trajs(0.05))
    c = out["rl_lsc_vs_raw"]
    assert c["verdict"] == decision.REPRODUCES and c["seeds"] == [0, 1, 2]
    assert c["previous_rule_verdict"] == "yes"
    assert abs(c["across"]["value"] - 0.05) < 1e-9
    assert c["holm"]["confidence"] > 0.95  # Holm over the three claims
    assert c["grid_used"] == [1.0, 2.0, 3.0]  # 8 is beyond every trajectory
    for iv in c["replicates"]:
        assert abs(iv["value"] - 0.05) < 1e-9  # the shift, exactly: same noise for A and B
    assert out["rl_underfitting"]["num_prompts"] == P // 4
    none = _decide(_trajs(0.0))["rl_lsc_vs_raw"]
    assert none["verdict"] == decision.NO_EFFECT and not none["small_effect"]


def test_hacking_compares_the_drop_after_the_peak():
    # Raw drops 0.08 between KL 2 (its peak) and 4; the drop is read at KL 3, the largest grid
    # point every trajectory reaches, halfway: 0.04. LSC does not drop.
    out = _decide(_trajs(0.0, drop_a=0.0, drop_b=0.08))["rl_reward_hacking"]
    assert out["end_kl"] == 3.0
    assert out["verdict"] == decision.REPRODUCES
    for d_a, d_b, iv in zip(out["drops_a"], out["drops_b"], out["replicates"]):
        assert d_b["peak_kl"] == 2.0
        np.testing.assert_allclose(iv["value"], d_b["drop"] - d_a["drop"], atol=1e-12)
        np.testing.assert_allclose(d_b["drop"] - d_a["drop"], 0.04, atol=0.01)


def test_a_missing_method_or_unreached_grid_is_inconclusive():
    trajs = _trajs(0.05)
    del trajs["helpful_raw"]
    assert _decide(trajs)["rl_lsc_vs_raw"]["verdict"] == decision.INCONCLUSIVE
    far = _decide(_trajs(0.05), kl_grid=[9.0])["rl_lsc_vs_raw"]
    assert far["verdict"] == decision.INCONCLUSIVE and far["grid_used"] == []


def test_render_without_header_starts_at_the_table():
    claims = list(_decide(_trajs(0.05)).values())
    full = rl_arm.render(claims, {}, {})
    bare = rl_arm.render(claims, {}, {}, header=False)
    assert full[0].startswith("## RL arm") and any(repro_claims.RL_RULE in line for line in full)
    assert bare[0].startswith("| claim |") and not any(repro_claims.RL_RULE in line for line in bare)
    assert full[-len(bare):] == bare


def test_low_quartile_is_the_quarter_of_prompts_least_helpful_at_base():
    rng = np.random.default_rng(5)
    gold = rng.normal(size=(P, 6, 2))  # [P, K_ref, (harmless, helpful)]
    got = rl_arm.low_quartile({"reference": {"gold": gold}})
    means = [sum(gold[p, k, 1] for k in range(6)) / 6 for p in range(P)]
    cut = sorted(means)[P // 4 - 1]  # P = 40: the 10th smallest is below the 25th percentile
    assert got.tolist() == [m <= cut for m in means]
    assert got.sum() == P // 4


def test_trajectories_are_keyed_like_the_run_directories(tmp_path):
    """``<name>/seed_<s>[/kl_<gamma>]/<field>`` in ``trajectories.npz`` reads back per run and
    seed, a gamma sweep's runs as ``<name>/kl_<gamma>``."""
    from lsc.repro import evaluation

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
