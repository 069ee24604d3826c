"""``config.json`` records the models a job ran: a reward model trained from an imported T5.1.1
checkpoint (``model.init_from``) is recorded with the checkpoint's architecture, not the
preset's; and the rules of which config sections a loaded model overrides."""

import importlib.util
import json
import os

import pytest

from lsc import config as config_lib
from lsc import main as main_lib
from lsc.train import run_models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(relpath, arg):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.hf
@pytest.mark.slow
def test_train_rm_records_the_architecture_of_init_from(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_decoder_layers=2, num_heads=4,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    hf = transformers.T5ForConditionalGeneration(hf_cfg)
    ckpt = str(tmp_path / "t5")
    hf.save_pretrained(ckpt)
    config = _config("rm/synthetic_helpful.py", "t5")
    assert config.model.arch.d_model != 32
    world = config.world
    world.pairs_train, world.pairs_test, world.sft_train, world.sft_test = 16, 8, 8, 8
    world.prompts_train, world.prompts_test = 8, 8
    config.train.update(dict(num_steps=1, batch_size=8, save_every=1, log_every=1, eval_every=0,
                             progress=False))
    config.eval.batch_size = 8
    config.model.init_from = ckpt
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    workdir = str(tmp_path / "rm")
    main_lib.write_resolved_config(config, workdir)
    assert main_lib.JOBS["train_rm"](config, workdir) == 0

    written = json.load(open(os.path.join(workdir, "config.json")))
    arch = written["model"]["arch"]
    assert (arch["d_model"], arch["num_layers"], arch["num_decoder_layers"], arch["num_heads"],
            arch["vocab_size"]) == (32, 2, 2, 4, 256)
    assert written["model"]["init_from"] == ckpt and written["model"]["kind"] == "t5"
    record = written["models"]["model"]
    assert record["source"] == "model.init_from" and record["path"] == ckpt
    assert record["arch"] == arch and record["pooling"] == config.model.pooling
    # transformers' T5ForConditionalGeneration plus the reward head's kernel and bias.
    assert record["parameters"] == sum(p.numel() for p in hf.parameters()) + 32 + 1


def _record(role, source, path, d_model):
    return run_models.ModelRecord(role, source, path, "decoder", {"d_model": d_model}, 10,
                                  "last" if role.startswith("reward") else None)


def test_loaded_sections_follow_the_sources(tmp_path):
    policy = _record("policy", "policy.workdir", "/p", 8)
    rm_a = _record("reward_model/a", "rewards.properties.a.rm_workdir", "/a", 16)
    rm_b = _record("reward_model/b", "rewards.properties.b.rm_workdir", "/b", 16)
    sections = run_models.loaded_sections([policy, rm_a, rm_b])
    assert sections == {"policy.model": {"kind": "decoder", "arch": {"d_model": 8}},
                        "rm_model": {"kind": "decoder", "arch": {"d_model": 16},
                                     "pooling": "last"}}
    # Reward models of different shapes: rm_model describes none of them and is dropped; a
    # random one keeps it.
    rm_c = _record("reward_model/b", "rewards.properties.b.rm_workdir", "/b", 24)
    assert run_models.loaded_sections([rm_a, rm_c]) == {"rm_model": None}
    random_rm = _record("reward_model/b", "rm_model", "", 16)
    assert run_models.loaded_sections([rm_a, random_rm]) == {}
    random_policy = _record("policy", "policy.model", "", 8)
    assert run_models.loaded_sections([random_policy]) == {}

    import ml_collections

    config = ml_collections.ConfigDict({"policy": {"workdir": "/p", "model": {
        "kind": "decoder", "arch": {"d_model": 2048}, "init_from": ""}}, "rm_model": {"x": 1}})
    run_models.record(str(tmp_path), config, [policy, rm_a, rm_c])
    written = json.load(open(tmp_path / "config.json"))
    assert written["policy"]["model"] == {"kind": "decoder", "arch": {"d_model": 8},
                                          "init_from": ""}
    assert "rm_model" not in written
    assert sorted(written["models"]) == ["policy", "reward_model/a", "reward_model/b"]
    assert written["models"]["policy"]["path"] == "/p"
