"""SFT of the synthetic world's base policy (a small decoder) on its mixed-quality demonstrations.

Usage::

  python -m lsc.main --config=configs/sft/synthetic.py --workdir=runs/sft

``summary.json`` reports held-out per-token NLL / perplexity and the gold scores of the policy's
samples next to those of the demonstrations.
"""

import importlib.util
import os

import ml_collections


def _preset(name):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                        "decoder.py")
    spec = importlib.util.spec_from_file_location("_lsc_decoder_presets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(name)


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
    arch = _preset("tiny")
    arch.vocab_size = 256
    arch.d_model = 64
    arch.num_layers = 2
    arch.num_heads = 4
    arch.num_kv_heads = 4
    arch.head_dim = 16
    arch.mlp_dim = 128
    arch.init_std = 0.02
    config.model.arch = arch

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 400
    config.train.batch_size = 32
    config.train.grad_accum_steps = 1
    config.train.log_every = 20
    config.train.eval_every = 200
    config.train.save_every = 100
    config.train.keep_checkpoints = 2
    config.train.compute_dtype = "float32"
    config.train.progress = True

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 40
    config.optim.schedule = "cosine"
    config.optim.end_lr_fraction = 0.1
    config.optim.weight_decay = 0.0
    config.optim.b1 = 0.9
    config.optim.b2 = 0.99
    config.optim.eps = 1e-8
    config.optim.grad_clip_norm = 1.0

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 100

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return config
