"""T5 against the PyTorch ``transformers`` implementation on tiny random checkpoints.

Each test builds a ``T5ForConditionalGeneration`` with random weights, writes it with
``save_pretrained``, imports it with ``lsc.models.hf_t5`` and compares float32 outputs with the
reference model loaded back from the same directory (logits: the reference run in float64, the
exact value both float32 implementations approximate).
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from lsc.models import heads, hf_t5, sampling, t5  # noqa: E402

pytestmark = pytest.mark.hf

ATOL = 1e-4


@jax.jit
def _forward(graphdef, state, enc, dec, enc_mask=None, dec_mask=None):
    """Full forward pass of the split :class:`lsc.models.t5.T5`: float32 logits ``[B, L, V]``."""
    return nnx.merge(graphdef, state)(enc, dec, enc_mask, dec_mask)


def _randomize(model, seed):
    """Moderately scaled random weights everywhere (layer-norm scales around 1), so that every
    tensor, norms included, influences the output and a swapped tensor would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "relative_attention_bias" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(p.shape[-1] ** -0.5 * torch.randn(p.shape, generator=gen))


def _write_checkpoint(tmp_path, name, *, untie=False, seed=0, shard=False, **config_kwargs):
    """Saves a random tiny T5 and returns (reference model loaded from disk, directory).

    ``untie=True`` writes what a t5-v1_1 / flan-t5 checkpoint holds: a separate
    ``lm_head.weight`` and ``tie_word_embeddings: false`` in config.json.
    """
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=160, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        dropout_rate=0.0, decoder_start_token_id=0, feed_forward_proj="gated-gelu",
    )
    kwargs.update(config_kwargs)
    config = transformers.T5Config(**kwargs)
    model = transformers.T5ForConditionalGeneration(config).eval()
    _randomize(model, seed)
    path = str(tmp_path / name)
    model.save_pretrained(path, **({"max_shard_size": "20KB"} if shard else {}))
    if untie:
        weights = load_file(os.path.join(path, "model.safetensors"))
        rng = np.random.default_rng(seed + 1)
        weights["lm_head.weight"] = (
            rng.standard_normal((kwargs["vocab_size"], kwargs["d_model"])) * 0.3
        ).astype(np.float32)
        save_file(weights, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        cfg["tie_word_embeddings"] = False
        cfg.pop("scale_decoder_outputs", None)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f)
    ref = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
    if untie:
        assert not torch.equal(ref.lm_head.weight, ref.shared.weight)
    return ref, path


def _inputs(rng, batch, enc_len, dec_len, vocab):
    """Left-padded encoder tokens (one row right-padded, one unpadded) and decoder inputs."""
    enc = rng.integers(2, vocab, (batch, enc_len))
    for b in range(batch):
        pads = [0, enc_len // 3, enc_len - 2, 1][b % 4]
        enc[b, :pads] = 0
    enc[-1, enc_len - 4 :] = 0  # a right-padded row: the mask, not the side, is what matters
    enc[-1, 0] = 5
    dec = rng.integers(2, vocab, (batch, dec_len))
    dec[:, 0] = 0  # start token
    return enc, dec


@pytest.mark.parametrize(
    "name, untie, config_kwargs",
    [
        # t5-v1_1 style: gated-gelu, separate head, default buckets.
        ("v1_1_default_buckets", True, {}),
        # as saved by transformers >= 5 (head tied to the embedding, no output scaling);
        # few buckets and a short max distance, exceeded by the inputs.
        ("tied_unscaled_8_20", False, dict(relative_attention_num_buckets=8,
                                           relative_attention_max_distance=20)),
        # original T5: relu feed-forward, tied and scaled head; unequal stack depths.
        ("relu_tied_scaled_16_24", False, dict(feed_forward_proj="relu", tie_word_embeddings=True,
                                               relative_attention_num_buckets=16,
                                               relative_attention_max_distance=24,
                                               num_layers=3, num_decoder_layers=2)),
        ("v1_1_4_10_deep_decoder", True, dict(relative_attention_num_buckets=4,
                                              relative_attention_max_distance=10,
                                              num_decoder_layers=3)),
    ],
)
def test_logits_match_transformers(tmp_path, name, untie, config_kwargs):
    ref, path = _write_checkpoint(tmp_path, name, untie=untie, **config_kwargs)
    model = hf_t5.load_t5(path)
    assert model.config.tie_word_embeddings == (not untie)
    assert model.config.scale_decoder_outputs == bool(ref.config.scale_decoder_outputs)
    rng = np.random.default_rng(1)
    enc, dec = _inputs(rng, 4, 30, 26, ref.config.vocab_size)
    mask = enc != 0
    dec_mask = np.ones(dec.shape, bool)
    dec_mask[1, 20:] = False  # right-padded decoder inputs with an explicit decoder mask
    dec_mask[3, 9:] = False
    with torch.no_grad():
        expected = ref.double()(
            input_ids=torch.tensor(enc), attention_mask=torch.tensor(mask.astype(np.int64)),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(dec_mask.astype(np.int64)),
        ).logits.numpy()
    got = _forward(*nnx.split(model), jnp.asarray(enc, jnp.int32), jnp.asarray(dec, jnp.int32),
                   jnp.asarray(mask), jnp.asarray(dec_mask))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, atol=ATOL, rtol=1e-5)


def test_relative_position_buckets_match_transformers():
    bucket_fn = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    rel = np.arange(-600, 601)
    for num_buckets, max_distance in [(32, 128), (8, 20), (4, 10), (16, 24), (64, 256), (6, 7)]:
        for bidirectional in (True, False):
            expected = bucket_fn(torch.tensor(rel), bidirectional=bidirectional,
                                 num_buckets=num_buckets, max_distance=max_distance).numpy()
            got = t5.relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                              num_buckets=num_buckets, max_distance=max_distance)
            np.testing.assert_array_equal(np.asarray(got), expected)


def test_sharded_checkpoint_import(tmp_path):
    ref, path = _write_checkpoint(tmp_path, "sharded", shard=True, seed=3)
    assert os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    assert len([n for n in os.listdir(path) if n.endswith(".safetensors")]) > 1
    model = hf_t5.load_t5(path)
    rng = np.random.default_rng(2)
    enc, dec = _inputs(rng, 2, 12, 7, ref.config.vocab_size)
    with torch.no_grad():
        expected = ref.double()(input_ids=torch.tensor(enc),
                       attention_mask=torch.tensor((enc != 0).astype(np.int64)),
                       decoder_input_ids=torch.tensor(dec)).logits.numpy()
    got = _forward(*nnx.split(model), jnp.asarray(enc, jnp.int32), jnp.asarray(dec, jnp.int32))
    np.testing.assert_allclose(np.asarray(got), expected, atol=ATOL, rtol=1e-5)


def test_bfloat16_checkpoint_import(tmp_path):
    ref, path = _write_checkpoint(tmp_path, "bf16", seed=4)
    ref.to(torch.bfloat16).save_pretrained(path)
    model = hf_t5.load_t5(path)
    assert model.encoder.layers[0].self_attn.q.kernel[...].dtype == jnp.float32
    weights = ref.state_dict()
    q = weights["encoder.block.0.layer.0.SelfAttention.q.weight"].float().numpy()
    np.testing.assert_array_equal(
        np.asarray(model.encoder.layers[0].self_attn.q.kernel[...]).reshape(32, 32), q.T
    )


def test_reward_features_match_transformers_hidden_states(tmp_path):
    """The reward reads the final decoder state at the last response token: the same state as
    transformers' ``T5Model`` decoder output for decoder input ``[start] + response``."""
    ref, path = _write_checkpoint(tmp_path, "rm", untie=True, seed=5)
    rm = heads.RewardModel(hf_t5.load_t5(path), rngs=nnx.Rngs(0))  # as reward_model_factory
    graphdef, state = nnx.split(rm)
    # give the zero-initialised head non-trivial weights
    state["head"]["proj"]["kernel"].set_value(
        jnp.asarray(np.random.default_rng(0).standard_normal((32, 1)), jnp.float32))
    state["head"]["proj"]["bias"].set_value(jnp.asarray([0.25], jnp.float32))
    kernel = np.asarray(state["head"]["proj"]["kernel"].get_value())[:, 0]

    prompts = np.array([[0, 0, 0, 7, 8, 9], [3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 11]])
    responses = np.array([[12, 13, 1, 0, 0], [14, 15, 16, 17, 1], [1, 0, 0, 0, 0]])
    got = heads.score(graphdef, state, jnp.asarray(prompts, jnp.int32),
                      jnp.asarray(responses, jnp.int32))
    assert got.shape == (3,) and got.dtype == jnp.float32

    base = transformers.T5Model.from_pretrained(path).eval().double()
    expected = []
    for p, r in zip(prompts, responses):
        p_real = p[p != 0]
        r_real = r[r != 0]
        dec_in = np.concatenate([[0], r_real])
        with torch.no_grad():
            h = base(input_ids=torch.tensor(p_real[None]),
                     decoder_input_ids=torch.tensor(dec_in[None])).last_hidden_state[0, -1]
        expected.append(float(h.numpy() @ kernel + 0.25))
    np.testing.assert_allclose(np.asarray(got), np.array(expected), atol=ATOL, rtol=1e-5)


def test_greedy_generation_matches_transformers(tmp_path):
    ref, path = _write_checkpoint(tmp_path, "gen", untie=True, seed=7, vocab_size=128)
    rng = np.random.default_rng(3)
    prompts = rng.integers(2, 128, (4, 9))
    prompts[0, :4] = 0
    prompts[2, :8] = 0
    max_new = 12
    attention = torch.tensor((prompts != 0).astype(np.int64))

    def hf_generate():
        with torch.no_grad():
            out = ref.generate(input_ids=torch.tensor(prompts), attention_mask=attention,
                               do_sample=False, max_new_tokens=max_new)
        assert (out[:, 0] == 0).all()  # decoder start token
        out = out[:, 1:].numpy()
        return np.pad(out, ((0, 0), (0, max_new - out.shape[1])))  # pad id 0 after EOS

    # Pick as EOS a token that greedy decoding emits mid-sequence in row 0, so that the
    # comparison covers per-row stopping.
    first = hf_generate()
    stop = next(t for t in range(2, max_new - 2)
                if first[0, t] not in (0, 1) and first[0, t] not in first[0, :t])
    eos = int(first[0, stop])
    ref.config.eos_token_id = eos
    ref.generation_config.eos_token_id = eos
    ref.save_pretrained(path)
    expected = hf_generate()

    model = hf_t5.load_t5(path)
    assert model.eos_id == eos
    graphdef, state = nnx.split(model)
    out = sampling.sample(graphdef, state, jnp.asarray(prompts, jnp.int32), jax.random.key(0),
                          max_new_tokens=max_new, temperature=0.0, allow_pad=True)
    got = np.asarray(out.tokens[:, 0])
    np.testing.assert_array_equal(got, expected)
    assert got[0, stop] == eos and (got[0, stop + 1 :] == 0).all()
    assert np.asarray(out.mask[0, 0]).sum() == stop + 1


def test_mean_pooled_reward_matches_transformers_hidden_states(tmp_path):
    """``pooling='mean'`` reads the mean of transformers' ``T5Model`` decoder outputs at the real
    response tokens (decoder input ``[start] + response``, outputs 1..n); the empty response
    scores the bias."""
    ref, path = _write_checkpoint(tmp_path, "rm_mean", untie=True, seed=6)
    rm = heads.RewardModel(hf_t5.load_t5(path), rngs=nnx.Rngs(0), pooling="mean",
                           head_init=nnx.initializers.normal(1.0))
    rm.head.proj.bias[...] = jnp.asarray([0.25], jnp.float32)
    kernel = np.asarray(rm.head.proj.kernel[...])[:, 0]
    graphdef, state = nnx.split(rm)
    prompts = np.array([[0, 0, 0, 7, 8, 9], [3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 11]])
    responses = np.array([[12, 13, 1, 0, 0], [14, 15, 16, 17, 1], [0, 0, 0, 0, 0]])
    got = np.asarray(heads.score(graphdef, state, jnp.asarray(prompts, jnp.int32),
                                 jnp.asarray(responses, jnp.int32)))

    base = transformers.T5Model.from_pretrained(path).eval().double()
    expected = []
    for p, r in zip(prompts, responses):
        r_real = r[r != 0]
        if not len(r_real):
            expected.append(0.25)
            continue
        with torch.no_grad():
            h = base(input_ids=torch.tensor(p[p != 0][None]),
                     decoder_input_ids=torch.tensor(np.concatenate([[0], r_real])[None])
                     ).last_hidden_state[0, 1:]
        expected.append(float(h.numpy().mean(0) @ kernel + 0.25))
    np.testing.assert_allclose(got, np.array(expected), atol=ATOL, rtol=1e-5)
