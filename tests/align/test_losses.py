"""RL losses and KL estimators against hand-computed values and exact KL divergences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsc.align import losses


def test_ppo_policy_loss_hand_computed():
    logp = jnp.log(jnp.array([[0.5, 0.25, 0.1]]))
    old = jnp.log(jnp.array([[0.25, 0.25, 0.1]]))
    adv = jnp.array([[1.0, -2.0, 5.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    # token 0: ratio 2 -> max(-2, -1.2) = -1.2 (clipped); token 1: ratio 1 -> 2; token 2 masked.
    loss, frac = losses.ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    np.testing.assert_allclose(float(loss), (-1.2 + 2.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(frac), 0.5)
    # Negative advantage with ratio < 1 - eps is clipped too: ratio 0.5, A = -1 -> max(0.5, 0.8).
    loss, frac = losses.ppo_policy_loss(jnp.log(jnp.array([[0.1]])), jnp.log(jnp.array([[0.2]])),
                                        jnp.array([[-1.0]]), jnp.ones((1, 1)), clip_eps=0.2)
    np.testing.assert_allclose(float(loss), 0.8, rtol=1e-6)
    assert float(frac) == 1.0


def test_ppo_value_loss_hand_computed():
    v = jnp.array([[1.0, 0.0, 3.0]])
    old = jnp.array([[0.5, 0.0, 0.0]])
    ret = jnp.array([[2.0, 1.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    # token 0: (1-2)^2 = 1 vs (0.7-2)^2 = 1.69 -> 1.69; token 1: 1 vs 1 -> 1.
    loss, frac = losses.ppo_value_loss(v, old, ret, mask, clip_eps=0.2)
    np.testing.assert_allclose(float(loss), 0.5 * (1.69 + 1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(frac), 0.5)


def test_gae_hand_computed():
    rewards = jnp.array([[0.0, 0.0, 1.0], [0.0, 1.0, 7.0]])
    values = jnp.array([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])
    adv, ret = losses.gae(rewards, values, mask, discount=1.0, lam=0.9)
    # row 0: deltas 0.1, 0.1, 0.3 -> A2 = 0.3, A1 = 0.1 + 0.9 * 0.3, A0 = 0.1 + 0.9 * A1
    a1 = 0.1 + 0.9 * 0.3
    np.testing.assert_allclose(np.asarray(adv[0]), [0.1 + 0.9 * a1, a1, 0.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret[0]), [0.1 + 0.9 * a1 + 0.5, a1 + 0.6, 1.0],
                               rtol=1e-6)
    # row 1: the last real token is 1; the padded value 9 and reward 7 are ignored.
    np.testing.assert_allclose(np.asarray(adv[1]), [0.1 + 0.9 * 0.4, 0.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret[1]), [0.46 + 0.5, 1.0, 0.0], rtol=1e-6)


def test_token_rewards_hand_computed():
    r = losses.token_rewards(jnp.array([2.0, 3.0]), jnp.array([[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]]),
                             jnp.array([[1, 1, 0], [1, 1, 1]]), kl_coef=0.5)
    np.testing.assert_allclose(np.asarray(r), [[-0.05, -0.1 + 2.0, 0.0],
                                               [-0.05, -0.05, -0.05 + 3.0]], rtol=1e-6)


def test_rloo_hand_computed():
    returns = jnp.array([[1.0, 2.0, 3.0, 6.0]])
    adv = losses.rloo_advantages(returns)
    np.testing.assert_allclose(np.asarray(adv), [[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0]], rtol=1e-6)
    logp = jnp.array([[-1.0, 0.0], [-1.5, -0.5], [-0.5, -9.0], [-1.0, -2.0]])
    mask = jnp.array([[1, 0], [1, 1], [1, 0], [1, 1]])  # sequence log-probs -1, -2, -0.5, -3
    a = adv.reshape(-1)
    loss = losses.rloo_loss(logp, mask, a)
    np.testing.assert_allclose(float(loss), -(8 / 3 + 8 / 3 + 0.0 - 12.0) / 4, rtol=1e-6)
    grad = jax.grad(losses.rloo_loss)(logp, mask, a)
    np.testing.assert_allclose(np.asarray(grad), -np.asarray(a)[:, None] / 4 * np.asarray(mask),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        losses.rloo_advantages(jnp.ones((3, 1)))


def _categoricals(seed, n=6):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n))
    q = rng.dirichlet(np.ones(n))
    return p, q


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_estimators_match_exact_kl(estimator):
    for seed in range(3):
        p, q = _categoricals(seed)
        exact = float(np.sum(p * np.log(p / q)))
        per_token = np.asarray(losses.kl_estimate(jnp.log(p), jnp.log(q), estimator), np.float64)
        # The expectation under pi = p, enumerated exactly.
        np.testing.assert_allclose(np.sum(p * per_token), exact, rtol=1e-5, atol=1e-7)
        # Monte Carlo: the mean over draws from p is within 4 standard errors.
        rng = np.random.default_rng(100 + seed)
        draws = rng.choice(len(p), size=200_000, p=p)
        est = per_token[draws]
        assert abs(est.mean() - exact) < 4 * est.std() / np.sqrt(len(est)) + 1e-6
        if estimator == "k3":
            assert np.all(per_token >= 0)


def test_kl_estimator_rejects_unknown():
    with pytest.raises(ValueError, match="unknown KL estimator"):
        losses.kl_estimate(jnp.zeros(2), jnp.zeros(2), "k2")


def test_entropy_and_whiten():
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    ent = losses.entropy(logits, jnp.array([[1, 0]]))
    np.testing.assert_allclose(float(ent), np.log(2), rtol=1e-6)
    x = jnp.array([[1.0, 3.0, 100.0]])
    w = losses.whiten(x, jnp.array([[1, 1, 0]]))
    np.testing.assert_allclose(np.asarray(w), [[-1.0, 1.0, 0.0]], rtol=1e-5)
