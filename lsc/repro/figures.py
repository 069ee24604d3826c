"""The reproduction's figures (PNG, ``<workdir>/figures/``), drawn by :mod:`lsc.eval.plots` from
already-decided results (the exact arm's frontiers as written to ``results.json``) and the arms'
arrays; the report stage (:mod:`lsc.repro.results`) calls them.

The exact arm (points: the mean over the reward-model replicates; error bars: their range; a
series ``<utility> (gold)``: the same utility on gold scores):

* ``exact_helpful_vs_kl.png`` -- helpfulness win rate of the KL-regularised optima vs KL: raw and
  LSC with each reference (the paper's single-reward figure, exact on the banks);
* ``exact_and_vs_kl.png`` -- the AND win rate vs KL: raw sum, LSC sum, sigma_AND, sigma_OR;
* ``exact_best_of_k_and_vs_k.png``, ``exact_best_of_k_or_vs_k.png`` -- best-of-k along k (x: its
  exact KL on the bank) for the note's utilities;
* ``exact_and_or_bars.png`` -- the note's figure 1: AND / OR win rates at the largest primary k,
  one bar group per utility and replicate;
* ``exact_lower_tail_vs_kl.png`` -- P(gold helpfulness >= the prompt's base median) vs KL;
* ``exact_forest.png`` (:func:`draw_forest`) -- every decisive comparison of the claims: the
  estimate, its interval across replicates (thin) and Holm-adjusted (thick), each replicate's
  value, against 0 and +-delta, with the outcome.

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

import os
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from lsc.eval import plots
from lsc.repro import exact_arm, rl_arm
from lsc.repro.subconfigs import PROPERTIES

_RL_PAIRS = (("helpful_raw", "helpful_lsc"), ("hh_raw_sum", "hh_lsc_sum"))


def runs_of(trajs, method: str, y) -> List[Dict[str, list]]:
    """One ``{"kl", "value"}`` per seed of ``method``; ``y(run) -> float[T]``."""
    return [{"kl": trajs[method][s]["kl_k1"].tolist(), "value": np.asarray(y(trajs[method][s]))
             .tolist()} for s in sorted(trajs.get(method, {}))]


def draw_rl_figures(trajs, front: Mapping[str, Any], out_dir: str) -> List[str]:
    """The RL arm's figures (module docstring); returns the paths written."""
    paths = []
    col = exact_arm.GOLD_JUDGED.index
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
                    "value": [np.nan if v is None else v for v in r0[u]["optimum"][metric]]}
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

    single = ["raw", "lsc_p85", "lsc_median", "lsc_predictor", "lsc_none"]
    pair = ["raw_sum", "lsc_sum", "sigma_and_median", "sigma_or_median"]
    note = ["raw_sum", "sigma_and_median", "sigma_and_predictor", "sigma_and_none",
            "sigma_or_median", "sigma_or_predictor", "sigma_or_none"]
    figs = [
        ("exact_helpful_vs_kl.png", series(single, "optimum", "helpful", "kl", control=False),
         "helpfulness win rate", "KL-regularised optima on the banks: raw vs LSC"),
        ("exact_and_vs_kl.png", series(pair, "optimum", "and", "kl", control=False),
         "AND win rate", "KL-regularised optima: helpful and harmless"),
        ("exact_best_of_k_and_vs_k.png",
         series(note, "best_of_k", "and", "best_of_k_kl", control=False),
         "AND win rate", "Best-of-k (k = " + ", ".join(str(int(k)) for k in arrays["ks"])
         + "; x: exact KL on the bank)"),
        ("exact_best_of_k_or_vs_k.png",
         series(note, "best_of_k", "or", "best_of_k_kl", control=False),
         "OR win rate", "Best-of-k (x: exact KL on the bank)"),
        ("exact_lower_tail_vs_kl.png",
         series(["raw", "lsc_p85", "lsc_median"], "optimum", "helpful_not_below", "kl"),
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
        for name in ("raw_sum", "lsc_sum", "sigma_and_median", "sigma_or_median",
                     "sigma_and_none", "sigma_or_none"):
            for r in reps:
                if name in front[r]:
                    bars[f"{name} {r}"] = {
                        m: {"value": front[r][name]["best_of_k"][m][row],
                            "ci_low": front[r][name]["best_of_k"][m][row],
                            "ci_high": front[r][name]["best_of_k"][m][row]} for m in ("and", "or")}
        base = {m: {"value": float(arrays["base"][:, exact_arm.METRICS.index(m)].mean())}
                for m in ("and", "or")}
        if bars:
            paths.append(plots.plot_and_or_bars(
                bars, os.path.join(out_dir, "exact_and_or_bars.png"), base=base,
                title=f"Best-of-{k} on the banks: AND / OR win rates per reward-model replicate"))
    return paths


def draw_forest(claims: Sequence[Mapping[str, Any]], delta: float, path: str) -> str:
    """The exact arm's forest plot (``results["exact"]["claims"]``): one row per decisive
    comparison, labelled ``<claim key> (<judge>)`` (with the comparison when the claim has
    several); the Holm interval thick, the unadjusted one thin, the estimate a diamond, each
    replicate's value a dot; lines at 0 and +-delta (the band between shaded); the outcome at the
    right. Rows without an interval (missing utilities) show their outcome only. Returns
    ``path``."""
    rows = [(c, r) for c in claims for r in c.get("comparisons", []) if r.get("decisive")]
    if not rows:
        raise ValueError("no decisive comparison to draw")
    fig, (ax,) = plots.new_figure(8.5, 0.45 * len(rows) + 1.4)
    ys = np.arange(len(rows))[::-1]
    labels = []
    for y, (claim, row) in zip(ys, rows):
        several = sum(bool(r.get("decisive")) for r in claim["comparisons"]) > 1
        labels.append(f"{claim['key']} ({claim.get('judge', 'gold')})"
                      + (f"\n{row['a']} - {row['b']}, {row['metric']}" if several else ""))
        across, holm = row.get("across"), row.get("holm")
        if across:
            ax.hlines(y, across["ci_low"], across["ci_high"], color="0.1", linewidth=1.0,
                      zorder=3)
        if holm:
            ax.hlines(y, holm["ci_low"], holm["ci_high"], color=plots.COLORS[0], linewidth=5.0,
                      alpha=0.6, zorder=2)
        reps = row.get("replicate_values") or []
        ax.plot(reps, [y] * len(reps), "o", color="0.35", markersize=2.5, zorder=4)
        if across:
            ax.plot([across["value"]], [y], "D", color=plots.COLORS[1], markersize=5, zorder=5)
    ax.axvspan(-delta, delta, color="0.85", alpha=0.5, zorder=0)
    for x, style in ((0.0, "-"), (-delta, "--"), (delta, "--")):
        ax.axvline(x, color="0.4", linestyle=style, linewidth=0.9, zorder=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ys)
    right.set_yticklabels([r["outcome"] for _, r in rows], fontsize=7)
    ax.set_xlabel(f"A - B (win rate); delta = {delta:g}; thick: Holm, thin: unadjusted, "
                  "dots: replicates")
    ax.set_title("Exact arm: decisive comparisons")
    ax.grid(axis="x", alpha=0.3)
    return plots.save_figure(fig, path)
