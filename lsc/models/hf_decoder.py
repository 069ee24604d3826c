"""Import of Hugging Face decoder-only causal LMs into :class:`lsc.models.decoder.DecoderLM`.

A checkpoint is a directory written by ``save_pretrained``: ``config.json`` plus either
``model.safetensors`` or shards listed in ``model.safetensors.index.json``, read with
:mod:`lsc.models.hf_io` (which checks the files and the tensors' dtypes).

Supported ``model_type`` values and what each maps to (:class:`DecoderConfig` fields):

=============  ==================================================================================
``llama``      SwiGLU, MHA/GQA/MQA, optional attention/MLP biases.
``mistral``    Llama without biases; ``sliding_window`` (when not null) on every layer.
``qwen2``      biases on q/k/v only (``attention_out_bias=False``); sliding-window layers from
               ``layer_types`` (or ``use_sliding_window`` / ``max_window_layers``).
``qwen3``      per-head q/k RMSNorms (``qk_norm``), optional ``attention_bias`` (q/k/v/o);
               ``layer_types`` as Qwen 2.
``gemma2``     GeGLU (``hidden_activation``), ``(1 + w)`` RMSNorms, ``sqrt(hidden_size)``-scaled
               embeddings, pre- and post-norms around attention and MLP, attention and final
               logit soft-capping, ``query_pre_attn_scalar``, alternating sliding-window layers
               (``layer_types``), tied head.
``gemma3_text``  Gemma 2 plus per-head q/k norms and a separate rotary base for the
               sliding-window layers (``rope_parameters.sliding_attention`` or the older
               ``rope_local_base_freq``); no attention soft-capping.
=============  ==================================================================================

Rotary scaling: ``rope_type`` 'default', 'linear' or 'llama3' (``rope_parameters`` of
transformers 5, or the older ``rope_theta`` / ``rope_scaling`` fields); Gemma 3's local layers
'default' only.

Every field of ``config.json`` is accounted for: each model type has the fields it reads, and
:data:`NO_EFFECT_FIELDS` lists those that do not change the forward pass of an inference model
(dropout rates, initialisation, generation and bookkeeping fields; Gemma's legacy ``hidden_act``,
which transformers ignores in favour of ``hidden_activation``). Any other field, or a value that
is not implemented (a ``rope_type``, an activation, bidirectional attention, ...), raises
:class:`lsc.models.hf_io.CheckpointError` naming the field; tensors that are missing, unexpected
or of the wrong shape are named too.

Weight layout (Hugging Face ``nn.Linear`` weights are ``[out, in]``):

=============================================  ======================================
``model.embed_tokens.weight [V, E]``            ``embed.embedding [V, E]``
``layers.i.self_attn.q_proj.weight``            ``layers.i.attn.q.kernel [E, H, D]``
``layers.i.self_attn.{k,v}_proj.weight``        ``layers.i.attn.{k,v}.kernel [E, K, D]``
``layers.i.self_attn.o_proj.weight``            ``layers.i.attn.o.kernel [H, D, E]``
``layers.i.self_attn.{q,k}_norm.weight``        ``layers.i.attn.{q,k}_norm.scale [D]``
``layers.i.input_layernorm``                    ``layers.i.attn_norm.scale``
``layers.i.post_attention_layernorm`` (Llama)   ``layers.i.mlp_norm.scale``
``layers.i.post_attention_layernorm`` (Gemma)   ``layers.i.post_attn_norm.scale``
``layers.i.pre_feedforward_layernorm``          ``layers.i.mlp_norm.scale``
``layers.i.post_feedforward_layernorm``         ``layers.i.post_mlp_norm.scale``
``layers.i.mlp.{gate,up,down}_proj``            ``layers.i.mlp.{gate,up,down}.kernel``
``model.norm.weight``                           ``final_norm.scale``
``lm_head.weight [V, E]``                       ``lm_head.kernel [E, V]`` (untied only)
=============================================  ======================================
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
from flax import nnx

from lsc.models import hf_io
from lsc.models.decoder import DecoderConfig, DecoderLM
from lsc.models.hf_io import CheckpointError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")

# Fields of config.json that do not change an inference model's forward pass.
NO_EFFECT_FIELDS = frozenset({
    "_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype", "model_type",
    "use_cache", "initializer_range", "max_position_embeddings", "attention_dropout",
    "output_attentions", "output_hidden_states", "return_dict", "use_return_dict", "torchscript",
    "chunk_size_feed_forward", "id2label", "label2id", "num_labels", "problem_type",
    "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "pretraining_tp",
    "cache_implementation", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
    "decoder_start_token_id", "tie_word_embeddings", "is_encoder_decoder",
    "_attn_implementation", "_attn_implementation_autoset",
})

_SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps")
_ROPE_FIELDS = ("rope_parameters", "rope_theta", "rope_scaling")
_WINDOW_FIELDS = ("sliding_window", "layer_types", "use_sliding_window", "max_window_layers")
_GEMMA_FIELDS = ("hidden_activation", "hidden_act", "query_pre_attn_scalar",
                 "attn_logit_softcapping", "final_logit_softcapping", "sliding_window",
                 "layer_types", "attention_bias", "use_bidirectional_attention")

# Fields each model type reads (besides NO_EFFECT_FIELDS).
MODEL_FIELDS: Dict[str, frozenset] = {
    "llama": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + ("hidden_act", "attention_bias", "mlp_bias")),
    "mistral": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + ("hidden_act", "sliding_window")),
    "qwen2": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + _WINDOW_FIELDS + ("hidden_act",)),
    "qwen3": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + _WINDOW_FIELDS
                       + ("hidden_act", "attention_bias")),
    "gemma2": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + _GEMMA_FIELDS),
    "gemma3_text": frozenset(_SHAPE_FIELDS + _ROPE_FIELDS + _GEMMA_FIELDS + (
        "rope_local_base_freq", "sliding_window_pattern", "_sliding_window_pattern")),
}

_ROPE_TYPES = ("default", "linear", "llama3")
_ROPE_KEYS = frozenset({"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
                        "high_freq_factor", "original_max_position_embeddings"})
_GEMMA_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def _first(value):
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


# -- config.json -> DecoderConfig ----------------------------------------------------------------


def check_fields(hf: Mapping[str, Any], model_type: str,
                 extra_fields: frozenset = frozenset()) -> None:
    """Raises :class:`CheckpointError` naming the fields of ``hf`` that ``model_type`` does not
    read and that are not in :data:`NO_EFFECT_FIELDS` (or ``extra_fields``)."""
    known = MODEL_FIELDS[model_type] | NO_EFFECT_FIELDS | extra_fields
    unknown = sorted(k for k in hf if k not in known)
    if unknown:
        raise CheckpointError(
            f"config.json: field(s) {unknown} are not supported for model_type={model_type!r} "
            "(importing would silently ignore them)"
        )
    if hf.get("is_encoder_decoder"):
        raise CheckpointError("config.json: is_encoder_decoder=true is not supported")


def _rope_spec(spec: Mapping[str, Any], where: str, default_theta: Optional[float],
               allowed: Tuple[str, ...] = _ROPE_TYPES) -> Dict[str, Any]:
    """The :class:`DecoderConfig` rotary fields of one rope dict (``where`` names it)."""
    unknown = sorted(set(spec) - _ROPE_KEYS)
    if unknown:
        raise CheckpointError(f"config.json: {where} field(s) {unknown} are not supported")
    rope_type = spec.get("rope_type", spec.get("type", "default"))
    if rope_type not in allowed:
        raise CheckpointError(
            f"config.json: {where}.rope_type={rope_type!r} is not supported ({', '.join(allowed)})"
        )
    theta = spec.get("rope_theta", default_theta)
    if theta is None:
        raise CheckpointError(f"config.json: {where}.rope_theta is missing")
    out: Dict[str, Any] = {"rope_theta": float(theta), "rope_scaling_type": rope_type}
    try:
        if rope_type in ("linear", "llama3"):
            out["rope_scaling_factor"] = float(spec["factor"])
        if rope_type == "llama3":
            out.update(
                rope_low_freq_factor=float(spec["low_freq_factor"]),
                rope_high_freq_factor=float(spec["high_freq_factor"]),
                rope_original_max_len=int(spec["original_max_position_embeddings"]),
            )
    except KeyError as e:
        raise CheckpointError(f"config.json: {where}.{e.args[0]} is missing for rope_type "
                              f"{rope_type!r}") from None
    return out


def _merged_rope(hf: Mapping[str, Any]) -> Dict[str, Any]:
    """``rope_parameters`` with the older ``rope_scaling`` / ``rope_theta`` fields folded in."""
    rope = dict(hf.get("rope_parameters") or {})
    legacy = hf.get("rope_scaling") or {}
    rope.update({k: v for k, v in legacy.items() if k not in rope})
    if "rope_theta" not in rope and hf.get("rope_theta") is not None:
        rope["rope_theta"] = hf["rope_theta"]
    return rope


def _gemma3_rope(hf: Mapping[str, Any]) -> Dict[str, Any]:
    """Rotary fields of a Gemma 3 config: full layers from ``rope_parameters.full_attention``
    (or ``rope_theta`` / ``rope_scaling``), local layers from
    ``rope_parameters.sliding_attention`` (or ``rope_local_base_freq``)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        unknown = sorted(set(params) - {"full_attention", "sliding_attention"})
        if unknown:
            raise CheckpointError(f"config.json: rope_parameters field(s) {unknown} are not "
                                  "supported (full_attention, sliding_attention)")
        full = dict(params.get("full_attention") or {})
        local = dict(params.get("sliding_attention") or {})
        if hf.get("rope_scaling"):
            raise CheckpointError("config.json: rope_scaling next to per-layer-type "
                                  "rope_parameters is ambiguous")
    else:
        full = _merged_rope(hf)
        local = {}
    full.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
    local.setdefault("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    out = _rope_spec(full, "rope_parameters.full_attention", None)
    local_out = _rope_spec(local, "rope_parameters.sliding_attention", None, allowed=("default",))
    out["rope_local_theta"] = local_out["rope_theta"]
    return out


def _layer_types(hf: Mapping[str, Any], model_type: str, n: int) -> Tuple[str, ...]:
    """Per-layer attention types, from ``layer_types`` or the older per-family fields."""
    types = hf.get("layer_types")
    if types is None:
        if model_type in ("qwen2", "qwen3"):
            window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
            start = int(hf.get("max_window_layers", n) or 0)
            types = ["sliding_attention" if window is not None and i >= start
                     else "full_attention" for i in range(n)]
        elif model_type == "gemma2":
            types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
        elif model_type == "gemma3_text":
            pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                     for i in range(n)]
        else:
            return ()
    types = tuple(types)
    bad = sorted(set(types) - {"full_attention", "sliding_attention"})
    if bad:
        raise CheckpointError(f"config.json: layer_types values {bad} are not supported "
                              "(full_attention, sliding_attention)")
    if len(types) != n:
        raise CheckpointError(f"config.json: layer_types has {len(types)} entries for "
                              f"num_hidden_layers={n}")
    return types


def config_from_hf(
    hf: Mapping[str, Any],
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
    extra_fields: frozenset = frozenset(),
) -> DecoderConfig:
    """A :class:`DecoderConfig` equivalent to a Hugging Face ``config.json`` dict of one of
    :data:`SUPPORTED_MODEL_TYPES` (see the module docstring).

    ``pad_id`` overrides the checkpoint's ``pad_token_id`` (Llama checkpoints often have none; the
    default is then 0). A list of ``eos_token_id`` uses its first entry. ``extra_fields`` are
    further fields the caller reads itself (e.g. a classification head's).
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"config.json: model_type={model_type!r} is not supported (supported: "
            f"{SUPPORTED_MODEL_TYPES})"
        )
    check_fields(hf, model_type, extra_fields)
    gemma = model_type in ("gemma2", "gemma3_text")
    if gemma:
        act_name = hf.get("hidden_activation", "gelu_pytorch_tanh")
        if act_name not in _GEMMA_ACTIVATIONS:
            raise CheckpointError(f"config.json: hidden_activation={act_name!r} is not supported "
                                  f"({sorted(_GEMMA_ACTIVATIONS)})")
        act = _GEMMA_ACTIVATIONS[act_name]
        if hf.get("use_bidirectional_attention"):
            raise CheckpointError("config.json: use_bidirectional_attention=true is not supported "
                                  "(causal decoders only)")
    else:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"config.json: hidden_act={act!r} is not supported (only 'silu')")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        if key not in hf:
            raise CheckpointError(f"config.json: required field {key!r} is missing")
    n = int(hf["num_hidden_layers"])
    heads = int(hf["num_attention_heads"])
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_dim = int(hf.get("head_dim") or hf["hidden_size"] // heads)

    if model_type == "gemma3_text":
        rope = _gemma3_rope(hf)
    else:
        rope = _rope_spec(_merged_rope(hf), "rope_parameters", 10_000.0)

    extra: Dict[str, Any] = {}
    if model_type == "llama":
        extra.update(attention_bias=bool(hf.get("attention_bias", False)),
                     mlp_bias=bool(hf.get("mlp_bias", False)))
    elif model_type == "qwen2":
        extra.update(attention_bias=True, attention_out_bias=False)
    elif model_type == "qwen3":
        extra.update(attention_bias=bool(hf.get("attention_bias", False)), qk_norm=True)
    elif gemma:
        extra.update(
            attention_bias=bool(hf.get("attention_bias", False)),
            norm_zero_centered=True, embed_scale=True, post_norms=True,
            qk_norm=model_type == "gemma3_text",
            query_scale=float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5,
            final_logit_softcap=float(hf.get("final_logit_softcapping") or 0.0),
        )
        cap = hf.get("attn_logit_softcapping")
        if model_type == "gemma2":
            extra["attn_logit_softcap"] = float(cap or 0.0)
        elif cap is not None:
            # transformers' Gemma 3 attention does not apply it; importing would be ambiguous.
            raise CheckpointError(f"config.json: attn_logit_softcapping={cap!r} is not supported "
                                  "for model_type 'gemma3_text' (only null)")

    window = hf.get("sliding_window")
    if model_type == "mistral":
        if window is not None:
            extra.update(sliding_window=int(window))
    elif model_type in ("qwen2", "qwen3", "gemma2", "gemma3_text"):
        types = _layer_types(hf, model_type, n)
        if "sliding_attention" in types:
            if window is None:
                raise CheckpointError("config.json: sliding_window is null but layer_types has "
                                      "'sliding_attention' layers")
            extra.update(sliding_window=int(window), layer_types=types)

    pad = pad_id if pad_id is not None else _first(hf.get("pad_token_id"))
    eos = _first(hf.get("eos_token_id"))
    bos = _first(hf.get("bos_token_id"))
    try:
        return DecoderConfig(
            vocab_size=int(hf["vocab_size"]),
            d_model=int(hf["hidden_size"]),
            num_layers=n,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            mlp_dim=int(hf["intermediate_size"]),
            activation=act,
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
            parallel_block=False,
            pad_id=0 if pad is None else int(pad),
            eos_id=0 if eos is None else int(eos),
            bos_id=-1 if bos is None else int(bos),
            compute_dtype=dtype,
            param_dtype=param_dtype,
            **rope,
            **extra,
        )
    except ValueError as e:
        raise CheckpointError(f"config.json: {e}") from None


# -- tensors ---------------------------------------------------------------------------------------


def expected_tensors(cfg: DecoderConfig, *, prefix: str = "model.", lm_head: bool = True
                     ) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor a checkpoint of ``cfg`` holds (backbone under ``prefix``;
    ``lm_head.weight`` when untied and ``lm_head``)."""
    e, h, k, d, f, v = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim,
                        cfg.vocab_size)
    shapes = {prefix + "embed_tokens.weight": (v, e), prefix + "norm.weight": (e,)}
    if lm_head and not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (v, e)
    for i in range(cfg.num_layers):
        p = f"{prefix}layers.{i}."
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
        if cfg.post_norms:
            shapes.update({
                p + "pre_feedforward_layernorm.weight": (e,),
                p + "post_feedforward_layernorm.weight": (e,),
            })
        if cfg.qk_norm:
            shapes.update({p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)})
        if cfg.attention_bias:
            shapes.update({
                p + "self_attn.q_proj.bias": (h * d,),
                p + "self_attn.k_proj.bias": (k * d,),
                p + "self_attn.v_proj.bias": (k * d,),
            })
        if cfg.out_bias:
            shapes[p + "self_attn.o_proj.bias"] = (e,)
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


def convert_tensors(tensors: Any, cfg: DecoderConfig, *, prefix: str = "model.",
                    lm_head: bool = True, check: bool = True, source: str = "checkpoint"
                    ) -> dict:
    """Maps Hugging Face tensors to the pure-dict state of ``DecoderLM(cfg)``.

    ``tensors``: a name -> numpy array mapping, or a :class:`lsc.models.hf_io.TensorReader`
    (read lazily). Values are ``float32`` numpy arrays (``bfloat16`` checkpoints are widened
    exactly). The backbone's tensors are named under ``prefix``; ``lm_head`` says whether an
    untied ``lm_head.weight`` is read. With ``check`` the names and shapes are checked first
    (:func:`lsc.models.hf_io.check_tensors`; ``source`` names the checkpoint in its errors).
    """
    if check:
        hf_io.check_tensors(tensors, expected_tensors(cfg, prefix=prefix, lm_head=lm_head),
                            ignorable=lambda n: _ignorable(n, cfg), source=source)
    _, _, get = hf_io.accessors(tensors)
    e, h, k, d = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    t = lambda name: np.asarray(get(name), dtype=np.float32)  # noqa: E731
    out: dict = {
        "embed": {"embedding": t(prefix + "embed_tokens.weight")},
        "final_norm": {"scale": t(prefix + "norm.weight")},
        "layers": {},
    }
    if lm_head and not cfg.tie_embeddings:
        out["lm_head"] = {"kernel": t("lm_head.weight").T}
    for i in range(cfg.num_layers):
        p = f"{prefix}layers.{i}."
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
        if cfg.out_bias:
            attn["o"]["bias"] = t(p + "self_attn.o_proj.bias")
        if cfg.qk_norm:
            attn["q_norm"] = {"scale": t(p + "self_attn.q_norm.weight")}
            attn["k_norm"] = {"scale": t(p + "self_attn.k_norm.weight")}
        if cfg.mlp_bias:
            for n in ("gate", "up", "down"):
                mlp[n]["bias"] = t(p + f"mlp.{n}_proj.bias")
        layer = {"attn": attn, "mlp": mlp, "attn_norm": {"scale": t(p + "input_layernorm.weight")}}
        if cfg.post_norms:
            layer.update(
                post_attn_norm={"scale": t(p + "post_attention_layernorm.weight")},
                mlp_norm={"scale": t(p + "pre_feedforward_layernorm.weight")},
                post_mlp_norm={"scale": t(p + "post_feedforward_layernorm.weight")},
            )
        else:
            layer["mlp_norm"] = {"scale": t(p + "post_attention_layernorm.weight")}
        out["layers"][i] = layer
    return out


def load_decoder(
    path: str,
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> Tuple[DecoderLM, DecoderConfig]:
    """Loads causal-LM checkpoint directory ``path`` into a new :class:`DecoderLM`; returns
    (model, config). Parameters are cast to ``param_dtype``; ``dtype`` is the compute dtype.
    The parameters are host (numpy) arrays (:func:`lsc.models.hf_io.fill_module`): put them where
    they run, ``jax.device_put(nnx.state(model), shardings)``, before calling the model in a loop."""
    cfg = config_from_hf(hf_io.read_hf_config(path), pad_id=pad_id, dtype=dtype,
                         param_dtype=param_dtype)
    pure = convert_tensors(hf_io.TensorReader(path), cfg, source=path)
    model = hf_io.fill_module(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)), pure, source=path)
    return model, cfg
