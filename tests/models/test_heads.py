"""Reward and value heads on the decoder backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as presets
from lsc.models import heads
from lsc.models.decoder import DecoderConfig, DecoderLM

PROMPTS = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 0, 0, 0, 9]], np.int32)
RESPONSES = np.array([[8, 9, 1, 0], [10, 1, 0, 0], [0, 0, 0, 0]], np.int32)


@pytest.fixture(scope="module")
def reward_model():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    model = heads.RewardModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1),
                              head_init=nnx.initializers.normal(1.0))
    model.head.proj.bias[...] = jnp.array([0.25])
    return model


def _numpy_reward(model, prompts, responses):
    tokens = np.concatenate([prompts, responses], 1)
    mask = tokens != 0
    h = np.asarray(model.backbone.hidden_states(jnp.asarray(tokens), jnp.asarray(mask)))
    last = np.array([np.flatnonzero(m)[-1] for m in mask])  # last non-pad token
    w = np.asarray(model.head.proj.kernel[...])[:, 0]
    b = float(model.head.proj.bias[...][0])
    return h[np.arange(len(last)), last] @ w + b


def test_reward_reads_last_non_pad_token(reward_model):
    got = np.asarray(reward_model(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, _numpy_reward(reward_model, PROMPTS, RESPONSES), rtol=1e-5,
                               atol=1e-5)


def test_reward_ignores_extra_padding(reward_model):
    more_p = np.pad(PROMPTS, ((0, 0), (3, 0)))
    more_r = np.pad(RESPONSES, ((0, 0), (0, 2)))
    a = np.asarray(reward_model(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    b = np.asarray(reward_model(jnp.asarray(more_p), jnp.asarray(more_r)))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_jitted_score_is_pure_function_of_state(reward_model):
    g, s = nnx.split(reward_model)
    compiled_before = heads.score._cache_size()  # other tests may have compiled other shapes
    got = heads.score(g, s, jnp.asarray(PROMPTS), jnp.asarray(RESPONSES))
    np.testing.assert_allclose(np.asarray(got), _numpy_reward(reward_model, PROMPTS, RESPONSES),
                               rtol=1e-5, atol=1e-5)
    s2 = jax.tree.map(lambda x: x, s)
    s2["head"]["proj"]["bias"][...] = jnp.array([1.25])
    shifted = heads.score(g, s2, jnp.asarray(PROMPTS), jnp.asarray(RESPONSES))
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(got) + 1.0, rtol=1e-5, atol=1e-5)
    assert heads.score._cache_size() <= compiled_before + 1  # the new state reused the compilation


def test_fresh_head_outputs_zero():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    model = heads.RewardModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    assert np.asarray(model(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES))).tolist() == [0.0] * 3


def test_values_read_state_before_each_response_token():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    vm = heads.ValueModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(2),
                          head_init=nnx.initializers.normal(1.0))
    g, s = nnx.split(vm)
    got = np.asarray(heads.values(g, s, jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    assert got.shape == RESPONSES.shape
    tokens = np.concatenate([PROMPTS, RESPONSES], 1)
    h = np.asarray(vm.backbone.hidden_states(jnp.asarray(tokens)))
    w = np.asarray(vm.head.proj.kernel[...])[:, 0]
    p = PROMPTS.shape[1]
    want = h[:, p - 1:p - 1 + RESPONSES.shape[1]] @ w
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_pooled_reward_adds_up_per_token_last_token_rewards(pooling):
    """With a linear head, a pooled reward is the sum (mean) over response tokens t of
    ``head(state at t) - bias``, plus the bias; the state at t is what the 'last' reward reads
    for the response cut after t (the decoder is causal). Empty responses score the bias."""
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    backbone = DecoderLM(cfg, rngs=nnx.Rngs(0))
    pooled = heads.RewardModel(backbone, rngs=nnx.Rngs(1), head_init=nnx.initializers.normal(1.0),
                               pooling=pooling)
    pooled.head.proj.bias[...] = jnp.array([0.25])
    last = heads.RewardModel(backbone, rngs=nnx.Rngs(1), pooling="last")
    last.head = pooled.head
    # Each model under one jit (its weights as constants): a handful of compilations, one per
    # input shape, instead of every eager operation compiling once per response length.
    pooled_fn, last_fn = (jax.jit(lambda p, r, m=m: m(p, r)) for m in (pooled, last))
    got = np.asarray(pooled_fn(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    want = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        n = int(np.sum(response != 0))
        per_token = [float(last_fn(jnp.asarray(prompt[None]),
                                   jnp.asarray(response[None, :t + 1]))[0]) - 0.25
                     for t in range(n)]
        total = sum(per_token) / (max(n, 1) if pooling == "mean" else 1)
        want.append(total + 0.25)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-5)
    assert got[2] == pytest.approx(0.25)  # the empty response
    more = np.asarray(pooled_fn(jnp.asarray(np.pad(PROMPTS, ((0, 0), (2, 0)))),
                                jnp.asarray(np.pad(RESPONSES, ((0, 0), (0, 3))))))
    np.testing.assert_allclose(more, got, rtol=1e-5, atol=1e-5)


def test_unknown_pooling_is_refused():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    with pytest.raises(ValueError, match="pooling must be one of"):
        heads.RewardModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1), pooling="max")


@pytest.mark.parametrize("pooling", ["last", "mean", "sum"])
def test_reward_from_prompt_state_matches_the_full_pass(pooling):
    """``from_prompt_state`` (the prompts read once by ``backbone.prompt_state``) gives the
    reward of the full pass over ``[prompt, response]``, the empty response included (it reads
    the prompt's last state under 'last' pooling and the bias under 'mean' / 'sum'); through
    ``lsc.align.references.score_samples``, k responses per prompt read one prompt state."""
    from lsc.align import references
    from lsc.models import decoder

    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    model = heads.RewardModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1),
                              head_init=nnx.initializers.normal(1.0), pooling=pooling)
    model.head.proj.bias[...] = jnp.array([0.25])
    prompts, resp = jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)
    want = np.asarray(model(prompts, resp))
    state = model.backbone.prompt_state(prompts, resp.shape[1])
    got = np.asarray(model.from_prompt_state(state, resp))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if pooling == "last":
        np.testing.assert_allclose(got, _numpy_reward(model, PROMPTS, RESPONSES), rtol=1e-5,
                                   atol=1e-5)
    # k = 3 responses per prompt (every response for every prompt), two reward models.
    samples = jnp.asarray(np.broadcast_to(RESPONSES[None], (3, 3, 4)))
    gd, st = nnx.split(model)
    scores = np.asarray(jax.jit(lambda p, s: references.score_samples((gd, gd), (st, st), p, s))(
        prompts, samples))
    for k in range(3):
        col = np.asarray(model(prompts, jnp.broadcast_to(resp[k], resp.shape)))
        np.testing.assert_allclose(scores[:, k, 0], col, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores[:, k, 1], col, rtol=1e-5, atol=1e-5)
    assert decoder.extends(model.backbone)
