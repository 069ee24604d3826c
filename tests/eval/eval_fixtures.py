"""Results entries of a small simulated reproduction, shared by the eval tests."""

from typing import Tuple

import numpy as np

from lsc.eval import diagnostics, kl, win_rate
from lsc.eval import entries as entries_lib
from lsc.eval.claims import (SANITY, Claim, Comparison, check_base_is_chance,
                             check_best_of_k_kl_bound, check_reward_hacking)
from lsc.eval.entries import Selector
from lsc.rewards import names

PROPS = ("harmless", "helpful")


def iv(value, half=0.03):
    return {"value": value, "ci_low": value - half, "ci_high": value + half}


def win(helpful, harmless, and_, or_, half=0.03):
    return {"helpful": iv(helpful, half), "harmless": iv(harmless, half), "and": iv(and_, half),
            "or": iv(or_, half)}


def hacking_curve(drop, steps=20):
    t = np.arange(steps) * 10.0
    proxy = np.linspace(0.0, 2.0, steps)
    peak = steps // 2
    gold = np.concatenate([np.linspace(0, 1, peak), 1 - drop * np.linspace(0, 1, steps - peak)])
    return {"step": t, "proxy": proxy, "gold": gold}


def entries():
    """A base entry, a best-of-k grid, and an RLHF sweep of raw vs LSC (helpfulness).

    Built so that: the base covers 0.5; sigma_AND beats sum on AND; sigma_OR is *worse* than sum
    on OR (a claim that does not reproduce); LSC beats raw at matched KL; raw hacks, LSC barely.
    """
    rng = np.random.default_rng(0)
    n = 600
    b1 = rng.normal(size=(n, 2))
    b0 = rng.normal(size=(n, 2))
    out = [entries_lib.make_entry(
        "base", "base", "base", None, [], {"mean": 0.0, "se": 0.0, "estimator": "k1"},
        win_rate.win_rates(b1, b0, PROPS, num_resamples=500, and_or_mean=True),
        {p: 0.0 for p in PROPS}, {p: float(b1[:, i].mean()) for i, p in enumerate(PROPS)},
        k=1)]
    bok = {  # label -> (method, reference, AND, OR)
        "sum": ("sum", "none", 0.45, 0.80),
        "sigma_and_oracle_median": ("sigma_and", "oracle_median", 0.60, 0.78),
        "sigma_and_predict_median": ("sigma_and", "predict_median", 0.58, 0.78),
        "sigma_and": ("sigma_and_nocenter", None, 0.40, 0.75),
        "sigma_or_oracle_median": ("sigma_or", "oracle_median", 0.35, 0.70),
        "sigma_or": ("sigma_or", "none", 0.30, 0.65),
    }
    for k in (4, 16):
        lift = 0.05 if k == 16 else 0.0
        for lab, (method, ref, a, o) in bok.items():
            out.append(entries_lib.make_entry(
                f"best_of_k/{lab}/k{k}", "best_of_k", method, ref, PROPS,
                {"mean": kl.best_of_k_analytic(k), "se": 0.0, "estimator": "analytic"},
                win(0.55 + lift, 0.52 + lift, a + lift, o + lift),
                {p: 0.1 for p in PROPS}, {p: 0.2 for p in PROPS}, k=k))
    out.append(entries_lib.make_entry(
        "best_of_k/sum/k4/plugin", "best_of_k", "sum", "none", PROPS,
        {"mean": 0.6, "se": 0.01, "estimator": "bok_plugin"}, win(0.5, 0.5, 0.45, 0.8),
        {p: 0.1 for p in PROPS}, {p: 0.2 for p in PROPS}, k=4))
    for method, wins, drop in (("raw", (0.55, 0.60, 0.58), 1.0), ("lsc", (0.65, 0.72, 0.75), 0.1)):
        for (gamma, kl_mean), w in zip(((0.3, 0.5), (0.1, 1.5), (0.03, 4.0)), wins):
            curve = hacking_curve(drop if gamma == 0.03 else 0.0)
            worst = 0.2 if method == "raw" else 0.6
            out.append(entries_lib.make_entry(
                f"rlhf/{method}/g{gamma}", "rlhf", method,
                "oracle_p85" if method == "lsc" else None, ["helpful"],
                {"mean": kl_mean, "se": 0.05, "estimator": "k1"},
                win(w, 0.5, 0.3, 0.7), {"helpful": 1.0}, {"helpful": 0.5}, kl_coef=gamma,
                underfitting={"worst_group": iv(worst, 0.05)},
                reward_hacking=diagnostics.reward_hacking(curve["step"], curve["proxy"],
                                                          curve["gold"]),
                curve={k: v.tolist() for k, v in curve.items()}))
    return out


# --------------------------------------------------------------------------- a claim list

# The claims of the earlier reproduction (RLHF and the sampled best-of-k grid), kept here as a
# claim list that exercises every part of the claim model (lsc.eval.claims) on entries.

MEDIAN_REFS = ("oracle_median",)
NO_REFS = (names.NO_REFERENCE,)
_RULE = ("match runs at equal KL (RLHF) or k (best-of-k); yes when the 95% CI of A - B excludes "
         "0 above at some point and below at none; no in the mirror case; else inconclusive")


def _rl(methods, n, refs=None):
    return Selector("rlhf", tuple(methods), None if refs is None else tuple(refs), n)


def _bok(methods, refs=None, n=2):
    return Selector("best_of_k", tuple(methods), None if refs is None else tuple(refs), n)


CLAIMS: Tuple[Claim, ...] = (
    Claim("base_is_chance", SANITY,
          "The base policy judged against independent base samples wins half the time "
          "(per property).",
          "yes when every per-property 95% CI covers 0.5 (AND/OR shown, not expected at 0.5)",
          check=check_base_is_chance),
    Claim("bok_kl_bound", SANITY,
          "Best-of-k KL estimates respect the analytic bound log k - (k-1)/k.",
          "yes when every estimate minus 2 SE is at most the bound",
          check=check_best_of_k_kl_bound),
    Claim("lsc_vs_raw", "paper (RLHF, helpfulness)",
          "Aligning to the LSC-transformed reward log sigma(r - r_ref) gives a higher "
          "helpfulness win rate than the raw reward at the same KL.",
          _RULE,
          (Comparison(_rl(names.LSC_NAMES, 1), _rl(names.RAW_NAMES, 1), "win_rate.helpful"),)),
    Claim("lsc_sum_vs_sum", "paper (RLHF, helpful and harmless)",
          "The sum of LSC-transformed rewards (a logical AND) beats the raw sum: higher win rate "
          "on both properties at once (AND) at the same KL.",
          _RULE,
          (Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.and"),
           Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.helpful", decisive=False),
           Comparison(_rl(names.LSC_NAMES, 2), _rl(names.RAW_NAMES, 2, NO_REFS),
                      "win_rate.harmless", decisive=False))),
    Claim("underfitting", "paper (RLHF, helpfulness)",
          "LSC mitigates underfitting: it improves the worst-served prompts (lowest base "
          "gold-score quartile) more than the raw reward at the same KL.",
          _RULE + "; metric: underfitting.worst_group (mean gold improvement of quartile 1)",
          (Comparison(_rl(names.LSC_NAMES, 1), _rl(names.RAW_NAMES, 1),
                      "underfitting.worst_group"),)),
    Claim("reward_hacking", "paper (RLHF, helpfulness)",
          "LSC mitigates reward hacking: under strong optimisation the raw reward's proxy keeps "
          "rising while gold falls; LSC loses much less gold.",
          "at the smallest common kl_coef: yes when raw is flagged hacking and LSC's gold drop "
          "after its peak is at most half of raw's; no when LSC drops as much or more; "
          "inconclusive when raw shows no hacking (point values, no CI)",
          check=check_reward_hacking),
    Claim("and_beats_sum", "note, claim 1 (best-of-k)",
          "sigma_AND implements logical AND: with the median reference it beats the raw sum on "
          "the AND win rate.",
          _RULE,
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sum"], NO_REFS),
                      "win_rate.and"),)),
    Claim("or_beats_sum", "note, claim 1 (best-of-k)",
          "sigma_OR implements logical OR: with the median reference it beats the raw sum on "
          "the OR win rate.",
          _RULE,
          (Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sum"], NO_REFS),
                      "win_rate.or"),)),
    Claim("and_or_differ", "note, claim 1 (best-of-k)",
          "sigma_AND and sigma_OR are not interchangeable: sigma_AND wins more on AND, "
          "sigma_OR more on OR.",
          _RULE + "; both comparisons must reproduce",
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sigma_or"], MEDIAN_REFS),
                      "win_rate.and"),
           Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sigma_and"], MEDIAN_REFS),
                      "win_rate.or"))),
    Claim("reference_matters", "note, claim 2 (best-of-k)",
          "The reference matters: subtracting the base policy's median reward beats no "
          "subtraction (sigma_AND on AND, sigma_OR on OR); a predicted median is shown too.",
          _RULE + "; the oracle-median comparisons decide, predicted-median rows are shown",
          (Comparison(_bok(["sigma_and"], MEDIAN_REFS), _bok(["sigma_and"], NO_REFS),
                      "win_rate.and"),
           Comparison(_bok(["sigma_or"], MEDIAN_REFS), _bok(["sigma_or"], NO_REFS),
                      "win_rate.or"),
           Comparison(_bok(["sigma_and"], ["predict_median"]), _bok(["sigma_and"], NO_REFS),
                      "win_rate.and", decisive=False),
           Comparison(_bok(["sigma_or"], ["predict_median"]), _bok(["sigma_or"], NO_REFS),
                      "win_rate.or", decisive=False))),
)


