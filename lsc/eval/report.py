"""``report.md``: one table per paper claim, checked against a list of results entries.

Results entry schema
--------------------
One JSON object per evaluated run (``results.json`` holds a list of them, or an object with the
list under ``"entries"``).
Required fields:

``name``         str, unique, e.g. ``"rlhf/lsc/kl0.05"``.
``procedure``    ``"base"`` (the base policy judged against independent base samples),
                 ``"best_of_k"`` or ``"rlhf"``.
``method``       the utility that was maximised, in the results' words of
                 :mod:`lsc.rewards.names` (``raw``, ``lsc``, ``sum``, ``lsc_sum``,
                 ``sigma_and``, ``sigma_or``, ``par``, ``*_nocenter``, ...); ``"base"`` for the
                 base entry. ``<m>_nocenter`` is read as method ``<m>`` with reference ``none``.
``reference``    how ``r_ref`` was obtained, in the note's words: ``"oracle_median"``,
                 ``"predict_median"``, ``"none"`` (no subtraction); any other string is allowed
                 (e.g. ``"oracle_p85"``, ``"refusal"``); ``None`` / ``""`` / ``"zero"`` mean
                 ``"none"`` (:func:`lsc.rewards.names.reference_name`).
``rewards``      list of the properties whose proxy rewards were optimised (``["helpful"]`` for
                 the single-reward runs, ``["harmless", "helpful"]`` for the aggregations);
                 ``[]`` for the base entry.
``k``            int, best-of-k only (the base entry may use 1).
``kl_coef``      float ``gamma``, rlhf only.
``kl``           ``{"mean": float, "se": float, "estimator": str}``: KL(pi || pi0) in nats;
                 estimator ``"k1"`` / ``"k3"`` (``lsc.eval.kl.estimate_kl``), ``"analytic"``
                 (``log k - (k-1)/k``) or ``"bok_plugin"``; the base entry has ``mean = 0``.
``win_rate``     ``{<property>: I, "and": I, "or": I}`` with ``I = {"value", "ci_low",
                 "ci_high"}`` (``lsc.eval.win_rate.win_rates``), judged by the gold judge (or an
                 evaluator RM) against independent base samples.
``proxy_reward`` ``{<property>: float}`` mean proxy reward of the policy's samples.
``gold``         ``{<property>: float}`` mean gold score of the policy's samples.

Optional fields read by the claim checks: ``underfitting`` (``lsc.eval.diagnostics.underfitting``
output; ``per_prompt`` may be dropped), ``reward_hacking`` (``diagnostics.reward_hacking``
output for the run's training curve), ``shortcuts`` (``diagnostics.shortcut_features``),
``seed``, ``num_prompts``, ``seeds`` (``win_rate.across_seeds`` output), ``kl_analytic``
(best-of-k: ``log k - (k-1)/k``, when ``kl`` holds an estimate). Other fields are kept and
ignored. For best-of-k, recording the plug-in estimate (``lsc.eval.kl.best_of_k_kl_plugin``) as
``kl`` and the analytic value as ``kl_analytic`` makes the KL-bound sanity check meaningful; the
analytic value overstates the KL when utilities tie (identical responses, discrete judges).

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
import json
import math
import os
import statistics
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc import runtime
from lsc.eval import kl as kl_lib
from lsc.rewards import names

PROCEDURES = ("base", "best_of_k", "rlhf")
YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"
_VERDICT_TEXT = {YES: "**yes** (reproduces)", NO: "**NO** (does not reproduce)",
                 INCONCLUSIVE: "**inconclusive**"}
_CHECK_TEXT = {YES: "**yes** (passes)", NO: "**NO** (fails)", INCONCLUSIVE: "**inconclusive**"}
SANITY = "sanity check"


# --------------------------------------------------------------------------- entries


def _fail(entry: Mapping[str, Any], msg: str):
    raise ValueError(f"results entry {entry.get('name', '<unnamed>')!r}: {msg}")


def _check_interval(entry, where: str, iv) -> None:
    if not isinstance(iv, Mapping) or any(k not in iv for k in ("value", "ci_low", "ci_high")):
        _fail(entry, f"{where} must be {{'value', 'ci_low', 'ci_high'}}, got {iv!r}")
    v, lo, hi = (float(iv[k]) for k in ("value", "ci_low", "ci_high"))
    if not all(math.isfinite(x) for x in (v, lo, hi)):
        _fail(entry, f"{where} has non-finite numbers: {iv!r}")
    if not lo <= hi:
        _fail(entry, f"{where} has ci_low > ci_high: {iv!r}")


def validate_entry(entry: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` naming the entry and field when ``entry`` breaks the schema."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"a results entry must be a mapping, got {type(entry).__name__}")
    for field in ("name", "procedure", "method", "kl", "win_rate", "proxy_reward", "gold"):
        if field not in entry:
            _fail(entry, f"missing field {field!r}")
    if "reference" not in entry:
        _fail(entry, "missing field 'reference' (None for no reference)")
    rewards = entry.get("rewards")
    if (not isinstance(rewards, (list, tuple))
            or not all(isinstance(r, str) for r in rewards)):
        _fail(entry, f"rewards must be a list of property names ([] for the base entry), got "
                     f"{rewards!r}")
    if entry["procedure"] not in PROCEDURES:
        _fail(entry, f"procedure must be one of {PROCEDURES}, got {entry['procedure']!r}")
    if entry["procedure"] == "best_of_k":
        k = entry.get("k")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            _fail(entry, f"best_of_k entries need an integer k >= 1, got {k!r}")
    if entry["procedure"] == "rlhf":
        c = entry.get("kl_coef")
        if not isinstance(c, (int, float, np.floating)) or isinstance(c, bool) or not c >= 0:
            _fail(entry, f"rlhf entries need kl_coef >= 0, got {c!r}")
    kl = entry["kl"]
    if not isinstance(kl, Mapping) or "mean" not in kl:
        _fail(entry, f"kl must be {{'mean', 'se', 'estimator'}}, got {kl!r}")
    if not math.isfinite(float(kl["mean"])):
        _fail(entry, f"kl.mean must be finite, got {kl['mean']!r}")
    wr = entry["win_rate"]
    if not isinstance(wr, Mapping) or "and" not in wr or "or" not in wr:
        _fail(entry, "win_rate must hold every property plus 'and' and 'or'")
    for key, iv in wr.items():
        _check_interval(entry, f"win_rate.{key}", iv)
    for field in ("proxy_reward", "gold"):
        if not isinstance(entry[field], Mapping):
            _fail(entry, f"{field} must map property -> mean score")


def validate_entries(entries: Sequence[Mapping[str, Any]]) -> None:
    """:func:`validate_entry` for each entry, and unique names."""
    seen = set()
    for e in entries:
        validate_entry(e)
        if e["name"] in seen:
            _fail(e, "duplicate name")
        seen.add(e["name"])


def normalized(entry: Mapping[str, Any]) -> Tuple[str, str]:
    """``(method, reference)`` of an entry, with ``*_nocenter`` and empty references read as
    reference ``"none"`` (:func:`lsc.rewards.names.split_nocenter`)."""
    return names.split_nocenter(entry["method"], entry.get("reference"))


def label(entry: Mapping[str, Any]) -> str:
    """``<method>`` or ``<method>_<reference>`` (the note's run names)."""
    return names.run_label(*normalized(entry))


def make_entry(name: str, procedure: str, method: str, reference: Optional[str],
               rewards: Sequence[str], kl: Mapping[str, Any], win_rate: Mapping[str, Any],
               proxy_reward: Mapping[str, float], gold: Mapping[str, float], *,
               k: Optional[int] = None, kl_coef: Optional[float] = None,
               **extra: Any) -> Dict[str, Any]:
    """Builds and validates one results entry (module docstring); ``extra`` fields are kept."""
    entry: Dict[str, Any] = {
        "name": name, "procedure": procedure, "method": method, "reference": reference,
        "rewards": list(rewards), "kl": dict(kl), "win_rate": {k_: dict(v) for k_, v in
                                                               win_rate.items()},
        "proxy_reward": {p: float(v) for p, v in proxy_reward.items()},
        "gold": {p: float(v) for p, v in gold.items()},
    }
    if k is not None:
        entry["k"] = int(k)
    if kl_coef is not None:
        entry["kl_coef"] = float(kl_coef)
    entry.update(extra)
    validate_entry(entry)
    return entry


def load_entries(path: str) -> List[Dict[str, Any]]:
    """Entries from a JSON file holding a list of entries or ``{"entries": [...]}``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    entries = data.get("entries") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries or {{'entries': [...]}}")
    validate_entries(entries)
    return entries


# --------------------------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True)
class Selector:
    """Entries of one ``procedure`` whose normalised method is in ``methods``, reference in
    ``references`` (None: any) and number of optimised rewards is ``num_rewards`` (None: any)."""

    procedure: str
    methods: Tuple[str, ...]
    references: Optional[Tuple[str, ...]] = None
    num_rewards: Optional[int] = None

    def select(self, entries: Sequence[Mapping[str, Any]]) -> Dict[str, List[Mapping]]:
        """Matching entries grouped by :func:`label`."""
        out: Dict[str, List[Mapping]] = {}
        for e in entries:
            if e.get("procedure") != self.procedure:
                continue
            m, r = normalized(e)
            if m not in self.methods:
                continue
            if self.references is not None and r not in self.references:
                continue
            if self.num_rewards is not None and len(e.get("rewards", ())) != self.num_rewards:
                continue
            out.setdefault(label(e), []).append(e)
        return out

    def describe(self) -> str:
        refs = "" if self.references is None else f", reference {'/'.join(self.references)}"
        n = "" if self.num_rewards is None else f", {self.num_rewards} reward(s)"
        return f"{self.procedure}: {'/'.join(self.methods)}{refs}{n}"


def metric_interval(entry: Mapping[str, Any], metric: str) -> Optional[Dict[str, float]]:
    """The ``{value, ci_low, ci_high}`` at dotted path ``metric`` (e.g. ``win_rate.and``,
    ``underfitting.worst_group``); None when absent."""
    node: Any = entry
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, Mapping) or any(k not in node for k in ("value", "ci_low",
                                                                    "ci_high")):
        return None
    return {k: float(node[k]) for k in ("value", "ci_low", "ci_high")}


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


# --------------------------------------------------------------------------- the claims

MEDIAN_REFS = ("oracle_median",)
NO_REFS = (names.NO_REFERENCE,)
_RULE = ("match runs at equal KL (RLHF) or k (best-of-k); yes when the 95% CI of A - B excludes "
         "0 above at some point and below at none; no in the mirror case; else inconclusive")


def _rl(methods, n, refs=None):
    return Selector("rlhf", tuple(methods), None if refs is None else tuple(refs), n)


def _bok(methods, refs=None, n=2):
    return Selector("best_of_k", tuple(methods), None if refs is None else tuple(refs), n)


DEFAULT_CLAIMS: Tuple[Claim, ...] = (
    Claim("base_is_chance", SANITY,
          "The base policy judged against independent base samples wins half the time "
          "(per property).",
          "yes when every per-property 95% CI covers 0.5 (AND/OR shown, not expected at 0.5)",
          check=check_base_is_chance),
    Claim("bok_kl_bound", SANITY,
          "Best-of-k KL estimates respect the analytic bound log k - (k-1)/k.",
          "yes when every estimate minus 2 SE is at most the bound",
          check=check_best_of_k_kl_bound),
    Claim("lsc_vs_raw", "paper (RLHF, helpfulness)",
          "Aligning to the LSC-transformed reward log sigma(r - r_ref) gives a higher "
          "helpfulness win rate than the raw reward at the same KL.",
          _RULE,
          (Comparison(_rl(names.LSC_NAMES, 1), _rl(names.RAW_NAMES, 1), "win_rate.helpful"),)),
    Claim("lsc_sum_vs_sum", "paper (RLHF, helpful and harmless)",
          "The sum of LSC-transformed rewards (a logical AND) beats the raw sum: higher win rate "
          "on both properties at once (AND) at the same KL.",
          _RULE,
          (Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.and"),
           Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.helpful", decisive=False),
           Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.harmless", decisive=False))),
    Claim("underfitting", "paper (RLHF, helpfulness)",
          "LSC mitigates underfitting: it improves the worst-served prompts (lowest base "
          "gold-score quartile) more than the raw reward at the same KL.",
          _RULE + "; metric: underfitting.worst_group (mean gold improvement of quartile 1)",
          (Comparison(_rl(names.LSC_NAMES, 1), _rl(names.RAW_NAMES, 1),
                      "underfitting.worst_group"),)),
    Claim("reward_hacking", "paper (RLHF, helpfulness)",
          "LSC mitigates reward hacking: under strong optimisation the raw reward's proxy keeps "
          "rising while gold falls; LSC loses much less gold.",
          "at the smallest common kl_coef: yes when raw is flagged hacking and LSC's gold drop "
          "after its peak is at most half of raw's; no when LSC drops as much or more; "
          "inconclusive when raw shows no hacking (point values, no CI)",
          check=check_reward_hacking),
    Claim("and_beats_sum", "note, claim 1 (best-of-k)",
          "sigma_AND implements logical AND: with the median reference it beats the raw sum on "
          "the AND win rate.",
          _RULE,
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sum"], NO_REFS),
                      "win_rate.and"),)),
    Claim("or_beats_sum", "note, claim 1 (best-of-k)",
          "sigma_OR implements logical OR: with the median reference it beats the raw sum on "
          "the OR win rate.",
          _RULE,
          (Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sum"], NO_REFS),
                      "win_rate.or"),)),
    Claim("and_or_differ", "note, claim 1 (best-of-k)",
          "sigma_AND and sigma_OR are not interchangeable: sigma_AND wins more on AND, "
          "sigma_OR more on OR.",
          _RULE + "; both comparisons must reproduce",
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sigma_or"], MEDIAN_REFS),
                      "win_rate.and"),
           Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sigma_and"], MEDIAN_REFS),
                      "win_rate.or"))),
    Claim("reference_matters", "note, claim 2 (best-of-k)",
          "The reference matters: subtracting the base policy's median reward beats no "
          "subtraction (sigma_AND on AND, sigma_OR on OR); a predicted median is shown too.",
          _RULE + "; the oracle-median comparisons decide, predicted-median rows are shown",
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sigma_and"], NO_REFS),
                      "win_rate.and"),
           Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sigma_or"], NO_REFS),
                      "win_rate.or"),
           Comparison(_bok(["sigma_and"], ["predict_median"]), _bok(["sigma_and"], NO_REFS),
                      "win_rate.and", decisive=False),
           Comparison(_bok(["sigma_or"], ["predict_median"]), _bok(["sigma_or"], NO_REFS),
                      "win_rate.or", decisive=False))),
)


def check_claims(entries: Sequence[Mapping[str, Any]],
                 claims: Sequence[Claim] = DEFAULT_CLAIMS,
                 confidence: float = 0.95) -> List[ClaimResult]:
    """Validates the entries and evaluates every claim."""
    validate_entries(entries)
    return [c.evaluate(entries, confidence) for c in claims]


# --------------------------------------------------------------------------- markdown


def _fmt(iv: Mapping[str, float], digits: int = 3) -> str:
    v, lo, hi = iv["value"], iv["ci_low"], iv["ci_high"]
    if lo == v == hi:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _outcome(row: Row) -> str:
    if row.outcome is not None:
        return row.outcome
    if row.diff["ci_low"] > 0:
        return "A better"
    if row.diff["ci_high"] < 0:
        return "A worse"
    return "n.s."


def _runs_table(entries: Sequence[Mapping[str, Any]]) -> List[str]:
    props: List[str] = []
    for e in entries:
        for k in e["win_rate"]:
            if k not in ("and", "or", "and_or_mean") and k not in props:
                props.append(k)
    cols = props + ["and", "or"]
    if any("and_or_mean" in e["win_rate"] for e in entries):
        cols.append("and_or_mean")
    head = ["run", "procedure", "method", "reference", "k / kl_coef", "KL (se)"]
    head += [f"win {c}" for c in cols] + ["gold " + p for p in props]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        m, r = normalized(e)
        knob = (f"k={e['k']}" if e["procedure"] == "best_of_k"
                else f"gamma={e['kl_coef']:g}" if e["procedure"] == "rlhf" else "")
        se = e["kl"].get("se")
        kl = f"{float(e['kl']['mean']):.3f}"
        if se is not None and math.isfinite(float(se)) and float(se) > 0:
            kl += f" ({float(se):.3f})"
        if e["kl"].get("estimator"):
            kl += f" {e['kl']['estimator']}"
        cells = [str(e["name"]), e["procedure"], m, r, knob, kl]
        cells += [_fmt(e["win_rate"][c]) if c in e["win_rate"] else "" for c in cols]
        cells += [f"{float(e['gold'][p]):.3f}" if p in e["gold"] else "" for p in props]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict_text(r: ClaimResult) -> str:
    return (_CHECK_TEXT if r.claim.source == SANITY else _VERDICT_TEXT)[r.verdict]


def render_report(entries: Sequence[Mapping[str, Any]],
                  claims: Sequence[Claim] = DEFAULT_CLAIMS, *, title: str = "Reproduction report",
                  preamble: str = "", confidence: float = 0.95) -> str:
    """The markdown text of the report: a summary, one table per claim, all runs."""
    results = check_claims(entries, claims, confidence)
    pct = f"{100 * confidence:g}%"
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble.strip(), ""]
    out += ["## Summary", "", "| claim | source | reproduces |", "|---|---|---|"]
    for r in results:
        out.append(f"| {r.claim.text} | {r.claim.source} | {_verdict_text(r)} |")
    claims_ = [r for r in results if r.claim.source != SANITY]
    checks = [r for r in results if r.claim.source == SANITY]
    count = {v: sum(r.verdict == v for r in claims_) for v in (YES, NO, INCONCLUSIVE)}
    failed = [r.claim.key for r in checks if r.verdict == NO]
    out += ["", f"Claims: {count[YES]} reproduce, {count[NO]} do not, {count[INCONCLUSIVE]} "
            f"inconclusive. Sanity checks: "
            f"{'failed: ' + ', '.join(failed) if failed else 'none failed'}. Intervals are "
            f"{pct} (bootstrap over prompts for win rates; A - B from the two intervals, "
            f"treated as independent).", ""]
    for i, r in enumerate(results, 1):
        out += [f"## Claim {i}: {r.claim.key}", "",
                f"**Claim** ({r.claim.source}): {r.claim.text}", "",
                f"**Rule**: {r.claim.rule}.", "",
                f"**{'Passes' if r.claim.source == SANITY else 'Reproduces'}**: "
                f"{_verdict_text(r)}: {r.reason}.", ""]
        if r.rows:
            out += ["| comparison (A vs B) | metric | at | A | B | A - B | outcome |",
                    "|---|---|---|---|---|---|---|"]
            for row in r.rows:
                metric = row.metric + ("" if row.decisive else " (shown, not decisive)")
                out.append(f"| {row.comparison} | {metric} | {row.at} | {_fmt(row.a)} | "
                           f"{_fmt(row.b)} | {_fmt(row.diff)} | {_outcome(row)} |")
        else:
            out.append("_No runs to compare._")
        out.append("")
    out += ["## All runs", ""] + _runs_table(entries) + [""]
    return "\n".join(out)


def write_report(entries: Sequence[Mapping[str, Any]], path: str,
                 claims: Sequence[Claim] = DEFAULT_CLAIMS, **kwargs) -> str:
    """Writes :func:`render_report` to ``path`` (atomically) and returns ``path``."""
    text = render_report(entries, claims, **kwargs)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    runtime.write_text_atomic(path, text)
    return path
