"""Helpers for the training tests: a tiny learnable pairwise task and a tiny reward model."""

from __future__ import annotations

import numpy as np
from flax import nnx

from lsc.data import pipeline
from lsc.data.tokenizer import TruncationStats
from lsc.models import decoder, heads
from lsc.train import loop

VOCAB, P, R = 32, 6, 6
GOOD = 5  # token that makes a response preferred


def tiny_pairs(n: int = 64, seed: int = 0) -> pipeline.TokenizedData:
    """``n`` pairwise rows: left-padded prompts, right-padded responses; chosen contain GOOD."""
    rng = np.random.default_rng(seed)
    prompt = np.zeros((n, P), np.int32)
    chosen = np.zeros((n, R), np.int32)
    rejected = np.zeros((n, R), np.int32)
    for i in range(n):
        lp, lc, lr = rng.integers(2, P + 1), rng.integers(2, R), rng.integers(2, R)
        prompt[i, P - lp:] = rng.integers(6, VOCAB, lp)
        chosen[i, :lc] = rng.integers(6, VOCAB, lc)
        chosen[i, rng.integers(lc)] = GOOD
        chosen[i, lc] = 1
        rejected[i, :lr] = rng.integers(6, VOCAB, lr)
        rejected[i, lr] = 1
    arrays = {"prompt": prompt, "chosen": chosen, "rejected": rejected,
              "valid": np.ones((n,), np.int32)}
    return pipeline.TokenizedData("pairwise", arrays, 0, TruncationStats(examples=n))


def tiny_config(compute_dtype: str = "float32") -> decoder.DecoderConfig:
    return decoder.DecoderConfig(vocab_size=VOCAB, d_model=16, num_layers=1, num_heads=2,
                                 num_kv_heads=2, head_dim=8, mlp_dim=32, init_std=0.5,
                                 compute_dtype=compute_dtype)


def create_rm(seed: int = 0, compute_dtype: str = "float32"):
    def create():
        return heads.RewardModel(decoder.DecoderLM(tiny_config(compute_dtype),
                                                   rngs=nnx.Rngs(seed)),
                                 rngs=nnx.Rngs(seed + 1),
                                 head_init=nnx.initializers.normal(0.5))
    return create


def train_config(**kw) -> loop.TrainConfig:
    base = dict(num_steps=6, batch_size=8, log_every=2, eval_every=0, save_every=3,
                keep_checkpoints=3, progress=False)
    base.update(kw)
    return loop.TrainConfig(**base)


OPTIM = dict(name="adamw", learning_rate=1e-2, warmup_steps=2, schedule="cosine")


class ListIterator:
    """Batches from a list, with a JSON position state (``get_state``/``set_state``)."""

    def __init__(self, batches):
        self.batches, self.pos = batches, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= len(self.batches):
            raise StopIteration
        b = self.batches[self.pos]
        self.pos += 1
        return b

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


def flat_params(state) -> dict:
    """``{path: np.ndarray}`` of a TrainState's parameters."""
    return {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state.params)}
