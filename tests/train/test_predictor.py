"""Predictor: on-device oracle quantiles vs a row-by-row numpy reference; metrics; the
predictor learns a prompt-dependent target."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsc.align.references import pi0_samples
from lsc.data import pipeline
from lsc.models import decoder, heads, sampling
from lsc.parallel import mesh as mesh_lib
from lsc.train import loop
from lsc.train import predictor as rp
from train_fixtures import VOCAB, tiny_config, train_config


def prompts(n, p=5, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, p), np.int32)
    for i in range(n):
        length = rng.integers(1, p + 1)
        out[i, p - length:] = rng.integers(3, VOCAB, length)
    return out


def test_oracle_quantiles_match_row_by_row_reference():
    policy = decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(0))
    reward_model = heads.RewardModel(decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(1)),
                                     rngs=nnx.Rngs(2), head_init=nnx.initializers.normal(1.0))
    x = prompts(5)
    key = jax.random.key(7)
    got, scores = pi0_samples.oracle_quantiles(policy, reward_model, x, key, num_samples=6,
                                               quantile=0.7, max_new_tokens=4, batch_size=3,
                                               return_scores=True)
    assert got.shape == (5,) and scores.shape == (5, 6)
    g, s = nnx.split(policy)
    for b, start in enumerate((0, 3)):
        chunk = x[start:start + 3]
        if len(chunk) < 3:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], 3 - len(chunk), axis=0)])
        samples = np.asarray(sampling.sample(g, s, jnp.asarray(chunk), jax.random.fold_in(key, b),
                                             max_new_tokens=4, num_samples=6).tokens)
        for i in range(min(3, 5 - start)):
            row_scores = [float(reward_model(jnp.asarray(chunk[i:i + 1]),
                                             jnp.asarray(samples[i, j][None]))[0])
                          for j in range(6)]
            np.testing.assert_allclose(scores[start + i], row_scores, rtol=1e-4, atol=1e-5)
            assert got[start + i] == pytest.approx(np.quantile(row_scores, 0.7), rel=1e-4,
                                                   abs=1e-5)


def test_predictor_metrics_match_numpy():
    rng = np.random.default_rng(0)
    oracle = rng.normal(size=100)
    pred = oracle + 0.1 * rng.normal(size=100)
    m = rp.predictor_metrics(pred, oracle, train_mean=0.2)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - oracle)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - oracle) ** 2)))
    assert m["baseline_mae"] == pytest.approx(np.mean(np.abs(oracle - 0.2)))
    assert m["correlation"] == pytest.approx(np.corrcoef(pred, oracle)[0, 1])
    with pytest.raises(ValueError):
        rp.predictor_metrics(pred[:3], oracle, 0.0)


@pytest.mark.slow
def test_predictor_learns_prompt_dependent_target(tmp_path):
    x_train, x_test = prompts(96, seed=1), prompts(48, seed=2)
    target = lambda x: (x[:, -1] % 4) / 2.0 - 0.75  # noqa: E731  (depends on the prompt's tokens)
    train = rp.target_table(x_train, target(x_train))
    test = rp.target_table(x_test, target(x_test))

    def outputs(model, batch):
        return {"pred": model(batch["prompt"], rp.prompt_only(batch["prompt"])),
                "target": batch["target"]}

    mean = float(target(x_train).mean())
    evaluator = loop.Evaluator(
        lambda: pipeline.batch_iterator(test, 16, shuffle=False, num_epochs=1, prefetch=0),
        outputs, lambda out: rp.predictor_metrics(out["pred"], out["target"], mean))
    create = lambda: heads.RewardModel(decoder.DecoderLM(tiny_config(), rngs=nnx.Rngs(0)),  # noqa
                                       rngs=nnx.Rngs(1))
    loop.train(workdir=str(tmp_path), create_model=create, loss_fn=rp.predictor_loss_fn(),
               train_data=pipeline.batch_iterator(train, 16, seed=0),
               train_config=train_config(num_steps=60, batch_size=16, log_every=10,
                                         save_every=60),
               optim_config=dict(name="adamw", learning_rate=1e-2, warmup_steps=5),
               mesh=mesh_lib.make_mesh({"data": 8}), evaluator=evaluator)
    final = json.load(open(tmp_path / "summary.json"))["eval"]
    assert final["mae"] < 0.5 * final["baseline_mae"]
