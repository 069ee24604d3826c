"""KL(pi || pi0) of an aligned policy from its samples, and the best-of-k analytic value.

Sample-based estimators (Schulman, "Approximating KL divergence", 2020). For a response ``y``
drawn from ``pi`` with per-token log-probabilities ``logp_t = log pi(y_t | x, y_<t)`` and
``logp0_t = log pi0(y_t | x, y_<t)`` (the *same* tokens scored by the base policy), over the
response tokens ``t`` (``mask`` True):

* ``k1 = sum_t (logp_t - logp0_t)`` -- unbiased, can be negative per sequence;
* ``k3 = sum_t (exp(-d_t) - 1 + d_t)`` with ``d_t = logp_t - logp0_t`` -- per-token
  non-negative; unbiased because ``E[exp(-d_t) | y_<t] = 1`` when ``pi0`` covers ``pi``'s
  support, and by the chain rule the per-token conditional KLs add up to the sequence KL.

Both are reported as the mean over sequences with its standard error ``std(ddof=1)/sqrt(n)``.
The log-probabilities must be those of the distributions compared: ``lsc.models.sampling``
returns log-probs under the distribution tokens were *drawn* from (temperature, top-k, top-p
applied), which is ``pi`` only when sampling at temperature 1 without truncation. ``logp0`` comes
from teacher-forcing the sampled tokens through the base policy.

Best-of-k: for a continuous utility, ``KL(pi_best_of_k || pi0) = log k - (k - 1) / k``
(:func:`best_of_k_analytic`); for discrete distributions (ties, atoms) this is an upper bound
(Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy").
:func:`best_of_k_kl_exact` computes the exact value for a discrete distribution, and
:func:`best_of_k_kl_plugin` estimates it per prompt from base-policy utilities (the exact value
on their empirical distribution).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import numpy as np

from lsc.align import losses


@dataclasses.dataclass(frozen=True)
class KLEstimate:
    """A KL estimate: ``mean`` over ``n`` sequences (or prompts), its standard error ``se``."""

    mean: float
    se: float
    n: int
    estimator: str

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


def _summary(values: np.ndarray, estimator: str) -> KLEstimate:
    n = int(values.size)
    if n == 0:
        raise ValueError("no sequences to estimate KL from")
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return KLEstimate(float(values.mean()), se, n, estimator)


def sequence_kl(logp, logp0, mask, estimator: str = "k1") -> np.ndarray:
    """Per-sequence KL estimates.

    Args:
      logp: ``float[..., R]`` log-probs of the sampled response tokens under ``pi``.
      logp0: ``float[..., R]`` log-probs of the same tokens under ``pi0``.
      mask: ``bool[..., R]`` True on response tokens (up to and including EOS).
      estimator: ``'k1'`` or ``'k3'`` (module docstring).

    Returns:
      ``float64[S]`` one estimate per sequence, ``S`` the product of the leading dimensions.
    """
    if estimator not in losses.KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of "
                         f"{losses.KL_ESTIMATORS}")
    lp = np.asarray(logp, dtype=np.float64)
    lp0 = np.asarray(logp0, dtype=np.float64)
    m = np.asarray(mask)
    if lp.shape != lp0.shape or lp.shape != m.shape:
        raise ValueError(f"logp {lp.shape}, logp0 {lp0.shape} and mask {m.shape} must have the "
                         f"same shape [..., R]")
    if lp.ndim < 1:
        raise ValueError("logp must have at least one (token) axis")
    if m.dtype != np.bool_:
        if not np.all((m == 0) | (m == 1)):
            raise ValueError("mask must be boolean (or 0/1)")
        m = m.astype(bool)
    if not (np.all(np.isfinite(lp[m])) and np.all(np.isfinite(lp0[m]))):
        raise ValueError("non-finite log-probabilities on response tokens (a token impossible "
                         "under one of the policies has infinite KL)")
    d = np.where(m, lp - lp0, 0.0)
    if estimator == "k1":
        per_token = d
    else:
        per_token = np.where(m, np.expm1(-d) + d, 0.0)
    return per_token.sum(axis=-1).reshape(-1)


def estimate_kl(logp, logp0, mask, estimator: str = "k1") -> KLEstimate:
    """Mean and standard error over sequences of :func:`sequence_kl` (same arguments)."""
    return _summary(sequence_kl(logp, logp0, mask, estimator), estimator)


def estimate_kl_from_samples(samples, logp0, estimator: str = "k1") -> KLEstimate:
    """:func:`estimate_kl` for a ``lsc.models.sampling.SampleOutput`` (or anything with
    ``logprobs`` and ``mask`` of shape ``[B, k, R]``) and base log-probs ``logp0[B, k, R]``.

    The sampler's ``logprobs`` are under the distribution it drew from (the banned pad id and ids
    past the vocabulary limit removed, :class:`lsc.models.sampling.SampleOutput`): with a
    teacher-forced ``logp0`` this is KL(sampler || base model); for KL between two samplers,
    renormalise ``logp0`` over the same ids. The sampler's ``model_logprobs`` are the model's own
    (a teacher-forced pass's): ``estimate_kl(model_logprobs, logp0, mask)`` is the models' k1,
    as the reproduction's judging reads it (:mod:`lsc.repro.samples`)."""
    return estimate_kl(np.asarray(samples.logprobs), logp0, np.asarray(samples.mask), estimator)


def best_of_k_analytic(k) -> float:
    """``log k - (k - 1) / k``: KL(best-of-k || base) for a continuous utility (``k >= 1``)."""
    k = float(k)
    if not k >= 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return math.log(k) - (k - 1.0) / k


def best_of_k_distribution(probs, utilities, k: int) -> np.ndarray:
    """The best-of-k distribution over the atoms of a discrete base distribution.

    Args:
      probs: ``float[n]`` base probabilities (non-negative, summing to 1).
      utilities: ``float[n]`` utility of each atom. Atoms of equal utility are tied; a tie is
        broken uniformly at random among tied draws (the first of them in a random order of
        draws), so within a utility level the best-of-k distribution is proportional to
        ``probs``.
      k: number of draws, ``>= 1``.

    Returns:
      ``float64[n]`` probabilities: a level ``v`` gets ``F(v)**k - F(v-)**k`` with ``F`` the
      base CDF of the utility.
    """
    p = np.asarray(probs, dtype=np.float64)
    u = np.asarray(utilities, dtype=np.float64)
    if p.ndim != 1 or p.shape != u.shape:
        raise ValueError(f"probs {p.shape} and utilities {u.shape} must both have shape [n]")
    if np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-9):
        raise ValueError("probs must be non-negative and sum to 1")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    levels, inverse = np.unique(u, return_inverse=True)
    level_p = np.bincount(inverse, weights=p, minlength=levels.size)
    cdf = np.minimum(np.cumsum(level_p), 1.0)
    below = np.concatenate([[0.0], cdf[:-1]])
    level_q = cdf ** k - below ** k
    share = np.divide(p, level_p[inverse], out=np.zeros_like(p), where=level_p[inverse] > 0)
    return level_q[inverse] * share


def kl_divergence(q, p) -> float:
    """``KL(q || p) = sum q log(q / p)`` of two discrete distributions ``float[n]``."""
    q = np.asarray(q, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if q.shape != p.shape:
        raise ValueError(f"q {q.shape} and p {p.shape} must have the same shape")
    support = q > 0
    if np.any(p[support] <= 0):
        return float("inf")
    return float(np.sum(q[support] * np.log(q[support] / p[support])))


def best_of_k_kl_exact(probs, utilities, k: int) -> float:
    """Exact ``KL(best-of-k || base)`` for a discrete base distribution (arguments of
    :func:`best_of_k_distribution`); at most :func:`best_of_k_analytic` ``(k)``."""
    return kl_divergence(best_of_k_distribution(probs, utilities, k), probs)


def best_of_k_kl_plugin(base_utilities, k: int,
                        valid: Optional[np.ndarray] = None) -> KLEstimate:
    """Per-prompt plug-in estimate of ``KL(best-of-k || base)`` from base-policy utilities.

    For each prompt, the base distribution is replaced by the empirical distribution of ``M``
    independent base samples' utilities (atoms of weight ``1/M``, equal utilities tied) and
    :func:`best_of_k_kl_exact` is taken. Identical responses have identical utility, so a base
    policy that often repeats itself (a small discrete response space) shows a KL below the
    analytic value; with ``M`` distinct utilities the estimate is ``<= log k - (k-1)/k`` and
    tends to it as ``M`` grows (it is biased low for small ``M``: use ``M >> k``).

    Args:
      base_utilities: ``float[N, M]`` utilities of ``M`` base samples for each of ``N`` prompts
        (e.g. the oracle reference samples), scored with the utility best-of-k maximised.
      k: the best-of-k ``k``.
      valid: optional ``bool[N, M]``; False entries are left out of their prompt's sample.

    Returns:
      A :class:`KLEstimate` (mean and standard error over prompts), estimator
      ``'best_of_k_plugin'``.
    """
    u = np.asarray(base_utilities, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] == 0:
        raise ValueError(f"base_utilities must have shape [N, M] with M >= 1, got {u.shape}")
    v = np.ones(u.shape, bool) if valid is None else np.asarray(valid, bool)
    if v.shape != u.shape:
        raise ValueError(f"valid {v.shape} must match base_utilities {u.shape}")
    values = []
    for row, ok in zip(u, v):
        x = row[ok]
        if x.size == 0:
            raise ValueError("a prompt has no valid base samples")
        if not np.all(np.isfinite(x)):
            raise ValueError("base_utilities contains non-finite values")
        values.append(best_of_k_kl_exact(np.full(x.size, 1.0 / x.size), x, k))
    return _summary(np.asarray(values), "best_of_k_plugin")
