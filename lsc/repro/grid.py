"""The note's best-of-k grid from one set of base-policy samples.

Best-of-k over ``k <= K`` only needs ``K`` samples per prompt: the first ``k`` of ``K`` i.i.d.
samples are ``k`` i.i.d. samples, so every ``(method, reference, k)`` cell selects among the
first ``k`` columns of the same ``[N, K]`` table (:func:`select_first_k`; ties go to the lowest
index, as in :mod:`lsc.align.best_of_k`). The utilities come from :mod:`lsc.align.utility`, the
judging from :mod:`lsc.eval` (win rates against independent base samples, bootstrap CIs), the
KL from the plug-in estimate on independent base samples' utilities next to the analytic bound.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from lsc.align import utility as utility_lib
from lsc.eval import kl as kl_lib
from lsc.eval import report as report_lib
from lsc.eval import win_rate as win_rate_lib
from lsc.rewards import names


def utilities(method: str, properties: Sequence[str], rewards: np.ndarray,
              r_ref: np.ndarray) -> np.ndarray:
    """``float32[N, K]`` utilities of ``rewards float[N, K, m]`` against ``r_ref float[N, m]``."""
    spec = utility_lib.UtilitySpec(method=method, properties=tuple(properties),
                                   references=tuple(utility_lib.ReferenceSpec()
                                                    for _ in properties))
    return np.asarray(utility_lib.utility(spec, rewards, np.asarray(r_ref)[:, None, :]))


def select_first_k(u: np.ndarray, k: int) -> np.ndarray:
    """``int[N]``: the index of the highest utility among the first ``k`` columns of
    ``u float[N, K]`` (the lowest index on ties)."""
    u = np.asarray(u)
    if not 1 <= k <= u.shape[1]:
        raise ValueError(f"k={k} needs 1 <= k <= {u.shape[1]} samples per prompt")
    return np.argmax(u[:, :k], axis=1)


def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x[n, idx[n]]`` for ``x [N, K, ...]``."""
    return np.take_along_axis(x, idx.reshape((-1, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0]


def grid_entries(*, properties: Sequence[str], cells: Sequence[Tuple[str, str]],
                 ks: Sequence[int], rewards: np.ndarray, gold: np.ndarray,
                 references: Mapping[str, np.ndarray], base_gold: np.ndarray,
                 kl_rewards: np.ndarray, bootstrap: Mapping[str, Any],
                 features=None) -> List[Dict[str, Any]]:
    """One results entry (``lsc.eval.report`` schema) per ``(method, reference)`` cell and k.

    Args:
      properties: the ``m`` property names (the last axis of every array).
      cells: ``(method, reference)`` pairs; ``reference`` names a key of ``references`` or is
        ``'none'`` (:data:`lsc.rewards.names.NO_REFERENCE`; no subtraction: ``r_ref = 0``).
      ks: the k values (each ``<= K``).
      rewards: ``float[N, K, m]`` proxy rewards of the K selection samples per prompt.
      gold: ``float[N, K, m]`` their gold scores.
      references: ``{name: float[N, m]}`` reference rewards.
      base_gold: ``float[N, m]`` gold scores of independent base samples (the judge's
        opponents).
      kl_rewards: ``float[N, M, m]`` proxy rewards of ``M`` further independent base samples,
        for the plug-in KL estimate (``lsc.eval.kl.best_of_k_kl_plugin``).
      bootstrap: keyword arguments of ``lsc.eval.win_rate.win_rates`` (``num_resamples``,
        ``confidence``, ``seed``).
      features: optional ``callable(index int[N]) -> dict`` of extra fields for the chosen
        responses (e.g. their shortcut features).
    """
    n, big_k, m = rewards.shape
    props = list(properties)
    out = []
    for method, ref_name in cells:
        label = names.run_label(method, ref_name)
        no_ref = names.reference_name(ref_name) == names.NO_REFERENCE
        r_ref = (np.zeros((n, m), np.float32) if no_ref
                 else np.asarray(references[ref_name], np.float32))
        u = utilities(method, props, rewards, r_ref)
        u_kl = utilities(method, props, kl_rewards, r_ref)
        for k in ks:
            idx = select_first_k(u, int(k))
            chosen_gold = take(gold, idx)
            chosen_rew = take(rewards, idx)
            kl = kl_lib.best_of_k_kl_plugin(u_kl, int(k))
            extra = features(idx) if features is not None else {}
            out.append(report_lib.make_entry(
                f"best_of_k/{label}/k{int(k)}", "best_of_k", method, ref_name, props,
                {"mean": kl.mean, "se": kl.se, "estimator": kl.estimator},
                win_rate_lib.win_rates(chosen_gold, base_gold, props, **bootstrap),
                {p: float(chosen_rew[:, j].mean()) for j, p in enumerate(props)},
                {p: float(chosen_gold[:, j].mean()) for j, p in enumerate(props)},
                k=int(k), kl_analytic=kl_lib.best_of_k_analytic(int(k)),
                utility=float(take(u, idx).mean()), num_prompts=int(n), **extra))
    return out
