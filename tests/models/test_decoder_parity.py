"""Parity of the Llama import with PyTorch `transformers` (tiny random-weight models)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lsc.models import hf_decoder, hf_io, sampling  # noqa: E402

from _hf_checkpoints import BASE, hf_logits  # noqa: E402

CASES = {
    "mha_untied": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "gqa_tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mqa_llama3_rope": dict(
        num_key_value_heads=1, tie_word_embeddings=False, rope_theta=500_000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "gqa_bias_headdim": dict(num_key_value_heads=2, head_dim=16, attention_bias=True,
                             mlp_bias=True, tie_word_embeddings=True),
}

PROMPTS = np.array([
    [0, 0, 0, 2, 17, 33, 41],
    [2, 5, 6, 7, 8, 9, 10],
    [0, 0, 0, 0, 0, 2, 60],
])


def _hf_model(case, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(**BASE, **CASES[case])
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm scales and biases
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    case = request.param
    hf = _hf_model(case)
    path = str(tmp_path_factory.mktemp(case))
    # One case is written as several shards with an index file.
    kwargs = {"max_shard_size": "20KB"} if case == "gqa_tied" else {}
    hf.save_pretrained(path, **kwargs)
    model, cfg = hf_decoder.load_decoder(path)
    return case, hf, model, cfg, path


def test_logits_match_transformers(pair):
    case, hf, model, cfg, path = pair
    if case == "gqa_tied":
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    assert cfg.num_kv_heads == CASES[case]["num_key_value_heads"]
    ours = np.asarray(model(jnp.asarray(PROMPTS)))
    want = hf_logits(hf, PROMPTS)
    mask = PROMPTS != 0
    np.testing.assert_allclose(ours[mask], want[mask], atol=1e-4, rtol=1e-4)


def _hf_greedy(hf, new, eos):
    mask = PROMPTS != 0
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(PROMPTS),
                          attention_mask=torch.tensor(mask.astype(np.int64)),
                          max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=eos)
    want = out[:, PROMPTS.shape[1]:].numpy()
    return np.pad(want, ((0, 0), (0, new - want.shape[1])), constant_values=0)


@pytest.mark.slow
def test_greedy_generation_matches_transformers(pair):
    case, hf, model, cfg, _ = pair
    new = 8
    g, s = nnx.split(model)
    want = _hf_greedy(hf, new, eos=1)
    got = sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(0), max_new_tokens=new,
                          temperature=0.0, allow_pad=True)
    np.testing.assert_array_equal(np.asarray(got.tokens[:, 0]), want)
    # Again with an EOS id that the first row emits mid-way: per-row stopping as in transformers.
    eos = int(want[0, 2])
    want_eos = _hf_greedy(hf, new, eos=eos)
    got_eos = sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(0), max_new_tokens=new,
                              temperature=0.0, allow_pad=True, eos_id=eos)
    np.testing.assert_array_equal(np.asarray(got_eos.tokens[:, 0]), want_eos)
    stop = int(np.argmax(want_eos[0] == eos))
    assert stop <= 2
    assert np.asarray(got_eos.mask)[0, 0].tolist() == [t <= stop for t in range(new)]


# -- errors on mismatched checkpoints ---------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("base"))
    _hf_model("mha_untied").save_pretrained(path)
    return path


def _copy(saved, tmp_path):
    dst = str(tmp_path / "ckpt")
    shutil.copytree(saved, dst)
    return dst


def _edit_tensors(path, fn):
    from safetensors.numpy import load_file, save_file

    f = os.path.join(path, "model.safetensors")
    tensors = load_file(f)
    fn(tensors)
    save_file(tensors, f)


def test_wrong_model_type(saved, tmp_path):
    path = _copy(saved, tmp_path)
    cfg = json.load(open(os.path.join(path, "config.json")))
    cfg["model_type"] = "gpt2"
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(hf_io.CheckpointError, match="model_type='gpt2'"):
        hf_decoder.load_decoder(path)


def test_unsupported_activation(saved, tmp_path):
    path = _copy(saved, tmp_path)
    cfg = json.load(open(os.path.join(path, "config.json")))
    cfg["hidden_act"] = "gelu"
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(hf_io.CheckpointError, match="hidden_act"):
        hf_decoder.load_decoder(path)


def test_missing_tensor_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)
    _edit_tensors(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(hf_io.CheckpointError, match=r"missing.*model\.layers\.1\.mlp\.up_proj"):
        hf_decoder.load_decoder(path)


def test_extra_tensor_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)
    _edit_tensors(path, lambda t: t.update({"model.layers.2.mlp.up_proj.weight":
                                            np.zeros((64, 32), np.float32)}))
    with pytest.raises(hf_io.CheckpointError, match=r"unexpected.*model\.layers\.2"):
        hf_decoder.load_decoder(path)


def test_shape_mismatch_is_named(saved, tmp_path):
    path = _copy(saved, tmp_path)
    _edit_tensors(path, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight":
                                            np.zeros((8, 32), np.float32)}))
    with pytest.raises(hf_io.CheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj"):
        hf_decoder.load_decoder(path)


def test_bfloat16_checkpoint(tmp_path):
    hf = _hf_model("gqa_tied", seed=1).to(torch.bfloat16)
    hf.save_pretrained(str(tmp_path))
    model, cfg = hf_decoder.load_decoder(str(tmp_path))  # widened to float32 exactly
    ours = np.asarray(model(jnp.asarray(PROMPTS)))
    want = hf_logits(hf.float(), PROMPTS)
    mask = PROMPTS != 0
    np.testing.assert_allclose(ours[mask], want[mask], atol=1e-4, rtol=1e-4)
    low, _ = hf_decoder.load_decoder(str(tmp_path), dtype="bfloat16", param_dtype="bfloat16")
    assert low.embed.embedding[...].dtype == jnp.bfloat16
    got = np.asarray(low(jnp.asarray(PROMPTS)))
    assert np.abs(got[mask] - want[mask]).max() < 0.1 * np.abs(want[mask]).max()


def test_missing_files(tmp_path):
    with pytest.raises(hf_io.CheckpointError, match="config.json"):
        hf_decoder.load_decoder(str(tmp_path))
