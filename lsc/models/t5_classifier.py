"""T5 read as a sequence classifier (transformers' ``T5ForSequenceClassification``), as the
backbone of a :class:`lsc.models.heads.RewardModel`.

transformers feeds the whole text ``ids`` to the encoder and ``shift_right(ids)`` to the decoder
(causal masking only), takes the decoder's final-normed state at the **last EOS token** of each
row, and applies ``out_proj(tanh(dense(h)))``. Here the text is ``concat([prompt, response])``
with its pads moved to the end (stable, so T5's relative positions are those of the unpadded
text); :meth:`T5ClassifierBackbone.reward_features` returns ``tanh(dense(h))`` and the reward
model's linear head is ``out_proj``. A row without an EOS (a response cut at the length budget;
transformers refuses such batches) is read at its last real token.

Only the ``'last'`` reward pooling is defined; the per-token states of the pooled heads and of
PPO value heads raise ``NotImplementedError``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lsc.models import layers
from lsc.models import t5 as t5_lib

Array = jax.Array


def compact(tokens: Array, pad_id: int):
    """``(ids int32[B, L], mask bool[B, L])``: ``tokens[B, L]`` with the pads moved to the end of
    each row, the real tokens in their order."""
    mask = tokens != pad_id
    order = jnp.argsort((~mask).astype(jnp.int32), axis=1, stable=True)
    return (jnp.take_along_axis(tokens, order, axis=1),
            jnp.take_along_axis(mask, order, axis=1))


class T5ClassifierBackbone(nnx.Module):
    """A :class:`lsc.models.t5.T5` (``t5``) plus the classification head's ``dense`` layer
    (``[d_model, d_model]`` with a bias); see the module docstring."""

    def __init__(self, config: t5_lib.T5Config, *, rngs: nnx.Rngs):
        self.config = config
        self.t5 = t5_lib.T5(config, rngs=rngs)
        # Part of the classification head: float32 whatever the backbone's compute dtype.
        self.dense = layers.Linear(config.d_model, config.d_model, axes=("embed", None),
                                   use_bias=True, dtype=jnp.float32,
                                   param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.d_model = int(config.d_model)
        self.pad_id = int(config.pad_id)
        self.eos_id = int(config.eos_id)

    def sequence_states(self, ids: Array, mask: Array) -> Array:
        """Decoder states ``[B, L, d_model]`` of the right-padded text ``ids int32[B, L]``
        (``mask``: its real tokens), decoding ``shift_right(ids)``."""
        encoded = self.t5.encode(ids, mask)
        dec_in = t5_lib.shift_right(ids, self.t5.decoder_start_id)
        return self.t5.decode(dec_in, encoded, mask)

    def reward_features(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        """``float32[B, d_model]``: ``tanh(dense(h))`` of the state at the last EOS of
        ``concat([prompt, response])`` (its last real token when it has no EOS)."""
        ids, mask = compact(jnp.concatenate([prompt_tokens, response_tokens], axis=1),
                            self.pad_id)
        h = self.sequence_states(ids, mask)
        eos = (ids == self.eos_id) & mask
        idx = jnp.where(jnp.any(eos, axis=1), layers.last_true_index(eos),
                        layers.last_true_index(mask))
        h = jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
        return jnp.tanh(self.dense(h.astype(jnp.float32)))

    def response_token_states(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        raise ValueError("a T5 sequence classifier defines only the 'last' reward pooling; "
                         "set model.pooling='last'")

    def response_features(self, prompt_tokens: Array, response_tokens: Array) -> Array:
        raise ValueError("a T5 sequence classifier has no per-token states for a value head; "
                         "use a decoder or T5 backbone as the value model")
