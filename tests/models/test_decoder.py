"""lsc.models.decoder against a float64 numpy reference and structural properties."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import _decoder_reference as ref
from configs.models import decoder as presets
from lsc.models.decoder import DecoderConfig, DecoderLM, forward_jit, token_log_probs


def make(name, **overrides):
    cfg = DecoderConfig.from_mapping(presets.get_config(name))
    cfg = dataclasses.replace(cfg, **overrides)
    return cfg, DecoderLM(cfg, rngs=nnx.Rngs(0))


def randomize_norms(model, seed=0):
    """Non-trivial norm scales so the reference checks them too."""
    rs = np.random.RandomState(seed)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and path[-1] == "scale":
            var[...] = jnp.asarray(1 + 0.3 * rs.randn(*var.shape), var.dtype)


TOKENS = np.array([[0, 0, 0, 5, 9, 12, 3], [7, 8, 9, 10, 11, 12, 13], [0, 4, 4, 4, 2, 0, 0]])


@pytest.mark.parametrize("name", ["tiny", "tiny_mha", "tiny_mqa", "tiny_parallel", "tiny_gemma"])
def test_forward_matches_numpy_reference(name):
    cfg, model = make(name)
    randomize_norms(model)
    logits = np.asarray(model(jnp.asarray(TOKENS)))
    mask = TOKENS != cfg.pad_id
    want = ref.forward(nnx.to_pure_dict(nnx.state(model)), cfg, TOKENS, mask)
    np.testing.assert_allclose(logits[mask], want[mask], rtol=2e-4, atol=2e-4)
    assert logits.dtype == np.float32 and logits.shape == (3, 7, cfg.vocab_size)


def test_left_padding_is_invisible():
    _, model = make("tiny")
    row = jnp.array([[5, 9, 12, 3]])
    padded = jnp.array([[0, 0, 0, 5, 9, 12, 3]])
    np.testing.assert_allclose(np.asarray(model(padded))[0, 3:], np.asarray(model(row))[0],
                               rtol=1e-5, atol=1e-5)


def test_causality():
    _, model = make("tiny")
    a = jnp.array([[3, 4, 5, 6, 7]])
    b = jnp.array([[3, 4, 5, 60, 70]])
    np.testing.assert_allclose(np.asarray(model(a))[0, :3], np.asarray(model(b))[0, :3], atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "tiny_parallel"])
def test_prefill_and_decode_match_full_forward(name):
    _, model = make(name)
    prompt = jnp.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    resp = jnp.array([[9, 10, 11, 12], [12, 13, 14, 15]])
    # Under jit, as the samplers run them (the weights as constants): three compilations instead
    # of one per eager operation and shape.
    forward = jax.jit(lambda tokens: model(tokens))
    prefill = jax.jit(lambda tokens, cache: model.prefill(tokens, cache))
    decode_step = jax.jit(lambda token, cache: model.decode_step(token, cache))
    full = np.asarray(forward(jnp.concatenate([prompt, resp], 1)))
    cache = model.init_cache(2, 4, jnp.float32)
    logits, cache = prefill(prompt, cache)
    assert cache["layers"][0]["k"].shape == (2, 5 + 4, model.config.num_kv_heads,
                                             model.config.head_dim)
    np.testing.assert_allclose(np.asarray(logits), full[:, 4], rtol=1e-5, atol=1e-5)
    for t in range(3):
        logits, cache = decode_step(resp[:, t], cache)
        np.testing.assert_allclose(np.asarray(logits), full[:, 5 + t], rtol=1e-5, atol=1e-5)


EXTEND_PROMPTS = np.array([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 9, 4]])
# Right-padded responses: EOS (1) then pads; the third is a lone EOS.
EXTEND_RESPONSES = np.array([[9, 10, 11, 1, 0, 0, 0], [12, 13, 14, 15, 16, 17, 1],
                             [1, 0, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("name", ["tiny", "tiny_mqa", "tiny_parallel", "tiny_gemma3"])
def test_extend_from_prompt_state_matches_the_full_pass(name):
    """``prompt_state`` then ``extend`` gives the hidden states of a full pass over ``[prompt,
    response]`` at every real response token (left-padded prompts, right-padded responses, a
    sliding-window layer in tiny_gemma3), and ``extend_log_probs`` the teacher-forced
    log-probs; the state repeated k times serves k responses per prompt."""
    from lsc.models import decoder

    _, model = make(name)
    randomize_norms(model)
    prompts, resp = jnp.asarray(EXTEND_PROMPTS), jnp.asarray(EXTEND_RESPONSES)
    p, r = prompts.shape[1], resp.shape[1]
    real = EXTEND_RESPONSES != model.pad_id
    full = np.asarray(model.hidden_states(jnp.concatenate([prompts, resp], 1)))
    state = jax.jit(lambda x: model.prompt_state(x, r))(prompts)
    h, cache = jax.jit(lambda t, c: model.extend(t, c))(resp, state[1])
    np.testing.assert_allclose(np.asarray(h)[real], full[:, p:][real], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(state[0]), full[:, p - 1], rtol=1e-5, atol=1e-5)
    assert int(cache["index"]) == p + r
    mask = jnp.asarray(real, jnp.float32)
    want = np.asarray(decoder.response_log_probs(model, prompts, resp, mask))
    got = np.asarray(decoder.extend_log_probs(model, state, resp, mask))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # k = 2 responses per prompt: the second copy of each prompt reads another response.
    other = jnp.asarray(np.roll(EXTEND_RESPONSES, 1, axis=0))
    both = jnp.stack([resp, other], 1).reshape(-1, r)
    got2 = np.asarray(decoder.extend_log_probs(
        model, decoder.repeat_prompt_state(state, 2), both))
    want2 = np.asarray(decoder.response_log_probs(model, jnp.repeat(prompts, 2, 0), both))
    real2 = np.asarray(both) != model.pad_id
    np.testing.assert_allclose(got2[real2], want2[real2], rtol=1e-5, atol=1e-5)


def test_token_log_probs_and_jit_forward():
    _, model = make("tiny")
    g, s = nnx.split(model)
    tokens = jnp.asarray(TOKENS)
    logits = forward_jit(g, s, tokens)
    lp = np.asarray(token_log_probs(logits[:, :-1], tokens[:, 1:]))
    ln = np.asarray(logits, np.float64)
    ln = ln - np.log(np.exp(ln - ln.max(-1, keepdims=True)).sum(-1, keepdims=True)) - ln.max(
        -1, keepdims=True)
    want = np.take_along_axis(ln[:, :-1], TOKENS[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(lp, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_is_close_to_float32():
    cfg, model = make("tiny")
    low = DecoderLM(dataclasses.replace(cfg, compute_dtype="bfloat16"), rngs=nnx.Rngs(0))
    a = np.asarray(model(jnp.asarray(TOKENS)))
    b = np.asarray(low(jnp.asarray(TOKENS)))
    assert b.dtype == np.float32  # logits are always float32
    mask = TOKENS != 0
    assert np.abs(a[mask] - b[mask]).max() < 0.05 * np.abs(a[mask]).max()


# Published parameter counts (model cards / papers), in billions.
PUBLISHED = {"llama2_7b": 6.74, "llama2_13b": 13.02, "llama3_8b": 8.03, "llama3_2_1b": 1.24,
             "tinyllama_1_1b": 1.10, "gemma_2b": 2.51, "gemma_7b": 8.54}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts(name):
    cfg = DecoderConfig.from_mapping(presets.get_config(name))
    assert cfg.num_params() / 1e9 == pytest.approx(PUBLISHED[name], abs=0.01)


def test_param_count_matches_module():
    for name in ("tiny", "tiny_parallel"):
        cfg, model = make(name)
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert n == cfg.num_params()


def test_config_validation_names_field():
    base = presets.get_config("tiny").to_dict()
    with pytest.raises(ValueError, match="model.num_kv_heads"):
        DecoderConfig.from_mapping(dict(base, num_kv_heads=3))
    with pytest.raises(ValueError, match="model.activation|unknown activation"):
        DecoderConfig.from_mapping(dict(base, activation="tanh"))
    with pytest.raises(ValueError, match="unknown decoder config fields"):
        DecoderConfig.from_mapping(dict(base, d_ff=3))
    with pytest.raises(ValueError, match="unknown decoder preset"):
        presets.get_config("gpt5")
