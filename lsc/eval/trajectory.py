"""Training trajectories compared at matched KL, paired by seed.

An RLHF run exported its policy every few steps; each snapshot was judged on the same ``P``
evaluation prompts, giving a trajectory: ``kl[T]`` (the snapshot's mean KL to ``pi0``, step 0
being ``pi0`` itself with KL 0) and per-prompt values ``v[T, P]`` (a win rate against the base
opponents, a gold score, ...). Two methods trained with the same RL seed (common random numbers:
same prompt order, same sampling keys) form a pair.

* :func:`at_kl` reads a trajectory at target KLs by linear interpolation between consecutive
  snapshots, at the **first crossing** in step order (KL along training is noisy and not always
  monotone; the first time the policy reaches a KL is the one a run stopped early would give);
  a target the trajectory never reaches is NaN. The interpolation weight comes from the mean KL,
  so it is the same for every prompt.
* :func:`paired_differences` gives per seed and prompt the difference ``A - B`` averaged over the
  grid points that every trajectory of both methods reaches (``d[S, P]``, the primary statistic's
  per-prompt values), the points used, and the per-seed curves at every grid point.
* :func:`gold_drop` is the drop of a trajectory's mean gold score after its peak, on the KL grid,
  with per-prompt values at the peak's and the end's KL.

Intervals and verdicts are those of :mod:`lsc.eval.decision` with seeds as replicates: the
interval across seeds of ``d[S, P]`` (:func:`lsc.eval.decision.compare`), and per seed the
bootstrap over prompts of ``d[s]``.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np


def _check(kl, values) -> Tuple[np.ndarray, np.ndarray]:
    kl = np.asarray(kl, np.float64)
    values = np.asarray(values, np.float64)
    if kl.ndim != 1 or kl.size < 1 or values.shape[:1] != kl.shape:
        raise ValueError(f"kl must have shape [T] and values [T, ...]; got {kl.shape} and "
                         f"{values.shape}")
    if not np.all(np.isfinite(kl)):
        raise ValueError("kl must be finite")
    return kl, values


def crossing(kl, target: float) -> Tuple[int, float]:
    """``(i, t)``: the first segment ``i`` (snapshots ``i``, ``i + 1``) whose KL range contains
    ``target`` and the weight ``t`` of snapshot ``i + 1`` (``(i, 0.0)`` when snapshot ``i`` sits
    exactly on it); ``(-1, nan)`` when the trajectory never reaches ``target``."""
    kl = np.asarray(kl, np.float64)
    for i in range(kl.size):
        if kl[i] == target:
            return i, 0.0
        if i + 1 < kl.size:
            lo, hi = sorted((kl[i], kl[i + 1]))
            if lo <= target <= hi and kl[i + 1] != kl[i]:
                return i, float((target - kl[i]) / (kl[i + 1] - kl[i]))
    return -1, float("nan")


def at_kl(kl, values, grid: Sequence[float]) -> np.ndarray:
    """``float64[G, ...]``: ``values[T, ...]`` of a trajectory at each KL of ``grid`` (module
    docstring; NaN where never reached)."""
    kl, values = _check(kl, values)
    out = np.full((len(grid),) + values.shape[1:], np.nan)
    for g, target in enumerate(grid):
        i, t = crossing(kl, float(target))
        if i < 0:
            continue
        out[g] = values[i] if t == 0.0 else (1.0 - t) * values[i] + t * values[i + 1]
    return out


def reached(kls: Sequence[Sequence[float]], grid: Sequence[float]) -> np.ndarray:
    """``bool[G]``: the grid points every trajectory of ``kls`` reaches."""
    ok = np.ones(len(grid), bool)
    for kl in kls:
        ok &= np.array([crossing(kl, float(x))[0] >= 0 for x in grid])
    return ok


def paired_differences(kl_a, values_a, kl_b, values_b, grid: Sequence[float]
                       ) -> Dict[str, np.ndarray]:
    """Seed-paired differences of two methods' trajectories at matched KL.

    Args:
      kl_a, kl_b: per seed ``S`` the trajectory's KL, ``[T_s]`` each (lists, or arrays ``[S, T]``).
      values_a, values_b: per seed ``[T_s, P]`` per-prompt values (same ``S``, same ``P``); seed
        ``s`` of A is paired with seed ``s`` of B.
      grid: the pre-declared KL grid ``[G]``.

    Returns:
      ``{"diffs": float64[S, P]`` (the mean over the points used of ``A - B``; empty ``[S, 0]``
      when no point is shared), ``"used": bool[G]`` (points every trajectory of both methods
      reaches), ``"curves_a", "curves_b": float64[S, G]`` (prompt means at every grid point, NaN
      where not reached)``}``.
    """
    if len(kl_a) != len(kl_b) or len(values_a) != len(kl_a) or len(values_b) != len(kl_b):
        raise ValueError("A and B need the same number of seeds, one values array per KL array")
    if not len(kl_a):
        raise ValueError("no seeds")
    used = reached(list(kl_a) + list(kl_b), grid)
    at_a = [at_kl(k, v, grid) for k, v in zip(kl_a, values_a)]  # each [G, P]
    at_b = [at_kl(k, v, grid) for k, v in zip(kl_b, values_b)]
    p = at_a[0].shape[1]
    if any(x.shape[1] != p for x in at_a + at_b):
        raise ValueError("every trajectory must have the same prompts")
    if used.any():
        diffs = np.stack([(a[used] - b[used]).mean(axis=0) for a, b in zip(at_a, at_b)])
    else:
        diffs = np.zeros((len(at_a), 0))
    return {"diffs": diffs, "used": used,
            "curves_a": np.stack([a.mean(axis=1) for a in at_a]),
            "curves_b": np.stack([b.mean(axis=1) for b in at_b])}


def gold_drop(kl, gold, grid: Sequence[float], end: float) -> Dict[str, object]:
    """The drop of mean gold after its peak along a trajectory, read on ``grid``.

    Args:
      kl: ``[T]``; gold: ``[T, P]`` per-prompt gold scores; grid: KL points ``[G]``; end: the
        KL where the drop is measured (the largest grid point a comparison's trajectories all
        reach), a member of ``grid``.

    Returns:
      ``{"peak_kl", "peak_gold", "end_gold", "drop"`` (floats: the grid point at or below
      ``end`` where the mean gold peaks, the means there and at ``end``, and their difference)
      ``, "per_prompt": float64[P]`` (gold at the peak minus gold at ``end``, per prompt)``}``.
    """
    grid = [float(x) for x in grid if float(x) <= float(end) + 1e-12]
    if not grid or abs(grid[-1] - float(end)) > 1e-12:
        raise ValueError(f"end={end} must be a point of the grid")
    at = at_kl(kl, gold, grid)  # [G', P]
    if np.isnan(at[-1]).any():
        raise ValueError(f"the trajectory does not reach KL {end}")
    means = at.mean(axis=1)
    ok = ~np.isnan(means)
    i = int(np.nanargmax(np.where(ok, means, -np.inf)))
    return {"peak_kl": grid[i], "peak_gold": float(means[i]), "end_gold": float(means[-1]),
            "drop": float(means[i] - means[-1]), "per_prompt": at[i] - at[-1]}
