"""The GRPO study at toy sizes (``configs/repro/grpo_study.py:tiny``, one RL seed), run as a user
runs it: first on its own (the main job's first six stages computed in its workdir), then in a
second workdir that reuses them (``study.reuse_workdir``); every run with its algorithm and loss
reduction, every level's declared claims decided on one grid, the reading, the exact analogue,
study.md, the figures and the reload notebook.

No verdict is pinned (the toy reward models are barely trained); what is pinned follows from the
math: the advantage estimators' centring and scaling, and the exact analogue's optima (their KL,
the plain optimum being the exact arm's, monotonicity in the gold utility).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.repro import grpo_study as study_config
from jax_subprocess import subprocess_env
from lsc.eval import decision
from lsc.repro import exact_arm, grpo_study

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "repro", "grpo_study.py")
TOL = 1e-9  # float64 rounding of the exact analogue's identities (win rates are in [0, 1])

pytestmark = pytest.mark.slow


def _run(workdir, *args, timeout=900):
    """The study's ``:tiny`` config with one RL seed on one device (the job's own default)."""
    return subprocess.run([sys.executable, "-m", "lsc.main", f"--config={CONFIG}:tiny",
                           f"--workdir={workdir}", "--config.rl.seed=(0,)", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(devices=None))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """``(workdir, reused)``: the whole study in ``workdir``; ``reused`` reuses its first six
    stages and takes its finished ``rlhf`` and ``evaluate`` stages (so only the ``study`` stage
    runs again there)."""
    workdir = tmp_path_factory.mktemp("study")
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    reused = tmp_path_factory.mktemp("reused")
    status = json.loads((workdir / "stages.json").read_text())
    (reused / "stages.json").write_text(json.dumps(
        {k: status[k] for k in ("rlhf", "evaluate")}))
    proc = _run(reused, f"--config.study.reuse_workdir={workdir}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, reused, proc


def test_a_second_workdir_reuses_the_first_six_stages(study):
    """The first six stages are skipped and read in place (``world`` and
    ``predictor`` linked); the study stage, a function of the earlier stages, decides
    the same."""
    workdir, reused, proc = study
    for name in grpo_study.EARLIER + ("rlhf", "evaluate"):
        assert f"{name}: done in an earlier run, skipped" in proc.stderr, name
    assert "study: done in an earlier run" not in proc.stderr
    for name in ("world", "predictor"):
        assert os.path.realpath(reused / name) == os.path.realpath(workdir / name), name
    status = json.loads((reused / "stages.json").read_text())
    assert status["exact"] == json.loads((workdir / "stages.json").read_text())["exact"]
    first, second = (json.loads((d / "study.json").read_text()) for d in (workdir, reused))
    for key in ("claims", "reading", "levels", "readings", "exact_analogue"):
        assert second[key] == first[key], key


def test_every_run_trains_with_its_estimator_and_every_claim_is_decided(study):
    """Each run's algorithm, loss reduction and utility; every level's seven claims on its one
    grid (one seed: inconclusive, so the reading reports as is); the group estimators'
    advantages are centred within each prompt's group (mean 0) and GRPO's also divided by the
    group's std (``ddof=1``), so over a group of ``K`` their mean square is at most
    ``(K - 1) / K`` and their mean ``|A|`` at most its root."""
    workdir, _, _ = study
    study_json = json.loads((workdir / "study.json").read_text())
    keys = [f"lsc_vs_raw_{e}" for e in grpo_study.ESTIMATORS] + [
        c.key for c in grpo_study.CONTRASTS]
    assert [lv["level"] for lv in study_json["levels"]] == ["g1", "g2"]
    assert study_json["primary_level"] == "g1"
    assert study_json["claims"] == study_json["levels"][0]["claims"]
    for lv, reading in zip(study_json["levels"], study_json["readings"]):
        assert [c["key"] for c in lv["claims"]] == keys
        for c in lv["claims"]:
            assert c["outcome"] == decision.INCONCLUSIVE, c
            assert c["verdict"] == decision.headline(c["outcome"])[0], c
            assert c["seeds"] == [0] and c["level"] == lv["level"]
            assert c["kl_grid"] == lv["kl_grid"] and c["points"] == "per_seed", c
        assert reading == grpo_study.undone_verdict(lv["claims"])
        assert reading["reading"] == grpo_study.AS_IS and not reading["undone"]
    assert study_json["reading"] == study_json["readings"][0]
    config = json.loads((workdir / "config.json").read_text())
    k = study_config.GROUP_SIZE
    for name, run in config["rlhf"]["runs"].items():
        estimator = name.split("_", 2)[2].rsplit("_g", 1)[0]
        algorithm, reduction = study_config.ESTIMATORS[estimator]
        assert (run["rl"]["algorithm"], run["rl"]["loss_reduction"]) == (algorithm, reduction)
        summary = json.loads((workdir / "rlhf" / name / "summary.json").read_text())
        assert summary["algorithm"] == algorithm, name
        assert summary["method"] == run["rewards"]["method"], name
        train = summary["train"]
        assert all(np.isfinite(train[key]) for key in ("utility", "kl", "advantage_abs_mean"))
        for row in summary["history"]["train"]:  # every logged step
            assert abs(row["advantage_mean"]) <= 1e-3 * max(1.0, row["advantage_abs_mean"])
            if algorithm == "grpo":
                assert row["advantage_abs_mean"] <= np.sqrt((k - 1) / k) + 1e-4, (name, row)


def test_the_exact_analogue_follows_the_exact_arm(study):
    """On every source (proxy replicates and gold): both optima reach the grid's KL, and the
    plain one (no per-prompt scaling) is the exact arm's optimum of the same utility. On gold,
    raw and LSC are non-decreasing functions of gold helpfulness, as is the helpful win rate, so
    with or without GRPO's per-prompt scaling (a per-prompt temperature) the win rate rises
    along the KL grid and stays at least pi0's."""
    workdir, _, _ = study
    ana = json.loads((workdir / "study.json").read_text())["exact_analogue"]
    arrays = exact_arm.load(str(workdir / "exact" / "exact.npz"))
    grid = np.asarray(ana["kl_grid"], np.float64)
    np.testing.assert_array_equal(grid, arrays["kl_grid"])
    c = exact_arm.METRICS.index(ana["metric"])
    assert ana["base"] == pytest.approx(arrays["base"][:, c].mean(), abs=TOL)
    assert ana["sources"] == exact_arm.sources(arrays) + [exact_arm.GOLD]

    def values(x):
        return np.array([np.nan if v is None else v for v in x], np.float64)

    for source in ana["sources"]:
        for name in ana["utilities"]:
            for variant in ("plain", "scaled"):
                kl = values(ana[source][name][variant]["kl"])
                ok = np.isfinite(kl)
                np.testing.assert_allclose(kl[ok], grid[ok], rtol=0, atol=1e-5)
            plain = ana[source][name]["plain"]
            np.testing.assert_allclose(values(plain["kl"]), arrays[f"kl/{source}/{name}"],
                                       rtol=0, atol=TOL)
            np.testing.assert_allclose(values(plain["win"]),
                                       arrays[f"optimum/{source}/{name}"][..., c].mean(axis=1),
                                       rtol=0, atol=TOL)
    gold = ana[exact_arm.GOLD]
    for name in ana["utilities"]:
        for variant in ("plain", "scaled"):
            win = values(gold[name][variant]["win"])
            win = win[np.isfinite(win)]
            assert len(win) >= 2, (name, variant)
            assert np.all(np.diff(win) >= -TOL), (name, variant, win)
            assert win[0] >= ana["base"] - TOL, (name, variant)


def test_study_md_figures_and_the_reload_notebook(study, monkeypatch):
    workdir, _, _ = study
    assert (workdir / "study.md").read_text().startswith("# GRPO study")
    for name in [f"grpo_study_{e}_g{k}_helpful_vs_kl.png" for e in grpo_study.ESTIMATORS
                 for k in (1, 2)]:
        assert (workdir / "figures" / name).read_bytes()[:4] == b"\x89PNG"

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from notebooks import run_notebook

    monkeypatch.setenv("LSC_STUDY_WORKDIR", str(workdir))
    ns = run_notebook(os.path.join(ROOT, "colabs", "grpo_study.ipynb"))
    study_json = json.loads((workdir / "study.json").read_text())
    assert [c["key"] for c in ns["claims90"]] == [c["key"] for c in study_json["claims"]]
    assert (workdir / "figures_redrawn" / "grpo_study_grpo_g1_helpful_vs_kl.png").exists()
