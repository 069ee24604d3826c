"""Import of Hugging Face Llama-family causal LMs into :class:`lsc.models.decoder.DecoderLM`.

A checkpoint is a directory written by ``save_pretrained``: ``config.json`` plus either
``model.safetensors`` or shards listed in ``model.safetensors.index.json``. Tensors are read one
at a time with ``safetensors`` in numpy mode (no torch needed; bfloat16 via ``ml_dtypes``).

Supported: ``model_type == 'llama'`` with ``hidden_act == 'silu'``, MHA/GQA/MQA, tied or untied
embeddings, optional attention/MLP biases, rotary scaling 'default', 'linear' or 'llama3'
(``rope_parameters`` of transformers 5 or the older ``rope_theta``/``rope_scaling`` fields).
Anything else raises :class:`CheckpointError` naming the field or tensor.

Weight layout (Hugging Face ``nn.Linear`` weights are ``[out, in]``):

=========================================  ======================================
``model.embed_tokens.weight [V, E]``        ``embed.embedding [V, E]``
``layers.i.self_attn.q_proj.weight``        ``layers.i.attn.q.kernel [E, H, D]``
``layers.i.self_attn.{k,v}_proj.weight``    ``layers.i.attn.{k,v}.kernel [E, K, D]``
``layers.i.self_attn.o_proj.weight``        ``layers.i.attn.o.kernel [H, D, E]``
``layers.i.input_layernorm.weight``         ``layers.i.attn_norm.scale``
``layers.i.post_attention_layernorm``       ``layers.i.mlp_norm.scale``
``layers.i.mlp.{gate,up,down}_proj``        ``layers.i.mlp.{gate,up,down}.kernel``
``model.norm.weight``                       ``final_norm.scale``
``lm_head.weight [V, E]``                   ``lm_head.kernel [E, V]`` (untied only)
=========================================  ======================================
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for safetensors)
import numpy as np
from flax import nnx
from safetensors import safe_open

from lsc.models.decoder import DecoderConfig, DecoderLM

SUPPORTED_MODEL_TYPES = ("llama",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported (unsupported, incomplete or mismatched)."""


def read_hf_config(path: str) -> dict:
    """The parsed ``config.json`` of checkpoint directory ``path``."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{cfg_path}: no config.json in checkpoint directory")
    with open(cfg_path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None


class TensorReader:
    """Lazy access to the tensors of a checkpoint directory (single file or sharded with
    ``model.safetensors.index.json``): names and shapes without loading, one tensor at a time
    on request, so peak host memory stays near the size of the converted model. bfloat16 tensors
    are read through ``ml_dtypes``."""

    def __init__(self, path: str):
        self.path = path
        index_path = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.isfile(single):
            files = ["model.safetensors"]
        else:
            raise CheckpointError(
                f"{path}: no model.safetensors or model.safetensors.index.json "
                "(only safetensors weights are read)"
            )
        self._file_of: Dict[str, str] = {}
        self._shapes: Dict[str, Tuple[int, ...]] = {}
        for name in files:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                raise CheckpointError(f"{path}: shard {name} listed in the index is missing")
            with safe_open(file, framework="numpy") as f:
                for key in f.keys():
                    self._file_of[key] = file
                    self._shapes[key] = tuple(f.get_slice(key).get_shape())
        if os.path.isfile(index_path):
            missing = sorted(set(weight_map) - set(self._file_of))
            if missing:
                raise CheckpointError(f"{index_path}: tensors listed but not in any shard: {missing}")

    def names(self):
        return list(self._shapes)

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        with safe_open(self._file_of[name], framework="numpy") as f:
            return f.get_tensor(name)


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """All tensors of checkpoint directory ``path`` as numpy arrays (sharded or single file)."""
    reader = TensorReader(path)
    return {name: reader.get(name) for name in reader.names()}


def _first(value):
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def config_from_hf(
    hf: Mapping[str, Any],
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> DecoderConfig:
    """A :class:`DecoderConfig` equivalent to a Hugging Face Llama ``config.json`` dict.

    ``pad_id`` overrides the checkpoint's ``pad_token_id`` (Llama checkpoints often have none; the
    default is then 0). A list of ``eos_token_id`` uses its first entry.
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"config.json: model_type={model_type!r} is not supported (supported: "
            f"{SUPPORTED_MODEL_TYPES})"
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"config.json: hidden_act={act!r} is not supported (only 'silu')")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        if key not in hf:
            raise CheckpointError(f"config.json: required field {key!r} is missing")
    heads = int(hf["num_attention_heads"])
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_dim = int(hf.get("head_dim") or hf["hidden_size"] // heads)

    rope = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    rope.update({k: v for k, v in legacy.items() if k not in rope})
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear", "llama3"):
        raise CheckpointError(
            f"config.json: rotary scaling rope_type={rope_type!r} is not supported "
            "(default, linear, llama3)"
        )
    scaling: Dict[str, Any] = {"rope_scaling_type": rope_type}
    if rope_type in ("linear", "llama3"):
        scaling["rope_scaling_factor"] = float(rope["factor"])
    if rope_type == "llama3":
        scaling.update(
            rope_low_freq_factor=float(rope["low_freq_factor"]),
            rope_high_freq_factor=float(rope["high_freq_factor"]),
            rope_original_max_len=int(rope["original_max_position_embeddings"]),
        )
    pad = pad_id if pad_id is not None else _first(hf.get("pad_token_id"))
    eos = _first(hf.get("eos_token_id"))
    bos = _first(hf.get("bos_token_id"))
    try:
        return DecoderConfig(
            vocab_size=int(hf["vocab_size"]),
            d_model=int(hf["hidden_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            mlp_dim=int(hf["intermediate_size"]),
            activation="silu",
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            parallel_block=False,
            attention_bias=bool(hf.get("attention_bias", False)),
            mlp_bias=bool(hf.get("mlp_bias", False)),
            pad_id=0 if pad is None else int(pad),
            eos_id=0 if eos is None else int(eos),
            bos_id=-1 if bos is None else int(bos),
            dtype=dtype,
            param_dtype=param_dtype,
            **scaling,
        )
    except ValueError as e:
        raise CheckpointError(f"config.json: {e}") from None


def _expected_tensors(cfg: DecoderConfig) -> Dict[str, Tuple[int, ...]]:
    e, h, k, d, f, v = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim,
                        cfg.vocab_size)
    shapes = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (v, e)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (e,),
            p + "post_attention_layernorm.weight": (e,),
            p + "self_attn.q_proj.weight": (h * d, e),
            p + "self_attn.k_proj.weight": (k * d, e),
            p + "self_attn.v_proj.weight": (k * d, e),
            p + "self_attn.o_proj.weight": (e, h * d),
            p + "mlp.gate_proj.weight": (f, e),
            p + "mlp.up_proj.weight": (f, e),
            p + "mlp.down_proj.weight": (e, f),
        })
        if cfg.attention_bias:
            shapes.update({
                p + "self_attn.q_proj.bias": (h * d,),
                p + "self_attn.k_proj.bias": (k * d,),
                p + "self_attn.v_proj.bias": (k * d,),
                p + "self_attn.o_proj.bias": (e,),
            })
        if cfg.mlp_bias:
            shapes.update({
                p + "mlp.gate_proj.bias": (f,),
                p + "mlp.up_proj.bias": (f,),
                p + "mlp.down_proj.bias": (e,),
            })
    return shapes


def _ignorable(name: str, cfg: DecoderConfig) -> bool:
    # Rotary buffers saved by old transformers versions; a duplicate lm_head of a tied model.
    return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")


def convert_llama_tensors(tensors: Any, cfg: DecoderConfig) -> dict:
    """Maps Hugging Face tensors to the pure-dict state of ``DecoderLM(cfg)``.

    ``tensors``: a name -> numpy array mapping, or a :class:`TensorReader` (read lazily). Values
    are ``float32`` numpy arrays (``bfloat16`` checkpoints are widened exactly). Raises
    :class:`CheckpointError` listing missing or unexpected tensors, or naming the first tensor
    whose shape differs from the one ``cfg`` implies.
    """
    if isinstance(tensors, TensorReader):
        names, shape_of, get = set(tensors.names()), tensors.shape, tensors.get
    else:
        names = set(tensors)
        shape_of = lambda n: tuple(tensors[n].shape)  # noqa: E731
        get = tensors.__getitem__
    expected = _expected_tensors(cfg)
    missing = sorted(set(expected) - names)
    extra = sorted(n for n in names - set(expected) if not _ignorable(n, cfg))
    if missing or extra:
        raise CheckpointError(
            "checkpoint tensors do not match the config: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    for name, shape in expected.items():
        got = tuple(shape_of(name))
        if got != shape:
            raise CheckpointError(f"tensor {name}: shape {got} does not match expected {shape}")

    e, h, k, d = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    t = lambda name: np.asarray(get(name), dtype=np.float32)  # noqa: E731
    out: dict = {
        "embed": {"embedding": t("model.embed_tokens.weight")},
        "final_norm": {"scale": t("model.norm.weight")},
        "layers": {},
    }
    if not cfg.tie_embeddings:
        out["lm_head"] = {"kernel": t("lm_head.weight").T}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        attn = {
            "q": {"kernel": t(p + "self_attn.q_proj.weight").T.reshape(e, h, d)},
            "k": {"kernel": t(p + "self_attn.k_proj.weight").T.reshape(e, k, d)},
            "v": {"kernel": t(p + "self_attn.v_proj.weight").T.reshape(e, k, d)},
            "o": {"kernel": t(p + "self_attn.o_proj.weight").T.reshape(h, d, e)},
        }
        mlp = {n: {"kernel": t(p + f"mlp.{n}_proj.weight").T} for n in ("gate", "up", "down")}
        if cfg.attention_bias:
            attn["q"]["bias"] = t(p + "self_attn.q_proj.bias").reshape(h, d)
            attn["k"]["bias"] = t(p + "self_attn.k_proj.bias").reshape(k, d)
            attn["v"]["bias"] = t(p + "self_attn.v_proj.bias").reshape(k, d)
            attn["o"]["bias"] = t(p + "self_attn.o_proj.bias")
        if cfg.mlp_bias:
            for n in ("gate", "up", "down"):
                mlp[n]["bias"] = t(p + f"mlp.{n}_proj.bias")
        out["layers"][i] = {
            "attn": attn,
            "mlp": mlp,
            "attn_norm": {"scale": t(p + "input_layernorm.weight")},
            "mlp_norm": {"scale": t(p + "post_attention_layernorm.weight")},
        }
    return out


def load_llama(
    path: str,
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> Tuple[DecoderLM, DecoderConfig]:
    """Loads checkpoint directory ``path`` into a new :class:`DecoderLM`; returns (model, config).

    The model is built abstractly (``nnx.eval_shape``) and filled with the checkpoint's tensors,
    cast to ``param_dtype``; no random initialisation is run.
    """
    cfg = config_from_hf(read_hf_config(path), pad_id=pad_id, dtype=dtype, param_dtype=param_dtype)
    pure = convert_llama_tensors(TensorReader(path), cfg)
    abstract = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    pdtype = jnp.dtype(param_dtype)
    expected = nnx.to_flat_state(state)
    given = {tuple(k): v for k, v in _flatten(pure).items()}
    for path, var in expected:
        key = tuple(path)
        if key not in given:
            raise CheckpointError(f"no checkpoint tensor for parameter {'.'.join(map(str, key))}")
        if tuple(given[key].shape) != tuple(var.shape):
            raise CheckpointError(
                f"parameter {'.'.join(map(str, key))}: converted shape {given[key].shape} != "
                f"model shape {var.shape}"
            )
    pure = jax.tree.map(lambda a: jnp.asarray(a, dtype=pdtype), pure)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state), cfg


def _flatten(tree: Mapping, prefix: Tuple = ()) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out
