"""``rl.seed`` and the reference bank of the ``rlhf`` job.

* The bank (:mod:`lsc.align.references.bank`) equals numpy quantiles of the reward model's scores of
  the given base-policy samples, and the samples file is matched to the prompts by their rows.
* A job computes its bank once, before RL, whatever its number of seeds and gammas, and never
  estimates a reference inside the loop.
* Two ``rl.seed`` give different trajectories, the same seed the same one; for one seed raw and
  LSC see the same prompt order and sampling keys (common random numbers).
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from lsc.align import rlhf, utility
from lsc.align.references import bank as reference_bank
from lsc.align.references import pi0_samples
from lsc.align.rlhf import rollout as rl_rollout
from tests.compile_log import compile_log

import align_fixtures as fx


def _spec(num_samples=4, quantile=0.5):
    return utility.UtilitySpec("lsc", ("a",), (utility.ReferenceSpec(
        "quantile", quantile=quantile, num_samples=num_samples),))


def test_bank_is_the_numpy_quantile_of_the_given_samples():
    n, k = 7, 6
    prompts = fx.prompts(n, seed=3)
    rng = np.random.default_rng(0)
    samples = rng.integers(2, fx.VOCAB, size=(n, k, fx.R)).astype(np.int32)
    samples[:, :, -1] = 0  # a pad at the end of each response
    rm = fx.reward_model(10)
    table = reference_bank.compute(_spec(num_samples=4, quantile=0.85), fx.policy(0), [rm],
                                   prompts, response_len=fx.R, samples=samples, batch_size=3)
    # Independent reference: each sample scored on its own, numpy's quantile of the first 4.
    scores = np.array([[float(rm(prompts[i:i + 1], samples[i, j:j + 1])[0]) for j in range(k)]
                       for i in range(n)])
    want = np.quantile(scores[:, :4], 0.85, axis=1)
    np.testing.assert_allclose(table[:, 0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not give 4 samples"):
        reference_bank.compute(_spec(), fx.policy(0), [rm], prompts, response_len=fx.R,
                               samples=samples[:, :3])


def _write_samples(path, prompts, samples, **settings):
    values = dict(seed=0, num_samples=samples.shape[1], max_new_tokens=fx.R, temperature=1.0)
    values.update(settings)
    half = len(prompts) // 2
    np.savez(path, train_prompts=prompts[:half], train_samples=samples[:half],
             test_prompts=prompts[half:], test_samples=samples[half:],
             **{k: np.asarray(v) for k, v in values.items()})


def test_read_samples_matches_prompt_rows_and_checks_settings(tmp_path):
    prompts = fx.prompts(10, seed=1)
    assert len({r.tobytes() for r in prompts}) == 10
    samples = np.arange(10 * 3 * fx.R, dtype=np.int32).reshape(10, 3, fx.R)
    path = str(tmp_path / "s.npz")
    _write_samples(path, prompts, samples)
    order = np.array([7, 2, 9, 0, 5])
    got = pi0_samples.read_rows(path, prompts[order], num_samples=2, response_len=fx.R,
                                temperature=1.0)
    np.testing.assert_array_equal(got, samples[order])
    with pytest.raises(ValueError, match="reference_samples.*3 samples per prompt.*need 4"):
        pi0_samples.read_rows(path, prompts, num_samples=4, response_len=fx.R,
                              temperature=1.0)
    with pytest.raises(ValueError, match="temperature 1.0, but rl.temperature is 0.7"):
        pi0_samples.read_rows(path, prompts, num_samples=2, response_len=fx.R,
                              temperature=0.7)
    with pytest.raises(ValueError, match="data.response_len is 9"):
        pi0_samples.read_rows(path, prompts, num_samples=2, response_len=9,
                              temperature=1.0)
    other = fx.prompts(3, seed=99)
    with pytest.raises(ValueError, match="3 of 3 alignment prompts have no samples"):
        pi0_samples.read_rows(path, other, num_samples=2, response_len=fx.R,
                              temperature=1.0)


# --------------------------------------------------------------------------- the job

ARCH = dict(d_model=16, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=8, mlp_dim=32)


def _job_config(variant, seeds, steps=4):
    from configs.rlhf import synthetic as cfg_lib

    config = cfg_lib.get_config(variant)
    config.world.update(dict(pairs_train=16, pairs_test=8, sft_train=8, sft_test=8,
                             prompts_train=24, prompts_test=8))
    for section in (config.policy.model, config.rm_model):
        section.arch.update(ARCH)
    config.data.response_len = 6
    for prop in config.rewards.properties.values():
        prop.reference.num_samples = 4
    config.rl.update(dict(num_steps=steps, batch_size=8, save_every=steps, log_every=1,
                          progress=False, time_phases=False, gold_eval_prompts=0,
                          kl_coef=(0.05,), seed=tuple(seeds)))
    return config


@pytest.fixture()
def recorder(monkeypatch):
    """Counts bank computations and records every step's prompt slots and sampling key."""
    calls = {"bank": 0, "steps": []}
    compute = reference_bank.compute

    def counted(*args, **kwargs):
        calls["bank"] += 1
        return compute(*args, **kwargs)

    step = rlhf.RLTrainer.step

    def recorded(self, state, batch, kl_coef, timings=None):
        key = jax.random.key_data(rl_rollout.keys(state)[1])
        calls["steps"].append((np.asarray(batch["slot"]).copy(), np.asarray(key).copy()))
        return step(self, state, batch, kl_coef, timings)

    monkeypatch.setattr(reference_bank, "compute", counted)
    monkeypatch.setattr(rlhf.RLTrainer, "step", recorded)
    return calls


def _history(run_dir):
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        return json.load(f)["history"]["train"]


@pytest.mark.slow
def test_seeds_bank_once_and_common_random_numbers(tmp_path, recorder):
    lsc_dir, raw_dir, again_dir = (str(tmp_path / n) for n in ("lsc", "raw", "again"))
    with compile_log() as log:
        assert rlhf.run(_job_config("helpful_lsc", (0, 1)), lsc_dir) == 0
    # No step function recompiles: one rollout and one update program for both seeds' runs.
    assert log.count("rollout_step") == 1 and log.count("update_step") == 1, log.events
    # One bank for the job's two seeds, none estimated inside the loop.
    assert recorder["bank"] == 1
    runs = {s: _history(rlhf.run_workdir(lsc_dir, s, 0.05, (0, 1), (0.05,))) for s in (0, 1)}
    assert all(h["reference_new"] == 0 for hist in runs.values() for h in hist)
    assert os.path.isdir(os.path.join(lsc_dir, "seed_1", "model"))
    lsc_steps = list(recorder["steps"])

    # Different seeds (run one after the other, 4 steps each): different prompt orders, keys
    # and trajectories.
    assert len(lsc_steps) == 8
    by_seed = {0: lsc_steps[:4], 1: lsc_steps[4:]}
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(by_seed[0], by_seed[1]))
    assert not np.array_equal(by_seed[0][0][1], by_seed[1][0][1])
    assert [h["utility"] for h in runs[0]] != [h["utility"] for h in runs[1]]

    # The same seed again: the same trajectory, bitwise.
    recorder["steps"].clear()
    assert rlhf.run(_job_config("helpful_lsc", (1,)), again_dir) == 0
    assert _history(again_dir) == runs[1]

    # Raw with the same seeds: the same prompt slots and sampling keys step by step; no bank.
    recorder["steps"].clear()
    recorder["bank"] = 0
    assert rlhf.run(_job_config("helpful_raw", (0, 1)), raw_dir) == 0
    assert recorder["bank"] == 0
    assert len(recorder["steps"]) == len(lsc_steps)
    for (slots_a, key_a), (slots_b, key_b) in zip(lsc_steps, recorder["steps"]):
        np.testing.assert_array_equal(slots_a, slots_b)
        np.testing.assert_array_equal(key_a, key_b)


def test_rl_seed_is_validated_and_defaults_to_the_config_seed():
    from lsc import config as config_lib

    config = _job_config("helpful_lsc", (0, -1))
    with pytest.raises(config_lib.ConfigError, match=r"rl\.seed"):
        config_lib.validate(config)
    old = ml_collections.ConfigDict({"seed": 5, "rl": {"kl_coef": 0.1}})
    assert rlhf.rl_seeds(old) == [5]
    assert rlhf.rl_seeds(_job_config("helpful_lsc", (3, 4))) == [3, 4]
    assert rlhf.run_workdir("w", 3, 0.1, [3], [0.1]) == "w"
    assert rlhf.run_workdir("w", 3, 0.1, [3, 4], [0.1, 0.2]) == os.path.join("w", "seed_3",
                                                                             "kl_0.1")
