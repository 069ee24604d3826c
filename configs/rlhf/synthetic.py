"""RLHF on the synthetic gold world with small models.

Variants (the argument after ``:``): helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum
(see ``configs/rlhf/_base.py``). Usage::

  python -m lsc.main --config=configs/rlhf/synthetic.py:helpful_lsc --workdir=runs/rlhf_helpful_lsc \\
      --config.policy.workdir=runs/sft --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful
  python -m lsc.main --config=configs/rlhf/synthetic.py:hh_lsc_sum --workdir=runs/rlhf_hh_lsc \\
      --config.policy.workdir=runs/sft --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful \\
      --config.rewards.properties.harmless.rm_workdir=runs/rm_harmless --config.rl.kl_coef='(0.1,0.03)'
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
    return _base().synthetic(arg or "helpful_lsc", job="rlhf")
