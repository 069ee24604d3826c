"""Advantage estimators of the policy-gradient algorithms, registered by name in
:data:`ESTIMATORS`; every update of :mod:`lsc.align.rlhf.updates` obtains its advantages here.

``gae`` (PPO; Schulman et al. 2016): per-token advantages ``float32[N, R]`` from per-token rewards
(:func:`token_rewards`: ``-gamma * kl_t`` plus the utility at the response's last token) and the
value head's estimates, ``gae(rewards, values, mask, discount, lam) -> (advantages, returns)``;
:func:`whiten` normalises them over the rollout's tokens.

The group estimators of the critic-free family (:data:`GROUP_ESTIMATORS`), ``estimator(returns,
valid=None) -> float32[B, k]``: a prompt's ``k`` samples form a group. ``returns float[B, k]``
are the sequence returns (the utility, minus ``gamma`` times the sequence KL when the KL is a
reward penalty); ``valid bool[B, k]`` marks the samples that count (a masked sample gets
advantage 0 and enters no group statistic). With ``m`` the group's valid count, mean and std over
its valid samples:

* ``rloo`` (Kool et al. 2019; Ahmadian et al. 2024): ``R_i - mean_{j != i} R_j``;
* ``grpo`` (Shao et al. 2024, DeepSeekMath): ``(R_i - mean) / (std + eps)``, ``std`` with
  ``ddof = 1`` as TRL computes it; a group whose returns are all equal gets 0 (its numerator is
  0, tested as max == min), not ``0 / eps`` noise;
* ``dr_grpo`` (Liu et al. 2025, "Understanding R1-Zero-like training"): ``R_i - mean``, no
  division by the group's std.

A group with fewer than 2 valid samples has no baseline: every group estimator gives its samples
0. Groups of one sample (``k = 1``) are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from lsc.align.losses import as_float32, masked_mean

Array = jax.Array
EPS = 1e-6


def token_rewards(utility: Array, kl: Array, mask: Array, kl_coef) -> Array:
    """PPO's per-token rewards ``float32[N, R]``: ``-kl_coef * kl`` on every response token plus
    ``utility[N]`` on the last real token of each row (a row with no real token gets nothing)."""
    m = as_float32(mask)
    r = -as_float32(kl_coef) * as_float32(kl) * m
    length = jnp.sum(m > 0, axis=1).astype(jnp.int32)
    last = jnp.clip(length - 1, 0, m.shape[1] - 1)
    at_last = jax.nn.one_hot(last, m.shape[1], dtype=jnp.float32) * (length > 0)[:, None]
    return r + at_last * as_float32(utility)[:, None]


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
    m = as_float32(mask)
    r = as_float32(rewards) * m
    v = as_float32(values) * m
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
    m = as_float32(mask)
    mean = masked_mean(x, m)
    var = masked_mean((as_float32(x) - mean) ** 2, m)
    return (as_float32(x) - mean) * jax.lax.rsqrt(var + eps) * m


def _prepare(returns, valid) -> Tuple[Array, Array, Array]:
    r = jnp.asarray(returns, jnp.float32)
    if r.ndim != 2:
        raise ValueError(f"returns must have shape [B, k], got {r.shape}")
    if r.shape[1] < 2:
        raise ValueError(f"group advantages need at least 2 samples per prompt "
                         f"(rl.num_samples), got k={r.shape[1]}")
    v = jnp.ones(r.shape, bool) if valid is None else jnp.asarray(valid, bool)
    if v.shape != r.shape:
        raise ValueError(f"valid {v.shape} must have the shape of returns {r.shape}")
    w = v.astype(jnp.float32)
    count = jnp.sum(w, axis=1, keepdims=True)
    return r * w, w, count


def rloo(returns, valid=None) -> Array:
    """Leave-one-out: ``R_i - mean_{j != i} R_j`` over the valid samples (module docstring)."""
    r, w, count = _prepare(returns, valid)
    others = jnp.maximum(count - 1.0, 1.0)
    adv = r - (jnp.sum(r, axis=1, keepdims=True) - r) / others
    return jnp.where((count >= 2) & (w > 0), adv, 0.0)


def _centred(returns, valid):
    r, w, count = _prepare(returns, valid)
    mean = jnp.sum(r, axis=1, keepdims=True) / jnp.maximum(count, 1.0)
    return (r - mean) * w, w, count


def standardize(x, valid=None, eps: float = EPS) -> Array:
    """``(x - mean) / (std + eps)`` over axis 1 (a prompt's ``k`` samples), ``std`` with
    ``ddof = 1``, over the valid samples only.

    Args:
      x: ``float32[B, k]`` or ``float32[B, k, m]`` (then each of the ``m`` columns separately).
      valid: ``bool[B, k]`` samples that count, or None for all.

    Returns:
      ``x``'s shape; 0 for masked samples, for groups with fewer than 2 valid samples and for
      groups whose valid values are all equal (tested as max == min, so a rounding residue of
      the mean is not divided by ``eps``).
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must have shape [B, k] or [B, k, m], got {x.shape}")
    v = jnp.ones(x.shape[:2], bool) if valid is None else jnp.asarray(valid, bool)
    if v.shape != x.shape[:2]:
        raise ValueError(f"valid {v.shape} must have the shape {x.shape[:2]}")
    v = v.reshape(v.shape + (1,) * (x.ndim - 2))
    w = v.astype(jnp.float32)
    count = jnp.sum(w, axis=1, keepdims=True)
    mean = jnp.sum(jnp.where(v, x, 0.0), axis=1, keepdims=True) / jnp.maximum(count, 1.0)
    d = jnp.where(v, x - mean, 0.0)
    var = jnp.sum(d * d, axis=1, keepdims=True) / jnp.maximum(count - 1.0, 1.0)
    spread = (jnp.max(jnp.where(v, x, -jnp.inf), axis=1, keepdims=True)
              > jnp.min(jnp.where(v, x, jnp.inf), axis=1, keepdims=True))
    ok = spread & (var > 0.0) & (count >= 2.0)
    std = jnp.sqrt(jnp.where(ok, var, 1.0))  # finite gradients where the result is 0
    return jnp.where(ok & v, d / (std + eps), 0.0)


def grpo(returns, valid=None, eps: float = EPS) -> Array:
    """``(R_i - mean) / (std + eps)`` per group, ``std`` with ``ddof = 1`` (module docstring;
    :func:`standardize`)."""
    _prepare(returns, valid)
    return standardize(returns, valid, eps)


def dr_grpo(returns, valid=None) -> Array:
    """``R_i - mean`` per group (module docstring)."""
    d, w, count = _centred(returns, valid)
    return jnp.where((count >= 2) & (w > 0), d, 0.0)


ESTIMATORS: Dict[str, Callable[..., Any]] = {"gae": gae, "rloo": rloo, "grpo": grpo,
                                            "dr_grpo": dr_grpo}
"""Every advantage estimator by name (module docstring: ``gae`` and the group estimators)."""
GROUP_ESTIMATORS = ("rloo", "grpo", "dr_grpo")


def group_advantages(name: str, returns, valid=None) -> Array:
    """``float32[B, k]`` advantages of group estimator ``name`` (:data:`GROUP_ESTIMATORS`,
    looked up in :data:`ESTIMATORS`)."""
    if name not in GROUP_ESTIMATORS:
        raise ValueError(f"unknown group advantage estimator {name!r}; choose one of "
                         f"{list(GROUP_ESTIMATORS)}")
    return ESTIMATORS[name](returns, valid)


def group_stats(returns, valid=None) -> Dict[str, Array]:
    """Per-step statistics of the groups: the mean within-group std of the returns and the
    fraction of groups whose returns are all equal (no signal under any estimator)."""
    d, w, count = _centred(returns, valid)
    var = jnp.sum(d * d, axis=1) / jnp.maximum(count[:, 0] - 1.0, 1.0)
    return {"group_std": jnp.mean(jnp.sqrt(var)),
            "zero_std_fraction": jnp.mean((var <= 0.0).astype(jnp.float32))}
