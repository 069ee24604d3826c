"""The decoder options of the imported families (Gemma 2 / 3, Qwen 2 / 3, Mistral) sharded on 8 simulated CPU
devices: forward logits and sampled tokens equal the single-device results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as presets
from lsc.models import sampling
from lsc.models.decoder import DecoderConfig, DecoderLM, forward_jit
from lsc.parallel import mesh as meshlib
from lsc.parallel import partitioning as pt

PROMPTS = np.array([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 9], [0, 9, 9, 2, 4, 4],
                    [0, 0, 0, 8, 1, 3]] * 2, np.int32)


@pytest.mark.slow  # about 30 s each on one CPU core
@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3", "tiny_qwen3", "tiny_qwen2",
                                    "tiny_mistral"])
def test_sharded_matches_single_device(preset):
    cfg = DecoderConfig.from_mapping(presets.get_config(preset))
    create = lambda: DecoderLM(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    g, s = nnx.split(create())
    want_logits = np.asarray(forward_jit(g, s, jnp.asarray(PROMPTS)))
    want = sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(0), max_new_tokens=5,
                           num_samples=2)

    mesh = meshlib.make_mesh({"fsdp": 4, "tensor": 2})
    sg, ss = pt.sharded_init(create, mesh)
    specs = {k: v.get_value().sharding.spec for k, v in nnx.to_flat_state(ss)}
    q_spec = specs[("layers", 0, "attn", "q", "kernel")]
    assert (q_spec[0], q_spec[1]) == ("fsdp", "tensor")
    prompts = pt.shard_batch(jnp.asarray(PROMPTS), mesh)
    np.testing.assert_allclose(np.asarray(forward_jit(sg, ss, prompts)), want_logits,
                               rtol=1e-5, atol=1e-5)
    got = sampling.sample(sg, ss, prompts, jax.random.key(0), max_new_tokens=5, num_samples=2,
                          mesh=mesh)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(want.logprobs), atol=1e-5)
