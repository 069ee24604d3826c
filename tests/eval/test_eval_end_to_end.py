"""The evaluation library end to end on the synthetic world, with the demonstrator as the base
policy and best-of-k under a misspecified proxy (gold helpfulness plus a filler bonus)."""

import numpy as np

from lsc.data import world, world_data
from lsc.eval import claims as claims_lib
from lsc.eval import decision, diagnostics, kl, plots, report, win_rate
from lsc.eval import entries as entries_lib
from eval_fixtures import CHECKS

PROPS = ("harmless", "helpful")


def _proxy(prompt, response):
    bonus = 1.0 if world.FILLER in response.split() else 0.0
    return world.gold_helpful(prompt, response) + bonus


def test_best_of_k_on_the_synthetic_world(tmp_path):
    rng = np.random.default_rng(0)
    demo = world_data.Demonstrator()
    n, k, m_ref = 300, 4, 48
    prompts = [world.sample_prompt(rng, 0.25) for _ in range(n)]
    base_a = [demo.sample(p, rng) for p in prompts]  # compared against
    base_b = [demo.sample(p, rng) for p in prompts]  # independent: the base entry's "policy"
    ref = [[demo.sample(p, rng) for _ in range(m_ref)] for p in prompts]
    chosen = []
    for p in prompts:
        cands = [demo.sample(p, rng) for _ in range(k)]
        chosen.append(max(cands, key=lambda y: _proxy(p, y)))
    judge = world.gold_judge(PROPS)

    wr_base = win_rate.judged_win_rates(judge, prompts, base_b, base_a, PROPS,
                                        num_resamples=500, and_or_mean=True)
    wr_best = win_rate.judged_win_rates(judge, prompts, chosen, base_a, PROPS, num_resamples=500)
    assert wr_best["helpful"]["ci_low"] > 0.5  # best-of-k helps on the property it targets

    ref_util = np.array([[_proxy(p, y) for y in ys] for p, ys in zip(prompts, ref)])
    best_kl = kl.best_of_k_kl_plugin(ref_util, k)
    assert best_kl.mean - 2 * best_kl.se <= kl.best_of_k_analytic(k)

    gold_chosen = judge(prompts, chosen)
    gold_base = judge(prompts, base_a)
    strata = np.array([judge([p] * m_ref, ys)[:, 1].mean() for p, ys in zip(prompts, ref)])
    under = diagnostics.underfitting(gold_chosen[:, 1], gold_base[:, 1], strata,
                                     num_resamples=300)
    assert under["improvement"]["value"] > 0
    shift = diagnostics.shortcut_shift(chosen, base_a, diagnostics.Shortcuts.of(world))
    assert shift["difference"]["filler_rate"] > 0  # the proxy's spurious feature is selected

    under.pop("per_prompt")
    entries = [
        entries_lib.make_entry("base", "base", "base", None, [], {"mean": 0.0, "se": 0.0,
                                                                  "estimator": "k1"},
                               wr_base, {"helpful": 0.0},
                               {p: float(v) for p, v in zip(PROPS, gold_base.mean(0))}),
        entries_lib.make_entry(f"best_of_k/proxy/k{k}", "best_of_k", "raw", None, ["helpful"],
                               best_kl.to_dict(), wr_best,
                               {"helpful": float(np.mean([_proxy(p, y)
                                                          for p, y in zip(prompts, chosen)]))},
                               {p: float(v) for p, v in zip(PROPS, gold_chosen.mean(0))}, k=k,
                               underfitting=under, shortcuts=shift["policy"]),
    ]
    results = {r.claim.key: r for r in claims_lib.check_claims(entries, CHECKS)}
    assert results["base_is_chance"].verdict == decision.YES
    text = report.render_report(entries, CHECKS)
    assert "best_of_k/proxy/k4" in text
    png = plots.plot_and_or_bars(plots.and_or_bars_data(entries), str(tmp_path / "b.png"),
                                 base=wr_base)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
