"""report.md: the rendered summary, per-check tables and the table of all runs."""

from lsc.eval import report
from eval_fixtures import CHECKS, entries, iv


def test_report_markdown_states_a_failing_check_plainly(tmp_path):
    es = entries()
    es[0]["win_rate"]["helpful"] = iv(0.6, 0.02)  # the base CI misses 0.5
    path = report.write_report(es, str(tmp_path / "out" / "report.md"), CHECKS,
                               preamble="Simulated entries.")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Reproduction report")
    assert "Simulated entries." in text
    assert text.count("## Claim ") == len(CHECKS)
    summary = text.split("## Claim 1")[0]
    row = [l for l in summary.splitlines() if "wins half the time" in l]
    assert len(row) == 1 and "**NO** (fails)" in row[0]
    assert "Sanity checks: failed: base_is_chance" in summary
    assert "| comparison (A vs B) | metric | at | A | B | A - B | outcome |" in text
    assert "CI excludes 0.5" in text and "not expected at 0.5" in text
    assert "## All runs" in text and "rlhf/lsc/seed_0/kl_0.03" in text


def test_report_without_entries_to_check_says_so(tmp_path):
    text = report.render_report(entries()[1:], CHECKS)
    assert "_No runs to compare._" in text
