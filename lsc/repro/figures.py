"""The reproduction's outputs: ``results.json``, the paper's figures and ``report.md``.

Figures (PNG, ``<workdir>/figures/``), all drawn by :mod:`lsc.eval.plots` from results entries:

* ``rlhf_helpful_win_rate_vs_kl.png`` -- helpfulness win rate vs KL, raw vs LSC (the paper's
  single-reward RLHF figure);
* ``rlhf_hh_and_win_rate_vs_kl.png`` (and ``_helpful_``, ``_harmless_``) -- raw sum vs LSC sum
  (the paper's helpful-and-harmless figure: the AND win rate and each property);
* ``best_of_k_and_or.png`` -- the note's figure 1: AND / OR win rates by method x reference at
  the largest k, with the base policy's chance levels;
* ``best_of_k_and_vs_kl.png``, ``best_of_k_or_vs_kl.png`` -- the grid along k (KL plug-in);
* ``underfitting.png`` -- helpful gold improvement per base-score quartile, raw vs LSC;
* ``reward_hacking.png`` -- proxy reward and gold score along training, raw vs LSC.
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


def _load(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _single(entries, n: int, procedure: str = "rlhf") -> List[Mapping[str, Any]]:
    return [e for e in entries if e["procedure"] == procedure and len(e["rewards"]) == n]


def _strongest(entries: List[Mapping[str, Any]]) -> float:
    """The smallest ``kl_coef`` every method ran (the strongest optimisation)."""
    by_label: Dict[str, set] = {}
    for e in entries:
        by_label.setdefault(report_lib.label(e), set()).add(float(e["kl_coef"]))
    common = set.intersection(*by_label.values()) if by_label else set()
    return min(common) if common else float("nan")


def draw_figures(entries: List[Mapping[str, Any]], curves: Mapping[str, Any], out_dir: str
                 ) -> List[str]:
    """Every figure the entries allow (module docstring); returns the paths written."""
    paths = []
    one, two = _single(entries, 1), _single(entries, 2)
    if one:
        paths.append(plots.plot_win_rate_vs_kl(
            plots.win_rate_vs_kl_series(one, "helpful"),
            os.path.join(out_dir, "rlhf_helpful_win_rate_vs_kl.png"),
            metric="helpfulness win rate", title="RLHF, helpfulness: raw vs LSC"))
    if two:
        for metric in ("and", "helpful", "harmless"):
            paths.append(plots.plot_win_rate_vs_kl(
                plots.win_rate_vs_kl_series(two, metric),
                os.path.join(out_dir, f"rlhf_hh_{metric}_win_rate_vs_kl.png"),
                metric=f"{metric.upper() if metric == 'and' else metric} win rate",
                title="RLHF, helpful and harmless: raw sum vs LSC sum"))
    bok = [e for e in entries if e["procedure"] == "best_of_k"]
    base = next((e for e in entries if e["procedure"] == "base"), None)
    if bok:
        k_max = max(int(e["k"]) for e in bok)
        paths.append(plots.plot_and_or_bars(
            plots.and_or_bars_data(bok, k=k_max), os.path.join(out_dir, "best_of_k_and_or.png"),
            title=f"Best-of-{k_max}: AND / OR win rates by method and reference",
            base=None if base is None else base["win_rate"]))
        for metric in ("and", "or"):
            paths.append(plots.plot_win_rate_vs_kl(
                plots.win_rate_vs_kl_series(bok, metric, procedure="best_of_k"),
                os.path.join(out_dir, f"best_of_k_{metric}_vs_kl.png"),
                metric=f"{metric.upper()} win rate", title="Best-of-k (KL: plug-in estimate)",
                chance_line=False))
    if one and curves:
        gamma = _strongest(one)
        chosen = [e for e in one if float(e["kl_coef"]) == gamma and e["name"] in curves]
        if chosen:
            paths.append(plots.plot_underfitting(
                {report_lib.label(e): {int(g): v for g, v in
                                       curves[e["name"]]["underfitting"].items()}
                 for e in chosen},
                os.path.join(out_dir, "underfitting.png"),
                title=f"Helpfulness gain by base-score quartile (gamma={gamma:g})"))
            paths.append(plots.plot_reward_hacking(
                {report_lib.label(e): {k: curves[e["name"]][k] for k in ("step", "proxy", "gold")}
                 for e in chosen},
                os.path.join(out_dir, "reward_hacking.png"),
                title=f"Along training (gamma={gamma:g}, evaluation prompts)",
                proxy_label="proxy helpfulness reward", gold_label="gold helpfulness"))
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
        "Proxy reward models (held-out pairwise accuracy vs the gold-label ceiling): " + ", ".join(
            f"{p} {v.get('accuracy', float('nan')):.3f} vs {v.get('gold_ceiling') or float('nan'):.3f}"
            for p, v in rm.items()) + ".",
    ]
    if stage_seconds:
        total = sum(stage_seconds.values())
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                      stage_seconds.items())
                  + f"; total {total / 60:.1f} min."]
    return "\n".join(lines)


def write_outputs(config: ml_collections.ConfigDict, earlier: Mapping[str, Any], workdir: str
                  ) -> Dict[str, Any]:
    """Writes ``results.json``, ``figures/*.png`` and ``report.md``; returns their paths."""
    entries = list(_load(earlier["evaluate"]["entries"])) + list(
        _load(earlier["best_of_k"]["entries"]))
    entries.sort(key=lambda e: ({"base": 0, "best_of_k": 1, "rlhf": 2}[e["procedure"]], e["name"]))
    curves = _load(earlier["evaluate"]["curves"])
    status = stages_lib.load_status(workdir)
    seconds = {k: float(v.get("seconds", 0.0)) for k, v in status.items()}
    results = {"job": "repro", "complete": True, "seed": int(config.seed),
               "stage_seconds": seconds,
               "reward_models": earlier.get("reward_models", {}),
               "reference_predictors": earlier.get("reference_predictor", {}),
               "entries": entries}
    results_path = os.path.join(workdir, "results.json")
    runtime.write_json_atomic(results_path, results)
    figures = draw_figures(entries, curves, os.path.join(workdir, "figures"))
    report_path = report_lib.write_report(
        entries, os.path.join(workdir, "report.md"), title="Reproduction report",
        preamble=_preamble(config, earlier, seconds))
    return {"results": results_path, "report": report_path, "figures": figures}
