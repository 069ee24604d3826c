"""report.md: the rendered summary, per-claim tables and the table of all runs."""

from lsc.eval import report
from eval_fixtures import CLAIMS, entries


def test_report_markdown_states_non_reproducing_claims_plainly(tmp_path):
    path = report.write_report(entries(), str(tmp_path / "out" / "report.md"),
                               CLAIMS, preamble="Simulated entries.")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# Reproduction report")
    assert text.count("## Claim ") == len(CLAIMS)
    summary = text.split("## Claim 1")[0]
    or_row = [l for l in summary.splitlines() if "beats the raw sum on the OR" in l]
    assert len(or_row) == 1 and "**NO** (does not reproduce)" in or_row[0]
    assert "| comparison (A vs B) | metric | at | A | B | A - B | outcome |" in text
    assert "sigma_or_oracle_median vs sum" in text and "A worse" in text
    assert "lsc/lsc_sum vs raw/sum" in text and "A loses less gold" in text
    assert "_No runs to compare._" in text  # the missing lsc_sum vs sum runs
    assert "## All runs" in text and "rlhf/lsc/g0.03" in text
