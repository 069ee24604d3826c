"""KV-cache sampler: log-probs against a full forward pass, EOS, keys, filtering, compilations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as presets
from lsc.models import decoder, sampling
from lsc.models.decoder import DecoderConfig, DecoderLM

PROMPTS = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]], np.int32)
B, P = PROMPTS.shape
K, R = 3, 6


@pytest.fixture(scope="module")
def split():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    model = DecoderLM(cfg, rngs=nnx.Rngs(0))
    return model, *nnx.split(model)


def run(split, key=0, **kw):
    _, g, s = split
    kw.setdefault("max_new_tokens", R)
    kw.setdefault("num_samples", K)
    return sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(key), **kw)


def full_logits(model, out):
    """float64 logits [B*k, R, V] of a full forward pass over [prompt, response]."""
    prompts = np.repeat(PROMPTS, out.tokens.shape[1], axis=0)
    resp = np.asarray(out.tokens).reshape(prompts.shape[0], -1)
    rmask = np.asarray(out.mask).reshape(prompts.shape[0], -1)
    tokens = np.concatenate([prompts, resp], 1)
    mask = np.concatenate([prompts != 0, rmask], 1)
    logits = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)), np.float64)
    return logits[:, P - 1:-1], resp, rmask


def log_softmax(x):
    m = np.max(x, -1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


@pytest.mark.slow
def test_shapes_and_logprobs_equal_full_forward(split):
    out = run(split, allow_pad=True)
    assert out.tokens.shape == (B, K, R) and out.tokens.dtype == jnp.int32
    assert out.logprobs.shape == (B, K, R) and out.logprobs.dtype == jnp.float32
    assert out.mask.shape == (B, K, R) and out.mask.dtype == jnp.bool_
    logits, resp, rmask = full_logits(split[0], out)
    want = np.take_along_axis(log_softmax(logits), resp[..., None], -1)[..., 0]
    got = np.asarray(out.logprobs).reshape(want.shape)
    np.testing.assert_allclose(got[rmask], want[rmask], atol=2e-5)
    assert (got[~rmask] == 0).all()


def test_pad_is_never_sampled_by_default(split):
    out = run(split, key=3)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    assert not (tokens[mask] == 0).any()
    logits, resp, rmask = full_logits(split[0], out)
    logits[..., 0] = -np.inf
    want = np.take_along_axis(log_softmax(logits), resp[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logprobs).reshape(want.shape)[rmask], want[rmask],
                               atol=2e-5)


def test_ids_past_the_vocab_limit_are_never_sampled(split):
    model, g, s = split
    limit = 9  # the tiny preset's vocabulary is much larger
    assert model.config.vocab_size > limit
    out = run(split, key=4, vocab_limit=limit, allow_pad=True)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    assert (tokens[mask] < limit).all()
    # Log-probs under the distribution renormalised over the ids below the limit.
    logits, resp, rmask = full_logits(model, out)
    logits[..., limit:] = -np.inf
    want = np.take_along_axis(log_softmax(logits), resp[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logprobs).reshape(want.shape)[rmask], want[rmask],
                               atol=2e-5)
    # Without a limit the same key does draw ids past it (so the check above is not vacuous).
    free = np.asarray(run(split, key=4, allow_pad=True).tokens)
    assert (free >= limit).any()
    # The no-cache reference sampler applies the same limit.
    ref = sampling.sample_without_cache(g, s, jnp.asarray(PROMPTS), jax.random.key(4),
                                        max_new_tokens=R, num_samples=K, vocab_limit=limit,
                                        allow_pad=True)
    np.testing.assert_array_equal(np.asarray(ref.tokens), tokens)


def test_logprobs_are_teacher_forced_renormalised_over_drawable_ids(split):
    """Temperature 1, pad banned and a vocabulary limit: the sampler's log-probs are the model's
    renormalised over the ids it may draw, i.e. a teacher-forced pass's log-probs minus the log of
    the drawable mass."""
    model = split[0]
    limit = 20
    out = run(split, key=6, vocab_limit=limit)
    logits, resp, rmask = full_logits(model, out)
    logits = jnp.asarray(logits, jnp.float32)
    ids = jnp.arange(logits.shape[-1])
    removed = (ids == model.pad_id) | (ids >= limit)
    take = lambda logp: np.asarray(jnp.take_along_axis(logp, resp[..., None], -1)[..., 0])  # noqa
    want = take(jax.nn.log_softmax(jnp.where(removed, -jnp.inf, logits), axis=-1))
    got = np.asarray(out.logprobs).reshape(want.shape)
    assert rmask.any()
    np.testing.assert_allclose(got[rmask], want[rmask], atol=2e-5)
    prompts = jnp.asarray(np.repeat(PROMPTS, K, axis=0))
    teacher = np.asarray(decoder.response_log_probs(model, prompts, jnp.asarray(resp)))
    drawable = np.log(np.asarray(jnp.sum(jnp.where(removed, 0.0, jax.nn.softmax(logits)), -1)))
    assert (drawable[rmask] < -0.01).all()  # the removed ids carry real mass here
    np.testing.assert_allclose((teacher - got)[rmask], drawable[rmask], atol=2e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_model_logprobs_are_the_teacher_forced_pass(split, temperature):
    """``model_logprobs`` are the model's own log-probs over its whole vocabulary (no
    temperature, no banned ids, no vocabulary limit): a teacher-forced pass on the drawn tokens,
    0 after EOS."""
    model = split[0]
    first = run(split, key=7, vocab_limit=20, temperature=temperature)
    eos = int(np.asarray(first.tokens)[0, 0, 2])  # a row that stops early, padded after
    out = run(split, key=7, vocab_limit=20, temperature=temperature, eos_id=eos)
    _, resp, rmask = full_logits(model, out)
    prompts = jnp.asarray(np.repeat(PROMPTS, K, axis=0))
    teacher = np.asarray(decoder.response_log_probs(model, prompts, jnp.asarray(resp)))
    got = np.asarray(out.model_logprobs).reshape(teacher.shape)
    assert rmask.any() and not rmask.all()
    np.testing.assert_allclose(got[rmask], teacher[rmask], atol=2e-5)
    assert (got[~rmask] == 0).all()
    if temperature == 1.0:  # the drawn distribution excludes pad and ids >= 20
        assert (np.asarray(out.logprobs).reshape(got.shape)[rmask] > got[rmask] + 1e-3).all()


def test_model_sample_vocab_size_is_the_default_limit():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    model = DecoderLM(cfg, rngs=nnx.Rngs(0))
    model.sample_vocab_size = 9
    g, s = nnx.split(model)
    prompts = jnp.asarray(PROMPTS)
    out = sampling.sample(g, s, prompts, jax.random.key(4), max_new_tokens=R, num_samples=K,
                          allow_pad=True)
    explicit = sampling.sample(g, s, prompts, jax.random.key(4), max_new_tokens=R, num_samples=K,
                               allow_pad=True, vocab_limit=9)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(explicit.tokens))
    assert (np.asarray(out.tokens) < 9).all()
    # An explicit argument overrides the model's attribute.
    wide = sampling.sample(g, s, prompts, jax.random.key(4), max_new_tokens=R, num_samples=K,
                           allow_pad=True, vocab_limit=cfg.vocab_size)
    assert (np.asarray(wide.tokens) >= 9).any()


def test_vocab_limit_that_excludes_eos_is_refused(split):
    with pytest.raises(ValueError, match="EOS id 1 is outside"):
        run(split, vocab_limit=1)
    with pytest.raises(ValueError, match="vocab_limit must be >= 1"):
        run(split, vocab_limit=0)


def test_temperature_and_top_k(split):
    out = run(split, key=1, temperature=0.7, top_k=5, allow_pad=True)
    logits, resp, rmask = full_logits(split[0], out)
    scaled = logits / 0.7
    kth = np.sort(scaled, -1)[..., -5][..., None]
    filtered = np.where(scaled >= kth, scaled, -np.inf)
    assert np.isfinite(np.take_along_axis(filtered, resp[..., None], -1)[..., 0][rmask]).all()
    want = np.take_along_axis(log_softmax(filtered), resp[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logprobs).reshape(want.shape)[rmask], want[rmask],
                               atol=2e-5)


def _nucleus_numpy(logits, top_p):
    order = np.argsort(-logits, kind="stable")
    p = np.exp(log_softmax(logits[order]))
    before = np.cumsum(p) - p
    keep = np.zeros(logits.shape, bool)
    keep[order[before < top_p]] = True
    return keep


def test_filter_logits_top_p_matches_numpy():
    rs = np.random.RandomState(0)
    logits = rs.randn(6, 40).astype(np.float32) * 2
    for top_p in (0.05, 0.5, 0.9):
        got = np.asarray(sampling.filter_logits(jnp.asarray(logits), 1.0, 0, top_p))
        for row, g in zip(logits, got):
            np.testing.assert_array_equal(np.isfinite(g), _nucleus_numpy(row, top_p))


def test_top_p_samples_stay_in_nucleus(split):
    out = run(split, key=2, top_p=0.6, allow_pad=True)
    logits, resp, rmask = full_logits(split[0], out)
    for n in range(resp.shape[0]):
        for t in range(R):
            if rmask[n, t]:
                assert _nucleus_numpy(logits[n, t], 0.6)[resp[n, t]]


def test_eos_stops_each_row(split):
    first = run(split, key=4)
    eos = int(np.asarray(first.tokens)[0, 0, 2])
    out = run(split, key=4, eos_id=eos)
    tokens, lp, mask = (np.asarray(x) for x in (out.tokens, out.logprobs, out.mask))
    np.testing.assert_array_equal(tokens[0, 0, :3], np.asarray(first.tokens)[0, 0, :3])
    for row_t, row_m, row_lp in zip(tokens.reshape(-1, R), mask.reshape(-1, R), lp.reshape(-1, R)):
        hits = np.flatnonzero(row_t == eos)
        end = hits[0] if hits.size else R - 1
        assert row_m.tolist() == [t <= end for t in range(R)]
        assert (row_t[end + 1:] == 0).all() and (row_lp[end + 1:] == 0).all()
    assert not mask[0, 0, 3:].any()  # the row that emitted `eos` at step <= 2 stopped there


def test_same_key_same_samples_and_k_samples_differ(split):
    a, b, c = run(split, key=7), run(split, key=7), run(split, key=8)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.logprobs), np.asarray(b.logprobs))
    assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()
    for row in np.asarray(a.tokens):  # the k samples of one prompt are not copies
        assert len({tuple(s) for s in row}) > 1


def test_greedy_k_copies_identical(split):
    out = run(split, temperature=0.0)
    t = np.asarray(out.tokens)
    assert (t == t[:, :1]).all()


def test_cache_and_no_cache_samplers_agree(split):
    _, g, s = split
    a = run(split, key=5)
    b = sampling.sample_without_cache(g, s, jnp.asarray(PROMPTS), jax.random.key(5),
                                      max_new_tokens=R, num_samples=K)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=2e-5)


def test_compiles_once_per_shape(split):
    run(split, key=0)
    before = sampling.compilation_counts()
    run(split, key=11)
    run(split, key=12, temperature=0.5, top_p=0.9, eos_id=7)
    run(split, key=13, temperature=0.0, allow_pad=True)
    assert sampling.compilation_counts() == before
    run(split, key=0, max_new_tokens=R + 1)  # a new response length compiles once more
    after = sampling.compilation_counts()
    assert after == {k: v + 1 for k, v in before.items()}
    run(split, key=1, max_new_tokens=R + 1)
    assert sampling.compilation_counts() == after


def test_argument_validation(split):
    with pytest.raises(ValueError, match="top_p"):
        run(split, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        run(split, max_new_tokens=0)
