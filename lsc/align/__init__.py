"""Alignment with transformed and combined rewards.

* :mod:`lsc.align.utility` -- the per-sequence utility ``u(x, y)`` from per-property rewards,
  references and an aggregation method (all formulas from :mod:`lsc.rewards`).
* :mod:`lsc.align.references` -- reference rewards ``r_ref(x)`` (quantiles of the frozen base
  policy's samples, a fixed response, a trained predictor, zero): on-device batched estimation,
  the per-prompt cache, the base-policy samples they come from and the bank computed before RL.
* :mod:`lsc.align.best_of_k` -- best-of-k selection from the base policy (job ``best_of_k``).
* :mod:`lsc.align.losses` -- pure PPO / RLOO losses, GAE and KL estimators.
* :mod:`lsc.align.rlhf` -- KL-regularised RLHF with PPO or RLOO (job ``rlhf``).
* :mod:`lsc.align.common` -- models, tokenizer and prompts of the alignment jobs from a config.
"""
