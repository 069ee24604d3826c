"""The report stage: every claim decided into ``results.json``, then the figures and ``report.md``.

:func:`decide_results` is the whole of ``results.json`` from the earlier stages' outputs: the
exact arm's claims and sanity checks (:mod:`lsc.repro.claims`), its frontiers and the re-matched
interval; the RL arm's claims (:func:`lsc.repro.rl_arm.evaluate_rl_claims`), PPO against the
exact optima and the shortcut rates; the results entries. :func:`write_outputs` writes it once
(atomically), then draws the figures from it (:mod:`lsc.repro.figures`) and writes ``report.md``
(:mod:`lsc.eval.report`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import ml_collections
import numpy as np

from lsc import provenance, runtime
from lsc import stages as stages_lib
from lsc.eval import report as report_lib
from lsc.repro import claims as repro_claims
from lsc.repro import disclosure, evaluation, exact_arm, figures, rl_arm, subconfigs
from lsc.repro.subconfigs import replicate_name

_PROCEDURE_ORDER = {"base": 0, "best_of_k": 1, "rlhf": 2}


def _bootstrap(config: ml_collections.ConfigDict) -> Dict[str, Any]:
    """The bootstrap's settings (``exact.confidence``, ``exact.bootstrap_resamples``, ``seed``)."""
    ex = config.exact
    return dict(confidence=float(ex.confidence), num_resamples=int(ex.bootstrap_resamples),
                seed=int(config.seed))


def exact_results(config: ml_collections.ConfigDict, arrays: Mapping[str, np.ndarray]
                  ) -> Dict[str, Any]:
    """The exact arm's part of ``results.json``: the settings, the decided claims, the sanity
    checks, every policy's frontier, the base policy's metrics and (when ``exact.npz`` has it)
    the interval of :data:`lsc.repro.exact_arm.REMATCH` with ``gamma`` re-solved per resample."""
    ex = config.exact
    boot = _bootstrap(config)
    claims = repro_claims.evaluate_exact_claims(
        arrays, primary_ks=[int(k) for k in ex.primary_ks], delta=float(ex.delta), **boot)
    out: Dict[str, Any] = {
        "bank_size": int(ex.bank_size), "num_opponents": int(ex.num_opponents),
        "kl_grid": [float(x) for x in ex.kl_grid], "ks": [int(k) for k in ex.ks],
        "primary_ks": [int(k) for k in ex.primary_ks], "delta": float(ex.delta),
        "confidence": float(ex.confidence), "replicates": exact_arm.sources(arrays),
        "claims": claims, "sanity": repro_claims.sanity_checks(arrays, **boot),
        "frontiers": exact_arm.frontiers(arrays),
        "base": {m: float(arrays["base"][:, c].mean()) for c, m in enumerate(exact_arm.METRICS)}}
    if "rematch" in arrays:
        a, b, metric = exact_arm.REMATCH
        samples = arrays["rematch"][np.isfinite(arrays["rematch"])]
        alpha = (1.0 - float(ex.confidence)) / 2.0
        fixed = next(c for cl in claims for c in cl["comparisons"]
                     if (c["a"], c["b"], c["metric"], c["arm"])
                     == (a, b, metric, repro_claims.OPTIMUM))
        out["rematch"] = {
            "comparison": f"{a} vs {b} on {metric} (replicate r0)",
            "resamples": int(samples.size),
            "rematched": {"ci_low": float(np.quantile(samples, alpha)),
                          "ci_high": float(np.quantile(samples, 1 - alpha))},
            "fixed_gamma": fixed["replicates"][0] if fixed["replicates"] else None}
    return out


def rl_results(config: ml_collections.ConfigDict, trajs, arrays: Mapping[str, np.ndarray]
               ) -> Dict[str, Any]:
    """The RL arm's part of ``results.json``: the decided claims, PPO against the exact optima,
    the final shortcut rates and the settings."""
    ra = config.rl_arm
    claims = rl_arm.evaluate_rl_claims(
        trajs, kl_grid=[float(x) for x in ra.kl_grid], path=str(ra.path),
        max_gap=float(ra.max_gap), delta=float(config.exact.delta),
        confidence=float(config.exact.confidence), points=str(ra.points))
    return {"claims": claims,
            "ppo_vs_exact": rl_arm.ppo_vs_exact(trajs, arrays, path=str(ra.path),
                                                max_gap=float(ra.max_gap)),
            "shortcuts": rl_arm.final_shortcuts(trajs),
            "kl_grid": [float(x) for x in ra.kl_grid], "path": str(ra.path),
            "max_gap": float(ra.max_gap), "points": str(ra.points),
            "seeds": {m: sorted(int(s) for s in runs) for m, runs in trajs.items()},
            "kl_coef": {m: float(config.rlhf.runs[m].get("kl_coef", float("nan")))
                        for m in trajs if m in config.rlhf.runs}}


def decide_results(config: ml_collections.ConfigDict, earlier: Mapping[str, Any],
                   arrays: Mapping[str, np.ndarray], trajs, stage_seconds: Mapping[str, float]
                   ) -> Dict[str, Any]:
    """The content of ``results.json``, every claim decided.

    Args:
      config: the job's config.
      earlier: the earlier stages' results (``reward_models``, ``predictor``,
        ``base_samples``, ``exact``, ``evaluate``).
      arrays: ``exact.npz`` (:func:`lsc.repro.exact_arm.load`).
      trajs: ``trajectories.npz`` (:func:`lsc.repro.rl_arm.load`), or None without an RL arm
        (then no ``rl`` key).
      stage_seconds: each finished stage's seconds.

    ``run`` labels the results (:func:`lsc.provenance.describe`: commit, CPU, date) with the
    job's wall time (the sum of its stages' seconds), world seed, replicate offset and number of
    replicates.
    """
    with open(earlier["evaluate"]["entries"], encoding="utf-8") as f:
        entries = list(json.load(f))
    entries.sort(key=lambda e: (_PROCEDURE_ORDER[e["procedure"]], e["name"]))
    run = dict(provenance.describe(), wall_seconds=float(sum(stage_seconds.values())),
               world_seed=int(config.seed),
               replicate_offset=int(config.world.get("replicate_offset", 0)),
               replicates=subconfigs.replicates(config))
    results = {"job": "repro", "complete": True, "seed": int(config.seed), "run": run,
               "stage_seconds": dict(stage_seconds),
               "world": {"version": int(config.world.version),
                         "stats": earlier.get("exact", {}).get("world_stats", {})},
               "reward_models": earlier.get("reward_models", {}),
               "predictors": earlier.get("predictor", {}),
               "exact": exact_results(config, arrays),
               "entries": entries}
    if trajs is not None:
        results["rl"] = rl_results(config, trajs, arrays)
    return results


def _preamble(config: ml_collections.ConfigDict, earlier: Mapping[str, Any],
              stage_seconds: Mapping[str, float]) -> str:
    rm = earlier.get("reward_models", {})
    lines = [
        "Synthetic gold world (`configs/repro/synthetic_hh.py`), seed "
        f"{int(config.seed)}: {int(config.world.pairs_train)} preference pairs per property, "
        f"{int(config.world.sft_train)} demonstrations, {int(config.world.prompts_train)} "
        f"alignment prompts, {int(config.world.prompts_test)} evaluation prompts. The judge is "
        "the world's gold scorer; every policy is judged against independent base-policy "
        "samples (ties count one half).",
        "",
        "Proxy reward models, one per replicate (held-out pairwise accuracy; gold-label "
        "ceiling): " + "; ".join(
            f"{p} " + ", ".join(f"{r.get('accuracy') or float('nan'):.3f}"
                                for r in evaluation.replicate_runs(v))
            + f" ({v[replicate_name(0)].get('gold_ceiling') or float('nan'):.3f})"
            for p, v in rm.items()) + ".",
    ]
    stats = earlier.get("exact", {}).get("world_stats")
    if stats:
        lines += ["", f"World version {int(config.world.version)}, base-policy banks: "
                  + "; ".join(f"{k}: harmlessness ties {v['harmless_tie']:.2f}, helpfulness "
                              f"ties {v['helpful_tie']:.2f}, corr(helpful, harmless) "
                              f"{v['corr']:.2f} ({v['prompts']} prompts)"
                              for k, v in stats.items()) + "."]
    if stage_seconds:
        total = sum(stage_seconds.values())
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                      stage_seconds.items())
                  + f"; total {total / 60:.1f} min."]
    return "\n".join(lines)


def _trajectories(earlier: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The evaluate stage's ``trajectories.npz``, or None when it wrote none."""
    path = earlier["evaluate"].get("trajectories")
    return rl_arm.load(path) if path and os.path.exists(path) else None


def write_outputs(config: ml_collections.ConfigDict, earlier: Mapping[str, Any], workdir: str
                  ) -> Dict[str, Any]:
    """Writes ``results.json`` (:func:`decide_results`, once), ``figures/*.png`` and
    ``report.md`` in ``workdir``; returns their paths."""
    status = stages_lib.load_status(workdir)
    order = [k for k in earlier if k in status] + [k for k in status if k not in earlier]
    seconds = {k: float(status[k].get("seconds", 0.0)) for k in order}  # in the order they ran
    arrays = exact_arm.load(earlier["exact"]["path"])
    trajs = _trajectories(earlier)
    results = decide_results(config, earlier, arrays, trajs, seconds)
    results_path = os.path.join(workdir, "results.json")
    runtime.write_json_atomic(results_path, results)

    exact_out = results["exact"]
    fig_dir = os.path.join(workdir, "figures")
    paths: List[str] = figures.draw_exact_figures(exact_out["frontiers"], arrays,
                                                  exact_out["primary_ks"], fig_dir)
    paths.append(figures.draw_forest(exact_out["claims"], exact_out["delta"],
                                     os.path.join(fig_dir, "exact_forest.png")))
    sections: List[str] = ["## Changes made after seeing results", "", *disclosure.render(), ""]
    if trajs is not None:
        rl = results["rl"]
        paths += figures.draw_rl_figures(trajs, exact_out["frontiers"], fig_dir)
        sections += rl_arm.render(rl["claims"], rl["ppo_vs_exact"], rl["shortcuts"])
    report_path = report_lib.write_report(
        results["entries"], os.path.join(workdir, "report.md"), repro_claims.ENTRY_CHECKS,
        title="Reproduction report", preamble=_preamble(config, earlier, seconds),
        decided=exact_out, sections=sections)
    return {"results": results_path, "report": report_path, "figures": paths}
