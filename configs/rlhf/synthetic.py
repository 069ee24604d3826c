"""RLHF on the synthetic gold world with small models (the shapes of configs/sft and configs/rm):
a few minutes on two CPU cores once ``policy.workdir`` and the ``rm_workdir`` fields point at
finished ``train_sft`` / ``train_rm`` runs (empty: random models, a smoke run).

Variants (the argument after ``:``; :data:`configs.common.RLHF_VARIANTS`):

=============  ===========================================================================
variant        utility
=============  ===========================================================================
helpful_raw    helpfulness reward as is (``raw``)
helpful_lsc    ``log sigma(r - r_ref)`` with the 85th percentile of base-policy samples
               (the default)
hh_raw_sum     helpful + harmless raw rewards summed (``raw``)
hh_lsc_sum     sum of LSC rewards (logical AND): helpfulness against its 85th percentile,
               harmlessness against the reward of the world's refusal
               (``lsc.data.world.REFUSAL``, "sorry i can not help with that")
=============  ===========================================================================

Usage::

  python -m lsc.main --config=configs/rlhf/synthetic.py:helpful_lsc --workdir=runs/rlhf_helpful_lsc \\
      --config.policy.workdir=runs/sft --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful
  python -m lsc.main --config=configs/rlhf/synthetic.py:hh_lsc_sum --workdir=runs/rlhf_hh_lsc \\
      --config.policy.workdir=runs/sft --config.rewards.properties.helpful.rm_workdir=runs/rm_helpful \\
      --config.rewards.properties.harmless.rm_workdir=runs/rm_harmless --config.rl.kl_coef='(0.1,0.03)'

Sections:

* ``data``, ``world`` -- prompts (the synthetic world's or hh-rlhf's alignment half), lengths;
* ``policy.workdir`` -- a finished ``train_sft`` run (the base policy ``pi0``); ``policy.model``
  is only used when the workdir is empty (random init, smoke tests);
* ``rm_model`` -- architecture of randomly initialised reward models (used only where a
  property's ``rm_workdir`` is empty);
* ``rewards`` -- ``method`` and per property ``rm_workdir`` and ``reference`` (see
  ``lsc/align/utility.py``);
* ``rl`` -- the fields of the typed config of ``rl.algorithm`` (``lsc.align.rlhf.rl_config``:
  ``PPOConfig`` or ``GroupConfig``; ``policy_optim`` / ``value_optim`` are ``lsc.train.optim``
  fields); the PPO fields stay when ``--config.rl.algorithm`` picks a group algorithm, which
  does not read them; ``rl.kl_coef`` is a tuple: one run per value (a gamma sweep);
* ``best_of_k`` -- ``ks``, ``num_prompts``, ``batch_size``, ``split`` (read by the best-of-k
  job, ``configs/best_of_k/synthetic.py``, which is this config with ``job = 'best_of_k'``);
* ``mesh``, ``parallel`` -- device mesh, multi-process start-up.
"""

import ml_collections

from configs import common

VARIANTS = common.RLHF_VARIANTS  # '' is 'helpful_lsc'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = arg or "helpful_lsc"
    config = ml_collections.ConfigDict()
    config.job = "rlhf"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"
    config.data.path = ""
    config.data.subsets = ("helpful", "harmless")
    config.data.on_error = "raise"
    config.data.tokenizer = ""
    # 'auto': the policy's own chat template when policy.workdir is a converted checkpoint with
    # one (lsc.align.common.chat_template_dir); 'none': prompts are tokenized as hh-rlhf
    # transcripts; a directory: its chat template renders the prompts (lsc.data.chat_template).
    config.data.chat_template = "auto"
    config.data.prompt_len = 32
    config.data.response_len = 24
    config.world = common.world(pairs=(4000, 1000), sft=(4000, 500), prompts=(1000, 500))

    config.policy = ml_collections.ConfigDict()
    config.policy.workdir = ""  # a finished train_sft run (configs/sft/synthetic.py)
    config.policy.model = common.model("decoder", common.small_decoder())
    config.rm_model = common.model("decoder", common.small_decoder())

    config.rewards = common.rewards(variant, num_samples=16)

    rl = ml_collections.ConfigDict()
    rl.algorithm = "ppo"  # or "rloo", "grpo", "dr_grpo" (lsc.align.advantages)
    rl.seed = (0,)  # prompt order, sampling keys, value head (not the world); one run per seed
    rl.num_steps = 200
    rl.batch_size = 16
    rl.num_samples = 1  # samples per prompt: the group (rloo, grpo, dr_grpo: >= 2)
    rl.kl_coef = (0.05,)  # gamma; several values run a sweep
    rl.kl_estimator = "k1"  # or "k3"
    rl.kl_penalty = "reward"  # or "loss": a k3 KL term in the policy loss (grpo, dr_grpo)
    rl.temperature = 1.0
    rl.ppo_epochs = 2
    rl.num_minibatches = 2
    rl.clip_eps = 0.2
    rl.value_clip_eps = 0.2
    rl.gae_lambda = 0.95
    rl.discount = 1.0
    rl.whiten_advantages = True
    rl.reference_cache = True
    rl.reference_bank = True  # every prompt's reference computed once before RL
    rl.time_phases = True
    rl.log_every = 10
    rl.save_every = 50
    rl.keep_checkpoints = 2
    rl.progress = True
    rl.gold_eval_prompts = 200  # synthetic world: gold scores of policy vs pi0 samples at the end
    rl.policy_optim = common.optim(learning_rate=1e-4, warmup_steps=10)
    rl.value_optim = common.optim(learning_rate=1e-3, warmup_steps=10)
    config.rl = rl

    config.best_of_k = ml_collections.ConfigDict()
    config.best_of_k.ks = (1, 2, 4, 8, 16)
    config.best_of_k.num_prompts = 200
    config.best_of_k.batch_size = 50
    config.best_of_k.split = "test"

    config.mesh = common.mesh()
    config.parallel = common.parallel()
    return config
