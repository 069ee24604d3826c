"""The reproduction's job configs: one world for every job, every field validated up front."""

import importlib.util
import os

import pytest

from lsc import config as config_lib
from lsc.repro import evaluation, subconfigs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(arg=""):
    spec = importlib.util.spec_from_file_location(
        "repro_cfg", os.path.join(ROOT, "configs", "repro", "synthetic_hh.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("arg", ["", "large", "tiny"])
def test_every_job_config_validates_and_shares_the_world(arg):
    config = load(arg)
    subconfigs.validate_all(config)
    jobs = subconfigs.all_configs(config)
    assert [j.job for _, j in jobs] == (["train_rm"] * 2 + ["train_sft", "train_predictor"]
                                        + ["rlhf"] * len(config.rlhf.runs))
    assert len(config.rlhf.runs) == 4
    # RL seeds separate from the world seed, at least 3 per method (2 at toy size), one gamma
    # per method, and references from the predictors' shared base samples.
    assert len(config.rl.seed) >= (2 if arg == "tiny" else 3)
    for name, run in config.rlhf.runs.items():
        sub = subconfigs.rlhf(config, name, samples_path="/s.npz")
        assert list(sub.rl.kl_coef) == [run.kl_coef] and sub.rl.seed == config.rl.seed
        assert sub.rewards.reference_samples == "/s.npz"
        for prop in sub.rewards.properties.values():
            if prop.reference.source == "quantile":
                assert prop.reference.num_samples == config.predictor.reference.num_samples
    for _, job in jobs:
        assert job.world.to_dict() == config.world.to_dict()
        assert job.seed == config.seed
        assert job.data.source == "synthetic"
    assert [subconfigs.reward_model(config, p).rm.property for p in subconfigs.PROPERTIES] == [
        "harmless", "helpful"]
    rl = subconfigs.rlhf(config, "helpful_lsc", {"helpful": "/a", "harmless": "/b"}, "/sft")
    assert rl.rewards.properties.helpful.rm_workdir == "/a"
    assert rl.policy.workdir == "/sft"
    assert rl.data.response_len == config.data.response_len


def test_the_exact_arm_section_is_checked_across_fields():
    config = load()
    assert config.world.pair_replicates == 6 and config.world.version == 2
    config.exact.kl_grid = (0.5, 4.5)
    config.exact.primary_ks = (4, 64)
    with pytest.raises(config_lib.ConfigError) as e:
        subconfigs.validate_all(config)
    errors = dict(e.value.errors)
    assert "not below log(exact.bank_size) = 4.159" in errors["exact.kl_grid"]
    assert "[64] not in exact.ks" in errors["exact.primary_ks"]
    replicate = subconfigs.reward_model(config, "helpful", 2)
    assert replicate.rm.replicate == 2 and replicate.world.pair_replicates == 6


def test_the_replicate_offset_shifts_each_replicates_draw_and_is_validated():
    config = load("tiny")
    assert config.world.replicate_offset == 0
    config.world.replicate_offset = 3
    assert subconfigs.reward_model(config, "helpful", 1).rm.replicate == 4
    assert subconfigs.reward_model(config, "harmless", 0).rm.replicate == 3
    subconfigs.validate_all(config)
    config.world.replicate_offset = -1
    with pytest.raises(config_lib.ConfigError) as e:
        subconfigs.validate_all(config)
    assert "world.replicate_offset" in dict(e.value.errors)


def test_bad_fields_are_named_by_their_path_in_the_reproduction_config():
    config = load("tiny")
    config.rm.train.num_steps = 0
    config.sft.optim.schedule = "linear"
    config.rl.clip_eps = -1.0
    config.rlhf.runs.helpful_lsc.rewards.properties.helpful.reference.quantile = 2.0
    with pytest.raises(config_lib.ConfigError) as e:
        subconfigs.validate_all(config)
    fields = [f for f, _ in e.value.errors]
    assert "rm.train.num_steps" in fields
    assert "sft.optim.schedule" in fields
    assert "rl.clip_eps" in fields
    assert "rlhf.runs.helpful_lsc.rewards.properties.helpful.reference.quantile" in fields
    assert len(fields) == len(set(fields))


@pytest.mark.parametrize("variant,expected", [
    ("helpful_raw", ("raw", "none", ["helpful"])),
    ("helpful_lsc", ("lsc", "p85", ["helpful"])),
    ("hh_raw_sum", ("raw_sum", "none", ["harmless", "helpful"])),
    ("hh_lsc_sum", ("lsc_sum", "harmless:fixed_response+helpful:p85",
                    ["harmless", "helpful"])),
])
def test_rlhf_runs_are_labelled_in_the_reports_words(variant, expected):
    config = load("large")
    assert evaluation.reference_label(config.rlhf.runs[variant].rewards) == expected
