"""Training trajectories compared at matched KL, paired by seed.

An RLHF run exported its policy every few steps; each snapshot was judged on the same ``P``
evaluation prompts, giving a trajectory: ``kl[T]`` (the snapshot's mean KL to ``pi0``, step 0
being ``pi0`` itself with KL 0) and per-prompt values ``v[T, P]`` (a win rate against the base
opponents, a gold score, ...). Two methods trained with the same RL seed (common random numbers:
same prompt order, same sampling keys) form a pair.

**Bracketed reading** (:func:`read_at_kl`, :func:`paired_readings`). A grid point ``x`` is read
on one *segment* of the trajectory (consecutive snapshots ``i``, ``i + 1`` whose KL range
contains ``x``), by linear interpolation in KL (the weight comes from the mean KL, so it is the
same for every prompt). Which segment is read is the ``path`` (:data:`PATHS`):

* ``"first"``: the first segment in step order that contains ``x`` (the KL a run stopped early
  would give);
* ``"last"``: the last such segment (where training settled);
* ``"isotonic"``: the KL path fitted non-decreasing over snapshot order by pool-adjacent-
  violators (:func:`isotonic_kl`, equal weights), read on its first segment containing ``x``,
  interpolating in the fitted KL (a flat fitted run equal to ``x`` reads the first of its
  snapshots).

A snapshot sitting exactly on ``x`` (in the KL the path reads) is read as is, before the segment
that follows it. A point is **bracketed** when the piece read is such a snapshot, or a segment
whose two ends (real snapshots, ``pi0`` included) are at most ``max_gap`` nats apart in that
KL; otherwise it is NaN and not bracketed, with no fall-back to another segment: a straight
line from ``pi0`` across a large gap, or across a KL excursion (2.82 -> 11.16 -> 5.99 nats read
at 6 on its first crossing spans 8.3 nats), is not a reading.

**First-crossing reading** (:func:`at_kl`, :func:`paired_differences`): the first crossing in
step order with no gap limit; a target the trajectory never reaches is NaN.

* :func:`paired_differences` / :func:`paired_readings` give per seed and prompt the difference
  ``A - B`` averaged over grid points (``d[S, P]``, the primary statistic's per-prompt values),
  the points used, and the per-seed curves at every grid point. :func:`paired_differences`
  averages over the points every trajectory of both methods reaches; :func:`paired_readings`
  over the points bracketed in every trajectory of both methods (``points="common"``) or, per
  seed, in both of that seed's trajectories (``points="per_seed"``: a run whose KL jumps over a
  point in one step loses that point for its own seed only).
* :func:`gold_drop` is the drop of a trajectory's mean gold score after its peak, on the KL grid,
  with per-prompt values at the peak's and the end's KL.

Intervals and verdicts are those of :mod:`lsc.eval.decision` with seeds as replicates: the
interval across seeds of the seed means of ``d[S, P]`` (:func:`lsc.eval.decision.across_seeds`
or :func:`lsc.eval.decision.compare`), and per seed the bootstrap over prompts of ``d[s]``.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

PATHS = ("first", "last", "isotonic")
"""The segments :func:`read_at_kl` can read a grid point on (module docstring)."""


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


def _check_pairs(kl_a, values_a, kl_b, values_b) -> None:
    if len(kl_a) != len(kl_b) or len(values_a) != len(kl_a) or len(values_b) != len(kl_b):
        raise ValueError("A and B need the same number of seeds, one values array per KL array")
    if not len(kl_a):
        raise ValueError("no seeds")


def _paired(at_a: Sequence[np.ndarray], at_b: Sequence[np.ndarray], used: np.ndarray
            ) -> Dict[str, np.ndarray]:
    """``{"diffs", "used", "used_by_seed", "curves_a", "curves_b"}`` from per-seed readings
    ``[G, P]`` and the points used, ``bool[G]`` (the same for every seed) or ``bool[S, G]``
    (per seed): ``diffs[s]`` the mean of ``A - B`` over seed ``s``'s points (NaN when it has
    none; ``[S, 0]`` when no seed has any), ``used`` the points some seed uses."""
    p = at_a[0].shape[1]
    if any(x.shape[1] != p for x in list(at_a) + list(at_b)):
        raise ValueError("every trajectory must have the same prompts")
    use = np.array(np.broadcast_to(np.asarray(used, bool), (len(at_a), at_a[0].shape[0])))
    if use.any():
        diffs = np.stack([(a[u] - b[u]).mean(axis=0) if u.any() else np.full(p, np.nan)
                          for a, b, u in zip(at_a, at_b, use)])
    else:
        diffs = np.zeros((len(at_a), 0))
    return {"diffs": diffs, "used": use.any(axis=0), "used_by_seed": use,
            "curves_a": np.stack([a.mean(axis=1) for a in at_a]),
            "curves_b": np.stack([b.mean(axis=1) for b in at_b])}


def paired_differences(kl_a, values_a, kl_b, values_b, grid: Sequence[float]
                       ) -> Dict[str, np.ndarray]:
    """Seed-paired differences of two methods' trajectories at matched KL, read at the first
    crossing (:func:`at_kl`).

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
    _check_pairs(kl_a, values_a, kl_b, values_b)
    used = reached(list(kl_a) + list(kl_b), grid)
    at_a = [at_kl(k, v, grid) for k, v in zip(kl_a, values_a)]  # each [G, P]
    at_b = [at_kl(k, v, grid) for k, v in zip(kl_b, values_b)]
    return _paired(at_a, at_b, used)


def isotonic_kl(kl) -> np.ndarray:
    """``float64[T]``: the non-decreasing least-squares fit of ``kl[T]`` over snapshot order
    (pool-adjacent-violators, equal weights: each pooled run of snapshots takes its mean KL)."""
    kl, _ = _check(kl, np.zeros(np.shape(kl)))
    blocks = []  # [sum, count] of each pooled run, in order
    for x in kl:
        blocks.append([float(x), 1])
        while len(blocks) > 1 and (blocks[-2][0] / blocks[-2][1]
                                   > blocks[-1][0] / blocks[-1][1]):
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(count, total / count) for total, count in blocks])


def read_at_kl(kl, values, grid: Sequence[float], *, path: str, max_gap: float
               ) -> Tuple[np.ndarray, np.ndarray]:
    """A trajectory read at each KL of ``grid`` on a bracketing segment (module docstring).

    Args:
      kl: ``float[T]`` the snapshots' mean KL (``pi0`` first, at 0).
      values: ``float[T, ...]`` per-snapshot values.
      grid: ``[G]`` KL points.
      path: one of :data:`PATHS`: which segment containing a point is read.
      max_gap: the widest segment (nats, in the KL the path reads) a point is interpolated on.

    Returns:
      ``(float64[G, ...]`` values, NaN where not bracketed, ``bool[G]`` bracketed``)``.
    """
    kl, values = _check(kl, values)
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; one of {PATHS}")
    if not float(max_gap) >= 0.0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    read = isotonic_kl(kl) if path == "isotonic" else kl
    # Pieces in step order, (i, False) snapshot i and (i, True) segment (i, i + 1): snapshot 0,
    # segment (0, 1), snapshot 1, ...
    pieces = [(i, seg) for i in range(kl.size) for seg in (False, True)
              if not seg or i + 1 < kl.size]
    if path == "last":
        pieces.reverse()
    out = np.full((len(grid),) + values.shape[1:], np.nan)
    ok = np.zeros(len(grid), bool)
    for g, x in enumerate(float(v) for v in grid):
        for i, seg in pieces:
            if not seg:
                if read[i] == x:
                    out[g], ok[g] = values[i], True
                    break
                continue
            lo, hi = sorted((read[i], read[i + 1]))
            if lo < x < hi:
                if hi - lo <= max_gap:
                    t = (x - read[i]) / (read[i + 1] - read[i])
                    out[g], ok[g] = (1.0 - t) * values[i] + t * values[i + 1], True
                break
    return out, ok


POINTS = ("per_seed", "common")
"""The grid points :func:`paired_readings` averages a seed's differences over: ``"per_seed"``
those bracketed in both of that seed's trajectories (a seed with none is left out);
``"common"`` those bracketed in every trajectory of both methods (one set for every seed)."""


def paired_readings(kl_a, values_a, kl_b, values_b, grid: Sequence[float], *, path: str,
                    max_gap: float, points: str = "common") -> Dict[str, np.ndarray]:
    """Seed-paired differences of two methods' trajectories at matched KL, bracketed readings
    (:func:`read_at_kl`).

    Args:
      kl_a, kl_b, values_a, values_b, grid: as in :func:`paired_differences`.
      path, max_gap: as in :func:`read_at_kl`.
      points: one of :data:`POINTS`.

    Returns:
      ``{"diffs": float64[S, P]`` (per seed, the mean over its points of ``A - B``; a NaN row
      for a seed without any; empty ``[S, 0]`` when no seed has any), ``"used": bool[G]``
      (points some seed uses), ``"used_by_seed": bool[S, G]``, ``"curves_a", "curves_b":
      float64[S, G]`` (prompt means at every grid point, NaN where not bracketed),
      ``"bracketed_a", "bracketed_b": bool[S, G]}``.
    """
    if points not in POINTS:
        raise ValueError(f"points must be one of {POINTS}, got {points!r}")
    _check_pairs(kl_a, values_a, kl_b, values_b)
    reads_a = [read_at_kl(k, v, grid, path=path, max_gap=max_gap)
               for k, v in zip(kl_a, values_a)]
    reads_b = [read_at_kl(k, v, grid, path=path, max_gap=max_gap)
               for k, v in zip(kl_b, values_b)]
    bracketed_a = np.stack([ok for _, ok in reads_a])
    bracketed_b = np.stack([ok for _, ok in reads_b])
    use = (bracketed_a & bracketed_b if points == "per_seed"
           else bracketed_a.all(axis=0) & bracketed_b.all(axis=0))
    return {**_paired([v for v, _ in reads_a], [v for v, _ in reads_b], use),
            "bracketed_a": bracketed_a, "bracketed_b": bracketed_b}


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
