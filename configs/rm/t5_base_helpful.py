"""The paper's "helpful" reward model, ``configs/rm/t5_base.py:helpful`` under its own name:
T5.1.1-base, Bradley-Terry, on the reward-model half of the hh-rlhf "helpful" subsets.

Usage::

  python -m lsc.main --config=configs/rm/t5_base_helpful.py --workdir=runs/t5_rm_helpful \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/ckpt/t5-v1_1-base \\
      --config.model.init_from=/ckpt/t5-v1_1-base
"""

import ml_collections

from configs.rm import t5_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/rm/t5_base_helpful.py takes no argument, got {arg!r}")
    return t5_base.get_config("helpful")
