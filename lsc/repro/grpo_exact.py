"""GRPO's per-prompt std scaling as an exact analogue on the exact arm's sample banks.

GRPO divides each prompt's advantages by the standard deviation of the utility over that prompt's
group of samples. In the KL-regularised optimum this is a per-prompt temperature:

    pi*(y|x) ∝ pi0(y|x) exp(u(x, y) / (gamma * s(x))),   s(x) = std_{y in bank(x)} u(x, y)

(``ddof=1``; the mean that GRPO also subtracts does not matter: the optimum is invariant to a
per-prompt shift). Dr. GRPO, RLOO and PPO keep ``s(x) = 1``: the plain optimum of
:mod:`lsc.eval.exact`. On the bank, the scaled optimum is the plain optimum of the scaled utilities
``u / s`` (:func:`group_scaled`), with one ``gamma`` for all prompts solved so that the mean KL
over prompts hits the target: :func:`lsc.eval.exact.frontier`, as the exact arm does it
(:func:`lsc.repro.exact_arm.policies`). A prompt with ``s(x) = 0`` (every candidate has the
same utility: GRPO's advantages are all 0) stays at ``pi0``: uniform weights.

:func:`analogue` does this for the exact arm's decisive ``lsc_vs_raw`` comparison
(:data:`lsc.repro.claims.EXACT_CLAIMS`: ``lsc_p85`` against ``raw``, helpfulness only, on the
``helpful`` metric -- expected gold-helpfulness win against the bank's independent base
opponents, ties one half), per reward-model replicate, with and without the scaling. Its input is
the base samples (:func:`lsc.repro.evaluation.load_base_samples`), from which
:func:`lsc.repro.exact_arm.compute` builds ``exact.npz``: that file keeps only the policies'
per-prompt metrics, not the per-candidate rewards needed here. Everything is float64 numpy (the
utilities come from :func:`lsc.repro.exact_arm.utilities`, the same float32 values the exact arm
optimises).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from lsc.eval import exact
from lsc.repro import exact_arm
from lsc.repro.subconfigs import PROPERTIES, replicate_name

UTILITIES = ("raw", "lsc_p85")
"""``(B, A)`` of the exact arm's decisive ``lsc_vs_raw`` comparison: the difference is ``A - B``."""
METRIC = "helpful"
VARIANTS = ("plain", "scaled")


def group_std(u) -> np.ndarray:
    """``float64[n]``: the std (``ddof=1``) of each row of ``u`` ``float[n, K]`` (NaN when
    ``K < 2`` or the row is not finite)."""
    a = np.asarray(u, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"u must have shape [n, K], got {a.shape}")
    if a.shape[1] < 2:
        return np.full(a.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        return np.std(a, axis=1, ddof=1)


def group_scaled(u) -> np.ndarray:
    """GRPO's per-prompt scaling of utilities, ``u / s(x)``.

    Args:
      u: ``float[n, K]`` utilities of ``K`` samples for each of ``n`` prompts.

    Returns:
      ``float64[n, K]``: each row divided by its std over the ``K`` samples (``ddof=1``). A row
      whose std is 0 or not finite (constant row, a non-finite utility, ``K = 1``) is all zeros,
      so its optimum is uniform (the prompt stays at ``pi0``).
    """
    a = np.asarray(u, dtype=np.float64)
    s = group_std(a)
    ok = np.isfinite(s) & (s > 0)
    out = np.zeros_like(a)
    out[ok] = a[ok] / s[ok, None]
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> Dict[str, np.ndarray]:
    """Mean over prompts of ``a - b`` (``[G, P]`` each) and its standard error (``ddof=1``,
    prompts iid, not stratified), NaN where either side is unreachable."""
    d = a - b
    p = d.shape[1]
    with np.errstate(invalid="ignore"):
        se = d.std(axis=1, ddof=1) / np.sqrt(p) if p > 1 else np.full(d.shape[0], np.nan)
    return {"mean": d.mean(axis=1), "se": se}


def analogue(base: Mapping[str, Any], kl_grid: Sequence[float],
             replicates: Optional[int] = None, *, utilities: Sequence[str] = UTILITIES,
             metric: str = METRIC, include_gold: bool = False, per_prompt: bool = False
             ) -> Dict[str, Any]:
    """Plain and GRPO-scaled exact optima of ``utilities`` on the exact arm's banks.

    Args:
      base: :func:`lsc.repro.evaluation.load_base_samples` output (the ``bank``, ``opponents``,
        ``reference`` and ``fixed_response`` sets, each with ``rewards`` ``float[P, ., R * m]``,
        replicate-major, and ``gold`` ``float[P, ., m]``; optionally ``predictor``), as
        given to :func:`lsc.repro.exact_arm.compute`.
      kl_grid: target mean KLs (``G``); unreachable ones are NaN (on a bank of ``N`` the KL is at
        most ``log N``).
      replicates: ``R`` (default: the reward columns over ``m``).
      utilities: ``(B, A)`` names of :data:`lsc.repro.exact_arm.UTILITIES`; differences are
        ``A - B``.
      metric: a name of :data:`lsc.repro.exact_arm.GOLD_JUDGED`.
      include_gold: also the gold control (the utilities on gold scores and gold references).
      per_prompt: keep the per-prompt win rates ``[G, P]`` and differences.

    Returns:
      ``{"kl_grid": [G], "metric", "utilities": [B, A], "sources": [...], "base": float (the
      base policy's mean metric), "<source>": {"<utility>": {"plain"|"scaled": {"gamma": [G],
      "kl": [G], "win": [G] (mean over prompts)}, "zero_std_prompts": int}, "diff": {"plain"|
      "scaled": {"mean": [G], "se": [G]}}}}`` (plus ``"win_per_prompt"`` / ``"diff_per_prompt"``
      ``[G, P]`` when ``per_prompt``), and ``"mean_over_replicates": {"plain"|"scaled": [G]}``
      of the proxy replicates' mean differences.
    """
    b_name, a_name = utilities
    m = len(PROPERTIES)
    bank, opp, ref, fixed = (base[k] for k in ("bank", "opponents", "reference",
                                               "fixed_response"))
    if replicates is None:
        replicates = int(np.shape(bank["rewards"])[-1]) // m
    scores = exact_arm.metric_scores(bank["gold"], opp["gold"])
    win = scores[..., exact_arm.GOLD_JUDGED.index(metric)]  # [P, N]
    pred = base.get("predictor")
    scored = []
    for r in range(int(replicates)):
        cols = slice(r * m, (r + 1) * m)
        scored.append((replicate_name(r), np.asarray(bank["rewards"])[..., cols],
                       exact_arm.references(
                           np.asarray(ref["rewards"])[..., cols],
                           np.asarray(fixed["rewards"])[:, 0, cols],
                           None if pred is None else np.asarray(pred)[:, cols])))
    if include_gold:
        scored.append((exact_arm.GOLD, np.asarray(bank["gold"]), exact_arm.references(
            np.asarray(ref["gold"]), np.asarray(fixed["gold"])[:, 0])))

    grid = [float(k) for k in kl_grid]
    out: Dict[str, Any] = {"kl_grid": np.asarray(grid), "metric": metric,
                           "utilities": [b_name, a_name], "sources": [s for s, _, _ in scored],
                           "base": float(win.mean())}
    for source, rewards, refs in scored:
        entry: Dict[str, Any] = {}
        fronts = {}
        for name in (b_name, a_name):
            u = exact_arm.utilities(exact_arm.UTILITY_BY_NAME[name], rewards, refs)
            s = group_std(u)
            per_u: Dict[str, Any] = {
                "zero_std_prompts": int(np.sum(~(np.isfinite(s) & (s > 0))))}
            for variant, uu in (("plain", u), ("scaled", group_scaled(u))):
                f = exact.frontier(uu, win[..., None], grid)
                per_prompt_win = f["win"][..., 0]  # [G, P]
                fronts[name, variant] = per_prompt_win
                per_u[variant] = {"gamma": f["gamma"], "kl": f["kl"],
                                  "win": per_prompt_win.mean(axis=1)}
                if per_prompt:
                    per_u[variant]["win_per_prompt"] = per_prompt_win
            entry[name] = per_u
        entry["diff"] = {}
        for variant in VARIANTS:
            entry["diff"][variant] = _paired(fronts[a_name, variant], fronts[b_name, variant])
            if per_prompt:
                entry["diff"][variant]["diff_per_prompt"] = (fronts[a_name, variant]
                                                             - fronts[b_name, variant])
        out[source] = entry
    reps = [s for s in out["sources"] if s != exact_arm.GOLD]
    out["mean_over_replicates"] = {
        v: np.mean([out[s]["diff"][v]["mean"] for s in reps], axis=0) for v in VARIANTS}
    return out


def to_json(result: Any, indent: Optional[int] = 1) -> str:
    """``result`` (nested dicts / lists of numpy arrays and scalars) as JSON text, non-finite
    numbers as ``null``."""
    def clean(x):
        if isinstance(x, Mapping):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return float(x) if np.isfinite(x) else None
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.bool_):
            return bool(x)
        return x

    return json.dumps(clean(result), indent=indent, allow_nan=False)


def render(result: Mapping[str, Any]) -> str:
    """A markdown table of :func:`analogue`'s paired differences ``A - B`` (plain and
    GRPO-scaled) per source at each KL of the grid (``-`` where the KL is not reachable)."""
    grid = [float(k) for k in result["kl_grid"]]
    b_name, a_name = result["utilities"]
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:+.4f}"  # noqa: E731
    lines = [f"{a_name} - {b_name}, {result['metric']} win rate:", "",
             "| source | optimum | " + " | ".join(f"KL {g:g}" for g in grid) + " |",
             "|---|---|" + "---|" * len(grid)]
    for source in result["sources"]:
        for variant in VARIANTS:
            means = result[source]["diff"][variant]["mean"]
            lines.append(f"| {source} | {variant} | " + " | ".join(fmt(v) for v in means) + " |")
    for variant in VARIANTS:
        means = result["mean_over_replicates"][variant]
        lines.append(f"| mean of replicates | {variant} | "
                     + " | ".join(fmt(v) for v in means) + " |")
    return "\n".join(lines)
