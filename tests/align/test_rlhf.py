"""RLHF on tiny models: compilation counts, objectives that improve, KL that grows as gamma
falls, and the rollout's reference coming from the frozen base policy."""

import jax.numpy as jnp
import numpy as np
import pytest

from lsc.align import advantages, references, rlhf, utility
from lsc.align.rlhf import rollout as rl_rollout
from lsc.parallel import mesh as mesh_lib
from lsc.parallel import partitioning
from lsc.train import optim

import align_fixtures as fx

NUM_PROMPTS, BATCH = 16, 8


def _trainer(method, source, *, algorithm="ppo", k=2, time_phases=False, steps=30, lr=3e-3,
             cache=True, kl_penalty="reward", **fields):
    spec = utility.UtilitySpec(method, ("a",),
                               (utility.ReferenceSpec(source, quantile=0.5, num_samples=4),))
    models = rlhf.Models(pi0=fx.policy(0), reward_models=[fx.reward_model(10)])
    cfg = rlhf.rl_config(num_steps=steps, batch_size=BATCH, algorithm=algorithm, num_samples=k,
                         kl_coef=0.1, ppo_epochs=2,
                         num_minibatches=1 if algorithm == "rloo" else 2,
                         time_phases=time_phases, reference_cache=cache, progress=False,
                         kl_penalty=kl_penalty, **fields)
    tx_p = optim.make_optimizer(dict(learning_rate=lr), steps * cfg.updates_per_step)
    tx_v = optim.make_optimizer(dict(learning_rate=1e-2), steps * cfg.updates_per_step)
    mesh = mesh_lib.make_mesh({"data": -1})
    return rlhf.RLTrainer(spec, cfg, models, tx_p, tx_v, mesh, partitioning.DEFAULT_RULES,
                          num_prompts=NUM_PROMPTS, response_len=fx.R)


def _run(trainer, gamma, steps):
    prompts = fx.prompts(NUM_PROMPTS)
    rng = np.random.default_rng(0)
    state = trainer.init_state()
    history = []
    for _ in range(steps):
        idx = rng.choice(NUM_PROMPTS, BATCH, replace=False)
        timings = {}
        state, m = trainer.step(state, {"prompt": prompts[idx], "slot": idx.astype(np.int32)},
                                gamma, timings)
        history.append({**m, **timings})
    return state, history


def _mean(history, key, sl):
    return float(np.mean([h[key] for h in history[sl]]))


@pytest.mark.parametrize("method,source", [("raw", "none"), ("lsc", "quantile")])
@pytest.mark.slow
def test_ppo_improves_objective_and_kl_grows_as_gamma_falls(method, source):
    steps = 30
    trainer = _trainer(method, source, steps=steps)
    _, low = _run(trainer, 0.01, steps)
    _, high = _run(trainer, 0.3, steps)
    first, last = slice(0, 5), slice(-5, None)
    # Weak regularisation: the run's own objective E[u] - gamma KL rises.
    assert _mean(low, "objective", last) > _mean(low, "objective", first) + 0.2, (
        _mean(low, "objective", first), _mean(low, "objective", last))
    assert _mean(low, "utility", last) > _mean(low, "utility", first)
    # KL to pi0 is positive and larger for the smaller gamma.
    kl_low, kl_high = _mean(low, "kl_k3", last), _mean(high, "kl_k3", last)
    assert 0 < kl_high < kl_low, (kl_high, kl_low)
    assert _mean(low, "kl", last) > 0
    # One compilation of the rollout and of the update for 60 steps and two values of gamma.
    assert trainer.traces["rollout"] == 1 and trainer.traces["update"] == 1, trainer.traces
    for key in ("entropy", "response_length", "clip_fraction", "value_loss", "reward/a",
                "time/rollout", "time/update"):
        assert np.isfinite(low[-1][key]), key


@pytest.mark.slow
def test_rloo_improves_objective():
    steps = 25
    trainer = _trainer("lsc", "quantile", algorithm="rloo", k=4, steps=steps, lr=3e-3)
    _, hist = _run(trainer, 0.01, steps)
    assert _mean(hist, "objective", slice(-5, None)) > _mean(hist, "objective", slice(0, 5))
    assert trainer.traces["update"] == 1


@pytest.mark.parametrize("algorithm,penalty", [("grpo", "reward"), ("dr_grpo", "loss")])
@pytest.mark.slow
def test_group_algorithms_improve_the_objective_and_compile_once(algorithm, penalty):
    """GRPO (KL in the return) and Dr. GRPO (KL as a k3 loss term): no value head, the group of a
    prompt's 4 samples as baseline; the objective rises, one compilation for two gammas."""
    steps = 25
    trainer = _trainer("lsc", "quantile", algorithm=algorithm, k=4, steps=steps, lr=3e-3,
                       kl_penalty=penalty)
    assert trainer.value_graphdef is None
    _, hist = _run(trainer, 0.01, steps)
    _run(trainer, 0.3, 2)
    assert _mean(hist, "utility", slice(-5, None)) > _mean(hist, "utility", slice(0, 5)) + 0.05
    assert trainer.traces["rollout"] == 1 and trainer.traces["update"] == 1, trainer.traces
    for key in ("policy_loss", "clip_fraction", "kl_loss", "group_std", "zero_std_fraction",
                "advantage_std"):
        assert np.isfinite(hist[-1][key]), key
    assert 0.0 <= hist[-1]["zero_std_fraction"] <= 1.0


@pytest.mark.slow
def test_phased_rollout_compiles_once_and_times_every_phase():
    trainer = _trainer("lsc", "quantile", time_phases=True, steps=4)
    _, hist = _run(trainer, 0.1, 4)
    assert {trainer.traces[k] for k in ("reference", "sample", "score", "update")} == {1}
    for key in ("time/reference", "time/sample", "time/score", "time/update"):
        assert all(h[key] > 0 for h in hist), key
    # The cache: later steps estimate fewer prompts than the first (16 prompts, batches of 8).
    assert hist[0]["reference_new"] == BATCH
    assert sum(h["reference_new"] for h in hist) <= NUM_PROMPTS


@pytest.mark.slow
def test_rollout_reference_is_the_base_policy_quantile():
    """After training moved the policy away from pi0, the rollout's references still equal the
    quantile of pi0's samples (the estimator on pi0 with the rollout's key)."""
    trainer = _trainer("lsc", "quantile", steps=6, lr=1e-2, cache=False)
    state, _ = _run(trainer, 0.01, 5)
    prompts = fx.prompts(NUM_PROMPTS)[:BATCH]
    batch = {"prompt": prompts, "slot": np.arange(BATCH, dtype=np.int32)}
    _, ro = trainer.rollout(state, batch, 0.01)
    ref_key = rl_rollout.keys(state)[0]
    est = references.ReferenceEstimator(trainer.spec, trainer.pi0_graphdef, trainer.rm_graphdefs,
                                       max_new_tokens=fx.R)
    want = est(trainer.frozen.pi0, trainer.frozen.rms, prompts, ref_key).r_ref
    np.testing.assert_allclose(np.asarray(ro.r_ref), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_run_started_from_a_reference_cache_estimates_nothing():
    """A sweep's later runs start from the earlier run's cache: a full cache is used as it is
    (rollout references read from it, nothing estimated); an empty one is filled."""
    trainer = _trainer("lsc", "quantile", steps=4)
    table = np.linspace(-1.0, 1.0, NUM_PROMPTS, dtype=np.float32)[:, None]
    state = trainer.init_state((table, np.ones(NUM_PROMPTS, bool)))
    batch = {"prompt": fx.prompts(NUM_PROMPTS)[:BATCH], "slot": np.arange(BATCH, dtype=np.int32)}
    state, ro = trainer.rollout(state, batch, 0.1)
    np.testing.assert_array_equal(np.asarray(ro.r_ref), table[:BATCH])
    assert float(ro.metrics["reference_new"]) == 0
    np.testing.assert_array_equal(np.asarray(state.ref_table), table)
    fresh, ro = trainer.rollout(trainer.init_state(), batch, 0.1)
    assert float(ro.metrics["reference_new"]) == BATCH
    assert np.asarray(fresh.ref_filled)[:BATCH].all()
    with pytest.raises(ValueError, match="does not fit 16 prompts x 1 properties"):
        trainer.init_state((table[:4], np.ones(4, bool)))


def test_rollout_logs_the_pipeline_stages_and_advantage_statistics():
    """``transformed/<property>`` is the mean LSC transform of the rollout's rewards against its
    references (numpy), and group advantages average 0 (RLOO and GRPO)."""
    for algorithm in ("rloo", "grpo"):
        trainer = _trainer("lsc", "quantile", algorithm=algorithm, k=4, steps=2)
        state, hist = _run(trainer, 0.01, 2)
        prompts = fx.prompts(NUM_PROMPTS)[:BATCH]
        batch = {"prompt": prompts, "slot": np.arange(BATCH, dtype=np.int32)}
        _, ro = trainer.rollout(state, batch, 0.01)
        logits = (np.asarray(ro.rewards, np.float64)[:, 0]
                  - np.repeat(np.asarray(ro.r_ref, np.float64)[:, 0], 4))
        want = np.mean(-np.logaddexp(0.0, -logits))  # log sigma(r - r_ref)
        np.testing.assert_allclose(float(ro.metrics["transformed/a"]), want, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ro.utility), -np.logaddexp(0.0, -logits),
                                   rtol=1e-5, atol=1e-6)
        for h in hist:
            assert abs(h["advantage_mean"]) < 1e-5, (algorithm, h["advantage_mean"])
            assert h["advantage_abs_mean"] > 0 and h["advantage_std"] > 0


def test_gdpo_rollout_utility_is_the_group_normalised_reward():
    """Under ``gdpo`` (a pipeline method) the rollout's utility is the reward standardised over
    each prompt's k samples (numpy, ddof = 1), and ``transformed/a`` is its mean."""
    k = 4
    trainer = _trainer("gdpo", "none", algorithm="grpo", k=k, steps=1)
    state = trainer.init_state()
    prompts = fx.prompts(NUM_PROMPTS)[:BATCH]
    batch = {"prompt": prompts, "slot": np.arange(BATCH, dtype=np.int32)}
    _, ro = trainer.rollout(state, batch, 0.01)
    r = np.asarray(ro.rewards, np.float64)[:, 0].reshape(BATCH, k)
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True)
                                              + advantages.EPS)
    np.testing.assert_allclose(np.asarray(ro.utility).reshape(BATCH, k), want, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(float(ro.metrics["transformed/a"]), want.mean(), atol=1e-5)


@pytest.mark.parametrize("algorithm", rlhf.ALGORITHMS)
@pytest.mark.slow
def test_every_update_takes_its_advantages_from_the_estimator_registry(monkeypatch, algorithm):
    """An estimator registered under the algorithm's name in ``advantages.ESTIMATORS`` (``gae``
    for PPO) is what the update uses: its constant advantages are the logged ones."""
    calls = []

    def constant_group(returns, valid=None):
        calls.append(algorithm)
        return jnp.full(jnp.shape(returns), 0.25, jnp.float32)

    def constant_gae(rewards, values, mask, discount, lam):
        calls.append(algorithm)
        return jnp.full(jnp.shape(rewards), 0.25, jnp.float32), rewards

    ppo = algorithm == "ppo"
    extra = {"whiten_advantages": False} if ppo else {}
    trainer = _trainer("raw", "none", algorithm=algorithm, k=1 if ppo else 4, steps=1, **extra)
    name = trainer.cfg.estimator
    assert name == ("gae" if ppo else algorithm)
    monkeypatch.setitem(advantages.ESTIMATORS, name, constant_gae if ppo else constant_group)
    _, hist = _run(trainer, 0.1, 1)
    assert calls == [algorithm]
    np.testing.assert_allclose(hist[0]["advantage_mean"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(hist[0]["advantage_abs_mean"], 0.25, rtol=1e-6)
