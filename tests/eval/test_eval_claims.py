"""Checks on results entries (pure functions): the base-is-chance check against the 0.5 it
expects."""

from lsc.eval import claims, decision
from eval_fixtures import CHECKS, entries, iv


def _by_key(results):
    return {r.claim.key: r for r in results}


def test_base_check_passes_when_every_ci_covers_half():
    res = _by_key(claims.check_claims(entries(), CHECKS))
    assert set(res) == {c.key for c in CHECKS}
    r = res["base_is_chance"]
    assert r.verdict == decision.YES
    # AND and OR are shown but do not decide; the per-property rows (and and_or_mean) do.
    decisive = {row.metric for row in r.rows if row.decisive}
    assert decisive == {"win_rate.harmless", "win_rate.helpful", "win_rate.and_or_mean"}
    for row in r.rows:
        assert row.b == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5}
        assert row.diff["value"] == row.a["value"] - 0.5


def test_base_check_fails_when_ci_misses_half():
    es = entries()
    es[0]["win_rate"]["helpful"] = iv(0.6, 0.02)
    r = _by_key(claims.check_claims(es, CHECKS))["base_is_chance"]
    assert r.verdict == decision.NO and "helpful" in r.reason


def test_base_check_without_a_base_entry_is_inconclusive():
    r = _by_key(claims.check_claims(entries()[1:], CHECKS))["base_is_chance"]
    assert r.verdict == decision.INCONCLUSIVE and r.rows == []
