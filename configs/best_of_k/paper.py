"""Best-of-k on hh-rlhf's evaluation prompts (the paper's setting): the config of
``configs/rlhf/paper.py`` (same variants, models, bfloat16 compute and ``rewards``) with ``job = 'best_of_k'``;
the job reads its ``best_of_k`` section (``ks``, ``num_prompts``, ``batch_size``, ``split``).

Variants (the argument after ``:``): helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum.
Usage::

  python -m lsc.main --config=configs/best_of_k/paper.py:helpful_lsc --workdir=runs/paper_best_of_k \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/models/policy \\
      --config.policy.workdir=runs/sft_hh --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful_t5
"""

import ml_collections

from configs.rlhf import paper as rlhf_paper

VARIANTS = rlhf_paper.VARIANTS  # '' is 'helpful_lsc'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = rlhf_paper.get_config(arg)
    config.job = "best_of_k"
    return config
