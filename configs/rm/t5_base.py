"""The paper's reward models: T5.1.1-base, Bradley-Terry, on the reward-model half of the hh-rlhf
subsets of one property (the argument: ``helpful`` or ``harmless``).

Usage::

  python -m lsc.main --config=configs/rm/t5_base.py:helpful --workdir=runs/t5_rm_helpful \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/ckpt/t5-v1_1-base \\
      --config.model.init_from=/ckpt/t5-v1_1-base

``model.init_from`` is a Hugging Face ``google/t5-v1_1-base`` directory (imported with
``lsc.models.hf_t5``); left empty the model starts from random weights.

Sections as in ``configs/rm/synthetic_helpful.py``.
"""

import ml_collections

from configs import common
from configs.models import t5_1_1

VARIANTS = ("helpful", "harmless")  # the argument: the reward model's property


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"configs/rm/t5_base.py: unknown argument {arg!r}; give the property, "
                         f"one of {VARIANTS} (e.g. configs/rm/t5_base.py:helpful)")
    config = ml_collections.ConfigDict()
    config.job = "train_rm"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "hh_rlhf"
    config.data.path = ""  # the hh-rlhf root (one directory per subset)
    # A real download has a few odd records: skip and count them (data_read_stats.json), and
    # stop when more than max_skip_fraction of the records are bad.
    config.data.on_error = "skip"
    config.data.max_skip_fraction = 0.01
    config.data.tokenizer = ""  # T5's spiece.model, or the checkpoint directory
    config.data.prompt_len = 512
    config.data.response_len = 128

    # Unused with hh-rlhf; the synthetic world's sizes when data.source = 'synthetic'.
    config.world = common.world(pairs=(4000, 1000), sft=(200, 50), prompts=(50, 50))

    config.model = common.model("t5", t5_1_1.get_config("base"))
    # bfloat16 matmuls and activations on float32 master weights, as the paper ran on TPU.
    config.model.arch.compute_dtype = "bfloat16"
    # model.init_from: a Hugging Face google/t5-v1_1-base directory
    config.model.pooling = "last"  # where the reward head reads: 'last' token, or 'mean' / 'sum'

    config.rm = ml_collections.ConfigDict()
    config.rm.property = arg
    config.rm.loss = "bradley_terry"  # or "pointwise" (chosen = 1, rejected = 0)
    config.rm.margin = 0.0
    config.rm.center_coef = 0.0

    config.train = common.cpu_train()
    config.train.update(dict(num_steps=10_000, batch_size=64, log_every=50, eval_every=1000,
                             save_every=500, keep_checkpoints=3))
    config.optim = common.optim(name="adafactor", learning_rate=1e-4, warmup_steps=1000,
                                schedule="constant", end_lr_fraction=0.1, b2=0.99,
                                grad_clip_norm=1.0)

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    config.eval.calibration_bins = 10

    config.mesh = common.mesh()
    config.parallel = common.parallel()
    return config
