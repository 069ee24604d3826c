"""Advantage estimators against hand-computed values and numpy references: GAE and PPO's token
rewards; the group estimators on groups with zero std, masked samples, groups left with one valid
sample, one-sample groups refused."""

import jax.numpy as jnp
import numpy as np
import pytest

from lsc.align import advantages as adv_lib

RETURNS = np.array([[1.0, 2.0, 4.0, 1.0],
                    [3.0, 3.0, 3.0, 3.0],    # zero std
                    [0.5, -1.0, 2.0, 7.0],   # last sample masked
                    [5.0, 1.0, 2.0, 3.0]])   # only one valid sample
VALID = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0]], bool)


def reference(name, returns, valid, eps=adv_lib.EPS):
    out = np.zeros_like(returns)
    for b in range(returns.shape[0]):
        idx = np.flatnonzero(valid[b])
        if idx.size < 2:
            continue
        r = returns[b, idx]
        for pos, i in enumerate(idx):
            if name == "rloo":
                out[b, i] = r[pos] - np.delete(r, pos).mean()
            elif name == "grpo":
                out[b, i] = (r[pos] - r.mean()) / (r.std(ddof=1) + eps)
            else:
                out[b, i] = r[pos] - r.mean()
    return out


@pytest.mark.parametrize("name", adv_lib.GROUP_ESTIMATORS)
def test_estimators_match_numpy(name):
    got = np.asarray(adv_lib.group_advantages(name, RETURNS, VALID))
    want = reference(name, RETURNS, VALID)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[1] == 0.0)  # equal returns: no signal, not 0 / eps noise
    assert np.all(got[3] == 0.0) and got[2, 3] == 0.0  # one valid sample; a masked sample
    full = np.asarray(adv_lib.group_advantages(name, RETURNS[:1]))
    np.testing.assert_allclose(full, reference(name, RETURNS[:1], VALID[:1]), rtol=1e-5)


def test_hand_values_and_refusals():
    # Group [1, 2, 4, 1]: mean 2, std (ddof 1) sqrt(2).
    np.testing.assert_allclose(np.asarray(adv_lib.dr_grpo(RETURNS[:1]))[0], [-1, 0, 2, -1])
    np.testing.assert_allclose(np.asarray(adv_lib.grpo(RETURNS[:1]))[0],
                               np.array([-1, 0, 2, -1]) / (np.sqrt(2) + adv_lib.EPS), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adv_lib.rloo(RETURNS[:1]))[0],
                               [1 - 7 / 3, 2 - 2, 4 - 4 / 3, 1 - 7 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"at least 2 samples per prompt \(rl.num_samples\), "
                                         r"got k=1"):
        adv_lib.grpo(np.ones((3, 1)))
    with pytest.raises(ValueError, match="unknown group advantage estimator 'gae'"):
        adv_lib.group_advantages("gae", RETURNS)
    with pytest.raises(ValueError, match="shape of returns"):
        adv_lib.rloo(RETURNS, VALID[:, :2])


def test_gae_hand_computed():
    rewards = jnp.array([[0.0, 0.0, 1.0], [0.0, 1.0, 7.0]])
    values = jnp.array([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])
    adv, ret = adv_lib.gae(rewards, values, mask, discount=1.0, lam=0.9)
    # row 0: deltas 0.1, 0.1, 0.3 -> A2 = 0.3, A1 = 0.1 + 0.9 * 0.3, A0 = 0.1 + 0.9 * A1
    a1 = 0.1 + 0.9 * 0.3
    np.testing.assert_allclose(np.asarray(adv[0]), [0.1 + 0.9 * a1, a1, 0.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret[0]), [0.1 + 0.9 * a1 + 0.5, a1 + 0.6, 1.0],
                               rtol=1e-6)
    # row 1: the last real token is 1; the padded value 9 and reward 7 are ignored.
    np.testing.assert_allclose(np.asarray(adv[1]), [0.1 + 0.9 * 0.4, 0.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret[1]), [0.46 + 0.5, 1.0, 0.0], rtol=1e-6)


def test_token_rewards_hand_computed():
    r = adv_lib.token_rewards(jnp.array([2.0, 3.0]), jnp.array([[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]]),
                             jnp.array([[1, 1, 0], [1, 1, 1]]), kl_coef=0.5)
    np.testing.assert_allclose(np.asarray(r), [[-0.05, -0.1 + 2.0, 0.0],
                                               [-0.05, -0.05, -0.05 + 3.0]], rtol=1e-6)


def test_rloo_hand_computed():
    adv = adv_lib.rloo(jnp.array([[1.0, 2.0, 3.0, 6.0]]))
    np.testing.assert_allclose(np.asarray(adv), [[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        adv_lib.rloo(jnp.ones((3, 1)))


def test_whiten():
    w = adv_lib.whiten(jnp.array([[1.0, 3.0, 100.0]]), jnp.array([[1, 1, 0]]))
    np.testing.assert_allclose(np.asarray(w), [[-1.0, 1.0, 0.0]], rtol=1e-5)


def test_group_stats():
    stats = adv_lib.group_stats(RETURNS[:2])
    np.testing.assert_allclose(float(stats["group_std"]), np.sqrt(2) / 2, rtol=1e-6)
    assert float(stats["zero_std_fraction"]) == 0.5


def test_equal_returns_give_zero_despite_rounding_of_the_mean():
    # 0.01 * 6 / 6 != 0.01 in float32: the mean's rounding residue must not be divided by eps.
    returns = np.full((2, 6), 0.01, np.float32)
    returns[1] = [0.3, 0.3, 0.3, 0.7, 0.3, 0.3]
    valid = np.ones((2, 6), bool)
    valid[1, 3] = False  # the only different value is masked: the valid ones are equal
    got = np.asarray(adv_lib.grpo(returns, valid))
    assert np.all(got == 0.0), got
    # The per-property form (GDPO's normalisation) agrees column by column.
    stacked = np.stack([returns, 2 * returns], axis=-1)
    both = np.asarray(adv_lib.standardize(stacked, valid))
    assert np.all(both == 0.0)
