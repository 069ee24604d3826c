"""Pure loss functions of KL-regularised RLHF (PPO and REINFORCE with a leave-one-out baseline).

Shapes: ``N`` sequences (``N = B * k`` for ``B`` prompts with ``k`` samples each), ``R`` response
tokens. ``mask`` is a float or bool ``[N, R]`` that is 1 on real response tokens (up to and
including EOS) and 0 on padding. All functions are pure ``jax.numpy`` (jittable, differentiable)
and compute in float32.

Per-token KL estimators (Schulman, "Approximating KL divergence", 2020), for a token ``y`` drawn
from the current policy ``pi`` with ``log_r = log pi0(y) - log pi(y)``:

* ``k1 = -log_r = log pi(y) - log pi0(y)`` (unbiased, can be negative);
* ``k3 = exp(log_r) - 1 - log_r`` (unbiased, always ``>= 0``, lower variance).

Both have expectation ``KL(pi || pi0)`` under ``y ~ pi``.

PPO (Schulman et al. 2017; the RLHF form of Ziegler et al. 2019 / Ouyang et al. 2022): the
per-token reward is ``-gamma * kl_t`` plus the utility ``u(x, y)`` at the response's last token;
advantages come from GAE over the value head's estimates; the clipped surrogate and the clipped
value loss are averaged over response tokens.

RLOO (Kool et al. 2019; Ahmadian et al. 2024): with ``k`` samples per prompt and sequence returns
``R_i = u_i - gamma * sum_t kl_{i,t}``, the advantage of sample ``i`` is
``R_i - mean_{j != i} R_j``, and the loss is ``-mean_i A_i * log pi(y_i | x)``.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k3")

Array = jax.Array


def _f32(x) -> Array:
    return jnp.asarray(x, jnp.float32)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
    """``sum(x * mask) / max(sum(mask), 1)`` over ``axis`` (all axes by default), float32."""
    m = _f32(mask)
    return jnp.sum(_f32(x) * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def kl_estimate(logp: Array, logp_ref: Array, estimator: str = "k1") -> Array:
    """Per-token KL estimate ``float32[...]`` of ``KL(pi || pi0)`` at tokens sampled from ``pi``.

    Args:
      logp: ``[...]`` log-probabilities of the sampled tokens under the current policy ``pi``.
      logp_ref: ``[...]`` log-probabilities of the same tokens under the base policy ``pi0``.
      estimator: ``'k1'`` (``logp - logp_ref``) or ``'k3'`` (``exp(d) - 1 - d`` with
        ``d = logp_ref - logp``).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")
    log_r = _f32(logp_ref) - _f32(logp)
    if estimator == "k1":
        return -log_r
    return jnp.expm1(log_r) - log_r


def token_rewards(utility: Array, kl: Array, mask: Array, kl_coef) -> Array:
    """PPO's per-token rewards ``float32[N, R]``: ``-kl_coef * kl`` on every response token plus
    ``utility[N]`` on the last real token of each row (a row with no real token gets nothing)."""
    m = _f32(mask)
    r = -_f32(kl_coef) * _f32(kl) * m
    length = jnp.sum(m > 0, axis=1).astype(jnp.int32)
    last = jnp.clip(length - 1, 0, m.shape[1] - 1)
    at_last = jax.nn.one_hot(last, m.shape[1], dtype=jnp.float32) * (length > 0)[:, None]
    return r + at_last * _f32(utility)[:, None]


def gae(rewards: Array, values: Array, mask: Array, discount: float = 1.0,
        lam: float = 0.95) -> Tuple[Array, Array]:
    """Generalised advantage estimation over right-padded sequences.

    ``delta_t = r_t + discount * V_{t+1} - V_t`` with ``V`` past the last real token taken as 0,
    ``A_t = delta_t + discount * lam * A_{t+1}``; padding positions get ``A = 0`` and do not
    propagate.

    Args:
      rewards, values: ``float32[N, R]``.
      mask: ``[N, R]``, 1 on real tokens (a prefix of each row).
      discount, lam: the discount and the GAE lambda.

    Returns:
      ``(advantages, returns)``, both ``float32[N, R]``, with ``returns = advantages + values``
      (0 on padding).
    """
    m = _f32(mask)
    r = _f32(rewards) * m
    v = _f32(values) * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    next_m = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
    delta = (r + discount * next_v * next_m - v) * m

    def step(carry, xs):
        d, mt, nm = xs
        a = d + discount * lam * carry * nm
        a = a * mt
        return a, a

    xs = (delta.T, m.T, next_m.T)
    _, adv_t = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32), xs, reverse=True)
    adv = adv_t.T
    return adv, (adv + v) * m


def whiten(x: Array, mask: Array, eps: float = 1e-8) -> Array:
    """``(x - mean) / sqrt(var + eps)`` over the valid entries (0 elsewhere)."""
    m = _f32(mask)
    mean = masked_mean(x, m)
    var = masked_mean((_f32(x) - mean) ** 2, m)
    return (_f32(x) - mean) * jax.lax.rsqrt(var + eps) * m


def ppo_policy_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array,
                    clip_eps: float) -> Tuple[Array, Array]:
    """PPO's clipped surrogate, averaged over response tokens.

    ``ratio = exp(logp - old_logp)``; per token ``max(-A * ratio, -A * clip(ratio, 1 - eps,
    1 + eps))``.

    Returns:
      ``(loss, clip_fraction)`` float32 scalars; ``clip_fraction`` is the fraction of tokens where
      the clipped term is the larger one (strictly).
    """
    ratio = jnp.exp(_f32(logp) - _f32(old_logp))
    a = _f32(advantages)
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    frac = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
    return loss, frac


def ppo_value_loss(new_values: Array, old_values: Array, returns: Array, mask: Array,
                   clip_eps: float) -> Tuple[Array, Array]:
    """Clipped value loss ``0.5 * max((v - R)^2, (clip(v, v_old - eps, v_old + eps) - R)^2)``,
    averaged over response tokens; returns ``(loss, clip_fraction)``."""
    v, v_old, ret = _f32(new_values), _f32(old_values), _f32(returns)
    v_clip = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
    l1 = (v - ret) ** 2
    l2 = (v_clip - ret) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(l1, l2), mask)
    frac = masked_mean((l2 > l1).astype(jnp.float32), mask)
    return loss, frac


def rloo_advantages(returns: Array) -> Array:
    """Leave-one-out advantages ``float32[B, k]``: ``R_i - mean_{j != i} R_j`` over the ``k``
    samples of each prompt (``k >= 2``)."""
    r = _f32(returns)
    k = r.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got k={k}")
    total = jnp.sum(r, axis=-1, keepdims=True)
    return r - (total - r) / (k - 1)


def rloo_loss(logp: Array, mask: Array, advantages: Array) -> Array:
    """REINFORCE loss ``-mean_i A_i * sum_t logp_{i,t} * mask_{i,t}`` (``float32`` scalar).

    Args:
      logp: ``[N, R]`` log-probabilities of the sampled tokens under the current policy.
      mask: ``[N, R]`` response mask.
      advantages: ``[N]`` (treated as constants).
    """
    seq_logp = jnp.sum(_f32(logp) * _f32(mask), axis=-1)
    return -jnp.mean(jax.lax.stop_gradient(_f32(advantages)) * seq_logp)


def entropy(logits: Array, mask: Array) -> Array:
    """Mean per-token entropy (nats) of ``softmax(logits[N, R, V])`` over response tokens."""
    logp = jax.nn.log_softmax(_f32(logits), axis=-1)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return masked_mean(ent, mask)
