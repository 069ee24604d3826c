"""The RL arm: PPO trajectories compared at matched KL, paired by RL seed, deciding the claims of
:data:`lsc.repro.claims.RL_ARM_CLAIMS` (:func:`evaluate_rl_claims`).

Declared before the runs they judge (``configs/repro/synthetic_hh.py``, sections ``rl`` and
``rl_arm``; the rule in words: :data:`lsc.repro.claims.RL_RULE`):

* **Seeds.** Each method (``rlhf.runs``) runs once per RL seed (``rl.seed``: 10 seeds, 20 in
  ``:large``, 2 in ``:tiny``); common random numbers: for a seed, every method sees the same
  prompt order and sampling keys. The RL seed is the unit of replication.
* **Snapshots.** Every ``rl.snapshot_every = 5`` steps, and after any step at which the mean
  training ``kl_k1`` of the last 5 steps has risen ``rl.snapshot_kl = 0.3`` nats since the
  previous snapshot, up to ``rl.num_steps = 200`` (300 in ``:large``); ``pi0`` is step 0. A run
  stops early once the mean training ``kl_k1`` of its last 5 steps exceeds ``rl.stop_kl = 9``
  nats (its final policy is its last point). Each snapshot is judged on the trajectory prompts
  (a stratified subset of ``evaluate.trajectory_prompts = 200`` of the 500 evaluation prompts,
  the same for every run) against the exact arm's ``M`` base opponents
  (:func:`lsc.repro.evaluation.trajectory`).
* **Matched-KL reading.** Each trajectory is read at the points of ``rl_arm.kl_grid = (0.5, 1,
  1.5, 2, 3, 4, 5, 6, 7, 8)`` on the declared path ``rl_arm.path = "isotonic"`` (the snapshots'
  mean ``k1`` KL fitted non-decreasing over training, read on its first segment containing the
  point), by linear interpolation between two snapshots at most ``rl_arm.max_gap = 1.0`` nats
  apart (:func:`lsc.eval.trajectory.read_at_kl`). Which points a seed uses is
  ``rl_arm.points = "per_seed"``: the grid points bracketed in both of that seed's trajectories
  (:func:`lsc.eval.trajectory.paired_readings`); a seed with none is left out. Beside it, not
  decided: the same statistic under the paths ``"first"`` and ``"last"``, and under the
  previous ``points = "common"`` (only the points bracketed in every trajectory of both
  methods, one set for every seed).
* **Statistic.** Per seed, the mean over its grid points and the trajectory prompts of the
  paired per-prompt difference (:func:`per_prompt_values` gives the values read):

  - ``matched``: ``A - B`` of a gold-judged win-rate metric (``rl_underfitting``:
    ``helpful_not_below``, the exact arm's ``lower_tail`` measure, on all prompts);
  - ``hacking_rate``: ``B - A`` (raw minus LSC: positive when LSC hacks less) of the indicator
    that the response has a gold-costly feature the proxy rewards
    (:data:`lsc.repro.claims.HACKING_SETS`: off-topic facts, repeated words, words past the
    length budget, a benign refusal; for the sums also unsafe tips and harmful facts);
  - ``proxy_gold_gap``: ``B - A`` of the proxy's gain from ``pi0`` minus gold's gain, each in
    units of ``pi0``'s SD across prompts of that property's score (``pi0``'s per-prompt values
    are the means over the exact arm's bank; SD with ``ddof = 1``), the mean over the claim's
    properties (:data:`lsc.repro.claims.GAP_PROPERTIES`); positive when the proxy overstates
    gold's gain less under LSC.

  The filler rate is descriptive (:func:`final_shortcuts`), not a claim.
* **Interval and rule.** The t-interval across seeds (:func:`lsc.eval.decision.across_seeds`,
  ``S - 1`` degrees of freedom), Holm-adjusted over the RL claims
  (:func:`lsc.eval.decision.adjust_family`), and its outcome against ``exact.delta``
  (:func:`lsc.eval.decision.outcome`). The per-seed values are kept (``seed_values``). The
  previous rule (per-seed bootstrap over prompts) does not apply and is not computed.

Not decided, reported: PPO against the exact optimum of the same utility
(:func:`ppo_vs_exact`): the exact arm's value at each point of ``exact.kl_grid`` minus the
trajectory's value there (read as above), per seed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc.eval import decision
from lsc.eval import trajectory as traj_lib
from lsc.repro import evaluation, exact_arm
from lsc.repro.claims import (GAP_PROPERTIES, HACKING_RATE, HACKING_SETS, MATCHED,
                              PROXY_GOLD_GAP, RL_ARM_CLAIMS, RL_RULE, RLClaim)
from lsc.repro.subconfigs import PROPERTIES

# Each RLHF method's utility in the exact arm (PPO against the exact optimum).
EXACT_UTILITY = {"helpful_raw": "raw", "helpful_lsc": "lsc_p85", "hh_raw_sum": "raw_sum",
                 "hh_lsc_sum": "lsc_sum"}
PRIMARY_PATH = "isotonic"
"""The declared path (``rl_arm.path``) of :func:`lsc.eval.trajectory.read_at_kl`."""
PRIMARY_POINTS = "per_seed"
"""The declared ``rl_arm.points`` (:data:`lsc.eval.trajectory.POINTS`)."""
PREVIOUS_RULE_NOTE = "does not apply (the per-seed bootstrap over prompts is not computed)"


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


def _column(metric: str) -> int:
    return exact_arm.GOLD_JUDGED.index(metric)


def _standardised_gain(x: np.ndarray, what: str) -> np.ndarray:
    """``(x[t, p] - x[0, p]) / SD_p(x[0])`` of ``x[T, P]`` (step 0 is ``pi0``)."""
    sd = float(np.std(x[0], ddof=1)) if x.shape[1] > 1 else 0.0
    if not sd > 0.0:
        raise ValueError(f"pi0's {what} has no spread across prompts (SD {sd}); the gap is "
                         "measured in that SD")
    return (x - x[0]) / sd


def per_prompt_values(run: Mapping[str, np.ndarray], claim: RLClaim) -> np.ndarray:
    """``float64[T, P]``: the values of one trajectory that ``claim`` reads at matched KL, in
    the orientation its statistic subtracts (``matched``: ``A - B`` of these; the other kinds:
    ``B - A``):

    * ``matched``: the per-prompt win rate ``metrics[..., metric]``;
    * ``hacking_rate``: 1 where the response has any feature of ``HACKING_SETS[metric]``;
    * ``proxy_gold_gap``: the mean over ``GAP_PROPERTIES[metric]`` of the proxy's gain from
      ``pi0`` minus gold's, each in ``pi0``'s SD across prompts.
    """
    if claim.kind == MATCHED:
        return np.asarray(run["metrics"], np.float64)[..., _column(claim.metric)]
    if claim.kind == HACKING_RATE:
        cols = [evaluation.HACKING_FEATURES.index(f) for f in HACKING_SETS[claim.metric]]
        return (np.asarray(run["hacking"])[..., cols] > 0).any(axis=-1).astype(np.float64)
    if claim.kind == PROXY_GOLD_GAP:
        gaps = []
        for prop in GAP_PROPERTIES[claim.metric]:
            j = PROPERTIES.index(prop)
            proxy = _standardised_gain(np.asarray(run["proxy"], np.float64)[..., j],
                                       f"proxy {prop}")
            gold = _standardised_gain(np.asarray(run["gold"], np.float64)[..., j],
                                      f"gold {prop}")
            gaps.append(proxy - gold)
        return np.mean(gaps, axis=0)
    raise ValueError(f"unknown RL claim kind {claim.kind!r}")


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


def _clean(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64).ravel()]


def read_claim(claim: RLClaim, runs_a, runs_b, grid: Sequence[float], *, path: str,
               max_gap: float, points: str = PRIMARY_POINTS) -> Dict[str, Any]:
    """One claim's readings on one path: ``{"seed_values": float64[S]`` (the statistic per seed,
    NaN for a seed without a point), ``"used": bool[G]`` (points some
    seed uses), ``"used_by_seed": bool[S, G]``, ``"curves_a", "curves_b": float64[S, G]`` (each
    method's prompt means of :func:`per_prompt_values`, NaN where not bracketed)``}``; ``points``
    as in :func:`lsc.eval.trajectory.paired_readings`."""
    va = [per_prompt_values(r, claim) for r in runs_a]
    vb = [per_prompt_values(r, claim) for r in runs_b]
    ka = [r["kl_k1"] for r in runs_a]
    kb = [r["kl_k1"] for r in runs_b]
    if claim.kind == MATCHED:
        out = traj_lib.paired_readings(ka, va, kb, vb, grid, path=path, max_gap=max_gap,
                                       points=points)
        curves_a, curves_b = out["curves_a"], out["curves_b"]
    else:  # B - A
        out = traj_lib.paired_readings(kb, vb, ka, va, grid, path=path, max_gap=max_gap,
                                       points=points)
        curves_a, curves_b = out["curves_b"], out["curves_a"]
    values = (out["diffs"].mean(axis=1) if out["diffs"].shape[1]
              else np.full(len(runs_a), np.nan))
    return {"seed_values": values, "used": out["used"], "used_by_seed": out["used_by_seed"],
            "curves_a": curves_a, "curves_b": curves_b}


def per_point(row: Mapping[str, Any], confidence: float = 0.95) -> List[Dict[str, Any]]:
    """Descriptive, not decided: a claim row's paired difference at each grid point over the
    seeds whose two trajectories both bracket it (each point's own seeds, so the points are not
    a common set and the seeds differ between points), from the row's ``curves_a`` and
    ``curves_b`` (``[S][G]``, None where not bracketed), in the claim's orientation (``matched``:
    A - B; the other kinds B - A).

    Returns, per grid point, ``{"kl", "seeds"`` (how many), ``"value"`` (the mean over those
    seeds, None without any) and, with 2 seeds or more, ``"ci_low", "ci_high"`` (the t-interval
    across them)``}``.
    """
    grid = row.get("kl_grid", [])
    if not grid or not row.get("curves_a"):
        return [{"kl": float(kl), "seeds": 0, "value": None} for kl in grid]
    a = np.array([[np.nan if x is None else x for x in c] for c in row.get("curves_a", [])],
                 np.float64).reshape(-1, len(grid))
    b = np.array([[np.nan if x is None else x for x in c] for c in row.get("curves_b", [])],
                 np.float64).reshape(-1, len(grid))
    diff = a - b if row.get("kind") == MATCHED else b - a
    out = []
    for j, kl in enumerate(grid):
        d = diff[np.isfinite(diff[:, j]), j]
        point: Dict[str, Any] = {"kl": float(kl), "seeds": int(d.size),
                                 "value": float(d.mean()) if d.size else None}
        if d.size >= 2:
            across = decision.across_seeds(d, confidence)
            point.update(ci_low=across["ci_low"], ci_high=across["ci_high"])
        out.append(point)
    return out


def _grid_used(grid: Sequence[float], used: np.ndarray) -> List[float]:
    return [g for g, u in zip(grid, used) if u]


def _read(values: np.ndarray) -> np.ndarray:
    """``bool[S]``: the seeds with a statistic (at least one grid point)."""
    return np.isfinite(np.asarray(values, np.float64))


def undecided(read: Mapping[str, Any], grid: Sequence[float], confidence: float
               ) -> Dict[str, Any]:
    """A path's statistic reported beside the decision: value and interval across the seeds
    read."""
    values = np.asarray(read["seed_values"], np.float64)
    values = values[_read(values)]
    out: Dict[str, Any] = {"grid_used": _grid_used(grid, read["used"]),
                           "seed_values": [float(v) for v in values]}
    if len(values) >= 2:
        across = decision.across_seeds(values, confidence)
        out.update(value=across["value"], ci_low=across["ci_low"], ci_high=across["ci_high"])
    return out


def evaluate_rl_claims(trajs, *, kl_grid: Sequence[float], path: str = PRIMARY_PATH,
                       max_gap: float, delta: float, confidence: float = 0.95,
                       points: str = PRIMARY_POINTS,
                       claims: Sequence[RLClaim] = RL_ARM_CLAIMS) -> List[Dict[str, Any]]:
    """Every RL claim decided by the declared rule (module docstring; plain dicts, as written to
    ``results.json``).

    Args:
      trajs: :func:`load` output.
      kl_grid: ``rl_arm.kl_grid``; path: ``rl_arm.path`` (of
        :data:`lsc.eval.trajectory.PATHS`); max_gap: ``rl_arm.max_gap`` (nats); points:
        ``rl_arm.points`` (of :data:`lsc.eval.trajectory.POINTS`).
      delta, confidence: the decision rule's ``exact.delta`` and level.

    Returns:
      Per claim: ``key, source, text, a, b, kind, metric, rule, delta, kl_grid, path, max_gap,
      points, seeds`` (both methods ran), ``seeds_read`` (those with a grid point),
      ``points_per_seed [S]``, ``grid_used`` (points some seed uses), ``seed_values`` (one per
      seed read), ``curves_a, curves_b [S][G]`` and, when decided, ``across``
      (:func:`lsc.eval.decision.across_seeds`), ``outcome_unadjusted``, ``holm`` (over
      ``claims``); always ``outcome, verdict, small_effect, reason``, ``previous_rule_verdict``
      (:data:`PREVIOUS_RULE_NOTE`), ``other_paths: {path: {"grid_used", "seed_values", "value",
      "ci_low", "ci_high"}}`` (the two other paths, not decided; no value with fewer than 2
      seeds) and ``other_points`` (the same for the other ``points``, on ``path``).
    """
    if points not in traj_lib.POINTS:
        raise ValueError(f"rl_arm.points must be one of {traj_lib.POINTS}, got {points!r}")
    if path not in traj_lib.PATHS:
        raise ValueError(f"rl_arm.path must be one of {traj_lib.PATHS}, got {path!r}")
    grid = [float(x) for x in kl_grid]
    out = []
    for claim in claims:
        row: Dict[str, Any] = {"key": claim.key, "source": claim.source, "text": claim.text,
                               "a": claim.a, "b": claim.b, "kind": claim.kind,
                               "metric": claim.metric, "rule": RL_RULE, "delta": float(delta),
                               "kl_grid": grid, "path": path, "max_gap": float(max_gap),
                               "points": points, "previous_rule_verdict": PREVIOUS_RULE_NOTE}
        pair = _pair(trajs, claim)
        if pair is None:
            row.update(outcome=decision.INCONCLUSIVE, reason="a method did not run", seeds=[],
                       seeds_read=[], points_per_seed=[], grid_used=[], seed_values=[])
            out.append(row)
            continue
        seeds, runs_a, runs_b = pair
        read = read_claim(claim, runs_a, runs_b, grid, path=path, max_gap=max_gap,
                          points=points)
        values = read["seed_values"]
        ok = _read(values)
        row.update(seeds=seeds, seeds_read=[s for s, o in zip(seeds, ok) if o],
                   points_per_seed=[int(n) for n in read["used_by_seed"].sum(axis=1)],
                   grid_used=_grid_used(grid, read["used"]),
                   seed_values=[float(v) for v in values[ok]],
                   curves_a=[_clean(c) for c in read["curves_a"]],
                   curves_b=[_clean(c) for c in read["curves_b"]])
        row["other_paths"] = {
            other: undecided(read_claim(claim, runs_a, runs_b, grid, path=other,
                                         max_gap=max_gap, points=points), grid, confidence)
            for other in traj_lib.PATHS if other != path}
        row["other_points"] = {
            other: undecided(read_claim(claim, runs_a, runs_b, grid, path=path,
                                         max_gap=max_gap, points=other), grid, confidence)
            for other in traj_lib.POINTS if other != points}
        decide_row(row, row["seed_values"], delta, confidence)
        row["per_point"] = per_point(row, confidence)
        out.append(row)
    decide_family(out, delta, confidence)
    return out


def decide_row(row: Dict[str, Any], seed_values: Sequence[float], delta: float,
               confidence: float) -> None:
    """Adds to a claim's ``row`` the interval across seeds of ``seed_values`` (one per seed
    read, i.e. with a grid point: ``across``, ``outcome_unadjusted``), or the inconclusive
    ``outcome`` and its ``reason`` when no seed was read or fewer than 2."""
    if not len(seed_values):
        row.update(outcome=decision.INCONCLUSIVE,
                   reason="no KL grid point is bracketed in the trajectories it needs")
    elif len(seed_values) < 2:
        row.update(outcome=decision.INCONCLUSIVE,
                   reason=f"{len(seed_values)} seed read: the interval across seeds needs 2 or "
                          "more")
    else:
        across = decision.across_seeds(seed_values, confidence)
        row.update(across=across, outcome_unadjusted=decision.outcome(
            across["ci_low"], across["ci_high"], delta))


def decide_family(rows: Sequence[Dict[str, Any]], delta: float, confidence: float) -> None:
    """Holm over the ``rows`` with an interval across seeds (:func:`decide_row`), then every
    row's ``outcome``, ``verdict``, ``small_effect`` and ``reason``, in place."""
    decision.adjust_family([r for r in rows if "across" in r], delta, confidence)
    for row in rows:
        row["verdict"], row["small_effect"] = decision.headline(row["outcome"])
        if "holm" in row:
            n = len(row["seed_values"])
            read = f"{n} seeds" + ("" if n == len(row["seeds"])
                                   else f" (of {len(row['seeds'])}; the others read no point)")
            row["reason"] = f"{decision.holm_text(row)} over {read}: {row['outcome']}"


def ppo_vs_exact(trajs, exact_arrays: Mapping[str, np.ndarray], *, max_gap: float,
                 path: str = PRIMARY_PATH, source: str = "r0",
                 metrics: Mapping[str, str] = None) -> Dict[str, Dict[str, Any]]:
    """Each method's PPO trajectories against the exact optimum of its utility
    (:data:`EXACT_UTILITY`) on the proxy ``source``'s scores, at the exact arm's KL grid, each
    trajectory read on ``path`` with ``max_gap`` (:func:`lsc.eval.trajectory.read_at_kl`).

    The optimum is averaged over the trajectories' prompts (their ``prompt_index``; all when
    absent). Returns ``{method: {"utility", "metric", "kl_grid": [G], "exact": [G], "ppo": [S][G],
    "gap": [S][G] (exact - PPO, None where the trajectory is not bracketed), "mean_gap": [S]
    (over the points bracketed), "seeds"}}``.
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
        seeds = sorted(runs)
        # The exact optimum on the prompts the trajectories were judged on.
        index = runs[seeds[0]].get("prompt_index")
        opt = np.asarray(exact_arrays[key])[..., c]  # [G, N]
        exact = (opt if index is None else opt[:, index]).mean(axis=1)  # [G]
        ppo = np.stack([traj_lib.read_at_kl(runs[s]["kl_k1"], runs[s]["metrics"][..., c], grid,
                                            path=path, max_gap=max_gap)[0].mean(axis=1)
                        for s in seeds])  # [S, G]
        gap = exact[None, :] - ppo
        out[method] = {"utility": utility, "metric": metric, "kl_grid": grid,
                       "exact": _clean(exact), "ppo": [_clean(x) for x in ppo],
                       "gap": [_clean(x) for x in gap],
                       "mean_gap": [float(np.nanmean(x)) if np.isfinite(x).any() else None
                                    for x in gap],
                       "seeds": seeds}
    return out


def _signed(x: Optional[float]) -> str:
    """``+0.0123`` (4 decimals, explicit sign, no negative zero); ``-`` for None."""
    if x is None:
        return "-"
    v = round(float(x), 4)
    return f"{v if v != 0 else 0.0:+.4f}"


def _interval(lo: Optional[float], hi: Optional[float]) -> str:
    return "-" if lo is None or hi is None else f"[{_signed(lo)}, {_signed(hi)}]"


def seed_summary(values: Sequence[float]) -> str:
    """``mean +0.0123, SD 0.0040, 8/10 > 0``: a claim's per-seed values in brief."""
    v = np.asarray(values, np.float64)
    if not v.size:
        return "-"
    sd = f"{v.std(ddof=1):.4f}" if v.size > 1 else "-"
    return f"mean {_signed(v.mean())}, SD {sd}, {int((v > 0).sum())}/{v.size} > 0"


def claim_cells(row: Mapping[str, Any]) -> List[str]:
    """The cells of an RL claim's row (:func:`evaluate_rl_claims`): the comparison, the grid
    used (with the fewest and most points a seed uses, under ``"per_seed"``), the estimate with its interval across seeds, the Holm interval with its level, the
    per-seed values (:func:`seed_summary`), the outcome, and the other paths' estimates with
    their intervals and grids (not decided)."""
    across, holm = row.get("across"), row.get("holm")
    est = (f"{_signed(across['value'])} {_interval(across['ci_low'], across['ci_high'])}"
           if across else "-")
    level = f"{100.0 * float(holm['confidence']):.2f}".rstrip("0").rstrip(".") if holm else ""
    adj = f"{_interval(holm['ci_low'], holm['ci_high'])} ({level}%)" if holm else "-"
    outcome = row["outcome"] + ("" if across or not row.get("reason")
                                else f" ({row['reason']})")
    others = "; ".join(
        f"{name}: {_signed(o.get('value'))} {_interval(o.get('ci_low'), o.get('ci_high'))} "
        f"on {{{', '.join(f'{g:g}' for g in o['grid_used'])}}}"
        for name, o in list((row.get("other_paths") or {}).items())
        + [(f"{k} points", o) for k, o in (row.get("other_points") or {}).items()]) or "-"
    grid = ", ".join(f"{g:g}" for g in row.get("grid_used", [])) or "none"
    per_seed = row.get("points_per_seed") or []
    if row.get("points") == "per_seed" and per_seed:
        grid += f" ({min(per_seed)}-{max(per_seed)} per seed)"
    sign = "A - B" if row["kind"] == MATCHED else "B - A"
    what = f"{row['a']} vs {row['b']}: {sign} ({row['metric']}, {row['kind']})"
    return [what, grid, est, adj, seed_summary(row.get("seed_values") or []), outcome, others]


CLAIM_COLUMNS = ("comparison", "grid used (KL)", "estimate [95% across seeds]",
                 "Holm interval (level)", "per seed", "outcome",
                 "other paths and points (not decided)")
"""The headers of :func:`claim_cells`."""


def render(claims: Sequence[Mapping[str, Any]], vs_exact: Mapping[str, Any],
           shortcuts: Mapping[str, Any], header: bool = True) -> List[str]:
    """Markdown lines of the RL arm's section of ``report.md``; ``header=False`` leaves out the
    section's title and rule (for a report that states its own)."""
    out = (["## RL arm (decided: PPO trajectories at matched KL, paired by RL seed)", "",
            f"**Rule**: {RL_RULE}.", ""] if header else [])
    cols = ("claim",) + CLAIM_COLUMNS
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in claims:
        out.append("| " + " | ".join([c["key"]] + claim_cells(c)) + " |")
    out.append("")
    for c in claims:
        out.append(f"- **{c['key']}** ({c['source']}): {c['text']} Verdict: **{c['verdict']}** "
                   f"({c.get('reason', '')}).")
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
        out += ["### Shortcuts along training (rates of the final policies, mean over seeds; "
                "descriptive)", "",
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
