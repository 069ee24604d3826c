"""Exact evaluation on sample banks: KL-regularised optima and best-of-k in closed form.

For each of ``P`` prompts a *bank* of ``N`` candidates ``y_1..y_N ~ pi0(.|x)`` and, drawn
independently, ``M`` opponents ``o_1..o_M ~ pi0(.|x)``, all scored by the judge on ``m``
properties (docs/design.md §4). On the bank the empirical base policy puts ``1/N`` on each
candidate, and what a procedure does to it is a reweighting ``w[P, N]`` (rows summing to 1):

* the KL-regularised optimum of a utility ``u`` with coefficient ``gamma``,
  ``pi*(y|x) ∝ pi0(y|x) exp(u(x, y) / gamma)``, restricted to the bank, has
  ``w_i = exp(u_i / gamma) / sum_j exp(u_j / gamma)`` (:func:`optimum_weights`; ``u = -inf`` gets
  weight 0) and ``KL(pi* || pi0_hat) = sum_i w_i log(N w_i) <= log N`` (:func:`bank_kl`);
* best-of-k (k draws with replacement, the highest utility kept, ties broken uniformly) has, for
  a tie group at ascending ranks ``a+1..b``, total weight ``(b/N)^k - (a/N)^k`` shared equally by
  its members (:func:`best_of_k_weights`).

A candidate's expected win against the opponents (:func:`win_scores`) uses the outcome
convention of :mod:`lsc.eval.win_rate` (ties one half; AND = min and OR = max of the per-property
outcomes, per opponent), so a procedure's per-prompt win rate is ``sum_i w_i W_i``
(:func:`weighted_win`), and its figure the mean over prompts. Every procedure is evaluated on the
same banks and opponents, so differences between procedures are per-prompt paired differences
(:func:`lsc.eval.win_rate.paired_difference`, stratified by prompt class).

One ``gamma`` is shared by all prompts, as in RLHF; the policy's KL is the mean over prompts of
the per-prompt KL, which falls monotonically as ``gamma`` grows, so :func:`gamma_for_kl` finds the
``gamma`` of a target KL by root finding on ``log gamma`` (Brent's method, ``scipy``). Everything here is float64 numpy.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
from scipy import optimize


def _utilities(u, name: str = "u") -> np.ndarray:
    a = np.asarray(u, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{name} must have shape [P, N] with N >= 1, got {np.shape(u)}")
    if np.any(np.isnan(a)) or np.any(a == np.inf):
        raise ValueError(f"{name} contains NaN or +inf (-inf is allowed: weight 0)")
    if np.any(np.all(a == -np.inf, axis=1)):
        raise ValueError(f"{name}: a prompt has -inf utility for every candidate")
    return a


def win_scores(candidate_scores, opponent_scores, tie_tol: float = 0.0) -> np.ndarray:
    """Each candidate's expected outcome against the opponents of its prompt.

    Args:
      candidate_scores: ``float[P, N, m]`` judge scores of the bank's candidates.
      opponent_scores: ``float[P, M, m]`` judge scores of independent base opponents.
      tie_tol: scores within ``tie_tol`` are a tie (one half).

    Returns:
      ``float64[P, N, m + 2]``: the mean over the ``M`` opponents of the per-property outcomes,
      then of AND (``min`` over properties) and OR (``max``), as in :mod:`lsc.eval.win_rate`.
    """
    c = np.asarray(candidate_scores, dtype=np.float64)
    o = np.asarray(opponent_scores, dtype=np.float64)
    if c.ndim != 3 or o.ndim != 3 or c.shape[0] != o.shape[0] or c.shape[2] != o.shape[2]:
        raise ValueError(f"scores must be [P, N, m] and [P, M, m] with the same P and m, got "
                         f"{c.shape} and {o.shape}")
    if c.shape[1] == 0 or o.shape[1] == 0 or c.shape[2] == 0:
        raise ValueError(f"need N, M, m >= 1, got {c.shape} and {o.shape}")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(o))):
        raise ValueError("scores contain non-finite values")
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
    d = c[:, :, None, :] - o[:, None, :, :]  # [P, N, M, m]
    out = np.where(np.abs(d) <= tie_tol, 0.5, (d > 0).astype(np.float64))
    return np.concatenate([out.mean(axis=2), out.min(axis=3).mean(axis=2)[..., None],
                           out.max(axis=3).mean(axis=2)[..., None]], axis=-1)


def optimum_weights(u, gamma: float) -> np.ndarray:
    """Weights ``float64[P, N]`` of the KL-regularised optimum ``w ∝ exp(u / gamma)`` on each
    prompt's bank (``gamma > 0``; ``gamma = inf`` is the base policy, uniform weights)."""
    gamma = float(gamma)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return _optimum_weights(_utilities(u), gamma)


def _optimum_weights(u: np.ndarray, gamma: float) -> np.ndarray:
    """:func:`optimum_weights` of checked utilities (used by :func:`optimum_weights`)."""
    if gamma == np.inf:
        finite = np.isfinite(u)
        return finite / finite.sum(axis=1, keepdims=True)
    z = u / gamma
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def bank_kl(weights) -> np.ndarray:
    """``KL(w || uniform) = sum_i w_i log(N w_i)`` per prompt, ``float64[P]`` (``0 log 0 = 0``)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must have shape [P, N], got {w.shape}")
    n = w.shape[1]
    terms = np.where(w > 0, w * np.log(np.where(w > 0, n * w, 1.0)), 0.0)
    return np.maximum(terms.sum(axis=1), 0.0)


def kl_range(u) -> tuple:
    """``(lowest, highest)`` mean KL that an optimum of ``u`` can have: ``gamma -> inf`` gives the
    uniform weights over each prompt's finite-utility candidates, ``log(N / #finite)`` (0 without
    ``-inf`` utilities); ``gamma -> 0`` the uniform weights over its maximisers,
    ``log(N / #maximisers)``. Neither end is reached by a finite ``gamma > 0`` unless they meet."""
    u = _utilities(u)
    n = u.shape[1]
    finite = np.isfinite(u).sum(axis=1)
    ties = (u == u.max(axis=1, keepdims=True)).sum(axis=1)
    return float(np.mean(np.log(n / finite))), float(np.mean(np.log(n / ties)))


def gamma_for_kl(u, target_kl: float, *, tol: float = 1e-9, max_iter: int = 200) -> float:
    """The ``gamma`` whose optimum has mean KL ``target_kl`` over the prompts (Brent's method on
    ``log gamma`` to ``tol``, after bracketing; the mean KL falls monotonically as ``gamma`` grows). ``target_kl`` equal to the
    lowest KL of :func:`kl_range` gives ``inf`` (the base policy on the bank).

    Raises:
      ValueError: when ``target_kl`` is outside ``[lowest, highest)`` of :func:`kl_range`.
    """
    u = _utilities(u)
    target = float(target_kl)
    low, top = kl_range(u)
    if target == low:
        return np.inf
    if not low < target < top:
        raise ValueError(f"target_kl {target_kl} is outside what the bank supports: "
                         f"[{low:.6g}, {top:.6g})")

    def mean_kl(log_gamma):
        return _mean_kl(u, float(np.exp(log_gamma)))

    finite = u[np.isfinite(u)]
    scale = max(float(finite.max() - finite.min()), 1e-12)
    # Bracket: mean_kl(lo) > target > mean_kl(hi), widened as needed (both ends are reached only
    # in the limits, so a target strictly inside the range is bracketed after finitely many steps).
    lo, hi = np.log(scale) - 10.0, np.log(scale) + 10.0
    while mean_kl(lo) <= target:
        lo -= 10.0
        if lo < -700.0:
            raise ValueError(f"target_kl {target_kl} is too close to the highest KL {top:.6g}")
    while mean_kl(hi) >= target:
        hi += 10.0
        if hi > 700.0:
            raise ValueError(f"target_kl {target_kl} is too close to the lowest KL {low:.6g}")
    log_gamma = optimize.brentq(lambda lg: mean_kl(lg) - target, lo, hi, xtol=tol,
                                rtol=4 * np.finfo(float).eps, maxiter=max_iter)
    return float(np.exp(log_gamma))


def _mean_kl(u: np.ndarray, gamma: float) -> float:
    """``bank_kl(_optimum_weights(u, gamma)).mean()`` in one pass (the root finder's inner step):
    with ``z = u / gamma - max`` and ``s = sum exp(z)``, ``KL = log N + sum_i w_i z_i - log s``."""
    z = u / gamma
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    total = e.sum(axis=1)
    with np.errstate(invalid="ignore"):  # 0 * -inf where a candidate has weight 0
        wz = np.where(e > 0, e * z, 0.0).sum(axis=1) / total
    kl = np.log(u.shape[1]) + wz - np.log(total)
    return float(np.maximum(kl, 0.0).mean())


def best_of_k_weights(u, k: int) -> np.ndarray:
    """Selection probabilities ``float64[P, N]`` of best-of-k from each prompt's bank: k draws with
    replacement, the highest utility kept, ties broken uniformly; a tie group at ascending ranks
    ``a+1..b`` gets ``(b/N)^k - (a/N)^k``, shared equally by its members."""
    u = _utilities(u)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    a, b = _tie_ranks(u)
    return ((b / u.shape[1]) ** k - (a / u.shape[1]) ** k) / (b - a)


def _tie_ranks(u: np.ndarray):
    """``(a, b)``, ``int64[P, N]`` each: every candidate's tie group occupies the ascending ranks
    ``a+1..b`` of its prompt's bank (``a`` candidates lie strictly below it, ``b`` at or below)."""
    n = u.shape[1]
    order = np.argsort(u, axis=1, kind="stable")
    s = np.take_along_axis(u, order, axis=1)
    first = np.ones(s.shape, bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]  # a new tie group starts here
    last = np.ones(s.shape, bool)
    last[:, :-1] = first[:, 1:]
    idx = np.broadcast_to(np.arange(n), s.shape)
    a_sorted = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
    b_sorted = np.minimum.accumulate(np.where(last, idx + 1, n)[:, ::-1], axis=1)[:, ::-1]
    a, b = np.empty_like(a_sorted), np.empty_like(b_sorted)
    np.put_along_axis(a, order, a_sorted, axis=1)
    np.put_along_axis(b, order, b_sorted, axis=1)
    return a, b


def weighted_win(weights, scores) -> np.ndarray:
    """Per-prompt win rates ``float64[P, c]`` of the policy ``weights[P, N]`` on the bank whose
    candidates have ``scores[P, N, c]`` (:func:`win_scores`)."""
    w = np.asarray(weights, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3 or w.shape != s.shape[:2]:
        raise ValueError(f"weights [P, N] and scores [P, N, c] do not match: {w.shape}, {s.shape}")
    return np.einsum("pn,pnc->pc", w, s)


def frontier(u, scores, kl_grid: Sequence[float], *, tol: float = 1e-7
             ) -> Dict[str, np.ndarray]:
    """The KL-regularised optimum of ``u`` ``float[P, N]`` at each target KL of ``kl_grid``
    (``G`` points), judged by the per-candidate ``scores`` ``float[P, N, c]`` (:func:`win_scores`).

    One ``gamma`` for all prompts, solved by :func:`gamma_for_kl` to ``tol``. A target the bank
    cannot reach, outside ``(lowest, highest - 1e-6)`` of :func:`kl_range`, is NaN.

    Returns ``{"gamma": float64[G], "kl": float64[G], "win": float64[G, P, c]}``: the coefficient,
    the mean KL it reaches and the per-prompt win rates (kept per prompt for paired differences
    between utilities on the same banks).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must have shape [P, N, c], got {scores.shape}")
    low, top = kl_range(u)
    p, _, c = scores.shape
    win = np.full((len(kl_grid), p, c), np.nan)
    gammas = np.full(len(kl_grid), np.nan)
    kls = np.full(len(kl_grid), np.nan)
    for g, target in enumerate(kl_grid):
        if not low < target < top - 1e-6:
            continue
        gamma = gamma_for_kl(u, target, tol=tol)
        w = optimum_weights(u, gamma)
        win[g] = weighted_win(w, scores)
        gammas[g] = gamma
        kls[g] = float(bank_kl(w).mean())
    return {"gamma": gammas, "kl": kls, "win": win}
