"""Best-of-k: k = 1 returns the base sample; larger k returns the argmax of independently scored
samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lsc.align import best_of_k, utility
from lsc.models import heads, sampling
from tests.compile_log import compile_log

import align_fixtures as fx


def _setup():
    pg, ps = nnx.split(fx.policy(0))
    rms = [nnx.split(fx.reward_model(10)), nnx.split(fx.reward_model(20))]
    spec = utility.UtilitySpec("lsc_sum", ("helpful", "harmless"),
                               (utility.ReferenceSpec("quantile"),
                                utility.ReferenceSpec("none")))
    return spec, pg, ps, rms


def test_k1_returns_the_base_sample():
    spec, pg, ps, rms = _setup()
    prompts = fx.prompts(4)
    key = jax.random.key(7)
    sel = best_of_k.BestOfK(spec, pg, [g for g, _ in rms], k=1, max_new_tokens=fx.R)
    out = sel(ps, [s for _, s in rms], prompts, np.zeros((4, 2), np.float32), key)
    base = sampling.sample(pg, ps, jnp.asarray(prompts), key, max_new_tokens=fx.R, num_samples=1)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(base.tokens[:, 0]))
    np.testing.assert_array_equal(np.asarray(out.index), 0)


def test_k4_picks_the_highest_utility():
    spec, pg, ps, rms = _setup()
    prompts = fx.prompts(3, seed=2)
    key = jax.random.key(11)
    r_ref = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.0]], np.float32)
    sel = best_of_k.BestOfK(spec, pg, [g for g, _ in rms], k=4, max_new_tokens=fx.R)
    out = sel(ps, [s for _, s in rms], prompts, r_ref, key)
    smp = sampling.sample(pg, ps, jnp.asarray(prompts), key, max_new_tokens=fx.R, num_samples=4)
    rows = np.repeat(prompts, 4, axis=0)
    flat = np.asarray(smp.tokens).reshape(12, fx.R)
    scores = np.stack([np.asarray(heads.score(g, s, rows, flat)).reshape(3, 4) for g, s in rms],
                      -1).astype(np.float64)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    u = np.log(sig(scores - r_ref[:, None, :])).sum(-1)
    idx = u.argmax(1)
    np.testing.assert_array_equal(np.asarray(out.index), idx)
    np.testing.assert_array_equal(np.asarray(out.tokens),
                                  np.asarray(smp.tokens)[np.arange(3), idx])
    np.testing.assert_allclose(np.asarray(out.rewards), scores[np.arange(3), idx], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.utility), u.max(1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_best_of_k_job_writes_chosen_samples(tmp_path):
    import importlib.util
    import json
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec_ = importlib.util.spec_from_file_location(
        "_best_of_k_cfg", os.path.join(root, "configs", "best_of_k", "synthetic.py"))
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    config = module.get_config("hh_lsc_sum")
    for name, v in dict(pairs_train=16, pairs_test=8, sft_train=8, sft_test=8, prompts_train=8,
                        prompts_test=6).items():
        config.world[name] = v
    for model in (config.policy.model, config.rm_model):
        model.arch.update(d_model=16, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=8,
                          mlp_dim=32)
    config.data.response_len = 6
    config.rewards.properties.helpful.reference.num_samples = 3
    config.best_of_k.ks = (1, 3)
    config.best_of_k.num_prompts = 5
    config.best_of_k.batch_size = 4
    with compile_log() as log:
        assert best_of_k.run(config, str(tmp_path)) == 0
    # One program per k, whatever the number of prompt batches (5 prompts in batches of 4), and
    # one for the references.
    assert log.count("best_of_k_step") == 2 and log.count("reference_step") == 1, log.events
    for k in (1, 3):
        lines = (tmp_path / "best_of_k" / f"k{k}.jsonl").read_text().splitlines()
        assert len(lines) == 5
        rec = json.loads(lines[0])
        assert set(rec["rewards"]) == {"helpful", "harmless"} == set(rec["gold"])
        assert 0 <= rec["index"] < k
        # The utility is the LSC sum of the stored rewards and references.
        want = sum(np.log(1 / (1 + np.exp(-(rec["rewards"][p] - rec["r_ref"][p]))))
                   for p in rec["rewards"])
        np.testing.assert_allclose(rec["utility"], want, rtol=1e-4, atol=1e-5)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["per_k"]) == {"1", "3"}
