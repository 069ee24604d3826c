"""Parity of the Mistral, Qwen 2 / 3 and Gemma 2 / 3 imports with PyTorch `transformers` (tiny
random-weight checkpoints made here), cache/no-cache agreement, and the refusals."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lsc.models import hf_convert, hf_decoder, hf_io, sampling  # noqa: E402
from lsc.train import checkpoint as checkpoint_lib  # noqa: E402
from lsc.train import common as train_common  # noqa: E402

from _hf_checkpoints import BASE, hf_logits, tiny_model  # noqa: E402


# (config class, model class, extra config fields). Windows of 3 tokens and small soft-caps so
# that each feature changes the logits of these short sequences.
CASES = {
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(num_key_value_heads=2, head_dim=16, sliding_window=3,
                     tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
    "qwen2_sliding": ("Qwen2Config", "Qwen2ForCausalLM",
                      dict(num_key_value_heads=2, tie_word_embeddings=False,
                           use_sliding_window=True, sliding_window=3, max_window_layers=1)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)),
    "qwen3_bias": ("Qwen3Config", "Qwen3ForCausalLM",
                   dict(num_key_value_heads=1, head_dim=8, attention_bias=True,
                        tie_word_embeddings=False)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=8,
                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0, sliding_window=3,
                    layer_types=["sliding_attention", "full_attention"])),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=8,
                    final_logit_softcapping=3.0, sliding_window=3,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                        "full_attention": {"rope_type": "linear", "factor": 2.0,
                                           "rope_theta": 1000.0}})),
}

PROMPTS = np.array([
    [0, 0, 0, 2, 17, 33, 41],
    [2, 5, 6, 7, 8, 9, 10],
    [0, 0, 0, 0, 0, 2, 60],
])
MASK = PROMPTS != 0


def _hf_model(case, seed=0):
    return tiny_model(CASES, BASE, case, seed)


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    case = request.param
    hf = _hf_model(case)
    path = str(tmp_path_factory.mktemp(case))
    hf.save_pretrained(path)
    model, cfg = hf_decoder.load_decoder(path)
    return case, hf, model, cfg


def test_config_features(pair):
    case, _, _, cfg = pair
    if case in ("mistral", "qwen2_sliding", "gemma2", "gemma3"):
        assert cfg.sliding_window == 3
    if case == "qwen2_sliding":
        assert cfg.layer_types == ("full_attention", "sliding_attention")
    if case.startswith("qwen2"):
        assert cfg.attention_bias and not cfg.out_bias
    if case.startswith("qwen3") or case == "gemma3":
        assert cfg.qk_norm
    if case.startswith("gemma"):
        assert cfg.norm_zero_centered and cfg.embed_scale and cfg.post_norms and cfg.tie_embeddings
        assert cfg.query_scale == pytest.approx(8 ** -0.5)
        assert cfg.final_logit_softcap == 3.0
    if case == "gemma2":
        assert cfg.attn_logit_softcap == 2.0
    if case == "gemma3":
        assert (cfg.rope_theta, cfg.rope_scaling_type, cfg.rope_local_theta) == (1000.0, "linear",
                                                                               10.0)


def test_logits_match_transformers(pair):
    _, hf, model, _ = pair
    ours = np.asarray(model(jnp.asarray(PROMPTS)))
    want = hf_logits(hf, PROMPTS)
    np.testing.assert_allclose(ours[MASK], want[MASK], atol=1e-4, rtol=1e-4)


def test_cache_matches_full_forward(pair):
    """Prefill + decode steps over a teacher-forced continuation give the full pass's logits."""
    _, _, model, _ = pair
    cont = np.array([[5, 9, 11, 40, 3, 7], [12, 13, 14, 15, 16, 17], [60, 61, 62, 63, 64, 65]])
    full = np.asarray(model(jnp.asarray(np.concatenate([PROMPTS, cont], axis=1))))
    p = PROMPTS.shape[1]
    g, s = nnx.split(model)
    prefill = jax.jit(lambda s, x, c: nnx.merge(g, s).prefill(x, c))
    decode = jax.jit(lambda s, x, c: nnx.merge(g, s).decode_step(x, c))
    logits, cache = prefill(s, jnp.asarray(PROMPTS), model.init_cache(3, cont.shape[1]))
    got = [np.asarray(logits)]
    for t in range(cont.shape[1] - 1):
        logits, cache = decode(s, jnp.asarray(cont[:, t]), cache)
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(got, 1), full[:, p - 1:-1], atol=1e-5, rtol=1e-5)


def _hf_greedy(hf, new):
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(PROMPTS),
                          attention_mask=torch.tensor(MASK.astype(np.int64)),
                          max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=1)
    want = out[:, PROMPTS.shape[1]:].numpy()
    return np.pad(want, ((0, 0), (0, new - want.shape[1])), constant_values=0)


@pytest.mark.slow
def test_greedy_generation_matches_transformers(pair):
    _, hf, model, _ = pair
    new = 8
    g, s = nnx.split(model)
    want = _hf_greedy(hf, new)
    got = sampling.sample(g, s, jnp.asarray(PROMPTS), jax.random.key(0), max_new_tokens=new,
                          temperature=0.0, allow_pad=True)
    np.testing.assert_array_equal(np.asarray(got.tokens[:, 0]), want)


def test_converted_policy_workdir(tmp_path):
    """A converted causal LM loads where a train_sft run does (lsc.align.common.load_policy)."""
    hf = _hf_model("gemma2")
    hf.save_pretrained(str(tmp_path / "ckpt"))
    workdir = hf_convert.convert(str(tmp_path / "ckpt"), str(tmp_path / "policy"))
    run_cfg = train_common.load_run_config(workdir)
    assert run_cfg.source.architecture == "Gemma2ForCausalLM"
    create, _, _ = train_common.backbone_factory(run_cfg.model, 90, int(run_cfg.seed))
    model = checkpoint_lib.load_model(workdir, create)
    assert model.sample_vocab_size == 90
    ours = np.asarray(model(jnp.asarray(PROMPTS)))
    np.testing.assert_allclose(ours[MASK], hf_logits(hf, PROMPTS)[MASK], atol=1e-4, rtol=1e-4)


# -- refusals (config dicts; no torch needed) -----------------------------------------------------


def _config(case):
    cfg_cls, _, extra = CASES[case]
    return getattr(transformers, cfg_cls)(**BASE, **copy.deepcopy(extra)).to_dict()


@pytest.mark.parametrize("case,field,value,match", [
    ("qwen2", "quantization_config", {"bits": 4}, r"\['quantization_config'\]"),
    ("mistral", "layer_types", ["full_attention"] * 2, r"\['layer_types'\]"),
    ("qwen3", "rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
     r"rope_parameters\.rope_type='yarn'"),
    ("qwen3", "rope_parameters", {"rope_type": "default", "rope_theta": 1e4,
                                  "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ("gemma2", "hidden_activation", "silu", "hidden_activation='silu'"),
    ("gemma2", "use_bidirectional_attention", True, "use_bidirectional_attention"),
    ("gemma3", "attn_logit_softcapping", 50.0, "attn_logit_softcapping"),
    ("gemma3", "rope_parameters", {
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10.0},
        "full_attention": {"rope_type": "default", "rope_theta": 1e6}},
     r"rope_parameters\.sliding_attention\.rope_type='linear'"),
    ("gemma3", "layer_types", ["sliding_attention", "chunked_attention"], "chunked_attention"),
    ("qwen2", "hidden_act", "gelu", "hidden_act='gelu'"),
])
def test_unsupported_fields_are_refused(case, field, value, match):
    hf = _config(case)
    hf[field] = value
    with pytest.raises(hf_io.CheckpointError, match=match):
        hf_decoder.config_from_hf(hf)


def test_legacy_gemma3_rope_fields():
    hf = _config("gemma3")
    del hf["rope_parameters"]
    hf.update(rope_theta=1e6, rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear",
                                                                      "factor": 8.0})
    cfg = hf_decoder.config_from_hf(hf)
    assert (cfg.rope_theta, cfg.rope_scaling_type, cfg.rope_scaling_factor,
            cfg.rope_local_theta) == (1e6, "linear", 8.0, 1e4)


def test_gemma_legacy_layer_pattern():
    hf = _config("gemma3")
    del hf["layer_types"]
    hf["num_hidden_layers"] = 6
    hf["sliding_window_pattern"] = 3
    cfg = hf_decoder.config_from_hf(hf)
    assert cfg.layer_types == ("sliding_attention", "sliding_attention", "full_attention") * 2
