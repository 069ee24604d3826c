"""Reference rewards r_ref(x): batched, on-device quantiles over samples from the base policy.

The note (Wang et al. 2023, theorem 3.1) shows that subtracting the q-quantile of a prompt's
reward distribution under the base policy turns a Bradley-Terry reward into the logit of "better
than the q-quantile response". The paper uses the median (note, 60 extra samples) and the 85th
percentile (Wang et al. 2024, helpfulness).

:func:`quantile_reference` computes it on device (jnp, any float dtype); :func:`quantile_numpy` is
its host twin on numpy arrays (the dtype kept, e.g. float64), the same definition: numpy's linear
interpolation between order statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lsc.rewards._dtypes import compute_dtype


def _check_q(q) -> None:
    """Rejects a concrete ``q`` outside [0, 1]; traced values cannot be checked here."""
    if isinstance(q, jax.core.Tracer):
        return
    q_np = np.asarray(q)
    if q_np.size and (np.any(~np.isfinite(q_np)) or np.any(q_np < 0) or np.any(q_np > 1)):
        raise ValueError(f"quantile q must lie in [0, 1], got {q!r}")


def quantile_numpy(rewards: np.ndarray, q: float, axis: int = -1) -> np.ndarray:
    """The q-quantile of ``rewards`` over ``axis`` on the host (numpy), in the rewards' dtype.

    The definition of :func:`quantile_reference` (numpy's ``method="linear"``: with the sorted
    values ``v_0 <= ... <= v_{n-1}`` and ``h = q (n - 1)``, ``v_floor(h) + (h - floor(h))
    (v_ceil(h) - v_floor(h))``) for host code that keeps float64, e.g. the exact arm.

    Args:
      rewards: ``float[..., k, ...]`` rewards with the samples along ``axis``.
      q: the quantile in [0, 1].
      axis: the samples' axis.

    Returns:
      ``rewards`` with ``axis`` reduced, ``float64`` for float64 input.
    """
    _check_q(q)
    return np.quantile(np.asarray(rewards), q, axis=axis, method="linear")


def quantile_reference(
    rewards: jax.Array,
    q: float | jax.Array,
    mask: jax.Array | None = None,
    fill_value: float = 0.0,
) -> jax.Array:
    """The q-quantile of ``rewards`` over the last axis (the k samples of one prompt).

    Matches ``numpy.quantile(rewards, q, axis=-1)`` (its default ``method="linear"``): with the
    ``n`` valid values sorted as ``v_0 <= ... <= v_{n-1}`` and ``h = q (n - 1)``, the result is
    ``v_floor(h) + (h - floor(h)) (v_ceil(h) - v_floor(h))``.

    Args:
      rewards: ``[..., k]`` rewards of k samples per prompt (any leading batch dims), floating.
      q: the quantile in [0, 1]: a Python float or an array broadcastable to ``rewards.shape[:-1]``
        (e.g. one quantile per property). Concrete values outside [0, 1] raise ``ValueError``.
      mask: optional bool ``[..., k]``, True where a sample is valid; invalid samples are ignored.
      fill_value: the result for a row with no valid sample.

    Returns:
      ``rewards.shape[:-1]`` quantiles in the rewards' floating dtype. One fused device
      computation (a sort along the last axis and two gathers): no host round trip, no Python
      loop over prompts.
    """
    _check_q(q)
    rewards = jnp.asarray(rewards)
    out, inner = compute_dtype(rewards)
    x = rewards.astype(inner)
    k = x.shape[-1]
    if k == 0:
        raise ValueError("quantile_reference needs at least one sample on the last axis")
    if mask is None:
        n_valid = jnp.full(x.shape[:-1], k, dtype=jnp.int32)
        sorted_x = jnp.sort(x, axis=-1)
    else:
        mask = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), x.shape)
        n_valid = jnp.sum(mask, axis=-1, dtype=jnp.int32)
        # Invalid samples sort after every valid one.
        sorted_x = jnp.sort(jnp.where(mask, x, jnp.inf), axis=-1)
    qv = jnp.broadcast_to(jnp.asarray(q, inner), x.shape[:-1])
    h = qv * (jnp.maximum(n_valid, 1) - 1).astype(inner)
    lo = jnp.clip(jnp.floor(h).astype(jnp.int32), 0, k - 1)
    hi = jnp.clip(jnp.ceil(h).astype(jnp.int32), 0, k - 1)
    t = h - lo.astype(inner)
    v_lo = jnp.take_along_axis(sorted_x, lo[..., None], axis=-1)[..., 0]
    v_hi = jnp.take_along_axis(sorted_x, hi[..., None], axis=-1)[..., 0]
    # numpy's lerp: a + t (b - a) for t < 1/2, b - (1 - t)(b - a) otherwise.
    diff = v_hi - v_lo
    value = jnp.where(t < 0.5, v_lo + t * diff, v_hi - (1.0 - t) * diff)
    value = jnp.where(lo == hi, v_lo, value)  # avoids inf - inf when both ends are the same sample
    value = jnp.where(n_valid > 0, value, jnp.asarray(fill_value, inner))
    return value.astype(out)

