"""lsc.models.layers against plain-numpy formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsc.models import layers


def test_rmsnorm_matches_numpy():
    x = np.random.RandomState(0).randn(3, 5, 16).astype(np.float32)
    norm = layers.RMSNorm(16, eps=1e-5, rngs=nnx.Rngs(0))
    w = np.random.RandomState(1).randn(16).astype(np.float32)
    norm.scale[...] = jnp.asarray(w)
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)
    assert norm.bias is None  # T5 / Llama style: no bias parameter at all
    assert norm.scale.get_metadata()["out_sharding"] == ("embed",)


def test_rmsnorm_zero_centered_and_bias():
    x = np.random.RandomState(0).randn(2, 8).astype(np.float32)
    norm = layers.RMSNorm(8, zero_centered_scale=True, use_bias=True, rngs=nnx.Rngs(0))
    norm.scale[...] = jnp.full((8,), 0.5)
    norm.bias[...] = jnp.full((8,), 2.0)
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * 1.5 + 2.0
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def test_param_metadata_and_validation():
    lin = layers.Linear(4, 6, axes=("embed", "mlp"), use_bias=True, rngs=nnx.Rngs(0))
    assert lin.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
    assert lin.bias.get_metadata()["out_sharding"] == ("mlp",)
    with pytest.raises(ValueError, match="unknown logical axis"):
        layers.Linear(4, 6, axes=("embed", "hidden"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="do not match"):
        layers.Einsum("BLE,ED->BLD", (4, 6), axes=("embed",), rngs=nnx.Rngs(0))


def test_embedding_lookup_and_attend():
    emb = layers.Embedding(10, 4, rngs=nnx.Rngs(0))
    table = np.asarray(emb.embedding[...])
    ids = np.array([[1, 9, 0]])
    np.testing.assert_array_equal(np.asarray(emb(jnp.asarray(ids))), table[ids])
    x = np.random.RandomState(0).randn(2, 4).astype(np.float32)
    np.testing.assert_allclose(np.asarray(emb.attend(jnp.asarray(x))), x @ table.T, rtol=1e-5,
                               atol=1e-5)


def test_rope_is_complex_rotation():
    rs = np.random.RandomState(0)
    x = rs.randn(2, 5, 3, 8).astype(np.float32)
    pos = rs.randint(0, 50, size=(2, 5))
    out = np.asarray(layers.apply_rope(jnp.asarray(x), jnp.asarray(pos),
                                       layers.rope_inv_freq(8, 10_000.0)))
    freqs = 10_000.0 ** (-np.arange(4) * 2 / 8)
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * pos[..., None, None] * freqs)
    np.testing.assert_allclose(out, np.concatenate([z.real, z.imag], -1), rtol=1e-4, atol=1e-4)
    # Relative property: q(m) . k(n) depends only on m - n.
    q = jnp.asarray(rs.randn(1, 1, 1, 8), jnp.float32)
    k = jnp.asarray(rs.randn(1, 1, 1, 8), jnp.float32)
    inv = layers.rope_inv_freq(8, 10_000.0)
    dot = lambda m, n: float(jnp.sum(layers.apply_rope(q, jnp.array([[m]]), inv)  # noqa: E731
                                     * layers.apply_rope(k, jnp.array([[n]]), inv)))
    assert dot(7, 3) == pytest.approx(dot(14, 10), rel=1e-4, abs=1e-5)


def test_rope_scaling_variants():
    base = np.asarray(layers.rope_inv_freq(16, 500_000.0))
    lin = np.asarray(layers.rope_inv_freq(16, 500_000.0, {"rope_type": "linear", "factor": 4.0}))
    np.testing.assert_allclose(lin, base / 4, rtol=1e-6)
    l3 = np.asarray(layers.rope_inv_freq(16, 500_000.0, {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}))
    wavelen = 2 * math.pi / base
    np.testing.assert_allclose(l3[wavelen < 64 / 4], base[wavelen < 64 / 4], rtol=1e-6)
    np.testing.assert_allclose(l3[wavelen > 64], base[wavelen > 64] / 8, rtol=1e-6)
    with pytest.raises(ValueError, match="unsupported rotary scaling"):
        layers.rope_inv_freq(16, 1e4, {"rope_type": "yarn", "factor": 2.0})


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_gqa_matches_numpy(kv_heads, softcap):
    rs = np.random.RandomState(kv_heads)
    b, l, s, h, d = 2, 3, 5, 4, 8
    q = rs.randn(b, l, h, d).astype(np.float32)
    k = rs.randn(b, s, kv_heads, d).astype(np.float32)
    v = rs.randn(b, s, kv_heads, d).astype(np.float32)
    mask = rs.rand(b, l, s) > 0.3
    mask[:, :, 0] = True
    bias = rs.randn(1, h, l, s).astype(np.float32)
    out = layers.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                       jnp.asarray(mask), scale=0.3, bias=jnp.asarray(bias),
                                       softcap=softcap)
    kr, vr = np.repeat(k, h // kv_heads, axis=2), np.repeat(v, h // kv_heads, axis=2)
    logits = np.einsum("blhd,bshd->bhls", q, kr) * 0.3
    if softcap is not None:
        logits = softcap * np.tanh(logits / softcap)
    logits = logits + bias
    logits = np.where(mask[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhls,bshd->blhd", p, vr)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equation,split", [
    ("BLE,EHD->BLHD", 1), ("BLHD,HDE->BLE", 2), ("BE,EF->BF", 1),
    ("BLHD,DHE->BLE", None), ("BE,FE->BF", None), ("BE,EF->FB", None), ("bhld,bhsd->bhls", None),
    ("...E,EF->...F", None), ("ii,ij->j", None),
])
def test_matmul_split(equation, split):
    assert layers.matmul_split(equation) == split


def test_einsum_module_rejects_a_misfit_input():
    mod = layers.Einsum("BLHD,HDE->BLE", (4, 5, 8), axes=(None,) * 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="does not fit"):
        mod(jnp.ones((2, 3, 5, 4)))  # [B, L, D, H]: the right size, the wrong axes
    with pytest.raises(ValueError, match="does not fit"):
        mod(jnp.ones((3, 4, 5)))  # a leading axis short


@pytest.mark.parametrize("equation,x_shape,kernel_shape", [
    ("BLE,EHD->BLHD", (2, 3, 8), (8, 4, 5)),     # a matmul: one 2-D product
    ("BLHD,HDE->BLE", (2, 3, 4, 5), (4, 5, 8)),  # a matmul over two merged axes
    ("BLHD,DHE->BLE", (2, 3, 4, 5), (5, 4, 8)),  # not one: the einsum itself
])
def test_einsum_module_matches_numpy(equation, x_shape, kernel_shape):
    rs = np.random.RandomState(0)
    x = rs.randn(*x_shape).astype(np.float32)
    mod = layers.Einsum(equation, kernel_shape, axes=(None,) * len(kernel_shape),
                        bias_shape=kernel_shape[-1:], bias_axes=(None,), rngs=nnx.Rngs(0))
    mod.bias[...] = jnp.asarray(rs.randn(kernel_shape[-1]).astype(np.float32))
    ref = np.einsum(equation, x, np.asarray(mod.kernel[...])) + np.asarray(mod.bias[...])
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: mod(v))(jnp.asarray(x))), ref,
                               rtol=1e-5, atol=1e-5)


def test_attention_fully_masked_row_is_finite():
    q = jnp.ones((1, 2, 2, 4))
    k = jnp.ones((1, 3, 1, 4))
    mask = jnp.zeros((1, 2, 3), bool)
    out = layers.dot_product_attention(q, k, k, mask, scale=1.0)
    assert np.isfinite(np.asarray(out)).all()


def test_kv_cache_write():
    entry = layers.init_kv_cache(2, 6, 1, 4)
    k = jnp.ones((2, 2, 1, 4))
    new = layers.write_kv_cache(entry, k, 2 * k, jnp.int32(3))
    ref = np.zeros((2, 6, 1, 4), np.float32)
    ref[:, 3:5] = 1
    np.testing.assert_array_equal(np.asarray(new["k"]), ref)
    np.testing.assert_array_equal(np.asarray(new["v"]), 2 * ref)
    assert float(jnp.sum(entry["k"])) == 0.0  # the input entry is unchanged


def test_gated_mlp_matches_numpy():
    mlp = layers.GatedMLP(8, 16, activation="gelu_tanh", rngs=nnx.Rngs(0))
    x = np.random.RandomState(0).randn(3, 8).astype(np.float32)
    g, u, d = (np.asarray(m.kernel[...]) for m in (mlp.gate, mlp.up, mlp.down))
    a = x @ g
    gelu = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    np.testing.assert_allclose(np.asarray(mlp(jnp.asarray(x))), (gelu * (x @ u)) @ d, rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="unknown activation"):
        layers.GatedMLP(8, 16, activation="swish2", rngs=nnx.Rngs(0))


def test_attention_module_cache_matches_full():
    attn = layers.Attention(16, 4, 4, 2, rope_theta=10_000.0, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.RandomState(0).randn(1, 5, 16), jnp.float32)
    pos = jnp.arange(5)[None]
    full, _ = attn(x, layers.causal_mask(jnp.ones((1, 5), bool)), positions=pos)
    cache = layers.init_kv_cache(1, 5, 2, 4)
    outs = []
    for t in range(5):
        slots = jnp.arange(5)[None, None, :] <= t
        y, cache = attn(x[:, t:t + 1], slots, positions=pos[:, t:t + 1], cache=cache,
                        cache_index=jnp.int32(t))
        outs.append(y)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=1e-5,
                               atol=1e-5)
