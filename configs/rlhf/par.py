"""A PAR-style setup (the published comparison of reward shapings that ranks LSC among other
methods aligned a Gemma-2-2B policy with PPO to an off-the-shelf reward model): raw vs LSC on
helpfulness, on hh-rlhf prompts, for accelerators.

Nothing is trained here: the policy is a published Gemma-2-2B checkpoint and the reward model a
published one-label ``...ForSequenceClassification`` checkpoint, both turned into run directories
by ``lsc.models.hf_convert`` (read with the architecture their ``config.json`` records; the
``policy.model`` / ``rm_model`` sections below only describe them for validation and smoke runs
with empty workdirs). Variants (the argument after ``:``): ``helpful_raw``, ``helpful_lsc``
(default; 85th percentile of 16 base-policy samples per prompt as the reference).

Usage (one GPU machine; ``launch/README.md`` for SLURM and TPU)::

  python -m lsc.models.hf_convert --checkpoint=/ckpt/gemma-2-2b-it --workdir=runs/gemma2_2b
  python -m lsc.models.hf_convert --checkpoint=/ckpt/reward-model --workdir=runs/rm_hf
  launch/gpu_single_node.sh configs/rlhf/par.py:helpful_lsc runs/par_lsc \\
      --config.data.path=/data/hh-rlhf \\
      --config.policy.workdir=runs/gemma2_2b \\
      --config.rewards.properties.helpful.rm_workdir=runs/rm_hf

The tokenizer is the policy's own (``runs/gemma2_2b/tokenizer``, used when ``data.tokenizer`` is
empty). The prompts are rendered through the policy's chat template (``data.chat_template='auto'``: the
template ``hf_convert`` copied to ``runs/gemma2_2b/tokenizer``; ``'none'`` keeps the hh-rlhf
transcripts). The reward model must tokenize like the policy (same ``tokenizer.json``): the project scores the
policy's token ids. Hyperparameters are this project's choices for a 2B policy (policy lr 1e-6,
value lr 1e-5, batch 64, 2,000 steps, gamma 0.05 and 0.01), not values copied from the
publication. The GRPO family will run on the same config once it exists (``rl.algorithm``).
"""

import ml_collections

from configs import common
from configs.models import decoder
from configs.rlhf import paper

VARIANTS = ("helpful_raw", "helpful_lsc")  # '' is 'helpful_lsc'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = arg or "helpful_lsc"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of configs/rlhf/par.py; choose one of "
                         f"{VARIANTS}")
    config = paper.get_config(variant)
    config.data.subsets = ("helpful",)
    config.data.prompt_len = 512
    config.data.response_len = 256

    config.policy.model = common.model("decoder", decoder.get_config("gemma2_2b"))
    config.rm_model = common.model("decoder", decoder.get_config("gemma2_2b"))
    # bfloat16 compute on float32 master weights (the preset's; hf_convert --dtype=bfloat16
    # records the same in a converted run directory).
    config.policy.model.arch.compute_dtype = "bfloat16"
    config.rm_model.arch.compute_dtype = "bfloat16"
    config.rm_model.pooling = "last"
    config.rewards = common.rewards(variant, num_samples=16, refusal=common.HH_REFUSAL)

    rl = config.rl
    rl.algorithm = "ppo"
    rl.num_steps = 2000
    rl.batch_size = 64
    rl.num_samples = 1
    rl.kl_coef = (0.05, 0.01)
    rl.ppo_epochs = 1
    rl.num_minibatches = 4
    rl.log_every = 20
    rl.save_every = 200
    rl.policy_optim = common.optim(learning_rate=1e-6, warmup_steps=100)
    rl.value_optim = common.optim(learning_rate=1e-5, warmup_steps=100)

    # Parameters and optimiser state sharded over every device (2B parameters in float32 with
    # Adam: about 37 GB).
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    return config
