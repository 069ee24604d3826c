"""Pieces shared by the training jobs: the synthetic world on disk, tokenizers, models from
configs, mesh and iterators.

Config fields read here (see ``configs/rm/synthetic_helpful.py`` for a complete example):

* ``data.source`` ('synthetic' | 'hh_rlhf'), ``data.path`` (hh-rlhf root), ``data.on_error``,
  ``data.tokenizer`` (a tokenizer file or directory; empty for the synthetic world's own),
  ``data.prompt_len``, ``data.response_len``;
* ``world.*`` (:class:`lsc.data.world.WorldConfig` fields) for the synthetic world;
* ``model.kind`` ('decoder' | 't5' | 't5_classifier'), ``model.arch`` (the fields of
  :class:`lsc.models.decoder.DecoderConfig` or :class:`lsc.models.t5.T5Config`;
  't5_classifier' is a T5 read as transformers' ``T5ForSequenceClassification``, the backbone of
  reward models converted by ``lsc.models.hf_convert``),
  ``model.init_from`` (a Hugging Face T5 checkpoint directory, or empty), ``model.pooling``
  (reward models only: where the reward head reads, one of :data:`lsc.models.heads.POOLINGS`;
  absent means ``'last'``);
* ``mesh`` (``{'data': -1, 'fsdp': 1, 'tensor': 1}``) and optional ``rules``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Tuple

import jax
import ml_collections
from absl import logging
from flax import nnx

from lsc.data import hh_rlhf, pipeline, world, world_data
from lsc.data import tokenizer as tokenizer_lib
from lsc.models import decoder as decoder_lib
from lsc.models import heads
from lsc.models import t5 as t5_lib
from lsc.parallel import distributed
from lsc.parallel import mesh as mesh_lib
from lsc.parallel import partitioning

MODEL_KINDS = ("decoder", "t5", "t5_classifier")


def _world_paths(directory: str, world_config: world.WorldConfig
                 ) -> Tuple[world_data.WorldFiles, str]:
    """The files :func:`lsc.data.world_data.write_world` writes under ``directory``."""
    def splits(sub):
        names = ["train", "test"]
        if sub.endswith("-base"):
            names += [world_data.replicate_split(r)
                      for r in world_data.pair_draws(world_config)[1:]]
        return {s: os.path.join(directory, sub, f"{s}.jsonl.gz") for s in names}

    files = world_data.WorldFiles(
        directory, *[splits(sub) for sub in ("helpful-base", "harmless-base", "sft", "prompts")],
        os.path.join(directory, "world.json"))
    return files, os.path.join(directory, "world.model")


def _world_on_disk(directory: str, expected: dict) -> bool:
    """True when ``directory`` holds a complete world whose manifest equals ``expected``."""
    manifest = os.path.join(directory, "world.json")
    if not (os.path.exists(manifest) and os.path.exists(os.path.join(directory, "world.model"))):
        return False
    with open(manifest, encoding="utf-8") as f:
        saved = json.load(f)
    return saved.get("seed") == expected["seed"] and saved.get("config") == expected["config"]


def world_files(config: ml_collections.ConfigDict,
                workdir: str) -> Tuple[world_data.WorldFiles, str]:
    """Writes (once) the synthetic world of ``config.seed`` and its tokenizer under
    ``<workdir>/world``; returns ``(files, tokenizer_path)``. A rerun reuses the files when the
    manifest matches the config, and regenerates them otherwise.

    With several processes sharing the workdir, process 0 writes and the others wait for it
    (:func:`lsc.parallel.distributed.barrier`); every process must call this function.
    """
    directory = os.path.join(workdir, "world")
    world_config = world.WorldConfig(**config.world.to_dict())
    expected = {"seed": int(config.seed), "config": world_data.manifest_config(world_config)}
    if distributed.is_main_process() and not _world_on_disk(directory, expected):
        world_data.write_world(directory, seed=int(config.seed), cfg=world_config)
        world_data.write_tokenizer(directory, version=world_config.version)
    distributed.barrier(f"world_files:{directory}")
    if not _world_on_disk(directory, expected):
        raise FileNotFoundError(f"{directory}: process 0 wrote no synthetic world matching the "
                                "config; is the workdir on a filesystem every process shares?")
    return _world_paths(directory, world_config)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved ``config.json`` of a finished run."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not a run directory (no config.json)")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def load_tokenizer(config: ml_collections.ConfigDict, default_path: str = ""):
    """``config.data.tokenizer`` when set, else ``default_path``; ``config.data.pad_id`` (when
    present and >= 0) overrides the pad id the tokenizer would resolve, e.g. for checkpoints whose
    pad token is their EOS (masks are ``tokens != pad_id``, so the two must differ)."""
    path = config.data.get("tokenizer", "") or default_path
    if not path:
        raise ValueError("config.data.tokenizer is empty and the data source provides none; "
                         "give a SentencePiece .model or tokenizer.json path")
    pad_id = int(config.data.get("pad_id", -1))
    return tokenizer_lib.load_tokenizer(path, **({"pad_id": pad_id} if pad_id >= 0 else {}))


def read_pairs_for(config: ml_collections.ConfigDict, workdir: str, prop: str,
                   replicate: int = 0):
    """``(train_pairs, test_pairs, tokenizer_default_path)`` for property ``prop``.

    Synthetic: the world's ``<prop>-base`` train/test files; ``replicate > 0`` reads that
    independent draw of the training pairs (the world must hold it: 0 and
    ``world.replicate_offset + [0, world.pair_replicates)``; the test pairs are shared).
    hh-rlhf (one draw only; a replicate differs by initialisation and order): the subset group
    ``prop`` under ``data.path``; training pairs are the reward-model half
    (:func:`hh_rlhf.split_in_half`, first half) of the train split, test pairs the test split.
    """
    source = config.data.source
    stats = hh_rlhf.ReadStats()
    if source == "synthetic":
        files, tok_path = world_files(config, workdir)
        paths = getattr(files, prop)
        split = world_data.replicate_split(replicate)
        if split not in paths:
            cfg = world.WorldConfig(**config.world.to_dict())
            raise ValueError(
                f"config.rm.replicate={replicate}: the world has no draw {replicate} of the "
                f"pairs, only {list(world_data.pair_draws(cfg))} (0 and "
                f"config.world.replicate_offset + [0, config.world.pair_replicates) with "
                f"world.replicate_offset={cfg.replicate_offset}, "
                f"world.pair_replicates={cfg.pair_replicates})")
        train, _ = hh_rlhf.read_pairs(paths[split], config.data.on_error, stats)
        test, _ = hh_rlhf.read_pairs(paths["test"], config.data.on_error, stats)
    elif source == "hh_rlhf":
        root = config.data.path
        train_all, _ = hh_rlhf.read_pairs(hh_rlhf.subset_files(root, prop, "train"),
                                          config.data.on_error, stats)
        train, _ = hh_rlhf.split_in_half(train_all)
        test, _ = hh_rlhf.read_pairs(hh_rlhf.subset_files(root, prop, "test"),
                                     config.data.on_error, stats)
        tok_path = ""
        logging.info("hh-rlhf %s: %d train pairs, %d in the reward-model half, %d test pairs",
                     prop, len(train_all), len(train), len(test))
    else:
        raise ValueError(f"config.data.source={source!r} is not supported by the training jobs; "
                         "use 'synthetic' or 'hh_rlhf'")
    hh_rlhf.finish_read(stats, workdir, hh_rlhf.max_skip_fraction(config.data),
                        write=distributed.is_main_process())
    if not train:
        raise ValueError(f"no training pairs for {prop!r} (source {source!r})")
    return train, test, tok_path


def make_mesh(config: ml_collections.ConfigDict):
    """The mesh of ``config.mesh`` over all devices, and the logical-axis rules."""
    mesh = mesh_lib.make_mesh(config.get("mesh", None))
    rules = partitioning.rules_from_config(config.get("rules", None))
    return mesh, rules


# The ``model.arch`` fields that apply to an imported checkpoint (``model.init_from``); its own
# ``config.json`` gives the rest of the architecture.
INIT_FROM_OVERRIDES = ("compute_dtype", "param_dtype", "dropout_rate", "attention_impl")


def backbone_factory(model_config: ml_collections.ConfigDict, vocab_size: int, seed: int,
                     where: str = "config.model"
                     ) -> Tuple[Callable[[], nnx.Module], Optional[Callable[[], nnx.Module]], Any]:
    """``(create, load_pretrained or None, arch_config)`` for the model's backbone.

    ``create()`` builds a randomly initialised backbone (parameters from ``seed``);
    ``load_pretrained()`` the imported checkpoint of ``model.init_from`` (T5 only).
    ``vocab_size`` is the tokenizer's; the model's vocabulary must hold it. ``where`` names
    ``model_config`` in errors: its dotted field, or the run directory whose ``config.json``
    holds it.
    """
    kind = model_config.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"{where}.kind must be one of {MODEL_KINDS}, got {kind!r}")
    init_from = model_config.get("init_from", "") or ""
    arch = model_config.arch.to_dict()
    if kind in ("decoder", "t5_classifier"):
        if init_from:
            raise ValueError(f"{where}.init_from is only supported for model.kind='t5'")
        if kind == "decoder":
            cfg = decoder_lib.DecoderConfig.from_mapping(arch)
            create = lambda: decoder_lib.DecoderLM(cfg, rngs=nnx.Rngs(seed))  # noqa: E731
        else:
            from lsc.models import t5_classifier

            cfg = t5_lib.T5Config.from_dict(arch)
            create = lambda: t5_classifier.T5ClassifierBackbone(  # noqa: E731
                cfg, rngs=nnx.Rngs(seed))
        load = None
    else:
        if init_from:
            from lsc.models import hf_t5

            overrides = {k: arch[k] for k in INIT_FROM_OVERRIDES if k in arch}
            cfg = hf_t5.load_t5_config(init_from, **overrides)
            load = lambda: hf_t5.load_t5(init_from, **overrides)  # noqa: E731
        else:
            cfg = t5_lib.T5Config.from_dict(arch)
            load = None
        create = lambda: t5_lib.T5(cfg, rngs=nnx.Rngs(seed))  # noqa: E731
    model_vocab = cfg.vocab_size
    if model_vocab < vocab_size:
        field = (f"{where}.init_from={init_from!r} (its config.json vocab_size)" if init_from
                 else f"{where}.arch.vocab_size")
        raise ValueError(f"{field}={model_vocab} is smaller than the tokenizer's vocabulary "
                         f"({vocab_size})")
    return _limit_sampling(create, vocab_size), _limit_sampling(load, vocab_size), cfg


def _limit_sampling(build: Optional[Callable[[], nnx.Module]], vocab_size: int):
    """``build`` whose model carries ``sample_vocab_size = vocab_size``: the samplers
    (``lsc.models.sampling``) never draw the padding ids past the tokenizer's vocabulary, which
    have no text."""
    if build is None:
        return None

    def limited():
        model = build()
        model.sample_vocab_size = int(vocab_size)
        return model

    return limited


def reward_pooling(model_config: ml_collections.ConfigDict, where: str = "config.model") -> str:
    """``model.pooling`` (``'last'`` when absent), checked against
    :data:`lsc.models.heads.POOLINGS`; ``where`` as for :func:`backbone_factory`."""
    pooling = model_config.get("pooling", "last") or "last"
    if pooling not in heads.POOLINGS:
        raise ValueError(f"{where}.pooling must be one of {heads.POOLINGS}, got {pooling!r}")
    return pooling


def reward_model_factory(model_config: ml_collections.ConfigDict, vocab_size: int, seed: int,
                         head_init=None, where: str = "config.model"):
    """``(create, initial or None)`` for a :class:`lsc.models.heads.RewardModel` with the
    config's backbone and ``model.pooling``; a saved run's config rebuilds the same model.
    ``where`` as for :func:`backbone_factory`."""
    create_bb, load_bb, _ = backbone_factory(model_config, vocab_size, seed, where)
    pooling = reward_pooling(model_config, where)

    def create():
        return heads.RewardModel(create_bb(), rngs=nnx.Rngs(seed + 1), head_init=head_init,
                                 pooling=pooling)

    initial = None
    if load_bb is not None:
        def initial():
            return heads.RewardModel(load_bb(), rngs=nnx.Rngs(seed + 1), head_init=head_init,
                                     pooling=pooling)
    return create, initial


def train_iterator(data: pipeline.TokenizedData, global_batch: int, seed: int):
    """Endless shuffled batches, this host's rows of each global batch
    (:func:`lsc.data.pipeline.global_batch_iterator`: the same global batches on any number of
    hosts)."""
    return pipeline.global_batch_iterator(data, global_batch, seed=seed, shuffle=True,
                                          num_epochs=None, process_index=jax.process_index(),
                                          process_count=jax.process_count())


def eval_iterator_factory(data: pipeline.TokenizedData, global_batch: int):
    """A function returning one fresh unshuffled pass, this host's rows of each global batch
    (padding rows have ``valid == 0``)."""
    def make():
        return pipeline.global_batch_iterator(data, global_batch, shuffle=False, num_epochs=1,
                                              process_index=jax.process_index(),
                                              process_count=jax.process_count(), prefetch=0)
    return make
