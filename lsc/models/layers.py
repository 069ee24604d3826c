"""Shared building blocks of the T5 and decoder-only model families (Flax NNX).

Every parameter is an ``nnx.Param`` whose ``out_sharding`` metadata holds *logical* axis names,
one per array dimension (``None`` for a dimension that is never sharded). The names are

    'batch', 'length', 'embed', 'mlp', 'heads', 'kv_heads', 'head_dim', 'vocab', 'relpos_buckets'

and ``lsc.parallel.partitioning`` maps them onto mesh axes with a config's rules. Parameters are
created with ``eager_sharding=False``, so building a module never needs a mesh; sharding is applied
afterwards (``lsc.parallel.partitioning.shard_state`` / ``sharded_init``).

Conventions used throughout:

* activations are ``[batch, length, ...]``; attention heads are ``[B, L, heads, head_dim]``;
* a boolean attention mask ``[B, L_q, L_kv]`` is ``True`` where a query may attend to a key;
* precision follows flax's ``param_dtype`` / ``dtype`` convention: parameters are stored in
  ``param_dtype`` (float32 master weights for anything trained) and cast to the compute ``dtype``
  (:data:`COMPUTE_DTYPES`) where they are used, so under bfloat16 compute every matmul takes
  bfloat16 operands and activations are bfloat16; every product accumulates in float32
  (:func:`contract`, also in the gradient) and norm statistics, softmax, attention logits and
  rotary angles are float32.

Contents: :data:`COMPUTE_DTYPES`, :data:`PARAM_DTYPES`, :func:`contract`, :func:`param`,
:class:`RMSNorm`, :class:`Linear`, :class:`Einsum`, :class:`Embedding`,
rotary embeddings (:func:`rope_inv_freq`, :func:`apply_rope`), :func:`dot_product_attention`,
the choice of attention implementation (:data:`ATTENTION_IMPLS`, :func:`attention_impl`,
:func:`select_attention_impl`) and cuDNN's fused kernel (:func:`fused_attention`),
:class:`Attention` (self- or cross-attention, optional rotary embeddings, optional additive bias,
optional KV cache), :class:`GatedMLP`, KV-cache helpers (:func:`init_kv_cache`,
:func:`write_kv_cache`), :func:`last_true_index` (the last real token of a padded row), and
dropout keyed by location (:data:`DropoutStream`, :func:`dropout_stream`,
:func:`dropout_substream`, :func:`dropout_keep_mask`, :func:`dropout`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]
LogicalAxes = Tuple[Optional[str], ...]

LOGICAL_AXIS_NAMES = (
    "batch",
    "length",
    "embed",
    "mlp",
    "heads",
    "kv_heads",
    "head_dim",
    "vocab",
    "relpos_buckets",
)

# Logical axes of the arrays in a KV cache entry ``k``/``v``: [B, T, kv_heads, head_dim].
KV_CACHE_AXES: LogicalAxes = ("batch", "length", "kv_heads", "head_dim")

# The compute dtypes a model can run in (``compute_dtype`` of the model configs) and the dtypes
# its parameters can be stored in (``param_dtype``; float32 for anything trained).
COMPUTE_DTYPES = ("float32", "bfloat16")
PARAM_DTYPES = ("float32", "bfloat16")


def _explicit(equation: str, x_ndim: int) -> str:
    """``equation`` with an ellipsis of the first operand (and the output) spelled out."""
    if "..." not in equation:
        return equation
    (lx, ly), out = equation.split("->")[0].split(","), equation.split("->")[1]
    if "..." in ly:
        raise ValueError(f"contract: only the first operand may have an ellipsis, got {equation!r}")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
    dots = "".join(free[: x_ndim - (len(lx) - 3)])
    return f"{lx.replace('...', dots)},{ly}->{out.replace('...', dots)}"


def _einsum_f32(equation: str, x: Array, y: Array) -> Array:
    """``float32`` einsum of two bfloat16 operands, accumulated in float32
    (``preferred_element_type``). XLA's CPU runtime has no bf16 x bf16 -> f32 kernel for every
    layout, so on CPU the product is taken in bfloat16 (XLA:CPU accumulates it in float32 and
    rounds the result) and widened."""
    return jax.lax.platform_dependent(
        x, y,
        cpu=lambda x, y: jnp.einsum(equation, x, y).astype(jnp.float32),
        default=lambda x, y: jnp.einsum(equation, x, y, preferred_element_type=jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _contract_low(equation: str, out_dtype: Any, x: Array, y: Array) -> Array:
    return _einsum_f32(equation, x, y).astype(out_dtype)


def _contract_low_fwd(equation, out_dtype, x, y):
    return _contract_low(equation, out_dtype, x, y), (x, y)


def _contract_low_bwd(equation, out_dtype, residuals, g):
    x, y = residuals
    (lx, ly), out = equation.split("->")[0].split(","), equation.split("->")[1]
    g = g.astype(x.dtype)
    dx = _einsum_f32(f"{out},{ly}->{lx}", g, y).astype(x.dtype)
    dy = _einsum_f32(f"{lx},{out}->{ly}", x, g).astype(y.dtype)
    return dx, dy


_contract_low.defvjp(_contract_low_fwd, _contract_low_bwd)


def contract(equation: str, x: Array, y: Array, out_dtype: Optional[Dtype] = None) -> Array:
    """``jnp.einsum(equation, x, y)`` of two operands of one dtype, accumulated in float32 and
    returned in ``out_dtype`` (default: the operands' dtype).

    float32 operands: one einsum. Lower-precision (bfloat16) operands: the product accumulates in
    float32 (``preferred_element_type``; on CPU see :func:`_einsum_f32`) and is cast to
    ``out_dtype``; the gradient keeps the
    operands' precision: the cotangent is cast to their dtype and both transposed products take
    it as operands and accumulate in float32 (differentiating a ``preferred_element_type`` einsum
    directly would give float32 products in the backward pass). Every index of each operand must
    appear in the other operand or in the output; only ``x`` may carry an ellipsis.
    """
    if x.dtype != y.dtype:
        raise ValueError(f"contract {equation!r}: operands of different dtypes {x.dtype} and "
                         f"{y.dtype}; cast them to the compute dtype first")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if x.dtype == jnp.float32:
        y = jnp.einsum(equation, x, y, preferred_element_type=jnp.float32)
        return y if out_dtype == jnp.float32 else y.astype(out_dtype)
    equation = _explicit(equation.replace(" ", ""), x.ndim)
    (lx, ly), out = equation.split("->")[0].split(","), equation.split("->")[1]
    if set(lx) - set(ly + out) or set(ly) - set(lx + out):
        raise ValueError(f"contract {equation!r}: an index summed within one operand")
    return _contract_low(equation, out_dtype, x, y)


def param(
    rngs: nnx.Rngs,
    init: Initializer,
    shape: Sequence[int],
    axes: LogicalAxes,
    dtype: Dtype = jnp.float32,
) -> nnx.Param:
    """Creates an ``nnx.Param`` of ``shape`` annotated with logical ``axes`` (one per dimension)."""
    shape = tuple(int(s) for s in shape)
    axes = tuple(axes)
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match parameter shape {shape}")
    for a in axes:
        if a is not None and a not in LOGICAL_AXIS_NAMES:
            raise ValueError(f"unknown logical axis name {a!r}; known: {LOGICAL_AXIS_NAMES}")
    value = init(rngs.params(), shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def fan_in_init(fan_in_dims: int = 1, scale: float = 1.0) -> Initializer:
    """Truncated-normal initializer with variance ``scale / fan_in`` over the first dims."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:fan_in_dims])
        std = math.sqrt(scale / max(1, fan_in))
        return (std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)).astype(dtype)

    return init


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm: ``x / sqrt(mean(x**2) + eps) * scale (+ bias)``.

    T5 and Llama use it without a bias (the default). ``zero_centered_scale=True`` stores the scale
    as an offset from one (Gemma: ``x_hat * (1 + scale)``), initialised to zero.

    Input ``[..., dim]`` of any float dtype; statistics in float32; output in ``dtype``
    (the input's dtype when ``dtype`` is None). ``axis_name`` is the logical axis of the scale
    (``'embed'``; ``'head_dim'`` for the per-head query/key norms of Qwen 3 and Gemma 3).
    """

    def __init__(
        self,
        dim: int,
        *,
        eps: float = 1e-6,
        use_bias: bool = False,
        zero_centered_scale: bool = False,
        axis_name: str = "embed",
        dtype: Optional[Dtype] = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.eps = float(eps)
        self.zero_centered_scale = bool(zero_centered_scale)
        self.dtype = dtype
        init = nnx.initializers.zeros if zero_centered_scale else nnx.initializers.ones
        self.scale = param(rngs, init, (dim,), (axis_name,), param_dtype)
        self.bias = (
            param(rngs, nnx.initializers.zeros, (dim,), (axis_name,), param_dtype) if use_bias else None
        )

    def __call__(self, x: Array) -> Array:
        dtype = self.dtype or x.dtype
        xf = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
        # Normalise in float32, cast back before the scale (the Llama / T5 reference order).
        y = (xf * jax.lax.rsqrt(var + self.eps)).astype(dtype)
        scale = self.scale[...].astype(dtype)
        if self.zero_centered_scale:
            scale = 1 + scale
        y = y * scale
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y


class Linear(nnx.Module):
    """Dense layer ``x @ kernel (+ bias)``; kernel ``[in, out]`` with logical ``axes``.

    Input ``[..., in]``, output ``[..., out]`` in ``dtype`` (the input's dtype when None), or in
    ``out_dtype`` when the call gives one (e.g. float32 logits of a bfloat16 model).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: Tuple[Optional[str], Optional[str]],
        use_bias: bool = False,
        kernel_init: Optional[Initializer] = None,
        dtype: Optional[Dtype] = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.kernel = param(
            rngs, kernel_init or fan_in_init(1), (in_features, out_features), axes, param_dtype
        )
        self.bias = (
            param(rngs, nnx.initializers.zeros, (out_features,), (axes[1],), param_dtype)
            if use_bias
            else None
        )

    def __call__(self, x: Array, out_dtype: Optional[Dtype] = None) -> Array:
        dtype = self.dtype or x.dtype
        kernel = self.kernel[...].astype(dtype)
        x = x.astype(dtype)
        if x.ndim > 2:
            # One 2-D matmul over the flattened leading dims: the same product, and its weight
            # gradient is a plain [in, rows] x [rows, out] matmul rather than a batched
            # contraction of a [..., in] input.
            y = contract("mk,kn->mn", x.reshape(-1, x.shape[-1]), kernel, out_dtype)
            y = y.reshape(x.shape[:-1] + (-1,))
        else:
            y = contract("mk,kn->mn", x, kernel, out_dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


@functools.lru_cache(maxsize=None)
def matmul_split(equation: str) -> Optional[int]:
    """``n`` when ``equation`` (input, kernel -> output) is a matmul over merged axes: the input's
    last ``n`` axes are the kernel's first ``n``, in order, and are contracted; the output is the
    input's other axes followed by the kernel's others (``'BLE,EHD->BLHD'``: 1,
    ``'BLHD,HDE->BLE'``: 2). None for any other equation (e.g. one with an ellipsis)."""
    if "..." in equation or "->" not in equation:
        return None
    inputs, out = equation.replace(" ", "").split("->")
    if inputs.count(",") != 1:
        return None
    lhs, rhs = inputs.split(",")
    contracted = [c for c in lhs if c in rhs and c not in out]
    n = len(contracted)
    if (n == 0 or len(set(lhs + rhs)) != len(lhs) + len(rhs) - n
            or lhs[len(lhs) - n:] != "".join(contracted) or rhs[:n] != "".join(contracted)
            or out != lhs[: len(lhs) - n] + rhs[n:]):
        return None
    return n


class Einsum(nnx.Module):
    """``jnp.einsum(equation, x, kernel) (+ bias)`` with a kernel of ``shape`` and logical ``axes``.

    ``bias_shape``/``bias_axes`` (optional) give a bias added to the output (broadcast over the
    leading dims). Used for attention projections: e.g. ``'BLE,EHD->BLHD'`` with kernel
    ``[embed, heads, head_dim]``. An equation that is a matmul over merged axes
    (:func:`matmul_split`) is computed as one 2-D product.
    """

    def __init__(
        self,
        equation: str,
        shape: Sequence[int],
        *,
        axes: LogicalAxes,
        bias_shape: Optional[Sequence[int]] = None,
        bias_axes: Optional[LogicalAxes] = None,
        kernel_init: Optional[Initializer] = None,
        fan_in_dims: int = 1,
        dtype: Optional[Dtype] = None,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.equation = equation
        self.dtype = dtype
        self.kernel = param(rngs, kernel_init or fan_in_init(fan_in_dims), shape, axes, param_dtype)
        self.bias = (
            param(rngs, nnx.initializers.zeros, bias_shape, bias_axes, param_dtype)
            if bias_shape is not None
            else None
        )

    def __call__(self, x: Array) -> Array:
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), self.kernel[...].astype(dtype)
        split = matmul_split(self.equation)
        if split is None:
            y = contract(self.equation, x, kernel)
        else:
            # A matmul in disguise (``x[..., C...] x kernel[C..., F...]``): one 2-D product over
            # merged axes. Left as an einsum, XLA's CPU backend may order the merged contracting
            # axes against the kernel's layout and transpose the whole kernel at every call
            # (every decoded token), and it runs the weight gradient of the batched contraction
            # slowly (see :class:`Linear`).
            batch_shape, contracted = x.shape[: x.ndim - split], kernel.shape[:split]
            free = kernel.shape[split:]
            x_rank = len(self.equation.replace(" ", "").split(",")[0])
            if x.ndim != x_rank or x.shape[x.ndim - split:] != contracted:
                raise ValueError(f"Einsum {self.equation!r}: input shape {x.shape} does not fit "
                                 f"the kernel's {kernel.shape}")
            y = contract("mk,kn->mn", x.reshape(-1, math.prod(contracted)),
                         kernel.reshape(math.prod(contracted), -1)).reshape(batch_shape + free)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y


class Embedding(nnx.Module):
    """Token embedding table ``[vocab, embed]`` (logical axes ``('vocab', 'embed')``).

    ``__call__(ids int32[...]) -> [..., embed]`` looks tokens up; ``attend(x[..., embed]) ->
    [..., vocab]`` computes logits against the table (tied output embedding), in ``dtype`` or
    in the ``out_dtype`` the call gives.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        embedding_init: Optional[Initializer] = None,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_embeddings = int(num_embeddings)
        self.features = int(features)
        self.dtype = dtype
        init = embedding_init or nnx.initializers.normal(stddev=1.0)
        self.embedding = param(rngs, init, (num_embeddings, features), ("vocab", "embed"), param_dtype)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: Array, out_dtype: Optional[Dtype] = None) -> Array:
        return contract("...e,ve->...v", x.astype(self.dtype),
                        self.embedding[...].astype(self.dtype), out_dtype)


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings (the "rotate half" layout of Llama / GPT-NeoX / Gemma).
# ---------------------------------------------------------------------------------------------


def rope_inv_freq(
    head_dim: int,
    theta: float = 10_000.0,
    scaling: Optional[Mapping[str, Any]] = None,
) -> Array:
    """Inverse frequencies ``float32[head_dim // 2]`` of rotary embeddings.

    ``scaling`` (optional) follows the Hugging Face ``rope_scaling`` dict: ``{'rope_type':
    'linear', 'factor': f}`` divides all frequencies by ``f``; ``{'rope_type': 'llama3', 'factor',
    'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}`` is Llama 3.1's
    wavelength-dependent rescaling. ``None`` or ``rope_type='default'`` leaves them unchanged.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if scaling is None or rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(scaling["factor"])
    if rope_type == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling["low_freq_factor"])
        high = float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen = old_len / low
        high_wavelen = old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(is_medium, smoothed, scaled)
    raise ValueError(f"unsupported rotary scaling type {rope_type!r} (default, linear, llama3)")


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotates ``x[B, L, H, D]`` by ``positions int32[B, L]`` (rotate-half layout).

    The first and second halves of the head dimension form the (real, imaginary) pairs, as in the
    Hugging Face Llama implementation. Angles in float32; output in ``x.dtype``.
    """
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, D/2]
    sin = jnp.sin(angles)[:, :, None, :].astype(x.dtype)
    cos = jnp.cos(angles)[:, :, None, :].astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def positions_from_mask(mask: Array) -> Array:
    """Positions ``int32[B, L]`` = ``cumsum(mask) - 1`` clipped at 0 (pads are ignored)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def causal_mask(mask: Array) -> Array:
    """Self-attention mask ``bool[B, L, L]``: key ``j`` is visible from query ``i`` when ``j <= i``
    and ``mask[b, j]`` (``mask``: ``bool[B, L]``, True for real tokens)."""
    length = mask.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    return causal[None] & mask[:, None, :].astype(bool)


def last_true_index(mask: Array) -> Array:
    """``int32[B]``: index of the last True of ``mask bool[B, L]`` (0 for an all-False row)."""
    length = mask.shape[1]
    rev = jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.where(jnp.any(mask, axis=1), length - 1 - rev, 0).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Attention.
# ---------------------------------------------------------------------------------------------


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Optional[Array] = None,
    *,
    scale: float,
    bias: Optional[Array] = None,
    softcap: Optional[float] = None,
) -> Array:
    """Multi-head attention with grouped keys/values (MHA, GQA and MQA).

    Args:
      q: ``[B, L, H, D]`` queries.
      k, v: ``[B, S, K, D]`` keys and values, ``H`` a multiple of ``K`` (query head ``h`` uses
        key/value head ``h // (H // K)``).
      mask: ``bool[B, L, S]`` (or broadcastable), True where attention is allowed. A query with no
        visible key gets a uniform distribution (finite output) rather than NaN.
      scale: multiplies ``q . k`` (``head_dim ** -0.5`` for Llama, ``1.0`` for T5).
      bias: additive logits ``[B or 1, H, L, S]`` (e.g. T5 relative position bias).
      softcap: when given, the scaled logits become ``softcap * tanh(logits / softcap)`` before
        the bias and the mask (Gemma 2's attention soft-capping).

    Returns:
      ``[B, L, H, D]`` in ``v.dtype``; logits and softmax in float32.
    """
    b, l, h, d = q.shape
    kh = k.shape[2]
    if h % kh:
        raise ValueError(f"{h} query heads are not a multiple of {kh} key/value heads")
    g, s = h // kh, k.shape[1]
    # Logits [B, H, L, S]. With one query head per key/value head (MHA) the einsums skip the
    # group axis: the same products, without the transposes of the 5-D layout.
    if g == 1:
        logits = contract("blhd,bshd->bhls", q, k, jnp.float32)
    else:
        logits = contract("blkgd,bskd->bkgls", q.reshape(b, l, kh, g, d), k,
                          jnp.float32).reshape(b, h, l, s)
    logits = logits * scale
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, l, s))
        logits = jnp.where(mask[:, None, :, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    if g == 1:
        return contract("bhls,bshd->blhd", probs, v)
    out = contract("bkgls,bskd->blkgd", probs.reshape(b, kh, g, l, s), v)
    return out.reshape(b, l, h, d)


# The attention implementations a model config can ask for (``attention_impl``): 'xla'
# (:func:`dot_product_attention`), 'cudnn' (:func:`fused_attention`, cuDNN's flash kernel) or
# 'auto' (cudnn where :func:`attention_impl` finds it can run, else xla).
ATTENTION_IMPLS = ("xla", "cudnn", "auto")
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_PLATFORMS = ("cuda",)  # NVIDIA GPUs (device_platform); not ROCm


def attention_impl(
    requested: str,
    *,
    platform: str,
    dtype: Any,
    head_dim: int,
    max_head_dim: int = 256,
    softcap: bool = False,
    dropout: bool = False,
    field: str = "attention_impl",
) -> Tuple[str, Optional[str]]:
    """The attention implementation a model runs: ``(impl, reason)``.

    ``impl`` is 'xla' or 'cudnn'; ``reason`` names what keeps cuDNN's kernel from running
    (None when nothing does, or when 'xla' was asked for). 'cudnn' needs ``platform`` 'gpu'
    (``jax.default_backend()``), a bfloat16 / float16 compute ``dtype``, ``head_dim`` a multiple
    of 8 and at most ``max_head_dim`` (256 from Hopper on, 128 before; :func:`cudnn_max_head_dim`),
    no logit soft-capping (``softcap``) and no dropout on the attention probabilities
    (``dropout``). Additive biases (T5's relative positions), boolean masks (causal, padding,
    sliding windows) and grouped keys/values (GQA, MQA) all run on it.

    'auto' gives ``('cudnn', None)`` or ``('xla', reason)``; 'cudnn' that cannot run raises a
    ``ValueError`` naming ``field`` and the reason.
    """
    if requested not in ATTENTION_IMPLS:
        raise ValueError(f"{field} must be one of {ATTENTION_IMPLS}, got {requested!r}")
    if requested == "xla":
        return "xla", None
    dtype = jnp.dtype(dtype).name
    if platform not in CUDNN_PLATFORMS:
        reason = f"cuDNN attention needs an NVIDIA GPU, the platform is {platform}"
    elif dtype not in CUDNN_DTYPES:
        reason = f"cuDNN attention takes {' or '.join(CUDNN_DTYPES)}, the compute dtype is {dtype}"
    elif head_dim % 8 or not 8 <= head_dim <= max_head_dim:
        reason = (f"cuDNN attention needs head_dim a multiple of 8 and at most {max_head_dim}, "
                  f"got {head_dim}")
    elif softcap:
        reason = "cuDNN attention cannot soft-cap the attention logits (attn_logit_softcap)"
    elif dropout:
        reason = "cuDNN attention here has no dropout on the attention probabilities (dropout_rate)"
    else:
        return "cudnn", None
    if requested == "cudnn":
        raise ValueError(f"{field}='cudnn' cannot run: {reason}; use 'auto' (xla where cuDNN "
                         "cannot run) or 'xla'")
    return "xla", reason


def device_platform() -> str:
    """``'cpu'``, ``'tpu'``, ``'cuda'`` or ``'rocm'``: the default backend, GPUs told apart by the
    runtime their backend reports (``jax.default_backend()`` says ``'gpu'`` for both)."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    from jax.extend import backend as backend_lib  # noqa: PLC0415 (only on a GPU)

    return "rocm" if "rocm" in backend_lib.get_backend().platform_version.lower() else "cuda"


def cudnn_max_head_dim() -> int:
    """The largest head_dim of cuDNN's flash attention on the default device: 256 from compute
    capability 9.0 (Hopper) on, else 128."""
    capability = getattr(jax.devices()[0], "compute_capability", None)
    try:
        return 256 if float(capability) >= 9.0 else 128
    except (TypeError, ValueError):
        return 128


def select_attention_impl(requested: str, *, model: str, field: str, dtype: Any, head_dim: int,
                          softcap: bool = False, dropout: bool = False) -> str:
    """:func:`attention_impl` on this process's default device; logs one line naming what
    forced xla when 'auto' falls back. ``model`` names the model in that line."""
    platform = device_platform()
    max_head_dim = cudnn_max_head_dim() if platform in CUDNN_PLATFORMS else 256
    impl, reason = attention_impl(requested, platform=platform, dtype=dtype, head_dim=head_dim,
                                  max_head_dim=max_head_dim, softcap=softcap, dropout=dropout,
                                  field=field)
    if reason is not None:
        logging.info("%s attention: xla (%s='auto': %s)", model, field, reason)
    return impl


def fused_attention(q: Array, k: Array, v: Array, mask: Optional[Array] = None, *, scale: float,
                    bias: Optional[Array] = None, causal: bool = False,
                    implementation: str = "cudnn") -> Array:
    """:func:`dot_product_attention` (without soft-capping) through
    ``jax.nn.dot_product_attention`` (cuDNN's flash kernel with ``implementation='cudnn'``).

    Args:
      q: ``[B, L, H, D]`` queries; k, v: ``[B, S, K, D]``, ``H`` a multiple of ``K``; one dtype.
      mask: ``bool[B, L, S]`` (or broadcastable), True where attention is allowed.
      scale: multiplies ``q . k``.
      bias: additive logits ``[B or 1, H, L, S]``, cast to ``q.dtype``.
      causal: ``mask`` hides every key after its query (``L == S``); the kernel then skips the
        blocks above the diagonal.
      implementation: 'cudnn', or 'xla' (jax's reference of the same call, e.g. on CPU).

    ``L`` and ``S`` are padded to even lengths (cuDNN takes a bias only then): padded keys are
    masked out and padded queries dropped. Returns ``[B, L, H, D]`` in ``q.dtype``.
    """
    b, l, h, _ = q.shape
    s = k.shape[1]
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, l, s))
    pad_l, pad_s = l % 2, s % 2
    if pad_l or pad_s:
        if mask is None:
            mask = jnp.ones((b, l, s), bool)
        mask = jnp.pad(mask, ((0, 0), (0, pad_l), (0, pad_s)))
        q = jnp.pad(q, ((0, 0), (0, pad_l), (0, 0), (0, 0)))
        k = jnp.pad(k, ((0, 0), (0, pad_s), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, pad_s), (0, 0), (0, 0)))
        if bias is not None:
            bias = jnp.pad(bias, ((0, 0), (0, 0), (0, pad_l), (0, pad_s)))
    out = jax.nn.dot_product_attention(
        q, k, v, bias=None if bias is None else bias.astype(q.dtype),
        mask=None if mask is None else mask[:, None], scale=scale, is_causal=causal,
        implementation=implementation)
    return out[:, :l]


# ---------------------------------------------------------------------------------------------
# Dropout.
# ---------------------------------------------------------------------------------------------

# Dropout randomness. A public ``dropout_rng`` is a PRNG key; inside a model it travels as a
# stream ``(key, site)`` where ``site`` is a static integer naming one dropout location (stack,
# layer, sub-layer). Masks come from XLA's RngBitGenerator (Philox) keyed by the key's words mixed
# with the site.
DropoutStream = Optional[Tuple[Array, int]]


def dropout_stream(key: Optional[Array], base: int) -> DropoutStream:
    """The stream ``(key, base)`` of a model's ``dropout_rng`` (None: no dropout)."""
    return None if key is None else (key, base)


def dropout_substream(stream: DropoutStream, i: int) -> DropoutStream:
    """The sub-stream ``i`` (0 <= i < 63) of ``stream``; distinct paths give distinct sites."""
    if stream is None:
        return None
    if not 0 <= i < 63:
        raise ValueError(f"dropout sub-stream index must be in [0, 63), got {i}")
    key, site = stream
    return key, site * 64 + i + 1


def dropout_keep_mask(key: Array, site: int, shape: Sequence[int], rate: float) -> Array:
    """Bernoulli(1 - ``rate``) keep mask ``bool[shape]`` for dropout location ``site``.

    ``key``: a PRNG key (typed or raw uint32). The 64-bit Philox key is the key's first two
    words, each xor-ed with a different odd multiple of ``site`` (distinct sites give distinct
    keys, hence independent streams); the counter starts at 0. Deterministic per (key, site,
    shape).
    """
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = jnp.asarray(key).reshape(-1).astype(jnp.uint32)
    mix0 = np.uint32((int(site) * 0x9E3779B9) & 0xFFFFFFFF)
    mix1 = np.uint32((int(site) * 0x85EBCA6B + 0x27D4EB2F) & 0xFFFFFFFF)
    k0, k1 = words[0] ^ mix0, words[1 % words.shape[0]] ^ mix1
    if words.shape[0] >= 4:  # keys with more words (e.g. 'rbg'): fold the rest in
        k0, k1 = k0 ^ words[2], k1 ^ words[3]
    state = jnp.stack([k0, k1, jnp.uint32(0), jnp.uint32(0)])
    _, bits = jax.lax.rng_bit_generator(
        state, tuple(shape), dtype=jnp.uint32, algorithm=jax.lax.RandomAlgorithm.RNG_PHILOX
    )
    threshold = np.uint32(min(int(round((1.0 - rate) * 2.0**32)), 2**32 - 1))
    return bits < threshold


def dropout(x: Array, rate: float, stream: DropoutStream) -> Array:
    """Inverted dropout; identity when ``stream`` is None or ``rate`` is 0."""
    if stream is None or rate == 0.0:
        return x
    keep = dropout_keep_mask(stream[0], stream[1], x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)).astype(x.dtype)


def init_kv_cache(
    batch_size: int, length: int, num_kv_heads: int, head_dim: int, dtype: Dtype = jnp.float32
) -> dict:
    """An empty cache entry ``{'k', 'v'}`` of shape ``[B, T, kv_heads, head_dim]`` (zeros)."""
    shape = (batch_size, length, num_kv_heads, head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def write_kv_cache(entry: Mapping[str, Array], k: Array, v: Array, index: Array) -> dict:
    """Writes ``k, v [B, L, K, D]`` into ``entry`` at time slots ``index .. index + L - 1``.

    ``index`` is an int32 scalar shared by the batch (prompts are left-padded, so every row writes
    the same slots). Returns the updated entry (the input is not modified).
    """
    idx = jnp.asarray(index, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, idx, zero, zero)
    return {
        "k": jax.lax.dynamic_update_slice(entry["k"], k.astype(entry["k"].dtype), start),
        "v": jax.lax.dynamic_update_slice(entry["v"], v.astype(entry["v"].dtype), start),
    }


class Attention(nnx.Module):
    """Multi-head attention with ``num_kv_heads`` key/value heads (MHA, GQA, MQA).

    Parameters (logical axes): ``q`` ``[embed, heads, head_dim]``, ``k``/``v`` ``[embed,
    kv_heads, head_dim]``, ``o`` ``[heads, head_dim, embed]``; optional biases on q/k/v
    (``qkv_bias``) and on the output (``out_bias``).

    Rotary embeddings are applied to queries and keys when ``rope_theta`` is given (with the
    optional ``rope_scaling`` dict of :func:`rope_inv_freq`). ``scale`` defaults to
    ``head_dim ** -0.5``; T5 passes 1.0. ``kv_embed_dim`` is the width of ``kv_inputs`` for
    cross-attention (default ``embed_dim``).

    ``qk_norm=True`` adds per-head RMSNorms ``q_norm``/``k_norm`` (scale ``[head_dim]``, epsilon
    ``norm_eps``, ``(1 + w)`` scales when ``norm_zero_centered``) applied to the projected queries
    and keys before the rotation (Qwen 3, Gemma 3). ``logit_softcap`` soft-caps the attention
    logits (Gemma 2; see :func:`dot_product_attention`). ``implementation`` (a resolved
    :func:`attention_impl`: 'xla' or 'cudnn') picks :func:`dot_product_attention` or
    :func:`fused_attention`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        num_kv_heads: Optional[int] = None,
        *,
        kv_embed_dim: Optional[int] = None,
        scale: Optional[float] = None,
        rope_theta: Optional[float] = None,
        rope_scaling: Optional[Mapping[str, Any]] = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        norm_zero_centered: bool = False,
        logit_softcap: Optional[float] = None,
        implementation: str = "xla",
        kernel_init: Optional[Initializer] = None,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        num_kv_heads = num_kv_heads or num_heads
        if implementation not in ("xla", "cudnn"):
            raise ValueError(f"Attention implementation must be 'xla' or 'cudnn', got "
                             f"{implementation!r}")
        if implementation == "cudnn" and logit_softcap is not None:
            raise ValueError("cuDNN attention cannot soft-cap the attention logits")
        self.implementation = implementation
        kv_embed_dim = kv_embed_dim or embed_dim
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = float(head_dim**-0.5 if scale is None else scale)
        self.dtype = dtype
        self.rope_theta = None if rope_theta is None else float(rope_theta)
        self.rope_scaling = None if rope_scaling is None else tuple(sorted(dict(rope_scaling).items()))
        if self.rope_theta is not None:
            rope_inv_freq(head_dim, self.rope_theta, rope_scaling)  # validates the settings early
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, kernel_init=kernel_init)

        def bias(shape, axes):
            return dict(bias_shape=shape, bias_axes=axes) if qkv_bias else {}

        self.q = Einsum(
            "BLE,EHD->BLHD", (embed_dim, num_heads, head_dim),
            axes=("embed", "heads", "head_dim"),
            **bias((num_heads, head_dim), ("heads", "head_dim")), **common,
        )
        self.k = Einsum(
            "BLE,EKD->BLKD", (kv_embed_dim, num_kv_heads, head_dim),
            axes=("embed", "kv_heads", "head_dim"),
            **bias((num_kv_heads, head_dim), ("kv_heads", "head_dim")), **common,
        )
        self.v = Einsum(
            "BLE,EKD->BLKD", (kv_embed_dim, num_kv_heads, head_dim),
            axes=("embed", "kv_heads", "head_dim"),
            **bias((num_kv_heads, head_dim), ("kv_heads", "head_dim")), **common,
        )
        self.o = Einsum(
            "BLHD,HDE->BLE", (num_heads, head_dim, embed_dim),
            axes=("heads", "head_dim", "embed"), fan_in_dims=2,
            **(dict(bias_shape=(embed_dim,), bias_axes=("embed",)) if out_bias else {}),
            **common,
        )
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        norm = dict(eps=norm_eps, zero_centered_scale=norm_zero_centered, axis_name="head_dim",
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_norm = RMSNorm(head_dim, **norm) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, **norm) if qk_norm else None

    def _inv_freq(self) -> Array:
        scaling = None if self.rope_scaling is None else dict(self.rope_scaling)
        return rope_inv_freq(self.head_dim, self.rope_theta, scaling)

    def project_kv(self, x: Array, positions: Optional[Array] = None) -> Tuple[Array, Array]:
        """Keys and values ``[B, S, K, D]`` of ``x[B, S, E]`` (rotated when rotary is on)."""
        k, v = self.k(x), self.v(x)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if self.rope_theta is not None:
            k = apply_rope(k, positions, self._inv_freq())
        return k, v

    def __call__(
        self,
        x: Array,
        mask: Optional[Array],
        *,
        positions: Optional[Array] = None,
        kv_inputs: Optional[Array] = None,
        bias: Optional[Array] = None,
        cache: Optional[Mapping[str, Array]] = None,
        cache_index: Optional[Array] = None,
        causal: bool = False,
    ) -> Tuple[Array, Optional[dict]]:
        """Attention of ``x[B, L, E]`` over itself (or over ``kv_inputs[B, S, E']``).

        Args:
          x: queries' inputs ``[B, L, E]``.
          mask: ``bool[B, L, S]`` visibility (``S = L``, the cache length ``T``, or ``S`` of
            ``kv_inputs``).
          positions: ``int32[B, L]`` rotary positions of ``x`` (required when rotary is on).
          kv_inputs: inputs of keys/values for cross-attention (no rotary, no cache write).
          bias: additive logits ``[B or 1, H, L, S]``.
          cache: ``{'k', 'v'}`` of ``[B, T, K, D]``; the new keys/values are written at slots
            ``cache_index ..`` and attention runs over all ``T`` slots (``mask`` is ``[B, L, T]``).
          causal: ``mask`` hides every key after its query (self-attention, ``S = L``); the
            cuDNN kernel then skips those blocks (see :func:`fused_attention`).

        Returns:
          ``(y[B, L, E], updated cache or None)``.
        """
        q = self.q(x)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.rope_theta is not None:
            q = apply_rope(q, positions, self._inv_freq())
        if kv_inputs is not None:
            k, v = self.k(kv_inputs), self.v(kv_inputs)
        else:
            k, v = self.project_kv(x, positions)
        new_cache = None
        if cache is not None:
            new_cache = write_kv_cache(cache, k, v, cache_index)
            k, v = new_cache["k"].astype(q.dtype), new_cache["v"].astype(q.dtype)
        if self.implementation == "cudnn":
            out = fused_attention(q, k, v, mask, scale=self.scale, bias=bias, causal=causal)
        else:
            out = dot_product_attention(q, k, v, mask, scale=self.scale, bias=bias,
                                        softcap=self.logit_softcap)
        return self.o(out), new_cache


_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation_fn(name: str) -> Callable[[Array], Array]:
    """The activation called ``name``: 'silu' (SwiGLU), 'gelu' (exact), 'gelu_tanh'
    (tanh approximation; GeGLU of Gemma and T5.1.1), 'relu'."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}") from None


class GatedMLP(nnx.Module):
    """Gated feed-forward ``down(act(gate(x)) * up(x))`` (SwiGLU with 'silu', GeGLU with 'gelu*').

    Kernels: ``gate``/``up`` ``[embed, mlp]``, ``down`` ``[mlp, embed]``. Input/output
    ``[..., embed]``.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        *,
        activation: str = "silu",
        use_bias: bool = False,
        kernel_init: Optional[Initializer] = None,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.activation = activation
        activation_fn(activation)
        common = dict(
            use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.gate = Linear(embed_dim, hidden_dim, axes=("embed", "mlp"), **common)
        self.up = Linear(embed_dim, hidden_dim, axes=("embed", "mlp"), **common)
        self.down = Linear(hidden_dim, embed_dim, axes=("mlp", "embed"), **common)

    def __call__(self, x: Array) -> Array:
        return self.down(activation_fn(self.activation)(self.gate(x)) * self.up(x))
