"""RL losses and KL estimators against hand-computed values, numpy and exact KL divergences."""

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


def test_rloo_loss_hand_computed():
    a = jnp.array([1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0])
    logp = jnp.array([[-1.0, 0.0], [-1.5, -0.5], [-0.5, -9.0], [-1.0, -2.0]])
    mask = jnp.array([[1, 0], [1, 1], [1, 0], [1, 1]])  # sequence log-probs -1, -2, -0.5, -3
    loss = losses.rloo_loss(logp, mask, a)
    np.testing.assert_allclose(float(loss), -(8 / 3 + 8 / 3 + 0.0 - 12.0) / 4, rtol=1e-6)
    grad = jax.grad(losses.rloo_loss)(logp, mask, a)
    np.testing.assert_allclose(np.asarray(grad), -np.asarray(a)[:, None] / 4 * np.asarray(mask),
                               rtol=1e-6)


def test_clipped_surrogate_and_kl_loss_reduce_per_token_per_sequence_or_by_a_constant():
    """Sequence advantages ``[N]`` broadcast over tokens; PPO's token mean, GRPO's mean per
    sequence and Dr. GRPO's constant ``N * R`` (numpy)."""
    rng = np.random.default_rng(0)
    n, r = 4, 5
    logp = rng.normal(-1.0, 0.3, (n, r))
    old = logp + rng.normal(0.0, 0.3, (n, r))
    ref = logp + rng.normal(0.0, 0.5, (n, r))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], float)
    a = np.array([0.5, -1.0, 2.0, 0.0])
    eps = 0.2
    ratio = np.exp(logp - old)
    per_tok = np.maximum(-a[:, None] * ratio, -a[:, None] * np.clip(ratio, 1 - eps, 1 + eps))
    per_seq = (per_tok * mask).sum(1) / mask.sum(1)
    loss, frac = losses.ppo_policy_loss(logp, old, a, mask, eps, reduction="sequence")
    np.testing.assert_allclose(float(loss), per_seq.mean(), rtol=1e-5)
    loss_dr, _ = losses.ppo_policy_loss(logp, old, a, mask, eps, reduction="constant")
    np.testing.assert_allclose(float(loss_dr), (per_tok * mask).sum() / (n * r), rtol=1e-5)
    loss_tok, frac_tok = losses.ppo_policy_loss(logp, old, np.repeat(a[:, None], r, 1), mask,
                                                eps)
    np.testing.assert_allclose(float(loss_tok), (per_tok * mask).sum() / mask.sum(), rtol=1e-5)
    assert float(frac_tok) == float(frac)
    clipped = (-a[:, None] * np.clip(ratio, 1 - eps, 1 + eps)) > (-a[:, None] * ratio)
    np.testing.assert_allclose(float(frac), (clipped * mask).sum() / mask.sum(), rtol=1e-6)
    d = ref - logp
    k3 = np.exp(d) - d - 1
    np.testing.assert_allclose(float(losses.kl_loss(logp, ref, mask, "sequence")),
                               ((k3 * mask).sum(1) / mask.sum(1)).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(losses.kl_loss(logp, ref, mask, "constant")),
                               (k3 * mask).sum() / (n * r), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown reduction"):
        losses.reduce_tokens(per_tok, mask, "mean")



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


def test_entropy():
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    ent = losses.entropy(logits, jnp.array([[1, 0]]))
    np.testing.assert_allclose(float(ent), np.log(2), rtol=1e-6)
