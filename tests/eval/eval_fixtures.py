"""Results entries of a small simulated reproduction, shared by the eval tests."""

from typing import Tuple

import numpy as np

from lsc.eval import diagnostics, kl, win_rate
from lsc.eval import entries as entries_lib
from lsc.eval.claims import SANITY, Claim, check_base_is_chance

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
    """A base entry (its per-property CIs cover 0.5), a best-of-k grid, and an RLHF sweep of raw
    vs LSC (helpfulness)."""
    rng = np.random.default_rng(0)
    n = 600
    b1 = rng.normal(size=(n, 2))
    b0 = rng.normal(size=(n, 2))
    out = [entries_lib.make_entry(
        "base", "base", "base", None, [], {"mean": 0.0, "se": 0.0, "estimator": "k1"},
        win_rate.win_rates(b1, b0, PROPS, num_resamples=500, and_or_mean=True),
        {p: 0.0 for p in PROPS}, {p: float(b1[:, i].mean()) for i, p in enumerate(PROPS)},
        k=1)]
    best_of_k = {  # label -> (method, reference, AND, OR)
        "raw_sum": ("raw_sum", "none", 0.45, 0.80),
        "sigma_and_median": ("sigma_and", "median", 0.60, 0.78),
        "sigma_and_predictor": ("sigma_and", "predictor", 0.58, 0.78),
        "sigma_and": ("sigma_and_nocenter", None, 0.40, 0.75),
        "sigma_or_median": ("sigma_or", "median", 0.35, 0.70),
        "sigma_or": ("sigma_or", "none", 0.30, 0.65),
    }
    for k in (4, 16):
        lift = 0.05 if k == 16 else 0.0
        for lab, (method, ref, a, o) in best_of_k.items():
            out.append(entries_lib.make_entry(
                f"best_of_k/{lab}/k{k}", "best_of_k", method, ref, PROPS,
                {"mean": kl.best_of_k_analytic(k), "se": 0.0, "estimator": "analytic"},
                win(0.55 + lift, 0.52 + lift, a + lift, o + lift),
                {p: 0.1 for p in PROPS}, {p: 0.2 for p in PROPS}, k=k))
    out.append(entries_lib.make_entry(
        "best_of_k/raw_sum/k4/plugin", "best_of_k", "raw_sum", "none", PROPS,
        {"mean": 0.6, "se": 0.01, "estimator": "best_of_k_plugin"}, win(0.5, 0.5, 0.45, 0.8),
        {p: 0.1 for p in PROPS}, {p: 0.2 for p in PROPS}, k=4))
    for method, wins, drop in (("raw", (0.55, 0.60, 0.58), 1.0), ("lsc", (0.65, 0.72, 0.75), 0.1)):
        for (gamma, kl_mean), w in zip(((0.3, 0.5), (0.1, 1.5), (0.03, 4.0)), wins):
            curve = hacking_curve(drop if gamma == 0.03 else 0.0)
            worst = 0.2 if method == "raw" else 0.6
            out.append(entries_lib.make_entry(
                f"rlhf/{method}/seed_0/kl_{gamma}", "rlhf", method,
                "p85" if method == "lsc" else None, ["helpful"],
                {"mean": kl_mean, "se": 0.05, "estimator": "k1"},
                win(w, 0.5, 0.3, 0.7), {"helpful": 1.0}, {"helpful": 0.5}, kl_coef=gamma,
                underfitting={"worst_group": iv(worst, 0.05)},
                reward_hacking=diagnostics.reward_hacking(curve["step"], curve["proxy"],
                                                          curve["gold"]),
                curve={k: v.tolist() for k, v in curve.items()}))
    return out


# --------------------------------------------------------------------------- a check list

CHECKS: Tuple[Claim, ...] = (
    Claim("base_is_chance", SANITY,
          "The base policy judged against independent base samples wins half the time "
          "(per property).",
          "yes when every per-property 95% CI covers 0.5 (AND/OR shown, not expected at 0.5)",
          check=check_base_is_chance),
)
