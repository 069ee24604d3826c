"""Underfitting, reward-hacking and shortcut-feature diagnostics (docs/design.md §1 and §3).

Underfitting (:func:`underfitting`)
    Per prompt, the improvement of the aligned policy's gold score over the base policy's; its
    distribution over prompts, the fraction of prompts improved, and the improvement within
    quartiles of prompts ranked by base gold score (quartile 0 = the worst-served prompts).
    Ranking prompts by the *same* base samples whose score is subtracted biases the worst
    quartile's improvement upwards (regression to the mean: prompts whose base sample was
    unluckily bad look improved even under the base policy itself). Pass ``strata`` computed from
    independent base samples (e.g. the oracle-reference samples) to remove that bias.

Reward hacking (:func:`reward_hacking`)
    Given the proxy reward and the gold score along training, the step where (smoothed) gold
    peaks, the gold lost after it, and the proxy gained after it. Hacking is flagged when gold
    falls by more than ``tol`` after its peak while the proxy rises by more than ``tol``.

Shortcut features (:func:`response_features`, :func:`shortcut_features`)
    Length in words, refusal, repetition (repeated non-function words) and the spurious filler
    word. What counts as a refusal, a function word and the filler belongs to the world being
    judged: the caller passes a :class:`Shortcuts` (for the synthetic world
    ``Shortcuts.of(lsc.data.world)``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence

import numpy as np

from lsc.eval import win_rate as win_rate_lib


@dataclasses.dataclass(frozen=True)
class Shortcuts:
    """A world's shortcut vocabulary.

    Attributes:
      filler: the spurious filler word (counted case-insensitively).
      function_words: lower-case words that never count as repetitions.
      is_refusal: ``response -> bool``, the world's refusal test.
    """

    filler: str
    function_words: FrozenSet[str]
    is_refusal: Callable[[str], bool]

    @classmethod
    def of(cls, world: Any) -> "Shortcuts":
        """From a world exposing ``FILLER``, ``FUNCTION_WORDS`` and ``is_refusal`` (e.g. the
        module :mod:`lsc.data.world`)."""
        return cls(world.FILLER, frozenset(world.FUNCTION_WORDS), world.is_refusal)


def _per_prompt(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise ValueError(f"{name} has no samples per prompt")
        a = a.mean(axis=1)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must have shape [N] or [N, s] with N >= 1, got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def _paired(policy_gold, base_gold, strata):
    """Per-prompt ``(policy, base, strata)`` arrays of equal length (strata default: base)."""
    p = _per_prompt(policy_gold, "policy_gold")
    b = _per_prompt(base_gold, "base_gold")
    if p.shape != b.shape:
        raise ValueError(f"policy_gold and base_gold cover {p.size} and {b.size} prompts")
    s = b if strata is None else _per_prompt(strata, "strata")
    if s.shape != b.shape:
        raise ValueError(f"strata covers {s.size} prompts, base_gold {b.size}")
    return p, b, s


def quantile_groups(strata, num_groups: int = 4) -> np.ndarray:
    """``int64[N]`` group of each prompt (0 = lowest ``strata``), by equal-count rank bins.

    Prompts are ranked by ``strata[N]`` (ties broken by position, stably) and split into
    ``num_groups`` groups of sizes differing by at most one.
    """
    s = np.asarray(strata, dtype=np.float64)
    if s.ndim != 1 or s.size < num_groups:
        raise ValueError(f"strata must have shape [N] with N >= num_groups ({num_groups}), got "
                         f"{s.shape}")
    ranks = np.empty(s.size, np.int64)
    ranks[np.argsort(s, kind="stable")] = np.arange(s.size)
    return (ranks * num_groups) // s.size


def underfitting(policy_gold, base_gold, strata=None, *, num_groups: int = 4,
                 num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Dict:
    """Distribution over prompts of the gold-score improvement of a policy over the base policy.

    Args:
      policy_gold: ``float[N]`` or ``float[N, s]`` gold scores of the policy's samples (``s``
        samples per prompt are averaged).
      base_gold: ``float[N]`` or ``float[N, s0]`` gold scores of base-policy samples for the same
        prompts.
      strata: optional ``float[N]`` (or ``[N, s]``) base gold scores used to rank prompts into
        groups, ideally from base samples independent of ``base_gold`` (module docstring);
        default ``base_gold``.
      num_groups: number of rank groups (4: quartiles).
      num_resamples, confidence, seed: bootstrap CIs over prompts (``lsc.eval.win_rate``).

    Returns:
      A JSON-serialisable dict:
      ``improvement``: {"value" (mean), "ci_low", "ci_high", "median", "quantiles" (at 0.1, 0.25,
      0.5, 0.75, 0.9)}; ``fraction_improved`` / ``fraction_worse``: {"value", "ci_low",
      "ci_high"} (strictly positive / negative improvement); ``groups``: one dict per group
      (``group``, ``n``, ``strata_low``, ``strata_high``, ``base_mean``, ``improvement``
      {value, ci_low, ci_high}, ``fraction_improved``); ``worst_group``: the improvement of
      group 0 (the worst-served prompts) {value, ci_low, ci_high}; ``num_prompts``.
      ``per_prompt`` holds the arrays (``improvement``, ``group``) as lists, for plotting.
    """
    p, b, s = _paired(policy_gold, base_gold, strata)
    d = p - b
    groups = quantile_groups(s, num_groups)
    kw = dict(num_resamples=num_resamples, confidence=confidence, seed=seed)
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    out: Dict = {
        "num_prompts": int(d.size),
        "improvement": {**win_rate_lib.bootstrap_ci(d, **kw), "median": float(np.median(d)),
                        "quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(d, qs))}},
        "fraction_improved": win_rate_lib.bootstrap_ci((d > 0).astype(float), **kw),
        "fraction_worse": win_rate_lib.bootstrap_ci((d < 0).astype(float), **kw),
        "groups": [],
    }
    for g in range(num_groups):
        sel = groups == g
        out["groups"].append({
            "group": g,
            "n": int(sel.sum()),
            "strata_low": float(s[sel].min()),
            "strata_high": float(s[sel].max()),
            "base_mean": float(b[sel].mean()),
            "improvement": win_rate_lib.bootstrap_ci(d[sel], **kw),
            "fraction_improved": float(np.mean(d[sel] > 0)),
        })
    out["worst_group"] = dict(out["groups"][0]["improvement"])
    out["per_prompt"] = {"improvement": d.tolist(), "group": groups.tolist()}
    return out


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return x
    # Trailing moving average (uses only past values, so a peak is not anticipated).
    c = np.cumsum(np.concatenate([[0.0], x]))
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def reward_hacking(steps, proxy, gold, *, window: int = 1, tol: float = 0.0) -> Dict:
    """Quantifies "proxy rising while gold falls" along training.

    Args:
      steps: ``int/float[T]`` increasing training steps.
      proxy: ``float[T]`` mean proxy reward (or utility) of the policy's samples at each step.
      gold: ``float[T]`` mean gold score at each step.
      window: trailing moving-average window applied to both series before the analysis
        (1 = none).
      tol: minimum gold drop and proxy gain (in their units) for ``hacking`` to be True.

    Returns:
      dict with ``peak_step`` and ``peak_gold`` (smoothed gold maximum; the first one on ties),
      ``final_gold``, ``gold_drop`` (``peak_gold - final_gold`` >= 0), ``proxy_at_peak``,
      ``final_proxy``, ``proxy_gain_after_peak`` (``final_proxy - proxy_at_peak``),
      ``corr_after_peak`` (Pearson correlation of proxy and gold from the peak on; NaN with fewer
      than 3 points or a constant series), ``hacking`` (bool) and ``window``, ``tol``.
    """
    t = np.asarray(steps, dtype=np.float64)
    pr = np.asarray(proxy, dtype=np.float64)
    gd = np.asarray(gold, dtype=np.float64)
    if t.ndim != 1 or pr.shape != t.shape or gd.shape != t.shape or t.size == 0:
        raise ValueError(f"steps {t.shape}, proxy {pr.shape} and gold {gd.shape} must all have "
                         f"shape [T] with T >= 1")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(pr)) and np.all(np.isfinite(gd))):
        raise ValueError("steps, proxy and gold must be finite")
    if np.any(np.diff(t) <= 0):
        raise ValueError("steps must be strictly increasing")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    ps, gs = _smooth(pr, int(window)), _smooth(gd, int(window))
    i = int(np.argmax(gs))
    drop = float(gs[i] - gs[-1])
    gain = float(ps[-1] - ps[i])
    tail_p, tail_g = ps[i:], gs[i:]
    if tail_p.size >= 3 and tail_p.std() > 0 and tail_g.std() > 0:
        corr = float(np.corrcoef(tail_p, tail_g)[0, 1])
    else:
        corr = float("nan")
    return {
        "peak_step": float(t[i]),
        "peak_gold": float(gs[i]),
        "final_gold": float(gs[-1]),
        "gold_drop": drop,
        "proxy_at_peak": float(ps[i]),
        "final_proxy": float(ps[-1]),
        "proxy_gain_after_peak": gain,
        "corr_after_peak": corr,
        "hacking": bool(drop > tol and gain > tol),
        "window": int(window),
        "tol": float(tol),
    }


def response_features(responses: Sequence[str], shortcuts: Shortcuts
                      ) -> Dict[str, np.ndarray]:
    """Per-response shortcut features of ``N`` responses in the vocabulary of ``shortcuts``.

    Returns:
      ``length`` ``int64[N]`` words (whitespace-separated); ``refusal`` ``bool[N]``
      (``shortcuts.is_refusal``); ``repeats`` ``int64[N]`` repeated non-function words (sum over
      words of count - 1, as the synthetic world's gold helpfulness penalty counts them);
      ``repetition`` ``float64[N]`` ``repeats / length`` (0 for an empty response);
      ``filler_count`` ``int64[N]`` occurrences of ``shortcuts.filler``; ``has_filler``
      ``bool[N]``.
    """
    if isinstance(responses, str):
        raise ValueError("responses must be a sequence of strings, not one string")
    n = len(responses)
    length = np.zeros(n, np.int64)
    repeats = np.zeros(n, np.int64)
    filler_count = np.zeros(n, np.int64)
    refusal = np.zeros(n, bool)
    f = shortcuts.filler.lower()
    for j, r in enumerate(responses):
        if not isinstance(r, str):
            raise ValueError(f"response {j} is {type(r).__name__}, not str")
        words = r.lower().split()
        length[j] = len(words)
        counts = Counter(words)
        repeats[j] = sum(c - 1 for w, c in counts.items() if w not in shortcuts.function_words)
        filler_count[j] = counts.get(f, 0)
        refusal[j] = shortcuts.is_refusal(r)
    repetition = np.divide(repeats, length, out=np.zeros(n), where=length > 0)
    return {"length": length, "refusal": refusal, "repeats": repeats, "repetition": repetition,
            "filler_count": filler_count, "has_filler": filler_count > 0}


def shortcut_features(responses: Sequence[str], shortcuts: Shortcuts) -> Dict[str, float]:
    """Means over responses of :func:`response_features`.

    Returns ``mean_length`` (words), ``refusal_rate``, ``repetition_rate`` (mean per-response
    fraction of words that repeat a non-function word), ``any_repetition_rate`` (fraction of
    responses with a repeat), ``filler_rate`` (fraction containing the filler) and
    ``mean_filler_count``, plus ``num_responses``.
    """
    f = response_features(responses, shortcuts)
    if f["length"].size == 0:
        raise ValueError("no responses")
    return {
        "num_responses": int(f["length"].size),
        "mean_length": float(f["length"].mean()),
        "refusal_rate": float(f["refusal"].mean()),
        "repetition_rate": float(f["repetition"].mean()),
        "any_repetition_rate": float((f["repeats"] > 0).mean()),
        "filler_rate": float(f["has_filler"].mean()),
        "mean_filler_count": float(f["filler_count"].mean()),
    }


def shortcut_shift(policy_responses: Sequence[str], base_responses: Sequence[str],
                   shortcuts: Shortcuts) -> Dict[str, Dict[str, float]]:
    """:func:`shortcut_features` of policy and base responses and their differences
    (``{"policy": ..., "base": ..., "difference": policy - base}``)."""
    a = shortcut_features(policy_responses, shortcuts)
    b = shortcut_features(base_responses, shortcuts)
    return {"policy": a, "base": b,
            "difference": {k: a[k] - b[k] for k in a if k != "num_responses"}}


def gold_improvement_by_group(policy_gold, base_gold, strata: Optional[np.ndarray] = None,
                              num_groups: int = 4) -> Dict[int, np.ndarray]:
    """Per-prompt improvements ``float64[n_g]`` of each rank group (input of the underfitting
    plot); arguments as in :func:`underfitting`."""
    p, b, s = _paired(policy_gold, base_gold, strata)
    groups = quantile_groups(s, num_groups)
    d = p - b
    return {g: d[groups == g] for g in range(num_groups)}
