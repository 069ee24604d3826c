"""Reading Hugging Face checkpoint directories (lsc.models.hf_io) through the T5 and decoder
imports: layouts, and a clear error for each problem, on tiny checkpoints written here with
numpy and safetensors (no PyTorch needed)."""

import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from lsc.models import hf_decoder, hf_io, hf_t5, layers

# -- tiny checkpoints in the Hugging Face layout ---------------------------------------------------

_D, _H, _K, _F, _V, _NB = 16, 2, 8, 24, 40, 8


def _t5_tensors(gated=True, layers_=1):
    """A Hugging Face T5ForConditionalGeneration state dict (random float32)."""
    inner = _H * _K
    rng = np.random.default_rng(0)
    shapes = {"shared.weight": (_V, _D), "lm_head.weight": (_V, _D),
              "encoder.final_layer_norm.weight": (_D,), "decoder.final_layer_norm.weight": (_D,)}
    ffn = {"wi_0": (_F, _D), "wi_1": (_F, _D), "wo": (_D, _F)} if gated else {
        "wi": (_F, _D), "wo": (_D, _F)}
    attn = {"q": (inner, _D), "k": (inner, _D), "v": (inner, _D), "o": (_D, inner)}
    for stack in ("encoder", "decoder"):
        for i in range(layers_):
            sub = [("SelfAttention", 0)] + ([("EncDecAttention", 1)] if stack == "decoder" else [])
            for name, j in sub:
                for w, s in attn.items():
                    shapes[f"{stack}.block.{i}.layer.{j}.{name}.{w}.weight"] = s
                shapes[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"] = (_D,)
            j = len(sub)
            for w, s in ffn.items():
                shapes[f"{stack}.block.{i}.layer.{j}.DenseReluDense.{w}.weight"] = s
            shapes[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"] = (_D,)
        shapes[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (_NB, _H)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def _t5_config(**overrides):
    cfg = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], vocab_size=_V,
               d_model=_D, d_kv=_K, d_ff=_F, num_layers=1, num_heads=_H,
               relative_attention_num_buckets=_NB, relative_attention_max_distance=16,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
               eos_token_id=1, decoder_start_token_id=0)
    cfg.update(overrides)
    return cfg


# Llama: hidden 16, 2 query heads and 1 key/value head of width 8, MLP 24, vocabulary 40.
_LKV = 1


def _llama_tensors():
    """A Hugging Face LlamaForCausalLM state dict with one layer and an untied head."""
    rng = np.random.default_rng(1)
    p = "model.layers.0."
    shapes = {
        "model.embed_tokens.weight": (_V, _D), "model.norm.weight": (_D,),
        "lm_head.weight": (_V, _D),
        p + "input_layernorm.weight": (_D,), p + "post_attention_layernorm.weight": (_D,),
        p + "self_attn.q_proj.weight": (_H * _K, _D), p + "self_attn.k_proj.weight": (_LKV * _K, _D),
        p + "self_attn.v_proj.weight": (_LKV * _K, _D), p + "self_attn.o_proj.weight": (_D, _H * _K),
        p + "mlp.gate_proj.weight": (_F, _D), p + "mlp.up_proj.weight": (_F, _D),
        p + "mlp.down_proj.weight": (_D, _F),
    }
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def _llama_config(**overrides):
    cfg = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=_V,
               hidden_size=_D, intermediate_size=_F, num_hidden_layers=1, num_attention_heads=_H,
               num_key_value_heads=_LKV, head_dim=_K, rms_norm_eps=1e-5, hidden_act="silu",
               rope_theta=10000.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
               bos_token_id=2)
    cfg.update(overrides)
    return cfg


def _write(path, tensors, config, shards=1):
    """``save_pretrained``-like directory: config.json and ``model.safetensors``, or with
    ``shards > 1`` the tensors split over ``model-0000i-of-0000n.safetensors`` files listed in
    ``model.safetensors.index.json``."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    if shards == 1:
        save_file(tensors, os.path.join(path, "model.safetensors"))
        return str(path)
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, os.path.join(path, fname))
        weight_map.update(dict.fromkeys(part, fname))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return str(path)


# The two import paths: (tensors, config.json, loader returning the model).
PATHS = {
    "t5": (_t5_tensors, _t5_config, hf_t5.load_t5),
    "decoder": (_llama_tensors, _llama_config, lambda path: hf_decoder.load_decoder(path)[0]),
}


def _layout(kind, model):
    """A few parameters of ``model`` with the Hugging Face tensor each must equal after the
    documented layout change (``nn.Linear`` weights ``[out, in]`` transposed, heads split)."""
    if kind == "t5":
        return [
            (model.decoder.layers[0].cross_attn.q.kernel,
             "decoder.block.0.layer.1.EncDecAttention.q.weight", lambda w: w.T.reshape(_D, _H, _K)),
            (model.encoder.layers[0].self_attn.o.kernel,
             "encoder.block.0.layer.0.SelfAttention.o.weight", lambda w: w.T.reshape(_H, _K, _D)),
            (model.lm_head.kernel, "lm_head.weight", lambda w: w.T),
            (model.decoder.layers[0].cross_attn_norm.scale,
             "decoder.block.0.layer.1.layer_norm.weight", lambda w: w),
        ]
    p = "model.layers.0."
    layer = model.layers[0]
    return [
        (model.embed.embedding, "model.embed_tokens.weight", lambda w: w),
        (layer.attn.q.kernel, p + "self_attn.q_proj.weight", lambda w: w.T.reshape(_D, _H, _K)),
        (layer.attn.k.kernel, p + "self_attn.k_proj.weight", lambda w: w.T.reshape(_D, _LKV, _K)),
        (layer.attn.o.kernel, p + "self_attn.o_proj.weight", lambda w: w.T.reshape(_H, _K, _D)),
        (layer.mlp.down.kernel, p + "mlp.down_proj.weight", lambda w: w.T),
        (layer.mlp_norm.scale, p + "post_attention_layernorm.weight", lambda w: w),
        (model.lm_head.kernel, "lm_head.weight", lambda w: w.T),
    ]


# -- valid checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("shards", [1, 3], ids=["single", "sharded"])
def test_checkpoint_loads_with_the_expected_layout(tmp_path, kind, shards):
    make_tensors, make_config, load = PATHS[kind]
    tensors = make_tensors()
    model = load(_write(tmp_path / kind, tensors, make_config(), shards=shards))
    for param, name, to_ours in _layout(kind, model):
        np.testing.assert_array_equal(np.asarray(param[...]), to_ours(tensors[name]))


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_bfloat16_tensors_are_widened_exactly(tmp_path, kind):
    make_tensors, make_config, load = PATHS[kind]
    tensors = {n: t.astype(ml_dtypes.bfloat16) for n, t in make_tensors().items()}
    path = _write(tmp_path / kind, tensors, make_config())
    reader = hf_io.TensorReader(path)
    assert {reader.get(n).dtype for n in reader.names()} == {np.dtype(ml_dtypes.bfloat16)}
    for param, name, to_ours in _layout(kind, load(path)):
        assert param[...].dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(param[...]),
                                      to_ours(tensors[name].astype(np.float32)))


def test_t5_relu_variant_and_tolerated_extras(tmp_path):
    """Embedding copies equal to ``shared.weight`` and the unused cross-attention position bias
    are accepted."""
    relu = _t5_tensors(gated=False)
    relu["encoder.embed_tokens.weight"] = relu["shared.weight"].copy()
    relu["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = np.zeros(
        (_NB, _H), np.float32)
    model = hf_t5.load_t5(_write(tmp_path / "relu", relu, _t5_config(feed_forward_proj="relu")))
    assert not model.config.is_gated and model.config.activation == "relu"


# -- problems with the files, through both import paths ------------------------------------------


def _break(path, case, tensors):
    """Damages checkpoint directory ``path`` (written from ``tensors``) as ``case`` says."""
    cfg_file = os.path.join(path, "config.json")
    if case == "no_config":
        os.remove(cfg_file)
    elif case == "invalid_json":
        with open(cfg_file, "w") as f:
            f.write("{not json")
    elif case == "config_not_object":
        with open(cfg_file, "w") as f:
            json.dump([1, 2], f)
    elif case == "torch_only":
        os.remove(os.path.join(path, "model.safetensors"))
        open(os.path.join(path, "pytorch_model.bin"), "wb").close()
    elif case == "no_weights":
        os.remove(os.path.join(path, "model.safetensors"))
    elif case == "unreadable_file":
        with open(os.path.join(path, "model.safetensors"), "wb") as f:
            f.write(b"\x00\x01 not a safetensors file")
    elif case == "int_tensor":
        name = sorted(n for n in tensors if n.endswith("norm.weight"))[0]
        save_file(dict(tensors, **{name: np.ones(_D, np.int32)}),
                  os.path.join(path, "model.safetensors"))
    elif case == "missing_shard":
        os.remove(os.path.join(path, "model-00002-of-00003.safetensors"))
    elif case == "tensor_in_no_shard":
        index = os.path.join(path, "model.safetensors.index.json")
        with open(index) as f:
            data = json.load(f)
        data["weight_map"]["extra.weight"] = "model-00001-of-00003.safetensors"
        with open(index, "w") as f:
            json.dump(data, f)
    elif case == "index_without_weight_map":
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}}, f)


FILE_CASES = [  # (case, sharded, error pattern: each names the file)
    ("no_config", False, r"config\.json: no config\.json"),
    ("invalid_json", False, r"config\.json: invalid JSON"),
    ("config_not_object", False, r"config\.json: not a JSON object"),
    ("torch_only", False, r"no model\.safetensors or model\.safetensors\.index\.json \(found "
                          r"\['pytorch_model\.bin'\]; only safetensors is supported\)"),
    ("no_weights", False, r"no model\.safetensors or model\.safetensors\.index\.json"),
    ("unreadable_file", False, r"model\.safetensors: not a readable safetensors file"),
    ("int_tensor", False, r"model\.safetensors: tensor '.*norm\.weight' has dtype int32; a float "
                          r"dtype is required"),
    ("missing_shard", True, r"model\.safetensors\.index\.json: lists shard "
                            r"model-00002-of-00003\.safetensors, which does not exist"),
    ("tensor_in_no_shard", True, r"model\.safetensors\.index\.json: tensors listed but not in any "
                                 r"shard: \['extra\.weight'\]"),
    ("index_without_weight_map", True, r"model\.safetensors\.index\.json: not a safetensors index"),
]


@pytest.mark.parametrize("kind", sorted(PATHS))
@pytest.mark.parametrize("case, sharded, match", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_problems_raise_clear_errors(tmp_path, kind, case, sharded, match):
    make_tensors, make_config, load = PATHS[kind]
    tensors = make_tensors()
    path = _write(tmp_path / case, tensors, make_config(), shards=3 if sharded else 1)
    _break(path, case, tensors)
    with pytest.raises(hf_io.CheckpointError, match=match):
        load(path)


# -- tensors that do not fit the config, through both import paths ---------------------------------

TENSOR_CASES = {  # kind: [(case, edit of the tensors, error pattern)]
    "t5": [
        ("missing", lambda t: t.pop("decoder.block.0.layer.2.DenseReluDense.wo.weight"),
         r"missing tensors \['decoder.block.0.layer.2.DenseReluDense.wo.weight'\]"),
        ("extra", lambda t: t.update({"encoder.block.1.layer.0.layer_norm.weight":
                                      np.ones(_D, np.float32)}),
         r"unexpected tensors \['encoder.block.1.layer.0.layer_norm.weight'\]"),
        ("shape", lambda t: t.update({"encoder.block.0.layer.1.DenseReluDense.wi_1.weight":
                                      np.ones((25, _D), np.float32)}),
         r"'encoder.block.0.layer.1.DenseReluDense.wi_1.weight' has shape \(25, 16\)"),
        ("embedding_copy", lambda t: t.update({"decoder.embed_tokens.weight":
                                               t["shared.weight"] + 1.0}),
         "decoder.embed_tokens.weight' differs"),
    ],
    "decoder": [
        ("missing", lambda t: t.pop("model.layers.0.mlp.up_proj.weight"),
         r"missing tensors \['model\.layers\.0\.mlp\.up_proj\.weight'\]"),
        ("extra", lambda t: t.update({"model.layers.1.mlp.up_proj.weight":
                                      np.ones((_F, _D), np.float32)}),
         r"unexpected tensors \['model\.layers\.1\.mlp\.up_proj\.weight'\]"),
        ("shape", lambda t: t.update({"model.layers.0.self_attn.k_proj.weight":
                                      np.ones((2 * _K, _D), np.float32)}),
         r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \(16, 16\), expected "
         r"\(8, 16\)"),
    ],
}


@pytest.mark.parametrize("kind, case, edit, match",
                         [(k, *c) for k, cases in TENSOR_CASES.items() for c in cases],
                         ids=[f"{k}-{c[0]}" for k, cases in TENSOR_CASES.items() for c in cases])
def test_tensors_that_do_not_fit_are_named(tmp_path, kind, case, edit, match):
    make_tensors, make_config, load = PATHS[kind]
    tensors = make_tensors()
    edit(tensors)
    path = _write(tmp_path / case, tensors, make_config())
    with pytest.raises(hf_io.CheckpointError, match=match) as err:
        load(path)
    assert path in str(err.value)  # the checkpoint is named


def test_t5_plain_weights_with_a_gated_config(tmp_path):
    path = _write(tmp_path / "gated", _t5_tensors(gated=False), _t5_config())
    with pytest.raises(hf_io.CheckpointError, match=r"missing tensors .*wi_0"):
        hf_t5.load_t5(path)


@pytest.mark.parametrize("field, value, match", [
    ("model_type", "bart", "model_type is 'bart'"),
    ("architectures", ["T5EncoderModel"], "T5EncoderModel"),
    ("feed_forward_proj", "gated-tanh", "unsupported feed_forward_proj"),
    ("is_encoder_decoder", False, "is_encoder_decoder is false"),
])
def test_t5_config_problems_raise_clear_errors(tmp_path, field, value, match):
    path = _write(tmp_path / field, _t5_tensors(), _t5_config(**{field: value}))
    with pytest.raises(hf_io.CheckpointError, match=match):
        hf_t5.load_t5(path)


# -- fill_module -------------------------------------------------------------------------------------


def _linear():
    return layers.Linear(3, 2, axes=(None, None), use_bias=True, dtype=jnp.float32,
                         param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))


def test_fill_module_casts_to_the_parameter_dtype_in_host_memory():
    kernel = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    bias = np.array([0.5, -1.0], np.float32)
    for pure in ({"kernel": kernel, "bias": bias}, {("kernel",): kernel, ("bias",): bias}):
        lin = hf_io.fill_module(_linear, pure, source="ckpt")
        assert lin.kernel[...].dtype == jnp.bfloat16
        assert type(lin.kernel[...]) is np.ndarray and type(lin.bias[...]) is np.ndarray
        np.testing.assert_array_equal(np.asarray(lin.kernel[...], np.float32), kernel)
        np.testing.assert_array_equal(np.asarray(lin.bias[...], np.float32), bias)


@pytest.mark.parametrize("pure, match", [
    ({"kernel": np.zeros((3, 2))}, "ckpt: no tensor for parameter bias"),
    ({"kernel": np.zeros((2, 3)), "bias": np.zeros(2)},
     r"ckpt: parameter kernel would get shape \(2, 3\), expected \(3, 2\)"),
    ({"kernel": np.zeros((3, 2)), "bias": np.zeros(2), "scale": np.zeros(2)},
     r"ckpt: converted tensors without a parameter: \['scale'\]"),
])
def test_fill_module_problems_are_named(pure, match):
    with pytest.raises(hf_io.CheckpointError, match=match):
        hf_io.fill_module(_linear, pure, source="ckpt")
