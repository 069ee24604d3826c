"""SFT of the synthetic world's base policy (a small decoder) on its mixed-quality demonstrations.

Usage::

  python -m lsc.main --config=configs/sft/synthetic.py --workdir=runs/sft

``summary.json`` reports held-out per-token NLL / perplexity and the gold scores of the policy's
samples next to those of the demonstrations.
"""

import importlib.util
import os

import ml_collections


def _common():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common.py")
    spec = importlib.util.spec_from_file_location("_lsc_cfg_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _common()


def get_config(arg: str = ""):
    if arg:
        raise ValueError(f"configs/sft/synthetic.py takes no argument, got {arg!r}")
    config = ml_collections.ConfigDict()
    config.job = "train_sft"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"  # or "hh_rlhf": chosen responses of the alignment half
    config.data.path = ""
    config.data.subsets = ("helpful", "harmless")  # hh_rlhf only
    config.data.on_error = "raise"
    config.data.tokenizer = ""
    config.data.prompt_len = 32
    config.data.response_len = 48

    config.world = ml_collections.ConfigDict()
    config.world.pairs_train = 100
    config.world.pairs_test = 100
    config.world.sft_train = 4000
    config.world.sft_test = 500
    config.world.prompts_train = 100
    config.world.prompts_test = 100
    config.world.helpful_harmful_fraction = 0.1
    config.world.harmless_harmful_fraction = 0.5
    config.world.mixed_harmful_fraction = 0.25
    config.world.label_temperature = 1.0

    config.model = ml_collections.ConfigDict()
    config.model.kind = "decoder"
    config.model.init_from = ""
    config.model.arch = common.small_decoder()

    config.train = common.cpu_train()
    config.optim = common.adamw()

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 100

    config.mesh = common.default_mesh()
    config.parallel = common.parallel()
    return config
