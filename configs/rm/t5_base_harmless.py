"""The paper's "harmless" reward model: T5.1.1-base, Bradley-Terry, on the reward-model half of the
hh-rlhf "harmless" subsets.

Usage::

  python -m lsc.main --config=configs/rm/t5_base_harmless.py --workdir=runs/t5_rm_harmless \
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/ckpt/t5-v1_1-base \
      --config.model.init_from=/ckpt/t5-v1_1-base

``model.init_from`` is a Hugging Face ``google/t5-v1_1-base`` directory (imported with
``lsc.models.hf_t5``); left empty the model starts from random weights.
"""

import importlib.util
import os


def _base():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py")
    spec = importlib.util.spec_from_file_location("_lsc_rm_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str = ""):
    if arg:
        raise ValueError(f"configs/rm/t5_base_harmless.py takes no argument, got {arg!r}")
    return _base().hh_rlhf_t5_base("harmless")
