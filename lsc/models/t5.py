"""T5.1.1 encoder-decoder (the paper's reward-model architecture) in Flax NNX.

Architecture (matching Hugging Face ``T5ForConditionalGeneration`` numerically):

* T5 layer norm: RMS normalisation with a learned scale, no bias and no mean subtraction,
  statistics in float32 (:class:`lsc.models.layers.RMSNorm`).
* Pre-norm residual blocks. Encoder layer: self-attention, feed-forward. Decoder layer: causal
  self-attention, cross-attention over the encoder output, feed-forward. Each stack ends with a
  final layer norm.
* Bucketed relative position bias: one ``[num_buckets, heads]`` table per stack (T5 keeps it in
  the first layer and passes the bias on to the other layers; here it belongs to the stack and is
  computed once per forward pass, which is the same thing). Bidirectional buckets in the encoder,
  unidirectional (causal) buckets in the decoder; cross-attention has no position bias.
* No 1/sqrt(head_dim) scaling of the attention logits (T5 folds it into the initialisation of
  the query projection, which is reproduced here).
* Feed-forward: gated (``gated-gelu``: ``gelu_new(x W_0) * (x W_1)``, T5.1.1 and flan-t5) or
  plain (``relu``: ``relu(x W_i)``, original T5). No biases anywhere.
* Input embedding shared by encoder and decoder; no embedding scaling. LM head untied for T5.1.1
  (``tie_word_embeddings=False``); when tied (original T5), the decoder output is multiplied by
  ``d_model ** -0.5`` before the shared embedding is applied (``scale_decoder_outputs``).
* Optional dropout (``dropout_rate``) at the same places as T5: after the embedding, on the
  attention probabilities, inside the feed-forward, on every sub-layer output and after the final
  layer norm. It is active only when a ``dropout_rng`` key is passed.

Relative positions are computed from raw token indices, as in Hugging Face T5 and t5x. With the
padding conventions of :mod:`lsc.models.protocol` (left-padded prompts, right-padded responses,
i.e. padding contiguous at one end) the distances between real tokens are then the same as with
positions counted over real tokens only, and padded keys are masked out, so padding does not
change the outputs at real positions. (Padding in the middle of a sequence would shift the
distances across the gap; Hugging Face T5 behaves the same way.)

Parameters carry logical axis names (``out_sharding`` metadata, not applied eagerly; see
:mod:`lsc.models.layers`): ``vocab``, ``embed``, ``mlp``, ``heads``, ``head_dim``,
``relpos_buckets``.

:class:`T5` implements :class:`lsc.models.protocol.Autoregressive` (``init_cache`` /
``prefill`` / ``decode_step``) for ``lsc.models.sampling``, and the reward/value backbone
interface of the decoder-only model (``reward_features`` / ``response_features``): a
:class:`lsc.models.heads.RewardModel` on :class:`T5` is a Bradley-Terry reward model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc import schema
from lsc.models import layers
from lsc.models.layers import DropoutStream, last_true_index
from lsc.models.layers import dropout as _dropout
from lsc.models.layers import dropout_keep_mask  # noqa: F401  (part of this module's API)
from lsc.models.layers import dropout_stream as _stream
from lsc.models.layers import dropout_substream as _fold

Array = jax.Array
Cache = dict

# Hugging Face activation names (``dense_act_fn``) -> names of
# :func:`lsc.models.layers.activation_fn`.
_HF_ACTIVATIONS = {
    "relu": "relu",
    "gelu_new": "gelu_tanh",  # tanh approximation
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",  # exact erf form
    "silu": "silu",
    "swish": "silu",
}


def activation_name(feed_forward_proj: str) -> Tuple[str, bool]:
    """Maps a T5 ``feed_forward_proj`` string to ``(Hugging Face activation name, is_gated)``.

    Follows Hugging Face's ``T5Config``: ``"gated-gelu"`` means the tanh-approximate GELU
    (``gelu_new``); otherwise ``"gated-<act>"`` or ``"<act>"``.
    """
    parts = feed_forward_proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(
            "T5Config.feed_forward_proj must be '<act>' or 'gated-<act>', got "
            f"{feed_forward_proj!r}"
        )
    gated = len(parts) == 2
    act = "gelu_new" if feed_forward_proj == "gated-gelu" else parts[-1]
    if act not in _HF_ACTIVATIONS:
        raise ValueError(
            f"T5Config.feed_forward_proj={feed_forward_proj!r}: activation {act!r} is not "
            f"supported; supported: {sorted(_HF_ACTIVATIONS)}"
        )
    return act, gated


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 encoder-decoder (field names follow Hugging Face ``T5Config``).

    ``num_decoder_layers=None`` means as many as ``num_layers``. ``scale_decoder_outputs=None``
    means ``tie_word_embeddings`` (original T5 scales by ``d_model ** -0.5`` before the tied
    head; T5.1.1 has an untied head and no scaling).

    ``compute_dtype`` (:data:`lsc.models.layers.COMPUTE_DTYPES`) is the dtype of the matmul
    operands and activations: the float32 parameters are cast to it where they are used and every
    product accumulates in float32. Attention logits, softmax, norm statistics and the relative
    position bias are float32 either way, and logits are returned in float32. ``param_dtype``
    (:data:`lsc.models.layers.PARAM_DTYPES`) is the dtype the parameters are stored in: float32
    for a model that is trained.

    ``attention_impl`` (:data:`lsc.models.layers.ATTENTION_IMPLS`): 'xla', 'cudnn' (cuDNN's flash
    kernel, relative position bias included; an error where it cannot run) or 'auto' (cudnn where
    it can run: a GPU, bfloat16 compute, ``dropout_rate`` 0; else xla with one log line naming
    why); :func:`lsc.models.layers.attention_impl`.
    """

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 12
    num_decoder_layers: Optional[int] = None
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    scale_decoder_outputs: Optional[bool] = None
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"T5Config.{name} must be an integer >= 1, got {value!r}")
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", int(self.num_layers))
        elif (not isinstance(self.num_decoder_layers, (int, np.integer))
              or self.num_decoder_layers < 1):
            raise ValueError(
                f"T5Config.num_decoder_layers must be an integer >= 1 or None, got "
                f"{self.num_decoder_layers!r}"
            )
        if self.scale_decoder_outputs is None:
            object.__setattr__(self, "scale_decoder_outputs", bool(self.tie_word_embeddings))
        nb, md = self.relative_attention_num_buckets, self.relative_attention_max_distance
        if not isinstance(nb, (int, np.integer)) or nb < 4:
            raise ValueError(
                f"T5Config.relative_attention_num_buckets must be an integer >= 4, got {nb!r}"
            )
        if not isinstance(md, (int, np.integer)) or md <= nb // 2:
            raise ValueError(
                "T5Config.relative_attention_max_distance must be an integer > "
                f"relative_attention_num_buckets // 2 = {nb // 2}, got {md!r}"
            )
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if not float(self.layer_norm_epsilon) > 0.0:
            raise ValueError(
                f"T5Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}"
            )
        activation_name(self.feed_forward_proj)
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"T5Config.{name} must be an integer in [0, vocab_size={self.vocab_size}), "
                    f"got {value!r}"
                )
        for name, choices in (("compute_dtype", layers.COMPUTE_DTYPES),
                              ("param_dtype", layers.PARAM_DTYPES),
                              ("attention_impl", layers.ATTENTION_IMPLS)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"T5Config.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )

    @property
    def activation(self) -> str:
        """Name of the feed-forward activation (``dense_act_fn`` in Hugging Face terms)."""
        return activation_name(self.feed_forward_proj)[0]

    @property
    def is_gated(self) -> bool:
        """Whether the feed-forward is gated (two input projections)."""
        return activation_name(self.feed_forward_proj)[1]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "T5Config":
        """Builds a config from a mapping (e.g. an ``ml_collections.ConfigDict``).

        Unknown keys raise ``ValueError`` naming them.
        """
        return schema.from_mapping(cls, d)

    def to_dict(self) -> dict:
        """The config as a plain dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------


def _normal(std: float):
    """Normal initializer with standard deviation ``std`` (Mesh TensorFlow / T5 style)."""
    return nnx.initializers.normal(stddev=float(std))


def attention_with_dropout(
    q: Array,
    k: Array,
    v: Array,
    mask: Array,
    bias: Optional[Array],
    rate: float,
    dropout: DropoutStream,
    implementation: str = "xla",
    causal: bool = False,
) -> Array:
    """T5 attention (logit scale 1) with optional dropout on the attention probabilities.

    ``q[B, L, H, D]``, ``k``/``v`` ``[B, S, H, D]``, ``mask`` bool broadcastable to ``[B, L,
    S]``, ``bias`` float32 broadcastable to ``[B, H, L, S]`` or None; ``dropout``: ``(key,
    site)`` (see :func:`dropout_keep_mask`) or None. Returns ``[B, L, H, D]`` in ``q.dtype``.
    Without dropout (``dropout`` None or ``rate`` 0) this is
    :func:`lsc.models.layers.dot_product_attention`, or with ``implementation='cudnn'``
    :func:`lsc.models.layers.fused_attention` (``causal``: ``mask`` is causal, ``S = L``).
    """
    if dropout is None or rate == 0.0:
        if implementation == "cudnn":
            return layers.fused_attention(q, k, v, mask, scale=1.0, bias=bias, causal=causal)
        return layers.dot_product_attention(q, k, v, mask, scale=1.0, bias=bias)
    b, l, h, d = q.shape
    logits = layers.contract("blhd,bshd->bhls", q, k, jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    mask = jnp.broadcast_to(mask, (b, l, k.shape[1]))
    logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
    probs = _dropout(jax.nn.softmax(logits, axis=-1), rate, dropout).astype(v.dtype)
    return layers.contract("bhls,bshd->blhd", probs, v)


@functools.lru_cache(maxsize=None)
def _bucket_table(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of each distance ``0..max_distance`` (int32 ``[max_distance + 1]``).

    The Mesh TensorFlow / T5 formula, evaluated in float32 like the reference implementations:
    exact buckets for distances below ``num_buckets // 2``, logarithmic bins up to
    ``max_distance``, and the last bucket for everything at or beyond it (so any larger distance
    is clipped to ``max_distance`` before the lookup).
    """
    max_exact = num_buckets // 2
    d = np.arange(max_distance + 1, dtype=np.int64)
    with np.errstate(divide="ignore"):
        ratio = np.log(d.astype(np.float32) / np.float32(max_exact)) / np.float32(
            math.log(max_distance / max_exact)
        )
        scaled = (ratio * np.float32(num_buckets - max_exact)).astype(np.float32)
    large = max_exact + np.where(d < max_exact, 0, np.trunc(scaled)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return np.where(d < max_exact, d, large).astype(np.int32)


def relative_position_bucket(
    relative_position: Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """T5 relative-position buckets.

    ``relative_position`` = key position - query position (int32, any shape) -> int32 buckets in
    ``[0, num_buckets)`` of the same shape. Bidirectional: half the buckets for keys after the
    query. Unidirectional: keys after the query share bucket 0 (they are masked anyway).
    """
    rel = jnp.asarray(relative_position, jnp.int32)
    if bidirectional:
        half = num_buckets // 2
        table = jnp.asarray(_bucket_table(half, max_distance))
        offset = jnp.where(rel > 0, half, 0)
        dist = jnp.abs(rel)
    else:
        table = jnp.asarray(_bucket_table(num_buckets, max_distance))
        offset = 0
        dist = jnp.maximum(-rel, 0)
    return offset + table[jnp.minimum(dist, max_distance)]


class RelativePositionBias(nnx.Module):
    """Learned bucketed relative position bias of one stack.

    Parameter ``embedding``: ``[num_buckets, heads]`` on axes ``(relpos_buckets, heads)``.
    """

    def __init__(self, config: T5Config, *, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional = bool(bidirectional)
        self.num_buckets = int(config.relative_attention_num_buckets)
        self.max_distance = int(config.relative_attention_max_distance)
        self.embedding = layers.param(
            rngs,
            _normal(config.d_model**-0.5),
            (self.num_buckets, config.num_heads),
            ("relpos_buckets", "heads"),
            jnp.dtype(config.param_dtype),
        )

    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """``query_positions[Q]``, ``key_positions[K]`` (int32) -> float32 bias ``[1, H, Q, K]``."""
        rel = key_positions[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(
            rel,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        values = jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=0)  # [Q, K, H]
        return jnp.transpose(values, (2, 0, 1))[None]


class T5Attention(nnx.Module):
    """Multi-head attention without biases and without 1/sqrt(d) logit scaling.

    Parameters (:class:`lsc.models.layers.Einsum` kernels): ``q``, ``k``, ``v``: ``[d_model,
    heads, d_kv]`` on ``(embed, heads, head_dim)``; ``o``: ``[heads, d_kv, d_model]`` on
    ``(heads, head_dim, embed)``. Initialisation follows Mesh TensorFlow (the query's standard
    deviation carries the ``d_kv ** -0.5`` factor). ``attention_impl``: 'xla' or 'cudnn'
    (resolved by :func:`lsc.models.layers.attention_impl`).
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs, attention_impl: str = "xla"):
        d, h, k = config.d_model, config.num_heads, config.d_kv
        self.attention_impl = attention_impl
        common = dict(
            dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs
        )
        in_axes = ("embed", "heads", "head_dim")
        self.dropout_rate = float(config.dropout_rate)
        self.q = layers.Einsum(
            "BLE,EHD->BLHD", (d, h, k), axes=in_axes, kernel_init=_normal((d * k) ** -0.5), **common
        )
        self.k = layers.Einsum(
            "BLE,EHD->BLHD", (d, h, k), axes=in_axes, kernel_init=_normal(d**-0.5), **common
        )
        self.v = layers.Einsum(
            "BLE,EHD->BLHD", (d, h, k), axes=in_axes, kernel_init=_normal(d**-0.5), **common
        )
        self.o = layers.Einsum(
            "BLHD,HDE->BLE",
            (h, k, d),
            axes=("heads", "head_dim", "embed"),
            kernel_init=_normal((h * k) ** -0.5),
            **common,
        )

    def key_value(self, x: Array) -> Tuple[Array, Array]:
        """``x[B, S, d_model]`` -> keys and values ``[B, S, heads, d_kv]``."""
        return self.k(x), self.v(x)

    def __call__(
        self,
        x: Array,
        k: Array,
        v: Array,
        mask: Array,
        bias: Optional[Array] = None,
        dropout: DropoutStream = None,
        causal: bool = False,
    ) -> Array:
        """Queries from ``x[B, L, d_model]`` attend over ``k``/``v`` ``[B, S, heads, d_kv]``.

        ``mask`` bool broadcastable to ``[B, L, S]`` (True = attend); ``bias`` float32
        broadcastable to ``[B, H, L, S]`` or None; ``causal``: ``mask`` is causal (``S = L``).
        Returns ``[B, L, d_model]``.
        """
        q = self.q(x)
        out = attention_with_dropout(
            q, k.astype(q.dtype), v.astype(q.dtype), mask, bias, self.dropout_rate, dropout,
            self.attention_impl, causal,
        )
        return self.o(out)


class T5FeedForward(nnx.Module):
    """Gated (``wi_0``, ``wi_1``, ``wo``) or plain (``wi``, ``wo``) feed-forward, no biases.

    :class:`lsc.models.layers.Linear` kernels: ``wi*`` ``[d_model, d_ff]`` on ``(embed, mlp)``;
    ``wo`` ``[d_ff, d_model]`` on ``(mlp, embed)``.
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        d, f = config.d_model, config.d_ff
        common = dict(
            dtype=jnp.dtype(config.compute_dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs
        )
        self.gated = config.is_gated
        self.activation = _HF_ACTIVATIONS[config.activation]
        self.dropout_rate = float(config.dropout_rate)
        wi = dict(axes=("embed", "mlp"), kernel_init=_normal(d**-0.5), **common)
        if self.gated:
            self.wi_0 = layers.Linear(d, f, **wi)
            self.wi_1 = layers.Linear(d, f, **wi)
        else:
            self.wi = layers.Linear(d, f, **wi)
        self.wo = layers.Linear(f, d, axes=("mlp", "embed"), kernel_init=_normal(f**-0.5), **common)

    def __call__(self, x: Array, dropout: DropoutStream = None) -> Array:
        """``x[..., d_model]`` -> ``[..., d_model]``."""
        act = layers.activation_fn(self.activation)
        if self.gated:
            h = act(self.wi_0(x)) * self.wi_1(x)
        else:
            h = act(self.wi(x))
        return self.wo(_dropout(h, self.dropout_rate, dropout))


def _norm(config: T5Config, rngs: nnx.Rngs) -> layers.RMSNorm:
    return layers.RMSNorm(
        config.d_model,
        eps=config.layer_norm_epsilon,
        dtype=jnp.dtype(config.compute_dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        rngs=rngs,
    )


# ----------------------------------------------------------------------------------------------
# Layers and stacks
# ----------------------------------------------------------------------------------------------


class T5EncoderLayer(nnx.Module):
    """Pre-norm self-attention + feed-forward block of the encoder."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs, attention_impl: str = "xla"):
        self.dropout_rate = float(config.dropout_rate)
        self.self_attn_norm = _norm(config, rngs)
        self.self_attn = T5Attention(config, rngs=rngs, attention_impl=attention_impl)
        self.ffn_norm = _norm(config, rngs)
        self.ffn = T5FeedForward(config, rngs=rngs)

    def __call__(
        self, x: Array, bias: Array, mask: Array, dropout: DropoutStream = None
    ) -> Array:
        """``x[B, P, d_model]``, ``bias[1, H, P, P]`` float32, ``mask[B, 1, P]`` bool ->
        ``[B, P, d_model]``."""
        h = self.self_attn_norm(x)
        k, v = self.self_attn.key_value(h)
        h = self.self_attn(h, k, v, mask, bias, _fold(dropout, 0))
        x = x + _dropout(h, self.dropout_rate, _fold(dropout, 1))
        h = self.ffn(self.ffn_norm(x), _fold(dropout, 2))
        return x + _dropout(h, self.dropout_rate, _fold(dropout, 3))


class T5DecoderLayer(nnx.Module):
    """Pre-norm causal self-attention + cross-attention + feed-forward block of the decoder."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs, attention_impl: str = "xla"):
        self.dropout_rate = float(config.dropout_rate)
        self.self_attn_norm = _norm(config, rngs)
        self.self_attn = T5Attention(config, rngs=rngs, attention_impl=attention_impl)
        self.cross_attn_norm = _norm(config, rngs)
        self.cross_attn = T5Attention(config, rngs=rngs, attention_impl=attention_impl)
        self.ffn_norm = _norm(config, rngs)
        self.ffn = T5FeedForward(config, rngs=rngs)

    def __call__(
        self,
        x: Array,
        self_bias: Array,
        self_mask: Array,
        cross_kv: Tuple[Array, Array],
        cross_mask: Array,
        *,
        cache: Optional[Mapping[str, Array]] = None,
        index: Optional[Array] = None,
        dropout: DropoutStream = None,
        causal: bool = False,
    ) -> Tuple[Array, Optional[dict]]:
        """One decoder layer.

        ``x[B, L, d_model]``; ``self_bias`` float32 ``[1, H, L, S]``; ``self_mask`` bool
        broadcastable to ``[B, L, S]``; ``cross_kv``: encoder keys/values ``[B, P, H, D]``;
        ``cross_mask`` bool ``[B, 1, P]``. Without ``cache``, ``S = L`` (keys are this call's
        tokens). With ``cache = {'k', 'v'}`` of shape ``[B, T, H, D]``, this call's keys/values
        are written at slots ``index ..`` (int32 scalar) and attention runs over all ``S = T``
        slots (``self_mask`` hides unwritten ones). ``causal``: ``self_mask`` is causal (no
        cache). Returns the new ``x`` and the updated cache entry (None without one).
        """
        h = self.self_attn_norm(x)
        k, v = self.self_attn.key_value(h)
        new_cache = None
        if cache is not None:
            new_cache = layers.write_kv_cache(cache, k, v, index)
            k, v = new_cache["k"], new_cache["v"]
        h = self.self_attn(h, k, v, self_mask, self_bias, _fold(dropout, 0), causal=causal)
        x = x + _dropout(h, self.dropout_rate, _fold(dropout, 1))
        h = self.cross_attn_norm(x)
        h = self.cross_attn(h, cross_kv[0], cross_kv[1], cross_mask, None, _fold(dropout, 2))
        x = x + _dropout(h, self.dropout_rate, _fold(dropout, 3))
        h = self.ffn(self.ffn_norm(x), _fold(dropout, 4))
        return x + _dropout(h, self.dropout_rate, _fold(dropout, 5)), new_cache


class T5Encoder(nnx.Module):
    """Encoder stack: layers sharing one bidirectional relative position bias, final norm."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs, attention_impl: str = "xla"):
        self.dropout_rate = float(config.dropout_rate)
        self.relative_bias = RelativePositionBias(config, bidirectional=True, rngs=rngs)
        self.layers = nnx.List(
            [T5EncoderLayer(config, rngs=rngs, attention_impl=attention_impl)
             for _ in range(config.num_layers)]
        )
        self.final_norm = _norm(config, rngs)

    def __call__(self, x: Array, mask: Array, dropout: DropoutStream = None) -> Array:
        """Embedded input ``x[B, P, d_model]``, ``mask[B, P]`` bool -> ``[B, P, d_model]``."""
        pos = jnp.arange(x.shape[1], dtype=jnp.int32)
        bias = self.relative_bias(pos, pos)
        attn_mask = mask[:, None, :]
        x = _dropout(x, self.dropout_rate, _fold(dropout, 0))
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, attn_mask, _fold(dropout, i + 1))
        x = self.final_norm(x)
        return _dropout(x, self.dropout_rate, _fold(dropout, len(self.layers) + 1))


class T5Decoder(nnx.Module):
    """Decoder stack: layers sharing one causal relative position bias, final norm."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs, attention_impl: str = "xla"):
        self.dropout_rate = float(config.dropout_rate)
        self.relative_bias = RelativePositionBias(config, bidirectional=False, rngs=rngs)
        self.layers = nnx.List(
            [T5DecoderLayer(config, rngs=rngs, attention_impl=attention_impl)
             for _ in range(config.num_decoder_layers)]
        )
        self.final_norm = _norm(config, rngs)

    def __call__(
        self,
        x: Array,
        cross_kvs: Sequence[Tuple[Array, Array]],
        encoder_mask: Array,
        decoder_mask: Optional[Array] = None,
        dropout: DropoutStream = None,
    ) -> Array:
        """Full (teacher-forced) decoding.

        ``x[B, L, d_model]`` embedded decoder inputs; ``cross_kvs``: per layer encoder
        keys/values ``[B, P, H, D]``; ``encoder_mask[B, P]`` bool; ``decoder_mask[B, L]`` bool
        or None (keys to hide in addition to the causal mask). Returns ``[B, L, d_model]``
        after the final norm.
        """
        pos = jnp.arange(x.shape[1], dtype=jnp.int32)
        bias = self.relative_bias(pos, pos)
        self_mask = (pos[None, :] <= pos[:, None])[None]  # [1, L, L]
        if decoder_mask is not None:
            self_mask = self_mask & decoder_mask[:, None, :]
        cross_mask = encoder_mask[:, None, :]
        x = _dropout(x, self.dropout_rate, _fold(dropout, 0))
        for i, (layer, kv) in enumerate(zip(self.layers, cross_kvs)):
            x, _ = layer(x, bias, self_mask, kv, cross_mask, dropout=_fold(dropout, i + 1),
                         causal=True)
        x = self.final_norm(x)
        return _dropout(x, self.dropout_rate, _fold(dropout, len(self.layers) + 1))


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def shift_right(tokens: Array, start_id: int = 0) -> Array:
    """Teacher-forcing decoder inputs: ``tokens[B, L]`` -> ``[start_id, tokens[:, :-1]]``."""
    start = jnp.full(tokens.shape[:-1] + (1,), start_id, tokens.dtype)
    return jnp.concatenate([start, tokens[..., :-1]], axis=-1)


class T5(nnx.Module):
    """T5 encoder-decoder with an LM head (``T5ForConditionalGeneration``).

    Submodules: ``shared`` (:class:`lsc.models.layers.Embedding`, ``[vocab, d_model]``, std 1),
    ``encoder``, ``decoder``, and ``lm_head`` (:class:`lsc.models.layers.Linear`, ``[d_model,
    vocab]`` on ``(embed, vocab)``) unless ``tie_word_embeddings``.

    Cache layout (a dict pytree; see :meth:`init_cache`)::

        {"index": int32[]                        # decoder positions written so far
         "encoder_mask": bool[B, P]              # prompt mask (P = 0 before prefill)
         "layers": tuple over decoder layers of
             {"k", "v": [B, T, heads, d_kv]      # decoder self-attention keys/values
              "cross_k", "cross_v": [B, P, heads, d_kv]}}   # encoder keys/values of the layer
    """

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.d_model = int(c.d_model)
        self.pad_id = int(c.pad_id)
        self.eos_id = int(c.eos_id)
        self.decoder_start_id = int(c.decoder_start_id)
        self.dtype = jnp.dtype(c.compute_dtype)
        pdtype = jnp.dtype(c.param_dtype)
        self.shared = layers.Embedding(
            c.vocab_size, c.d_model, embedding_init=_normal(1.0), dtype=self.dtype,
            param_dtype=pdtype, rngs=rngs,
        )
        impl = layers.select_attention_impl(
            c.attention_impl, model="T5", field="T5Config.attention_impl", dtype=c.compute_dtype,
            head_dim=c.d_kv, dropout=c.dropout_rate > 0)
        self.encoder = T5Encoder(c, rngs=rngs, attention_impl=impl)
        self.decoder = T5Decoder(c, rngs=rngs, attention_impl=impl)
        self.lm_head = None if c.tie_word_embeddings else layers.Linear(
            c.d_model, c.vocab_size, axes=("embed", "vocab"), kernel_init=_normal(1.0),
            dtype=self.dtype, param_dtype=pdtype, rngs=rngs,
        )

    # -- pieces ----------------------------------------------------------------------------

    def encode(
        self, tokens: Array, mask: Optional[Array] = None, *, dropout_rng: Optional[Array] = None
    ) -> Array:
        """Encoder output ``[B, P, d_model]`` for ``tokens[B, P]`` int32.

        ``mask[B, P]`` bool defaults to ``tokens != pad_id``.
        """
        if mask is None:
            mask = tokens != self.pad_id
        return self.encoder(self.shared(tokens), mask.astype(bool), _stream(dropout_rng, 1))

    def cross_key_values(self, encoded: Array) -> Tuple[Tuple[Array, Array], ...]:
        """Per decoder layer, the cross-attention keys/values ``[B, P, H, D]`` of ``encoded``."""
        return tuple(layer.cross_attn.key_value(encoded) for layer in self.decoder.layers)

    def decode(
        self,
        decoder_input_tokens: Array,
        encoded: Array,
        encoder_mask: Array,
        *,
        decoder_mask: Optional[Array] = None,
        dropout_rng: Optional[Array] = None,
    ) -> Array:
        """Decoder hidden states ``[B, L, d_model]`` (after the final norm, before any output
        scaling) for teacher-forced ``decoder_input_tokens[B, L]`` int32 given ``encoded[B, P,
        d_model]`` and ``encoder_mask[B, P]`` bool."""
        return self.decoder(
            self.shared(decoder_input_tokens),
            self.cross_key_values(encoded),
            encoder_mask.astype(bool),
            None if decoder_mask is None else decoder_mask.astype(bool),
            _stream(dropout_rng, 2),
        )

    def logits_from_hidden(self, hidden: Array) -> Array:
        """LM head: ``hidden[..., d_model]`` -> float32 logits ``[..., vocab]``."""
        if self.config.scale_decoder_outputs:
            hidden = hidden * jnp.asarray(self.config.d_model**-0.5, hidden.dtype)
        if self.lm_head is None:
            w = self.shared.embedding[...].astype(self.dtype)
            return layers.contract("...d,vd->...v", hidden, w, jnp.float32)
        w = self.lm_head.kernel[...].astype(self.dtype)
        return layers.contract("...d,dv->...v", hidden, w, jnp.float32)

    def __call__(
        self,
        encoder_tokens: Array,
        decoder_input_tokens: Array,
        encoder_mask: Optional[Array] = None,
        decoder_mask: Optional[Array] = None,
        *,
        dropout_rng: Optional[Array] = None,
    ) -> Array:
        """Full forward pass: float32 logits ``[B, L, vocab]``.

        ``encoder_tokens[B, P]`` int32 (mask defaults to ``!= pad_id``);
        ``decoder_input_tokens[B, L]`` int32, already shifted right (starting with
        ``decoder_start_id``; see :func:`shift_right`); ``decoder_mask[B, L]`` bool or None (the
        default: causal masking only, as Hugging Face does without ``decoder_attention_mask``).
        ``dropout_rng``: a PRNG key enabling dropout, or None for deterministic evaluation.
        """
        if encoder_mask is None:
            encoder_mask = encoder_tokens != self.pad_id
        encoded = self.encode(encoder_tokens, encoder_mask, dropout_rng=dropout_rng)
        hidden = self.decode(
            decoder_input_tokens, encoded, encoder_mask, decoder_mask=decoder_mask,
            dropout_rng=dropout_rng,
        )
        return self.logits_from_hidden(hidden)

    # -- reward / value backbone interface ---------------------------------------------------

    def _response_hidden(
        self, prompt_tokens: Array, response_tokens: Array, dropout_rng: Optional[Array] = None
    ) -> Array:
        """Decoder states ``[B, R + 1, d_model]`` for decoder input ``[start] + response``."""
        p_mask = prompt_tokens != self.pad_id
        encoded = self.encode(prompt_tokens, p_mask, dropout_rng=dropout_rng)
        b = response_tokens.shape[0]
        start = jnp.full((b, 1), self.decoder_start_id, response_tokens.dtype)
        dec_in = jnp.concatenate([start, response_tokens], axis=1)
        return self.decode(dec_in, encoded, p_mask, dropout_rng=dropout_rng)

    def reward_features(
        self, prompt_tokens: Array, response_tokens: Array, *, dropout_rng: Optional[Array] = None
    ) -> Array:
        """The representation a reward head reads: ``[B, d_model]``.

        The encoder reads the left-padded ``prompt_tokens[B, P]``; the decoder reads ``[start]
        + response_tokens[B, R]`` (right-padded); the feature is the decoder's final-normed
        hidden state at the **last non-pad response token**, i.e. the state that has seen the
        whole prompt and the whole response including its EOS (the start-token state for an
        empty response). Padding does not change it.
        """
        hidden = self._response_hidden(prompt_tokens, response_tokens, dropout_rng)
        r_mask = response_tokens != self.pad_id
        # position in [start] + response of the last real response token (0: the start token)
        last = jnp.where(jnp.any(r_mask, axis=1), last_true_index(r_mask) + 1, 0)
        return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]

    def response_token_states(
        self, prompt_tokens: Array, response_tokens: Array, *, dropout_rng: Optional[Array] = None
    ) -> Array:
        """``[B, R, d_model]``: row ``t`` is the decoder state at response token ``t`` (it has
        read the whole prompt and response tokens ``<= t``; ``[start] + response`` is decoded, so
        this is decoder position ``t + 1``). Rows of pad tokens are meaningless."""
        hidden = self._response_hidden(prompt_tokens, response_tokens, dropout_rng)
        return hidden[:, 1:]

    def response_features(
        self, prompt_tokens: Array, response_tokens: Array, *, dropout_rng: Optional[Array] = None
    ) -> Array:
        """``[B, R, d_model]``: row ``t`` is the decoder state that predicts response token ``t``
        (teacher forcing with ``shift_right(response)``; row 0 is the start-token state)."""
        hidden = self._response_hidden(prompt_tokens, response_tokens, dropout_rng)
        return hidden[:, : response_tokens.shape[1]]

    # -- Autoregressive protocol -------------------------------------------------------------

    def init_cache(
        self, batch_size: int, max_decode_length: int, dtype: Any = jnp.float32
    ) -> Cache:
        """An empty cache for ``batch_size`` rows and ``max_decode_length`` decoded tokens.

        The self-attention ``k``/``v`` get ``T = max_decode_length + 1`` slots (one for the
        start token fed by :meth:`prefill`, then one per :meth:`decode_step`), zeros ``[B, T,
        heads, d_kv]`` of ``dtype``; so ``max_decode_length = max_new_tokens`` gives the
        protocol's ``T = max_new_tokens + 1``. Writing beyond ``T`` is not checked inside jitted
        code. Cross-attention keys/values and the prompt mask have prompt length 0 until
        :meth:`prefill` fills them (same tree structure, new shapes).
        """
        c = self.config
        t = int(max_decode_length) + 1
        entries = []
        for _ in range(c.num_decoder_layers):
            entry = layers.init_kv_cache(batch_size, t, c.num_heads, c.d_kv, dtype)
            empty = layers.init_kv_cache(batch_size, 0, c.num_heads, c.d_kv, dtype)
            entry.update(cross_k=empty["k"], cross_v=empty["v"])
            entries.append(entry)
        return {
            "index": jnp.zeros((), jnp.int32),
            "encoder_mask": jnp.zeros((batch_size, 0), bool),
            "layers": tuple(entries),
        }

    def prefill(self, prompt_tokens: Array, cache: Cache) -> Tuple[Array, Cache]:
        """Encodes the left-padded ``prompt_tokens[B, P]`` int32 (mask ``!= pad_id``), stores
        the per-layer cross-attention keys/values and the prompt mask, then runs the decoder on
        the start token (``decoder_start_id`` = pad id 0) at position 0. Returns float32 logits
        ``[B, vocab]`` of the first response token and the cache with ``index = 1``.
        """
        mask = prompt_tokens != self.pad_id
        encoded = self.encode(prompt_tokens, mask)
        entries = []
        for entry, (k, v) in zip(cache["layers"], self.cross_key_values(encoded)):
            dtype = entry["k"].dtype
            entries.append({**entry, "cross_k": k.astype(dtype), "cross_v": v.astype(dtype)})
        cache = {"index": jnp.zeros((), jnp.int32), "encoder_mask": mask, "layers": tuple(entries)}
        start = jnp.full((prompt_tokens.shape[0],), self.decoder_start_id, jnp.int32)
        return self.decode_step(start, cache)

    def decode_step(self, tokens: Array, cache: Cache) -> Tuple[Array, Cache]:
        """Feeds ``tokens[B]`` int32 at decoder position ``cache["index"]``; returns float32
        logits ``[B, vocab]`` for the next position and the cache with ``index + 1``."""
        index = cache["index"]
        x = self.shared(tokens[:, None])  # [B, 1, d]
        key_pos = jnp.arange(cache["layers"][0]["k"].shape[1], dtype=jnp.int32)
        bias = self.decoder.relative_bias(index[None], key_pos)  # [1, H, 1, T]
        self_mask = (key_pos <= index)[None, None, :]  # [1, 1, T]
        cross_mask = cache["encoder_mask"][:, None, :]
        entries = []
        for layer, entry in zip(self.decoder.layers, cache["layers"]):
            x, kv = layer(
                x, bias, self_mask, (entry["cross_k"], entry["cross_v"]), cross_mask,
                cache=entry, index=index,
            )
            entries.append({**entry, **kv})
        logits = self.logits_from_hidden(self.decoder.final_norm(x[:, 0]))
        return logits, {
            "index": index + 1,
            "encoder_mask": cache["encoder_mask"],
            "layers": tuple(entries),
        }
