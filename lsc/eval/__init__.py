"""lsc.eval: judging aligned policies against the base policy (docs/design.md §1).

Modules (numpy-first; import the one you need):

* :mod:`lsc.eval.win_rate` -- per-property, AND and OR win rates against independent base
  samples, ties one half, percentile-bootstrap CIs over prompts (optionally stratified by
  prompt class), paired differences, summaries across seeds.
* :mod:`lsc.eval.kl` -- KL(pi || pi0) from per-token log-probs (k1, k3; mean and standard
  error), best-of-k's analytic ``log k - (k - 1) / k`` and exact / plug-in discrete values.
* :mod:`lsc.eval.diagnostics` -- underfitting (improvement by base-score quartile), reward
  hacking (proxy vs gold along training) and shortcut features of responses.
* :mod:`lsc.eval.exact` -- exact evaluation on sample banks: KL-regularised optima (weights,
  KL, gamma for a target KL by root finding, the optimum at every point of a KL grid) and
  best-of-k with ties in closed form.
* :mod:`lsc.eval.trajectory` -- training trajectories read at matched KL (first crossing),
  paired by seed.
* :mod:`lsc.eval.decision` -- intervals of paired per-prompt differences across replicates
  (and each replicate's own), Holm's adjustment, the rule's outcomes against the practical-size
  threshold delta (reproduces / holds below practical size / no effect of practical size /
  opposite / inconclusive) and the combination of a claim's comparisons.
* :mod:`lsc.eval.plots` -- the paper's figures as PNG (matplotlib, Agg).
* :mod:`lsc.eval.entries` -- the results-entry schema: validation, loading, selection.
* :mod:`lsc.eval.claims` -- checks on results entries (the base policy at chance; callers pass
  the list).
* :mod:`lsc.eval.report` -- ``report.md``: the decided claims, then one table per claim over
  entries.

Nothing here knows the world being judged: callers pass the judge (e.g.
``lsc.data.world.gold_judge``) and the world's shortcut vocabulary
(:class:`lsc.eval.diagnostics.Shortcuts`) in.
"""
