"""SFT of the synthetic world's base policy (a small decoder) on its mixed-quality demonstrations.

Usage::

  python -m lsc.main --config=configs/sft/synthetic.py --workdir=runs/sft

``summary.json`` reports held-out per-token NLL / perplexity and the gold scores of the policy's
samples next to those of the demonstrations.
"""

import ml_collections

from configs import common

VARIANTS = ("",)  # takes no argument


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

    config.world = common.world(pairs=(100, 100), sft=(4000, 500), prompts=(100, 100))

    config.model = common.model("decoder", common.small_decoder())

    config.train = common.cpu_train()
    config.optim = common.optim(learning_rate=3e-3, warmup_steps=40, schedule="cosine",
                                end_lr_fraction=0.1, b2=0.99)

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 100

    config.mesh = common.mesh()
    config.parallel = common.parallel()
    return config
