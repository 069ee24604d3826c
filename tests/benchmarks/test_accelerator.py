"""``benchmarks/accelerator.py --toy`` end to end on the CPU: every case is in the JSON with
positive timings, and the JAX and PyTorch sides agree on the same weights (greedy tokens, the
reward model's first Bradley-Terry loss, the PPO step's rewards and log-probabilities)."""

import json
import math
import os
import subprocess
import sys

import pytest

from jax_subprocess import ROOT, subprocess_env

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_util  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("accel") / "toy.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--toy", "--out",
         str(out), "--markdown"],
        cwd=ROOT, env=subprocess_env(devices=None), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f), proc.stdout


def _positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_toy_run_has_every_case_with_positive_timings(toy):
    result, stdout = toy
    assert result["sizes"] == "toy"
    assert set(result["cases"]) == {"sampling", "rm_train_step", "ppo_step"}
    env = result["environment"]
    for name in ("jax", "jaxlib", "flax", "torch", "transformers", "driver", "gpu"):
        assert name in env
    rows = result["cases"]["sampling"]
    assert [(r["batch"], r["k"]) for r in rows] == [(1, 1), (4, 2)]
    for r in rows:
        for key in ("ours_s", "torch_s", "ours_tok_s", "torch_tok_s", "ours_first_call_s"):
            assert _positive(r[key]), (key, r)
        assert r["ours_tok_s"] == pytest.approx(r["batch"] * r["k"] * r["new"] / r["ours_s"])
    for case in ("rm_train_step", "ppo_step"):
        r = result["cases"][case]
        for key in ("ours_step_s", "torch_step_s", "ours_compile_s", "model_flops_per_step"):
            assert _positive(r[key]), (case, key, r[key])
        assert r["ours_mfu"] is None and r["peak_flops"] is None  # a CPU has no listed peak
    for phase in result["cases"]["ppo_step"]["phases"].values():
        assert _positive(phase["ours_s"]) and _positive(phase["torch_s"])
    for label in ("sampling 1 x 1", "reward-model train step", "PPO step"):
        assert f"| {label}" in stdout


@pytest.mark.slow
def test_toy_sides_agree_on_the_same_weights(toy):
    result, _ = toy
    greedy = result["cases"]["sampling"][0]
    assert greedy["decoding"] == "greedy" and greedy["greedy_agreement"] == 1.0
    rm = result["cases"]["rm_train_step"]
    # A random head: the loss differs from log 2 (what a zero head gives on both sides).
    assert abs(rm["torch_loss0"] - math.log(2.0)) > 1e-3
    assert rm["ours_loss0"] == pytest.approx(rm["torch_loss0"], rel=1e-4)
    ppo = result["cases"]["ppo_step"]
    assert ppo["check_reward_max_abs"] < 1e-4 and ppo["check_logprob_max_abs"] < 1e-4


@pytest.mark.slow
def test_t5_reward_step_flops_matches_xla_count_of_the_forward():
    """A third of the step count is the forward's FLOPs: within 3% of XLA's cost analysis of
    the project's T5 reward model (matmuls dominate at these widths; XLA adds elementwise ops)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from configs.models import t5_1_1
    from lsc.models import heads
    from lsc.models import t5 as t5_lib

    arch = t5_1_1.get_config("tiny")
    arch.update(dict(d_model=128, num_heads=4, d_kv=32, d_ff=512, vocab_size=64, num_layers=2,
                     num_decoder_layers=1))
    cfg = t5_lib.T5Config.from_dict(arch.to_dict())
    graphdef, state = nnx.split(heads.RewardModel(t5_lib.T5(cfg, rngs=nnx.Rngs(0)),
                                                  rngs=nnx.Rngs(1)))
    rows, p, r = 2, 24, 8
    forward = jax.jit(lambda s, x, y: nnx.merge(graphdef, s)(x, y))
    cost = forward.lower(state, jnp.ones((rows, p), jnp.int32),
                         jnp.ones((rows, r), jnp.int32)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    counted = bench_util.t5_reward_step_flops(cfg, rows, p, r) / 3
    assert counted == pytest.approx(float(cost["flops"]), rel=0.03)
