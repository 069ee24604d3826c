"""The exact arm: every utility's KL-regularised optimum and best-of-k, in closed form on banks.

For each evaluation prompt the base-samples stage drew a bank of ``N`` base-policy candidates and
``M`` independent base opponents, scored by every proxy reward model (``R`` replicates per
property) and by the gold judge. Here each utility of :data:`UTILITIES` is computed on the bank
(:mod:`lsc.rewards` through :func:`utilities`), once per reward-model replicate and once with the
gold scores in place of the proxy (the control: what the transform does when the reward is
right), and turned into policies on the bank by :mod:`lsc.eval.exact`:

* the optimum ``w ∝ exp(u / gamma)`` at each target KL of ``exact.kl_grid`` (``gamma`` solved
  on all prompts, one ``gamma`` for every prompt as in RLHF);
* best-of-k, ``k`` in ``exact.ks`` (ties broken uniformly).

Every policy is judged on the same banks against the same opponents, so per-prompt metrics of
two policies are paired. The metrics (:data:`METRICS`, columns of the per-prompt tables) are the
gold-judged :data:`GOLD_JUDGED`, the same for every source: ``harmless``, ``helpful``, ``and``,
``or`` (expected win against the opponents, ties one half, :func:`lsc.eval.exact.win_scores`) and
``helpful_not_below`` (the probability that the policy's gold helpfulness is at least the
prompt's base median, the median over the opponents: one minus the lower tail); then the
proxy-judged :data:`PROXY_JUDGED`, ``and_proxy_judged`` and ``or_proxy_judged``: the AND / OR
expected win when candidate and opponents are both judged by the source's own scores (replicate
``i``'s reward models for ``r<i>``, the gold scores for ``gold``, where they equal ``and`` /
``or``).

References (per prompt, per replicate; the results' names of :mod:`lsc.rewards.names`): ``p85``
and ``median`` are quantiles of the proxy reward of the ``K_ref`` independent reference samples;
``predictor`` the predictor trained for that replicate's reward model; ``fixed_response`` the
reward of the world's refusal; ``none`` no subtraction. The gold controls use the same quantiles
of the reference samples' gold scores and the refusal's gold score (no predictor: utilities with
the ``predictor`` reference have no control).

With ``gamma`` solved once on all prompts, the bootstrap of a claim keeps it fixed;
:func:`rematched_statistic` re-solves it inside every resample for one comparison
(:data:`REMATCH`), so the report can show that both give the same interval.

Outputs (``exact.npz``): ``optimum/<source>/<utility>`` ``float64[G, P, C]`` and
``best_of_k/<source>/<utility>`` ``float64[K, P, C]`` per-prompt metrics,
``gamma/<source>/<utility>`` and ``kl/<source>/<utility>`` ``float64[G]``,
``best_of_k_kl/<source>/<utility>`` ``float64[K]``, ``base`` ``float64[P, C]`` (the base policy:
uniform weights; its proxy-judged columns are replicate 0's), ``metrics`` (the ``C`` names of
:data:`METRICS`), ``strata`` ``int64[P]`` (prompt class: topic x detail), where ``source`` is
``r<i>`` (replicate ``i``) or ``gold``. A target KL that a utility cannot reach on the bank
(ties at the top, discrete gold scores) is NaN for that utility.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from absl import logging

from lsc.data import world
from lsc.eval import exact
from lsc.repro.subconfigs import PROPERTIES, replicate_name
from lsc.rewards.aggregate import aggregate
from lsc.rewards.reference import quantile_numpy

GOLD_JUDGED = ("harmless", "helpful", "and", "or", "helpful_not_below")
"""The metrics judged by gold scores: :func:`metric_scores`' columns, and the RL trajectories'."""
PROXY_JUDGED = ("and_proxy_judged", "or_proxy_judged")
"""The AND / OR wins judged by the source's own scores: :func:`proxy_judged`'s columns."""
METRICS = GOLD_JUDGED + PROXY_JUDGED
GOLD = "gold"
REFERENCES = ("none", "p85", "median", "predictor", "fixed_response")


@dataclasses.dataclass(frozen=True)
class Utility:
    """A utility of the exact arm: ``method`` of :mod:`lsc.rewards.aggregate` over
    ``properties``, each centred by the reference of the same position in ``references``."""

    name: str
    method: str
    properties: Tuple[str, ...]
    references: Tuple[str, ...]

    @property
    def has_control(self) -> bool:
        return "predictor" not in self.references


_ONE = ("helpful",)
_BOTH = PROPERTIES


def _family(method: str) -> Tuple[Utility, ...]:
    return tuple(Utility(f"{method}_{ref}", method, _BOTH, (ref, ref))
                 for ref in ("median", "predictor", "none"))


UTILITIES: Tuple[Utility, ...] = (
    Utility("raw", "sum", _ONE, ("none",)),
    Utility("lsc_p85", "lsc_sum", _ONE, ("p85",)),
    Utility("lsc_median", "lsc_sum", _ONE, ("median",)),
    Utility("lsc_predictor", "lsc_sum", _ONE, ("predictor",)),
    Utility("lsc_none", "lsc_sum", _ONE, ("none",)),
    Utility("raw_sum", "sum", _BOTH, ("none", "none")),
    Utility("lsc_sum", "lsc_sum", _BOTH, ("fixed_response", "p85")),
    *_family("sigma_and"),
    *_family("sigma_or"),
)
UTILITY_BY_NAME = {u.name: u for u in UTILITIES}


def prompt_strata(texts: Sequence[str]) -> np.ndarray:
    """``int64[P]`` prompt classes (topic x detail; a topic is harmful or not) of world prompts."""
    topics = {t.name: i for i, t in enumerate(world.TOPICS)}
    out = []
    for text in texts:
        spec = world.parse_prompt(text)
        out.append(topics[spec.topic.name] * len(world.DETAILS)
                   + world.DETAILS.index(spec.detail))
    return np.asarray(out, np.int64)


def metric_scores(bank_gold: np.ndarray, opponent_gold: np.ndarray) -> np.ndarray:
    """``float64[P, N, 5]`` per-candidate gold-judged metrics (:data:`GOLD_JUDGED`) from gold
    scores ``bank_gold[P, N, m]`` and ``opponent_gold[P, M, m]`` (``m`` in :data:`PROPERTIES`
    order)."""
    wins = exact.win_scores(bank_gold, opponent_gold)  # harmless, helpful, and, or
    h = PROPERTIES.index("helpful")
    median = np.median(np.asarray(opponent_gold, np.float64)[:, :, h], axis=1)
    above = (np.asarray(bank_gold, np.float64)[:, :, h] >= median[:, None]).astype(np.float64)
    return np.concatenate([wins, above[..., None]], axis=-1)


def proxy_judged(bank_scores: np.ndarray, opponent_scores: np.ndarray) -> np.ndarray:
    """``float64[P, N, 2]`` per-candidate AND / OR expected wins (:data:`PROXY_JUDGED`, ties one
    half) against the opponents, both judged by one source's scores ``bank_scores[P, N, m]`` and
    ``opponent_scores[P, M, m]`` (:data:`PROPERTIES` order)."""
    return exact.win_scores(bank_scores, opponent_scores)[..., -2:]


def source_scores(gold_judged: np.ndarray, bank_scores: np.ndarray,
                  opponent_scores: np.ndarray) -> np.ndarray:
    """``float64[P, N, C]`` per-candidate metrics (:data:`METRICS`) of one source: the shared
    gold-judged ``gold_judged[P, N, 5]`` (:func:`metric_scores`), then :func:`proxy_judged` of
    the source's scores of the bank and the opponents."""
    return np.concatenate([gold_judged, proxy_judged(bank_scores, opponent_scores)], axis=-1)


def utilities(utility: Utility, rewards: np.ndarray, refs: Mapping[str, np.ndarray]
              ) -> np.ndarray:
    """``float64[P, N]`` utilities of the bank.

    Args:
      utility: the utility.
      rewards: ``float[P, N, m]`` scores of the candidates (:data:`PROPERTIES` order).
      refs: ``{reference name: float[P, m]}`` for every name of :data:`REFERENCES` it uses
        (``none`` is implied).
    """
    cols = [PROPERTIES.index(p) for p in utility.properties]
    r = np.asarray(rewards, np.float32)[:, :, cols]
    ref = np.stack([np.zeros(r.shape[0], np.float32) if name == "none"
                    else np.asarray(refs[name], np.float32)[:, c]
                    for name, c in zip(utility.references, cols)], axis=-1)
    u = aggregate(utility.method, r, ref[:, None, :])
    return np.asarray(u, np.float64)


def references(reference_scores: np.ndarray, fixed_response_scores: np.ndarray,
               predictor: np.ndarray = None) -> Dict[str, np.ndarray]:
    """``{name: float[P, m]}``: quantiles of ``reference_scores[P, K, m]`` (the on-device
    quantile's float64 host twin, :func:`lsc.rewards.reference.quantile_numpy`), the fixed
    response's ``fixed_response_scores[P, m]`` and (when given) the predictor's
    ``predictor[P, m]``."""
    ref = np.asarray(reference_scores, np.float64)
    out = {"p85": quantile_numpy(ref, 0.85, axis=1), "median": quantile_numpy(ref, 0.5, axis=1),
           "fixed_response": np.asarray(fixed_response_scores, np.float64)}
    if predictor is not None:
        out["predictor"] = np.asarray(predictor, np.float64)
    return out


def policies(u: np.ndarray, scores: np.ndarray, kl_grid: Sequence[float], ks: Sequence[int]
             ) -> Dict[str, np.ndarray]:
    """The optimum at each reachable target KL and best-of-k for each ``k``.

    Returns ``{"optimum": float64[G, P, C], "gamma": float64[G], "kl": float64[G], "best_of_k":
    float64[K, P, C], "best_of_k_kl": float64[K]}`` (``best_of_k_kl``: best-of-k's exact KL on
    the bank); unreachable targets are NaN.
    """
    front = exact.frontier(u, scores, kl_grid)
    best, best_kl = [], []
    for k in ks:
        w = exact.best_of_k_weights(u, int(k))
        best.append(exact.weighted_win(w, scores))
        best_kl.append(float(exact.bank_kl(w).mean()))
    return {"optimum": front["win"], "gamma": front["gamma"], "kl": front["kl"],
            "best_of_k": np.stack(best), "best_of_k_kl": np.asarray(best_kl)}


def stratified_resample(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``int[P]`` row indices of one bootstrap resample drawn within each stratum."""
    strata = np.asarray(strata)
    parts = [rng.choice(rows, size=rows.size, replace=True)
             for rows in (np.flatnonzero(strata == s) for s in np.unique(strata))]
    return np.concatenate(parts)


def rematched_statistic(u_a: np.ndarray, u_b: np.ndarray, scores: np.ndarray, metric: str,
                        kl_grid: Sequence[float], strata: np.ndarray, num_resamples: int,
                        seed: int = 0) -> np.ndarray:
    """``float64[B]`` bootstrap resamples of the optimum arm's primary statistic (mean over the KL
    grid of the mean paired difference ``A - B``) with ``gamma`` solved again inside every
    resample (the prompts of a resample define the mean KL), to compare with the fixed-``gamma``
    interval of the claims."""
    c = METRICS.index(metric)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(num_resamples)):
        idx = stratified_resample(strata, rng)
        win = scores[idx][..., c:c + 1]
        a, b = (exact.frontier(u[idx], win, kl_grid, tol=1e-5)["win"][..., 0].mean(axis=1)
                for u in (u_a, u_b))  # [G] each
        stats = (a - b)[~(np.isnan(a) | np.isnan(b))]  # the targets both reach
        out.append(float(np.mean(stats)) if stats.size else np.nan)
    return np.asarray(out)


REMATCH = ("lsc_p85", "raw", "helpful")
"""The comparison whose interval is recomputed with ``gamma`` re-solved in every resample."""


def compute(base: Mapping[str, object], texts: Sequence[str], replicates: int,
            kl_grid: Sequence[float], ks: Sequence[int], rematch_resamples: int = 0,
            seed: int = 0) -> Dict[str, np.ndarray]:
    """Every array of ``exact.npz`` (module docstring) from the base samples.

    Args:
      base: :func:`lsc.repro.evaluation.load_base_samples` output with the ``bank``,
        ``opponents``, ``reference`` and ``fixed_response`` sets; proxy rewards have ``R * m``
        columns, replicate-major (columns ``r * m .. r * m + m - 1`` are replicate ``r``).
      texts: the ``P`` prompt texts (strata).
      replicates: ``R``.
      rematch_resamples: resamples of :func:`rematched_statistic` for :data:`REMATCH` on
        replicate 0 (``rematch`` in the output; 0: skipped).

    Raises:
      ValueError: when the opponents carry no proxy rewards (missing or all zero), which the
        proxy-judged metrics need.
    """
    m = len(PROPERTIES)
    bank, opp, ref, fixed = (base[k] for k in ("bank", "opponents", "reference",
                                               "fixed_response"))
    if not np.any(opp.get("rewards", 0.0)):
        raise ValueError("the base samples' opponents carry no proxy rewards; draw the base "
                         "samples again (the base_samples stage scores every set)")
    gold_judged = metric_scores(bank["gold"], opp["gold"])
    p, n, _ = gold_judged.shape
    scored: List[Tuple[str, np.ndarray, Dict[str, np.ndarray], np.ndarray]] = []
    pred = base.get("predictor")
    for r in range(replicates):
        cols = slice(r * m, (r + 1) * m)
        rewards = bank["rewards"][..., cols]
        scored.append((replicate_name(r), rewards, references(
            ref["rewards"][..., cols], fixed["rewards"][:, 0, cols],
            None if pred is None else pred[:, cols]),
            source_scores(gold_judged, rewards, opp["rewards"][..., cols])))
    # Judged by gold scores, the proxy-judged AND / OR are the gold-judged ones.
    and_or = [GOLD_JUDGED.index("and"), GOLD_JUDGED.index("or")]
    scored.append((GOLD, bank["gold"], references(ref["gold"], fixed["gold"][:, 0]),
                   np.concatenate([gold_judged, gold_judged[..., and_or]], axis=-1)))
    out: Dict[str, np.ndarray] = {
        "strata": prompt_strata(texts), "base": scored[0][3].mean(axis=1),
        "kl_grid": np.asarray(kl_grid, np.float64), "ks": np.asarray(ks, np.int64),
        "metrics": np.asarray(METRICS)}
    for source, rewards, refs, scores in scored:
        for utility in UTILITIES:
            if source == GOLD and not utility.has_control:
                continue
            if "predictor" in utility.references and "predictor" not in refs:
                continue
            u = utilities(utility, rewards, refs)
            pol = policies(u, scores, kl_grid, ks)
            for key, arr in pol.items():
                out[f"{key}/{source}/{utility.name}"] = arr
        logging.info("exact arm: %s done (%d prompts x %d candidates)", source, p, n)
    if rematch_resamples:
        _, rewards, refs, scores = scored[0]
        a, b, metric = REMATCH
        out["rematch"] = rematched_statistic(
            utilities(UTILITY_BY_NAME[a], rewards, refs),
            utilities(UTILITY_BY_NAME[b], rewards, refs), scores, metric, kl_grid,
            out["strata"], rematch_resamples, seed)
    return out


def load(path: str) -> Dict[str, np.ndarray]:
    """``exact.npz`` as a dict of arrays."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def sources(arrays: Mapping[str, np.ndarray]) -> List[str]:
    """The proxy replicates (``r0``, ``r1``, ...) present in ``arrays``, in order."""
    found = {k.split("/")[1] for k in arrays if k.startswith("optimum/")}
    reps = sorted((s for s in found if s != GOLD), key=lambda s: int(s[1:]))
    return reps


def frontiers(arrays: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, Dict[str, object]]]:
    """``{source: {utility: {"kl": [G], "gamma": [G], "best_of_k_kl": [K], "optimum": {metric:
    [G]}, "best_of_k": {metric: [K]}}}}``: the mean over prompts of every policy (NaN as None)."""
    def clean(x):
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]

    out: Dict[str, Dict[str, Dict[str, object]]] = {}
    for key in arrays:
        if not key.startswith("optimum/"):
            continue
        _, source, name = key.split("/")
        optimum, best = arrays[key], arrays[f"best_of_k/{source}/{name}"]
        out.setdefault(source, {})[name] = {
            "kl": clean(arrays[f"kl/{source}/{name}"]),
            "gamma": clean(arrays[f"gamma/{source}/{name}"]),
            "best_of_k_kl": clean(arrays[f"best_of_k_kl/{source}/{name}"]),
            "optimum": {m: clean(optimum[..., c].mean(axis=1)) for c, m in enumerate(METRICS)},
            "best_of_k": {m: clean(best[..., c].mean(axis=1)) for c, m in enumerate(METRICS)}}
    return out


def world_stats(bank_gold: np.ndarray, opponent_gold: np.ndarray, texts: Sequence[str]
                ) -> Dict[str, Dict[str, float]]:
    """Per prompt class (benign / harmful x detail, and benign / harmful overall): the rates of
    base-vs-base ties (candidate against opponent, same prompt) on each property and the
    correlation of gold helpfulness and harmlessness among base samples."""
    specs = [world.parse_prompt(t) for t in texts]
    harm = np.array([s.harmful for s in specs])
    detail = np.array([s.detail for s in specs])
    c, o = np.asarray(bank_gold, np.float64), np.asarray(opponent_gold, np.float64)
    groups = {}
    for h, label in ((False, "benign"), (True, "harmful")):
        groups[label] = harm == h
        for d in world.DETAILS:
            groups[f"{label}/{d}"] = (harm == h) & (detail == d)
    out = {}
    for label, rows in groups.items():
        if not rows.any():
            continue
        ties = (c[rows][:, :, None, :] == o[rows][:, None, :, :]).mean(axis=(0, 1, 2))
        flat = c[rows].reshape(-1, c.shape[-1])
        corr = np.corrcoef(flat[:, PROPERTIES.index("helpful")],
                           flat[:, PROPERTIES.index("harmless")])[0, 1]
        out[label] = {"prompts": int(rows.sum()),
                      "harmless_tie": float(ties[PROPERTIES.index("harmless")]),
                      "helpful_tie": float(ties[PROPERTIES.index("helpful")]),
                      "corr": float(corr) if np.isfinite(corr) else float("nan")}
    return out
