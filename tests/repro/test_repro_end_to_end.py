"""The README's main job at toy sizes (``configs/repro/synthetic_hh.py:tiny``), run as a user runs
it: every stage, results.json (the RL arm's entries in the report schema, the exact arm's
claims with per-replicate intervals), the figures, report.md, and a rerun that skips every
finished stage."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_subprocess import subprocess_env
from lsc.eval import entries as entries_lib
from lsc.repro import STAGES
from lsc.repro import claims as repro_claims
from lsc.repro import rl_arm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "repro", "synthetic_hh.py")
FIGURES = ("rl_helpful_vs_kl.png", "rl_hh_and_vs_kl.png", "rl_proxy_vs_kl.png",
           "rl_gold_vs_kl.png", "rl_filler_vs_kl.png", "rl_offtopic_vs_kl.png")
EXACT_FIGURES = ("exact_helpful_vs_kl.png", "exact_and_vs_kl.png",
                 "exact_best_of_k_and_vs_k.png", "exact_best_of_k_or_vs_k.png",
                 "exact_and_or_bars.png", "exact_lower_tail_vs_kl.png")

pytestmark = pytest.mark.slow


def _env():
    """One device (the job's own default), the session's XLA flags and compilation cache."""
    return subprocess_env(devices=None)


def _run(workdir, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lsc.main", f"--config={CONFIG}:tiny",
                           f"--workdir={workdir}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("repro")
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, proc


def test_results_hold_every_run_of_every_seed(repro):
    workdir, _ = repro
    results = json.loads((workdir / "results.json").read_text())
    entries = results["entries"]
    entries_lib.validate_entries(entries)
    assert entries_lib.load_entries(str(workdir / "results.json")) == entries
    config = json.loads((workdir / "config.json").read_text())
    names = {e["name"] for e in entries}
    assert "base" in names
    seeds = config["rl"]["seed"]
    assert len(seeds) >= 2
    assert {f"rlhf/{r}/seed_{s}" for r in config["rlhf"]["runs"] for s in seeds} <= names
    for e in entries:
        for iv in e["win_rate"].values():
            assert 0.0 <= iv["ci_low"] <= iv["value"] <= iv["ci_high"] <= 1.0
        if e["procedure"] == "rlhf":
            assert e["kl"]["estimator"] == "k1" and e["kl"]["se"] >= 0
            assert "underfitting" in e and "shortcuts" in e
            assert [0, 3, 6] == json.loads((workdir / "evaluate" / "curves.json").read_text())[
                e["name"]]["step"]
    trajs = rl_arm.load(str(workdir / "evaluate" / "trajectories.npz"))
    assert set(trajs) == set(config["rlhf"]["runs"])
    prompts = next(e for e in entries if e["name"] == "base")["num_prompts"]
    for runs in trajs.values():
        assert sorted(runs) == seeds
        for t in runs.values():
            assert t["step"].tolist() == [0, 3, 6] and t["kl_k1"][0] == 0.0
            assert t["metrics"].shape[:2] == (3, prompts) and t["gold"].shape == (3, prompts, 2)

    replicates = config["world"]["pair_replicates"]
    assert set(results["reward_models"]) == {"harmless", "helpful"}
    for prop, rm in results["reward_models"].items():
        assert sorted(rm) == [f"r{i}" for i in range(replicates)]
        for r, rep in rm.items():
            assert rep["workdir"] == str(workdir / "reward_models" / prop / r)
            assert 0.0 <= rep["accuracy"] <= 1.0 and 0.5 <= rep["gold_ceiling"] <= 1.0
    assert set(results["predictors"]) == {"harmless", "helpful"}
    for prop, pred in results["predictors"].items():
        assert sorted(pred) == [f"r{i}" for i in range(replicates)]
        assert all(rep["workdir"] == str(workdir / "predictor" / prop / r)
                   for r, rep in pred.items())


def test_results_hold_the_decided_claims_per_replicate(repro):
    workdir, _ = repro
    results = json.loads((workdir / "results.json").read_text())
    exact = results["exact"]
    replicates = json.loads((workdir / "config.json").read_text())["world"]["pair_replicates"]
    assert exact["replicates"] == [f"r{i}" for i in range(replicates)]
    assert [c["key"] for c in exact["claims"]] == [c.key for c in repro_claims.EXACT_CLAIMS]
    for claim in exact["claims"]:
        assert claim["verdict"] in ("yes", "no", "inconclusive")
        decisive = [c for c in claim["comparisons"] if c["decisive"]]
        assert decisive
        for comp in decisive:
            assert len(comp["replicates"]) == replicates
            for iv in comp["replicates"] + [comp["pooled"]]:
                assert iv["ci_low"] <= iv["value"] <= iv["ci_high"]
    sanity = {c["key"]: c["verdict"] for c in exact["sanity"]}
    assert sanity["best_of_k_same_pick"] == "yes"
    assert set(exact["frontiers"]) == {f"r{i}" for i in range(replicates)} | {"gold"}
    assert results["world"]["version"] == 2
    assert "benign" in results["world"]["stats"]
    rl = results["rl"]
    assert [c["key"] for c in rl["claims"]] == [c.key for c in repro_claims.RL_ARM_CLAIMS]
    seeds = json.loads((workdir / "config.json").read_text())["rl"]["seed"]
    for claim in rl["claims"]:
        assert claim["verdict"] in ("yes", "no", "inconclusive")
        assert claim["seeds"] == seeds
        for iv in claim.get("replicates", []) + ([claim["pooled"]] if claim.get("pooled")
                                                  else []):
            assert iv["ci_low"] <= iv["value"] <= iv["ci_high"]
    assert set(rl["ppo_vs_exact"]) == set(rl_arm.EXACT_UTILITY)


def test_figures_and_report_are_written(repro):
    workdir, _ = repro
    for name in FIGURES + EXACT_FIGURES:
        data = (workdir / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    text = (workdir / "report.md").read_text()
    assert "## Decided claims (exact arm)" in text and "## All runs" in text
    assert "## RL arm (decided" in text
    for claim in repro_claims.EXACT_CLAIMS + repro_claims.ENTRY_CHECKS:
        assert f": {claim.key}" in text
    for claim in repro_claims.RL_ARM_CLAIMS:
        assert f"**{claim.key}**" in text


def test_a_rerun_skips_every_finished_stage(repro):
    workdir, _ = repro
    before = (workdir / "results.json").read_text()
    status = json.loads((workdir / "stages.json").read_text())
    del status["report"]
    (workdir / "stages.json").write_text(json.dumps(status))
    proc = _run(workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [s.name for s in STAGES if f"{s.name}: done in an earlier run, skipped"
               in proc.stderr]
    assert skipped == [s.name for s in STAGES if s.name != "report"]
    after = json.loads((workdir / "results.json").read_text())
    assert after["entries"] == json.loads(before)["entries"]
    assert after["exact"]["claims"] == json.loads(before)["exact"]["claims"]
    assert after["rl"]["claims"] == json.loads(before)["rl"]["claims"]


def test_the_reload_notebook_redraws_the_figures_from_the_workdir(repro, monkeypatch):
    workdir, _ = repro
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from notebooks import run_notebook

    monkeypatch.setenv("LSC_REPRO_WORKDIR", str(workdir))
    ns = run_notebook(os.path.join(ROOT, "colabs", "reload_workdir.ipynb"))
    assert len(ns["entries"]) == len(json.loads((workdir / "results.json").read_text())[
        "entries"])
    for name in FIGURES:
        assert (workdir / "figures_redrawn" / name).read_bytes()[:4] == b"\x89PNG"
    assert [r.claim.key for r in ns["results90"]] == [c.key for c in
                                                      repro_claims.ENTRY_CHECKS]
    assert (workdir / "report_90.md").exists()


STUDY_CONFIG = os.path.join(ROOT, "configs", "repro", "grpo_study.py")


def test_grpo_study_reuses_the_workdir_and_decides_its_comparisons(repro, tmp_path, monkeypatch):
    """The GRPO study on the tiny main job's world (its first six stages reused, one RL seed):
    every run with its algorithm, every declared comparison decided, study.md, the figures, and
    the reload notebook."""
    workdir, _ = repro
    study_dir = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "lsc.main", f"--config={STUDY_CONFIG}:tiny",
         f"--workdir={study_dir}", f"--config.study.reuse_workdir={workdir}",
         "--config.rl.seed=(0,)"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=_env())
    assert proc.returncode == 0, proc.stderr[-5000:]
    for name in ("world", "reward_models", "sft", "predictor", "base_samples",
                 "exact"):
        assert f"{name}: done in an earlier run, skipped" in proc.stderr, name
    from lsc.repro import grpo_study

    study = json.loads((study_dir / "study.json").read_text())
    assert [c["key"] for c in study["claims"]] == [c.key for c in grpo_study.STUDY_CLAIMS]
    for c in study["claims"]:
        assert c["verdict"] in ("yes", "no", "inconclusive"), c
        assert c["seeds"] == [0]
    assert set(study["undone"]["verdicts"]) == set(grpo_study.ALGORITHMS)
    config = json.loads((study_dir / "config.json").read_text())
    for name, run in config["rlhf"]["runs"].items():
        summary = json.loads((study_dir / "rlhf" / name / "summary.json").read_text())
        assert summary["algorithm"] == run["rl"]["algorithm"], name
        assert summary["method"] == run["rewards"]["method"], name
        train = summary["train"]
        assert all(np.isfinite(train[k]) for k in ("utility", "kl", "advantage_abs_mean"))
        for prop in run["rewards"]["properties"]:
            assert np.isfinite(train[f"transformed/{prop}"]), (name, prop)
    gdpo = json.loads((study_dir / "rlhf" / "hh_gdpo_grpo" / "summary.json").read_text())
    assert gdpo["reference_prompts_cached"] == 0  # GDPO uses no reference
    ana = study["exact_analogue"]
    assert set(ana["sources"]) >= {"r0", "gold"}
    assert (study_dir / "study.md").read_text().startswith("# GRPO study")
    for name in ["grpo_study_hh_and_vs_kl.png"] + [f"grpo_study_{a}_helpful_vs_kl.png"
                                                   for a in grpo_study.ALGORITHMS]:
        assert (study_dir / "figures" / name).read_bytes()[:4] == b"\x89PNG"

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from notebooks import run_notebook

    monkeypatch.setenv("LSC_STUDY_WORKDIR", str(study_dir))
    ns = run_notebook(os.path.join(ROOT, "colabs", "grpo_study.ipynb"))
    assert [c["key"] for c in ns["claims90"]] == [c.key for c in grpo_study.STUDY_CLAIMS]
    assert (study_dir / "figures_redrawn" / "grpo_study_grpo_helpful_vs_kl.png").exists()
