"""SFT: the loss counts response tokens only (numpy reference) and a few steps reduce it."""

import json

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc.data import pipeline
from lsc.data.tokenizer import TruncationStats
from lsc.models import decoder
from lsc.parallel import mesh as mesh_lib
from lsc.train import loop, sft
from train_fixtures import VOCAB, tiny_config, train_config


def sft_data(n=48, p=5, r=6, seed=0):
    """Prompts ``[a, a+1, ...]`` (left-padded); responses continue the count, then EOS (1)."""
    rng = np.random.default_rng(seed)
    prompt = np.zeros((n, p), np.int32)
    response = np.zeros((n, r), np.int32)
    for i in range(n):
        lp, lr = rng.integers(1, p + 1), rng.integers(1, r)
        start = rng.integers(2, VOCAB - p - r)
        prompt[i, p - lp:] = np.arange(start, start + lp)
        response[i, :lr] = np.arange(start + lp, start + lp + lr)
        response[i, lr] = 1
    arrays = {"prompt": prompt, "response": response, "valid": np.ones((n,), np.int32)}
    return pipeline.TokenizedData("sft", arrays, 0, TruncationStats(examples=n))


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_loss_counts_response_tokens_only():
    model = decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(0))
    data = sft_data(6)
    batch = {k: np.array(v) for k, v in data.arrays.items()}
    batch["valid"][5] = 0  # a padding row counts nothing
    loss_sum, count, sums = sft.sft_loss_fn()(model, {k: jnp.asarray(v) for k, v in
                                                      batch.items()}, None)
    # Reference: full-sequence logits from the model, the NLL picked token by token in numpy.
    tokens = np.concatenate([batch["prompt"], batch["response"]], axis=1)
    logp = np_log_softmax(np.asarray(model(jnp.asarray(tokens))))
    p = batch["prompt"].shape[1]
    want_sum, want_count = 0.0, 0
    for i in range(5):
        for t, tok in enumerate(batch["response"][i]):
            if tok == 0:
                continue
            want_sum -= logp[i, p - 1 + t, tok]  # position p-1+t predicts response token t
            want_count += 1
    assert float(count) == want_count
    np.testing.assert_allclose(float(loss_sum), want_sum, rtol=1e-5)
    # The padding row's content is irrelevant.
    other = dict(batch, response=batch["response"].copy(), prompt=batch["prompt"].copy())
    other["response"][5] = np.arange(3, 3 + other["response"].shape[1])
    other["prompt"][5] = 7
    again, again_count, _ = sft.sft_loss_fn()(model, {k: jnp.asarray(v) for k, v in
                                                      other.items()}, None)
    assert float(again) == float(loss_sum) and float(again_count) == want_count


def test_a_few_steps_reduce_the_loss(tmp_path):
    data = sft_data(48)
    result = loop.train(
        workdir=str(tmp_path), create_model=lambda: decoder.DecoderLM(tiny_config(),
                                                                      rngs=nnx.Rngs(0)),
        loss_fn=sft.sft_loss_fn(), train_data=pipeline.batch_iterator(data, 8, seed=0),
        train_config=train_config(num_steps=30, log_every=5, save_every=30),
        optim_config=dict(name="adamw", learning_rate=1e-2, warmup_steps=0),
        mesh=mesh_lib.make_mesh({"data": 8}))
    history = json.load(open(tmp_path / "summary.json"))["history"]["train"]
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert result.compilations == 1
