"""T5 model: cached decoding vs the full forward pass, padding, reward scoring, dropout and
configs (no PyTorch needed). Checkpoint import errors: tests/models/test_hf_io.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import t5_1_1
from lsc.models import heads, layers, sampling, t5
from lsc.parallel import mesh as mesh_lib
from lsc.parallel import partitioning

MINI = t5.T5Config.from_dict(t5_1_1.get_config("mini"))
TINY_TIED = t5.T5Config.from_dict(
    dict(t5_1_1.get_config("tiny").to_dict(), tie_word_embeddings=True, scale_decoder_outputs=True,
         relative_attention_num_buckets=8, relative_attention_max_distance=12)
)


def _model(config, seed=0):
    return t5.T5(config, rngs=nnx.Rngs(seed))


@jax.jit
def _forward(graphdef, state, enc, dec):
    return nnx.merge(graphdef, state)(enc, dec)


def forward(model, enc, dec):
    """Jitted full forward pass: float32 logits ``[B, L, V]``."""
    return _forward(*nnx.split(model), jnp.asarray(enc, jnp.int32), jnp.asarray(dec, jnp.int32))


def _prompts(rng, batch, length, vocab, pads=(0, 3, 6, 1)):
    tokens = rng.integers(2, vocab, (batch, length)).astype(np.int32)
    for b in range(batch):
        tokens[b, : pads[b % len(pads)]] = 0
    return tokens


# ----------------------------------------------------------------------------------------------
# Cached decoding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [MINI, TINY_TIED], ids=["mini_untied", "tiny_tied_scaled"])
@pytest.mark.slow
def test_cached_decoding_matches_full_forward(config):
    model = _model(config)
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    b, p, n = 4, 9, 15  # n > max_distance of TINY_TIED: the log-spaced and last buckets are used
    prompts = jnp.asarray(_prompts(rng, b, p, config.vocab_size))
    targets = jnp.asarray(rng.integers(2, config.vocab_size, (b, n)), jnp.int32)
    full = forward(model, prompts, t5.shift_right(targets))  # [B, n, V]: row t predicts targets[:, t]

    @jax.jit
    def prefill(state, prompts):
        m = nnx.merge(graphdef, state)
        return m.prefill(prompts, m.init_cache(b, n - 1, jnp.float32))

    @jax.jit
    def step(state, tokens, cache):
        return nnx.merge(graphdef, state).decode_step(tokens, cache)

    logits, cache = prefill(state, prompts)
    assert logits.shape == (b, config.vocab_size) and logits.dtype == jnp.float32
    assert cache["layers"][0]["k"].shape == (b, n, config.num_heads, config.d_kv)
    assert cache["layers"][0]["cross_k"].shape == (b, p, config.num_heads, config.d_kv)
    got = [logits]
    for t in range(n - 1):
        logits, cache = step(state, targets[:, t], cache)
        got.append(logits)
    assert int(cache["index"]) == n
    np.testing.assert_allclose(np.stack(got, axis=1), np.asarray(full), atol=2e-5, rtol=1e-5)


def test_cache_tree_structure_is_stable_across_steps():
    graphdef, state = nnx.split(_model(TINY_TIED))

    @jax.jit
    def run(state, prompts, tokens):
        model = nnx.merge(graphdef, state)
        cache = model.init_cache(2, 3, jnp.bfloat16)
        _, after_prefill = model.prefill(prompts, cache)
        _, after_step = model.decode_step(tokens, after_prefill)
        return cache, after_prefill, after_step

    cache, after_prefill, after_step = run(
        state, jnp.asarray([[0, 5, 6], [7, 8, 9]], jnp.int32), jnp.asarray([3, 4], jnp.int32))
    assert jax.tree.structure(cache) == jax.tree.structure(after_prefill)
    shapes = lambda c: jax.tree.map(lambda x: (x.shape, x.dtype), c)  # noqa: E731
    assert shapes(after_prefill) == shapes(after_step)
    assert after_step["layers"][0]["k"].dtype == jnp.bfloat16


@pytest.mark.slow
def test_sampler_greedy_matches_greedy_full_forward_loop():
    """The sampler driving prefill/decode_step picks, step by step, the argmax of a full
    forward pass over the tokens chosen so far (no cache involved)."""
    model = _model(MINI, seed=3)
    rng = np.random.default_rng(4)
    prompts = jnp.asarray(_prompts(rng, 3, 7, MINI.vocab_size))
    max_new = 6
    out = sampling.sample(*nnx.split(model), prompts, jax.random.key(1), max_new_tokens=max_new,
                          temperature=0.0, allow_pad=True, eos_id=MINI.vocab_size - 1)
    # decoder inputs in a fixed-size buffer: causal attention makes later slots irrelevant
    dec = np.zeros((3, max_new + 1), np.int32)
    for t in range(max_new):
        logits = forward(model, prompts, dec)
        dec[:, t + 1] = np.argmax(np.asarray(logits[:, t]), axis=-1)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0]), dec[:, 1:])


def test_bfloat16_activations_and_cache_stay_close_to_float32():
    f32 = _model(MINI, seed=5)
    bf16 = _model(t5.T5Config.from_dict(dict(MINI.to_dict(), compute_dtype="bfloat16")), seed=5)
    rng = np.random.default_rng(8)
    prompts = jnp.asarray(_prompts(rng, 2, 6, MINI.vocab_size))
    dec = jnp.asarray(np.concatenate([np.zeros((2, 1)), rng.integers(2, 256, (2, 4))], 1),
                      jnp.int32)
    ref, got = forward(f32, prompts, dec), forward(bf16, prompts, dec)
    assert got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(ref)))
    assert float(jnp.max(jnp.abs(got - ref))) < 0.05 * scale
    graphdef, state = nnx.split(bf16)

    @jax.jit
    def first_logits(state, prompts):
        m = nnx.merge(graphdef, state)
        return m.prefill(prompts, m.init_cache(2, 4, jnp.bfloat16))[0]

    np.testing.assert_allclose(np.asarray(first_logits(state, prompts)), np.asarray(got[:, 0]),
                               atol=0.05 * scale)


# ----------------------------------------------------------------------------------------------
# Padding
# ----------------------------------------------------------------------------------------------


def test_prompt_padding_does_not_change_outputs():
    model = _model(MINI, seed=1)
    rng = np.random.default_rng(1)
    prompt = rng.integers(2, MINI.vocab_size, (5,)).astype(np.int32)
    dec = jnp.asarray(np.concatenate([[0], rng.integers(2, MINI.vocab_size, (6,))])[None], jnp.int32)
    reference = forward(model, prompt[None], dec)
    left = np.concatenate([np.zeros(4, np.int32), prompt])[None]
    right = np.concatenate([prompt, np.zeros(3, np.int32)])[None]
    for padded in (left, right):
        got = forward(model, padded, dec)
        np.testing.assert_allclose(np.asarray(got), np.asarray(reference), atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------------


def _t5_reward_model(config, seed=0):
    """A reward model on a T5 backbone, built as the reward-model jobs build it
    (:func:`lsc.train.common.reward_model_factory`: backbone from ``seed``, head from
    ``seed + 1``, ``pooling='last'``)."""
    return heads.RewardModel(t5.T5(config, rngs=nnx.Rngs(seed)), rngs=nnx.Rngs(seed + 1))


def _reward_model(seed=0):
    rm = _t5_reward_model(MINI, seed)
    rm.head.proj.kernel.set_value(
        jax.random.normal(jax.random.key(seed), (MINI.d_model, 1), jnp.float32))
    rm.head.proj.bias.set_value(jnp.asarray([0.5], jnp.float32))
    return rm


def test_score_shape_dtype_jit_and_padding_invariance():
    rm = _reward_model()
    graphdef, state = nnx.split(rm)
    rng = np.random.default_rng(2)
    prompts = _prompts(rng, 4, 6, MINI.vocab_size)
    responses = rng.integers(2, MINI.vocab_size, (4, 5)).astype(np.int32)
    responses[0, 3:] = 0
    responses[1, 1:] = 0
    responses[2, 0:] = 0  # empty response
    responses[3, 4] = MINI.eos_id
    r = heads.score(graphdef, state, jnp.asarray(prompts), jnp.asarray(responses))
    assert r.shape == (4,) and r.dtype == jnp.float32
    assert np.isfinite(np.asarray(r)).all()
    # more padding on both sides changes nothing
    more_p = np.concatenate([np.zeros((4, 3), np.int32), prompts], axis=1)
    more_r = np.concatenate([responses, np.zeros((4, 4), np.int32)], axis=1)
    r2 = heads.score(graphdef, state, jnp.asarray(more_p), jnp.asarray(more_r))
    np.testing.assert_allclose(np.asarray(r2), np.asarray(r), atol=2e-5, rtol=1e-5)
    # the un-jitted module call agrees with the jitted pure function
    np.testing.assert_allclose(np.asarray(rm(jnp.asarray(prompts), jnp.asarray(responses))),
                               np.asarray(r), atol=1e-5, rtol=1e-5)


def test_score_reads_the_state_at_the_last_response_token():
    """Reference: the full teacher-forced decoder pass over ``[start] + response`` of each
    unpadded example, head applied to the last position."""
    rm = _reward_model(seed=2)
    graphdef, state = nnx.split(rm)
    prompts = np.array([[0, 0, 7, 8, 9], [3, 4, 5, 6, 7]], np.int32)
    responses = np.array([[12, 13, 1, 0], [14, 15, 16, 1]], np.int32)
    r = np.asarray(heads.score(graphdef, state, jnp.asarray(prompts), jnp.asarray(responses)))
    w = np.asarray(rm.head.proj.kernel[...])[:, 0]
    t5_graphdef, t5_state = nnx.split(rm.backbone)

    @jax.jit
    def last_decoder_state(t5_state, p, dec_in):
        backbone = nnx.merge(t5_graphdef, t5_state)
        enc = backbone.encode(p)
        return backbone.decode(dec_in, enc, jnp.ones(p.shape, bool))[0, -1]

    for i in range(2):
        p = prompts[i][prompts[i] != 0][None]
        resp = responses[i][responses[i] != 0]
        dec_in = jnp.asarray(np.concatenate([[0], resp])[None], jnp.int32)
        h = last_decoder_state(t5_state, jnp.asarray(p), dec_in)
        np.testing.assert_allclose(r[i], float(np.asarray(h) @ w + 0.5), atol=2e-5, rtol=1e-5)
    # changing the response's last token changes the reward; changing a pad does not matter
    changed = responses.copy()
    changed[0, 1] = 40
    r3 = np.asarray(heads.score(graphdef, state, jnp.asarray(prompts), jnp.asarray(changed)))
    assert abs(r3[0] - r[0]) > 1e-6 and r3[1] == pytest.approx(r[1], abs=1e-6)


def test_score_with_repeated_prompts_is_per_row():
    graphdef, state = nnx.split(_reward_model(seed=4))
    rng = np.random.default_rng(5)
    prompts = _prompts(rng, 2, 5, MINI.vocab_size)
    responses = rng.integers(2, MINI.vocab_size, (6, 4)).astype(np.int32)
    batched = heads.score(graphdef, state, jnp.asarray(np.repeat(prompts, 3, axis=0)),
                          jnp.asarray(responses))
    for i in range(6):
        single = heads.score(graphdef, state, jnp.asarray(prompts[i // 3][None]),
                             jnp.asarray(responses[i][None]))
        assert float(batched[i]) == pytest.approx(float(single[0]), abs=2e-5)


# ----------------------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axes, with_sampling",
    [({"fsdp": 4, "tensor": 2}, True), ({"data": 2, "tensor": 4}, False)],
    ids=["fsdp4_tensor2", "data2_tensor4"],
)
@pytest.mark.slow
def test_sharded_forward_score_and_greedy_sampling_match_single_device(axes, with_sampling):
    assert len(jax.devices()) == 8  # tests/conftest.py simulates 8 CPU devices
    rm = _reward_model(seed=6)
    model = rm.backbone
    rng = np.random.default_rng(6)
    prompts = jnp.asarray(_prompts(rng, 4, 6, MINI.vocab_size))
    responses = jnp.asarray(rng.integers(2, MINI.vocab_size, (4, 5)), jnp.int32)
    dec = t5.shift_right(responses)
    ref_logits = forward(model, prompts, dec)
    ref_scores = heads.score(*nnx.split(rm), prompts, responses)

    mesh = mesh_lib.make_mesh(axes)
    graphdef, state = partitioning.shard_model(rm, mesh)
    assert any(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(state))
    p, r, d = partitioning.shard_batch((prompts, responses, dec), mesh)
    scores = heads.score(graphdef, state, p, r)
    t5_graphdef, t5_state = partitioning.shard_model(model, mesh)
    logits = _forward(t5_graphdef, t5_state, p, d)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(ref_scores), atol=2e-5, rtol=1e-5)
    if with_sampling:  # the KV cache (self- and cross-attention) under sharding
        ref_sample = sampling.sample(*nnx.split(model), prompts, jax.random.key(0),
                                     max_new_tokens=4, temperature=0.0)
        sample = sampling.sample(t5_graphdef, t5_state, p, jax.random.key(0), max_new_tokens=4,
                                 temperature=0.0)
        np.testing.assert_array_equal(np.asarray(sample.tokens), np.asarray(ref_sample.tokens))


# ----------------------------------------------------------------------------------------------
# Dropout, parameters, configs
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dropout_only_with_a_key():
    config = t5.T5Config.from_dict(dict(t5_1_1.get_config("tiny").to_dict(), dropout_rate=0.3))
    model = _model(config)
    no_drop = _model(t5.T5Config.from_dict(t5_1_1.get_config("tiny")))
    enc = jnp.asarray([[0, 4, 5, 6], [7, 8, 9, 10]], jnp.int32)
    dec = jnp.asarray([[0, 3, 4], [0, 5, 6]], jnp.int32)
    graphdef, state = nnx.split(model)

    @jax.jit
    def train_forward(state, key):
        return nnx.merge(graphdef, state)(enc, dec, dropout_rng=key)

    eval_out = forward(model, enc, dec)
    np.testing.assert_allclose(np.asarray(eval_out), np.asarray(forward(no_drop, enc, dec)),
                               atol=1e-6)
    a = train_forward(state, jax.random.key(0))
    b = train_forward(state, jax.random.key(0))
    c = train_forward(state, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isfinite(np.asarray(a)).all()
    assert not np.allclose(np.asarray(a), np.asarray(eval_out))
    assert not np.allclose(np.asarray(a), np.asarray(c))

    grads = jax.jit(jax.grad(lambda s: jnp.mean(train_forward(s, jax.random.key(2)) ** 2)))(state)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_attention_dropout_against_numpy():
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 3, 2, 4)).astype(np.float32) for _ in range(3))
    bias = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    mask = np.array([[True, True, False]] * 3)[None].repeat(2, 0)
    key = jax.random.key(3)
    got = t5.attention_with_dropout(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                    jnp.asarray(mask), jnp.asarray(bias), 0.4, (key, 7))
    logits = np.einsum("blhd,bshd->bhls", q, k) + bias
    logits = np.where(mask[:, None], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    keep = np.asarray(t5.dropout_keep_mask(key, 7, probs.shape, 0.4))
    expected = np.einsum("bhls,bshd->blhd", np.where(keep, probs / 0.6, 0.0), v)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=1e-5)
    no_drop = t5.attention_with_dropout(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                        jnp.asarray(mask), jnp.asarray(bias), 0.4, None)
    np.testing.assert_allclose(np.asarray(no_drop), np.einsum("bhls,bshd->blhd", probs, v),
                               atol=1e-5, rtol=1e-5)


def test_dropout_masks_have_the_rate_and_are_independent_across_sites_and_keys():
    shape, rate = (512, 512), 0.3
    masks = [np.asarray(t5.dropout_keep_mask(jax.random.key(k), site, shape, rate)).ravel()
             for k, site in [(0, 1), (0, 2), (0, 65), (1, 1)]]
    for m in masks:
        assert abs(m.mean() - (1 - rate)) < 0.005
    independent = (1 - rate) ** 2 + rate**2  # agreement rate of two independent masks
    for other in masks[1:]:
        for shift in range(0, 9):  # no stream is a shifted copy of another
            agree = np.mean(masks[0][: masks[0].size - shift] == other[shift:])
            assert abs(agree - independent) < 0.01
    again = np.asarray(t5.dropout_keep_mask(jax.random.key(0), 1, shape, rate)).ravel()
    np.testing.assert_array_equal(again, masks[0])


def test_every_parameter_has_logical_axes():
    for config in (MINI, TINY_TIED, t5.T5Config.from_dict(
            dict(t5_1_1.get_config("tiny").to_dict(), feed_forward_proj="relu"))):
        model = nnx.eval_shape(lambda: _t5_reward_model(config))
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            axes = var.get_metadata().get("out_sharding")
            assert axes is not None, path
            assert len(axes) == len(var.get_value().shape), path
            assert all(a is None or a in layers.LOGICAL_AXIS_NAMES for a in axes), path


@pytest.mark.parametrize(
    "size, millions",
    # published parameter counts of google/t5-v1_1-{small,base,xxl} (77M, 248M, 11.1B)
    [("small", 77.0), ("base", 247.6), ("xxl", 11135.3)],
)
def test_presets_have_published_parameter_counts(size, millions):
    config = t5.T5Config.from_dict(t5_1_1.get_config(size))
    assert config.vocab_size == 32128 and config.d_kv == 64 and config.is_gated
    model = nnx.eval_shape(lambda: t5.T5(config, rngs=nnx.Rngs(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model)))
    assert count / 1e6 == pytest.approx(millions, abs=0.1)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="T5Config.d_model"):
        t5.T5Config(d_model=0)
    with pytest.raises(ValueError, match="relative_attention_max_distance"):
        t5.T5Config(relative_attention_num_buckets=32, relative_attention_max_distance=8)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        t5.T5Config(feed_forward_proj="gated-tanh")
    with pytest.raises(ValueError, match="unknown T5Config fields"):
        t5.T5Config.from_dict({"d_model": 8, "hidden_size": 8})
    with pytest.raises(ValueError, match="unknown size"):
        t5_1_1.get_config("huge")
    assert t5.T5Config(feed_forward_proj="gated-gelu").activation == "gelu_new"
    assert t5.T5Config(num_layers=3).num_decoder_layers == 3
