"""Decoder-only language model (Llama / Gemma / PaLM family) in Flax NNX.

Architecture: token embedding (optionally scaled by ``sqrt(d_model)``, Gemma), ``num_layers``
pre-norm blocks of RMSNorm + rotary multi-head attention with ``num_kv_heads`` key/value heads
(MHA, GQA, MQA) + gated MLP (SwiGLU or GeGLU), either sequential (Llama, Gemma) or PaLM's parallel
block ``x + attn(norm(x)) + mlp(norm(x))``; a final RMSNorm; an LM head tied to the embedding or
separate.

Options for the published decoder families (all off by default, which is Llama):

* separate biases of the q/k/v and output projections (Qwen 2: ``attention_out_bias=False``);
* per-head query/key RMSNorms before the rotation (``qk_norm``; Qwen 3, Gemma 3);
* a query scale other than ``head_dim ** -0.5`` (``query_scale``; Gemma's
  ``query_pre_attn_scalar ** -0.5``);
* soft-capping of attention logits and of the final logits (Gemma 2);
* post-attention and post-MLP norms inside the residual branches (``post_norms``; Gemma 2 / 3):
  ``x + post_attn_norm(attn(attn_norm(x)))`` then ``x + post_mlp_norm(mlp(mlp_norm(x)))``;
* sliding-window attention on some or all layers (``sliding_window`` with ``layer_types``;
  Mistral, Gemma 2 / 3, Qwen 2 when enabled): a token sees the ``sliding_window`` most recent
  real tokens including itself (positions ``p - sliding_window < q <= p``), counted in rotary
  positions, so padding does not use up the window; the KV cache keeps every slot;
* a separate rotary base for sliding-window layers (``rope_local_theta``; Gemma 3).

Attention runs through XLA (:func:`lsc.models.layers.dot_product_attention`) or cuDNN's flash
kernel (:func:`lsc.models.layers.fused_attention`), chosen once per model by
``attention_impl`` ('xla', 'cudnn' or 'auto'; :func:`lsc.models.layers.attention_impl`):
causal, padding and sliding-window masks go to cuDNN as one boolean mask (the window counts
rotary positions, which differ from slot indices when a row has padding inside it), and
soft-capped logits keep a model on XLA.

Token conventions follow :mod:`lsc.models.protocol`: ``mask`` defaults to ``tokens != pad_id``,
positions are ``cumsum(mask) - 1`` (clipped at 0), prompts are left-padded and responses
right-padded. The model implements the ``Autoregressive`` protocol:

* ``init_cache(B, max_decode_length, dtype)`` allocates the ``max_decode_length`` decode slots;
* ``prefill(prompt[B, P], cache)`` prepends the prompt's keys/values, giving per-layer ``k``/``v``
  of ``[B, P + max_decode_length, kv_heads, head_dim]``;
* ``decode_step(tokens[B], cache)`` writes one token per row at the next slot.

The cache is a dict ``{'layers': ({'k', 'v'}, ...), 'mask': bool[B, T], 'index': int32[],
'position': int32[B]}``: ``mask`` marks slots holding real tokens, ``index`` is the next slot to
write (shared by all rows), ``position`` the rotary position of each row's next token.

Teacher forcing: :func:`token_log_probs` (log-probabilities of given tokens under logits),
:func:`response_logits` and :func:`response_log_probs` (a response's per-token log-probabilities
given its prompt; the one definition used by RLHF, SFT and the reproduction's samples).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from lsc import schema
from lsc.models import layers
from lsc.models.layers import last_true_index

Array = jax.Array

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyperparameters of :class:`DecoderLM` (validated on construction).

    Attributes:
      vocab_size, d_model, num_layers, num_heads, num_kv_heads, head_dim, mlp_dim: shapes.
        ``num_kv_heads == num_heads`` is MHA, ``1`` is MQA, anything dividing ``num_heads`` GQA.
      activation: gate activation of the MLP: 'silu' (SwiGLU) or 'gelu_tanh' / 'gelu' (GeGLU).
      norm_eps: RMSNorm epsilon.
      norm_zero_centered: RMSNorm scale stored as ``1 + w`` (Gemma).
      embed_scale: multiply input embeddings by ``sqrt(d_model)`` (Gemma).
      rope_theta: rotary base. ``rope_scaling_type`` ('default', 'linear', 'llama3') with
        ``rope_scaling_factor``, ``rope_low_freq_factor``, ``rope_high_freq_factor`` and
        ``rope_original_max_len`` (the Llama 3.1 fields) rescale the frequencies.
      tie_embeddings: LM head = transposed input embedding.
      parallel_block: PaLM-style parallel attention + MLP sharing one pre-norm.
      attention_bias: biases on the q/k/v/o projections; mlp_bias: biases in the MLP.
      attention_out_bias: bias on the output projection (``None``: ``attention_bias``).
      qk_norm: per-head RMSNorms of queries and keys (scale ``[head_dim]``, same epsilon and
        zero-centring as the other norms) before the rotation.
      query_scale: multiplies ``q . k`` (0: ``head_dim ** -0.5``).
      attn_logit_softcap, final_logit_softcap: ``c * tanh(logits / c)`` on the attention logits /
        the LM logits (0: off).
      post_norms: RMSNorms on the attention and MLP outputs before the residual adds.
      sliding_window: window of the sliding-window layers in tokens (0: none).
      layer_types: per layer 'full_attention' or 'sliding_attention' (empty: every layer
        'sliding_attention' when ``sliding_window > 0``, else every layer 'full_attention').
      rope_local_theta: rotary base of the sliding-window layers, which then use no frequency
        scaling (0: the same rotary embedding as the full layers).
      pad_id, eos_id, bos_id: special tokens (``bos_id = -1`` when the vocabulary has none).
      compute_dtype: dtype of the matmul operands and activations
        (:data:`lsc.models.layers.COMPUTE_DTYPES`): the parameters are cast to it where they
        are used and every product accumulates in float32; norm statistics, softmax, attention
        logits and the returned logits are float32 either way.
      param_dtype: dtype the parameters are stored in (:data:`lsc.models.layers.PARAM_DTYPES`;
        float32 for a model that is trained).
      init_std: standard deviation of the embedding initialiser (``None``: ``d_model ** -0.5``).
      attention_impl: 'xla', 'cudnn' (cuDNN's flash kernel; an error where it cannot run) or
        'auto' (cudnn where it can run: a GPU, bfloat16 compute, no logit soft-capping; else xla
        with one log line naming why); :func:`lsc.models.layers.attention_impl`.
    """

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    activation: str = "silu"
    norm_eps: float = 1e-6
    norm_zero_centered: bool = False
    embed_scale: bool = False
    rope_theta: float = 10_000.0
    rope_scaling_type: str = "default"
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    tie_embeddings: bool = False
    parallel_block: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_out_bias: Optional[bool] = None
    qk_norm: bool = False
    query_scale: float = 0.0
    attn_logit_softcap: float = 0.0
    final_logit_softcap: float = 0.0
    post_norms: bool = False
    sliding_window: int = 0
    layer_types: Tuple[str, ...] = ()
    rope_local_theta: float = 0.0
    pad_id: int = 0
    eos_id: int = 1
    bos_id: int = -1
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    init_std: Optional[float] = None
    attention_impl: str = "xla"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"model.head_dim must be even for rotary embeddings, got {self.head_dim}")
        layers.activation_fn(self.activation)
        if self.attention_impl not in layers.ATTENTION_IMPLS:
            raise ValueError(f"model.attention_impl must be one of {layers.ATTENTION_IMPLS}, got "
                             f"{self.attention_impl!r}")
        if self.rope_scaling_type not in ("default", "linear", "llama3"):
            raise ValueError(
                f"model.rope_scaling_type must be one of default, linear, llama3, got "
                f"{self.rope_scaling_type!r}"
            )
        for name, choices in (("compute_dtype", layers.COMPUTE_DTYPES),
                              ("param_dtype", layers.PARAM_DTYPES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"model.{name} must be one of {choices}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("pad_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"model.{name} must be in [0, {self.vocab_size}), got {value}")
        if not self.norm_eps > 0:
            raise ValueError(f"model.norm_eps must be > 0, got {self.norm_eps}")
        object.__setattr__(self, "layer_types", tuple(self.layer_types))  # JSON gives a list
        if self.layer_types:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(f"model.layer_types has {len(self.layer_types)} entries for "
                                 f"model.num_layers={self.num_layers}")
            bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if bad:
                raise ValueError(f"model.layer_types: {bad} not allowed; choose from {LAYER_TYPES}")
            if "sliding_attention" in self.layer_types and self.sliding_window < 1:
                raise ValueError("model.sliding_window must be >= 1 when model.layer_types has "
                                 "'sliding_attention' layers")
        if not isinstance(self.sliding_window, int) or self.sliding_window < 0:
            raise ValueError(f"model.sliding_window must be an integer >= 0, got "
                             f"{self.sliding_window!r}")
        for name in ("query_scale", "attn_logit_softcap", "final_logit_softcap",
                     "rope_local_theta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"model.{name} must be >= 0 (0: off), got {getattr(self, name)}")

    @property
    def out_bias(self) -> bool:
        """Whether the attention output projection has a bias."""
        return self.attention_bias if self.attention_out_bias is None else self.attention_out_bias

    def layer_is_sliding(self, i: int) -> bool:
        """Whether layer ``i`` attends through the sliding window."""
        if self.layer_types:
            return self.layer_types[i] == "sliding_attention"
        return self.sliding_window > 0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "DecoderConfig":
        """Builds a config from a dict / ``ml_collections.ConfigDict``; unknown keys are errors."""
        return schema.from_mapping(cls, mapping, unknown="unknown decoder config fields")

    @property
    def rope_scaling(self) -> Optional[dict]:
        """The rotary scaling dict of :func:`lsc.models.layers.rope_inv_freq` (None: default)."""
        if self.rope_scaling_type == "default":
            return None
        if self.rope_scaling_type == "linear":
            return {"rope_type": "linear", "factor": self.rope_scaling_factor}
        return {
            "rope_type": "llama3",
            "factor": self.rope_scaling_factor,
            "low_freq_factor": self.rope_low_freq_factor,
            "high_freq_factor": self.rope_high_freq_factor,
            "original_max_position_embeddings": self.rope_original_max_len,
        }

    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        e, f, v = self.d_model, self.mlp_dim, self.vocab_size
        q = e * self.num_heads * self.head_dim
        kv = 2 * e * self.num_kv_heads * self.head_dim
        attn = 2 * q + kv
        if self.attention_bias:
            attn += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        if self.out_bias:
            attn += e
        if self.qk_norm:
            attn += 2 * self.head_dim
        mlp = 3 * e * f + (2 * f + e if self.mlp_bias else 0)
        norms = e if self.parallel_block else 2 * e
        if self.post_norms:
            norms += 2 * e
        per_layer = attn + mlp + norms
        return v * e * (1 if self.tie_embeddings else 2) + self.num_layers * per_layer + e

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs per token: ``2 * matmul params + 4 * layers * context * heads * head_dim``."""
        e, f = self.d_model, self.mlp_dim
        matmul = (
            2 * e * self.num_heads * self.head_dim
            + 2 * e * self.num_kv_heads * self.head_dim
            + 3 * e * f
        ) * self.num_layers + e * self.vocab_size
        attn = 2 * self.num_layers * context * self.num_heads * self.head_dim
        return 2.0 * matmul + 2.0 * attn


class DecoderBlock(nnx.Module):
    """One pre-norm block; ``__call__(x[B, L, E], mask, positions, cache=None, cache_index=None)
    -> (x[B, L, E], cache entry or None)``. ``sliding`` selects the rotary base of a
    sliding-window layer (``rope_local_theta``); the caller passes that layer's mask.
    ``attention_impl``: 'xla' or 'cudnn' (resolved by :func:`lsc.models.layers.attention_impl`)."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs, sliding: bool = False,
                 attention_impl: str = "xla"):
        c = config
        dtype, pdtype = jnp.dtype(c.compute_dtype), jnp.dtype(c.param_dtype)
        norm = dict(eps=c.norm_eps, zero_centered_scale=c.norm_zero_centered, dtype=dtype,
                    param_dtype=pdtype, rngs=rngs)
        self.parallel_block = c.parallel_block
        self.attn_norm = layers.RMSNorm(c.d_model, **norm)
        local_rope = sliding and c.rope_local_theta > 0
        self.attn = layers.Attention(
            c.d_model, c.num_heads, c.head_dim, c.num_kv_heads,
            scale=c.query_scale or None,
            rope_theta=c.rope_local_theta if local_rope else c.rope_theta,
            rope_scaling=None if local_rope else c.rope_scaling,
            qkv_bias=c.attention_bias, out_bias=c.out_bias,
            qk_norm=c.qk_norm, norm_eps=c.norm_eps, norm_zero_centered=c.norm_zero_centered,
            logit_softcap=c.attn_logit_softcap or None, implementation=attention_impl,
            dtype=dtype, param_dtype=pdtype, rngs=rngs,
        )
        self.mlp_norm = None if c.parallel_block else layers.RMSNorm(c.d_model, **norm)
        self.mlp = layers.GatedMLP(
            c.d_model, c.mlp_dim, activation=c.activation, use_bias=c.mlp_bias,
            dtype=dtype, param_dtype=pdtype, rngs=rngs,
        )
        self.post_attn_norm = layers.RMSNorm(c.d_model, **norm) if c.post_norms else None
        self.post_mlp_norm = layers.RMSNorm(c.d_model, **norm) if c.post_norms else None

    def __call__(self, x, mask, positions, cache=None, cache_index=None, causal=False):
        y = self.attn_norm(x)
        attn_out, cache = self.attn(y, mask, positions=positions, cache=cache,
                                    cache_index=cache_index, causal=causal)
        if self.parallel_block:
            return x + attn_out + self.mlp(y), cache
        if self.post_attn_norm is not None:
            attn_out = self.post_attn_norm(attn_out)
        x = x + attn_out
        mlp_out = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            mlp_out = self.post_mlp_norm(mlp_out)
        return x + mlp_out, cache


class DecoderLM(nnx.Module):
    """Decoder-only causal LM (see the module docstring). Build with ``DecoderLM(config, rngs=...)``."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.pad_id = c.pad_id
        self.eos_id = c.eos_id
        self.d_model = c.d_model
        dtype, pdtype = jnp.dtype(c.compute_dtype), jnp.dtype(c.param_dtype)
        std = c.init_std if c.init_std is not None else c.d_model**-0.5
        self.embed = layers.Embedding(
            c.vocab_size, c.d_model, embedding_init=nnx.initializers.normal(stddev=std),
            dtype=dtype, param_dtype=pdtype, rngs=rngs,
        )
        impl = layers.select_attention_impl(
            c.attention_impl, model="DecoderLM", field="model.attention_impl",
            dtype=c.compute_dtype, head_dim=c.head_dim, softcap=c.attn_logit_softcap > 0)
        self.layers = nnx.List([DecoderBlock(c, rngs=rngs, sliding=c.layer_is_sliding(i),
                                             attention_impl=impl)
                                for i in range(c.num_layers)])
        self.final_norm = layers.RMSNorm(
            c.d_model, eps=c.norm_eps, zero_centered_scale=c.norm_zero_centered, dtype=dtype,
            param_dtype=pdtype, rngs=rngs,
        )
        self.lm_head = None if c.tie_embeddings else layers.Linear(
            c.d_model, c.vocab_size, axes=("embed", "vocab"), dtype=dtype, param_dtype=pdtype,
            rngs=rngs,
        )

    # -- pieces ---------------------------------------------------------------------------------

    def _embed(self, tokens: Array) -> Array:
        x = self.embed(tokens)
        if self.config.embed_scale:
            x = x * jnp.asarray(self.config.d_model**0.5, x.dtype)
        return x

    def logits_from_hidden(self, h: Array) -> Array:
        """LM logits ``float32[..., V]`` from final-normed hidden states ``[..., E]`` (soft-capped
        when ``final_logit_softcap`` is set)."""
        if self.lm_head is None:
            logits = self.embed.attend(h, jnp.float32)
        else:
            logits = self.lm_head(h, jnp.float32)
        cap = self.config.final_logit_softcap
        if cap:
            logits = jnp.tanh(logits / cap) * cap
        return logits

    def _layer_masks(self, attn_mask: Array, q_positions: Array, k_positions: Array):
        """Per layer, the mask it attends with: ``attn_mask bool[B, L, S]`` for full layers; for
        sliding-window layers also ``q_positions[B, L] - k_positions[B, S] < sliding_window``."""
        c = self.config
        if not any(c.layer_is_sliding(i) for i in range(c.num_layers)):
            return [attn_mask] * c.num_layers
        near = q_positions[:, :, None] - k_positions[:, None, :] < c.sliding_window
        sliding = attn_mask & near
        return [sliding if c.layer_is_sliding(i) else attn_mask for i in range(c.num_layers)]

    def hidden_states(self, tokens: Array, mask: Optional[Array] = None) -> Array:
        """Final-normed hidden states ``[B, L, E]`` (compute dtype) of ``tokens int32[B, L]``.

        ``mask bool[B, L]`` (default ``tokens != pad_id``) marks real tokens; padded positions
        attend to nothing real and their outputs are meaningless.
        """
        if mask is None:
            mask = tokens != self.pad_id
        mask = mask.astype(bool)
        positions = layers.positions_from_mask(mask)
        attn_mask = layers.causal_mask(mask)
        masks = self._layer_masks(attn_mask, positions, positions)
        x = self._embed(tokens)
        for block, block_mask in zip(self.layers, masks):
            x, _ = block(x, block_mask, positions, causal=True)
        return self.final_norm(x)

    def __call__(self, tokens: Array, mask: Optional[Array] = None) -> Array:
        """Next-token logits ``float32[B, L, V]``: row ``t`` is the distribution of token ``t + 1``."""
        return self.logits_from_hidden(self.hidden_states(tokens, mask))

    # -- reward / value backbone interface (lsc.models.heads) ----------------------------------

    def reward_features(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        """``[B, E]``: the hidden state of the last non-pad token of ``[prompt, response]``."""
        tokens = jnp.concatenate([prompt_tokens, response_tokens], axis=1)
        mask = tokens != self.pad_id
        h = self.hidden_states(tokens, mask)
        idx = last_true_index(mask)
        return jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]

    def response_token_states(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        """``[B, R, E]``: row ``t`` is the hidden state of response token ``t`` itself (it has
        read the prompt and response tokens ``<= t``); rows of pad tokens are meaningless."""
        p = prompt_tokens.shape[1]
        tokens = jnp.concatenate([prompt_tokens, response_tokens], axis=1)
        h = self.hidden_states(tokens, tokens != self.pad_id)
        return h[:, p:]

    def response_features(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        """``[B, R, E]``: row ``t`` is the state that predicts response token ``t`` (the hidden state
        of the token before it; the last prompt token for ``t = 0``)."""
        p = prompt_tokens.shape[1]
        r = response_tokens.shape[1]
        tokens = jnp.concatenate([prompt_tokens, response_tokens], axis=1)
        h = self.hidden_states(tokens, tokens != self.pad_id)
        return h[:, p - 1 : p - 1 + r]

    # -- Autoregressive protocol ----------------------------------------------------------------

    def init_cache(self, batch_size: int, max_decode_length: int, dtype: Any = jnp.float32) -> dict:
        """Empty cache with ``max_decode_length`` decode slots per row (see the module docstring)."""
        c = self.config
        return {
            "layers": tuple(
                layers.init_kv_cache(batch_size, max_decode_length, c.num_kv_heads, c.head_dim, dtype)
                for _ in range(c.num_layers)
            ),
            "mask": jnp.zeros((batch_size, max_decode_length), bool),
            "index": jnp.zeros((), jnp.int32),
            "position": jnp.zeros((batch_size,), jnp.int32),
        }

    def prefill_hidden(self, prompt_tokens: Array, cache: dict) -> Tuple[Array, dict]:
        """Runs the left-padded prompt ``int32[B, P]``; returns (the final-normed hidden state
        ``[B, E]`` of its last slot, cache with ``P`` prompt slots prepended)."""
        b, p = prompt_tokens.shape
        mask = prompt_tokens != self.pad_id
        positions = layers.positions_from_mask(mask)
        attn_mask = layers.causal_mask(mask)
        masks = self._layer_masks(attn_mask, positions, positions)
        x = self._embed(prompt_tokens)
        new_layers = []
        for block, entry, block_mask in zip(self.layers, cache["layers"], masks):
            dtype = entry["k"].dtype
            fresh = layers.init_kv_cache(b, p, self.config.num_kv_heads, self.config.head_dim, dtype)
            x, fresh = block(x, block_mask, positions, cache=fresh, cache_index=0, causal=True)
            new_layers.append({
                "k": jnp.concatenate([fresh["k"], entry["k"]], axis=1),
                "v": jnp.concatenate([fresh["v"], entry["v"]], axis=1),
            })
        h = self.final_norm(x[:, -1])
        new_cache = {
            "layers": tuple(new_layers),
            "mask": jnp.concatenate([mask, cache["mask"]], axis=1),
            "index": cache["index"] + p,
            "position": cache["position"] + jnp.sum(mask, axis=1, dtype=jnp.int32),
        }
        return h, new_cache

    def prefill(self, prompt_tokens: Array, cache: dict) -> Tuple[Array, dict]:
        """Runs the left-padded prompt ``int32[B, P]``; returns (logits ``float32[B, V]`` of the first
        response token, cache with ``P`` prompt slots prepended)."""
        h, new_cache = self.prefill_hidden(prompt_tokens, cache)
        return self.logits_from_hidden(h), new_cache

    def extend(self, tokens: Array, cache: dict) -> Tuple[Array, dict]:
        """Appends ``tokens int32[B, L]`` (right-padded: pad ids are not attended to) at slots
        ``cache['index'] ..`` in one pass; returns (final-normed hidden states ``[B, L, E]``,
        updated cache). After :meth:`prefill_hidden` of a prompt, row ``t`` equals
        :meth:`hidden_states` of ``concat([prompt, tokens])`` at ``P + t`` (for real tokens, up
        to rounding), without recomputing the prompt: what scoring many responses to one prompt
        needs (:func:`extend_log_probs`, :meth:`lsc.models.heads.RewardModel.from_prompt`)."""
        length = tokens.shape[1]
        index = cache["index"]
        token_mask = tokens != self.pad_id
        slot_mask = jax.lax.dynamic_update_slice(
            cache["mask"], token_mask, (jnp.zeros((), jnp.int32), index))
        slots = jnp.arange(cache["mask"].shape[1], dtype=jnp.int32)
        causal = slots[None, :] <= index + jnp.arange(length, dtype=jnp.int32)[:, None]
        attn_mask = causal[None] & slot_mask[:, None, :]
        positions = jnp.maximum(
            cache["position"][:, None] + jnp.cumsum(token_mask.astype(jnp.int32), axis=1) - 1, 0)
        masks = self._layer_masks(attn_mask, positions, layers.positions_from_mask(slot_mask))
        x = self._embed(tokens)
        new_layers = []
        for block, entry, block_mask in zip(self.layers, cache["layers"], masks):
            x, entry = block(x, block_mask, positions, cache=entry, cache_index=index)
            new_layers.append(entry)
        new_cache = {
            "layers": tuple(new_layers),
            "mask": slot_mask,
            "index": index + length,
            "position": cache["position"] + jnp.sum(token_mask, axis=1, dtype=jnp.int32),
        }
        return self.final_norm(x), new_cache

    def prompt_state(self, prompt_tokens: Array, response_len: int) -> Tuple[Array, dict]:
        """:meth:`prefill_hidden` of ``prompt_tokens int32[B, P]`` into a cache with
        ``response_len`` free slots (compute dtype): what :meth:`extend` continues from."""
        cache = self.init_cache(prompt_tokens.shape[0], int(response_len),
                                jnp.dtype(self.config.compute_dtype))
        return self.prefill_hidden(prompt_tokens, cache)

    def decode_step(self, tokens: Array, cache: dict) -> Tuple[Array, dict]:
        """Appends ``tokens int32[B]`` at slot ``cache['index']``; returns (logits ``float32[B, V]``
        of the next token, updated cache)."""
        b = tokens.shape[0]
        index = cache["index"]
        slot_mask = jax.lax.dynamic_update_slice(
            cache["mask"], jnp.ones((b, 1), bool), (jnp.zeros((), jnp.int32), index)
        )
        positions = cache["position"][:, None]
        attn_mask = slot_mask[:, None, :]
        masks = self._layer_masks(attn_mask, positions, layers.positions_from_mask(slot_mask))
        x = self._embed(tokens[:, None])
        new_layers = []
        for block, entry, block_mask in zip(self.layers, cache["layers"], masks):
            x, entry = block(x, block_mask, positions, cache=entry, cache_index=index)
            new_layers.append(entry)
        h = self.final_norm(x[:, 0])
        new_cache = {
            "layers": tuple(new_layers),
            "mask": slot_mask,
            "index": index + 1,
            "position": cache["position"] + 1,
        }
        return self.logits_from_hidden(h), new_cache


def repeat_prompt_state(state: Tuple[Array, dict], k: int) -> Tuple[Array, dict]:
    """A :meth:`DecoderLM.prompt_state` with each row repeated ``k`` times (``B -> B * k``, the
    layout of ``k`` samples per prompt)."""
    h, cache = state
    if k == 1:
        return h, cache
    rep = lambda a: jnp.repeat(a, k, axis=0)  # noqa: E731
    return rep(h), {"layers": tuple({"k": rep(e["k"]), "v": rep(e["v"])} for e in cache["layers"]),
                    "mask": rep(cache["mask"]), "index": cache["index"],
                    "position": rep(cache["position"])}


def extend_log_probs(model: "DecoderLM", state: Tuple[Array, dict], responses: Array,
                     mask: Optional[Array] = None) -> Array:
    """:func:`response_log_probs` continued from the prompts' :meth:`DecoderLM.prompt_state`
    ``state`` (rows matching ``responses int32[B, R]``): the prompts are not recomputed.
    ``float32[B, R]``, equal to the full pass up to rounding."""
    h_last, cache = state
    h, _ = model.extend(responses, cache)
    logits = jnp.concatenate([model.logits_from_hidden(h_last)[:, None],
                              model.logits_from_hidden(h[:, :-1])], axis=1)
    logp = token_log_probs(logits, responses)
    return logp if mask is None else logp * mask


def extends(model: Any) -> bool:
    """Whether ``model`` (a backbone) continues a prompt state (:meth:`DecoderLM.extend`)."""
    return callable(getattr(model, "extend", None)) and callable(
        getattr(model, "prompt_state", None))


def forward(graphdef: nnx.GraphDef, state: nnx.State, tokens: Array, mask: Optional[Array] = None):
    """Pure full forward ``logits float32[B, L, V]`` of the model ``nnx.merge(graphdef, state)``."""
    return nnx.merge(graphdef, state)(tokens, mask)


forward_jit = jax.jit(forward, static_argnums=0)
"""``forward`` under ``jax.jit`` (graphdef static); shardings follow the inputs'."""


def token_log_probs(logits: Array, targets: Array) -> Array:
    """``float32[B, L]`` log-probabilities of ``targets int32[B, L]`` under ``logits[B, L, V]``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def response_logits(model: Any, prompts: Array, responses: Array) -> Array:
    """``float32[B, R, V]``: row ``t`` is ``model``'s distribution of response token ``t``.

    ``model`` maps tokens ``[B, P + R]`` to next-token logits (a :class:`DecoderLM`); it reads
    ``concat([prompts[B, P], responses[B, R]])`` and the logits at position ``P - 1 + t`` predict
    response token ``t``."""
    p, r = prompts.shape[1], responses.shape[1]
    logits = model(jnp.concatenate([prompts, responses], axis=1))
    return logits[:, p - 1:p - 1 + r].astype(jnp.float32)


def response_log_probs(model: Any, prompts: Array, responses: Array,
                       mask: Optional[Array] = None) -> Array:
    """``float32[B, R]`` teacher-forced log-probabilities of ``responses`` under ``model`` given
    ``prompts`` (:func:`response_logits`, :func:`token_log_probs`), times ``mask`` (float
    ``[B, R]``, 0 on padding) when given."""
    logp = token_log_probs(response_logits(model, prompts, responses), responses)
    return logp if mask is None else logp * mask
