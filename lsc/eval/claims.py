"""Claims about results entries (:mod:`lsc.eval.entries`) and the statistics that decide them.

The claim list itself is not here: callers write their :class:`Claim` s and pass them in.

Claim checks
------------
Each claim is a :class:`Claim` made of :class:`Comparison` s of two groups of entries (``a``
expected better than ``b``) on one metric, matched at equal ``k`` (best-of-k) or at equal KL
(RLHF: both curves are linearly interpolated, values and CI bounds alike, at every KL in the
overlap of their KL ranges). At each matched point the difference ``a - b`` gets an interval
``diff +- z * sqrt(se_a**2 + se_b**2)``, with ``se = (ci_high - ci_low) / (2 z)`` read from each
CI (``z`` the normal quantile of the confidence). Runs judged on the same prompts are positively
correlated, which this ignores; the interval is then wider than a paired bootstrap's, so the rule
errs towards "inconclusive", not towards "yes".

Rule (:func:`comparison_verdict`): a comparison **reproduces** when the difference's interval
lies above 0 at one matched point at least and below 0 at none; it **does not reproduce** when
it lies below 0 somewhere and above 0 nowhere; otherwise (no significant point, mixed signs, or
nothing to match) it is **inconclusive**. A claim reproduces when all its decisive comparisons
do, does not when any does not, and is inconclusive otherwise. The checks are pure functions of
the entries.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc.eval import kl as kl_lib
from lsc.eval.entries import Selector, metric_interval, normalized, validate_entries
from lsc.rewards import names

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"
SANITY = "sanity check"


# --------------------------------------------------------------------------- comparisons


def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def difference_interval(a: Mapping[str, float], b: Mapping[str, float],
                        confidence: float = 0.95) -> Dict[str, float]:
    """Interval of ``a - b`` from two intervals (module docstring: normal approximation, the
    two treated as independent)."""
    z = _z(confidence)
    se_a = (a["ci_high"] - a["ci_low"]) / (2 * z)
    se_b = (b["ci_high"] - b["ci_low"]) / (2 * z)
    d = a["value"] - b["value"]
    h = z * math.hypot(se_a, se_b)
    return {"value": d, "ci_low": d - h, "ci_high": d + h}


def _curve(group: Sequence[Mapping], metric: str):
    pts = []
    for e in group:
        iv = metric_interval(e, metric)
        if iv is not None:
            pts.append((float(e["kl"]["mean"]), iv))
    pts.sort(key=lambda p: p[0])
    return pts


def _interp(pts, x: float) -> Dict[str, float]:
    xs = np.array([p[0] for p in pts])
    return {k: float(np.interp(x, xs, [p[1][k] for p in pts]))
            for k in ("value", "ci_low", "ci_high")}


def matched_points(a: Sequence[Mapping], b: Sequence[Mapping], metric: str, procedure: str
                   ) -> List[Tuple[str, Dict[str, float], Dict[str, float]]]:
    """``[(at, interval_a, interval_b)]``: best-of-k entries matched at equal ``k``; RLHF (and
    any other) entries at every KL of either curve inside the overlap of their KL ranges, both
    curves linearly interpolated."""
    out = []
    if procedure == "best_of_k":
        by_k_b = {}
        for e in b:
            iv = metric_interval(e, metric)
            if iv is not None:
                by_k_b[int(e["k"])] = iv
        for e in sorted(a, key=lambda e: int(e["k"])):
            iv = metric_interval(e, metric)
            if iv is not None and int(e["k"]) in by_k_b:
                out.append((f"k={int(e['k'])}", iv, by_k_b[int(e["k"])]))
        return out
    pa, pb = _curve(a, metric), _curve(b, metric)
    if not pa or not pb:
        return out
    lo = max(pa[0][0], pb[0][0])
    hi = min(pa[-1][0], pb[-1][0])
    if lo > hi:
        return out
    grid = sorted({x for x, _ in pa + pb if lo <= x <= hi})
    for x in grid:
        out.append((f"KL={x:.3g}", _interp(pa, x), _interp(pb, x)))
    return out


def comparison_verdict(diffs: Sequence[Mapping[str, float]]) -> Tuple[str, str]:
    """``(verdict, reason)`` from the difference intervals of one comparison (module rule)."""
    if not diffs:
        return INCONCLUSIVE, "no matched points (missing runs or non-overlapping KL ranges)"
    above = sum(d["ci_low"] > 0 for d in diffs)
    below = sum(d["ci_high"] < 0 for d in diffs)
    n = len(diffs)
    if above and not below:
        return YES, f"A better with the CI excluding 0 at {above}/{n} matched points, worse at none"
    if below and not above:
        return NO, f"A worse with the CI excluding 0 at {below}/{n} matched points, better at none"
    if above and below:
        return INCONCLUSIVE, f"mixed: A significantly better at {above}, worse at {below} of {n}"
    lean = sum(d["value"] > 0 for d in diffs)
    return INCONCLUSIVE, (f"no matched point significant ({n} points; A ahead in point "
                          f"estimate at {lean})")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``a`` expected better than ``b`` on ``metric`` (dotted path into the entries);
    non-decisive comparisons are shown but do not enter the verdict."""

    a: Selector
    b: Selector
    metric: str
    decisive: bool = True


@dataclasses.dataclass
class Row:
    """One matched point of a comparison."""

    comparison: str
    metric: str
    at: str
    a: Dict[str, float]
    b: Dict[str, float]
    diff: Dict[str, float]
    decisive: bool
    outcome: Optional[str] = None  # overrides the default "A better / A worse / n.s." text


@dataclasses.dataclass
class ClaimResult:
    """The outcome of one claim: its rows, the verdict and why."""

    claim: "Claim"
    rows: List[Row]
    verdict: str
    reason: str


def run_comparison(comp: Comparison, entries: Sequence[Mapping[str, Any]],
                   confidence: float = 0.95) -> Tuple[List[Row], str, str]:
    """Rows and ``(verdict, reason)`` of one comparison; every label of ``a`` is compared with
    every label of ``b``."""
    ga, gb = comp.a.select(entries), comp.b.select(entries)
    rows: List[Row] = []
    if not ga or not gb:
        missing = [s.describe() for s, g in ((comp.a, ga), (comp.b, gb)) if not g]
        return rows, INCONCLUSIVE, f"no runs for {'; '.join(missing)}"
    for la, ea in ga.items():
        for lb, eb in gb.items():
            for at, ia, ib in matched_points(ea, eb, comp.metric, comp.a.procedure):
                rows.append(Row(f"{la} vs {lb}", comp.metric, at, ia, ib,
                                difference_interval(ia, ib, confidence), comp.decisive))
    verdict, reason = comparison_verdict([r.diff for r in rows])
    return rows, verdict, reason


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """All yes -> yes; any no -> no; otherwise inconclusive (no verdicts: inconclusive)."""
    if verdicts and all(v == YES for v in verdicts):
        return YES
    if any(v == NO for v in verdicts):
        return NO
    return INCONCLUSIVE


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper or the note and how it is checked.

    ``check`` (when set) replaces the comparison rule: a pure function ``entries ->
    (rows, verdict, reason)``.
    """

    key: str
    source: str
    text: str
    rule: str
    comparisons: Tuple[Comparison, ...] = ()
    check: Optional[Callable[[Sequence[Mapping[str, Any]]], Tuple[List[Row], str, str]]] = None

    def evaluate(self, entries: Sequence[Mapping[str, Any]], confidence: float = 0.95
                 ) -> ClaimResult:
        if self.check is not None:
            rows, verdict, reason = self.check(entries)
            return ClaimResult(self, rows, verdict, reason)
        rows: List[Row] = []
        verdicts, reasons = [], []
        for comp in self.comparisons:
            r, v, why = run_comparison(comp, entries, confidence)
            rows.extend(r)
            if comp.decisive:
                verdicts.append(v)
                reasons.append(f"{comp.a.describe()} vs {comp.b.describe()} on {comp.metric}: "
                               f"{v} ({why})")
        return ClaimResult(self, rows, combine_verdicts(verdicts), "; ".join(reasons))


# --------------------------------------------------------------------------- special checks


def _iv_row(comparison: str, metric: str, at: str, iv: Mapping[str, float], target: float,
            decisive: bool, outcome: str) -> Row:
    ref = {"value": target, "ci_low": target, "ci_high": target}
    return Row(comparison, metric, at, dict(iv), ref,
               {k: iv[k] - target for k in ("value", "ci_low", "ci_high")}, decisive, outcome)


def check_base_is_chance(entries: Sequence[Mapping[str, Any]]):
    """The base entry's per-property win rates (and ``and_or_mean`` when present) have CIs
    covering 0.5. AND and OR are shown but are not expected at 0.5 (``lsc.eval.win_rate``)."""
    base = [e for e in entries if e.get("procedure") == "base"]
    if not base:
        return [], INCONCLUSIVE, "no base entry"
    rows, bad = [], []
    for e in base:
        for key, iv in e["win_rate"].items():
            decisive = key not in ("and", "or")
            covers = iv["ci_low"] <= 0.5 <= iv["ci_high"]
            outcome = ("not expected at 0.5" if not decisive
                       else "CI covers 0.5" if covers else "CI excludes 0.5")
            rows.append(_iv_row(e["name"], f"win_rate.{key}", "base vs base", iv, 0.5, decisive,
                                outcome))
            if decisive and not covers:
                bad.append(f"{e['name']}: {key}")
    if bad:
        return rows, NO, f"CI excludes 0.5 for {', '.join(bad)}"
    return rows, YES, "every per-property CI covers 0.5"


def check_best_of_k_kl_bound(entries: Sequence[Mapping[str, Any]], num_se: float = 2.0):
    """Estimated best-of-k KLs are at most ``log k - (k-1)/k`` plus ``num_se`` standard errors
    (entries whose KL is the analytic value itself are skipped)."""
    rows, bad = [], []
    for e in entries:
        if e.get("procedure") != "best_of_k" or e["kl"].get("estimator") == "analytic":
            continue
        bound = kl_lib.best_of_k_analytic(int(e["k"]))
        mean = float(e["kl"]["mean"])
        se = float(e["kl"].get("se") or 0.0)
        se = 0.0 if not math.isfinite(se) else se
        iv = {"value": mean, "ci_low": mean - num_se * se, "ci_high": mean + num_se * se}
        above = iv["ci_low"] > bound
        rows.append(_iv_row(e["name"], f"kl ({e['kl'].get('estimator', '?')}) vs bound",
                            f"k={int(e['k'])}", iv, bound, True,
                            "above the bound" if above else "within the bound"))
        if above:
            bad.append(e["name"])
    if not rows:
        return rows, INCONCLUSIVE, "no best-of-k entry with an estimated (non-analytic) KL"
    if bad:
        return rows, NO, f"estimate above the bound by more than {num_se} SE: {', '.join(bad)}"
    return rows, YES, f"all {len(rows)} estimates within {num_se} SE of the bound or below"


def check_reward_hacking(entries: Sequence[Mapping[str, Any]], a_methods=names.LSC_NAMES,
                         b_methods=names.RAW_NAMES, num_rewards: int = 1, ratio: float = 0.5):
    """At the smallest ``kl_coef`` run by both (the strongest optimisation), the ``b`` run
    (raw) shows hacking (``reward_hacking.hacking``) and the ``a`` run (LSC) loses at most
    ``ratio`` times as much gold after its peak. Not reproduced when LSC loses at least as much
    gold as raw after a raw hack; inconclusive when raw shows no hacking or curves are missing."""

    def runs(methods):
        out = {}
        for e in entries:
            if (e.get("procedure") == "rlhf" and normalized(e)[0] in methods
                    and len(e.get("rewards", ())) == num_rewards
                    and isinstance(e.get("reward_hacking"), Mapping)):
                out[float(e["kl_coef"])] = e
        return out

    ra, rb = runs(a_methods), runs(b_methods)
    common = sorted(set(ra) & set(rb))
    if not common:
        return [], INCONCLUSIVE, "no rlhf runs with reward_hacking curves for both methods"
    rows = []
    for c in common:
        ha, hb = ra[c]["reward_hacking"], rb[c]["reward_hacking"]
        da, db = float(ha["gold_drop"]), float(hb["gold_drop"])
        rows.append(Row(f"{'/'.join(a_methods)} vs {'/'.join(b_methods)}",
                        "reward_hacking.gold_drop (lower is better)", f"kl_coef={c:g}",
                        {"value": da, "ci_low": da, "ci_high": da},
                        {"value": db, "ci_low": db, "ci_high": db},
                        {"value": da - db, "ci_low": da - db, "ci_high": da - db},
                        c == common[0],
                        "A loses less gold" if da < db else "A loses as much or more"
                        if da > 0 or db > 0 else "no gold lost"))
    c = common[0]
    ha, hb = ra[c]["reward_hacking"], rb[c]["reward_hacking"]
    if not hb.get("hacking"):
        return rows, INCONCLUSIVE, (f"the raw run at kl_coef={c:g} shows no hacking (gold drop "
                                    f"{hb['gold_drop']:.3g}): nothing to mitigate")
    if ha["gold_drop"] <= ratio * hb["gold_drop"]:
        return rows, YES, (f"at kl_coef={c:g} raw loses {hb['gold_drop']:.3g} gold after its "
                           f"peak, LSC {ha['gold_drop']:.3g}")
    if ha["gold_drop"] >= hb["gold_drop"]:
        return rows, NO, (f"at kl_coef={c:g} LSC loses as much gold as raw or more "
                          f"({ha['gold_drop']:.3g} vs {hb['gold_drop']:.3g})")
    return rows, INCONCLUSIVE, (f"at kl_coef={c:g} LSC loses less gold than raw "
                                f"({ha['gold_drop']:.3g} vs {hb['gold_drop']:.3g}) but more "
                                f"than {ratio:g}x")


# --------------------------------------------------------------------------- all claims


def check_claims(entries: Sequence[Mapping[str, Any]], claims: Sequence[Claim],
                 confidence: float = 0.95) -> List[ClaimResult]:
    """Validates the entries and evaluates every claim."""
    validate_entries(entries)
    return [c.evaluate(entries, confidence) for c in claims]
