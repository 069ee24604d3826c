"""The reproduction's outputs: ``results.json``, the figures and ``report.md``.

Figures (PNG, ``<workdir>/figures/``), drawn by :mod:`lsc.eval.plots`. The exact arm (points:
the mean over the reward-model replicates; error bars: their range; a series ``<utility> (gold)``:
the same utility on gold scores):

* ``exact_helpful_vs_kl.png`` -- helpfulness win rate of the KL-regularised optima vs KL: raw and
  LSC with each reference (the paper's single-reward figure, exact on the banks);
* ``exact_and_vs_kl.png`` -- the AND win rate vs KL: raw sum, LSC sum, sigma_AND, sigma_OR;
* ``exact_bok_and_vs_k.png``, ``exact_bok_or_vs_k.png`` -- best-of-k along k (x: its exact KL on
  the bank) for the note's utilities;
* ``exact_and_or_bars.png`` -- the note's figure 1: AND / OR win rates at the largest primary k,
  one bar group per utility and replicate;
* ``exact_lower_tail_vs_kl.png`` -- P(gold helpfulness >= the prompt's base median) vs KL.

The RL arm (:mod:`lsc.repro.rl_arm`; PPO trajectories, one line per RL seed, x: ``k1`` KL on the
evaluation prompts):

* ``rl_helpful_vs_kl.png`` -- helpfulness win rate against the base opponents, raw vs LSC, with
  the exact optima of the same utilities (replicate 0, dashed);
* ``rl_hh_and_vs_kl.png`` -- the AND win rate, raw sum vs LSC sum, with their exact optima;
* ``rl_proxy_vs_kl.png``, ``rl_gold_vs_kl.png`` -- proxy and gold helpfulness along KL (reward
  hacking: proxy up, gold down);
* ``rl_filler_vs_kl.png``, ``rl_offtopic_vs_kl.png`` -- shortcut rates along KL.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

import ml_collections

from lsc import runtime
from lsc import stages as stages_lib
from lsc.eval import plots
from lsc.eval import report as report_lib
import numpy as np

from lsc.repro import claims as repro_claims
from lsc.repro import evaluation, exact_arm, rl_arm
from lsc.repro.subconfigs import PROPERTIES


def _load(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_RL_PAIRS = (("helpful_raw", "helpful_lsc"), ("hh_raw_sum", "hh_lsc_sum"))


def runs_of(trajs, method: str, y) -> List[Dict[str, list]]:
    """One ``{"kl", "value"}`` per seed of ``method``; ``y(run) -> float[T]``."""
    return [{"kl": trajs[method][s]["kl_k1"].tolist(), "value": np.asarray(y(trajs[method][s]))
             .tolist()} for s in sorted(trajs.get(method, {}))]


def draw_rl_figures(trajs, front: Mapping[str, Any], out_dir: str) -> List[str]:
    """The RL arm's figures (module docstring); returns the paths written."""
    paths = []
    col = exact_arm.METRICS.index
    r0 = front.get("r0", {})
    specs = [
        ("rl_helpful_vs_kl.png", _RL_PAIRS[0], "helpful", "helpfulness win rate",
         "PPO, helpfulness: raw vs LSC"),
        ("rl_hh_and_vs_kl.png", _RL_PAIRS[1], "and", "AND win rate",
         "PPO, helpful and harmless: raw sum vs LSC sum"),
    ]
    for name, pair, metric, label, title in specs:
        groups = {m: runs_of(trajs, m, lambda r, c=col(metric): r["metrics"][..., c].mean(axis=1))
                  for m in pair if m in trajs}
        if not groups:
            continue
        fronts = {}
        for m in pair:
            u = rl_arm.EXACT_UTILITY.get(m)
            if u in r0:
                fronts[f"exact optimum: {u}"] = {
                    "kl": [np.nan if v is None else v for v in r0[u]["kl"]],
                    "value": [np.nan if v is None else v for v in r0[u]["tilt"][metric]]}
        paths.append(plots.plot_trajectories(groups, os.path.join(out_dir, name), metric=label,
                                             title=title, frontiers=fronts,
                                             chance_line=metric != "and"))
    pair = [m for m in _RL_PAIRS[0] if m in trajs]
    if pair:
        h = PROPERTIES.index("helpful")
        for name, y, label, title, chance in [
                ("rl_proxy_vs_kl.png", lambda r: r["proxy"][:, :, h].mean(axis=1),
                 "proxy helpfulness reward (replicate 0)", "Proxy along KL", False),
                ("rl_gold_vs_kl.png", lambda r: r["gold"][:, :, h].mean(axis=1),
                 "gold helpfulness", "Gold along KL (reward hacking: gold falls)", False),
                ("rl_filler_vs_kl.png", lambda r: r["filler_rate"], "filler rate",
                 "Shortcut: the filler word", False),
                ("rl_offtopic_vs_kl.png", lambda r: r["offtopic_rate"],
                 "rate of responses with an off-topic fact", "Shortcut: off-topic facts",
                 False)]:
            groups = {m: runs_of(trajs, m, y) for m in pair}
            paths.append(plots.plot_trajectories(groups, os.path.join(out_dir, name),
                                                 metric=label, title=title,
                                                 chance_line=chance))
    return paths


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
                                for r in v.get("replicates", [v]))
            + f" ({v.get('gold_ceiling') or float('nan'):.3f})" for p, v in rm.items()) + ".",
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


def _band(front: Mapping[str, Any], reps: List[str], name: str, arm: str, metric: str,
          x_key: str) -> Dict[str, list]:
    """Mean over replicates with the replicate range, at the points every replicate reaches."""
    xs = np.array([[np.nan if v is None else v for v in front[r][name][x_key]] for r in reps])
    ys = np.array([[np.nan if v is None else v for v in front[r][name][arm][metric]]
                   for r in reps])
    ok = ~(np.isnan(xs).any(axis=0) | np.isnan(ys).any(axis=0))
    return {"kl": xs[:, ok].mean(axis=0).tolist(), "value": ys[:, ok].mean(axis=0).tolist(),
            "ci_low": ys[:, ok].min(axis=0).tolist(), "ci_high": ys[:, ok].max(axis=0).tolist()}


def draw_exact_figures(front: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                       primary_ks, out_dir: str) -> List[str]:
    """The exact arm's figures (module docstring); returns the paths written."""
    reps = [r for r in front if r != exact_arm.GOLD]
    if not reps:
        return []
    paths = []

    def series(names_, arm, metric, x_key, control=True):
        out = {}
        for name in names_:
            if name not in front[reps[0]]:
                continue
            out[name] = _band(front, reps, name, arm, metric, x_key)
            if control and name in front.get(exact_arm.GOLD, {}):
                out[f"{name} (gold)"] = _band(front, [exact_arm.GOLD], name, arm, metric, x_key)
        return {k: v for k, v in out.items() if v["kl"]}

    single = ["raw", "lsc_p85", "lsc_median", "lsc_predicted", "lsc_none"]
    pair = ["sum", "lsc_sum", "sigma_and_median", "sigma_or_median"]
    note = ["sum", "sigma_and_median", "sigma_and_predicted", "sigma_and_none",
            "sigma_or_median", "sigma_or_predicted", "sigma_or_none"]
    figs = [
        ("exact_helpful_vs_kl.png", series(single, "tilt", "helpful", "kl", control=False),
         "helpfulness win rate", "KL-regularised optima on the banks: raw vs LSC"),
        ("exact_and_vs_kl.png", series(pair, "tilt", "and", "kl", control=False),
         "AND win rate", "KL-regularised optima: helpful and harmless"),
        ("exact_bok_and_vs_k.png", series(note, "bok", "and", "bok_kl", control=False),
         "AND win rate", "Best-of-k (k = " + ", ".join(str(int(k)) for k in arrays["ks"])
         + "; x: exact KL on the bank)"),
        ("exact_bok_or_vs_k.png", series(note, "bok", "or", "bok_kl", control=False),
         "OR win rate", "Best-of-k (x: exact KL on the bank)"),
        ("exact_lower_tail_vs_kl.png",
         series(["raw", "lsc_p85", "lsc_median"], "tilt", "helpful_not_below", "kl"),
         "P(gold helpful >= base median)", "Lower tail: KL-regularised optima (and gold control)"),
    ]
    for name, data, metric, title in figs:
        if data:
            paths.append(plots.plot_win_rate_vs_kl(data, os.path.join(out_dir, name),
                                                   metric=metric, title=title,
                                                   chance_line=metric != "AND win rate"))
    ks = [int(k) for k in arrays["ks"]]
    k = max(int(x) for x in primary_ks)
    if k in ks:
        row = ks.index(k)
        bars = {}
        for name in ("sum", "lsc_sum", "sigma_and_median", "sigma_or_median",
                     "sigma_and_none", "sigma_or_none"):
            for r in reps:
                if name in front[r]:
                    bars[f"{name} {r}"] = {
                        m: {"value": front[r][name]["bok"][m][row],
                            "ci_low": front[r][name]["bok"][m][row],
                            "ci_high": front[r][name]["bok"][m][row]} for m in ("and", "or")}
        base = {m: {"value": float(arrays["base"][:, exact_arm.METRICS.index(m)].mean())}
                for m in ("and", "or")}
        if bars:
            paths.append(plots.plot_and_or_bars(
                bars, os.path.join(out_dir, "exact_and_or_bars.png"), base=base,
                title=f"Best-of-{k} on the banks: AND / OR win rates per reward-model replicate"))
    return paths


def low_quartile(base: Mapping[str, Any]) -> np.ndarray:
    """``bool[P]``: the evaluation prompts in the lowest quartile of the base policy's gold
    helpfulness (mean over the reference samples, independent of the judging samples)."""
    h = PROPERTIES.index("helpful")
    strata = np.asarray(base["reference"]["gold"])[:, :, h].mean(axis=1)
    return strata <= np.quantile(strata, 0.25)


def rl_results(config: ml_collections.ConfigDict, earlier: Mapping[str, Any], trajs,
               arrays: Mapping[str, np.ndarray], boot: Mapping[str, Any]) -> Dict[str, Any]:
    """The RL arm's part of ``results.json``: the decided claims, PPO against the exact optima,
    the final shortcut rates and the settings."""
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    claims = rl_arm.evaluate_rl_claims(
        trajs, kl_grid=[float(x) for x in config.rl_arm.kl_grid], strata=arrays["strata"],
        low_quartile=low_quartile(base), delta=float(config.exact.delta), **boot)
    return {"claims": claims, "ppo_vs_exact": rl_arm.ppo_vs_exact(trajs, arrays),
            "shortcuts": rl_arm.final_shortcuts(trajs),
            "kl_grid": [float(x) for x in config.rl_arm.kl_grid],
            "seeds": {m: sorted(int(s) for s in runs) for m, runs in trajs.items()},
            "kl_coef": {m: float(config.rlhf.runs[m].get("kl_coef", float("nan")))
                        for m in trajs if m in config.rlhf.runs}}


def write_outputs(config: ml_collections.ConfigDict, earlier: Mapping[str, Any], workdir: str
                  ) -> Dict[str, Any]:
    """Decides the claims and writes ``results.json``, ``figures/*.png`` and ``report.md``;
    returns their paths."""
    entries = list(_load(earlier["evaluate"]["entries"]))
    entries.sort(key=lambda e: ({"base": 0, "best_of_k": 1, "rlhf": 2}[e["procedure"]], e["name"]))
    status = stages_lib.load_status(workdir)
    seconds = {k: float(v.get("seconds", 0.0)) for k, v in status.items()}
    ex = config.exact
    arrays = exact_arm.load(earlier["exact"]["path"])
    boot = dict(confidence=float(ex.confidence), num_resamples=int(ex.bootstrap_resamples),
                seed=int(config.seed))
    claims = repro_claims.evaluate_exact_claims(
        arrays, primary_ks=[int(k) for k in ex.primary_ks], delta=float(ex.delta), **boot)
    sanity = repro_claims.sanity_checks(arrays, **boot)
    front = exact_arm.frontiers(arrays)
    exact_out: Dict[str, Any] = {
        "bank_size": int(ex.bank_size), "num_opponents": int(ex.num_opponents),
        "kl_grid": [float(x) for x in ex.kl_grid], "ks": [int(k) for k in ex.ks],
        "primary_ks": [int(k) for k in ex.primary_ks], "delta": float(ex.delta),
        "confidence": float(ex.confidence), "replicates": exact_arm.sources(arrays),
        "claims": claims, "sanity": sanity, "frontiers": front,
        "base": {m: float(arrays["base"][:, c].mean()) for c, m in enumerate(exact_arm.METRICS)}}
    if "rematch" in arrays:
        a, b, metric = exact_arm.REMATCH
        samples = arrays["rematch"][np.isfinite(arrays["rematch"])]
        alpha = (1.0 - float(ex.confidence)) / 2.0
        fixed = next(c for cl in claims for c in cl["comparisons"]
                     if (c["a"], c["b"], c["metric"], c["arm"]) == (a, b, metric, "tilt"))
        exact_out["rematch"] = {
            "comparison": f"{a} vs {b} on {metric} (replicate r0)",
            "resamples": int(samples.size),
            "rematched": {"ci_low": float(np.quantile(samples, alpha)),
                          "ci_high": float(np.quantile(samples, 1 - alpha))},
            "fixed_gamma": fixed["replicates"][0] if fixed["replicates"] else None}
    results = {"job": "repro", "complete": True, "seed": int(config.seed),
               "stage_seconds": seconds,
               "world": {"version": int(config.world.version),
                         "stats": earlier.get("exact", {}).get("world_stats", {})},
               "reward_models": earlier.get("reward_models", {}),
               "reference_predictors": earlier.get("reference_predictor", {}),
               "exact": exact_out,
               "entries": entries}
    results_path = os.path.join(workdir, "results.json")
    runtime.write_json_atomic(results_path, results)
    fig_dir = os.path.join(workdir, "figures")
    figures = draw_exact_figures(front, arrays, ex.primary_ks, fig_dir)
    sections: List[str] = []
    traj_path = earlier["evaluate"].get("trajectories")
    if traj_path and os.path.exists(traj_path):
        trajs = rl_arm.load(traj_path)
        results["rl"] = rl_results(config, earlier, trajs, arrays, boot)
        runtime.write_json_atomic(results_path, results)
        figures += draw_rl_figures(trajs, front, fig_dir)
        sections = rl_arm.render(results["rl"]["claims"], results["rl"]["ppo_vs_exact"],
                                 results["rl"]["shortcuts"])
    report_path = report_lib.write_report(
        entries, os.path.join(workdir, "report.md"), repro_claims.RL_CLAIMS,
        title="Reproduction report", preamble=_preamble(config, earlier, seconds),
        decided=exact_out, sections=sections)
    return {"results": results_path, "report": report_path, "figures": figures}
