"""The paper's figures from plain data, written as PNG files (matplotlib, Agg canvas).

Every function takes dicts / arrays (no model objects), writes one PNG to ``path`` (creating
its directory) and returns ``path``. Figures are drawn on a ``matplotlib.figure.Figure`` with the
Agg canvas, never through ``pyplot``'s global state, so they are safe in scripts, threads and
notebooks alike.

* :func:`plot_win_rate_vs_kl` -- win rate against KL(pi || pi0), one line per method, CI error
  bars (the paper's figures: raw vs LSC; raw sum vs LSC sum). :func:`win_rate_vs_kl_series`
  builds its input from results entries (``lsc.eval.entries``).
* :func:`plot_and_or_bars` -- the note's figure 1: grouped bars of AND and OR win rates per
  method x reference, with CIs. :func:`and_or_bars_data` builds its input from entries.
* :func:`plot_underfitting` -- gold-score improvement per base-score quartile of prompts, one box
  per method within each quartile.
* :func:`plot_reward_hacking` -- proxy reward and gold score against training step per method,
  the gold peak marked.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lsc.eval import entries as entries_lib

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def new_figure(width: float, height: float, ncols: int = 1):
    """``(figure, axes)``: an Agg figure of ``width`` x ``height`` inches with ``ncols`` axes in a
    row (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save_figure(fig: Figure, path: str) -> str:
    """Lays ``fig`` out and writes it to ``path`` (creating its directory); returns ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _arr(x, name: str, n: Optional[int] = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} values, expected {n}")
    return a


def _finish_kl_axes(ax, metric: str, title: str, chance_line: bool, xlabel: str,
                    legend_size: Optional[float] = None) -> None:
    """Labels, grid, legend and the optional 0.5 line of a figure against KL."""
    if chance_line:
        ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=legend_size)


def plot_win_rate_vs_kl(series: Mapping[str, Mapping[str, Sequence[float]]], path: str, *,
                        metric: str = "win rate", title: str = "",
                        chance_line: bool = True) -> str:
    """Win rate against KL, one line per method, with CI error bars.

    Args:
      series: ``{label: {"kl": [n], "value": [n], "ci_low": [n], "ci_high": [n]}}`` with
        optional ``"kl_se": [n]`` (horizontal error bars, one standard error); points are drawn
        in order of increasing KL.
      path: the PNG to write.
      metric: y-axis label (e.g. "helpfulness win rate", "AND win rate").
      title: figure title.
      chance_line: draw the 0.5 line (the base policy against itself).
    """
    if not series:
        raise ValueError("no series to plot")
    fig, (ax,) = new_figure(5.6, 4.2)
    for j, (label, s) in enumerate(series.items()):
        kl = _arr(s["kl"], f"{label}.kl")
        n = kl.size
        v = _arr(s["value"], f"{label}.value", n)
        lo = _arr(s["ci_low"], f"{label}.ci_low", n)
        hi = _arr(s["ci_high"], f"{label}.ci_high", n)
        xerr = _arr(s["kl_se"], f"{label}.kl_se", n) if "kl_se" in s else None
        order = np.argsort(kl, kind="stable")
        yerr = np.stack([np.maximum(v - lo, 0), np.maximum(hi - v, 0)])[:, order]
        ax.errorbar(kl[order], v[order], yerr=yerr,
                    xerr=None if xerr is None else xerr[order],
                    color=COLORS[j % len(COLORS)], marker=_MARKERS[j % len(_MARKERS)],
                    markersize=5, capsize=3, linewidth=1.6, label=label)
    _finish_kl_axes(ax, metric, title, chance_line, r"KL($\pi \,\|\, \pi_0$) (nats)")
    return save_figure(fig, path)


def plot_and_or_bars(data: Mapping[str, Mapping[str, Mapping[str, float]]], path: str, *,
                     title: str = "", metrics: Sequence[str] = ("and", "or"),
                     base: Optional[Mapping[str, Mapping[str, float]]] = None) -> str:
    """The note's figure 1: grouped bars of AND / OR win rates by method x reference.

    Args:
      data: ``{label: {"and": {"value", "ci_low", "ci_high"}, "or": {...}}}``, e.g. labels
        ``sigma_and_median``, ``raw_sum``; bars in the mapping's order.
      path: the PNG to write.
      metrics: which win rates to draw side by side in each group.
      base: optional win rates of the base policy against itself (the base entry's
        ``win_rate``): each metric's base level is drawn as a dotted line in its colour. With
        ``m`` independent properties these chance levels are ``2**-m`` (AND) and
        ``1 - 2**-m`` (OR), not 0.5; without ``base`` a single 0.5 line is drawn.
    """
    if not data:
        raise ValueError("no bars to plot")
    labels = list(data)
    fig, (ax,) = new_figure(max(5.0, 1.1 * len(labels) + 2.0), 4.4)
    x = np.arange(len(labels))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        try:
            v = np.array([data[l][m]["value"] for l in labels], float)
            lo = np.array([data[l][m]["ci_low"] for l in labels], float)
            hi = np.array([data[l][m]["ci_high"] for l in labels], float)
        except KeyError as e:
            raise ValueError(f"every bar needs {metrics} each with value/ci_low/ci_high; "
                             f"missing {e}") from None
        pos = x + (j - (len(metrics) - 1) / 2) * width
        ax.bar(pos, v, width, yerr=np.stack([np.maximum(v - lo, 0), np.maximum(hi - v, 0)]),
               capsize=3, color=COLORS[j % len(COLORS)], label=f"{m.upper()} win rate")
        for p, val, top in zip(pos, v, np.maximum(hi, v)):
            ax.text(p, top + 0.01, f"{val:.2f}", ha="center", va="bottom", fontsize=7)
    if base is None:
        ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1, zorder=0)
    else:
        for j, m in enumerate(metrics):
            if m in base:
                ax.axhline(float(base[m]["value"]), color=COLORS[j % len(COLORS)],
                           linestyle=":", linewidth=1.3, label=f"base vs base {m.upper()}")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("win rate vs base policy")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, loc="upper center", ncol=2, fontsize=8)
    return save_figure(fig, path)


def plot_underfitting(data: Mapping[str, Mapping[Any, Sequence[float]]], path: str, *,
                      title: str = "", group_label: str = "base gold-score quartile") -> str:
    """Per-prompt gold-score improvement over the base policy, by base-score group and method.

    Args:
      data: ``{method: {group: improvements[n_g]}}`` (e.g. the output of
        :func:`lsc.eval.diagnostics.gold_improvement_by_group` per method); groups are sorted,
        group 0 being the worst-served prompts.
      path: the PNG to write.
    """
    if not data:
        raise ValueError("no methods to plot")
    methods = list(data)
    groups = sorted({g for d in data.values() for g in d})
    fig, (ax,) = new_figure(max(5.5, 1.4 * len(groups) * max(1, len(methods)) / 2 + 2), 4.2)
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        pos, vals = [], []
        for i, g in enumerate(groups):
            if g in data[m]:
                a = _arr(data[m][g], f"{m}[{g}]")
                if a.size:
                    pos.append(i + (j - (len(methods) - 1) / 2) * width)
                    vals.append(a)
        if not vals:
            continue
        color = COLORS[j % len(COLORS)]
        ax.boxplot(vals, positions=pos, widths=width * 0.85, patch_artist=True,
                   showfliers=False, showmeans=True,
                   boxprops=dict(facecolor=color, alpha=0.35, edgecolor=color),
                   medianprops=dict(color=color), whiskerprops=dict(color=color),
                   capprops=dict(color=color),
                   meanprops=dict(marker="D", markerfacecolor=color, markeredgecolor="k",
                                  markersize=4))
        ax.plot([], [], color=color, linewidth=6, alpha=0.5, label=m)
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=1, zorder=0)
    ax.set_xticks(np.arange(len(groups)))
    names = {0: "worst"}
    ax.set_xticklabels([f"Q{int(g) + 1}" + (f"\n({names[g]})" if g in names else "")
                        if isinstance(g, (int, np.integer)) else str(g) for g in groups])
    ax.set_xlabel(group_label)
    ax.set_ylabel("gold improvement over base (per prompt)")
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False)
    return save_figure(fig, path)


def plot_reward_hacking(data: Mapping[str, Mapping[str, Sequence[float]]], path: str, *,
                        title: str = "", proxy_label: str = "proxy reward",
                        gold_label: str = "gold score",
                        peaks: Optional[Mapping[str, float]] = None) -> str:
    """Proxy reward and gold score against training step, two panels, one line per method.

    Args:
      data: ``{method: {"step": [T], "proxy": [T], "gold": [T]}}``.
      path: the PNG to write.
      peaks: optional ``{method: step}`` to mark (default: each method's gold argmax), e.g. the
        ``peak_step`` of :func:`lsc.eval.diagnostics.reward_hacking`.
    """
    if not data:
        raise ValueError("no series to plot")
    fig, (ax_p, ax_g) = new_figure(9.5, 3.8, ncols=2)
    for j, (m, s) in enumerate(data.items()):
        t = _arr(s["step"], f"{m}.step")
        p = _arr(s["proxy"], f"{m}.proxy", t.size)
        g = _arr(s["gold"], f"{m}.gold", t.size)
        color = COLORS[j % len(COLORS)]
        ax_p.plot(t, p, color=color, linewidth=1.6, label=m)
        ax_g.plot(t, g, color=color, linewidth=1.6, label=m)
        peak = (peaks or {}).get(m, t[int(np.argmax(g))] if t.size else None)
        if peak is not None:
            i = int(np.argmin(np.abs(t - peak)))
            ax_g.plot([t[i]], [g[i]], marker="*", markersize=11, color=color,
                      markeredgecolor="k")
            ax_p.axvline(t[i], color=color, linestyle=":", linewidth=1)
            ax_g.axvline(t[i], color=color, linestyle=":", linewidth=1)
    ax_p.set_ylabel(proxy_label)
    ax_g.set_ylabel(gold_label)
    for ax in (ax_p, ax_g):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax_p.set_title("proxy (optimised)")
    ax_g.set_title("gold (judge); star = gold peak")
    ax_p.legend(frameon=False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def win_rate_vs_kl_series(entries: Sequence[Mapping[str, Any]], metric: str, *,
                          procedure: str = "rlhf", methods: Optional[Sequence[str]] = None
                          ) -> Dict[str, Dict[str, list]]:
    """Input of :func:`plot_win_rate_vs_kl` from results entries (``lsc.eval.entries`` schema).

    Entries of ``procedure`` are grouped by :func:`lsc.eval.entries.label` (``method``, plus
    ``_<reference>`` unless the reference is ``none``), optionally only the labels in
    ``methods`` (in that order); each group's points are its entries' ``kl.mean`` / ``kl.se``
    and ``win_rate[metric]``.
    """
    out: Dict[str, Dict[str, list]] = {}
    for e in entries:
        if e.get("procedure") != procedure:
            continue
        label = entries_lib.label(e)
        if methods is not None and label not in methods:
            continue
        wr = e["win_rate"][metric]
        s = out.setdefault(label, {"kl": [], "kl_se": [], "value": [], "ci_low": [],
                                   "ci_high": []})
        s["kl"].append(float(e["kl"]["mean"]))
        se = e["kl"].get("se")
        s["kl_se"].append(0.0 if se is None or not np.isfinite(se) else float(se))
        for k in ("value", "ci_low", "ci_high"):
            s[k].append(float(wr[k]))
    if methods is not None:
        out = {m: out[m] for m in methods if m in out}
    return out


def and_or_bars_data(entries: Sequence[Mapping[str, Any]], *, procedure: str = "best_of_k",
                     k: Optional[int] = None) -> Dict[str, Dict[str, Mapping[str, float]]]:
    """Input of :func:`plot_and_or_bars` from results entries: the entries of ``procedure``
    (and ``k`` when given), labelled by :func:`lsc.eval.entries.label` (``<method>_<reference>``,
    ``<method>`` for no reference)."""
    out = {}
    for e in entries:
        if e.get("procedure") != procedure or (k is not None and e.get("k") != k):
            continue
        out[entries_lib.label(e)] = {"and": e["win_rate"]["and"], "or": e["win_rate"]["or"]}
    return out


def plot_trajectories(groups: Mapping[str, Sequence[Mapping[str, Sequence[float]]]], path: str, *,
                      metric: str = "win rate", title: str = "",
                      frontiers: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
                      chance_line: bool = True) -> str:
    """Training trajectories against KL: one colour per method, one thin line per seed (in step
    order, so a KL that falls back shows), optionally each method's exact frontier (dashed).

    Args:
      groups: ``{method: [{"kl": [T], "value": [T]}, ...]}``, one dict per seed.
      path: the PNG to write.
      metric: y-axis label; title: figure title.
      frontiers: ``{label: {"kl": [G], "value": [G]}}`` drawn dashed, in the colour of the method
        of the same position in ``groups``.
      chance_line: draw the 0.5 line.
    """
    if not groups:
        raise ValueError("no trajectories to plot")
    fig, (ax,) = new_figure(5.8, 4.3)
    for j, (label, runs) in enumerate(groups.items()):
        color = COLORS[j % len(COLORS)]
        for i, run in enumerate(runs):
            kl = _arr(run["kl"], f"{label}[{i}].kl")
            v = _arr(run["value"], f"{label}[{i}].value", kl.size)
            ax.plot(kl, v, color=color, marker=_MARKERS[j % len(_MARKERS)], markersize=3,
                    linewidth=1.0, alpha=0.8, label=f"{label} ({len(runs)} seeds)" if i == 0
                    else None)
    for j, (label, front) in enumerate((frontiers or {}).items()):
        kl = _arr(front["kl"], f"{label}.kl")
        v = _arr(front["value"], f"{label}.value", kl.size)
        ok = np.isfinite(kl) & np.isfinite(v)
        ax.plot(kl[ok], v[ok], color=COLORS[j % len(COLORS)], linestyle="--", linewidth=1.8,
                label=label)
    _finish_kl_axes(ax, metric, title, chance_line,
                    r"KL($\pi \,\|\, \pi_0$) (nats, $k_1$ on the evaluation prompts)",
                    legend_size=8)
    return save_figure(fig, path)
