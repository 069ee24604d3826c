"""Import Hugging Face ``T5ForConditionalGeneration`` checkpoints into :class:`lsc.models.t5.T5`.

Reads a directory written by ``save_pretrained`` (``config.json`` plus ``model.safetensors`` or
shards listed in ``model.safetensors.index.json``) with :mod:`lsc.models.hf_io`, which checks the
files and the tensors' dtypes.

Supported: ``model_type == "t5"`` with architecture ``T5ForConditionalGeneration`` (or the legacy
``T5WithLMHeadModel``), gated (``gated-gelu``: t5-v1_1, flan-t5; ``gated-silu``) or plain
(``relu``: original T5; ``gelu``) feed-forward layers.

Embedding / head conventions across ``transformers`` versions:

* ``lm_head.weight`` present in the checkpoint -> an untied head (T5.1.1, flan-t5). Absent ->
  the head is the shared embedding (what ``transformers`` does: it ties when the head is missing,
  and keeps a head that differs from the embedding).
* Output scaling by ``d_model ** -0.5``: ``scale_decoder_outputs`` from ``config.json`` when
  present (``transformers`` >= 5 writes it), else ``tie_word_embeddings`` (default True), which
  is what older versions used to decide it.
* ``encoder.embed_tokens.weight`` / ``decoder.embed_tokens.weight`` (copies of ``shared.weight``
  in some checkpoints) are accepted when equal to ``shared.weight``;
  ``decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight`` is ignored, as in
  ``transformers``.

Anything else that does not fit (wrong model type or architecture, unsupported feed-forward, a
missing or unexpected tensor, a shape mismatch, a non-float tensor) raises
:class:`lsc.models.hf_io.CheckpointError` naming the file or tensor.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
from flax import nnx

from lsc.models import hf_io
from lsc.models import t5 as t5_lib
from lsc.models.hf_io import CheckpointError

SUPPORTED_ARCHITECTURES = ("T5ForConditionalGeneration", "T5WithLMHeadModel")
IGNORED_TENSORS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "d_model": "d_model",
    "d_kv": "d_kv",
    "d_ff": "d_ff",
    "num_layers": "num_layers",
    "num_decoder_layers": "num_decoder_layers",
    "num_heads": "num_heads",
    "relative_attention_num_buckets": "relative_attention_num_buckets",
    "relative_attention_max_distance": "relative_attention_max_distance",
    "layer_norm_epsilon": "layer_norm_epsilon",
    "feed_forward_proj": "feed_forward_proj",
}


# ----------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------


def read_t5_config(path: str, architectures: Tuple[str, ...] = SUPPORTED_ARCHITECTURES) -> dict:
    """The parsed ``config.json`` of the checkpoint directory ``path``, checked to be a
    supported T5 encoder-decoder with an LM head (or, with ``architectures``, another of the
    T5 architectures, e.g. ``('T5ForSequenceClassification',)`` for
    :mod:`lsc.models.hf_reward`)."""
    cfg = hf_io.read_hf_config(path)
    cfg_path = os.path.join(path, "config.json")
    model_type = cfg.get("model_type")
    if model_type != "t5":
        raise CheckpointError(
            f"{cfg_path}: model_type is {model_type!r}; only 't5' (T5ForConditionalGeneration) is "
            "supported"
        )
    archs = cfg.get("architectures") or []
    if archs and not any(a in architectures for a in archs):
        raise CheckpointError(
            f"{cfg_path}: architectures {archs} are not supported; expected one of "
            f"{list(architectures)}"
            + (" (an encoder-decoder with an LM head)"
               if architectures == SUPPORTED_ARCHITECTURES else "")
        )
    if cfg.get("is_encoder_decoder", True) is False:
        raise CheckpointError(
            f"{cfg_path}: is_encoder_decoder is false; an encoder-decoder is required"
        )
    ffp = cfg.get("feed_forward_proj", "relu")
    try:
        t5_lib.activation_name(ffp)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: unsupported feed_forward_proj {ffp!r}: {e}") from e
    return cfg


def load_t5_config(path: str, *, architectures: Tuple[str, ...] = SUPPORTED_ARCHITECTURES,
                   **overrides: Any) -> t5_lib.T5Config:
    """The :class:`~lsc.models.t5.T5Config` of the checkpoint directory ``path``.

    Architecture fields come from ``config.json``; ``tie_word_embeddings`` is True exactly when
    the weights have no ``lm_head.weight`` (when no weight files are present, from
    ``config.json``); ``scale_decoder_outputs`` as described in the module docstring.
    ``dropout_rate`` is 0 (the checkpoint's training dropout is not carried over; pass
    ``dropout_rate=0.1`` to fine-tune with T5's usual rate). ``overrides`` (e.g.
    ``compute_dtype='bfloat16'``, ``dropout_rate=0.1``) replace any field.
    """
    cfg = read_t5_config(path, architectures)
    kwargs: Dict[str, Any] = {}
    for hf_key, key in _CONFIG_KEYS.items():
        if hf_key in cfg and cfg[hf_key] is not None:
            kwargs[key] = cfg[hf_key]
    kwargs.setdefault("feed_forward_proj", "relu")  # the transformers default
    try:
        names = set(hf_io.TensorReader(path).names())
        tie = "lm_head.weight" not in names
    except CheckpointError:
        tie = cfg.get("tie_word_embeddings", True) is not False
    kwargs["tie_word_embeddings"] = tie
    if "scale_decoder_outputs" in cfg:
        kwargs["scale_decoder_outputs"] = bool(cfg["scale_decoder_outputs"])
    else:
        kwargs["scale_decoder_outputs"] = cfg.get("tie_word_embeddings", True) is not False
    for hf_key, key in (("pad_token_id", "pad_id"), ("eos_token_id", "eos_id"),
                        ("decoder_start_token_id", "decoder_start_id")):
        value = cfg.get(hf_key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            kwargs[key] = int(value)
    if "decoder_start_id" not in kwargs and "pad_id" in kwargs:
        kwargs["decoder_start_id"] = kwargs["pad_id"]
    kwargs["dropout_rate"] = 0.0
    kwargs.update(overrides)
    try:
        return t5_lib.T5Config(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{os.path.join(path, 'config.json')}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Name and layout mapping
# ----------------------------------------------------------------------------------------------

# (our path, Hugging Face name, Hugging Face shape, converter to our layout)
_Entry = Tuple[Tuple[Any, ...], str, Tuple[int, ...], Any]


def _attention_entries(prefix: Tuple[Any, ...], hf: str, c: t5_lib.T5Config) -> Iterator[_Entry]:
    inner, d, h, k = c.num_heads * c.d_kv, c.d_model, c.num_heads, c.d_kv
    for name in ("q", "k", "v"):
        # HF [inner, d_model] (torch Linear: out x in) -> ours [d_model, heads, d_kv]
        yield prefix + (name, "kernel"), f"{hf}.{name}.weight", (inner, d), (
            lambda w: w.T.reshape(d, h, k)
        )
    # HF o: [d_model, inner] -> ours [heads, d_kv, d_model]
    yield prefix + ("o", "kernel"), f"{hf}.o.weight", (d, inner), lambda w: w.T.reshape(h, k, d)


def _ffn_entries(prefix: Tuple[Any, ...], hf: str, c: t5_lib.T5Config) -> Iterator[_Entry]:
    d, f = c.d_model, c.d_ff
    names = ("wi_0", "wi_1") if c.is_gated else ("wi",)
    for name in names:
        yield prefix + (name, "kernel"), f"{hf}.{name}.weight", (f, d), lambda w: w.T
    yield prefix + ("wo", "kernel"), f"{hf}.wo.weight", (d, f), lambda w: w.T


def _entries(c: t5_lib.T5Config) -> List[_Entry]:
    ident = lambda w: w  # noqa: E731
    d = c.d_model
    out: List[_Entry] = [
        (("shared", "embedding"), "shared.weight", (c.vocab_size, d), ident),
        (("encoder", "relative_bias", "embedding"),
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         (c.relative_attention_num_buckets, c.num_heads), ident),
        (("decoder", "relative_bias", "embedding"),
         "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         (c.relative_attention_num_buckets, c.num_heads), ident),
        (("encoder", "final_norm", "scale"), "encoder.final_layer_norm.weight", (d,), ident),
        (("decoder", "final_norm", "scale"), "decoder.final_layer_norm.weight", (d,), ident),
    ]
    for i in range(c.num_layers):
        ours, hf = ("encoder", "layers", i), f"encoder.block.{i}.layer"
        out.append((ours + ("self_attn_norm", "scale"), f"{hf}.0.layer_norm.weight", (d,), ident))
        out.extend(_attention_entries(ours + ("self_attn",), f"{hf}.0.SelfAttention", c))
        out.append((ours + ("ffn_norm", "scale"), f"{hf}.1.layer_norm.weight", (d,), ident))
        out.extend(_ffn_entries(ours + ("ffn",), f"{hf}.1.DenseReluDense", c))
    for i in range(c.num_decoder_layers):
        ours, hf = ("decoder", "layers", i), f"decoder.block.{i}.layer"
        out.append((ours + ("self_attn_norm", "scale"), f"{hf}.0.layer_norm.weight", (d,), ident))
        out.extend(_attention_entries(ours + ("self_attn",), f"{hf}.0.SelfAttention", c))
        out.append((ours + ("cross_attn_norm", "scale"), f"{hf}.1.layer_norm.weight", (d,), ident))
        out.extend(_attention_entries(ours + ("cross_attn",), f"{hf}.1.EncDecAttention", c))
        out.append((ours + ("ffn_norm", "scale"), f"{hf}.2.layer_norm.weight", (d,), ident))
        out.extend(_ffn_entries(ours + ("ffn",), f"{hf}.2.DenseReluDense", c))
    if not c.tie_word_embeddings:
        out.append((("lm_head", "kernel"), "lm_head.weight", (c.vocab_size, d), lambda w: w.T))
    return out


def convert_tensors(
    tensors: Any, config: t5_lib.T5Config, *, source: str = "checkpoint"
) -> Dict[Tuple[Any, ...], np.ndarray]:
    """Maps Hugging Face tensors to our parameter paths and layouts.

    ``tensors``: a mapping ``name -> np.ndarray`` or a lazy reader
    (:func:`lsc.models.hf_io.accessors`). Returns ``{path tuple (as in ``nnx.to_flat_state``):
    np.ndarray in our layout}``. Raises :class:`CheckpointError` (naming ``source``) listing
    missing and unexpected tensors, naming a tensor whose shape does not fit ``config``, or an
    embedding copy that differs from ``shared.weight``.
    """
    names, _, get = hf_io.accessors(tensors)
    entries = _entries(config)
    allowed_extra = set(IGNORED_TENSORS) | set(EMBEDDING_COPIES)
    hf_io.check_tensors(
        tensors, {hf: hf_shape for _, hf, hf_shape, _ in entries},
        ignorable=allowed_extra.__contains__, source=source,
        model=(f"a T5 with {config.num_layers} encoder / {config.num_decoder_layers} decoder "
               f"layers and {'gated' if config.is_gated else 'plain'} feed-forward"),
    )
    params: Dict[Tuple[Any, ...], np.ndarray] = {}
    for path, hf, _, convert in entries:
        params[path] = np.ascontiguousarray(convert(get(hf)))
    shared = params[("shared", "embedding")]
    for name in EMBEDDING_COPIES:
        if name in names:
            copy = get(name)
            if copy.shape != shared.shape or not np.array_equal(copy, shared):
                raise CheckpointError(
                    f"{source}: tensor {name!r} differs from 'shared.weight'; separate encoder / "
                    "decoder input embeddings are not supported"
                )
    return params


def load_t5(path: str, **config_overrides: Any) -> t5_lib.T5:
    """A :class:`~lsc.models.t5.T5` with the weights of the checkpoint directory ``path``.

    ``config_overrides`` replace :class:`~lsc.models.t5.T5Config` fields (e.g.
    ``param_dtype='bfloat16'``, ``compute_dtype='bfloat16'``, ``dropout_rate=0.1``); parameters
    are cast to ``param_dtype``. The model is built abstractly (no random initialisation) and filled
    tensor by tensor (:func:`lsc.models.hf_io.fill_module`).
    """
    config = load_t5_config(path, **config_overrides)
    params = convert_tensors(hf_io.TensorReader(path), config, source=path)
    return hf_io.fill_module(lambda: t5_lib.T5(config, rngs=nnx.Rngs(0)), params, source=path)
