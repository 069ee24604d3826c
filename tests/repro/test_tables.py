"""The README's tables (:mod:`lsc.repro.tables`) and the exact arm's forest plot
(:func:`lsc.repro.figures.draw_forest`) from hand-written ``results.json`` dicts."""

import copy
import json

import pytest

from lsc.repro import figures, tables

DELTA = 0.01


def _row(a, b, values, across, holm, outcome, decisive=True):
    return {"a": a, "b": b, "arm": "optimum", "metric": "helpful", "decisive": decisive,
            "describe": f"{a} vs {b}", "grid": "KL in {0.1}", "replicate_values": values,
            "replicates": [{"value": v, "ci_low": v - 0.01, "ci_high": v + 0.01} for v in values],
            "across": {"value": across[0], "se": 0.003, "df": 2.0, "ci_low": across[1],
                       "ci_high": across[2], "p_value": 0.02, "sd_between": 0.004},
            "holm": {"p_value": 0.04, "confidence": holm[0], "ci_low": holm[1],
                     "ci_high": holm[2]},
            "outcome": outcome, "outcome_unadjusted": outcome,
            "previous_rule": {"verdict": "yes", "reason": ""}, "control": None}


def _results(seed=0, offset=0, lsc_holm=(0.975, 0.0005, 0.0235), lsc_verdict="reproduces",
             lsc_small=False, rl_holm=(0.95, -0.03, 0.04), rl_verdict="inconclusive"):
    lsc_row = _row("lsc_p85", "raw", [0.012, 0.008, 0.016], (0.012, 0.002, 0.022), lsc_holm,
                   lsc_verdict)
    lsc_row["control"] = {"value": 0.004, "ci_low": 0.001, "ci_high": 0.007}
    lsc = {"key": "lsc_vs_raw", "source": "paper", "text": "LSC beats raw.", "judge": "gold",
           "outcome": lsc_verdict, "verdict": lsc_verdict, "small_effect": lsc_small,
           "outcome_unadjusted": "reproduces", "previous_rule_verdict": "inconclusive",
           "reason": "", "delta": DELTA,
           "comparisons": [
               lsc_row,
               _row("lsc_median", "raw", [0.5, 0.5, 0.5], (0.5, 0.4, 0.6), (0.95, 0.4, 0.6),
                    "reproduces", decisive=False)]}
    proxy = {"key": "and_proxy", "source": "note", "text": "AND beats the sum.",
             "judge": "proxy", "outcome": "holds, below practical size",
             "verdict": "no effect of practical size", "small_effect": True,
             "outcome_unadjusted": "holds, below practical size", "previous_rule_verdict": "no",
             "reason": "", "delta": DELTA,
             "comparisons": [_row("sigma_and_median", "raw_sum", [-0.001, 0.003, 0.001],
                                  (0.001, -0.004, 0.006), (0.975, 0.0003, 0.0069),
                                  "holds, below practical size")]}
    rl = {"key": "rl_lsc_vs_raw", "source": "paper", "text": "PPO on LSC beats raw.",
          "a": "helpful_lsc", "b": "helpful_raw", "kind": "matched", "metric": "helpful",
          "seeds": [0, 1, 2], "grid_used": [1.0], "replicate_values": [0.02, -0.01, 0.005],
          "replicates": [], "delta": DELTA,
          "across": {"value": 0.005, "se": 0.01, "df": 2.0, "ci_low": -0.03, "ci_high": 0.04,
                     "p_value": 0.6, "sd_between": 0.015},
          "holm": {"p_value": 0.6, "confidence": rl_holm[0], "ci_low": rl_holm[1],
                   "ci_high": rl_holm[2]},
          "outcome": rl_verdict, "verdict": rl_verdict, "small_effect": False,
          "previous_rule": {"verdict": "no", "reason": ""}, "previous_rule_verdict": "no",
          "reason": ""}
    rm = {p: {f"r{i}": {"accuracy": a, "gold_ceiling": c} for i, a in enumerate(accs)}
          for p, accs, c in (("harmless", (0.66, 0.70, 0.68), 0.713),
                             ("helpful", (0.70, 0.72, 0.71), 0.75))}
    return {"run": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": seed == 0,
                    "cpu": "AMD EPYC 7B13, 2 cores", "date": "2026-12-02T10:11:12Z",
                    "wall_seconds": 392.4, "world_seed": seed, "replicate_offset": offset,
                    "replicates": 3},
            "exact": {"delta": DELTA, "confidence": 0.95, "replicates": ["r0", "r1", "r2"],
                      "claims": [lsc, proxy], "sanity": []},
            "rl": {"claims": [rl]}, "reward_models": rm}


def _line(text, start):
    found = [l for l in text.splitlines() if l.startswith(start)]
    assert len(found) == 1, (start, found)
    return [c.strip() for c in found[0].strip("|").split("|")]


def test_one_run_label_and_tables():
    text = tables.render([_results()])
    assert ("World seed 0, replicate offset 0 (3 replicates per property); commit 0123456 with "
            "local changes, AMD EPYC 7B13, 2 cores, 2026-12-02T10:11:12Z, wall 6 min 32 s."
            in text)
    assert _line(text, "| lsc_vs_raw |") == [
        "lsc_vs_raw", "gold", "lsc_p85 - raw (helpful, optimum)", "+0.0120 [+0.0020, +0.0220]",
        "[+0.0005, +0.0235] (97.5%)", "+0.0120, +0.0080, +0.0160", "reproduces",
        "**reproduces**", "inconclusive", "+0.0040 [+0.0010, +0.0070]"]
    assert "lsc_median - raw" not in text  # not decisive
    assert _line(text, "| and_proxy |") == [
        "and_proxy", "proxy", "sigma_and_median - raw_sum (helpful, optimum)",
        "+0.0010 [-0.0040, +0.0060]", "[+0.0003, +0.0069] (97.5%)",
        "-0.0010, +0.0030, +0.0010", "holds, below practical size",
        "**no effect of practical size** (small positive effect)", "no", "-"]
    assert _line(text, "| rl_lsc_vs_raw |") == [
        "rl_lsc_vs_raw", "helpful_lsc - helpful_raw (helpful, matched)",
        "+0.0050 [-0.0300, +0.0400]", "[-0.0300, +0.0400] (95%)",
        "s0: +0.0200, s1: -0.0100, s2: +0.0050", "inconclusive", "**inconclusive**", "no"]
    assert "per replicate (r0, r1, r2)" in text
    assert _line(text, "| helpful |") == ["helpful", "0.710 (0.700-0.720, 3 replicates); "
                                          "ceiling 0.750"]
    assert "Stability" not in text


def _seed_row(key, values, across, holm, outcome, kind="matched"):
    """An RL claim's row of the seed-level rule (``seed_values``, ``other_paths``)."""
    return {"key": key, "source": "paper", "text": "PPO on LSC beats raw.", "a": "helpful_lsc",
            "b": "helpful_raw", "kind": kind, "metric": "helpful", "path": "isotonic",
            "max_gap": 1.0, "seeds": list(range(len(values))), "grid_used": [0.5, 1.0, 1.5],
            "seed_values": values, "delta": DELTA,
            "across": {"value": across[0], "se": 0.01, "df": len(values) - 1.0,
                       "ci_low": across[1], "ci_high": across[2], "p_value": 0.01,
                       "sd_between": 0.01},
            "holm": {"p_value": 0.02, "confidence": holm[0], "ci_low": holm[1],
                     "ci_high": holm[2]},
            "outcome": outcome, "verdict": outcome, "small_effect": False,
            "previous_rule_verdict": "does not apply", "reason": "",
            "other_paths": {"first": {"grid_used": [0.5, 1.0], "seed_values": values,
                                      "value": 0.021, "ci_low": 0.004, "ci_high": 0.038},
                            "last": {"grid_used": [], "seed_values": []}}}


def test_rows_of_the_seed_level_rule_get_their_own_table():
    results = _results()
    results["rl"]["claims"] = [
        _seed_row("rl_lsc_vs_raw", [0.03, 0.01, -0.005, 0.02], (0.01375, -0.0018, 0.0293),
                  (0.975, -0.0056, 0.0331), "inconclusive"),
        dict(_seed_row("rl_hacking_rate", [], (0, 0, 0), (0.95, 0, 0), "inconclusive",
                       kind="hacking_rate"), grid_used=[], across=None, holm=None,
             reason="no KL grid point is bracketed in every trajectory")]
    text = tables.render([results])
    assert "on the isotonic path (segments of at most 1 nats)" in text
    # mean 0.01375, SD of (0.03, 0.01, -0.005, 0.02) with ddof 1: 0.014930
    assert _line(text, "| rl_lsc_vs_raw |") == [
        "rl_lsc_vs_raw", "helpful_lsc vs helpful_raw: A - B (helpful, matched)", "0.5, 1, 1.5",
        "+0.0138 [-0.0018, +0.0293]", "[-0.0056, +0.0331] (97.5%)",
        "mean +0.0138, SD 0.0149, 3/4 > 0", "inconclusive",
        "first: +0.0210 [+0.0040, +0.0380] on {0.5, 1}; last: - - on {}", "**inconclusive**"]
    assert _line(text, "| rl_hacking_rate |")[1:7] == [
        "helpful_lsc vs helpful_raw: B - A (helpful, hacking_rate)", "none", "-", "-", "-",
        "inconclusive (no KL grid point is bracketed in every trajectory)"]
    # The stability table reads the same Holm interval.
    assert "| rl_lsc_vs_raw | **inconclusive** [-0.0056, +0.0331] |" in tables.render(
        [results, results])


def test_label_of_a_clean_commit_and_an_unknown_one():
    run = dict(_results(seed=1)["run"], wall_seconds=59.6)
    assert "commit 0123456, AMD" in tables.run_label(run)
    assert "wall 1 min 0 s." in tables.run_label(run)
    assert "commit unknown, " in tables.run_label(dict(run, commit="unknown", dirty=None))
    assert tables.level(1 - 0.05 / 3) == "98.33%" and tables.level(0.9875) == "98.75%"


def test_stability_table_marks_agreement_and_explains_disagreement():
    first = _results()
    second = _results(seed=1, offset=6, lsc_holm=(0.975, 0.003, 0.0075),
                      lsc_verdict="no effect of practical size", lsc_small=True,
                      rl_holm=(0.95, 0.02, 0.06), rl_verdict="reproduces")
    text = tables.render([first, second])
    header = _line(text, "| claim | seed 0 |")
    assert header == ["claim", "seed 0", "seed 1, offset 6", "agree"]
    row = _line(text, "| lsc_vs_raw | **reproduces**")
    assert row[-1] == "no"
    assert row[1:3] == [
        "**reproduces** [+0.0005, +0.0235]",
        "**no effect of practical size** (small positive effect) [+0.0030, +0.0075]"]
    assert _line(text, "| and_proxy | **")[-1] == "yes"
    assert _line(text, "| rl_lsc_vs_raw | **")[-1] == "no"
    # run 0's lower bound is 0.0005 from 0; run 1's bounds are 0.003 from 0 and 0.0025 from
    # delta, so only run 0 explains the first disagreement; the RL one is 0.02 and 0.01 away.
    assert ("- lsc_vs_raw: explained; seed 0 (lower bound +0.0005 is 0.0005 from +0.0000)."
            in text)
    assert "- rl_lsc_vs_raw: **not explained**" in text
    assert "- and_proxy" not in text
    rm = _line(text, "| property |")
    assert rm == ["property", "seed 0", "seed 1, offset 6"]


def test_runs_with_the_same_seed_are_told_apart():
    a, b = _results(), _results()
    b["run"]["cpu"] = "Intel Xeon, 2 cores"
    assert tables.run_names([a, b]) == ["seed 0, AMD EPYC 7B13, 2 cores",
                                        "seed 0, Intel Xeon, 2 cores"]
    assert tables.run_names([a, copy.deepcopy(a)]) == [
        "seed 0, AMD EPYC 7B13, 2 cores, run 1", "seed 0, AMD EPYC 7B13, 2 cores, run 2"]


def test_main_renders_workdirs_and_files(tmp_path, capsys):
    runs = [_results(), _results(seed=1, rl_verdict="reproduces", rl_holm=(0.95, 0.02, 0.06))]
    paths = []
    for i, r in enumerate(runs):
        (tmp_path / f"w{i}").mkdir()
        (tmp_path / f"w{i}" / "results.json").write_text(json.dumps(r))
        paths.append(tmp_path / f"w{i}")
    out = tmp_path / "tables.md"
    tables.main([str(paths[0]), str(paths[1] / "results.json"), "--out", str(out)])
    assert out.read_text() == tables.render(runs)
    tables.main([str(p) for p in paths])
    assert capsys.readouterr().out == tables.render(runs)


def test_forest_plot_is_written(tmp_path):
    claims = _results()["exact"]["claims"]
    missing = {"a": "x", "b": "y", "arm": "optimum", "metric": "and", "decisive": True,
               "describe": "x vs y", "outcome": "inconclusive", "reason": "missing utilities",
               "replicates": [], "grid": "", "control": None}
    claims[0]["comparisons"].append(missing)
    path = figures.draw_forest(claims, DELTA, str(tmp_path / "figs" / "exact_forest.png"))
    data = (tmp_path / "figs" / "exact_forest.png").read_bytes()
    assert path.endswith("exact_forest.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_signed_never_prints_a_negative_zero():
    assert tables.signed(-0.00001) == "+0.0000"
    assert tables.signed(-0.00005001) == "-0.0001"
    assert tables.signed(None) == "-"


def test_render_ends_with_the_disclosure_table():
    from lsc.repro import disclosure

    text = tables.render([_results()])
    tail = text[text.index("Changes made after seeing results"):].strip().splitlines()
    assert tail[2].startswith("| change | when |")
    assert len(tail) == 4 + len(disclosure.CHANGES)
    assert all(c.what in text for c in disclosure.CHANGES)


def test_load_reads_a_gzip_copy(tmp_path):
    import gzip
    import json

    results = _results()
    path = tmp_path / "seed0.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(results, f)
    assert tables.load(str(path)) == results


def test_into_splices_the_generated_block_and_reads_back(tmp_path):
    import json

    w = tmp_path / "w0"
    w.mkdir()
    (w / "results.json").write_text(json.dumps(_results()))
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Results\n\n{tables.BEGIN} old -->\n\nstale\n{tables.END}\n\nafter\n")
    tables.main([str(w), "--into", str(doc)])
    text = doc.read_text()
    assert "stale" not in text and text.endswith(f"{tables.END}\n\nafter\n")
    sources, body = tables.generated_block(text)
    assert sources == [str(w)]
    assert body == tables.render([tables.load(p) for p in sources])
    empty = tmp_path / "empty.md"
    empty.write_text("no block here\n")
    with pytest.raises(ValueError, match="no generated block"):
        tables.main([str(w), "--into", str(empty)])
    assert empty.read_text() == "no block here\n"
