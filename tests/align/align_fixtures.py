"""Tiny models and prompts for the alignment tests."""

from __future__ import annotations

import numpy as np
from flax import nnx

from lsc.models import decoder, heads

VOCAB, P, R = 32, 6, 5


def tiny_config(**kw) -> decoder.DecoderConfig:
    base = dict(vocab_size=VOCAB, d_model=16, num_layers=1, num_heads=2, num_kv_heads=2,
                head_dim=8, mlp_dim=32, init_std=0.5)
    base.update(kw)
    return decoder.DecoderConfig(**base)


def policy(seed: int = 0) -> decoder.DecoderLM:
    return decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(seed))


def reward_model(seed: int) -> heads.RewardModel:
    return heads.RewardModel(decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(seed)),
                             rngs=nnx.Rngs(seed + 1), head_init=nnx.initializers.normal(1.0))


def prompts(b: int = 4, seed: int = 0) -> np.ndarray:
    """``int32[b, P]`` left-padded prompts of random lengths (tokens 2..VOCAB-1)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((b, P), np.int32)
    for i in range(b):
        n = int(rng.integers(2, P + 1))
        out[i, P - n:] = rng.integers(2, VOCAB, n)
    return out
