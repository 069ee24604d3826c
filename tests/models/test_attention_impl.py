"""The choice of attention implementation (lsc.models.layers.attention_impl and its callers) and
the argument mapping of the cuDNN path, checked on CPU through jax's XLA reference of the same
call (``jax.nn.dot_product_attention(implementation='xla')``)."""

from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as decoder_presets
from configs.models import t5_1_1
from lsc import config as config_lib
from lsc.models import layers, t5
from lsc.models.decoder import DecoderConfig, DecoderLM

GPU = dict(platform="cuda", dtype="bfloat16", head_dim=64)


# -- selection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["cpu", "cuda", "rocm", "tpu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_xla_requested_is_xla_everywhere(platform, dtype):
    assert layers.attention_impl("xla", platform=platform, dtype=dtype, head_dim=12,
                                 softcap=True, dropout=True) == ("xla", None)


@pytest.mark.parametrize("requested", ["auto", "cudnn"])
@pytest.mark.parametrize("overrides", [
    {}, {"dtype": "float16"}, {"head_dim": 256}, {"head_dim": 8},
    {"head_dim": 128, "max_head_dim": 128},
])
def test_cudnn_where_it_can_run(requested, overrides):
    assert layers.attention_impl(requested, **{**GPU, **overrides}) == ("cudnn", None)


BLOCKERS = [
    ({"platform": "cpu"}, "needs an NVIDIA GPU, the platform is cpu"),
    ({"platform": "tpu"}, "needs an NVIDIA GPU, the platform is tpu"),
    ({"platform": "rocm"}, "needs an NVIDIA GPU, the platform is rocm"),
    ({"dtype": "float32"}, "the compute dtype is float32"),
    ({"dtype": jnp.float32}, "the compute dtype is float32"),
    ({"head_dim": 12}, "multiple of 8 and at most 256, got 12"),
    ({"head_dim": 264}, "multiple of 8 and at most 256, got 264"),
    ({"head_dim": 256, "max_head_dim": 128}, "at most 128, got 256"),
    ({"softcap": True}, "cannot soft-cap"),
    ({"dropout": True}, "no dropout"),
]


@pytest.mark.parametrize("overrides, reason", BLOCKERS)
def test_auto_falls_back_to_xla_naming_the_reason(overrides, reason):
    impl, why = layers.attention_impl("auto", **{**GPU, **overrides})
    assert impl == "xla" and reason in why


@pytest.mark.parametrize("overrides, reason", BLOCKERS)
def test_cudnn_that_cannot_run_is_an_error_naming_the_field(overrides, reason):
    with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn' cannot run") as e:
        layers.attention_impl("cudnn", field="model.attention_impl", **{**GPU, **overrides})
    assert reason in str(e.value)


def test_the_first_blocker_is_named():
    _, why = layers.attention_impl("auto", platform="cpu", dtype="float32", head_dim=12,
                                   softcap=True)
    assert "GPU" in why and "float32" not in why


def test_unknown_implementation_is_an_error():
    with pytest.raises(ValueError, match=r"attention_impl must be one of .*'flash'"):
        layers.attention_impl("flash", **GPU)


def test_select_logs_one_line_only_when_auto_falls_back():
    assert jax.default_backend() == "cpu"
    with mock.patch.object(layers.logging, "info") as info:
        assert layers.select_attention_impl("xla", model="M", field="f", dtype="bfloat16",
                                            head_dim=64) == "xla"
        info.assert_not_called()
        assert layers.select_attention_impl("auto", model="M", field="f", dtype="bfloat16",
                                            head_dim=64) == "xla"
    assert info.call_count == 1
    line = info.call_args[0][0] % info.call_args[0][1:]
    assert line == "M attention: xla (f='auto': cuDNN attention needs an NVIDIA GPU, the platform is cpu)"
    with pytest.raises(ValueError, match="f='cudnn' cannot run: cuDNN attention needs an NVIDIA GPU"):
        layers.select_attention_impl("cudnn", model="M", field="f", dtype="bfloat16", head_dim=64)


# -- models ------------------------------------------------------------------------------------


def _decoder_config(name="tiny_gemma2", **overrides):
    fields = dict(decoder_presets.get_config(name))
    fields.update(overrides)
    return DecoderConfig.from_mapping(fields)


def _t5_config(**overrides):
    fields = dict(t5_1_1.get_config("tiny"))
    fields.update(overrides)
    return t5.T5Config.from_dict(fields)


def _impls(model):
    return {m.implementation if isinstance(m, layers.Attention) else m.attention_impl
            for _, m in nnx.iter_graph(model)
            if isinstance(m, (layers.Attention, t5.T5Attention))}


@pytest.mark.parametrize("build", [
    lambda impl: DecoderLM(_decoder_config(attention_impl=impl), rngs=nnx.Rngs(0)),
    lambda impl: t5.T5(_t5_config(attention_impl=impl), rngs=nnx.Rngs(0)),
])
def test_models_log_one_fallback_line_per_construction(build):
    with mock.patch.object(layers.logging, "info") as info:
        model = build("auto")
    assert info.call_count == 1 and _impls(model) == {"xla"}
    with mock.patch.object(layers.logging, "info") as info:
        model = build("xla")
    assert info.call_count == 0 and _impls(model) == {"xla"}


def test_models_refuse_cudnn_on_cpu_naming_the_field():
    with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn' cannot run"):
        DecoderLM(_decoder_config(attention_impl="cudnn"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"T5Config\.attention_impl='cudnn' cannot run"):
        t5.T5(_t5_config(attention_impl="cudnn"), rngs=nnx.Rngs(0))


def test_config_dataclasses_check_the_name():
    with pytest.raises(ValueError, match="model.attention_impl must be one of"):
        _decoder_config(attention_impl="flash")
    with pytest.raises(ValueError, match="T5Config.attention_impl must be one of"):
        _t5_config(attention_impl="flash")


def test_auto_on_cpu_runs_exactly_the_xla_model():
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 128, (2, 7)), jnp.int32)
    tokens = tokens.at[0, :2].set(0)
    outs = [DecoderLM(_decoder_config(attention_impl=impl), rngs=nnx.Rngs(0))(tokens)
            for impl in ("xla", "auto")]
    np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
    outs = [t5.T5(_t5_config(attention_impl=impl), rngs=nnx.Rngs(0))(tokens, tokens)
            for impl in ("xla", "auto")]
    np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))


def test_presets():
    assert decoder_presets.get_config("llama3_8b").attention_impl == "auto"
    assert decoder_presets.get_config("gemma2_2b").attention_impl == "auto"
    assert decoder_presets.get_config("tiny_gemma2").attention_impl == "xla"
    assert decoder_presets.get_config("small").attention_impl == "xla"
    assert t5_1_1.get_config("base").attention_impl == "auto"
    assert t5_1_1.get_config("tiny").attention_impl == "xla"


# -- config validation -------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["model", "policy.model", "rm_model"])
def test_config_validation_names_the_dotted_field(section):
    # float32 compute rules cuDNN out from the config alone (the device is the model's check).
    arch = dict(t5_1_1.get_config("base"), compute_dtype="float32", attention_impl="cudnn")
    cfg = ml_collections.ConfigDict()
    node = cfg
    for part in section.split("."):
        node[part] = ml_collections.ConfigDict()
        node = node[part]
    node.kind = "t5"
    node.arch = arch
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(cfg)
    assert e.value.errors == [(f"{section}.arch.attention_impl",
                               "'cudnn' cannot run: cuDNN attention takes bfloat16 or float16, the "
                               "compute dtype is float32; use 'auto' (xla where cuDNN cannot run) "
                               "or 'xla'")]
    node.arch.compute_dtype = "bfloat16"
    config_lib.validate(cfg)  # on the CPU the model refuses it when built (test above)
    node.arch.attention_impl = "flash"
    with pytest.raises(config_lib.ConfigError, match=rf"config\.{section}\.arch\.attention_impl"):
        config_lib.validate(cfg)
    node.arch.attention_impl = "auto"
    config_lib.validate(cfg)


# -- the cuDNN call's arguments, run through jax's XLA reference ----------------------------


def _qkv(b, l, s, h, k, d, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(b, l, h, d)), jnp.float32),
            jnp.asarray(rng.normal(size=(b, s, k, d)), jnp.float32),
            jnp.asarray(rng.normal(size=(b, s, k, d)), jnp.float32))


def _padded_causal(b, length, pads):
    real = np.arange(length)[None, :] >= np.asarray(pads)[:, None]  # left padding
    return np.tril(np.ones((length, length), bool))[None] & real[:, None, :]


def _assert_close_where_visible(got, want, mask):
    """Rows (queries) that see at least one key; rows that see none are meaningless."""
    visible = np.broadcast_to(np.asarray(mask).any(-1), got.shape[:2])
    np.testing.assert_allclose(np.asarray(got)[visible], np.asarray(want)[visible],
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("length", [6, 7])
def test_fused_attention_matches_dot_product_attention_causal(heads, kv_heads, length):
    q, k, v = _qkv(3, length, length, heads, kv_heads, 8)
    mask = jnp.asarray(_padded_causal(3, length, [0, 2, 5]))
    want = layers.dot_product_attention(q, k, v, mask, scale=8**-0.5)
    for causal in (False, True):
        got = layers.fused_attention(q, k, v, mask, scale=8**-0.5, causal=causal,
                                     implementation="xla")
        assert got.shape == want.shape and got.dtype == want.dtype
        _assert_close_where_visible(got, want, mask)


@pytest.mark.parametrize("length", [6, 7])
def test_fused_attention_matches_with_a_sliding_window(length):
    window = 3
    q, k, v = _qkv(2, length, length, 4, 2, 8, seed=1)
    mask = _padded_causal(2, length, [0, 1])
    positions = np.maximum(np.cumsum(mask[:, -1], axis=-1) - 1, 0)
    near = positions[:, :, None] - positions[:, None, :] < window
    mask = jnp.asarray(mask & near)
    want = layers.dot_product_attention(q, k, v, mask, scale=0.5)
    got = layers.fused_attention(q, k, v, mask, scale=0.5, causal=True, implementation="xla")
    _assert_close_where_visible(got, want, mask)


def test_a_window_of_w_tokens_is_local_window_size_w_minus_1():
    """Our window (``p - W < q <= p``) on an unpadded row is jax's ``local_window_size=(W-1, 0)``
    with ``is_causal``."""
    window, length = 3, 8
    q, k, v = _qkv(2, length, length, 4, 4, 8, seed=2)
    i = np.arange(length)
    mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
    want = layers.dot_product_attention(q, k, v, jnp.asarray(mask)[None], scale=0.5)
    got = jax.nn.dot_product_attention(q, k, v, scale=0.5, is_causal=True,
                                       local_window_size=(window - 1, 0), implementation="xla")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("l, s", [(5, 5), (1, 9), (4, 6)])
def test_fused_attention_matches_with_t5_bias_and_padding_mask(l, s):
    q, k, v = _qkv(2, l, s, 4, 4, 8, seed=3)
    rng = np.random.default_rng(4)
    bias = jnp.asarray(rng.normal(size=(1, 4, l, s)), jnp.float32)
    mask = jnp.asarray(np.arange(s)[None, None, :] >= np.array([0, 2])[:, None, None])  # [B, 1, S]
    want = layers.dot_product_attention(q, k, v, mask, scale=1.0, bias=bias)
    got = layers.fused_attention(q, k, v, mask, scale=1.0, bias=bias, implementation="xla")
    _assert_close_where_visible(got, want, jnp.broadcast_to(mask, (2, l, s)))
    # The same without a mask (odd lengths get a mask of their padding only).
    want = layers.dot_product_attention(q, k, v, None, scale=1.0, bias=bias)
    got = layers.fused_attention(q, k, v, None, scale=1.0, bias=bias, implementation="xla")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


def test_fused_attention_matches_a_numpy_reference():
    q, k, v = _qkv(2, 5, 5, 4, 2, 8, seed=5)
    mask = _padded_causal(2, 5, [0, 1])
    bias = np.random.default_rng(6).normal(size=(1, 4, 5, 5))
    got = layers.fused_attention(q, k, v, jnp.asarray(mask), scale=0.3,
                                 bias=jnp.asarray(bias, jnp.float32), implementation="xla")
    qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
    kn, vn = np.repeat(kn, 2, axis=2), np.repeat(vn, 2, axis=2)  # head h uses kv head h // 2
    logits = 0.3 * np.einsum("blhd,bshd->bhls", qn, kn) + bias
    with np.errstate(invalid="ignore"):  # rows that see no key are NaN and not compared
        logits = np.where(mask[:, None], logits, -np.inf)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
    want = np.einsum("bhls,bshd->blhd", probs, vn)
    _assert_close_where_visible(got, want, mask)


def test_fused_attention_in_the_attention_module():
    attn = layers.Attention(16, 4, 8, 2, rope_theta=10_000.0, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 5, 16)), jnp.float32)
    mask = jnp.asarray(_padded_causal(2, 5, [0, 2]))
    positions = jnp.asarray(np.maximum(np.cumsum(np.asarray(mask)[:, -1], -1) - 1, 0))
    want, _ = attn(x, mask, positions=positions)
    attn.implementation = "cudnn"
    real = layers.fused_attention
    with mock.patch.object(layers, "fused_attention",
                           lambda *a, **kw: real(*a, **kw, implementation="xla")):
        got, _ = attn(x, mask, positions=positions, causal=True)
    _assert_close_where_visible(got, want, mask)
    with pytest.raises(ValueError, match="cannot soft-cap"):
        layers.Attention(16, 4, 8, logit_softcap=50.0, implementation="cudnn", rngs=nnx.Rngs(0))
