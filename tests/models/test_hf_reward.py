"""Reward models from tiny random sequence-classification checkpoints: parity with transformers,
the converted workdir in the alignment jobs' loading path, and the refusals."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lsc.models import hf_convert, hf_io, hf_reward  # noqa: E402
from lsc.train import checkpoint as checkpoint_lib  # noqa: E402
from lsc.train import common as train_common  # noqa: E402

from _hf_checkpoints import tiny_model  # noqa: E402

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1,
            bos_token_id=2, initializer_range=0.1, rms_norm_eps=1e-5, num_labels=1)

CASES = {
    "llama": ("LlamaConfig", "LlamaForSequenceClassification", dict(tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForSequenceClassification", dict()),
    "gemma2": ("Gemma2Config", "Gemma2ForSequenceClassification",
               dict(head_dim=16, query_pre_attn_scalar=8, attn_logit_softcapping=2.0,
                    sliding_window=3, layer_types=["sliding_attention", "full_attention"])),
}

# Left-padded prompts and right-padded responses (the project's layout); the last row's
# response is empty, so its reward is read at the last prompt token.
PROMPTS = np.array([[0, 0, 2, 17, 33], [2, 5, 6, 7, 8], [0, 0, 0, 2, 60]])
RESPONSES = np.array([[40, 41, 1, 0], [9, 10, 11, 1], [0, 0, 0, 0]])


def _hf_model(case, seed=0):
    return tiny_model(CASES, BASE, case, seed)


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    case = request.param
    hf = _hf_model(case)
    path = str(tmp_path_factory.mktemp(case))
    hf.save_pretrained(path)
    return case, hf, path


def _hf_rewards(hf):
    """transformers on the same texts, right-padded (its usual layout)."""
    texts = [np.concatenate([p[p != 0], r[r != 0]]) for p, r in zip(PROMPTS, RESPONSES)]
    length = max(len(t) for t in texts)
    ids = np.stack([np.pad(t, (0, length - len(t))) for t in texts])
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor((ids != 0).astype(np.int64)))
    return out.logits[:, 0].float().numpy()


def test_rewards_match_transformers(saved):
    case, hf, path = saved
    model, cfg = hf_reward.load_reward_model(path)
    assert cfg.tie_embeddings and model.pooling == "last"
    got = np.asarray(model(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    want = _hf_rewards(hf)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # transformers on the project's layout itself (pads before and after; positions skip them).
    ids = np.concatenate([PROMPTS, RESPONSES], axis=1)
    mask = ids != 0
    with torch.no_grad():
        direct = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                    position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0))).logits
    np.testing.assert_allclose(got, direct[:, 0].numpy(), atol=1e-5, rtol=1e-5)


def test_converted_workdir_loads_like_a_trained_one(saved, tmp_path):
    """The path of lsc.align.common.load_reward_models: run config -> factory -> export."""
    case, hf, path = saved
    workdir = str(tmp_path / "rm")
    hf_convert.convert(path, workdir)
    run_cfg = train_common.load_run_config(workdir)
    create, _ = train_common.reward_model_factory(run_cfg.model, 90, int(run_cfg.seed))
    model = checkpoint_lib.load_model(workdir, create)
    got = np.asarray(model(jnp.asarray(PROMPTS), jnp.asarray(RESPONSES)))
    np.testing.assert_allclose(got, _hf_rewards(hf), atol=1e-5, rtol=1e-5)
    assert run_cfg.source.architecture == CASES[case][1]
    assert run_cfg.model.pooling == "last"


def _edit_config(path, tmp_path, **changes):
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for f in os.listdir(path):
        (dst / f).write_bytes(open(os.path.join(path, f), "rb").read())
    cfg = json.load(open(dst / "config.json"))
    cfg.update(changes)
    json.dump(cfg, open(dst / "config.json", "w"))
    return str(dst)


def test_refusals(tmp_path):
    path = str(tmp_path / "llama")
    _hf_model("llama").save_pretrained(path)
    bad = _edit_config(path, tmp_path, architectures=["LlamaForTokenClassification"])
    with pytest.raises(hf_io.CheckpointError, match="architectures"):
        hf_reward.load_reward_model(bad)
    (tmp_path / "b").mkdir()
    bad = _edit_config(path, tmp_path / "b", id2label={"0": "a", "1": "b"})
    with pytest.raises(hf_io.CheckpointError, match="2 labels"):
        hf_reward.load_reward_model(bad)
    (tmp_path / "c").mkdir()
    bad = _edit_config(path, tmp_path / "c", pad_token_id=None)
    with pytest.raises(hf_io.CheckpointError, match="pad_token_id"):
        hf_reward.load_reward_model(bad)
    hf_reward.load_reward_model(bad, pad_id=0)  # an explicit pad id is accepted


def test_causal_lm_checkpoint_is_not_a_reward_model(tmp_path):
    cfg = transformers.LlamaConfig(**{k: v for k, v in BASE.items() if k != "num_labels"})
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(tmp_path))
    with pytest.raises(hf_io.CheckpointError, match="LlamaForCausalLM"):
        hf_reward.load_reward_model(str(tmp_path))
    with pytest.raises(hf_io.CheckpointError, match="LlamaForCausalLM"):
        hf_convert.convert_reward_model(str(tmp_path), str(tmp_path / "rm"))


def test_unsupported_architecture_is_refused(tmp_path):
    cfg = transformers.LlamaConfig(**BASE)
    transformers.LlamaForTokenClassification(cfg).save_pretrained(str(tmp_path))
    with pytest.raises(hf_io.CheckpointError, match="LlamaForTokenClassification"):
        hf_convert.convert(str(tmp_path), str(tmp_path / "out"))


# -- T5ForSequenceClassification ------------------------------------------------------------------

T5_RESPONSES = np.array([[40, 41, 1, 0], [9, 10, 11, 1], [1, 0, 0, 0]])  # each ends with EOS


@pytest.fixture(scope="module")
def t5_saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                num_heads=4, feed_forward_proj="gated-gelu", num_labels=1,
                                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                                relative_attention_num_buckets=8,
                                relative_attention_max_distance=16, dropout_rate=0.0)
    hf = transformers.T5ForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.startswith("classification_head"):
                p.copy_(0.3 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("t5cls"))
    hf.save_pretrained(path)
    return hf, path


def _hf_t5_rewards(hf):
    texts = [np.concatenate([p[p != 0], r[r != 0]]) for p, r in zip(PROMPTS, T5_RESPONSES)]
    length = max(len(t) for t in texts)
    ids = np.stack([np.pad(t, (0, length - len(t))) for t in texts])
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor((ids != 0).astype(np.int64)))
    return out.logits[:, 0].float().numpy()


def test_t5_rewards_match_transformers(t5_saved, tmp_path):
    hf, path = t5_saved
    model, cfg = hf_reward.load_reward_model(path)
    got = np.asarray(model(jnp.asarray(PROMPTS), jnp.asarray(T5_RESPONSES)))
    want = _hf_t5_rewards(hf)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # The converted workdir, as the alignment jobs load it.
    workdir = hf_convert.convert(path, str(tmp_path / "rm"))
    run_cfg = train_common.load_run_config(workdir)
    assert run_cfg.model.kind == "t5_classifier"
    create, _ = train_common.reward_model_factory(run_cfg.model, 90, int(run_cfg.seed))
    loaded = checkpoint_lib.load_model(workdir, create)
    np.testing.assert_allclose(np.asarray(loaded(jnp.asarray(PROMPTS), jnp.asarray(T5_RESPONSES))),
                               want, atol=1e-5, rtol=1e-5)


def test_t5_classifier_compaction_and_missing_eos():
    from lsc.models import t5_classifier

    ids, mask = t5_classifier.compact(jnp.asarray([[0, 0, 5, 6, 7, 0], [3, 0, 4, 0, 0, 0]]), 0)
    assert np.asarray(ids).tolist() == [[5, 6, 7, 0, 0, 0], [3, 4, 0, 0, 0, 0]]
    assert np.asarray(mask).sum(1).tolist() == [3, 2]
