"""Shared fields of the reward-model configs (``job = 'train_rm'``); the experiment files in this
directory call :func:`synthetic` or :func:`hh_rlhf_t5_base`.

Sections: ``data`` (source, lengths, tokenizer), ``world`` (synthetic world sizes), ``model``
(``kind``, ``arch`` = model config fields, ``init_from``), ``rm`` (property, loss, margin,
centering), ``train`` (``lsc.train.loop.TrainConfig``), ``optim`` (``lsc.train.optim``),
``eval``, ``mesh``.
"""

import importlib.util
import os

import ml_collections

_CONFIGS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_preset(relpath: str, arg: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of another config file, e.g. ``models/t5_1_1.py``."""
    path = os.path.join(_CONFIGS, relpath)
    spec = importlib.util.spec_from_file_location(f"_lsc_cfg_{relpath.replace('/', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _world(world: ml_collections.ConfigDict) -> None:
    world.pairs_train = 4000
    world.pairs_test = 1000
    world.sft_train = 200
    world.sft_test = 50
    world.prompts_train = 50
    world.prompts_test = 50
    world.helpful_harmful_fraction = 0.1
    world.harmless_harmful_fraction = 0.5
    world.mixed_harmful_fraction = 0.25
    world.label_temperature = 1.0


def base(prop: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "train_rm"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"
    config.data.path = ""
    config.data.on_error = "raise"
    config.data.tokenizer = ""  # empty: the synthetic world's word-level SentencePiece model
    config.data.prompt_len = 32
    config.data.response_len = 48

    config.world = ml_collections.ConfigDict()
    _world(config.world)

    config.model = ml_collections.ConfigDict()
    config.model.kind = "decoder"
    config.model.init_from = ""
    config.model.arch = load_preset("models/decoder.py", "tiny")

    config.rm = ml_collections.ConfigDict()
    config.rm.property = prop
    config.rm.loss = "bradley_terry"  # or "pointwise" (chosen = 1, rejected = 0)
    config.rm.margin = 0.0
    config.rm.center_coef = 0.0

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
    config.eval.calibration_bins = 10

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return config


def synthetic(prop: str, kind: str = "decoder") -> ml_collections.ConfigDict:
    """A small reward model on the synthetic world (about a minute on two CPU cores):
    ``kind='decoder'`` (decoder-only backbone) or ``'t5'`` (T5.1.1 encoder-decoder)."""
    config = base(prop)
    if kind == "decoder":
        arch = config.model.arch
        arch.vocab_size = 256  # the world's tokenizer has 211 pieces
        arch.d_model = 64
        arch.num_layers = 2
        arch.num_heads = 4
        arch.num_kv_heads = 4
        arch.head_dim = 16
        arch.mlp_dim = 128
        arch.init_std = 0.02
    elif kind == "t5":
        config.model.kind = "t5"
        arch = load_preset("models/t5_1_1.py", "tiny")
        arch.vocab_size = 256
        arch.d_model = 64
        arch.d_kv = 16
        arch.num_heads = 4
        arch.d_ff = 128
        arch.num_layers = 2
        arch.num_decoder_layers = 2
        config.model.arch = arch
    else:
        raise ValueError(f"unknown synthetic reward-model kind {kind!r}; use 'decoder' or 't5'")
    return config


def hh_rlhf_t5_base(prop: str) -> ml_collections.ConfigDict:
    """The paper's setting: a T5.1.1-base reward model on the reward-model half of hh-rlhf."""
    config = base(prop)
    config.data.source = "hh_rlhf"
    config.data.path = ""  # the hh-rlhf root (one directory per subset)
    config.data.tokenizer = ""  # T5's spiece.model, or the checkpoint directory
    config.data.prompt_len = 512
    config.data.response_len = 128
    config.model.kind = "t5"
    config.model.init_from = ""  # a Hugging Face google/t5-v1_1-base directory
    config.model.arch = load_preset("models/t5_1_1.py", "base")
    config.train.num_steps = 10_000
    config.train.batch_size = 64
    config.train.log_every = 50
    config.train.eval_every = 1000
    config.train.save_every = 500
    config.train.keep_checkpoints = 3
    config.train.compute_dtype = "bfloat16"
    config.optim.name = "adafactor"
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 1000
    config.optim.schedule = "constant"
    config.optim.grad_clip_norm = 1.0
    config.eval.batch_size = 64
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return config
