"""``config.rl`` and its typed config per algorithm family: the family chosen by
``rl.algorithm``, bad values named by their dotted field, and no key dropped (each key is a field
of the typed config, listed in its ``unread``, or an error)."""

import importlib
import json
import os

import ml_collections
import pytest

from lsc import config as config_lib
from lsc.align import rlhf
from lsc.repro import subconfigs

PPO_ONLY = ("value_clip_eps", "gae_lambda", "discount", "whiten_advantages", "value_optim")
EVERY_KEY = dict(
    num_steps=3, batch_size=4, algorithm="ppo", num_samples=2, kl_coef=0.1, kl_estimator="k3",
    kl_penalty="reward", temperature=0.7, reference_cache=False, time_phases=False, log_every=2,
    save_every=3, keep_checkpoints=1, progress=False, snapshot_every=1, snapshot_every_early=1,
    snapshot_early_until=2, snapshot_kl=0.5, stop_kl=5.0, reference_bank=False,
    gold_eval_prompts=5, seed=7, policy_optim={"learning_rate": 1e-3}, ppo_epochs=2,
    num_minibatches=2, clip_eps=0.3, loss_reduction="constant", value_clip_eps=0.4,
    gae_lambda=0.9, discount=0.99, whiten_advantages=False,
    value_optim={"learning_rate": 1e-2})


def _assert_no_key_dropped(rl, cfg):
    """Every key of ``rl`` is a field of ``cfg`` holding its value, or listed in ``cfg.unread``
    (and then ``cfg`` has it only where its family declares it)."""
    for key, value in rl.items():
        if key in cfg.unread:
            continue
        assert getattr(cfg, key) == value, key
    assert set(cfg.unread) <= set(rl)


def test_rl_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_samples >= 2"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="rloo", num_samples=1)
    with pytest.raises(ValueError, match=r"'grpo' needs rl.num_samples >= 2 \(a group"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="grpo", num_samples=1)
    with pytest.raises(ValueError, match="kl_penalty='loss' needs rl.algorithm in"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="ppo", kl_penalty="loss")
    with pytest.raises(ValueError, match="kl_penalty"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="grpo", num_samples=2,
                       kl_penalty="both")
    with pytest.raises(ValueError, match="num_minibatches"):
        rlhf.rl_config(num_steps=1, batch_size=3, num_minibatches=2)
    with pytest.raises(ValueError, match="kl_estimator"):
        rlhf.rl_config(num_steps=1, batch_size=2, kl_estimator="k2")
    with pytest.raises(ValueError, match=r"rl: unknown fields \['bogus'\]"):
        rlhf.rl_config({"num_steps": 1, "batch_size": 2, "bogus": 1})
    with pytest.raises(ValueError, match="rl.seed must be one number here"):
        rlhf.PPOConfig(num_steps=1, batch_size=2, seed=(0, 1))
    with pytest.raises(ValueError, match="rl.stop_kl"):
        rlhf.rl_config(num_steps=1, batch_size=2, stop_kl=-1.0)
    with pytest.raises(ValueError, match="both be 0"):
        rlhf.rl_config(num_steps=1, batch_size=2, snapshot_every_early=5)


def test_the_snapshot_schedule_is_dense_early():
    steps = [s for s in range(1, 201) if rlhf.scheduled(s, 10, 5, 50)]
    assert steps == list(range(5, 51, 5)) + list(range(60, 201, 10))
    assert [s for s in range(1, 7) if rlhf.scheduled(s, 3, 1, 2)] == [1, 2, 3, 6]
    assert [s for s in range(1, 60) if rlhf.scheduled(s, 25)] == [25, 50]
    assert not any(rlhf.scheduled(s, 0) for s in range(1, 60))


def test_a_kl_triggered_export_needs_the_running_kl_to_rise_by_the_step(tmp_path):
    """The mean of the window against the level of the previous export; off at 0; the level a
    resumed run starts from is the last snapshot's below its step."""
    from lsc.align.rlhf import snapshots
    assert not snapshots.kl_triggered([1.0, 1.2], 0.7, 0.5)  # mean 1.1 < 1.2
    assert snapshots.kl_triggered([1.0, 1.4], 0.7, 0.5)  # mean 1.2 >= 1.2
    assert not snapshots.kl_triggered([9.0], 0.0, 0.0) and not snapshots.kl_triggered([], 0, 1)
    for step, level in ((5, 0.25), (10, 1.5), (12, 2.25)):
        os.makedirs(os.path.join(snapshots.snapshot_dir(str(tmp_path), step), "model"))
        with open(os.path.join(snapshots.snapshot_dir(str(tmp_path), step),
                               snapshots.LEVEL_FILE), "w") as f:
            json.dump({"kl_level": level}, f)
    assert snapshots.kl_level(str(tmp_path), 12) == 1.5
    assert snapshots.kl_level(str(tmp_path), 13) == 2.25
    assert snapshots.kl_level(str(tmp_path), 5) == 0.0


@pytest.mark.parametrize("algorithm", rlhf.ALGORITHMS)
def test_the_algorithm_chooses_the_family_and_no_key_is_dropped(algorithm):
    rl = dict(EVERY_KEY, algorithm=algorithm)
    cfg = rlhf.rl_config(ml_collections.ConfigDict(rl))
    assert type(cfg) is rlhf.FAMILIES[algorithm]
    _assert_no_key_dropped(rl, cfg)
    clipped = ("ppo_epochs", "num_minibatches", "clip_eps", "loss_reduction")
    want_unread = {"ppo": ("loss_reduction",), "grpo": PPO_ONLY, "dr_grpo": PPO_ONLY,
                   "rloo": PPO_ONLY + clipped}[algorithm]
    assert cfg.unread == tuple(sorted(want_unread))
    assert cfg.updates_per_step == (1 if algorithm == "rloo" else 4)
    assert cfg.policy_optim == {"learning_rate": 1e-3} and cfg.seed == 7
    assert cfg.gold_eval_prompts == 5


def test_a_ppo_field_under_a_group_algorithm_is_unread_and_still_checked():
    """PPO's fields in a config switched to 'grpo' (one file serves every algorithm) are not
    fields of GRPO's config, are listed as unread, and a bad value is named by its dotted field,
    in the typed config and in the up-front validation."""
    cfg = rlhf.rl_config(num_steps=1, batch_size=2, algorithm="grpo", num_samples=2,
                         gae_lambda=0.9, value_optim={"learning_rate": 1e-2})
    assert cfg.unread == ("gae_lambda", "value_optim")
    assert not hasattr(cfg, "gae_lambda") and not hasattr(cfg, "value_optim")
    with pytest.raises(ValueError, match=r"rl.gae_lambda: 2 is not allowed; must be a number"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="grpo", num_samples=2, gae_lambda=2)
    config = importlib.import_module("configs.rlhf.synthetic").get_config("helpful_raw")
    config.rl.algorithm, config.rl.num_samples, config.rl.gae_lambda = "grpo", 2, 2.0
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(config)
    assert e.value.errors == [("rl.gae_lambda",
                               "2.0 is not allowed; must be a number in [0.0, 1.0]")]
    assert "config.rl.gae_lambda: 2.0 is not allowed;" in str(e.value)


def test_a_group_field_under_ppo_is_named_by_its_dotted_field():
    """GRPO's KL loss term under PPO: an error of ``config.rl.kl_penalty``; a family's config
    built for another algorithm is refused."""
    config = importlib.import_module("configs.rlhf.synthetic").get_config("helpful_raw")
    config.rl.kl_penalty = "loss"
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(config)
    assert [field for field, _ in e.value.errors] == ["rl.kl_penalty"]
    assert "config.rl.kl_penalty: rl.kl_penalty='loss' needs rl.algorithm in" in str(e.value)
    with pytest.raises(ValueError, match="rl.algorithm='grpo' is configured by GroupConfig"):
        rlhf.PPOConfig(num_steps=1, batch_size=2, algorithm="grpo", num_samples=2)


def _shipped_rl_sections():
    for module, arg in [("configs.rlhf.synthetic", ""), ("configs.rlhf.synthetic", "hh_lsc_sum"),
                        ("configs.rlhf.paper", ""), ("configs.rlhf.par", ""),
                        ("configs.best_of_k.synthetic", "")]:
        yield f"{module}:{arg}", importlib.import_module(module).get_config(arg)
    for module in ("configs.repro.synthetic_hh", "configs.repro.grpo_study"):
        config = importlib.import_module(module).get_config("tiny")
        for name in config.rlhf.runs:
            yield f"{module}:{name}", subconfigs.rlhf(config, name)


def test_no_key_of_a_shipped_rl_section_is_dropped():
    """Every key of the rl section of each shipped config (and of each run of the
    reproductions) reaches its typed config, as a field or as unread."""
    seen = set()
    for where, config in _shipped_rl_sections():
        rl = config.rl.to_dict()
        gamma, seed = rlhf.kl_coefs(config)[0], rlhf.rl_seeds(config)[0]
        cfg = rlhf.rl_config(config.rl, kl_coef=gamma, seed=seed)
        _assert_no_key_dropped(dict(rl, kl_coef=gamma, seed=seed), cfg)
        seen.add((cfg.algorithm, getattr(cfg, "reduction", None)))
    # RLOO is run by switching rl.algorithm (configs/rlhf/synthetic.py); the GRPO study runs
    # both clipped group algorithms under both reductions
    assert seen == {("ppo", None), ("grpo", "sequence"), ("grpo", "constant"),
                    ("dr_grpo", "constant"), ("dr_grpo", "sequence")}, seen
