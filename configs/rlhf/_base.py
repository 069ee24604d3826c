"""Shared fields of the alignment configs (``job = 'rlhf'`` / ``'best_of_k'``); the experiment
files in ``configs/rlhf`` and ``configs/best_of_k`` call :func:`synthetic` or :func:`paper`.

Sections:

* ``data``, ``world`` -- prompts (the synthetic world's or hh-rlhf's alignment half), lengths;
* ``policy.workdir`` -- a finished ``train_sft`` run (the base policy ``pi0``); ``policy.model``
  is only used when the workdir is empty (random init, smoke tests);
* ``rm_model`` -- architecture of randomly initialised reward models (used only where a
  property's ``rm_workdir`` is empty);
* ``rewards`` -- ``method`` and per property ``rm_workdir`` and ``reference`` (see
  ``lsc/align/utility.py``);
* ``rl`` -- :class:`lsc.align.rlhf.RLConfig` fields plus ``policy_optim`` / ``value_optim``
  (``lsc.train.optim`` fields); ``rl.kl_coef`` is a tuple: one run per value (a gamma sweep);
* ``best_of_k`` -- ``ks``, ``num_prompts``, ``batch_size``, ``split``;
* ``mesh`` -- device mesh.

Variants (the paper's experiments, Wang et al. 2024 section 5):

=============  ===========================================================================
variant        utility
=============  ===========================================================================
helpful_raw    helpfulness reward as is (``raw``)
helpful_lsc    ``log sigma(r - r_ref)`` with the 85th percentile of base-policy samples
hh_raw_sum     helpful + harmless raw rewards summed (``raw``)
hh_lsc_sum     sum of LSC rewards (logical AND): helpfulness against its 85th percentile,
               harmlessness against the reward of the refusal "I'm sorry, but I can't help
               with that."
=============  ===========================================================================
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
load_preset = common.load_preset

VARIANTS = ("helpful_raw", "helpful_lsc", "hh_raw_sum", "hh_lsc_sum")
REFUSAL = "I'm sorry, but I can't help with that."


def _reference(source: str, quantile: float = 0.85, num_samples: int = 16):
    ref = ml_collections.ConfigDict()
    ref.source = source  # quantile | predictor | fixed_response | zero
    ref.quantile = quantile
    ref.num_samples = num_samples
    ref.response = REFUSAL
    ref.predictor_workdir = ""
    return ref


def _rewards(variant: str, num_samples: int) -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    rewards = ml_collections.ConfigDict()
    rewards.weights = ()
    rewards.properties = ml_collections.ConfigDict()
    lsc = variant.endswith("lsc") or variant.endswith("lsc_sum")
    rewards.method = "lsc_sum" if lsc else "raw"
    helpful = ml_collections.ConfigDict()
    helpful.rm_workdir = ""  # a finished train_rm run for "helpful"
    helpful.reference = _reference("quantile" if lsc else "zero", 0.85, num_samples)
    rewards.properties.helpful = helpful
    if variant.startswith("hh"):
        harmless = ml_collections.ConfigDict()
        harmless.rm_workdir = ""  # a finished train_rm run for "harmless"
        harmless.reference = _reference("fixed_response" if lsc else "zero", 0.5, num_samples)
        rewards.properties.harmless = harmless
    return rewards


def _world(world: ml_collections.ConfigDict) -> None:
    world.pairs_train = 4000
    world.pairs_test = 1000
    world.sft_train = 4000
    world.sft_test = 500
    world.prompts_train = 1000
    world.prompts_test = 500
    world.helpful_harmful_fraction = 0.1
    world.harmless_harmful_fraction = 0.5
    world.mixed_harmful_fraction = 0.25
    world.label_temperature = 1.0


def _optim(lr: float, warmup: int) -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.name = "adamw"
    o.learning_rate = lr
    o.warmup_steps = warmup
    o.schedule = "constant"
    o.end_lr_fraction = 0.0
    o.weight_decay = 0.0
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.grad_clip_norm = 1.0
    return o


def _tiny_decoder() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.kind = "decoder"
    model.init_from = ""
    model.arch = common.small_decoder()
    return model


def synthetic(variant: str = "helpful_lsc", job: str = "rlhf") -> ml_collections.ConfigDict:
    """The synthetic gold world, small models (the shapes of configs/sft and configs/rm): a few
    minutes on two CPU cores once ``policy.workdir`` and the ``rm_workdir`` fields point at
    finished ``train_sft`` / ``train_rm`` runs (empty: random models, a smoke run)."""
    config = ml_collections.ConfigDict()
    config.job = job
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"
    config.data.path = ""
    config.data.subsets = ("helpful", "harmless")
    config.data.on_error = "raise"
    config.data.tokenizer = ""
    config.data.prompt_len = 32
    config.data.response_len = 24
    config.world = ml_collections.ConfigDict()
    _world(config.world)

    config.policy = ml_collections.ConfigDict()
    config.policy.workdir = ""  # a finished train_sft run (configs/sft/synthetic.py)
    config.policy.model = _tiny_decoder()
    config.rm_model = _tiny_decoder()

    config.rewards = _rewards(variant, num_samples=16)

    rl = ml_collections.ConfigDict()
    rl.algorithm = "ppo"  # or "rloo"
    rl.num_steps = 200
    rl.batch_size = 16
    rl.num_samples = 1  # samples per prompt (rloo: >= 2)
    rl.kl_coef = (0.05,)  # gamma; several values run a sweep
    rl.kl_estimator = "k1"  # or "k3"
    rl.temperature = 1.0
    rl.ppo_epochs = 2
    rl.num_minibatches = 2
    rl.clip_eps = 0.2
    rl.value_clip_eps = 0.2
    rl.gae_lambda = 0.95
    rl.discount = 1.0
    rl.whiten_advantages = True
    rl.reference_cache = True
    rl.time_phases = True
    rl.log_every = 10
    rl.save_every = 50
    rl.keep_checkpoints = 2
    rl.progress = True
    rl.gold_eval_prompts = 200  # synthetic world: gold scores of policy vs pi0 samples at the end
    rl.policy_optim = _optim(1e-4, 10)
    rl.value_optim = _optim(1e-3, 10)
    config.rl = rl

    config.best_of_k = ml_collections.ConfigDict()
    config.best_of_k.ks = (1, 2, 4, 8, 16)
    config.best_of_k.num_prompts = 200
    config.best_of_k.batch_size = 50
    config.best_of_k.split = "test"

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.parallel = common.parallel()
    return config


def paper(variant: str = "helpful_lsc", job: str = "rlhf") -> ml_collections.ConfigDict:
    """The paper's setting: hh-rlhf alignment half, T5-base reward models, PPO with the paper's
    hyperparameters (policy lr 5e-6, value lr 4e-5, constant schedule after 2,000 warm-up steps,
    20,000 steps, batch 32, input length 1024, output length 256) and a sweep over gamma."""
    config = synthetic(variant, job)
    config.data.source = "hh_rlhf"
    config.data.path = ""  # the hh-rlhf root (one directory per subset)
    config.data.tokenizer = ""  # the policy's tokenizer
    config.data.prompt_len = 1024
    config.data.response_len = 256
    config.rewards = _rewards(variant, num_samples=64)
    config.policy.model = ml_collections.ConfigDict()
    config.policy.model.kind = "decoder"
    config.policy.model.init_from = ""
    config.policy.model.arch = load_preset("models/decoder.py", "small")
    config.rm_model = ml_collections.ConfigDict()
    config.rm_model.kind = "t5"
    config.rm_model.init_from = ""
    config.rm_model.arch = load_preset("models/t5_1_1.py", "base")
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
    rl.policy_optim = _optim(5e-6, 2000)
    rl.value_optim = _optim(4e-5, 2000)
    config.best_of_k.ks = (1, 2, 4, 8, 16, 32, 64)
    config.best_of_k.num_prompts = 0  # every evaluation prompt
    config.best_of_k.batch_size = 32
    return config
