"""``report.md``: markdown rendering of decided claims (:mod:`lsc.eval.decision`, as written by
:mod:`lsc.repro.claims`) and of results entries (:mod:`lsc.eval.entries`) judged by a list of
checks (:mod:`lsc.eval.claims`) that the caller passes in.

The report holds a summary (one line per claim with its verdict), one table per claim (its
matched points: ``A``, ``B`` and ``A - B`` as ``value [ci_low, ci_high]``) and a table of all
runs (KL, win rates per property, AND and OR, mean gold scores).
"""

from __future__ import annotations

import math
import os
from typing import Any, List, Mapping, Optional, Sequence

from lsc import runtime
from lsc.eval.claims import SANITY, Claim, ClaimResult, Row, check_claims
from lsc.eval.decision import HEADLINES, INCONCLUSIVE, NO, YES
from lsc.eval.entries import normalized

_VERDICT_TEXT = {YES: "**yes** (reproduces)", NO: "**NO** (does not reproduce)",
                 INCONCLUSIVE: "**inconclusive**"}
_CHECK_TEXT = {YES: "**yes** (passes)", NO: "**NO** (fails)", INCONCLUSIVE: "**inconclusive**"}


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


def _fmt_opt(iv: Optional[Mapping[str, float]], digits: int = 3) -> str:
    return "" if not iv else _fmt(iv, digits)


def _headline(claim: Mapping[str, Any]) -> str:
    """The headline verdict in bold, with the small positive effect when one was detected."""
    text = f"**{claim['verdict']}**"
    if claim.get("small_effect"):
        text += " (a positive effect below practical size detected)"
    return text


def _across(row: Mapping[str, Any], key: str = "across") -> str:
    iv = row.get(key)
    if not iv:
        return ""
    value = row["across"]["value"]
    return f"{value:+.4f} [{float(iv['ci_low']):+.4f}, {float(iv['ci_high']):+.4f}]"


def render_decided(decided: Mapping[str, Any]) -> List[str]:
    """Markdown lines of decided claims: the rule, a summary (per claim and decisive comparison:
    the estimate across replicates with its unadjusted and Holm-adjusted intervals, every
    replicate's value, the outcome, the headline verdict and the previous rule's), one table per
    claim (every comparison with each replicate's bootstrap interval and the gold control) and
    the sanity checks. ``decided`` holds ``claims`` and ``sanity`` as written by
    ``lsc.repro.claims`` (plain dicts), ``delta``, ``confidence`` and the grids."""
    claims = decided["claims"]
    pct = f"{100 * float(decided.get('confidence', 0.95)):g}%"
    out = ["## Decided claims (exact arm)", ""]
    if claims:
        out += [f"**Rule** (declared before the results): {claims[0]['rule']}; "
                f"delta = {float(decided['delta']):g}. Primary statistic of each comparison: "
                "the mean over prompts of the paired per-prompt difference A - B, averaged over "
                f"the KL grid {tuple(decided.get('kl_grid', ()))} (KL-regularised optima) or over "
                f"k in {tuple(decided.get('primary_ks', ()))} (best-of-k), per replicate. "
                f"Intervals are {pct} before the Holm adjustment.", ""]
    out += ["| claim | judge | decisive comparison | per replicate | across replicates "
            "[unadjusted] | Holm | outcome | verdict | previous rule |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in claims:
        for row in c["comparisons"]:
            if not row["decisive"]:
                continue
            reps = ", ".join(f"{v:+.4f}" for v in row.get("replicate_values", []))
            out.append(f"| {c['key']} | {c.get('judge', '')} | {row['describe']} | {reps} | "
                       f"{_across(row)} | {_across(row, 'holm')} | {row['outcome']} | "
                       f"{_headline(c)} | {c.get('previous_rule_verdict', '')} |")
    count = {v: sum(c["verdict"] == v for c in claims) for v in HEADLINES}
    out += ["", "Decided claims: " + ", ".join(f"{n} {v}" for v, n in count.items()) + ".", ""]
    for i, c in enumerate(claims, 1):
        out += [f"### Claim {i}: {c['key']}", "", f"**Claim** ({c['source']}): {c['text']}", "",
                f"**Verdict**: {_headline(c)} (outcome: {c['outcome']}): {c['reason']}.", "",
                "| comparison | grid | per replicate | across replicates | gold control | "
                "outcome |", "|---|---|---|---|---|---|"]
        for row in c["comparisons"]:
            reps = "<br>".join(_fmt(iv, 4) for iv in row.get("replicates", []))
            tag = "" if row["decisive"] else " (shown, not decisive)"
            out.append(f"| {row['describe']}{tag} | {row.get('grid', '')} | {reps} | "
                       f"{_across(row)} | {_fmt_opt(row.get('control'), 4)} | "
                       f"{row['outcome']} |")
        out.append("")
    sanity = decided.get("sanity", [])
    if sanity:
        out += ["### Sanity checks", "", "| check | passes | why |", "|---|---|---|"]
        for c in sanity:
            out.append(f"| {c['text']} | {_CHECK_TEXT[c['verdict']]} | {c['reason']} |")
        out.append("")
    rematch = decided.get("rematch")
    if rematch and rematch.get("fixed_gamma"):
        fixed, re_ = rematch["fixed_gamma"], rematch["rematched"]
        out += [f"Gamma fixed or re-solved in each resample ({rematch['comparison']}): fixed "
                f"[{fixed['ci_low']:.4f}, {fixed['ci_high']:.4f}], re-solved "
                f"[{re_['ci_low']:.4f}, {re_['ci_high']:.4f}] ({rematch['resamples']} "
                "resamples).", ""]
    return out


def render_report(entries: Sequence[Mapping[str, Any]], claims: Sequence[Claim], *,
                  title: str = "Reproduction report", preamble: str = "",
                  confidence: float = 0.95, decided: Optional[Mapping[str, Any]] = None,
                  sections: Sequence[str] = ()) -> str:
    """The markdown text of the report: the decided claims (when given, :func:`render_decided`),
    then ``sections`` (further markdown lines), then a summary of ``claims`` on the entries, one
    table per claim, all runs."""
    results = check_claims(entries, claims)
    pct = f"{100 * confidence:g}%"
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble.strip(), ""]
    if decided is not None:
        out += render_decided(decided)
    out += list(sections)
    if decided is not None:
        out += ["## Final policies (one entry per RLHF method and RL seed; checks on entries)",
                ""]
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
            f"{pct} (bootstrap over prompts).", ""]
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


def write_report(entries: Sequence[Mapping[str, Any]], path: str, claims: Sequence[Claim],
                 **kwargs) -> str:
    """Writes :func:`render_report` to ``path`` (atomically) and returns ``path``."""
    text = render_report(entries, claims, **kwargs)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    runtime.write_text_atomic(path, text)
    return path
