"""Replicated, paired statistics and the decision rule of a claim.

A claim compares two procedures ``A`` and ``B`` evaluated on the same ``P`` prompts (the same
banks, opponents and seeds), once per replicate of the trained components (``R`` reward models
trained on independent data with independent initialisation). Its primary statistic is the mean
over prompts of a per-prompt paired difference ``d[r, p]`` (e.g. ``A - B`` of the win rate,
averaged over a pre-declared KL grid or set of k values).

Intervals (:func:`replicated_intervals`):

* per replicate, the percentile bootstrap over prompts, resampled within prompt classes
  (``strata``); every replicate uses the same prompt resamples, as the prompts are shared;
* pooled, the mean over replicates, with a two-level bootstrap: each resample draws the prompts
  (as above) and ``R`` replicates with replacement, so the interval includes the
  replicate-to-replicate variation as well as the prompt sampling.

Rule (:func:`decide`, written before any result; its aggregation over replicates revised once,
see below): with ``delta`` the smallest effect of practical size, a comparison **reproduces** when
its interval lies above 0 on every replicate; it **does not reproduce** when on every replicate
its interval lies below 0 or inside ``(-delta, delta)`` (no effect of practical size); otherwise
it is **inconclusive**. An interval can lie above 0 and inside ``(-delta, delta)`` at once (an
effect, but below practical size): it counts towards "reproduces" when every replicate lies above
0, and towards "does not reproduce" otherwise. A claim of several comparisons (:func:`combine`)
reproduces when all of them do, does not when any does not, and is inconclusive otherwise.

Revision: the first implementation classified each replicate on its own, "above 0" first, and
required every replicate to get the same class, so replicates that all lay inside
``(-delta, delta)``, some of them also above 0, made the comparison inconclusive. The rule as
declared in the reproduction issue reads at the level of the comparison (above 0 on every
replicate; below 0 or inside +-delta on every replicate), which :func:`decide` now implements.
The change was made after the first two runs of the main job (README, Results).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from lsc.eval import win_rate

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"


def replicated_intervals(diffs, strata=None, *, num_resamples: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> Dict[str, object]:
    """Per-replicate and pooled intervals of the mean of ``diffs[R, P]`` over prompts.

    Returns ``{"replicates": [I] * R, "pooled": I}`` with ``I = {"value", "ci_low",
    "ci_high"}`` (floats).
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"diffs must have shape [R, P] with R, P >= 1, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("diffs contain non-finite values")
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


def decide(intervals: Sequence[Mapping[str, float]], delta: float) -> Tuple[str, str]:
    """``(verdict, reason)`` of a comparison from its per-replicate intervals (module rule)."""
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


def combine(verdicts: Sequence[str]) -> str:
    """A claim of several comparisons: yes when all are yes, no when any is no, else
    inconclusive."""
    verdicts = list(verdicts)
    if verdicts and all(v == YES for v in verdicts):
        return YES
    if any(v == NO for v in verdicts):
        return NO
    return INCONCLUSIVE


def within_delta(intervals: Sequence[Mapping[str, float]], delta: float) -> bool:
    """True when every interval lies inside ``(-delta, delta)``: whatever the verdict, no
    replicate shows an effect of practical size (reported beside the verdict)."""
    return bool(intervals) and all(-delta < float(iv["ci_low"]) and float(iv["ci_high"]) < delta
                                   for iv in intervals)


def half_widths(intervals: Sequence[Mapping[str, float]]) -> List[float]:
    """``(ci_high - ci_low) / 2`` of each interval."""
    return [0.5 * (float(iv["ci_high"]) - float(iv["ci_low"])) for iv in intervals]
