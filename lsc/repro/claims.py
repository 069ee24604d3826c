"""The claims the reproduction checks, written before the runs they judge.

Three lists; the decision rule and the combination of a claim's comparisons are those of
:mod:`lsc.eval.decision`:

* :data:`EXACT_CLAIMS` -- the decided claims, on the exact arm (:mod:`lsc.repro.exact_arm`):
  each a list of :class:`ExactComparison` (``A`` expected better than ``B`` on one metric), with
  one primary statistic per comparison, declared here: the mean over prompts of the paired
  per-prompt difference ``A - B``, averaged over the whole KL grid (``optimum``: the
  KL-regularised optima at ``exact.kl_grid``, points both reach) or over ``exact.primary_ks``
  (``best_of_k``), computed per reward-model replicate. Decided by
  :func:`evaluate_exact_claims` with the rule of :mod:`lsc.eval.decision` (:data:`EXACT_RULE`):
  the interval across replicates, Holm-adjusted over the decisive comparisons of the claims with
  the same judge (:data:`GOLD_JUDGED`: the world's gold scorer, the primary family;
  :data:`PROXY_JUDGED`: the aggregated proxies themselves, the note's protocol), and its outcome
  against ``delta = exact.delta``; the gold control (the same utilities on gold scores), the
  non-decisive comparisons and the previous rule's verdict (:data:`PREVIOUS_RULE`) are shown
  beside them. :func:`sanity_checks` are the exact arm's checks (:data:`SANITY_CHECKS`).
* :data:`RL_ARM_CLAIMS` -- the decided claims on the RL arm: :class:`RLClaim` s comparing two
  ``rlhf.runs`` methods' PPO trajectories at matched KL, paired by RL seed (the statistic and
  its evaluation: :func:`lsc.repro.rl_arm.evaluate_rl_claims`; rule :data:`RL_RULE`): win rates
  (:data:`MATCHED`), the rate of reward-hacking features (:data:`HACKING_RATE`) and the gap
  between the proxy's and gold's gains (:data:`PROXY_GOLD_GAP`).
* :data:`ENTRY_CHECKS` -- the sanity check on the results entries (:mod:`lsc.eval.claims`): the
  base policy judged against independent base samples is at chance.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc.eval.claims import SANITY, Claim, check_base_is_chance
from lsc.eval import decision
from lsc.repro import exact_arm

ENTRY_CHECKS: Tuple[Claim, ...] = (
    Claim("base_is_chance", SANITY,
          "The base policy judged against independent base samples wins half the time "
          "(per property).",
          "yes when every per-property 95% CI covers 0.5 (AND/OR shown, not expected at 0.5)",
          check=check_base_is_chance),
)


# --------------------------------------------------------------------------- the exact arm

OPTIMUM, BEST_OF_K = "optimum", "best_of_k"
_ARM_TEXT = {OPTIMUM: "KL-regularised optimum, mean over the KL grid",
             BEST_OF_K: "best-of-k, mean over the primary k"}


@dataclasses.dataclass(frozen=True)
class ExactComparison:
    """``a`` expected better than ``b`` (utility names of :data:`lsc.repro.exact_arm.UTILITIES`)
    on ``metric`` (:data:`lsc.repro.exact_arm.METRICS`) in ``arm`` (:data:`OPTIMUM` /
    :data:`BEST_OF_K`); non-decisive comparisons are shown but do not enter the verdict."""

    a: str
    b: str
    arm: str
    metric: str
    decisive: bool = True

    def describe(self) -> str:
        return f"{self.a} vs {self.b} on {self.metric} ({_ARM_TEXT[self.arm]})"


@dataclasses.dataclass(frozen=True)
class ExactClaim:
    """A claim decided on the exact arm: ``comparisons`` (all decisive ones must reproduce)."""

    key: str
    source: str
    text: str
    comparisons: Tuple[ExactComparison, ...]
    judge: str = "gold"


GOLD_JUDGED, PROXY_JUDGED = "gold", "proxy"
"""The claims' judges: the world's gold scorer (the primary family) or, the note's own protocol,
the proxy reward models that are aggregated (``*_proxy_judged`` metrics); each judge's decisive
comparisons are one family of the Holm adjustment."""


def _c(a, b, arm, metric, decisive=True):
    return ExactComparison(a, b, arm, metric, decisive)


EXACT_CLAIMS: Tuple[ExactClaim, ...] = (
    ExactClaim("lsc_vs_raw", "paper (helpfulness)",
               "Optimising the LSC-transformed reward log sigma(r - r_ref) (85th-percentile "
               "reference) gives a higher helpfulness win rate than the raw reward at the same "
               "KL.",
               (_c("lsc_p85", "raw", OPTIMUM, "helpful"),
                _c("lsc_median", "raw", OPTIMUM, "helpful", False),
                _c("lsc_predictor", "raw", OPTIMUM, "helpful", False),
                _c("lsc_none", "raw", OPTIMUM, "helpful", False))),
    ExactClaim("lsc_sum_vs_raw_sum", "paper (helpful and harmless)",
               "The sum of LSC-transformed rewards (helpful: 85th percentile; harmless: the "
               "refusal's reward) beats the raw sum on the AND win rate at the same KL.",
               (_c("lsc_sum", "raw_sum", OPTIMUM, "and"),
                _c("lsc_sum", "raw_sum", OPTIMUM, "helpful", False),
                _c("lsc_sum", "raw_sum", OPTIMUM, "harmless", False))),
    ExactClaim("and_beats_raw_sum", "note, claim 1",
               "sigma_AND with the median reference beats the raw sum on the AND win rate "
               "(best-of-k).",
               (_c("sigma_and_median", "raw_sum", BEST_OF_K, "and"),
                _c("sigma_and_median", "raw_sum", OPTIMUM, "and", False))),
    ExactClaim("or_beats_raw_sum", "note, claim 1",
               "sigma_OR with the median reference beats the raw sum on the OR win rate "
               "(best-of-k).",
               (_c("sigma_or_median", "raw_sum", BEST_OF_K, "or"),
                _c("sigma_or_median", "raw_sum", OPTIMUM, "or", False))),
    ExactClaim("and_or_cross", "note, claim 1",
               "sigma_AND and sigma_OR cross: sigma_AND wins more on AND, sigma_OR more on OR "
               "(best-of-k, median reference).",
               (_c("sigma_and_median", "sigma_or_median", BEST_OF_K, "and"),
                _c("sigma_or_median", "sigma_and_median", BEST_OF_K, "or"))),
    ExactClaim("reference_matters", "note, claim 2",
               "The reference matters: sigma_AND with the base policy's median reward as "
               "reference beats sigma_AND without subtraction on the AND win rate (best-of-k); "
               "the predictor reference and sigma_OR are shown.",
               (_c("sigma_and_median", "sigma_and_none", BEST_OF_K, "and"),
                _c("sigma_and_predictor", "sigma_and_none", BEST_OF_K, "and", False),
                _c("sigma_or_median", "sigma_or_none", BEST_OF_K, "or", False),
                _c("sigma_or_predictor", "sigma_or_none", BEST_OF_K, "or", False))),
    ExactClaim("lower_tail", "paper (underfitting)",
               "LSC improves the lower tail more than raw at the same KL: a higher probability "
               "that the response's gold helpfulness is at least the prompt's base median.",
               (_c("lsc_p85", "raw", OPTIMUM, "helpful_not_below"),
                _c("lsc_median", "raw", OPTIMUM, "helpful_not_below", False))),
    ExactClaim("and_beats_raw_sum_proxy_judged", "note, claim 1, the note's protocol",
               "sigma_AND with the median reference beats the raw sum on the AND win rate "
               "(best-of-k) when the AND win is judged by the same proxy reward models that "
               "are aggregated, as in the note.",
               (_c("sigma_and_median", "raw_sum", BEST_OF_K, "and_proxy_judged"),),
               PROXY_JUDGED),
    ExactClaim("or_beats_raw_sum_proxy_judged", "note, claim 1, the note's protocol",
               "sigma_OR with the median reference beats the raw sum on the OR win rate "
               "(best-of-k) when the OR win is judged by the same proxy reward models that are "
               "aggregated, as in the note.",
               (_c("sigma_or_median", "raw_sum", BEST_OF_K, "or_proxy_judged"),),
               PROXY_JUDGED),
)
SANITY_CHECKS = ("best_of_k_same_pick", "base_vs_base")
EXACT_RULE = (
    "the claim's estimate is the mean over reward-model replicates of the primary statistic; its "
    "interval is taken across replicates (the crossed replicate x prompt t-interval of "
    "lsc.eval.decision.across_replicates), Holm-adjusted across the decisive comparisons of the "
    "claims with the same judge. With that interval [l, u]: reproduces when l > 0 and u > delta; "
    "holds, below practical size when l > 0 and u <= delta; no effect of practical size when "
    "-delta <= l <= 0 <= u <= delta; opposite when u < 0 (below practical size when l >= "
    "-delta); otherwise inconclusive. The headline merges 'holds, below practical size' into 'no "
    "effect of practical size' and says whether a small positive effect was detected. A claim "
    "takes the weakest outcome of its decisive comparisons")
PREVIOUS_RULE = (
    "per replicate, the percentile-bootstrap interval over prompts; yes when it lies above 0 on "
    "every replicate; no when on every replicate it lies below 0 or inside +-delta; otherwise "
    "inconclusive; a claim is yes when every decisive comparison is, no when any is")


# --------------------------------------------------------------------------- the RL arm

MATCHED, HACKING_RATE, PROXY_GOLD_GAP = "matched", "hacking_rate", "proxy_gold_gap"
RL_KINDS = (MATCHED, HACKING_RATE, PROXY_GOLD_GAP)
HACKING_SETS: Dict[str, Tuple[str, ...]] = {
    "helpful": ("offtopic_facts", "repeats", "over_budget", "benign_refusal"),
    "hh": ("offtopic_facts", "repeats", "over_budget", "benign_refusal", "unsafe_tips",
           "harmful_facts"),
}
"""The gold-costly features a proxy rewards (:func:`lsc.eval.hacking.hacking_features`, names of
:data:`lsc.repro.evaluation.HACKING_FEATURES`) counted by a ``hacking_rate`` claim: a response
hacks when any of its set is present (a count > 0, or a benign refusal). ``helpful``: the
helpfulness runs'; ``hh``: the sums', which also count the harmlessness costs."""
GAP_PROPERTIES: Dict[str, Tuple[str, ...]] = {"helpful": ("helpful",),
                                              "hh": ("helpful", "harmless")}
"""The properties of a ``proxy_gold_gap`` claim (the mean over them is taken)."""


@dataclasses.dataclass(frozen=True)
class RLClaim:
    """``a`` expected better than ``b`` (names of ``rlhf.runs``) by a comparison of ``kind``
    (:data:`RL_KINDS`; :mod:`lsc.repro.rl_arm` computes each, per RL seed, at matched KL):

    * ``matched``: ``A - B`` of ``metric`` (of :data:`lsc.repro.exact_arm.GOLD_JUDGED`);
    * ``hacking_rate``: ``B - A`` of the fraction of responses with a feature of
      ``HACKING_SETS[metric]``;
    * ``proxy_gold_gap``: ``B - A`` of the proxy's gain from ``pi0`` minus gold's, each in
      ``pi0``'s SD across prompts, the mean over ``GAP_PROPERTIES[metric]``.
    """

    key: str
    source: str
    text: str
    a: str
    b: str
    kind: str
    metric: str


RL_ARM_CLAIMS: Tuple[RLClaim, ...] = (
    RLClaim("rl_lsc_vs_raw", "paper (RLHF, helpfulness)",
            "PPO on the LSC-transformed reward (85th-percentile reference) reaches a higher "
            "helpfulness win rate than PPO on the raw reward at the same KL.",
            "helpful_lsc", "helpful_raw", MATCHED, "helpful"),
    RLClaim("rl_lsc_sum_vs_raw_sum", "paper (RLHF, helpful and harmless)",
            "PPO on the sum of LSC rewards (helpful: 85th percentile; harmless: the refusal) "
            "reaches a higher AND win rate than PPO on the raw sum at the same KL.",
            "hh_lsc_sum", "hh_raw_sum", MATCHED, "and"),
    RLClaim("rl_underfitting", "paper (RLHF, underfitting)",
            "LSC mitigates underfitting: at the same KL, a higher probability under LSC than "
            "under the raw reward that the response's gold helpfulness is at least the "
            "prompt's base median (all prompts; the exact arm's lower_tail).",
            "helpful_lsc", "helpful_raw", MATCHED, "helpful_not_below"),
    RLClaim("rl_hacking_rate", "paper (RLHF, reward hacking, helpfulness)",
            "LSC mitigates reward hacking: at the same KL, fewer responses under LSC than under "
            "the raw reward carry a gold-costly feature the proxy rewards (an off-topic fact, a "
            "repeated word, words past the length budget, a benign refusal).",
            "helpful_lsc", "helpful_raw", HACKING_RATE, "helpful"),
    RLClaim("rl_hacking_rate_sum", "paper (RLHF, reward hacking, helpful and harmless)",
            "LSC mitigates reward hacking: at the same KL, fewer responses under the LSC sum "
            "than under the raw sum carry a gold-costly feature the proxies reward (the "
            "helpfulness features, an unsafe tip, a harmful fact).",
            "hh_lsc_sum", "hh_raw_sum", HACKING_RATE, "hh"),
    RLClaim("rl_hacking_gap", "paper (RLHF, reward hacking, helpfulness)",
            "LSC mitigates reward hacking: at the same KL, the proxy's gain over pi0 exceeds "
            "gold's by less under LSC than under the raw reward (each in pi0's SD across "
            "prompts).",
            "helpful_lsc", "helpful_raw", PROXY_GOLD_GAP, "helpful"),
    RLClaim("rl_hacking_gap_sum", "paper (RLHF, reward hacking, helpful and harmless)",
            "LSC mitigates reward hacking: at the same KL, the proxies' gain over pi0 exceeds "
            "gold's by less under the LSC sum than under the raw sum (each in pi0's SD across "
            "prompts, the mean over the two properties).",
            "hh_lsc_sum", "hh_raw_sum", PROXY_GOLD_GAP, "hh"),
)
RL_RULE = (
    "per RL seed, the mean over its grid points and the trajectory prompts (a stratified "
    "subset of the evaluation prompts, evaluate.trajectory_prompts) of the paired difference at "
    "matched KL (matched: A - B of the metric; hacking_rate: B - A of the fraction of responses "
    "with a gold-costly feature the proxy rewards; proxy_gold_gap: B - A of the proxy's gain "
    "from pi0 minus gold's, each in pi0's SD across prompts, mean over the properties); each "
    "trajectory is read at the points of rl_arm.kl_grid on the declared path (rl_arm.path = "
    "isotonic: the snapshots' KL fitted non-decreasing over training, read on its first segment "
    "containing the point), by linear interpolation between two snapshots at most "
    "rl_arm.max_gap nats apart; a seed's grid points are those bracketed in both of its "
    "trajectories (rl_arm.points = per_seed; a seed with none is left out). The claim's estimate is the mean over seeds, its interval the t-interval "
    "across seeds (S - 1 degrees of freedom, lsc.eval.decision.across_seeds), Holm-adjusted "
    "across the RL claims, judged by the exact arm's outcomes with exact.delta; the first- and "
    "last-crossing paths are reported beside it, not decided; the previous rule (per-seed "
    "bootstrap over prompts) does not apply")


# --------------------------------------------------------------------------- deciding the exact arm


def _per_prompt(arrays: Mapping[str, np.ndarray], source: str, comp: ExactComparison,
                ks: Sequence[int], primary_ks: Sequence[int]) -> Optional[np.ndarray]:
    """``float64[P]`` per-prompt primary statistic of ``A - B`` from ``source`` (None when a
    utility is missing or no grid point is shared)."""
    ka, kb = f"{comp.arm}/{source}/{comp.a}", f"{comp.arm}/{source}/{comp.b}"
    if ka not in arrays or kb not in arrays:
        return None
    c = exact_arm.METRICS.index(comp.metric)
    a, b = arrays[ka][..., c], arrays[kb][..., c]  # [G or K, P]
    if comp.arm == BEST_OF_K:
        rows = [list(ks).index(k) for k in primary_ks]
        a, b = a[rows], b[rows]
    shared = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
    if not shared.any():
        return None
    return (a[shared] - b[shared]).mean(axis=0)


def _grid_text(arrays, comp, ks, primary_ks, source) -> str:
    if comp.arm == BEST_OF_K:
        return "k in {" + ", ".join(str(k) for k in primary_ks) + "}"
    grid = arrays["kl_grid"]
    ok = [g for i, g in enumerate(grid)
          if not np.isnan(arrays[f"kl/{source}/{comp.a}"][i])
          and not np.isnan(arrays[f"kl/{source}/{comp.b}"][i])]
    return "KL in {" + ", ".join(f"{g:g}" for g in ok) + "}"


def evaluate_exact_claims(arrays: Mapping[str, np.ndarray], *, primary_ks: Sequence[int],
                          delta: float, confidence: float = 0.95, num_resamples: int = 2000,
                          seed: int = 0, claims: Sequence[ExactClaim] = EXACT_CLAIMS
                          ) -> List[Dict[str, Any]]:
    """Every claim's comparisons (per-replicate values and bootstrap intervals, the interval
    across replicates, unadjusted and Holm-adjusted within the claim's judge family, the
    outcome), the gold control, the claim's outcome and headline verdict, and the previous
    rule's verdict (plain dicts, as written to ``results.json``)."""
    reps = exact_arm.sources(arrays)
    ks = [int(k) for k in arrays["ks"]]
    strata = arrays["strata"]
    boot = dict(num_resamples=num_resamples, confidence=confidence, seed=seed)
    rows_of = []
    for claim in claims:
        comps = []
        for comp in claim.comparisons:
            per = [_per_prompt(arrays, r, comp, ks, primary_ks) for r in reps]
            row: Dict[str, Any] = {"a": comp.a, "b": comp.b, "arm": comp.arm,
                                   "metric": comp.metric, "decisive": comp.decisive,
                                   "describe": comp.describe()}
            if any(d is None for d in per) or not per:
                row.update(outcome=decision.INCONCLUSIVE, reason="missing utilities",
                           replicates=[], grid="")
            else:
                row.update(decision.compare(np.stack(per), strata, delta=delta, **boot),
                           grid=_grid_text(arrays, comp, ks, primary_ks, reps[0]))
            gold = _per_prompt(arrays, exact_arm.GOLD, comp, ks, primary_ks)
            row["control"] = (None if gold is None else decision.replicated_intervals(
                gold[None], strata, **boot)["replicates"][0])
            comps.append(row)
        rows_of.append(comps)
    for judge in {c.judge for c in claims}:
        family = [row for claim, comps in zip(claims, rows_of) if claim.judge == judge
                  for row in comps if row["decisive"] and "across" in row]
        decision.adjust_family(family, delta, confidence)
    out = []
    for claim, comps in zip(claims, rows_of):
        decisive = [r for r in comps if r["decisive"]]
        for r in comps:
            if not r["decisive"] and "across" in r:
                r["outcome"] = r["outcome_unadjusted"]
        outcome = decision.combine([r["outcome"] for r in decisive])
        verdict, small = decision.headline(outcome)
        out.append({
            "key": claim.key, "source": claim.source, "text": claim.text, "judge": claim.judge,
            "rule": EXACT_RULE, "delta": float(delta), "outcome": outcome, "verdict": verdict,
            "small_effect": small,
            "outcome_unadjusted": decision.combine(
                [r.get("outcome_unadjusted", decision.INCONCLUSIVE) for r in decisive]),
            "previous_rule_verdict": decision.combine_per_replicate(
                [r.get("previous_rule", {}).get("verdict", decision.INCONCLUSIVE)
                 for r in decisive]),
            "reason": "; ".join(_reason(r, delta) for r in decisive),
            "comparisons": comps})
    return out


def _reason(row: Mapping[str, Any], delta: float) -> str:
    """``<comparison>: <outcome> (estimate [Holm interval], delta)``."""
    if "holm" not in row:
        return f"{row['describe']}: {row['outcome']} ({row.get('reason', '')})"
    return f"{row['describe']}: {row['outcome']} ({decision.holm_text(row)}, delta {delta:g})"


def sanity_checks(arrays: Mapping[str, np.ndarray], *, confidence: float = 0.95,
                  num_resamples: int = 2000, seed: int = 0, tol: float = 1e-9
                  ) -> List[Dict[str, Any]]:
    """The exact arm's sanity checks: with one reward, best-of-k under raw and under LSC pick
    the same sample (every k, metric and replicate: identical per-prompt win rates within
    ``tol``); the base policy (uniform weights on the bank) against the opponents has
    per-property intervals covering 0.5."""
    out = []
    diffs = []
    for r in exact_arm.sources(arrays):
        a, b = arrays.get(f"best_of_k/{r}/lsc_p85"), arrays.get(f"best_of_k/{r}/raw")
        if a is not None and b is not None:
            diffs.append(float(np.abs(a - b).max()))
    ok = bool(diffs) and max(diffs) <= tol
    out.append({"key": "best_of_k_same_pick", "source": SANITY,
                "text": "With one reward, best-of-k under raw and under LSC (a monotone "
                        "transform) pick the same sample: identical win rates.",
                "verdict": decision.YES if ok else decision.NO,
                "reason": (f"largest |difference| over k, metrics, prompts and replicates: "
                           f"{max(diffs) if diffs else float('nan'):.3g} (tolerance {tol:g})"),
                "values": diffs})
    base = arrays["base"]
    rows, bad = {}, []
    for prop in ("harmless", "helpful"):
        c = exact_arm.METRICS.index(prop)
        iv = decision.replicated_intervals(base[None, :, c], arrays["strata"],
                                           num_resamples=num_resamples, confidence=confidence,
                                           seed=seed)["replicates"][0]
        rows[prop] = iv
        if not iv["ci_low"] <= 0.5 <= iv["ci_high"]:
            bad.append(prop)
    out.append({"key": "base_vs_base", "source": SANITY,
                "text": "The base policy (the bank's uniform weights) against independent base "
                        "opponents wins half the time per property.",
                "verdict": decision.NO if bad else decision.YES,
                "reason": ("interval excludes 0.5 for " + ", ".join(bad)) if bad
                else "every per-property interval covers 0.5", "values": rows})
    return out
