"""Config sections shared by several experiment files (loaded by path, so configs work from any
working directory): the small CPU training defaults, AdamW, the default mesh, the small decoder
of the synthetic world, and :func:`load_preset` for other config files."""

import importlib.util
import os

import ml_collections

_CONFIGS = os.path.dirname(os.path.abspath(__file__))


def load_module(relpath: str):
    """Another config file (``relpath`` under ``configs/``, e.g. ``rlhf/_base.py``) as a module."""
    path = os.path.join(_CONFIGS, relpath)
    spec = importlib.util.spec_from_file_location(f"_lsc_cfg_{relpath.replace('/', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_preset(relpath: str, arg: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of another config file, e.g. ``models/t5_1_1.py``."""
    return load_module(relpath).get_config(arg)


def cpu_train() -> ml_collections.ConfigDict:
    """``lsc.train.loop.TrainConfig`` fields for a run of about a minute on two CPU cores."""
    train = ml_collections.ConfigDict()
    train.num_steps = 400
    train.batch_size = 32
    train.grad_accum_steps = 1
    train.log_every = 20
    train.eval_every = 200
    train.save_every = 100
    train.keep_checkpoints = 2
    train.compute_dtype = "float32"
    train.progress = True
    return train


def adamw(learning_rate: float = 3e-3, warmup_steps: int = 40) -> ml_collections.ConfigDict:
    """``lsc.train.optim`` fields: AdamW, linear warm-up then cosine decay, global-norm clipping."""
    optim = ml_collections.ConfigDict()
    optim.name = "adamw"
    optim.learning_rate = learning_rate
    optim.warmup_steps = warmup_steps
    optim.schedule = "cosine"
    optim.end_lr_fraction = 0.1
    optim.weight_decay = 0.0
    optim.b1 = 0.9
    optim.b2 = 0.99
    optim.eps = 1e-8
    optim.grad_clip_norm = 1.0
    return optim


def default_mesh() -> ml_collections.ConfigDict:
    """Every device on the ``data`` axis."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def parallel() -> ml_collections.ConfigDict:
    """``lsc.parallel.distributed`` fields (strings, so any value can be given on the command
    line). All empty: a single process, unless the launch scripts' ``LSC_*`` environment says
    otherwise; ``distributed='auto'``: JAX's own cluster detection (TPU pods, SLURM)."""
    p = ml_collections.ConfigDict()
    p.coordinator_address = ""  # host:port of process 0
    p.num_processes = ""
    p.process_id = ""
    p.local_device_ids = ""  # e.g. "0,1"; empty: every local device
    p.distributed = ""  # "auto" or empty
    return p


def small_decoder() -> ml_collections.ConfigDict:
    """The synthetic world's small decoder (its tokenizer has 211 pieces; vocabulary padded to 256)."""
    arch = load_preset("models/decoder.py", "tiny")
    arch.vocab_size = 256
    arch.d_model = 64
    arch.num_layers = 2
    arch.num_heads = 4
    arch.num_kv_heads = 4
    arch.head_dim = 16
    arch.mlp_dim = 128
    arch.init_std = 0.02
    return arch
