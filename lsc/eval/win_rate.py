"""Win rates of a policy's samples against independent base-policy samples, with bootstrap CIs.

Protocol (docs/design.md §1, the note's section 4.1): for each of ``N`` prompts draw one response
``y1`` from the evaluated policy and one response ``y0`` from the base policy, *independently*
(for the base policy judged against itself, two independent base samples, never the same one),
and score both with a judge on ``m`` properties (the synthetic world's gold scorers,
``lsc.data.world.gold_judge``, or evaluator reward models separate from the rewards being
optimised). The caller passes the judge in: this module knows no world.

Outcomes
--------
Per prompt and property the outcome is ``o_i = 1`` (``y1`` scores higher), ``0.5`` (a tie:
``|s1 - s0| <= tie_tol``) or ``0`` (``y1`` scores lower). The per-property win rate is the mean of
``o_i`` over prompts, so a tie counts one half.

The note's AND ("better on every property") and OR ("better on at least one") outcomes are
``AND = min_i o_i`` and ``OR = max_i o_i``. Without ties these are exactly the logical AND and
OR of the per-property wins. With ties they are the three-valued (Kleene / Goedel) AND and OR
over {lose < tie < win}: AND is a full win when every property is won, half credit when every
property is won or tied and at least one is tied, and zero when any property is lost; OR
mirrors it. Why this choice rather than a product of outcomes:

* it reduces to the per-property win rate (ties one half) when ``m = 1``;
* it keeps the swap duality of the strict definitions: the AND win rate of ``y1`` over ``y0``
  equals one minus the OR win rate of ``y0`` over ``y1`` (``min(o) = 1 - max(1 - o)``), so the
  two metrics are two views of one comparison, as in the note;
* it does not reward ties more than wins (a product gives 0.25 to a double tie but 0 to a win
  plus a loss; the min gives 0.5 and 0).

Consequence for the base policy judged against itself: each per-property win rate is 0.5 in
expectation, but AND and OR are not (with ``m`` independent continuous properties they are
``2**-m`` and ``1 - 2**-m``). By the duality and exchangeability, ``(AND + OR) / 2`` is 0.5 in
expectation; :func:`win_rates` reports it as ``and_or_mean`` when asked.

Confidence intervals
--------------------
Percentile bootstrap over prompts: resample the ``N`` prompts with replacement
``num_resamples`` times (seeded), recompute every win rate on the same resample (so the
intervals of different metrics are jointly valid and differences can be bootstrapped), and take
the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles. The ``value`` is the win rate
on the full sample.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

Judge = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""``judge(prompts, responses) -> float[N, m]`` scores of ``N`` responses on ``m`` properties."""

AND, OR = "and", "or"
_MAX_BOOTSTRAP_ELEMENTS = 4_000_000  # per chunk of resample counts


def _as_scores(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape [N, m] (or [N] for one property), got "
                         f"{np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite scores")
    return a


def outcomes(policy_scores, base_scores, tie_tol: float = 0.0) -> np.ndarray:
    """Per-prompt, per-property outcomes of policy vs base.

    Args:
      policy_scores: ``float[N, m]`` (or ``[N]``) judge scores of the policy's responses.
      base_scores: ``float[N, m]`` (or ``[N]``) judge scores of independent base responses to the
        same prompts, row for row.
      tie_tol: scores with ``|s1 - s0| <= tie_tol`` are a tie (``>= 0``).

    Returns:
      ``float64[N, m]`` with values in {0, 0.5, 1}.
    """
    p = _as_scores(policy_scores, "policy_scores")
    b = _as_scores(base_scores, "base_scores")
    if p.shape != b.shape:
        raise ValueError(f"policy_scores {p.shape} and base_scores {b.shape} must have the same "
                         f"shape [N, m]")
    if p.shape[0] == 0:
        raise ValueError("no prompts to compare (N = 0)")
    if not tie_tol >= 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
    d = p - b
    return np.where(d > tie_tol, 1.0, np.where(d < -tie_tol, 0.0, 0.5))


def combine_outcomes(o: np.ndarray) -> Dict[str, np.ndarray]:
    """AND (``min``) and OR (``max``) outcomes ``float64[N]`` from per-property ``o[N, m]``."""
    o = np.asarray(o, dtype=np.float64)
    if o.ndim != 2 or o.shape[1] == 0:
        raise ValueError(f"outcomes must have shape [N, m] with m >= 1, got {o.shape}")
    return {AND: o.min(axis=1), OR: o.max(axis=1)}


def bootstrap_means(values, num_resamples: int = 2000, seed: int = 0, strata=None) -> np.ndarray:
    """Means of ``num_resamples`` bootstrap resamples of the rows of ``values``.

    Args:
      values: ``float[N]`` or ``float[N, c]`` per-prompt statistics.
      num_resamples: ``B >= 1`` resamples, each ``N`` rows drawn with replacement.
      seed: seeds ``numpy.random.default_rng``; the same seed and ``N`` give the same resamples
        whatever ``c`` is, so statistics bootstrapped separately stay paired.
      strata: optional ``[N]`` labels (e.g. prompt classes); each resample then draws every
        stratum's rows from that stratum only, so the strata keep their sizes.

    Returns:
      ``float64[B]`` or ``float64[B, c]`` resample means.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    if squeeze:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"values must have shape [N] or [N, c] with N >= 1, got "
                         f"{np.shape(values)}")
    if int(num_resamples) < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    n = v.shape[0]
    groups = [np.arange(n)]
    if strata is not None:
        labels = np.asarray(strata)
        if labels.shape != (n,):
            raise ValueError(f"strata must have shape [{n}], got {labels.shape}")
        groups = [np.flatnonzero(labels == s) for s in np.unique(labels)]
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_BOOTSTRAP_ELEMENTS // n)
    out = []
    done = 0
    while done < num_resamples:
        b = min(chunk, num_resamples - done)
        counts = np.empty((b, n), np.int64)  # [b, N] times each row is drawn
        for rows in groups:
            counts[:, rows] = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size),
                                              size=b)
        out.append(counts @ v / n)
        done += b
    means = np.concatenate(out, axis=0)
    return means[:, 0] if squeeze else means


def percentile_interval(samples, confidence: float = 0.95):
    """``(low, high)`` percentile interval of bootstrap ``samples[B, ...]`` along axis 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [a, 1.0 - a], axis=0)
    return lo, hi


def bootstrap_ci(values, num_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0, strata=None) -> Dict[str, float]:
    """Mean of per-prompt ``values[N]`` with its percentile-bootstrap interval (resampled within
    ``strata`` when given, :func:`bootstrap_means`).

    Returns ``{"value", "ci_low", "ci_high"}`` (floats).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must have shape [N], got {v.shape}")
    means = bootstrap_means(v, num_resamples, seed, strata)
    lo, hi = percentile_interval(means, confidence)
    return {"value": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def win_rates(policy_scores, base_scores, properties: Optional[Sequence[str]] = None, *,
              tie_tol: float = 0.0, num_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0, and_or_mean: bool = False) -> Dict[str, Dict[str, float]]:
    """Win rates per property plus AND and OR, each with a bootstrap CI over prompts.

    Args:
      policy_scores: ``float[N, m]`` judge scores of the policy's responses (one per prompt).
      base_scores: ``float[N, m]`` judge scores of *independent* base-policy responses to the
        same prompts.
      properties: ``m`` names (default ``"p0"``, ``"p1"``, ...); must not be "and" / "or".
      tie_tol: tie tolerance of :func:`outcomes`.
      num_resamples, confidence, seed: the bootstrap (module docstring).
      and_or_mean: also report ``and_or_mean`` = ``(AND + OR) / 2`` (0.5 in expectation for two
        exchangeable policies, e.g. base vs base).

    Returns:
      ``{name: {"value", "ci_low", "ci_high"}}`` for every property, ``"and"`` and ``"or"``
      (values are floats in [0, 1]).
    """
    o = outcomes(policy_scores, base_scores, tie_tol)
    m = o.shape[1]
    names = list(properties) if properties is not None else [f"p{i}" for i in range(m)]
    if len(names) != m:
        raise ValueError(f"{len(names)} property names for {m} score columns")
    if len(set(names)) != m or {AND, OR, "and_or_mean"} & set(names):
        raise ValueError(f"property names must be distinct and not 'and'/'or'/'and_or_mean', got "
                         f"{names}")
    comb = combine_outcomes(o)
    cols = [o[:, i] for i in range(m)] + [comb[AND], comb[OR]]
    keys = names + [AND, OR]
    if and_or_mean:
        cols.append(0.5 * (comb[AND] + comb[OR]))
        keys.append("and_or_mean")
    table = np.stack(cols, axis=1)
    means = bootstrap_means(table, num_resamples, seed)
    lo, hi = percentile_interval(means, confidence)
    full = table.mean(axis=0)
    return {k: {"value": float(full[j]), "ci_low": float(lo[j]), "ci_high": float(hi[j])}
            for j, k in enumerate(keys)}


def paired_difference(outcomes_a, outcomes_b, num_resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0, strata=None) -> Dict[str, float]:
    """Difference of two win rates measured on the same prompts, with a paired bootstrap CI.

    Args:
      outcomes_a, outcomes_b: ``float[N]`` per-prompt outcomes (e.g. a column of
        :func:`outcomes` or an AND/OR column of :func:`combine_outcomes`, or per-prompt win rates
        of two procedures on the same sample banks, :mod:`lsc.eval.exact`) of two policies on the
        same ``N`` prompts, row for row.
      strata: optional ``[N]`` prompt classes; the bootstrap resamples within each.

    Returns:
      ``{"value", "ci_low", "ci_high"}`` of ``mean(a) - mean(b)``.
    """
    a = np.asarray(outcomes_a, dtype=np.float64)
    b = np.asarray(outcomes_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"outcomes must both have shape [N], got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, num_resamples, confidence, seed, strata)


def judged_win_rates(judge: Judge, prompts: Sequence[str], policy_responses: Sequence[str],
                     base_responses: Sequence[str], properties: Sequence[str],
                     **kwargs) -> Dict[str, Dict[str, float]]:
    """:func:`win_rates` of ``policy_responses`` vs ``base_responses`` (``N`` each) scored by
    ``judge``; ``base_responses`` must be independent base samples for the same prompts.
    ``kwargs`` go to :func:`win_rates`."""
    n = len(prompts)
    if len(policy_responses) != n or len(base_responses) != n:
        raise ValueError(f"{n} prompts, {len(policy_responses)} policy responses and "
                         f"{len(base_responses)} base responses: all must be equal")
    sp = np.asarray(judge(prompts, policy_responses), dtype=np.float64)
    sb = np.asarray(judge(prompts, base_responses), dtype=np.float64)
    m = len(properties)
    for name, s in (("policy", sp), ("base", sb)):
        if s.shape != (n, m):
            raise ValueError(f"judge returned {s.shape} for the {name} responses; expected "
                             f"[{n}, {m}]")
    return win_rates(sp, sb, properties, **kwargs)


def across_seeds(results: Sequence[Mapping[str, Mapping[str, float]]]
                 ) -> Dict[str, Dict[str, float]]:
    """Mean and spread across seeds of win-rate results (one :func:`win_rates` output per seed).

    Returns, for every key present in all results, ``{"mean", "std", "se", "min", "max",
    "num_seeds"}`` of the ``value`` fields (``std`` with ``ddof = 1``, 0 for one seed;
    ``se = std / sqrt(num_seeds)``).
    """
    if not results:
        raise ValueError("across_seeds needs at least one result")
    keys = [k for k in results[0] if all(k in r for r in results)]
    out = {}
    for k in keys:
        v = np.asarray([float(r[k]["value"]) for r in results])
        std = float(v.std(ddof=1)) if v.size > 1 else 0.0
        out[k] = {"mean": float(v.mean()), "std": std, "se": std / np.sqrt(v.size),
                  "min": float(v.min()), "max": float(v.max()), "num_seeds": int(v.size)}
    return out
