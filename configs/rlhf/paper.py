"""The paper's RLHF experiments on hh-rlhf (PPO, the paper's hyperparameters).

Variants (the argument after ``:``): helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum
(see ``configs/rlhf/_base.py``). Usage::

  python -m lsc.main --config=configs/rlhf/paper.py:hh_lsc_sum --workdir=runs/paper_hh_lsc \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/models/policy \\
      --config.policy.workdir=runs/sft_hh --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful_t5 \\
      --config.rewards.properties.harmless.rm_workdir=runs/rm_harmless_t5 --config.rl.kl_coef='(0.1,)'
"""

import importlib.util
import os


def _base():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rlhf",
                        "_base.py")
    spec = importlib.util.spec_from_file_location("_lsc_rlhf_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str = ""):
    return _base().paper(arg or "helpful_lsc", job="rlhf")
