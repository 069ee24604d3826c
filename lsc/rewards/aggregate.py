"""Aggregating several rewards into one utility (the note's sigma_AND / sigma_OR and baselines).

Every method works on centred logits ``l_i = r_i - r_ref_i`` over a trailing axis of ``m``
properties (``r_ref`` defaults to 0). Each ``<method>_nocenter`` variant ignores ``r_ref`` (the
note's "no subtraction" baseline, ``r_ref = 0``).

=====================  =========================================  ===============================
method                 utility                                    source
=====================  =========================================  ===============================
``sum``                ``sum_i l_i``                              raw sum (the papers' baseline)
``weighted_sum``       ``sum_i w_i l_i``                          linear scalarisation
``lsc_sum``            ``sum_i log sigma(l_i)``                   Wang et al. 2024 (logical AND)
``lsc_weighted_sum``   ``sum_i w_i log sigma(l_i)``               Wang et al. 2024, weighted
``sigma_and``          ``logit(prod_i sigma(l_i))``               Wang et al. 2023, theorem 2.1
``sigma_or``           ``logit(1 - prod_i (1 - sigma(l_i)))``     Wang et al. 2023, theorem 2.1
=====================  =========================================  ===============================

``lsc_sum`` is ``log`` of the product that ``sigma_and`` takes the logit of: both order responses
the same way, so best-of-k picks the same sample, but they shape RL advantages differently.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp

from lsc.rewards import transforms
from lsc.rewards._dtypes import compute_dtype

NOCENTER_SUFFIX = "_nocenter"

BASE_METHODS = ("sum", "weighted_sum", "lsc_sum", "lsc_weighted_sum", "sigma_and", "sigma_or")
METHODS = BASE_METHODS + tuple(m + NOCENTER_SUFFIX for m in BASE_METHODS)
WEIGHTED_METHODS = ("weighted_sum", "lsc_weighted_sum")


def _weighted(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights, axis=-1)


_AGGREGATORS: Dict[str, Callable[[jax.Array, Optional[jax.Array]], jax.Array]] = {
    "sum": lambda l, w: jnp.sum(l, axis=-1),
    "weighted_sum": lambda l, w: _weighted(l, w),
    "lsc_sum": lambda l, w: transforms.log_sigma_and(l, axis=-1),
    "lsc_weighted_sum": lambda l, w: _weighted(jax.nn.log_sigmoid(l), w),
    "sigma_and": lambda l, w: transforms.sigma_and(l, axis=-1),
    "sigma_or": lambda l, w: transforms.sigma_or(l, axis=-1),
}


def check_method(method: str) -> str:
    """Returns the base name of ``method``; raises ``ValueError`` listing the known names."""
    if method not in METHODS:
        raise ValueError(
            f"unknown aggregation method {method!r}; known methods: {', '.join(METHODS)}"
        )
    return method[: -len(NOCENTER_SUFFIX)] if method.endswith(NOCENTER_SUFFIX) else method


def aggregate(
    method: str,
    rewards: jax.Array,
    r_ref: jax.Array | float | None = None,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Combines ``m`` per-property rewards into one utility per response.

    Args:
      method: one of :data:`METHODS` (see the module docstring).
      rewards: ``[..., m]`` rewards, the last axis indexing properties.
      r_ref: reference rewards broadcastable to ``rewards`` (e.g. ``[B, 1, m]`` against
        ``[B, k, m]``), or None for 0. Ignored by the ``*_nocenter`` methods.
      weights: ``[m]`` (or broadcastable) property weights; required by the weighted methods and
        rejected by the others.

    Returns:
      ``rewards.shape[:-1]`` utilities in the rewards' floating dtype (computed in float32 or
      wider).
    """
    base = check_method(method)
    if base in WEIGHTED_METHODS and weights is None:
        raise ValueError(f"aggregation method {method!r} needs weights")
    if base not in WEIGHTED_METHODS and weights is not None:
        raise ValueError(f"aggregation method {method!r} takes no weights")
    if method.endswith(NOCENTER_SUFFIX):
        r_ref = None
    out, inner = compute_dtype(rewards)
    logits = jnp.asarray(rewards, inner)
    if logits.ndim == 0:
        raise ValueError("rewards need a trailing axis of properties, got a scalar")
    if r_ref is not None:
        logits = logits - jnp.asarray(r_ref, inner)
    w = None if weights is None else jnp.asarray(weights, inner)
    return _AGGREGATORS[base](logits, w).astype(out)
