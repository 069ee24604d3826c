"""On-device reference estimation against numpy quantiles of independently drawn and scored
samples; the per-prompt cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsc.align import references, utility
from lsc.models import heads, sampling

import align_fixtures as fx


@pytest.fixture(scope="module")
def models():
    pi0 = fx.policy(0)
    rms = [fx.reward_model(10), fx.reward_model(20)]
    return nnx.split(pi0), [nnx.split(m) for m in rms]


def test_quantile_reference_equals_numpy_quantile(models):
    (pg, ps), rms = models
    spec = utility.UtilitySpec(
        "lsc_sum", ("helpful", "harmless"),
        (utility.ReferenceSpec("quantile", quantile=0.85, num_samples=7),
         utility.ReferenceSpec("quantile", quantile=0.5, num_samples=4)))
    prompts = fx.prompts(5)
    key = jax.random.key(3)
    est = references.ReferenceEstimator(spec, pg, [g for g, _ in rms], max_new_tokens=fx.R)
    out = est(ps, [s for _, s in rms], prompts, key)
    # Independent: the sampler on the same key, the reward models' own score function, numpy.
    smp = sampling.sample(pg, ps, jnp.asarray(prompts), key, max_new_tokens=fx.R, num_samples=7)
    rows = np.repeat(prompts, 7, axis=0)
    flat = np.asarray(smp.tokens).reshape(5 * 7, fx.R)
    for i, (q, n) in enumerate([(0.85, 7), (0.5, 4)]):
        scores = np.asarray(heads.score(rms[i][0], rms[i][1], rows, flat)).reshape(5, 7)
        np.testing.assert_allclose(np.asarray(out.r_ref[:, i]),
                                   np.quantile(scores[:, :n], q, axis=-1), rtol=1e-5, atol=1e-5)
    assert out.sample_rewards.shape == (5, 7, 2)
    assert est.traces == 1
    est(ps, [s for _, s in rms], fx.prompts(5, seed=1), jax.random.key(4))
    assert est.traces == 1  # no recompilation for new prompts of the same shape


def test_fixed_response_predictor_and_zero(models):
    (pg, ps), rms = models
    spec = utility.UtilitySpec(
        "sum", ("a", "b", "c"),
        (utility.ReferenceSpec("fixed_response", response="x"),
         utility.ReferenceSpec("predictor"), utility.ReferenceSpec("none")))
    fixed = np.zeros((3, fx.R), np.int32)
    fixed[0, :3] = [7, 8, 1]
    prompts = fx.prompts(4)
    rm3 = rms + [rms[0]]
    fn = lambda p: jnp.sum(p, axis=1).astype(jnp.float32) / 10.0  # noqa: E731
    est = references.ReferenceEstimator(spec, None, [g for g, _ in rm3], max_new_tokens=fx.R,
                                       fixed_tokens=fixed, predictor_fns=(None, fn, None))
    out = est(None, [s for _, s in rm3], prompts, jax.random.key(0))
    want0 = heads.score(rms[0][0], rms[0][1], prompts, np.repeat(fixed[:1], 4, axis=0))
    np.testing.assert_allclose(np.asarray(out.r_ref[:, 0]), np.asarray(want0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.r_ref[:, 1]), prompts.sum(1) / 10.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.r_ref[:, 2]), 0.0)
    assert out.sample_tokens.shape[1] == 0  # no quantile property: no base-policy samples


def test_cache_reads_table_and_skips_estimation():
    calls = []

    def estimate(prompts, key):
        calls.append(1)  # traced once per jit trace of the compute branch
        return jnp.broadcast_to(jax.random.normal(key, (prompts.shape[0], 1)),
                                (prompts.shape[0], 2))

    f = jax.jit(lambda t, fl, s, p, k: references.cached_reference(estimate, t, fl, s, p, k))
    table = jnp.zeros((6, 2))
    filled = jnp.zeros((6,), bool)
    p = jnp.zeros((3, 4), jnp.int32)
    slots = jnp.array([0, 2, 4], jnp.int32)
    r1, table, filled, new = f(table, filled, slots, p, jax.random.key(1))
    assert int(new) == 3
    np.testing.assert_array_equal(np.asarray(filled), [1, 0, 1, 0, 1, 0])
    # Same prompts, another key: the cached values come back unchanged.
    r2, table2, filled2, new2 = f(table, filled, slots, p, jax.random.key(2))
    assert int(new2) == 0
    np.testing.assert_array_equal(np.asarray(r2), np.asarray(r1))
    # A mixed batch: slot 2 cached, slots 1 and 3 new.
    r3, _, filled3, new3 = f(table2, filled2, jnp.array([2, 1, 3]), p, jax.random.key(5))
    assert int(new3) == 2 and bool(jnp.all(filled3[:5]))
    np.testing.assert_array_equal(np.asarray(r3[0]), np.asarray(r1[1]))


def test_prompt_slots():
    slots = references.PromptSlots(np.array([50, 7, 1234]))
    np.testing.assert_array_equal(slots(np.array([1234, 50, 7, 7])), [2, 0, 1, 1])
    with pytest.raises(KeyError):
        slots(np.array([8]))
    with pytest.raises(ValueError, match="distinct"):
        references.PromptSlots(np.array([1, 1]))


def _harmless_fixed(response):
    return utility.UtilitySpec(
        "lsc_sum", ("harmless", "helpful"),
        (utility.ReferenceSpec("fixed_response", response=response),
         utility.ReferenceSpec("quantile")))


def test_fixed_response_must_be_in_the_world_tokenizer_vocabulary(tmp_path):
    from configs import common
    from lsc.data import world, world_data
    from lsc.data import tokenizer as tokenizer_lib

    tok = tokenizer_lib.load_tokenizer(world_data.write_tokenizer(str(tmp_path)))
    assert tok.unk_id == 2
    # The hh-rlhf refusal: case-sensitive word-level pieces the world never uses -> <unk>.
    assert 2 in tok.encode(common.HH_REFUSAL)
    with pytest.raises(ValueError) as e:
        references.fixed_response_tokens(_harmless_fixed(common.HH_REFUSAL), tok, 12)
    message = str(e.value)
    assert message.startswith("config.rewards.properties.harmless.reference.response: ")
    assert "unknown token" in message and "<unk> id 2" in message and tok.path in message
    assert repr(world.REFUSAL) in message  # what to use instead
    with pytest.raises(ValueError, match=r"^config\.rlhf\.runs\.hh_lsc_sum\.rewards\.properties"
                                         r"\.harmless\.reference\.response: "):
        references.fixed_response_tokens(_harmless_fixed(common.HH_REFUSAL), tok, 12,
                                        field="config.rlhf.runs.hh_lsc_sum.rewards")

    # The world's refusal is accepted: the tokenizer's own encoding, EOS, then padding.
    out = references.fixed_response_tokens(_harmless_fixed(world.REFUSAL), tok, 12)
    ids = tok.encode(world.REFUSAL)
    assert tok.unk_id not in ids and len(ids) + 1 <= 12
    want = np.full((2, 12), tok.pad_id, np.int32)
    want[0, :len(ids) + 1] = ids + [tok.eos_id]
    np.testing.assert_array_equal(out, want)
    assert tok.decode(out[0]) == world.REFUSAL


def test_fixed_response_unknown_tokens_under_a_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from lsc.data import tokenizer as tokenizer_lib

    vocab = {"<pad>": 0, "</s>": 1, "[UNK]": 2, "no": 3, "thanks": 4}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = str(tmp_path / "tokenizer.json")
    hf.save(path)
    tok = tokenizer_lib.load_tokenizer(path, add_bos=False)
    assert tok.unk_id == 2
    with pytest.raises(ValueError, match=r"harmless\.reference\.response: 'no sorry thanks' has 1 "
                                         r"unknown token \(<unk> id 2: 'sorry'\)"):
        references.fixed_response_tokens(_harmless_fixed("no sorry thanks"), tok, 5)
    out = references.fixed_response_tokens(_harmless_fixed("no thanks"), tok, 5)
    np.testing.assert_array_equal(out[0], [3, 4, 1, 0, 0])
