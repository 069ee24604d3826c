"""Conventions shared by the models, the sampler and the data pipelines.

Token arrays
------------
* Token ids are int32. Padding uses the model's ``pad_id`` (0 for T5 and for our decoders unless
  a checkpoint says otherwise); a mask is ``tokens != pad_id`` unless one is passed explicitly.
* **Prompts are left-padded** ``[B, P]`` (pads first, then the prompt; left-truncated when too
  long, so the last turns are kept). **Responses are right-padded** ``[B, R]`` (response tokens,
  EOS, then pads).
* Decoder-only models see ``concat([prompt, response], axis=1)``; positions are
  ``cumsum(mask) - 1`` (clipped at 0), so pads anywhere are ignored and rotary positions of real
  tokens are 0, 1, 2, ... per row. T5 encodes the prompt and decodes the response, with the
  decoder input shifted right by one (start token = ``pad_id``).

Autoregressive models driven by ``lsc.models.sampling``
------------------------------------------------------
An ``nnx.Module`` the sampler drives implements :class:`Autoregressive`:

* ``init_cache(batch_size, max_decode_length, dtype)`` -> cache: a pytree of arrays
  (per layer ``k``/``v`` of shape ``[B, T, kv_heads, head_dim]``, the write index, the masks the
  model needs). Decoder-only: ``T = P + max_new_tokens``; T5: ``T = max_new_tokens + 1``.
* ``prefill(prompt_tokens[B, P], cache)`` -> ``(logits[B, V] float32, cache)``: the
  distribution of the first response token. Decoder-only: one forward pass over the left-padded
  prompt writing its keys/values. T5: runs the encoder (keeping the encoder output, or the
  per-layer cross-attention keys/values, and the prompt mask in the cache) and then the decoder on
  the start token.
* ``decode_step(tokens[B], cache)`` -> ``(logits[B, V] float32, cache)``: appends one token.

These are pure with respect to the cache (it goes in and comes out), so the sampler can run them
as ``nnx.merge(graphdef, state)`` inside ``jax.jit`` with the cache donated and decoding in
``lax.while_loop``.

Scoring
-------
``score(params, prompt_tokens[B, P], response_tokens[B, R]) -> float32[B]`` is the reward of a
model with a reward head; ``B`` may be ``batch * k`` (k samples per prompt, prompt repeated).
"""

from __future__ import annotations

from typing import Any, Protocol, Tuple

import jax

Cache = Any


class Autoregressive(Protocol):
    """What ``lsc.models.sampling`` needs from a model (see the module docstring)."""

    pad_id: int
    eos_id: int

    def init_cache(self, batch_size: int, max_decode_length: int, dtype: Any) -> Cache: ...

    def prefill(self, prompt_tokens: jax.Array, cache: Cache) -> Tuple[jax.Array, Cache]: ...

    def decode_step(self, tokens: jax.Array, cache: Cache) -> Tuple[jax.Array, Cache]: ...
