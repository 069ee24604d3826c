"""The README's main job at toy sizes (``configs/repro/synthetic_hh.py:tiny``), run as a user runs
it: every stage, results.json (the RL arm's entries in the report schema, the exact arm's
claims with per-replicate intervals), the figures, report.md, and a rerun that skips every
finished stage.

At these sizes the reward models are barely trained, so no claim's verdict is pinned; what is
pinned holds at any size because the math says so (the exact arm's closed forms on the banks:
the optima's KL, best-of-k at k = 1, monotonicity in the gold utility, the AND / OR bounds), or
holds with a wide margin (the base policy against its own samples).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_subprocess import subprocess_env
from lsc.eval import decision
from lsc.eval import entries as entries_lib
from lsc.repro import STAGES
from lsc.repro import claims as repro_claims
from lsc.repro import evaluation, exact_arm, rl_arm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "repro", "synthetic_hh.py")
FIGURES = ("rl_helpful_vs_kl.png", "rl_hh_and_vs_kl.png", "rl_proxy_vs_kl.png",
           "rl_gold_vs_kl.png", "rl_filler_vs_kl.png", "rl_offtopic_vs_kl.png")
EXACT_FIGURES = ("exact_helpful_vs_kl.png", "exact_and_vs_kl.png",
                 "exact_best_of_k_and_vs_k.png", "exact_best_of_k_or_vs_k.png",
                 "exact_and_or_bars.png", "exact_lower_tail_vs_kl.png", "exact_forest.png")
STEPS = [0, 1, 2, 3, 6]  # pi0, every step up to 2, then every 3 (rl.snapshot_every_early, ...);
# KL-triggered snapshots (rl.snapshot_kl) may add steps
TOL = 1e-9  # float64 rounding of the exact arm's identities (per-prompt win rates are in [0, 1])

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
            steps = json.loads((workdir / "evaluate" / "curves.json").read_text())[
                e["name"]]["step"]
            assert set(STEPS) <= set(steps) and steps == sorted(set(steps))
    trajs = rl_arm.load(str(workdir / "evaluate" / "trajectories.npz"))
    assert set(trajs) == set(config["rlhf"]["runs"])
    prompts = next(e for e in entries if e["name"] == "base")["num_prompts"]
    base = _exact(workdir)["base"][:, :len(exact_arm.GOLD_JUDGED)]  # pi0's, on the bank
    for runs in trajs.values():
        assert sorted(runs) == seeds
        for t in runs.values():
            assert set(STEPS) <= set(t["step"].tolist()) and t["kl_k1"][0] == 0.0
            n, p = len(t["step"]), int(config["evaluate"]["trajectory_prompts"])
            # the trajectory prompts: a fixed subset of the evaluation prompts
            idx = t["prompt_index"]
            assert idx.shape == (p,) and p < prompts and np.all(np.diff(idx) > 0)
            assert 0 <= idx[0] and idx[-1] < prompts
            assert t["metrics"].shape[:2] == (n, p) and t["gold"].shape == (n, p, 2)
            assert t["hacking"].shape == (n, p, len(evaluation.HACKING_FEATURES))
            assert set(np.unique(t["hacking"])) <= {0.0, 1.0}
            # every run starts at pi0: step 0 is judged as the base policy is
            np.testing.assert_allclose(t["metrics"][0], base[idx], rtol=0, atol=TOL)

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
        _check_decided(claim)
        assert claim["previous_rule_verdict"] in ("yes", "no", "inconclusive")
        assert claim["judge"] in ("gold", "proxy")
        decisive = [c for c in claim["comparisons"] if c["decisive"]]
        assert decisive
        for comp in decisive:
            assert len(comp["replicates"]) == len(comp["replicate_values"]) == replicates
            assert comp["across"]["value"] == pytest.approx(np.mean(comp["replicate_values"]))
            for iv in comp["replicates"]:
                assert iv["ci_low"] <= iv["value"] <= iv["ci_high"]
            _check_intervals(comp)
    # Holm within each judge's family: the gold-judged decisive comparisons share m.
    gold = [c for cl in exact["claims"] if cl["judge"] == "gold" for c in cl["comparisons"]
            if c["decisive"]]
    assert max(c["holm"]["confidence"] for c in gold) == pytest.approx(1 - 0.05 / len(gold))
    run = results["run"]
    assert run["replicates"] == replicates and run["world_seed"] == results["seed"]
    assert run["wall_seconds"] == pytest.approx(sum(results["stage_seconds"].values()))
    assert set(exact["frontiers"]) == {f"r{i}" for i in range(replicates)} | {"gold"}
    assert results["world"]["version"] == 2
    assert "benign" in results["world"]["stats"]
    rl = results["rl"]
    assert [c["key"] for c in rl["claims"]] == [c.key for c in repro_claims.RL_ARM_CLAIMS]
    seeds = json.loads((workdir / "config.json").read_text())["rl"]["seed"]
    for claim in rl["claims"]:
        _check_decided(claim)
        assert claim["seeds"] == seeds
        # Per-seed points: the seeds read are those whose two trajectories bracket a point.
        assert claim["points"] == "per_seed" and len(claim["points_per_seed"]) == len(seeds)
        assert claim["seeds_read"] == [s for s, n in zip(seeds, claim["points_per_seed"]) if n]
        assert len(claim["seed_values"]) == len(claim["seeds_read"])
        assert bool(claim["grid_used"]) == bool(claim["seeds_read"])
        assert claim["previous_rule_verdict"] == rl_arm.PREVIOUS_RULE_NOTE
        assert set(claim["other_paths"]) == {"first", "last"}
        assert set(claim["other_points"]) == {"common"}
        if "across" in claim:
            assert claim["across"]["value"] == pytest.approx(np.mean(claim["seed_values"]))
            _check_intervals(claim)
    assert set(rl["ppo_vs_exact"]) == set(rl_arm.EXACT_UTILITY)


def _check_decided(claim):
    """A claim's outcome and headline verdict are the rule's words."""
    assert claim["outcome"] in decision.OUTCOMES
    assert (claim["verdict"], claim["small_effect"]) == decision.headline(claim["outcome"])


def _check_intervals(row):
    """The Holm interval contains the unadjusted one, which contains the estimate, and the
    outcome is the Holm interval's."""
    across, holm = row["across"], row["holm"]
    assert holm["ci_low"] <= across["ci_low"] <= across["value"] <= across["ci_high"] <= \
        holm["ci_high"]
    assert row["outcome"] == decision.outcome(holm["ci_low"], holm["ci_high"], 0.01)


def _exact(workdir):
    return exact_arm.load(str(workdir / "exact" / "exact.npz"))


def _policies(arrays):
    """``(source, utility)`` of every utility of ``exact.npz`` (replicates and gold)."""
    return [tuple(k.split("/")[1:]) for k in arrays if k.startswith("optimum/")]


def test_the_sanity_checks_hold(repro):
    """With one reward, best-of-k under raw and under LSC (a monotone transform) picks the same
    sample on every replicate; pi0 against independent pi0 opponents wins half the time in
    expectation (the bank and the opponents are exchangeable draws, ties count one half), so its
    per-property win rate lies within a wide margin of 0.5 (its 95% interval is not pinned)."""
    workdir, _ = repro
    sanity = {c["key"]: c for c in json.loads((workdir / "results.json").read_text())[
        "exact"]["sanity"]}
    assert set(sanity) == set(repro_claims.SANITY_CHECKS)
    assert sanity["best_of_k_same_pick"]["verdict"] == "yes"
    assert len(sanity["best_of_k_same_pick"]["values"]) == json.loads(
        (workdir / "config.json").read_text())["world"]["pair_replicates"]
    for prop, iv in sanity["base_vs_base"]["values"].items():
        assert abs(iv["value"] - 0.5) < 0.1, (prop, iv)


def test_the_exact_optima_reach_their_target_kl(repro):
    """Every utility's optimum has the grid's KL where the bank supports it (the root finder's
    tolerance), and a higher target needs a smaller gamma; the gold score, continuous on
    helpfulness, reaches every target."""
    workdir, _ = repro
    arrays = _exact(workdir)
    grid = arrays["kl_grid"]
    assert grid.max() < np.log(json.loads((workdir / "config.json").read_text())[
        "exact"]["bank_size"])
    for source, name in _policies(arrays):
        kl, gamma = arrays[f"kl/{source}/{name}"], arrays[f"gamma/{source}/{name}"]
        ok = np.isfinite(kl)
        assert np.array_equal(ok, np.isfinite(gamma)), (source, name)
        assert np.isnan(arrays[f"optimum/{source}/{name}"][~ok]).all(), (source, name)
        np.testing.assert_allclose(kl[ok], grid[ok], rtol=0, atol=1e-5, err_msg=f"{source}/{name}")
        assert np.all(np.diff(gamma[ok]) < 0), (source, name, gamma)
    assert np.isfinite(arrays["kl/gold/raw"]).all()


def test_best_of_1_is_the_base_policy_and_best_of_k_kl_is_bounded(repro):
    """Best-of-1 puts ``1/N`` on every candidate: pi0's win rates and KL 0. Best-of-k's KL on a
    bank is at most the continuous case's ``log k - (k - 1) / k`` (the bank's ranks are a
    coarsening of a uniform draw, and coarsening cannot raise a KL)."""
    workdir, _ = repro
    arrays = _exact(workdir)
    ks = arrays["ks"].astype(np.float64)
    assert ks[0] == 1
    bound = np.log(ks) - (ks - 1) / ks
    for source, name in _policies(arrays):
        picked = arrays[f"best_of_k/{source}/{name}"]
        kl = arrays[f"best_of_k_kl/{source}/{name}"]
        cols = slice(None) if source == "r0" else slice(len(exact_arm.GOLD_JUDGED))  # base: r0's
        np.testing.assert_allclose(picked[0][:, cols], arrays["base"][:, cols], rtol=0, atol=TOL)
        assert abs(kl[0]) <= TOL and np.all(kl <= bound + TOL), (source, name, kl)


def test_gold_utilities_win_more_with_kl_and_with_k(repro):
    """With a non-decreasing function of the gold helpfulness as the utility (raw and its LSC
    transforms), any non-decreasing function ``f`` of gold helpfulness (the helpful win rate
    against the fixed opponents, reaching the base median) rises along the KL grid: per prompt
    ``d/d(1/gamma) E_w[f] = Cov_w(f, u) >= 0``, and a higher target KL means a smaller gamma;
    best-of-k's pick stochastically dominates best-of-(k-1)'s. So per prompt both metrics are
    non-decreasing along the KL grid and in k, and at least pi0's."""
    workdir, _ = repro
    arrays = _exact(workdir)
    names = [u.name for u in exact_arm.UTILITIES if u.properties == ("helpful",) and u.has_control]
    assert {"raw", "lsc_p85"} <= set(names)
    for name in names:
        optimum = arrays[f"optimum/gold/{name}"]
        optimum = optimum[np.isfinite(arrays[f"kl/gold/{name}"])]
        best_of_k = arrays[f"best_of_k/gold/{name}"]
        assert len(optimum) >= 2, name
        for metric in ("helpful", "helpful_not_below"):
            c = exact_arm.METRICS.index(metric)
            for path in (optimum[..., c], best_of_k[..., c]):
                assert np.all(np.diff(path, axis=0) >= -TOL), (name, metric)
                assert np.all(path >= arrays["base"][:, c] - TOL), (name, metric)
        c = exact_arm.METRICS.index("helpful")
        assert optimum[-1, :, c].mean() > optimum[0, :, c].mean(), name


def test_and_and_or_bound_the_per_property_win_rates(repro):
    """AND is the minimum and OR the maximum of the per-property outcomes against each opponent,
    so for every policy and prompt ``win(AND) <= min(win(harmless), win(helpful))`` and
    ``win(OR) >= max(...)``."""
    workdir, _ = repro
    arrays = _exact(workdir)
    col = exact_arm.METRICS.index
    tables = [arrays["base"][None]]
    for source, name in _policies(arrays):
        optimum = arrays[f"optimum/{source}/{name}"]
        tables += [optimum[np.isfinite(arrays[f"kl/{source}/{name}"])],
                   arrays[f"best_of_k/{source}/{name}"]]
    for t in tables:
        each = t[..., [col("harmless"), col("helpful")]]
        assert np.all(t[..., col("and")] <= each.min(axis=-1) + TOL)
        assert np.all(t[..., col("or")] >= each.max(axis=-1) - TOL)


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

