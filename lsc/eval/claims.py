"""Checks on results entries (:mod:`lsc.eval.entries`): each a :class:`Claim` whose ``check``
is a pure function of the entries returning its rows, verdict and reason.

The check list itself is not here: callers write their :class:`Claim` s and pass them in (the
reproduction's: :data:`lsc.repro.claims.ENTRY_CHECKS`). The verdicts are those of
:mod:`lsc.eval.decision` (``yes`` / ``no`` / ``inconclusive``); the decided claims and their rule
live there and in :mod:`lsc.repro.claims`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from lsc.eval.decision import INCONCLUSIVE, NO, YES
from lsc.eval.entries import validate_entries

SANITY = "sanity check"


@dataclasses.dataclass
class Row:
    """One row of a check's table: ``a`` against the reference ``b``, their difference and the
    outcome's text."""

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


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim checked on results entries: ``check`` is a pure function ``entries -> (rows,
    verdict, reason)``; ``rule`` says in words how it decides."""

    key: str
    source: str
    text: str
    rule: str
    check: Callable[[Sequence[Mapping[str, Any]]], Tuple[List[Row], str, str]]

    def evaluate(self, entries: Sequence[Mapping[str, Any]]) -> ClaimResult:
        rows, verdict, reason = self.check(entries)
        return ClaimResult(self, rows, verdict, reason)


# --------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------------- all checks


def check_claims(entries: Sequence[Mapping[str, Any]], claims: Sequence[Claim]
                 ) -> List[ClaimResult]:
    """Validates the entries and evaluates every claim."""
    validate_entries(entries)
    return [c.evaluate(entries) for c in claims]
