"""The ``rlhf`` job on the real-model path of ``configs/rlhf/par.py``: a tiny random Gemma-2 policy
and reward models converted by ``lsc.models.hf_convert``, a fake hh-rlhf directory and the
policy's own byte-level tokenizer. Checks the sweep's ``results.json``, the tokenizer taken from
the policy's directory, errors that name the reward model's directory, a finished rerun that does
nothing, and ``config.json`` recording the converted models."""

import importlib.util
import json
import os
import shutil

import pytest

pytestmark = pytest.mark.hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lsc import main as main_lib  # noqa: E402
from lsc.align import common as align_common  # noqa: E402
from lsc.align import rlhf  # noqa: E402
from lsc.align.references import bank as reference_bank  # noqa: E402
from lsc.align.rlhf import job as rlhf_job  # noqa: E402
from lsc.models import hf_convert  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEMMA2 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=8, sliding_window=3,
              layer_types=["sliding_attention", "full_attention"], pad_token_id=0,
              eos_token_id=1, bos_token_id=2, initializer_range=0.1)
SPECIALS = ("<pad>", "<eos>", "<bos>")
HH_PROMPTS = [f"\n\nHuman: question number {i} about item {i * 7}?\n\nAssistant:" for i in range(24)]


def _byte_tokenizer(directory):
    """A byte-level ``tokenizer.json``: the three specials (ids 0, 1, 2) then the 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}, f)
    return len(vocab)


def _converted(tmp, name, model_cls, vocab_size, seed):
    """A tiny random Gemma-2 checkpoint with the byte tokenizer, converted to a run directory;
    returns ``(run directory, parameter count of the transformers model)``."""
    torch.manual_seed(seed)
    cfg = transformers.Gemma2Config(vocab_size=vocab_size, num_labels=1, **GEMMA2)
    model = getattr(transformers, model_cls)(cfg).eval()
    ckpt = os.path.join(tmp, f"{name}_hf")
    model.save_pretrained(ckpt)
    _byte_tokenizer(ckpt)
    workdir = hf_convert.convert(ckpt, os.path.join(tmp, name))
    return workdir, sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("real"))
    os.makedirs(os.path.join(tmp, "tok"))
    tok_vocab = _byte_tokenizer(os.path.join(tmp, "tok"))
    policy, policy_params = _converted(tmp, "policy", "Gemma2ForCausalLM", 272, 0)
    rm, rm_params = _converted(tmp, "rm", "Gemma2ForSequenceClassification", 272, 1)
    small_rm, _ = _converted(tmp, "small_rm", "Gemma2ForSequenceClassification", 200, 2)
    hh = os.path.join(tmp, "hh", "helpful-base")
    os.makedirs(hh)
    for split in ("train", "test"):
        with open(os.path.join(hh, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for p in HH_PROMPTS:
                f.write(json.dumps({"chosen": p + " Sure.", "rejected": p + " No."}) + "\n")
    return dict(tmp=tmp, tok_vocab=tok_vocab, policy=policy, policy_params=policy_params, rm=rm,
                rm_params=rm_params, small_rm=small_rm, hh=os.path.join(tmp, "hh"))


def _par_config(world, rm_workdir=None):
    spec = importlib.util.spec_from_file_location(
        "par", os.path.join(ROOT, "configs", "rlhf", "par.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("helpful_lsc")
    config.data.path = world["hh"]
    config.data.prompt_len, config.data.response_len = 24, 3
    config.policy.workdir = world["policy"]
    config.rewards.properties.helpful.rm_workdir = rm_workdir or world["rm"]
    config.rewards.properties.helpful.reference.num_samples = 2
    config.rl.update(dict(num_steps=2, batch_size=8, num_minibatches=1, log_every=1,
                          save_every=2, progress=False, kl_coef=(0.05, 0.01)))
    config.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
    assert not config.data.tokenizer
    return config


def _run_like_main(config, workdir):
    """What ``python -m lsc.main`` does: validate, write config.json, run the job."""
    from lsc import config as config_lib

    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    main_lib.write_resolved_config(config, workdir)
    return rlhf.run(config, workdir)


@pytest.mark.slow
def test_sweep_results_tokenizer_record_and_finished_rerun(world, monkeypatch):
    config = _par_config(world)
    workdir = os.path.join(world["tmp"], "run")
    assert _run_like_main(config, workdir) == 0

    # One results.json for the sweep; the per-run summaries stay where they were.
    assert not os.path.exists(os.path.join(workdir, "sweep.json"))
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["seeds"] == [int(config.seed)] and results["kl_coefs"] == [0.05, 0.01]
    assert [(r["kl_coef"], r["dir"]) for r in results["runs"]] == [(0.05, "kl_0.05"),
                                                                   (0.01, "kl_0.01")]
    for entry in results["runs"]:
        summary = json.load(open(os.path.join(workdir, entry["dir"], "summary.json")))
        assert summary["step"] == 2 and entry["train"] == summary["train"]

    # config.json records the converted models, not par.py's 2B preset.
    written = json.load(open(os.path.join(workdir, "config.json")))
    for section, path, params in (("policy.model", world["policy"], world["policy_params"]),
                                  ("rm_model", world["rm"], world["rm_params"])):
        node = written
        for part in section.split("."):
            node = node[part]
        assert node["arch"]["d_model"] == 32 and node["arch"]["num_layers"] == 2
        assert node["arch"]["vocab_size"] == 272
        role = "policy" if section == "policy.model" else "reward_model/helpful"
        record = written["models"][role]
        assert record["path"] == path and record["arch"] == node["arch"]
        # transformers' count; our reward head has a bias besides the score weights.
        assert record["parameters"] == params + (role != "policy")
    assert written["models"]["value"]["parameters"] == world["policy_params"] + 32 + 1
    assert written["models"]["reward_model/helpful"]["source"] == \
        "rewards.properties.helpful.rm_workdir"

    # A finished workdir: nothing is loaded or computed, the files are rewritten the same.
    def fail(*args, **kwargs):
        raise AssertionError("a finished job must do no work")

    monkeypatch.setattr(align_common, "tokenizer_and_prompts", fail)
    monkeypatch.setattr(reference_bank, "reference_table", fail)
    monkeypatch.setattr(rlhf_job, "train_rlhf", fail)
    assert _run_like_main(config, workdir) == 0
    assert json.load(open(os.path.join(workdir, "results.json"))) == results
    assert json.load(open(os.path.join(workdir, "config.json"))) == written


def test_tokenizer_comes_from_the_policy_directory(world):
    config = _par_config(world)
    tok, _, _ = align_common.tokenizer_and_prompts(config, os.path.join(world["tmp"], "t"), "test")
    assert tok.vocab_size == world["tok_vocab"]
    assert align_common.default_tokenizer(config, "") == os.path.join(world["policy"],
                                                                       "tokenizer")
    # Without the policy's tokenizer files the data source's default stays.
    bare = os.path.join(world["tmp"], "bare_policy")
    shutil.copytree(world["policy"], bare, ignore=shutil.ignore_patterns("tokenizer"))
    config.policy.workdir = bare
    assert align_common.default_tokenizer(config, "world.model") == "world.model"


def test_small_reward_model_vocabulary_names_its_workdir(world):
    config = _par_config(world, rm_workdir=world["small_rm"])
    with pytest.raises(ValueError) as e:
        rlhf.run(config, os.path.join(world["tmp"], "small"))
    message = str(e.value)
    assert "config.rewards.properties.helpful.rm_workdir" in message
    assert world["small_rm"] in message and "vocab_size=200" in message
    assert f"({world['tok_vocab']})" in message and "config.model.arch" not in message
