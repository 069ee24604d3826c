"""dtype handling shared by the reward math: compute in at least float32, return the input dtype."""

from __future__ import annotations

from typing import Tuple

import jax.numpy as jnp


def compute_dtype(primary) -> Tuple[jnp.dtype, jnp.dtype]:
    """Returns ``(out_dtype, inner_dtype)`` for the primary (rewards) input of a function.

    ``out_dtype`` is the primary input's floating dtype (integers become float32): other
    arguments (references, weights) never change the output dtype. ``inner_dtype`` is
    ``out_dtype`` widened to at least float32, so bf16/fp16 inputs are computed in float32 and
    cast back.
    """
    out = jnp.asarray(primary).dtype
    if not jnp.issubdtype(out, jnp.floating):
        out = jnp.dtype(jnp.float32)
    return jnp.dtype(out), jnp.dtype(jnp.promote_types(out, jnp.float32))
