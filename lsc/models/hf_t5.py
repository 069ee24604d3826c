"""Import Hugging Face ``T5ForConditionalGeneration`` checkpoints into :class:`lsc.models.t5.T5`.

Reads a directory written by ``save_pretrained``: ``config.json`` plus ``model.safetensors`` or
sharded ``model-00001-of-00002.safetensors``-style files with ``model.safetensors.index.json``. Tensors
are read one at a time with ``safetensors`` in numpy mode (no torch needed); bfloat16 tensors are
read through ``ml_dtypes`` (a jax dependency).

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
:class:`CheckpointError` naming the file or tensor.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Tuple

import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for safetensors)
import numpy as np
from flax import nnx
from safetensors import safe_open

from lsc.models import t5 as t5_lib

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


class CheckpointError(ValueError):
    """A Hugging Face checkpoint that does not fit :class:`lsc.models.t5.T5`."""


# ----------------------------------------------------------------------------------------------
# Reading the directory
# ----------------------------------------------------------------------------------------------


def read_hf_config(path: str, architectures: Tuple[str, ...] = SUPPORTED_ARCHITECTURES) -> dict:
    """The parsed ``config.json`` of the checkpoint directory ``path``, checked to be a
    supported T5 encoder-decoder with an LM head (or, with ``architectures``, another of the
    T5 architectures, e.g. ``('T5ForSequenceClassification',)`` for
    :mod:`lsc.models.hf_reward`)."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{cfg_path}: no config.json (expected a save_pretrained directory)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from e
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


class _TensorReader:
    """Lazy access to the tensors of a safetensors checkpoint (single file or sharded)."""

    def __init__(self, path: str):
        self.path = path
        single = os.path.join(path, "model.safetensors")
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(
                    f"{index}: not a safetensors index (no 'weight_map'): {e}"
                ) from e
            self.files = {name: os.path.join(path, fname) for name, fname in weight_map.items()}
            for fname in sorted(set(self.files.values())):
                if not os.path.isfile(fname):
                    raise CheckpointError(f"{index}: lists shard {fname}, which does not exist")
        elif os.path.isfile(single):
            with safe_open(single, framework="np") as f:
                self.files = {name: single for name in f.keys()}
        else:
            others = [n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".h5", ".msgpack"))]
            hint = f" (found {sorted(others)}; only safetensors is supported)" if others else ""
            raise CheckpointError(
                f"{path}: no model.safetensors or model.safetensors.index.json{hint}"
            )
        self._handles: Dict[str, Any] = {}

    def names(self) -> List[str]:
        return sorted(self.files)

    def _handle(self, name: str):
        fname = self.files[name]
        if fname not in self._handles:
            self._handles[fname] = safe_open(fname, framework="np")
        return self._handles[fname]

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        try:
            arr = self._handle(name).get_tensor(name)
        except Exception as e:  # safetensors raises plain exceptions for undecodable dtypes
            raise CheckpointError(f"{self.files[name]}: cannot read tensor {name!r}: {e}") from e
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(
                f"{self.files[name]}: tensor {name!r} has dtype {arr.dtype}; a float dtype is "
                "required (quantized checkpoints are not supported)"
            )
        return arr


def load_t5_config(path: str, *, architectures: Tuple[str, ...] = SUPPORTED_ARCHITECTURES,
                   **overrides: Any) -> t5_lib.T5Config:
    """The :class:`~lsc.models.t5.T5Config` of the checkpoint directory ``path``.

    Architecture fields come from ``config.json``; ``tie_word_embeddings`` is True exactly when
    the weights have no ``lm_head.weight`` (when no weight files are present, from
    ``config.json``); ``scale_decoder_outputs`` as described in the module docstring.
    ``dropout_rate`` is 0 (the checkpoint's training dropout is not carried over; pass
    ``dropout_rate=0.1`` to fine-tune with T5's usual rate). ``overrides`` (e.g.
    ``dtype='bfloat16'``, ``dropout_rate=0.1``) replace any field.
    """
    cfg = read_hf_config(path, architectures)
    kwargs: Dict[str, Any] = {}
    for hf_key, key in _CONFIG_KEYS.items():
        if hf_key in cfg and cfg[hf_key] is not None:
            kwargs[key] = cfg[hf_key]
    kwargs.setdefault("feed_forward_proj", "relu")  # the transformers default
    try:
        names = set(_TensorReader(path).names())
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
    reader_or_tensors: Any, config: t5_lib.T5Config, *, source: str = "checkpoint"
) -> Dict[Tuple[Any, ...], np.ndarray]:
    """Maps Hugging Face tensors to our parameter paths and layouts.

    ``reader_or_tensors``: a mapping ``name -> np.ndarray`` or a lazy reader. Returns ``{path
    tuple (as in ``nnx.to_flat_state``): np.ndarray in our layout}``. Raises
    :class:`CheckpointError` listing missing and unexpected tensors, or naming a tensor whose
    shape does not fit ``config``.
    """
    if isinstance(reader_or_tensors, Mapping):
        tensors = reader_or_tensors
        names = set(tensors)
        shape_of = lambda n: tuple(np.shape(tensors[n]))  # noqa: E731
        get = lambda n: np.asarray(tensors[n])  # noqa: E731
    else:
        reader = reader_or_tensors
        names = set(reader.names())
        shape_of, get = reader.shape, reader.get
    entries = _entries(config)
    expected = {hf for _, hf, _, _ in entries}
    missing = sorted(expected - names)
    allowed_extra = set(IGNORED_TENSORS) | set(EMBEDDING_COPIES)
    unexpected = sorted(names - expected - allowed_extra)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        raise CheckpointError(
            f"{source}: does not match a T5 with {config.num_layers} encoder / "
            f"{config.num_decoder_layers} decoder layers and "
            f"{'gated' if config.is_gated else 'plain'} feed-forward: " + "; ".join(parts)
        )
    for _, name, hf_shape, _ in entries:
        got = shape_of(name)
        if got != hf_shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {got}, expected {hf_shape} from config.json"
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


def _fill_state(
    abstract_state: nnx.State, params: Mapping[Tuple[Any, ...], np.ndarray], source: str
) -> nnx.State:
    flat = []
    seen = set()
    for path, var in nnx.to_flat_state(abstract_state):
        if path not in params:
            raise CheckpointError(f"{source}: no tensor for parameter {'.'.join(map(str, path))}")
        target = var.get_value()
        value = params[path]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{source}: parameter {'.'.join(map(str, path))} would get shape {value.shape}, "
                f"expected {target.shape}"
            )
        flat.append((path, var.replace(jnp.asarray(value, dtype=target.dtype))))
        seen.add(path)
    extra = sorted(".".join(map(str, p)) for p in set(params) - seen)
    if extra:
        raise CheckpointError(f"{source}: converted tensors without a parameter: {extra}")
    return nnx.from_flat_state(flat)


def load_t5(path: str, **config_overrides: Any) -> t5_lib.T5:
    """A :class:`~lsc.models.t5.T5` with the weights of the checkpoint directory ``path``.

    ``config_overrides`` replace :class:`~lsc.models.t5.T5Config` fields (e.g.
    ``param_dtype='bfloat16'``, ``dtype='bfloat16'``, ``dropout_rate=0.1``); parameters are cast
    to ``param_dtype``. The model is built abstractly (no random initialisation) and filled
    tensor by tensor.
    """
    config = load_t5_config(path, **config_overrides)
    reader = _TensorReader(path)
    params = convert_tensors(reader, config, source=path)
    abstract = nnx.eval_shape(lambda: t5_lib.T5(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    return nnx.merge(graphdef, _fill_state(abstract_state, params, path))


def load_t5_reward_model(path: str, *, rngs: nnx.Rngs, **config_overrides: Any):
    """A reward model (:func:`lsc.models.t5.make_reward_model`) whose T5 backbone has the
    checkpoint's weights and whose scalar head is freshly initialised from ``rngs``."""
    backbone = load_t5(path, **config_overrides)
    return t5_lib.make_reward_model(backbone.config, rngs=rngs, backbone=backbone)
