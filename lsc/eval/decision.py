"""Replicated, paired statistics and the decision rule of a claim (``docs/design.md`` §1).

A claim compares two procedures ``A`` and ``B`` evaluated on the same ``P`` prompts (the same
banks, opponents and seeds), once per replicate of what varies between repeats of the
experiment: ``R`` reward models trained on independent data with independent initialisation
(the exact arm), or ``R`` RL seeds (the RL arm). Its primary statistic is, per replicate, the
mean over prompts of a per-prompt paired difference ``d[r, p]`` (e.g. ``A - B`` of the win rate,
averaged over a pre-declared KL grid or set of k values); the claim's estimate is the mean over
replicates.

**The interval** (:func:`across_replicates`) is taken across replicates, so that another set of
replicates (another CPU's rounding of the reward models' training, other RL seeds) is inside
it. ``d`` is a crossed design, ``d[r, p] = mu + a_r + b_p + e_rp`` (replicate effect ``a``,
prompt effect ``b`` shared by every replicate, residual ``e``), and the estimate ``mean(d)`` has
variance ``s_a^2 / R + s_b^2 / P + s_e^2 / (R P)``, estimated without bias from the two-way mean
squares as ``(MS_R + MS_P - MS_E) / (R P)``; the interval is Student's t with Satterthwaite's
degrees of freedom. When the replicates dominate (the case here: between-replicate SDs of
0.001-0.003 against a replicate's prompt standard error of 0.0005-0.001) this is the t-interval
over the ``R`` replicate means with ``R - 1`` degrees of freedom; unlike it, it keeps the
prompt sampling that all replicates share (the evaluation prompts are one draw of the world's).
It was chosen over a two-level bootstrap because with ``R = 6`` a bootstrap over replicates
draws from 6 values and reads percentiles where Student's t (5 degrees of freedom) is the exact
answer under normal replicate effects; the simulation tests in
``tests/eval/test_eval_decision.py`` show its coverage when the replicates dominate and when the
shared prompts do, and that a replicate's own interval (the previous rule's) covers far less. The per-replicate bootstrap intervals (:func:`replicated_intervals`) are reported
beside it.

**The RL arm's interval** (:func:`across_seeds`) takes the RL seed as the unit: each seed gives
one value (its mean of ``A - B`` over prompts and grid points) and the interval is the paired
t-interval over the ``S`` seeds with ``S - 1`` degrees of freedom. It treats the evaluation
prompts, which every seed shares, as fixed: right when the seeds dominate, as they do in a PPO
run.

**The rule** (:func:`outcome`, fixed before the runs it judges), with the interval ``[l, u]``
and ``delta`` the smallest effect of practical size:

* **reproduces**: ``l > 0`` and ``u > delta``;
* **holds, below practical size**: ``l > 0`` and ``u <= delta``;
* **no effect of practical size**: ``-delta <= l <= 0 <= u <= delta``;
* **opposite**: ``u < 0`` (**opposite, below practical size** when also ``l >= -delta``);
* **inconclusive**: anything else.

The headline verdict (:func:`headline`) merges the second and third outcomes into "no effect of
practical size" and records whether a small positive effect was detected. A claim of several
decisive comparisons (:func:`combine`) takes the weakest of their outcomes in the order
opposite < no effect of practical size < holds, below practical size < inconclusive <
reproduces: a conjunction holds no better than its weakest part, and is inconclusive only when
no part is decided against it.

**Multiple comparisons** (:func:`holm`): the decisive comparisons of an arm are one family; each
gets a two-sided p-value for ``effect = 0`` and the interval at Holm's step-down level (the
``j``-th smallest p-value at ``1 - alpha / (m - j + 1)`` while every smaller one is rejected,
then the level of the first one not rejected). **The outcome and the verdict use the
Holm-adjusted interval**; the unadjusted one is reported beside it.

:func:`decide_per_replicate` is the previous rule (per replicate bootstrap intervals: yes when
every replicate's interval lies above 0; no when every one lies below 0 or inside +-delta;
otherwise inconclusive), kept to report its verdicts beside the rule's (the README's
disclosure).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from scipy import stats

from lsc.eval import win_rate

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"

REPRODUCES = "reproduces"
BELOW_PRACTICAL_SIZE = "holds, below practical size"
NO_EFFECT = "no effect of practical size"
OPPOSITE = "opposite"
OPPOSITE_BELOW_PRACTICAL_SIZE = "opposite, below practical size"
OUTCOMES = (OPPOSITE, OPPOSITE_BELOW_PRACTICAL_SIZE, NO_EFFECT, BELOW_PRACTICAL_SIZE,
            INCONCLUSIVE, REPRODUCES)
"""Every outcome, weakest first (the order :func:`combine` takes the minimum in)."""
HEADLINES = (REPRODUCES, NO_EFFECT, OPPOSITE, INCONCLUSIVE)
_RANK = {OPPOSITE: 0, OPPOSITE_BELOW_PRACTICAL_SIZE: 0, NO_EFFECT: 1, BELOW_PRACTICAL_SIZE: 2,
         INCONCLUSIVE: 3, REPRODUCES: 4}


def replicated_intervals(diffs, strata=None, *, num_resamples: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> Dict[str, object]:
    """Per-replicate and pooled intervals of the mean of ``diffs[R, P]`` over prompts.

    Returns ``{"replicates": [I] * R, "pooled": I}`` with ``I = {"value", "ci_low",
    "ci_high"}`` (floats).
    """
    d = _check(diffs)
    means = win_rate.bootstrap_means(d.T, num_resamples, seed, strata)  # [B, R]
    lo, hi = win_rate.percentile_interval(means, confidence)
    reps = [{"value": float(d[r].mean()), "ci_low": float(lo[r]), "ci_high": float(hi[r])}
            for r in range(d.shape[0])]
    rng = np.random.default_rng(seed + 1)
    pick = rng.integers(d.shape[0], size=(means.shape[0], d.shape[0]))
    pooled_samples = np.take_along_axis(means, pick, axis=1).mean(axis=1)
    plo, phi = win_rate.percentile_interval(pooled_samples, confidence)
    pooled = {"value": float(d.mean()), "ci_low": float(plo), "ci_high": float(phi)}
    return {"replicates": reps, "pooled": pooled}


def across_replicates(diffs, confidence: float = 0.95) -> Dict[str, float]:
    """The claim's estimate and its interval across replicates (module docstring).

    Args:
      diffs: ``float[R, P]`` per-replicate, per-prompt paired differences.
      confidence: the interval's level.

    Returns:
      ``{"value", "se", "df", "ci_low", "ci_high", "p_value", "sd_between"}`` (floats):
      ``value`` the mean of ``diffs``; ``se`` its standard error; ``df`` Satterthwaite's degrees
      of freedom; ``p_value`` two-sided for ``effect = 0``; ``sd_between`` the SD of the ``R``
      replicate means. With ``R = 1`` only the prompts vary: ``se`` is the prompts' standard
      error with ``P - 1`` degrees of freedom.
    """
    d = _check(diffs)
    r, p = d.shape
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    grand = float(d.mean())
    row, col = d.mean(axis=1), d.mean(axis=0)
    if r == 1:
        var = float(d[0].var(ddof=1)) / p if p > 1 else 0.0
        df = float(max(p - 1, 1))
    else:
        ms_r = p * float(np.sum((row - grand) ** 2)) / (r - 1)
        if p == 1:
            var, df = ms_r / (r * p), float(r - 1)
        else:
            ms_p = r * float(np.sum((col - grand) ** 2)) / (p - 1)
            resid = d - row[:, None] - col[None, :] + grand
            ms_e = float(np.sum(resid ** 2)) / ((r - 1) * (p - 1))
            # The prompt term is kept only when it adds variance: never narrower than the
            # t-interval over the replicate means.
            shared = max(ms_p - ms_e, 0.0)
            var = (ms_r + shared) / (r * p)
            num = (ms_r + shared) ** 2
            den = ms_r ** 2 / (r - 1)
            if shared > 0.0:
                den += ms_p ** 2 / (p - 1) + ms_e ** 2 / ((r - 1) * (p - 1))
            df = float(num / den) if den > 0.0 else float(r - 1)
    se = float(np.sqrt(var))
    lo, hi = _t_interval(grand, se, df, confidence)
    return {"value": grand, "se": se, "df": df, "ci_low": lo, "ci_high": hi,
            "p_value": _p_value(grand, se, df),
            "sd_between": float(row.std(ddof=1)) if r > 1 else 0.0}


def across_seeds(values, confidence: float = 0.95) -> Dict[str, float]:
    """The claim's estimate and its interval with the RL seed as the unit: the paired
    t-interval over the seeds' values with ``S - 1`` degrees of freedom.

    Args:
      values: ``float[S]`` per-seed paired differences (each seed's mean of ``A - B`` over
        prompts and grid points), ``S >= 2``.
      confidence: the interval's level.

    Returns:
      The keys of :func:`across_replicates` (floats, so :func:`holm`, :func:`adjust_family` and
      :func:`outcome` take it unchanged): ``value`` the mean over seeds, ``se`` their SD over
      ``sqrt(S)``, ``df = S - 1``, ``ci_low``, ``ci_high``, ``p_value`` (two-sided, ``effect =
      0``), ``sd_between`` (the SD of the seeds' values).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"values must have shape [S] with S >= 2 seeds, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values contain non-finite values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    value, sd = float(v.mean()), float(v.std(ddof=1))
    se, df = sd / float(np.sqrt(v.size)), float(v.size - 1)
    lo, hi = _t_interval(value, se, df, confidence)
    return {"value": value, "se": se, "df": df, "ci_low": lo, "ci_high": hi,
            "p_value": _p_value(value, se, df), "sd_between": sd}


def _check(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"diffs must have shape [R, P] with R, P >= 1, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("diffs contain non-finite values")
    return d


def _t_interval(value: float, se: float, df: float, confidence: float) -> Tuple[float, float]:
    q = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    return value - q * se, value + q * se


def _p_value(value: float, se: float, df: float) -> float:
    if se == 0.0:
        return 0.0 if value != 0.0 else 1.0
    return float(2.0 * stats.t.sf(abs(value) / se, df))


def holm(estimates: Sequence[Mapping[str, float]], confidence: float = 0.95
         ) -> List[Dict[str, float]]:
    """Holm-adjusted p-values and intervals of a family of :func:`across_replicates` results.

    Returns, in the input order, ``{"p_value", "confidence", "ci_low", "ci_high"}``: the adjusted
    p-value ``max_{i <= j} min(1, (m - i + 1) p_(i))`` and the interval at the comparison's
    step-down level (module docstring). An empty family gives ``[]``.
    """
    m = len(estimates)
    alpha = 1.0 - confidence
    order = sorted(range(m), key=lambda i: float(estimates[i]["p_value"]))
    out: List[Dict[str, float]] = [{} for _ in range(m)]
    running, rejecting, level = 0.0, True, confidence
    for j, i in enumerate(order):
        est = estimates[i]
        p = float(est["p_value"])
        running = max(running, min(1.0, (m - j) * p))
        if rejecting:
            level = 1.0 - alpha / (m - j)
            rejecting = p <= alpha / (m - j)
        lo, hi = _t_interval(float(est["value"]), float(est["se"]), float(est["df"]), level)
        out[i] = {"p_value": running, "confidence": level, "ci_low": lo, "ci_high": hi}
    return out


def outcome(ci_low: float, ci_high: float, delta: float) -> str:
    """The outcome of an interval ``[ci_low, ci_high]`` (module docstring, the rule)."""
    lo, hi, delta = float(ci_low), float(ci_high), float(delta)
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if not lo <= hi:
        raise ValueError(f"the interval must have ci_low <= ci_high, got [{lo}, {hi}]")
    if lo > 0:
        return REPRODUCES if hi > delta else BELOW_PRACTICAL_SIZE
    if hi < 0:
        return OPPOSITE_BELOW_PRACTICAL_SIZE if lo >= -delta else OPPOSITE
    if -delta <= lo and hi <= delta:
        return NO_EFFECT
    return INCONCLUSIVE


def headline(outcome_: str) -> Tuple[str, bool]:
    """``(verdict, small_effect)``: the headline verdict of an outcome (one of
    :data:`HEADLINES`) and whether a positive effect below practical size was detected."""
    if outcome_ not in _RANK:
        raise ValueError(f"unknown outcome {outcome_!r}; one of {OUTCOMES}")
    if outcome_ in (NO_EFFECT, BELOW_PRACTICAL_SIZE):
        return NO_EFFECT, outcome_ == BELOW_PRACTICAL_SIZE
    if outcome_ in (OPPOSITE, OPPOSITE_BELOW_PRACTICAL_SIZE):
        return OPPOSITE, False
    return outcome_, False


def combine(outcomes: Sequence[str]) -> str:
    """The outcome of a claim of several decisive comparisons: the weakest (module docstring);
    inconclusive when there is none."""
    outcomes = list(outcomes)
    for o in outcomes:
        if o not in _RANK:
            raise ValueError(f"unknown outcome {o!r}; one of {OUTCOMES}")
    return min(outcomes, key=_RANK.__getitem__) if outcomes else INCONCLUSIVE


def compare(diffs, strata=None, *, delta: float, confidence: float = 0.95,
            num_resamples: int = 2000, seed: int = 0) -> Dict[str, object]:
    """One comparison's statistics from ``diffs[R, P]`` (before the family's adjustment).

    Returns ``{"replicate_values": [R], "replicates": [I] * R`` (each replicate's bootstrap
    interval over prompts, :func:`replicated_intervals`), ``"across"`` (:func:`across_replicates`),
    ``"outcome_unadjusted"``, ``"previous_rule": {"verdict", "reason"}}``
    (:func:`decide_per_replicate`).
    """
    d = _check(diffs)
    reps = replicated_intervals(d, strata, num_resamples=num_resamples, confidence=confidence,
                                seed=seed)["replicates"]
    across = across_replicates(d, confidence)
    verdict, reason = decide_per_replicate(reps, delta)
    return {"replicate_values": [float(x) for x in d.mean(axis=1)], "replicates": reps,
            "across": across,
            "outcome_unadjusted": outcome(across["ci_low"], across["ci_high"], delta),
            "previous_rule": {"verdict": verdict, "reason": reason}}


def adjust_family(rows: Sequence[Dict[str, object]], delta: float, confidence: float = 0.95
                  ) -> None:
    """Adds ``"holm"`` (:func:`holm` over ``rows``, each a :func:`compare` result) and the
    ``"outcome"`` of its interval to every row, in place."""
    for row, adj in zip(rows, holm([r["across"] for r in rows], confidence)):
        row["holm"] = adj
        row["outcome"] = outcome(adj["ci_low"], adj["ci_high"], delta)


def holm_text(row: Mapping[str, object]) -> str:
    """``+0.0019 [+0.0004, +0.0034] at 99.17% (Holm)``: a :func:`compare` row's estimate with its
    Holm interval (after :func:`adjust_family`)."""
    h = row["holm"]
    return (f"{row['across']['value']:+.4f} [{h['ci_low']:+.4f}, {h['ci_high']:+.4f}] at "
            f"{100 * h['confidence']:.2f}% (Holm)")


def decide_per_replicate(intervals: Sequence[Mapping[str, float]], delta: float
                         ) -> Tuple[str, str]:
    """``(verdict, reason)`` of a comparison under the previous rule (module docstring) from its
    per-replicate intervals."""
    if not intervals:
        return INCONCLUSIVE, "no replicate to decide on"
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    lo = np.array([float(iv["ci_low"]) for iv in intervals])
    hi = np.array([float(iv["ci_high"]) for iv in intervals])
    above, below, inside = lo > 0, hi < 0, (lo > -delta) & (hi < delta)
    n = len(intervals)
    if above.all():
        return YES, f"the interval lies above 0 on all {n} replicates"
    if (below | inside).all():
        small = int((above & inside).sum())
        reason = (f"on all {n} replicates the interval lies below 0 ({int(below.sum())}) or "
                  f"inside +-{delta:g} ({n - int(below.sum())})")
        if small:
            reason += (f"; {small} of them also above 0: an effect below practical size, not on "
                       "every replicate")
        return NO, reason
    neither = int((~above & ~below & ~inside).sum())
    return INCONCLUSIVE, (f"replicates disagree or are undecided: {int(above.sum())} above 0, "
                          f"{int(below.sum())} below 0, {int(inside.sum())} inside "
                          f"+-{delta:g}, {neither} neither")


def combine_per_replicate(verdicts: Sequence[str]) -> str:
    """A claim of several comparisons under the previous rule: yes when all are yes, no when
    any is no, else inconclusive."""
    verdicts = list(verdicts)
    if verdicts and all(v == YES for v in verdicts):
        return YES
    if any(v == NO for v in verdicts):
        return NO
    return INCONCLUSIVE
