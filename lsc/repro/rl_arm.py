"""The RL arm: PPO trajectories compared at matched KL, paired by RL seed, deciding the claims of
:data:`lsc.repro.claims.RL_ARM_CLAIMS` (:func:`evaluate_rl_claims`).

Declared before the runs they judge (``configs/repro/synthetic_hh.py``, section ``rl_arm``):

* Each method (``rlhf.runs``) runs once per RL seed (``rl.seed``; common random numbers: for a
  seed, every method sees the same prompt order and sampling keys). Its snapshots (every
  ``rl.snapshot_every`` steps, and ``pi0`` at step 0) are judged on the evaluation prompts against
  the exact arm's ``M`` base opponents (:func:`lsc.repro.evaluation.trajectory`).
* **Primary statistic** of a comparison ``A`` vs ``B``: per seed and prompt, ``A - B`` at
  matched KL, read on each trajectory at the points of ``rl_arm.kl_grid`` by linear
  interpolation at the first crossing, averaged over the grid points that every trajectory of
  both methods reaches (:func:`lsc.eval.trajectory.paired_differences`); the mean over prompts.
* **Interval and rule** (:data:`lsc.repro.claims.RL_RULE`): the exact arm's
  (:mod:`lsc.eval.decision`) with the RL seeds as the replicates: the interval across seeds,
  Holm-adjusted over the RL claims, and its outcome against ``exact.delta``; each seed's
  percentile bootstrap over prompts (stratified by topic x detail) and the previous rule's
  verdict are reported beside it.

Kinds of comparison: ``matched`` (a win-rate metric), ``underfitting`` (the helpfulness win rate
on the prompts of the lowest quartile of base-policy gold helpfulness, :func:`low_quartile`),
``hacking`` (the drop of the helpfulness win rate after its peak along KL, ``B``'s drop minus
``A``'s, measured at the largest grid point every trajectory reaches: positive when ``A`` loses
less; the peak is read on the grid per trajectory).

Not decided, reported: PPO against the exact optimum of the same utility
(:func:`ppo_vs_exact`): the exact arm's value at each point of ``exact.kl_grid`` minus the
trajectory's value there, per seed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc.eval import decision
from lsc.eval import trajectory as traj_lib
from lsc.repro import evaluation, exact_arm
from lsc.repro.claims import MATCHED, RL_ARM_CLAIMS, RL_RULE, UNDERFITTING, RLClaim
from lsc.repro.subconfigs import PROPERTIES

# Each RLHF method's utility in the exact arm (PPO against the exact optimum).
EXACT_UTILITY = {"helpful_raw": "raw", "helpful_lsc": "lsc_p85", "hh_raw_sum": "raw_sum",
                 "hh_lsc_sum": "lsc_sum"}


def load(path: str) -> Dict[str, Dict[int, Dict[str, np.ndarray]]]:
    """``trajectories.npz`` (``<name>/seed_<s>[/kl_<gamma>]/<field>``,
    :func:`lsc.repro.evaluation.run_key`) as ``{run: {seed: {field}}}`` with ``run``
    ``<name>[/kl_<gamma>]``."""
    out: Dict[str, Dict[int, Dict[str, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as f:
        for key in f.files:
            run_key, field = key.rsplit("/", 1)
            run, seed = evaluation.split_run_key(run_key)
            out.setdefault(run, {}).setdefault(seed, {})[field] = f[key]
    return out


def low_quartile(base: Mapping[str, Any]) -> np.ndarray:
    """``bool[P]``: the evaluation prompts in the lowest quartile of the base policy's gold
    helpfulness (mean over the reference samples, independent of the judging samples); the
    prompts of the ``underfitting`` comparisons. ``base``:
    :func:`lsc.repro.evaluation.load_base_samples` output."""
    h = PROPERTIES.index("helpful")
    strata = np.asarray(base["reference"]["gold"])[:, :, h].mean(axis=1)
    return strata <= np.quantile(strata, 0.25)


def _column(metric: str) -> int:
    return exact_arm.GOLD_JUDGED.index(metric)


def _pair(trajs, claim: RLClaim) -> Optional[Tuple[List[int], list, list]]:
    """``(seeds, A's runs, B's runs)`` over the seeds both methods ran; None when one is
    missing."""
    a, b = trajs.get(claim.a), trajs.get(claim.b)
    if not a or not b:
        return None
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def _statistic(claim: RLClaim, runs_a, runs_b, grid: Sequence[float], low_quartile: np.ndarray
               ) -> Dict[str, Any]:
    """``{"diffs": [S, P'], "prompts": bool[P] (the prompts used), ...}`` of one claim."""
    c = _column(claim.metric)
    kl_a = [r["kl_k1"] for r in runs_a]
    kl_b = [r["kl_k1"] for r in runs_b]
    va = [r["metrics"][..., c] for r in runs_a]
    vb = [r["metrics"][..., c] for r in runs_b]
    p = va[0].shape[1]
    if claim.kind in (MATCHED, UNDERFITTING):
        out = traj_lib.paired_differences(kl_a, va, kl_b, vb, grid)
        prompts = low_quartile if claim.kind == UNDERFITTING else np.ones(p, bool)
        return {"diffs": out["diffs"][:, prompts] if out["diffs"].shape[1] else out["diffs"],
                "prompts": prompts, "used": out["used"], "curves_a": out["curves_a"],
                "curves_b": out["curves_b"]}
    used = traj_lib.reached(kl_a + kl_b, grid)
    if not used.any():
        return {"diffs": np.zeros((len(runs_a), 0)), "prompts": np.ones(p, bool), "used": used}
    end = float(np.asarray(grid)[used].max())
    drops_a = [traj_lib.gold_drop(k, v, grid, end) for k, v in zip(kl_a, va)]
    drops_b = [traj_lib.gold_drop(k, v, grid, end) for k, v in zip(kl_b, vb)]
    diffs = np.stack([db["per_prompt"] - da["per_prompt"] for da, db in zip(drops_a, drops_b)])
    strip = lambda d: {k: v for k, v in d.items() if k != "per_prompt"}  # noqa: E731
    return {"diffs": diffs, "prompts": np.ones(p, bool), "used": used, "end_kl": end,
            "drops_a": [strip(d) for d in drops_a], "drops_b": [strip(d) for d in drops_b]}


def _clean(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64).ravel()]


def evaluate_rl_claims(trajs, *, kl_grid: Sequence[float], strata: np.ndarray,
                       low_quartile: np.ndarray, delta: float, confidence: float = 0.95,
                       num_resamples: int = 2000, seed: int = 0,
                       claims: Sequence[RLClaim] = RL_ARM_CLAIMS) -> List[Dict[str, Any]]:
    """Every RL claim with per-seed intervals, the interval across seeds (unadjusted and
    Holm-adjusted over ``claims``), its outcome and headline verdict (plain dicts, as written to
    ``results.json``).

    Args:
      trajs: :func:`load` output.
      kl_grid: ``rl_arm.kl_grid``.
      strata: ``int[P]`` prompt classes of the evaluation prompts (bootstrap strata).
      low_quartile: ``bool[P]`` the prompts of the lowest quartile of base gold helpfulness.
      delta, confidence, num_resamples, seed: the decision rule's and bootstrap's settings.
    """
    grid = [float(x) for x in kl_grid]
    out = []
    for claim in claims:
        row: Dict[str, Any] = {"key": claim.key, "source": claim.source, "text": claim.text,
                               "a": claim.a, "b": claim.b, "kind": claim.kind,
                               "metric": claim.metric, "rule": RL_RULE, "delta": float(delta),
                               "kl_grid": grid}
        pair = _pair(trajs, claim)
        if pair is None:
            row.update(outcome=decision.INCONCLUSIVE, reason="a method did not run", seeds=[])
            out.append(row)
            continue
        seeds, runs_a, runs_b = pair
        st = _statistic(claim, runs_a, runs_b, grid, np.asarray(low_quartile, bool))
        row["seeds"] = seeds
        row["grid_used"] = [g for g, u in zip(grid, st["used"]) if u]
        for k in ("end_kl", "drops_a", "drops_b"):
            if k in st:
                row[k] = st[k]
        if "curves_a" in st:
            row["curves_a"] = [_clean(c) for c in st["curves_a"]]
            row["curves_b"] = [_clean(c) for c in st["curves_b"]]
        if st["diffs"].shape[1] == 0:
            row.update(outcome=decision.INCONCLUSIVE,
                       reason="no KL grid point is reached by every trajectory", replicates=[])
        else:
            row.update(decision.compare(
                st["diffs"], np.asarray(strata)[st["prompts"]], delta=delta,
                num_resamples=num_resamples, confidence=confidence, seed=seed),
                num_prompts=int(st["prompts"].sum()))
        out.append(row)
    decision.adjust_family([r for r in out if "across" in r], delta, confidence)
    for row in out:
        row["verdict"], row["small_effect"] = decision.headline(row["outcome"])
        if "holm" in row:
            row["reason"] = (f"{decision.holm_text(row)} over {len(row['seeds'])} seeds: "
                             f"{row['outcome']}")
            row["previous_rule_verdict"] = row["previous_rule"]["verdict"]
    return out


def ppo_vs_exact(trajs, exact_arrays: Mapping[str, np.ndarray], *, source: str = "r0",
                 metrics: Mapping[str, str] = None) -> Dict[str, Dict[str, Any]]:
    """Each method's PPO trajectories against the exact optimum of its utility
    (:data:`EXACT_UTILITY`) on the proxy ``source``'s scores, at the exact arm's KL grid.

    Returns ``{method: {"utility", "metric", "kl_grid": [G], "exact": [G], "ppo": [S][G],
    "gap": [S][G] (exact - PPO, None where the trajectory does not reach), "mean_gap": [S] (over
    the points reached), "seeds"}}``.
    """
    metrics = metrics or {"helpful_raw": "helpful", "helpful_lsc": "helpful",
                          "hh_raw_sum": "and", "hh_lsc_sum": "and"}
    grid = [float(x) for x in exact_arrays["kl_grid"]]
    out = {}
    for method, runs in trajs.items():
        utility = EXACT_UTILITY.get(method)
        key = f"optimum/{source}/{utility}"
        if utility is None or key not in exact_arrays:
            continue
        metric = metrics[method]
        c = _column(metric)
        exact = exact_arrays[key][..., c].mean(axis=1)  # [G]
        seeds = sorted(runs)
        ppo = np.stack([traj_lib.at_kl(runs[s]["kl_k1"], runs[s]["metrics"][..., c],
                                       grid).mean(axis=1) for s in seeds])  # [S, G]
        gap = exact[None, :] - ppo
        out[method] = {"utility": utility, "metric": metric, "kl_grid": grid,
                       "exact": _clean(exact), "ppo": [_clean(x) for x in ppo],
                       "gap": [_clean(x) for x in gap],
                       "mean_gap": [float(np.nanmean(x)) if np.isfinite(x).any() else None
                                    for x in gap],
                       "seeds": seeds}
    return out


def render(claims: Sequence[Mapping[str, Any]], vs_exact: Mapping[str, Any],
           shortcuts: Mapping[str, Any], header: bool = True) -> List[str]:
    """Markdown lines of the RL arm's section of ``report.md``; ``header=False`` leaves out the
    section's title and rule (for a report that states its own)."""
    out = (["## RL arm (decided: PPO trajectories at matched KL, paired by RL seed)", "",
            f"**Rule**: {RL_RULE}.", ""] if header else [])
    out += ["| claim | comparison | grid used (KL) | per seed: A - B [95% CI] | across seeds "
            "[unadjusted; Holm] | outcome |", "|---|---|---|---|---|---|"]
    for c in claims:
        reps = c.get("replicates") or []
        per = "; ".join(f"s{s}: {r['value']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                        for s, r in zip(c.get("seeds", []), reps)) or "-"
        across, holm = c.get("across"), c.get("holm")
        pooled_text = (f"{across['value']:+.4f} [{across['ci_low']:+.4f}, "
                       f"{across['ci_high']:+.4f}; {holm['ci_low']:+.4f}, {holm['ci_high']:+.4f}]"
                       if across else "-")
        grid = ", ".join(f"{g:g}" for g in c.get("grid_used", [])) or "none"
        what = f"{c['a']} vs {c['b']}, {c['kind']} ({c['metric']})"
        out.append(f"| {c['key']} | {what} | {grid} | {per} | {pooled_text} | "
                   f"**{c['outcome']}** |")
    out.append("")
    for c in claims:
        out.append(f"- **{c['key']}** ({c['source']}): {c['text']} Verdict: **{c['verdict']}** "
                   f"({c.get('reason', '')}).")
        if c.get("drops_a"):
            da = ", ".join(f"{d['drop']:+.3f} (peak at KL {d['peak_kl']:g})" for d in c["drops_a"])
            db = ", ".join(f"{d['drop']:+.3f} (peak at KL {d['peak_kl']:g})" for d in c["drops_b"])
            out.append(f"  Win-rate drop after the peak, up to KL {c['end_kl']:g}, per seed: "
                       f"{c['a']} {da}; {c['b']} {db}.")
    out.append("")
    if vs_exact:
        out += ["### PPO against the exact optimum of the same utility (shown, not decided)", "",
                "| method | exact utility | metric | KL grid | exact | PPO per seed | mean gap "
                "(exact - PPO) per seed |", "|---|---|---|---|---|---|---|"]
        for method, v in vs_exact.items():
            fmt = lambda xs: ", ".join("-" if x is None else f"{x:.3f}" for x in xs)  # noqa
            out.append(f"| {method} | {v['utility']} | {v['metric']} | "
                       f"{', '.join(f'{g:g}' for g in v['kl_grid'])} | {fmt(v['exact'])} | "
                       + " / ".join(fmt(p) for p in v["ppo"]) + " | "
                       + fmt(v["mean_gap"]) + " |")
        out.append("")
    if shortcuts:
        out += ["### Shortcuts along training (rates of the final policies, mean over seeds)", "",
                "| method | KL | filler | off-topic fact | refusal | mean length (words) |",
                "|---|---|---|---|---|---|"]
        for method, v in shortcuts.items():
            out.append(f"| {method} | {v['kl']:.2f} | {v['filler_rate']:.3f} | "
                       f"{v['offtopic_rate']:.3f} | {v['refusal_rate']:.3f} | "
                       f"{v['mean_length']:.1f} |")
        out.append("")
    return out


def final_shortcuts(trajs) -> Dict[str, Dict[str, float]]:
    """Per method, the mean over seeds of the final snapshot's KL and shortcut rates (and
    ``pi0``'s as ``base``)."""
    fields = ("kl_k1", "filler_rate", "offtopic_rate", "refusal_rate", "mean_length")

    def row(point) -> Dict[str, float]:  # point(field) -> float; KL under the name "kl"
        return {("kl" if f == "kl_k1" else f): point(f) for f in fields}

    if not trajs:
        return {}
    first = next(iter(next(iter(trajs.values())).values()))  # pi0 is step 0 of every run
    out = {"base": row(lambda f: float(first[f][0]))}
    for method, runs in trajs.items():
        out[method] = row(lambda f, runs=runs: float(np.mean([r[f][-1] for r in runs.values()])))
    return out
