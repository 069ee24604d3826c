"""Scalar reward and value heads, and the reward / value models built on a backbone.

A *backbone* is any ``nnx.Module`` with

* ``d_model: int`` — width of its features;
* ``reward_features(prompt_tokens[B, P], response_tokens[B, R]) -> [B, d_model]`` — the one
  vector the reward is read from;
* ``response_features(prompt_tokens[B, P], response_tokens[B, R]) -> [B, R, d_model]`` — for
  each response token ``t``, the state that predicts it (values for PPO are read here);
* ``response_token_states(prompt_tokens[B, P], response_tokens[B, R]) -> [B, R, d_model]`` —
  for each response token ``t``, the state *at* it (it has read the prompt and tokens ``<= t``);
  read by the pooled reward heads.

What the features are is the backbone's choice and is documented there:
:class:`lsc.models.decoder.DecoderLM` reads the final hidden state of the **last non-pad token**
of ``concat([prompt, response])`` (the EOS token of a finished response; the last prompt token if
the response is empty); the T5 model reads its own pooled representation (see ``lsc.models.t5``).

A :class:`RewardModel` reads its reward in one of :data:`POOLINGS`: ``'last'`` (the default)
applies the head to ``reward_features``; ``'mean'`` and ``'sum'`` apply it to the mean / sum of
``response_token_states`` over the real (non-pad) response tokens, so the reward is the mean /
sum of per-token scores plus the bias (the head is linear) — a natural fit for rewards that add
up over what the response says. An empty response pools to the zero vector (the reward is the
bias).

Prompts are left-padded and responses right-padded (``lsc.models.protocol``); ``B`` may be
``batch * k`` with each prompt repeated ``k`` times.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from lsc.models import layers

Array = jax.Array


class ScalarHead(nnx.Module):
    """``features[..., E] -> float32[...]``: a linear map to one number (kernel ``[embed, 1]`` and
    a bias; zero-initialised kernel by default so a fresh head outputs its bias, 0). It computes
    in float32 whatever the backbone's ``compute_dtype`` (bfloat16 features are widened)."""

    def __init__(
        self,
        d_model: int,
        *,
        kernel_init=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.proj = layers.Linear(
            d_model, 1, axes=("embed", None), use_bias=True,
            kernel_init=kernel_init or nnx.initializers.zeros, dtype=jnp.float32,
            param_dtype=param_dtype, rngs=rngs,
        )

    def __call__(self, features: Array) -> Array:
        return self.proj(features.astype(jnp.float32))[..., 0]


class RewardHead(ScalarHead):
    """Scalar reward ``float32[...]`` from features ``[..., E]``."""


class ValueHead(ScalarHead):
    """Scalar state value ``float32[...]`` from features ``[..., E]`` (PPO critic)."""


POOLINGS = ("last", "mean", "sum")


def pool_response_states(states: Array, response_tokens: Array, pad_id: int, pooling: str
                         ) -> Array:
    """``[B, E]``: the mean (``pooling='mean'``) or sum (``'sum'``) of ``states[B, R, E]`` over
    the positions where ``response_tokens[B, R] != pad_id``; zeros for an empty response.
    Accumulates in float32."""
    mask = (response_tokens != pad_id).astype(jnp.float32)[..., None]
    total = jnp.sum(states.astype(jnp.float32) * mask, axis=1)
    if pooling == "sum":
        return total
    if pooling == "mean":
        return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    raise ValueError(f"pooling must be 'mean' or 'sum' here, got {pooling!r}")


class RewardModel(nnx.Module):
    """A backbone plus a :class:`RewardHead`: ``r(x, y) = head(features(x, y))``, where the
    features are ``backbone.reward_features(x, y)`` (``pooling='last'``, the default) or the mean
    / sum of ``backbone.response_token_states(x, y)`` over the response's real tokens
    (``'mean'`` / ``'sum'``; see the module doc).

    ``__call__(prompt_tokens int32[B, P], response_tokens int32[B, R]) -> float32[B]``.
    """

    def __init__(self, backbone: nnx.Module, *, rngs: nnx.Rngs, head_init=None,
                 pooling: str = "last"):
        if pooling not in POOLINGS:
            raise ValueError(f"reward pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone = backbone
        self.head = RewardHead(backbone.d_model, kernel_init=head_init, rngs=rngs)
        self.pad_id = getattr(backbone, "pad_id", 0)
        self.pooling = pooling

    def features(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        """``[B, E]``: what the head reads (see the class doc)."""
        if self.pooling == "last":
            return self.backbone.reward_features(prompt_tokens, response_tokens)
        states = self.backbone.response_token_states(prompt_tokens, response_tokens)
        return pool_response_states(states, response_tokens, self.pad_id, self.pooling)

    def __call__(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        return self.head(self.features(prompt_tokens, response_tokens))

    def from_prompt_state(self, state, response_tokens: Array) -> Array:
        """``float32[B]``: :meth:`__call__` continued from the prompts' state ``(h_last [B, E],
        cache)`` (``backbone.prompt_state``, rows matching ``response_tokens int32[B, R]``;
        backbones with ``extend`` only, :class:`lsc.models.decoder.DecoderLM`), equal to the full
        pass up to rounding; an empty response reads the prompt's last state as
        ``reward_features`` does."""
        h_last, cache = state
        states, _ = self.backbone.extend(response_tokens, cache)
        if self.pooling == "last":
            real = response_tokens != self.pad_id
            idx = layers.last_true_index(real)
            feats = jnp.take_along_axis(states, idx[:, None, None], axis=1)[:, 0]
            feats = jnp.where(jnp.any(real, axis=1)[:, None], feats, h_last)
        else:
            feats = pool_response_states(states, response_tokens, self.pad_id, self.pooling)
        return self.head(feats)


class ValueModel(nnx.Module):
    """A backbone plus a :class:`ValueHead`: per-response-token values for PPO.

    ``__call__(prompt_tokens int32[B, P], response_tokens int32[B, R]) -> float32[B, R]``, where
    entry ``t`` is the value of the state before response token ``t`` is generated.
    """

    def __init__(self, backbone: nnx.Module, *, rngs: nnx.Rngs, head_init=None):
        self.backbone = backbone
        self.head = ValueHead(backbone.d_model, kernel_init=head_init, rngs=rngs)
        self.pad_id = getattr(backbone, "pad_id", 0)

    def __call__(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        return self.head(self.backbone.response_features(prompt_tokens, response_tokens))


def _score(graphdef: nnx.GraphDef, state: nnx.State, prompt_tokens: Array,
           response_tokens: Array) -> Array:
    return nnx.merge(graphdef, state)(prompt_tokens, response_tokens).astype(jnp.float32)


score = jax.jit(_score, static_argnums=0)
score.__doc__ = """Rewards ``float32[B]`` of a :class:`RewardModel` split as ``(graphdef, state)``.

``score(graphdef, state, prompt_tokens int32[B, P], response_tokens int32[B, R])``; jitted with
``graphdef`` static (compiles once per shape); shardings follow those of ``state`` and the inputs.
"""

values = jax.jit(_score, static_argnums=0)
values.__doc__ = """Values ``float32[B, R]`` of a :class:`ValueModel` split as ``(graphdef, state)``;
same calling convention as :func:`score`."""


def score_model(model: RewardModel, prompt_tokens: Array, response_tokens: Array) -> Array:
    """:func:`score` for a module (splits it first)."""
    graphdef, state = nnx.split(model)
    return score(graphdef, state, prompt_tokens, response_tokens)
