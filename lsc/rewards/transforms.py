"""Reward transformations: LSC and the note's sigma_AND / sigma_OR, numerically stable.

All functions are pure ``jax.numpy``: jittable, vmappable, differentiable, shape-polymorphic over
leading dimensions. They compute in float32 (or wider, if the input is wider) and return the
input's floating dtype, so bfloat16 in gives bfloat16 out.

Formulas (``sigma`` is the logistic function, ``logit`` its inverse):

* ``lsc(r, r_ref) = log sigma(r - r_ref)``  (Wang et al. 2024, eq. 3.2: the log-probability that
  ``y`` is preferred to a reference response whose reward is ``r_ref``).
* ``sigma_and(l) = logit(prod_i sigma(l_i))``  (Wang et al. 2023, "Reward Model Aggregation",
  theorem 2.1: the logit of "good on every property" for independent judgements).
* ``sigma_or(l) = logit(1 - prod_i (1 - sigma(l_i))) = -sigma_and(-l)``  (same theorem: the logit
  of "good on at least one property").

Stability. Write ``a_i = softplus(-l_i) = -log sigma(l_i) >= 0`` and ``S = sum_i a_i``, so that
``prod_i sigma(l_i) = exp(-S)`` and ``sigma_and(l) = -S - log(1 - exp(-S))``. The naive formula
rounds ``prod sigma`` to 1 (and returns +inf) once every ``l_i`` exceeds about 17 in float32, and
``log sigma`` underflows for ``l_i`` above about 88. Here ``log S`` is computed as a log-sum-exp
of ``log a_i``, with ``log softplus(x) = x - exp(x)/2 + O(exp(2x))`` for very negative ``x``, and
``log(1 - exp(-S))`` as ``log S + log1p(-S/2 + S^2/6)`` for small ``S``. The result is finite and
accurate to float32 precision, with finite gradients, for every ``|l| <= 1e4``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lsc.rewards._dtypes import compute_dtype

# Below this, log(softplus(x)) is computed from its asymptotic expansion x - exp(x)/2.
_LOG_SOFTPLUS_SWITCH = -15.0
# Below this, log(1 - exp(-S)) is computed as log S + log1p(-S/2 + S^2/6).
_SMALL_S = 1e-3


def lsc(r: jax.Array, r_ref: jax.Array | float = 0.0) -> jax.Array:
    """The LSC transformation ``log sigma(r - r_ref)``.

    Args:
      r: rewards, any shape ``[...]``, floating dtype.
      r_ref: reference rewards, broadcastable against ``r`` (e.g. ``[B, 1]`` against ``[B, k]``).

    Returns:
      ``log sigma(r - r_ref)`` with the broadcast shape, in the inputs' floating dtype. Always
      ``<= 0``; ``~ r - r_ref`` for bad responses and ``~ 0`` for good ones. The dtype is ``r``'s.
    """
    out, inner = compute_dtype(r)
    d = jnp.asarray(r, inner) - jnp.asarray(r_ref, inner)
    return jax.nn.log_sigmoid(d).astype(out)


def log_softplus(x: jax.Array) -> jax.Array:
    """``log(softplus(x)) = log(log1p(exp(x)))``, finite for all finite ``x`` (float32 or wider).

    For ``x < -15`` uses ``x - exp(x)/2`` (error ``O(exp(2x))``, below float32 resolution), so the
    result stays finite where ``softplus(x)`` underflows to zero.
    """
    small = x < _LOG_SOFTPLUS_SWITCH
    x_small = jnp.where(small, x, _LOG_SOFTPLUS_SWITCH)  # only the taken branch sees real values
    x_large = jnp.where(small, 0.0, x)
    return jnp.where(small, x_small - 0.5 * jnp.exp(x_small), jnp.log(jax.nn.softplus(x_large)))


def _neg_log1mexp_minus_s(s: jax.Array, log_s: jax.Array) -> jax.Array:
    """``-S - log(1 - exp(-S))`` for ``S >= 0`` given as ``S`` and as ``log S``.

    ``S`` (a plain sum, accurate when not tiny) serves the large-``S`` branch; ``log S`` (a
    log-sum-exp, finite where ``S`` underflows) serves the small-``S`` branch.
    """
    small = s < _SMALL_S
    s_small = jnp.where(small, jnp.exp(log_s), 0.0)
    log_s_small = jnp.where(small, log_s, 0.0)
    s_large = jnp.where(small, 1.0, s)
    small_branch = -s_small - log_s_small - jnp.log1p(s_small * (s_small / 6.0 - 0.5))
    large_branch = -s_large - jnp.log(-jnp.expm1(-s_large))
    return jnp.where(small, small_branch, large_branch)


def sigma_and(logits: jax.Array, axis: int = -1) -> jax.Array:
    """``logit(prod_i sigma(l_i))`` over ``axis``: the logit of "good on every property".

    Args:
      logits: ``[..., m, ...]`` centred rewards ``l_i = r_i - r_ref_i``; ``axis`` indexes the ``m``
        properties.
      axis: the properties axis (removed from the output).

    Returns:
      the inputs' shape without ``axis``, in the inputs' floating dtype. With one property this is
      the logit itself.
    """
    logits = jnp.asarray(logits)
    out, inner = compute_dtype(logits)
    if logits.shape[axis] == 1:
        return jnp.squeeze(logits, axis).astype(out)
    x = logits.astype(inner)
    s = jnp.sum(jax.nn.softplus(-x), axis=axis)
    log_s = jax.nn.logsumexp(log_softplus(-x), axis=axis)
    return _neg_log1mexp_minus_s(s, log_s).astype(out)


def sigma_or(logits: jax.Array, axis: int = -1) -> jax.Array:
    """``logit(1 - prod_i (1 - sigma(l_i)))`` over ``axis``: the logit of "good on at least one".

    Equal to ``-sigma_and(-logits)`` (De Morgan). Shapes and dtypes as :func:`sigma_and`.
    """
    return -sigma_and(-jnp.asarray(logits), axis=axis)


def log_sigma_and(logits: jax.Array, axis: int = -1) -> jax.Array:
    """``log prod_i sigma(l_i) = sum_i log sigma(l_i)``: the sum of LSC rewards (the paper's AND).

    Shapes and dtypes as :func:`sigma_and`.
    """
    logits = jnp.asarray(logits)
    out, inner = compute_dtype(logits)
    return jnp.sum(jax.nn.log_sigmoid(logits.astype(inner)), axis=axis).astype(out)
