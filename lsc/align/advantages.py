"""Group advantage estimators of the critic-free policy-gradient family, registered by name, and
their token-level losses.

A prompt's ``k`` samples form a group. ``returns float[B, k]`` are the sequence returns (the
utility, minus ``gamma`` times the sequence KL when the KL is a reward penalty); ``valid bool[B,
k]`` marks the samples that count (a masked sample gets advantage 0 and enters no group
statistic). With ``m`` the group's valid count, mean and std over its valid samples:

* ``rloo`` (Kool et al. 2019; Ahmadian et al. 2024): ``R_i - mean_{j != i} R_j``;
* ``grpo`` (Shao et al. 2024, DeepSeekMath): ``(R_i - mean) / (std + eps)``, ``std`` with
  ``ddof = 1`` as TRL computes it; a group whose returns are all equal gets 0 (its numerator is
  0, tested as max == min), not ``0 / eps`` noise;
* ``dr_grpo`` (Liu et al. 2025, "Understanding R1-Zero-like training"): ``R_i - mean``, no
  division by the group's std.

A group with fewer than 2 valid samples has no baseline: every estimator gives its samples 0.
Groups of one sample (``k = 1``) are refused.

Losses (``N = B * k`` sequences, ``R`` tokens, ``mask [N, R]``), PPO's clipped ratio per token with
the sequence's advantage: :func:`policy_loss` normalises per sequence length (``grpo``: the mean
over a sequence's tokens, then over sequences) or by a constant (``dr_grpo``: the token sum over
``N * R``, so long and short responses weigh by their tokens); :func:`kl_loss` is GRPO's ``k3``
KL as a loss term with the same normalisation.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
EPS = 1e-6


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


ESTIMATORS: Dict[str, Callable[..., Array]] = {"rloo": rloo, "grpo": grpo, "dr_grpo": dr_grpo}
LENGTH_NORMALISED = {"rloo": True, "grpo": True, "dr_grpo": False}


def group_advantages(name: str, returns, valid=None) -> Array:
    """``float32[B, k]`` advantages of estimator ``name`` (:data:`ESTIMATORS`)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of "
                         f"{sorted(ESTIMATORS)}")
    return ESTIMATORS[name](returns, valid)


def _reduce(per_token: Array, mask: Array, length_normalised: bool) -> Array:
    m = jnp.asarray(mask, jnp.float32)
    if length_normalised:
        per_seq = jnp.sum(per_token * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        return jnp.mean(per_seq)
    return jnp.sum(per_token * m) / (m.shape[0] * m.shape[1])


def policy_loss(logp, old_logp, advantages, mask, clip_eps: float,
                length_normalised: bool = True) -> Tuple[Array, Array]:
    """PPO's clipped surrogate with one advantage per sequence (``advantages [N]``, constants).

    Returns ``(loss, clip_fraction)``: per token ``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` with
    ``r = exp(logp - old_logp)``, reduced by :func:`_reduce` (``length_normalised``: GRPO's mean
    per sequence; else Dr. GRPO's constant ``N * R``); the clip fraction over valid tokens.
    """
    ratio = jnp.exp(jnp.asarray(logp, jnp.float32) - jnp.asarray(old_logp, jnp.float32))
    a = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))[:, None]
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    m = jnp.asarray(mask, jnp.float32)
    frac = jnp.sum((clipped > unclipped) * m) / jnp.maximum(jnp.sum(m), 1.0)
    return _reduce(jnp.maximum(unclipped, clipped), mask, length_normalised), frac


def kl_loss(logp, logp_ref, mask, length_normalised: bool = True) -> Array:
    """GRPO's KL term: ``k3 = exp(log_ref - log) - (log_ref - log) - 1`` per token, reduced as
    :func:`policy_loss` reduces its surrogate."""
    d = jnp.asarray(logp_ref, jnp.float32) - jnp.asarray(logp, jnp.float32)
    return _reduce(jnp.exp(d) - d - 1.0, mask, length_normalised)


def group_stats(returns, valid=None) -> Dict[str, Array]:
    """Per-step statistics of the groups: the mean within-group std of the returns and the
    fraction of groups whose returns are all equal (no signal under any estimator)."""
    d, w, count = _centred(returns, valid)
    var = jnp.sum(d * d, axis=1) / jnp.maximum(count[:, 0] - 1.0, 1.0)
    return {"group_std": jnp.mean(jnp.sqrt(var)),
            "zero_std_fraction": jnp.mean((var <= 0.0).astype(jnp.float32))}
