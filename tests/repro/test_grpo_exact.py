"""GRPO's per-prompt std scaling as an exact analogue (:mod:`lsc.repro.grpo_exact`) against
numpy loops, an independent bisection and the exact arm itself."""

import json

import numpy as np
import pytest

from lsc.data import world
from lsc.eval import exact
from lsc.repro import exact_arm
from lsc.repro import grpo_exact

HELPFUL = exact_arm.METRICS.index("helpful")


# --------------------------------------------------------------------------- group_scaled


def loop_scaled(u):
    u = np.asarray(u, float)
    out = np.zeros_like(u)
    for i, row in enumerate(u):
        k = len(row)
        if k < 2 or not np.all(np.isfinite(row)):
            continue
        mean = sum(row) / k
        s = np.sqrt(sum((x - mean) ** 2 for x in row) / (k - 1))
        if s > 0:
            out[i] = [x / s for x in row]
    return out


def test_group_scaled_against_a_loop():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(7, 5)) * rng.uniform(0.1, 10.0, size=(7, 1)) + 3.0
    u[2] = 1.5  # constant row -> zeros
    u[4, 1] = -np.inf  # non-finite row -> zeros
    got = grpo_exact.group_scaled(u)
    np.testing.assert_allclose(got, loop_scaled(u), rtol=1e-12, atol=1e-12)
    assert np.all(got[2] == 0) and np.all(got[4] == 0)
    ok = [0, 1, 3, 5, 6]
    np.testing.assert_allclose(np.std(got[ok], axis=1, ddof=1), 1.0, rtol=1e-12)


def test_group_scaled_with_two_samples():
    u = np.array([[0.0, 2.0], [3.0, 3.0], [-1.0, 5.0]])
    got = grpo_exact.group_scaled(u)
    np.testing.assert_allclose(got, loop_scaled(u), rtol=1e-12)
    # K = 2: std (ddof=1) is |a - b| / sqrt(2), so the scaled pair is sqrt(2) apart
    np.testing.assert_allclose(np.abs(got[:, 1] - got[:, 0]), [np.sqrt(2), 0.0, np.sqrt(2)])
    assert np.all(got[1] == 0)


def test_group_scaled_rejects_non_matrices_and_single_samples():
    with pytest.raises(ValueError):
        grpo_exact.group_scaled(np.zeros(3))
    assert np.all(grpo_exact.group_scaled(np.ones((3, 1)) * 2.0) == 0)


# --------------------------------------------------------------------------- scaled frontier


def bisect_scaled(u, win, target, iters=200):
    """Independent: per prompt ``w ∝ exp(u / (gamma s))`` (uniform where ``s = 0``) with one
    ``gamma`` found by bisection on ``log gamma`` so that the mean KL to uniform is ``target``."""
    u = np.asarray(u, float)
    n = u.shape[1]
    s = np.array([np.std(row, ddof=1) for row in u])

    def weights(gamma):
        rows = []
        for row, sd in zip(u, s):
            if sd == 0:
                rows.append(np.full(n, 1.0 / n))
                continue
            z = row / (gamma * sd)
            e = np.exp(z - z.max())
            rows.append(e / e.sum())
        return np.array(rows)

    def mean_kl(gamma):
        w = weights(gamma)
        return np.mean([sum(x * np.log(n * x) for x in row if x > 0) for row in w])

    lo, hi = -30.0, 30.0  # log gamma: KL high at lo, low at hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if mean_kl(np.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    gamma = np.exp(0.5 * (lo + hi))
    w = weights(gamma)
    return gamma, w, (w * win).sum(axis=1)


def frontier(u, win, grid, **kw):
    """:func:`lsc.eval.exact.frontier` judged by one per-candidate metric ``win[P, N]``."""
    f = exact.frontier(u, win[..., None], grid, **kw)
    return dict(f, win=f["win"][..., 0])


def test_scaled_frontier_against_independent_bisection():
    rng = np.random.default_rng(1)
    n, k = 20, 8
    u = rng.normal(size=(n, k)) * rng.uniform(0.2, 5.0, size=(n, 1))
    u[3] = -0.7  # a prompt with no spread stays at pi0
    gold = rng.normal(size=(n, k, 2))
    opp = rng.normal(size=(n, 6, 2))
    win = exact_arm.metric_scores(gold, opp)[..., HELPFUL]
    grid = [0.1, 0.5, 1.0, 1.5]
    scaled = grpo_exact.group_scaled(u)
    front = frontier(scaled, win, grid, tol=1e-12)
    for g, target in enumerate(grid):
        gamma_ref, w_ref, win_ref = bisect_scaled(u, win, target)
        gamma = exact.gamma_for_kl(scaled, target, tol=1e-12)
        assert gamma == pytest.approx(gamma_ref, rel=1e-7)
        assert front["gamma"][g] == pytest.approx(gamma_ref, rel=1e-7)
        assert front["kl"][g] == pytest.approx(target, abs=1e-9)
        w = exact.optimum_weights(scaled, gamma)
        np.testing.assert_allclose(w, w_ref, atol=1e-8)
        np.testing.assert_allclose(w[3], 1.0 / k, atol=1e-15)
        np.testing.assert_allclose(front["win"][g], win_ref, atol=1e-8)
        assert front["win"][g, 3] == pytest.approx(win[3].mean(), abs=1e-15)
    # the scaling matters: the plain optimum at the same KL is a different policy
    plain = frontier(u, win, grid)
    assert not np.allclose(plain["win"], front["win"])


def test_scaling_is_invariant_to_per_prompt_affine_maps():
    """GRPO's policy does not see a per-prompt shift or positive rescaling of the utility."""
    rng = np.random.default_rng(2)
    u = rng.normal(size=(10, 8))
    v = u * rng.uniform(0.1, 10.0, size=(10, 1)) + rng.normal(size=(10, 1)) * 5
    d = grpo_exact.group_scaled(v) - grpo_exact.group_scaled(u)  # a constant per row
    np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-12)
    win = rng.uniform(size=(10, 8))
    a = frontier(grpo_exact.group_scaled(u), win, [0.3, 1.0])
    b = frontier(grpo_exact.group_scaled(v), win, [0.3, 1.0])
    np.testing.assert_allclose(a["win"], b["win"], atol=1e-6)


# --------------------------------------------------------------------------- analogue

P, N, M, K, R = 6, 8, 5, 7, 2
GRID = [0.1, 0.4, 0.8, 6.0]  # 6 > log 8: unreachable


def _texts(p=P):
    return [world.sample_prompt(np.random.default_rng(s), 0.5) for s in range(p)]


def _base(seed=0):
    rng = np.random.default_rng(seed)
    bank_rewards = rng.normal(size=(P, N, R * 2))
    bank_rewards[2, :, 3] = 0.4  # replicate 1, helpful: a prompt with one reward everywhere
    return {
        "bank": {"rewards": bank_rewards, "gold": rng.normal(size=(P, N, 2))},
        "opponents": {"gold": rng.normal(size=(P, M, 2)), "rewards": np.ones((P, M, R * 2))},
        "reference": {"rewards": rng.normal(size=(P, K, R * 2)),
                      "gold": rng.normal(size=(P, K, 2))},
        "fixed_response": {"rewards": rng.normal(size=(P, 1, R * 2)),
                    "gold": rng.normal(size=(P, 1, 2))},
        "predictor": rng.normal(size=(P, R * 2)),
    }


@pytest.fixture(scope="module")
def results():
    base = _base()
    arrays = exact_arm.compute(base, _texts(), R, GRID, [1])
    out = grpo_exact.analogue(base, GRID, per_prompt=True, include_gold=True)
    return base, arrays, out


def test_analogue_shapes_and_keys(results):
    _, _, out = results
    g = len(GRID)
    assert out["sources"] == ["r0", "r1", "gold"]
    assert out["utilities"] == ["raw", "lsc_p85"] and out["metric"] == "helpful"
    for source in out["sources"]:
        for name in ("raw", "lsc_p85"):
            for variant in grpo_exact.VARIANTS:
                for key in ("gamma", "kl", "win"):
                    assert out[source][name][variant][key].shape == (g,)
                assert out[source][name][variant]["win_per_prompt"].shape == (g, P)
        for variant in grpo_exact.VARIANTS:
            d = out[source]["diff"][variant]
            assert d["mean"].shape == d["se"].shape == (g,)
            assert np.isnan(d["mean"][-1]) and np.isfinite(d["mean"][:-1]).all()
    assert out["r1"]["raw"]["zero_std_prompts"] == 1
    assert out["r0"]["raw"]["zero_std_prompts"] == 0
    for variant in grpo_exact.VARIANTS:
        np.testing.assert_allclose(
            out["mean_over_replicates"][variant],
            (out["r0"]["diff"][variant]["mean"] + out["r1"]["diff"][variant]["mean"]) / 2)
    parsed = json.loads(grpo_exact.to_json(out))
    assert parsed["r0"]["diff"]["plain"]["mean"][-1] is None
    assert parsed["r0"]["raw"]["zero_std_prompts"] == 0


def test_plain_arm_is_the_exact_arm(results):
    """``s = 1`` reproduces ``exact.npz``'s optimum of the same utilities (helpful metric)."""
    _, arrays, out = results
    for source in ("r0", "r1", "gold"):
        for name in ("raw", "lsc_p85"):
            ref = arrays[f"optimum/{source}/{name}"][..., HELPFUL]  # [G, P]
            got = out[source][name]["plain"]["win_per_prompt"]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            np.testing.assert_allclose(got, ref, atol=1e-12, equal_nan=True)
            np.testing.assert_allclose(out[source][name]["plain"]["gamma"],
                                       arrays[f"gamma/{source}/{name}"], rtol=1e-12,
                                       equal_nan=True)


def test_scaled_arm_against_direct_computation(results):
    base, _, out = results
    win = exact_arm.metric_scores(base["bank"]["gold"], base["opponents"]["gold"])[..., HELPFUL]
    bank = base["bank"]["rewards"]
    ref = base["reference"]["rewards"]
    # replicate 1 (columns 2, 3), helpful = column 3
    r = bank[..., 3].astype(np.float32).astype(float)
    p85 = np.quantile(ref[..., 3], 0.85, axis=1)
    lsc = -np.logaddexp(0.0, -(r - p85[:, None]))
    for name, u in (("raw", r), ("lsc_p85", lsc)):
        scaled = out["r1"][name]["scaled"]
        for g, target in enumerate(GRID[:-1]):
            gamma, w, win_ref = bisect_scaled(u, win, target)
            assert scaled["gamma"][g] == pytest.approx(gamma, rel=1e-4)
            np.testing.assert_allclose(scaled["win_per_prompt"][g], win_ref, atol=1e-5)
            # the prompt with constant reward stays at the base policy
            assert scaled["win_per_prompt"][g, 2] == pytest.approx(win[2].mean(), abs=1e-12)
    for variant in grpo_exact.VARIANTS:
        d = out["r1"]["lsc_p85"][variant]["win_per_prompt"] - out["r1"]["raw"][variant][
            "win_per_prompt"]
        np.testing.assert_allclose(out["r1"]["diff"][variant]["diff_per_prompt"], d)
        np.testing.assert_allclose(out["r1"]["diff"][variant]["mean"], d.mean(axis=1))
        np.testing.assert_allclose(out["r1"]["diff"][variant]["se"],
                                   d.std(axis=1, ddof=1) / np.sqrt(P))
