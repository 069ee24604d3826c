"""Every shipped config file builds with each of its arguments and passes validation.

The paper configs point at data and checkpoints that only exist on a user's machine, so their
only allowed errors are the empty paths the user fills in on the command line.
"""

import importlib

import pytest

from lsc import config as config_lib
from lsc import main

# config module -> its arguments ("" is the default).
EXPERIMENTS = {
    "configs.rm.synthetic_helpful": ["", "decoder", "t5", "large_data"],
    "configs.rm.synthetic_harmless": ["", "t5"],
    "configs.rm.t5_base": ["helpful", "harmless"],
    "configs.predictor.synthetic": [""],
    "configs.sft.synthetic": [""],
    "configs.rlhf.synthetic": ["", "helpful_raw", "helpful_lsc", "hh_raw_sum", "hh_lsc_sum"],
    "configs.rlhf.paper": ["", "helpful_raw", "hh_lsc_sum"],
    "configs.rlhf.par": ["", "helpful_raw"],
    "configs.best_of_k.synthetic": ["", "hh_lsc_sum"],
    "configs.best_of_k.paper": ["", "hh_raw_sum"],
    "configs.repro.synthetic_hh": ["", "large", "tiny"],
}
USER_PATHS = {"data.path"}  # empty in the paper configs until the user gives them
CASES = [(module, arg) for module, args in EXPERIMENTS.items() for arg in args]


@pytest.mark.parametrize("module,arg", CASES)
def test_shipped_config_builds_and_validates(module, arg):
    config = importlib.import_module(module).get_config(arg)
    try:
        config_lib.validate(config, jobs=tuple(main.JOBS))
        if config.job in main.VALIDATORS:
            main.VALIDATORS[config.job](config)
    except config_lib.ConfigError as e:
        assert {field for field, _ in e.errors} <= USER_PATHS, str(e)
        assert config.data.source != "synthetic"


@pytest.mark.parametrize("module,bad", [("configs.rm.synthetic_helpful", "large"),
                                        ("configs.rm.synthetic_harmless", "large_data"),
                                        ("configs.rm.t5_base", ""),
                                        ("configs.rlhf.synthetic", "helpful_sum"),
                                        ("configs.rlhf.par", "hh_lsc_sum"),
                                        ("configs.sft.synthetic", "t5"),
                                        ("configs.repro.synthetic_hh", "huge")])
def test_an_unknown_argument_is_refused(module, bad):
    with pytest.raises(ValueError, match="unknown|takes no argument"):
        importlib.import_module(module).get_config(bad)


def test_the_paper_t5_reward_models_differ_only_in_their_property():
    from configs.rm import t5_base

    helpful, harmless = t5_base.get_config("helpful"), t5_base.get_config("harmless")
    assert helpful.rm.property == "helpful" and harmless.rm.property == "harmless"
    harmless.rm.property = "helpful"
    assert harmless.to_dict() == helpful.to_dict()


@pytest.mark.parametrize("module,arg", [("configs.rm.t5_base", "helpful"),
                                        ("configs.rlhf.paper", ""), ("configs.rlhf.par", ""),
                                        ("configs.best_of_k.paper", "")])
def test_the_paper_configs_read_hh_rlhf_with_skip_and_count(module, arg):
    """A real download's few odd records are skipped and counted, not fatal."""
    config = importlib.import_module(module).get_config(arg)
    assert config.data.source == "hh_rlhf"
    assert config.data.on_error == "skip" and config.data.max_skip_fraction == 0.01


@pytest.mark.parametrize("field,value,message", [
    ("rl.algorithm", "rloo", "config.rl.algorithm: rl.algorithm='rloo' needs rl.num_samples >= 2"),
    ("sft.train.grad_accum_steps", 3,
     "config.sft.train.grad_accum_steps: train.grad_accum_steps=3 must divide"),
    ("rlhf.runs.hh_lsc_sum.rewards.properties.harmless.reference.response", "",
     "config.rlhf.runs.hh_lsc_sum.rewards.properties.harmless.reference.response: is empty"),
])
def test_checks_across_fields_fail_before_anything_runs(field, value, message):
    from configs.repro import synthetic_hh

    config = synthetic_hh.get_config("large")  # every RLHF run (the default has two)
    *parents, name = field.split(".")
    section = config
    for part in parents:
        section = section[part]
    section[name] = value
    with pytest.raises(config_lib.ConfigError) as e:
        main.VALIDATORS["repro"](config)
    assert message in str(e.value)
    assert len(e.value.errors) == 1


def test_a_typed_config_refuses_a_sweep_where_one_value_belongs():
    from lsc.align import rlhf
    from lsc.train import loop

    with pytest.raises(ValueError, match=r"train.num_steps: \(1, 2\) is not allowed here"):
        loop.TrainConfig(num_steps=(1, 2), batch_size=8)
    with pytest.raises(ValueError, match="rl.algorithm"):
        rlhf.rl_config(num_steps=10, batch_size=4, algorithm=("ppo", "rloo"))
    with pytest.raises(ValueError, match="train.batch_size"):
        loop.TrainConfig(num_steps=10, batch_size=(4, 8))


def _references(section, path=""):
    """``(dotted_path, reference)`` of every ``...reference`` section with a ``response``."""
    for key, value in section.items():
        here = f"{path}.{key}" if path else key
        if hasattr(value, "items"):
            if key == "reference" and "response" in value:
                yield here, value
            else:
                yield from _references(value, here)


def test_fixed_responses_are_in_the_words_of_the_data(tmp_path):
    """The harmlessness refusal is the synthetic world's own (its word-level tokenizer knows
    every word) on synthetic data and the hh-rlhf sentence on real data."""
    from configs import common
    from lsc.align import references
    from lsc.align import utility
    from lsc.data import tokenizer as tokenizer_lib
    from lsc.data import world, world_data

    world_tok = tokenizer_lib.load_tokenizer(world_data.write_tokenizer(str(tmp_path)))
    fixed = {"synthetic": 0, "real": 0}
    alignment = ("configs.rlhf.synthetic", "configs.rlhf.paper", "configs.best_of_k.synthetic",
                 "configs.best_of_k.paper")
    cases = dict.fromkeys(CASES + [(m, v) for m in alignment for v in common.RLHF_VARIANTS])
    for module, arg in cases:
        config = importlib.import_module(module).get_config(arg)
        is_synthetic = config.data.source == "synthetic"
        want = world.REFUSAL if is_synthetic else common.HH_REFUSAL
        for path, ref in _references(config):
            assert ref.response == want, (module, arg, path)
            if ref.source == "fixed_response":
                fixed["synthetic" if is_synthetic else "real"] += 1
                if is_synthetic:  # the tokenizer the job will use accepts it
                    spec = utility.UtilitySpec("lsc_sum", ("harmless",),
                                               (utility.ReferenceSpec(**ref.to_dict()),))
                    references.fixed_response_tokens(spec, world_tok, int(config.data.response_len))
    assert fixed["synthetic"] >= 4 and fixed["real"] >= 2, fixed  # every hh_lsc_sum
    assert tokenizer_lib.unknown_pieces(world_tok, common.HH_REFUSAL)  # why it is not used there
    assert common.rewards("hh_lsc_sum", 4).properties.harmless.reference.response == (
        world.REFUSAL)
