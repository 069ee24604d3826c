"""The training jobs from their shipped configs: validation rules and a tiny end-to-end chain
train_rm -> train_sft -> train_predictor (in process, shrunk by overrides)."""

import importlib.util
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from lsc import config as config_lib
from lsc import main as main_lib
from lsc.data import pipeline
from lsc.models import hf_t5
from lsc.train import predictor
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import common
from lsc.train import reward_model
from tests.compile_log import compile_log

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(relpath, arg=""):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("relpath,arg", [
    ("rm/synthetic_helpful.py", ""), ("rm/synthetic_harmless.py", ""),
    ("rm/synthetic_helpful.py", "t5"), ("rm/synthetic_helpful.py", "large_data"),
    ("sft/synthetic.py", ""),
    ("predictor/synthetic.py", ""),
])
def test_synthetic_configs_validate(relpath, arg):
    config = load(relpath, arg)
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    assert config.job in main_lib.JOBS


def test_large_data_variant_leaves_the_default_unchanged():
    default = load("rm/synthetic_helpful.py")
    large = load("rm/synthetic_helpful.py", "large_data")
    assert default.world.pairs_train == 4000 and default.train.num_steps == 400
    assert default.model.pooling == "last" and default.model.arch.num_layers == 2
    assert large.world.pairs_train == 100_000
    assert large.model.pooling == "mean" and large.model.arch.num_layers == 3
    assert large.model.arch.d_model == default.model.arch.d_model
    assert large.world.pairs_test == default.world.pairs_test


@pytest.mark.parametrize("prop", ["helpful", "harmless"])
def test_t5_base_configs_need_the_data_path(prop, tmp_path):
    config = load("rm/t5_base.py", prop)
    assert config.model.kind == "t5" and config.model.arch.d_model == 768
    assert config.rm.property == prop
    with pytest.raises(config_lib.ConfigError, match="config.data.path"):
        config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    config.data.path = str(tmp_path)
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    config.model.init_from = str(tmp_path / "missing")
    with pytest.raises(config_lib.ConfigError, match="config.model.init_from"):
        config_lib.validate(config, jobs=tuple(main_lib.JOBS))


@pytest.mark.parametrize("field,value,needle", [
    ("train.grad_accum_steps", 0, "an integer >= 1"),
    ("model.arch.compute_dtype", "float16", "choose one of: float32, bfloat16"),
    ("model.arch.param_dtype", "bfloat16", "a trained model keeps float32 master weights"),
    ("optim.name", "sgd", "choose one of: adamw, adafactor"),
    ("optim.schedule", "linear", "choose one of: constant, cosine"),
    ("rm.loss", "hinge", "choose one of: bradley_terry, pointwise"),
    ("model.pooling", "max", "choose one of: last, mean, sum"),
    ("rm.center_coef", -1.0, "must be a number >= 0.0"),
    ("optim.end_lr_fraction", 2.0, "in [0.0, 1.0]"),
])
def test_bad_training_fields_name_the_dotted_field(field, value, needle):
    config = load("rm/synthetic_helpful.py")
    *sections, name = field.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[name] = value
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    assert f"config.{field}" in str(err.value) and needle in str(err.value)


def test_pooling_rule_accepts_exactly_the_model_poolings():
    from lsc.models import heads
    rule = config_lib.RULES["model.pooling"]
    assert all(rule(p, None) is None for p in heads.POOLINGS)
    assert rule("max", None)


def shrink(config):
    world = config.world
    world.pairs_train, world.pairs_test, world.sft_train, world.sft_test = 128, 32, 128, 32
    world.prompts_train, world.prompts_test = 16, 16
    arch = config.model.arch
    arch.d_model, arch.num_layers, arch.num_heads, arch.num_kv_heads = 16, 1, 2, 2
    arch.head_dim, arch.mlp_dim = 8, 32
    config.train.num_steps, config.train.batch_size, config.train.save_every = 6, 8, 6
    config.train.log_every, config.train.eval_every, config.train.progress = 3, 0, False
    config.eval.batch_size = 16
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    return config


@pytest.mark.slow
def test_rm_sft_reference_chain(tmp_path):
    rm_dir, sft_dir, ref_dir = (str(tmp_path / n) for n in ("rm", "sft", "ref"))
    rm_cfg = shrink(load("rm/synthetic_helpful.py"))
    rm_cfg.rm.loss = "pointwise"
    rm_cfg.model.pooling = "mean"
    with compile_log() as log:
        assert main_lib.JOBS["train_rm"](rm_cfg, rm_dir) == 0
    # No step function recompiles: the train step once for its 6 steps; the evaluation once
    # for the loop's evaluator and once for the held-out summary's.
    assert log.count("train_step") == 1 and log.count("eval_step") == 2, log.events
    main_lib.write_resolved_config(rm_cfg, rm_dir)
    rm_summary = json.load(open(os.path.join(rm_dir, "summary.json")))
    assert rm_summary["held_out"]["pairs"] == 32
    assert 0.5 <= rm_summary["gold_ceiling"]["expected"] <= 1.0
    assert len(rm_summary["held_out"]["reliability"]) == 10

    # The saved run rebuilds the same (mean-pooled) model: re-scoring the held-out pairs
    # reproduces the summary's log-likelihood (a 'last'-token head would not).
    run_cfg = common.load_run_config(rm_dir)
    create, _ = common.reward_model_factory(run_cfg.model, 211, int(run_cfg.seed))
    rm = checkpoint_lib.load_model(rm_dir, create)
    assert rm.pooling == "mean"
    _, test_pairs, tok_path = common.read_pairs_for(run_cfg, rm_dir, "helpful")
    test = pipeline.tokenize_pairs(test_pairs, common.load_tokenizer(run_cfg, tok_path),
                                   int(run_cfg.data.prompt_len), int(run_cfg.data.response_len))
    out = reward_model.pair_rewards(rm, {k: jnp.asarray(v) for k, v in test.arrays.items()})
    metrics = reward_model.pairwise_metrics(np.asarray(out["r_chosen"]),
                                            np.asarray(out["r_rejected"]))
    assert metrics["log_likelihood"] == pytest.approx(rm_summary["held_out"]["log_likelihood"],
                                                      abs=1e-5)

    sft_cfg = shrink(load("sft/synthetic.py"))
    with compile_log() as log:
        assert main_lib.JOBS["train_sft"](sft_cfg, sft_dir) == 0
    assert log.count("train_step") == 1 and log.count("eval_step") == 1, log.events
    main_lib.write_resolved_config(sft_cfg, sft_dir)
    sft_summary = json.load(open(os.path.join(sft_dir, "summary.json")))
    assert sft_summary["eval"]["perplexity"] > 1.0
    assert {"policy_helpful", "demos_helpful"} <= set(sft_summary["gold"])
    # After 6 steps the policy is close to uniform over its 256 ids, 45 of them past the
    # tokenizer's 211; the sampler draws none of those.
    assert sft_summary["gold"]["out_of_vocabulary_tokens"] == 0

    ref_cfg = shrink(load("predictor/synthetic.py"))
    ref_cfg.reference.rm_workdir, ref_cfg.reference.policy_workdir = rm_dir, sft_dir
    ref_cfg.reference.num_samples, ref_cfg.reference.sample_batch_size = 4, 8
    ref_cfg.model.pooling = "mean"
    with pytest.raises(ValueError, match="pooling must be 'last' for a predictor"):
        main_lib.JOBS["train_predictor"](ref_cfg, ref_dir)
    ref_cfg.model.pooling = "last"
    with compile_log() as log:
        assert main_lib.JOBS["train_predictor"](ref_cfg, ref_dir) == 0
    assert log.count("train_step") == 1, log.events
    ref_summary = json.load(open(os.path.join(ref_dir, "summary.json")))
    assert {"mae", "rmse", "baseline_mae"} <= set(ref_summary["eval"])
    own = np.load(os.path.join(ref_dir, "oracle_targets.npz"))

    # Shared samples (as the reproduction's predictor stage draws them once for every reward
    # model) give the same targets as the job's own draw; a file drawn otherwise is refused.
    shared = str(tmp_path / "shared.npz")
    predictor.write_reference_samples(ref_cfg, str(tmp_path / "draw"), shared)
    with np.load(shared) as a, np.load(os.path.join(ref_dir, "reference_samples.npz")) as b:
        assert a["train_samples"].shape[1:] == (4, ref_cfg.data.response_len)
        np.testing.assert_array_equal(a["train_samples"], b["train_samples"])
    ref_cfg.reference.samples_path = shared
    config_lib.validate(ref_cfg, jobs=tuple(main_lib.JOBS))
    shared_dir = str(tmp_path / "ref_shared")
    assert main_lib.JOBS["train_predictor"](ref_cfg, shared_dir) == 0
    got = np.load(os.path.join(shared_dir, "oracle_targets.npz"))
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split], own[split])
    assert not os.path.exists(os.path.join(shared_dir, "reference_samples.npz"))
    ref_cfg.seed = int(ref_cfg.seed) + 1
    with pytest.raises(ValueError, match="samples_path=.*seed"):
        main_lib.JOBS["train_predictor"](ref_cfg, str(tmp_path / "ref_other_seed"))


@pytest.mark.slow
@pytest.mark.hf
def test_t5_reward_model_from_an_imported_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.T5Config(vocab_size=256, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                   num_decoder_layers=1, num_heads=2,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    ckpt = str(tmp_path / "t5")
    transformers.T5ForConditionalGeneration(hf_cfg).save_pretrained(ckpt)
    config = shrink(load("rm/synthetic_helpful.py", "t5"))
    config.model.init_from = ckpt
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    # The run's precision and attention settings apply to the imported architecture.
    for impl in ("auto", "xla"):
        config.model.arch.attention_impl = impl
        _, _, arch = common.backbone_factory(config.model, 211, 0)
        assert arch.attention_impl == impl and arch.d_model == 16
    workdir = str(tmp_path / "rm")
    assert main_lib.JOBS["train_rm"](config, workdir) == 0
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["step"] == 6 and summary["held_out"]["pairs"] == 32
    # The fresh run started from the checkpoint: its shared embedding moved away from the
    # imported one by at most a few AdamW steps.
    create, _ = common.reward_model_factory(config.model, 211, int(config.seed))
    trained = checkpoint_lib.load_model(workdir, create)
    imported = hf_t5.load_t5(ckpt)
    a = np.asarray(trained.backbone.shared.embedding[...])
    b = np.asarray(imported.shared.embedding[...])
    assert np.max(np.abs(a - b)) < 6 * 1e-2 and not np.array_equal(a, b)
