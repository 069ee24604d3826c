"""Pure loss functions of KL-regularised RLHF: the KL estimates, PPO's clipped surrogate (PPO,
GRPO, Dr. GRPO), PPO's clipped value loss, GRPO's ``k3`` KL term, the REINFORCE loss (RLOO) and
the policy entropy. The advantages they take come from :mod:`lsc.align.advantages`.

Shapes: ``N`` sequences (``N = B * k`` for ``B`` prompts with ``k`` samples each), ``R`` response
tokens. ``mask`` is a float or bool ``[N, R]`` that is 1 on real response tokens (up to and
including EOS) and 0 on padding. All functions are pure ``jax.numpy`` (jittable, differentiable)
and compute in float32.

Per-token KL estimators (Schulman, "Approximating KL divergence", 2020), for a token ``y`` drawn
from the current policy ``pi`` with ``log_r = log pi0(y) - log pi(y)``:

* ``k1 = -log_r = log pi(y) - log pi0(y)`` (unbiased, can be negative);
* ``k3 = exp(log_r) - 1 - log_r`` (unbiased, always ``>= 0``, lower variance).

Both have expectation ``KL(pi || pi0)`` under ``y ~ pi``.

A per-token loss is reduced to a scalar in one of :data:`REDUCTIONS` (:func:`reduce_tokens`):

* ``'token'``: the mean over every response token of the batch (PPO);
* ``'sequence'``: the mean over a sequence's tokens, then over sequences (GRPO);
* ``'constant'``: the token sum over ``N * R`` (Dr. GRPO: long and short responses weigh by their
  tokens).

RLOO (Kool et al. 2019; Ahmadian et al. 2024) takes one REINFORCE step:
``-mean_i A_i * log pi(y_i | x)`` (:func:`rloo_loss`).
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k3")
REDUCTIONS = ("token", "sequence", "constant")

Array = jax.Array


def as_float32(x) -> Array:
    """``x`` as a float32 array."""
    return jnp.asarray(x, jnp.float32)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
    """``sum(x * mask) / max(sum(mask), 1)`` over ``axis`` (all axes by default), float32."""
    m = as_float32(mask)
    return jnp.sum(as_float32(x) * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


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
    log_r = as_float32(logp_ref) - as_float32(logp)
    if estimator == "k1":
        return -log_r
    return jnp.expm1(log_r) - log_r


def reduce_tokens(per_token: Array, mask: Array, reduction: str = "token") -> Array:
    """A ``float32`` scalar of ``per_token [N, R]`` over the valid tokens of ``mask [N, R]``, by
    ``reduction`` (:data:`REDUCTIONS`, module docstring)."""
    if reduction == "token":
        return masked_mean(per_token, mask)
    if reduction == "sequence":
        return jnp.mean(masked_mean(per_token, mask, axis=1))
    if reduction == "constant":
        m = as_float32(mask)
        return jnp.sum(as_float32(per_token) * m) / (m.shape[0] * m.shape[1])
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def ppo_policy_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array,
                    clip_eps: float, reduction: str = "token") -> Tuple[Array, Array]:
    """PPO's clipped surrogate.

    ``ratio = exp(logp - old_logp)``; per token ``max(-A * ratio, -A * clip(ratio, 1 - eps,
    1 + eps))``, reduced by :func:`reduce_tokens`.

    Args:
      logp, old_logp: ``[N, R]`` log-probabilities of the sampled tokens under the current policy
        and the rollout's.
      advantages: ``[N, R]`` per token (PPO) or ``[N]`` per sequence (GRPO); constants.
      mask: ``[N, R]`` response mask.
      clip_eps: the ratio's clipping.
      reduction: one of :data:`REDUCTIONS`.

    Returns:
      ``(loss, clip_fraction)`` float32 scalars; ``clip_fraction`` is the fraction of valid
      tokens where the clipped term is the larger one (strictly).
    """
    ratio = jnp.exp(as_float32(logp) - as_float32(old_logp))
    a = jax.lax.stop_gradient(as_float32(advantages))
    if a.ndim == ratio.ndim - 1:
        a = a[:, None]
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = reduce_tokens(jnp.maximum(unclipped, clipped), mask, reduction)
    frac = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
    return loss, frac


def ppo_value_loss(new_values: Array, old_values: Array, returns: Array, mask: Array,
                   clip_eps: float) -> Tuple[Array, Array]:
    """Clipped value loss ``0.5 * max((v - R)^2, (clip(v, v_old - eps, v_old + eps) - R)^2)``,
    averaged over response tokens; returns ``(loss, clip_fraction)``."""
    v, v_old, ret = as_float32(new_values), as_float32(old_values), as_float32(returns)
    v_clip = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
    l1 = (v - ret) ** 2
    l2 = (v_clip - ret) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(l1, l2), mask)
    frac = masked_mean((l2 > l1).astype(jnp.float32), mask)
    return loss, frac


def kl_loss(logp: Array, logp_ref: Array, mask: Array, reduction: str = "token") -> Array:
    """GRPO's KL term: the ``k3`` estimate (:func:`kl_estimate`) of ``KL(pi || pi0)`` per token,
    reduced by :func:`reduce_tokens` (``float32`` scalar)."""
    return reduce_tokens(kl_estimate(logp, logp_ref, "k3"), mask, reduction)


def rloo_loss(logp: Array, mask: Array, advantages: Array) -> Array:
    """REINFORCE loss ``-mean_i A_i * sum_t logp_{i,t} * mask_{i,t}`` (``float32`` scalar).

    Args:
      logp: ``[N, R]`` log-probabilities of the sampled tokens under the current policy.
      mask: ``[N, R]`` response mask.
      advantages: ``[N]`` (treated as constants).
    """
    seq_logp = jnp.sum(as_float32(logp) * as_float32(mask), axis=-1)
    return -jnp.mean(jax.lax.stop_gradient(as_float32(advantages)) * seq_logp)


def entropy(logits: Array, mask: Array) -> Array:
    """Mean per-token entropy (nats) of ``softmax(logits[N, R, V])`` over response tokens."""
    logp = jax.nn.log_softmax(as_float32(logits), axis=-1)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return masked_mean(ent, mask)
