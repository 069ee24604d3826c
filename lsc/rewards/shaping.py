"""Further published reward shapings, for ablations against LSC.

Each is a pure ``jax.numpy`` function (jittable, differentiable where the shaping is) that
computes in float32 or wider and returns the input's floating dtype.

* :func:`par` -- Preference As Reward (Fu et al. 2025, "Reward Shaping to Mitigate Reward Hacking
  in RLHF", arXiv 2502.18770): ``mean_j sigma(r - r_ref_j)`` over ``m`` reference responses.
* :func:`clip` -- reward clipping to ``[low, high]`` (the "Clip" baseline of the same paper; an
  upper bound caps the gain from hacking a proxy).
* :func:`batch_normalize` -- per-batch mean/std normalisation ``(r - mean) / (std + eps)``
  (the "Meanstd" baseline of the same paper; common in PPO implementations).
* :func:`batch_minmax` -- per-batch min-max scaling to [0, 1] (the "Minmax" baseline there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lsc.rewards._dtypes import compute_dtype


def par(r: jax.Array, r_refs: jax.Array, ref_mask: jax.Array | None = None) -> jax.Array:
    """Preference As Reward: ``mean_j sigma(r - r_ref_j)``.

    Args:
      r: ``[...]`` rewards.
      r_refs: ``[..., m]`` rewards of ``m`` reference responses for the same prompt (leading dims
        broadcast against ``r``).
      ref_mask: optional bool ``[..., m]``, True for valid references.

    Returns:
      ``[...]`` values in (0, 1): the average probability of beating a reference.
    """
    out, inner = compute_dtype(r)
    p = jax.nn.sigmoid(jnp.asarray(r, inner)[..., None] - jnp.asarray(r_refs, inner))
    if ref_mask is None:
        return jnp.mean(p, axis=-1).astype(out)
    m = jnp.broadcast_to(jnp.asarray(ref_mask, bool), p.shape)
    total = jnp.sum(jnp.where(m, p, 0.0), axis=-1)
    return (total / jnp.maximum(jnp.sum(m, axis=-1), 1)).astype(out)


def clip(r: jax.Array, low: float | None = None, high: float | None = None) -> jax.Array:
    """Clips rewards to ``[low, high]`` (either bound may be None)."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"clip needs low <= high, got low={low}, high={high}")
    out, inner = compute_dtype(r)
    return jnp.clip(jnp.asarray(r, inner), low, high).astype(out)


def _masked_moments(x: jax.Array, mask: jax.Array | None):
    if mask is None:
        return jnp.mean(x), jnp.std(x)
    m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    n = jnp.maximum(jnp.sum(m), 1)
    mean = jnp.sum(jnp.where(m, x, 0.0)) / n
    var = jnp.sum(jnp.where(m, (x - mean) ** 2, 0.0)) / n
    return mean, jnp.sqrt(var)


def batch_normalize(r: jax.Array, mask: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
    """``(r - mean) / (std + eps)`` with mean and (population) std over all valid entries of ``r``.

    Args:
      r: rewards of any shape (the whole batch is one population).
      mask: optional bool, same shape, True for entries that count; masked entries are still
        transformed but do not enter the statistics.
      eps: added to the std.
    """
    out, inner = compute_dtype(r)
    x = jnp.asarray(r, inner)
    mean, std = _masked_moments(x, mask)
    return ((x - mean) / (std + eps)).astype(out)


def batch_minmax(r: jax.Array, mask: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
    """``(r - min) / (max - min + eps)`` over all valid entries of ``r``."""
    out, inner = compute_dtype(r)
    x = jnp.asarray(r, inner)
    if mask is None:
        lo, hi = jnp.min(x), jnp.max(x)
    else:
        m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
        lo = jnp.min(jnp.where(m, x, jnp.inf))
        hi = jnp.max(jnp.where(m, x, -jnp.inf))
    return ((x - lo) / (hi - lo + eps)).astype(out)
