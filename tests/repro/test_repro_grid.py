"""The best-of-k grid: selection among the first k samples and its entries, against numpy."""

import math

import numpy as np
import pytest

from lsc.eval import report as report_lib
from lsc.repro import grid

PROPS = ("harmless", "helpful")


def _sigma_and(r, ref):
    # sigma_AND = logit(prod_i sigma(r_i - ref_i)), in float64.
    z = np.asarray(r, np.float64) - np.asarray(ref, np.float64)[:, None, :]
    log_p = np.sum(-np.logaddexp(0.0, -z), axis=-1)
    return log_p - np.log1p(-np.exp(log_p))


def test_select_first_k_is_argmax_of_the_prefix_lowest_index_on_ties():
    u = np.array([[0.0, 2.0, 2.0, 5.0], [3.0, 3.0, 1.0, 9.0]])
    np.testing.assert_array_equal(grid.select_first_k(u, 1), [0, 0])
    np.testing.assert_array_equal(grid.select_first_k(u, 3), [1, 0])
    np.testing.assert_array_equal(grid.select_first_k(u, 4), [3, 3])
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        grid.select_first_k(u, 5)


def test_utilities_match_numpy_formulas():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 3, 2)).astype(np.float32)
    ref = rng.normal(size=(5, 2)).astype(np.float32)
    np.testing.assert_allclose(grid.utilities("sigma_and", PROPS, r, ref), _sigma_and(r, ref),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grid.utilities("sum", PROPS, r, np.zeros_like(ref)), r.sum(-1),
                               rtol=1e-6)


def test_grid_entries_against_a_direct_computation():
    rng = np.random.default_rng(1)
    n, big_k = 40, 8
    rewards = rng.normal(size=(n, big_k, 2)).astype(np.float32)
    gold = rewards + rng.normal(size=rewards.shape)  # correlated judge
    base_gold = rng.normal(size=(n, 2))
    refs = {"oracle_median": np.median(rewards, axis=1)}
    kl_rewards = rng.normal(size=(n, 16, 2)).astype(np.float32)
    entries = grid.grid_entries(
        properties=PROPS, cells=[("sigma_and", "oracle_median"), ("sum", "none")], ks=[1, 4],
        rewards=rewards, gold=gold, references=refs, base_gold=base_gold, kl_rewards=kl_rewards,
        bootstrap={"num_resamples": 200, "seed": 0})
    report_lib.validate_entries(entries)
    assert [e["name"] for e in entries] == [
        "best_of_k/sigma_and_oracle_median/k1", "best_of_k/sigma_and_oracle_median/k4",
        "best_of_k/sum/k1", "best_of_k/sum/k4"]
    e = entries[1]
    u = _sigma_and(rewards.astype(np.float64), refs["oracle_median"])
    idx = np.argmax(u[:, :4], axis=1)
    chosen = gold[np.arange(n), idx]
    o = (chosen > base_gold) + 0.5 * (chosen == base_gold)
    assert e["win_rate"]["helpful"]["value"] == pytest.approx(o[:, 1].mean())
    assert e["win_rate"]["and"]["value"] == pytest.approx(o.min(axis=1).mean())
    assert e["win_rate"]["or"]["value"] == pytest.approx(o.max(axis=1).mean())
    assert e["gold"]["helpful"] == pytest.approx(chosen[:, 1].mean())
    assert e["proxy_reward"]["harmless"] == pytest.approx(rewards[np.arange(n), idx, 0].mean())
    assert e["kl_analytic"] == pytest.approx(math.log(4) - 3 / 4)
    # Distinct continuous utilities: the plug-in KL is below the analytic value (16 atoms).
    assert 0 < e["kl"]["mean"] <= e["kl_analytic"]
    # k = 1 is the first sample whatever the utility.
    first = gold[:, 0]
    assert entries[2]["gold"]["helpful"] == pytest.approx(first[:, 1].mean())
    assert entries[0]["kl"]["mean"] == pytest.approx(0.0)
