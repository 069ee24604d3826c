"""The paper's RLHF experiments on hh-rlhf (Wang et al. 2024, section 5): the hh-rlhf alignment
half, T5-base reward models, PPO with the paper's hyperparameters (policy lr 5e-6, value lr
4e-5, constant schedule after 2,000 warm-up steps, 20,000 steps, batch 32, input length 1024,
output length 256) and a sweep over gamma.

The sections and the variants (helpful_raw, helpful_lsc (default), hh_raw_sum, hh_lsc_sum) are
those of ``configs/rlhf/synthetic.py``; this file sets the paper's data, models and PPO values.
Usage::

  python -m lsc.main --config=configs/rlhf/paper.py:hh_lsc_sum --workdir=runs/paper_hh_lsc \\
      --config.data.path=/data/hh-rlhf --config.data.tokenizer=/models/policy \\
      --config.policy.workdir=runs/sft_hh --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful_t5 \\
      --config.rewards.properties.harmless.rm_workdir=runs/rm_harmless_t5 --config.rl.kl_coef='(0.1,)'
"""

import ml_collections

from configs import common
from configs.models import decoder, t5_1_1
from configs.rlhf import synthetic

VARIANTS = synthetic.VARIANTS  # '' is 'helpful_lsc'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = arg or "helpful_lsc"
    config = synthetic.get_config(variant)
    config.data.source = "hh_rlhf"
    config.data.path = ""  # the hh-rlhf root (one directory per subset)
    # Skip and count odd records (data_read_stats.json); stop past max_skip_fraction of them.
    config.data.on_error = "skip"
    config.data.max_skip_fraction = 0.01
    config.data.tokenizer = ""  # the policy's tokenizer
    config.data.prompt_len = 1024
    config.data.response_len = 256

    config.policy.model = common.model("decoder", decoder.get_config("small"))
    config.rm_model = common.model("t5", t5_1_1.get_config("base"))
    # bfloat16 matmuls and activations on float32 master weights, as the paper ran on TPU (the
    # models of policy.workdir / rm_workdir run in the compute_dtype their config.json records).
    config.policy.model.arch.compute_dtype = "bfloat16"
    config.rm_model.arch.compute_dtype = "bfloat16"
    # cuDNN's flash attention on a GPU where it can run, else XLA (lsc.models.layers.attention_impl).
    config.policy.model.arch.attention_impl = "auto"
    config.rm_model.arch.attention_impl = "auto"
    # hh-rlhf data: the hh-rlhf refusal (the synthetic config's default is the world's).
    config.rewards = common.rewards(variant, num_samples=64, refusal=common.HH_REFUSAL)

    rl = config.rl
    rl.algorithm = "ppo"
    rl.num_steps = 20_000
    rl.batch_size = 32
    rl.num_samples = 1
    rl.kl_coef = (0.3, 0.1, 0.03, 0.01)
    rl.ppo_epochs = 1
    rl.num_minibatches = 1
    rl.log_every = 50
    rl.save_every = 500
    rl.gold_eval_prompts = 0
    rl.keep_checkpoints = 3
    rl.policy_optim = common.optim(learning_rate=5e-6, warmup_steps=2000)
    rl.value_optim = common.optim(learning_rate=4e-5, warmup_steps=2000)

    config.best_of_k.ks = (1, 2, 4, 8, 16, 32, 64)
    config.best_of_k.num_prompts = 0  # every evaluation prompt
    config.best_of_k.batch_size = 32
    return config
