"""Best-of-k on the synthetic gold world's evaluation prompts: the config of
``configs/rlhf/synthetic.py`` (same variants, models and ``rewards``) with ``job = 'best_of_k'``;
the job reads its ``best_of_k`` section (``ks``, ``num_prompts``, ``batch_size``, ``split``).

Variants (the argument after ``:``): helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum.
Usage::

  python -m lsc.main --config=configs/best_of_k/synthetic.py:hh_lsc_sum --workdir=runs/best_of_k_hh_lsc \\
      --config.policy.workdir=runs/sft --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful \\
      --config.rewards.properties.harmless.rm_workdir=runs/rm_harmless
"""

import ml_collections

from configs.rlhf import synthetic as rlhf_synthetic

VARIANTS = rlhf_synthetic.VARIANTS  # '' is 'helpful_lsc'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = rlhf_synthetic.get_config(arg)
    config.job = "best_of_k"
    return config
