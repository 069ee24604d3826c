"""Reward-model losses and held-out metrics against independent numpy references."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsc.data import world, world_data
from lsc.train import optim
from lsc.train import reward_model as rm


def np_log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, -np.log1p(np.exp(-x)), x - np.log1p(np.exp(x)))


@pytest.mark.parametrize("margin,center", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.01), (1.0, 0.1)])
def test_bradley_terry_loss_matches_numpy(margin, center):
    rng = np.random.default_rng(0)
    r_c, r_r = rng.normal(size=64) * 3, rng.normal(size=64) * 3
    got = np.asarray(rm.bradley_terry_loss(r_c, r_r, margin, center))
    want = -np_log_sigmoid(r_c - r_r - margin) + center * (r_c + r_r) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bradley_terry_loss_is_finite_for_huge_gaps():
    got = np.asarray(rm.bradley_terry_loss(jnp.array([-1e4, 1e4]), jnp.array([1e4, -1e4])))
    np.testing.assert_allclose(got, [2e4, 0.0], rtol=1e-6)


def test_pointwise_loss_matches_numpy():
    rng = np.random.default_rng(1)
    r = rng.normal(size=50) * 4
    y = rng.integers(0, 2, size=50)
    got = np.asarray(rm.pointwise_loss(r, y))
    want = -(y * np_log_sigmoid(r) + (1 - y) * np_log_sigmoid(-r))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class TableModel(nnx.Module):
    """reward(prompt, response) = w[response[:, 0]]: a lookup table, for exact references."""

    def __init__(self, w):
        self.w = nnx.Param(jnp.asarray(w, jnp.float32))

    def __call__(self, prompt, response):
        return self.w[...][response[:, 0]]


def test_pairwise_loss_fn_sums_valid_rows_only():
    w = np.array([0.0, 0.3, -1.2, 2.0, 0.7], np.float32)
    chosen = np.array([[1], [3], [4], [2]], np.int32)
    rejected = np.array([[2], [1], [4], [3]], np.int32)
    valid = np.array([1, 1, 1, 0], np.int32)
    batch = {"prompt": np.zeros((4, 2), np.int32), "chosen": chosen, "rejected": rejected,
             "valid": valid}
    loss_sum, count, sums = rm.pairwise_loss_fn(margin=0.25, center_coef=0.5)(
        TableModel(w), {k: jnp.asarray(v) for k, v in batch.items()}, None)
    rc, rr = w[chosen[:, 0]].astype(np.float64), w[rejected[:, 0]].astype(np.float64)
    per = -np_log_sigmoid(rc - rr - 0.25) + 0.5 * (rc + rr) ** 2
    m = valid.astype(bool)
    assert float(count) == 3.0
    np.testing.assert_allclose(float(loss_sum), per[m].sum(), rtol=1e-6)
    # accuracy: rows 0, 1 correct, row 2 a tie (counts one half), row 3 padding.
    np.testing.assert_allclose(float(sums["accuracy"]), 2.5, rtol=1e-6)
    np.testing.assert_allclose(float(sums["bt_nll"]), -np_log_sigmoid(rc - rr)[m].sum(), rtol=1e-6)


def test_pairwise_metrics_match_numpy():
    rng = np.random.default_rng(2)
    r_c = rng.normal(size=500) + 0.5
    r_r = rng.normal(size=500)
    r_r[:7] = r_c[:7]  # ties
    m = rm.pairwise_metrics(r_c, r_r, num_bins=5, bins=True)
    d = r_c - r_r
    assert m["accuracy"] == pytest.approx(((d > 0).sum() + 0.5 * (d == 0).sum()) / 500)
    assert m["log_likelihood"] == pytest.approx(np_log_sigmoid(d).mean())
    # ECE by an independent loop over both orientations.
    p = 1 / (1 + np.exp(-d))
    pairs = [(x, 1.0) for x in p] + [(1 - x, 0.0) for x in p]
    ece = 0.0
    for b in range(5):
        lo, hi = b / 5, (b + 1) / 5
        sel = [(x, y) for x, y in pairs if (lo <= x < hi) or (b == 4 and x == 1.0)]
        if sel:
            conf = np.mean([x for x, _ in sel])
            freq = np.mean([y for _, y in sel])
            ece += len(sel) / len(pairs) * abs(freq - conf)
    assert m["ece"] == pytest.approx(ece, abs=1e-12)
    assert sum(b["count"] for b in m["reliability"]) == 1000


def test_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(3)
    d = rng.normal(size=20000) * 2
    # Labels drawn from sigmoid(d): orient each pair so the drawn winner is "chosen".
    win = rng.random(20000) < 1 / (1 + np.exp(-d))
    delta = np.where(win, d, -d)
    assert rm.calibration(delta, 10)["ece"] < 0.02
    assert rm.calibration(3 * delta, 10)["ece"] > 0.05  # overconfident


def test_gold_ceiling_closed_form():
    rng = np.random.default_rng(4)
    prompt = world.sample_prompt(rng, 0.0)
    demo = world_data.Demonstrator()
    prompts, chosen, rejected = [], [], []
    for _ in range(40):
        prompts.append(prompt)
        chosen.append(demo.sample(prompt, rng))
        rejected.append(demo.sample(prompt, rng))
    out = rm.gold_ceiling(prompts, chosen, rejected, "helpful", temperature=2.0)
    d = np.array([(world.gold_helpful(p, c) - world.gold_helpful(p, r)) / 2.0
                  for p, c, r in zip(prompts, chosen, rejected)])
    s = 1 / (1 + np.exp(-d))
    assert out["expected"] == pytest.approx(np.maximum(s, 1 - s).mean())
    assert out["measured"] == pytest.approx(np.mean(np.where(d > 0, 1, np.where(d == 0, .5, 0))))


def test_schedules_closed_form():
    sched = optim.make_schedule(dict(learning_rate=1.0, warmup_steps=10, schedule="cosine",
                                     end_lr_fraction=0.1), num_steps=110)
    for t in (0, 5, 10):
        assert float(sched(t)) == pytest.approx(t / 10)
    for t in (10, 35, 60, 110):
        frac = (t - 10) / 100
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        assert float(sched(t)) == pytest.approx(want, rel=1e-5)
    const = optim.make_schedule(dict(learning_rate=0.5, warmup_steps=4), num_steps=100)
    assert [float(const(t)) for t in (0, 2, 4, 50)] == pytest.approx([0, 0.25, 0.5, 0.5])


def test_optim_rejects_bad_fields():
    with pytest.raises(ValueError, match="optim.name"):
        optim.make_optimizer(dict(name="sgd"), 10)
    with pytest.raises(ValueError, match="unknown fields"):
        optim.make_optimizer(dict(lr=1.0), 10)
    with pytest.raises(ValueError, match="optim.schedule"):
        optim.make_schedule(dict(schedule="linear"), 10)
