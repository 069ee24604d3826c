"""Sharded forward / score / sample equal single-device results on 8 simulated CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as presets
from lsc.models import heads, sampling
from lsc.models.decoder import DecoderConfig, DecoderLM, forward_jit
from lsc.parallel import mesh as meshlib
from lsc.parallel import partitioning as pt


MESHES = [{"data": 8}, {"fsdp": 4, "tensor": 2}, {"data": 2, "tensor": 4}]
PROMPTS = np.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 9, 9, 2, 4], [0, 0, 0, 8, 1]] * 2,
                   np.int32)
RESPONSES = np.array([[8, 9, 1, 0], [10, 1, 0, 0], [3, 3, 3, 3], [5, 0, 0, 0]] * 2, np.int32)


def create_lm():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny"))
    return DecoderLM(cfg, rngs=nnx.Rngs(0))


def create_rm():
    return heads.RewardModel(create_lm(), rngs=nnx.Rngs(1), head_init=nnx.initializers.normal(1.0))


@pytest.fixture(scope="module")
def reference():
    g, s = nnx.split(create_lm())
    rg, rs = nnx.split(create_rm())
    return dict(
        logits=np.asarray(forward_jit(g, s, jnp.asarray(PROMPTS))),
        scores=np.asarray(heads.score(rg, rs, jnp.asarray(PROMPTS), jnp.asarray(RESPONSES))),
        sample=sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(0), max_new_tokens=5,
                               num_samples=2),
    )


@pytest.mark.parametrize("mesh_config", MESHES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.slow
def test_sharded_matches_single_device(mesh_config, reference):
    mesh = meshlib.make_mesh(mesh_config)
    g, s = pt.sharded_init(create_lm, mesh)
    # Parameters really are distributed as the rules say.
    specs = {k: v.get_value().sharding.spec for k, v in nnx.to_flat_state(s)}
    q_spec = specs[("layers", 0, "attn", "q", "kernel")]
    if mesh_config.get("tensor", 1) > 1:
        assert q_spec[1] == "tensor"
    if mesh_config.get("fsdp", 1) > 1:
        assert q_spec[0] == "fsdp"
    prompts = pt.shard_batch(jnp.asarray(PROMPTS), mesh)
    logits = forward_jit(g, s, prompts)
    np.testing.assert_allclose(np.asarray(logits), reference["logits"], rtol=1e-5, atol=1e-5)

    rg, rs = pt.sharded_init(create_rm, mesh)
    scores = heads.score(rg, rs, prompts, pt.shard_batch(jnp.asarray(RESPONSES), mesh))
    np.testing.assert_allclose(np.asarray(scores), reference["scores"], rtol=1e-5, atol=1e-5)

    ref = reference["sample"]
    # Placement from the inputs only, and (one mesh, to save compilations) the cache placed on
    # the mesh by the sampler.
    placements = [{}, {"mesh": mesh}] if mesh_config == MESHES[1] else [{}]
    for placement in placements:
        out = sampling.sample(g, s, prompts, jax.random.key(0), max_new_tokens=5, num_samples=2,
                              **placement)
        np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
        np.testing.assert_array_equal(np.asarray(out.mask), np.asarray(ref.mask))
        np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)


def test_cache_shardings():
    mesh = meshlib.make_mesh({"fsdp": 4, "tensor": 2})
    cache = create_lm().init_cache(8, 6, jnp.float32)
    sh = pt.cache_shardings(cache, mesh)
    P = jax.sharding.PartitionSpec
    assert sh["layers"][0]["k"].spec == P("fsdp", None, "tensor", None)  # 2 kv heads
    assert sh["mask"].spec == P("fsdp", None)
    assert sh["index"].spec == P()


def test_shard_model_places_existing_params():
    mesh = meshlib.make_mesh({"fsdp": 4, "tensor": 2})
    model = create_lm()
    g, s = pt.shard_model(model, mesh)
    emb = s["embed"]["embedding"].get_value()
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(model.embed.embedding[...]))
