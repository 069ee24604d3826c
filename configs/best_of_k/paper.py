"""Best-of-k on hh-rlhf's evaluation prompts (the paper's setting).

Variants (the argument after ``:``): helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum
(see ``configs/rlhf/_base.py``). Usage::

  python -m lsc.main --config=configs/best_of_k/paper.py:helpful_lsc --workdir=runs/paper_bok \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/models/policy \\
      --config.policy.workdir=runs/sft_hh --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful_t5
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
    return _base().paper(arg or "helpful_lsc", job="best_of_k")
