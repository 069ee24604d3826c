"""End to end through ``python -m lsc.main`` (job ``rlhf``): a run killed with SIGKILL after its
first checkpoint and restarted in the same workdir ends with bitwise the same state (policy,
value model, optimisers, RNG, reference cache) and the same ``summary.json`` as an uninterrupted
run, for PPO and for GRPO."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax_subprocess import subprocess_env

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Sharding info not provided")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "rlhf", "synthetic.py") + ":hh_lsc_sum"
NUM_STEPS = 12
ARCH = ["d_model=16", "num_layers=1", "num_heads=2", "num_kv_heads=2", "head_dim=8",
        "mlp_dim=32"]
OVERRIDES = [
    "--config.world.pairs_train=16", "--config.world.pairs_test=8",
    "--config.world.sft_train=8", "--config.world.sft_test=8",
    "--config.world.prompts_train=24", "--config.world.prompts_test=8",
    *[f"--config.policy.model.arch.{a}" for a in ARCH],
    *[f"--config.rm_model.arch.{a}" for a in ARCH],
    "--config.data.response_len=6", "--config.rewards.properties.helpful.reference.num_samples=4",
    f"--config.rl.num_steps={NUM_STEPS}", "--config.rl.batch_size=8", "--config.rl.save_every=3",
    "--config.rl.log_every=5", "--config.rl.progress=False", "--config.rl.time_phases=False",
]


def env():
    return subprocess_env()


# A GRPO run (group of 2 samples per prompt, KL as a loss term, two mini-batches).
GRPO = ["--config.rl.algorithm=grpo", "--config.rl.num_samples=2", "--config.rl.kl_penalty=loss"]


def command(workdir, extra=()):
    return [sys.executable, "-m", "lsc.main", f"--config={CONFIG}", f"--workdir={workdir}",
            *OVERRIDES, *extra]


def run_to_end(workdir, extra=()):
    proc = subprocess.run(command(workdir, extra), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def final_state(workdir):
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "state")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path)


def flat(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def start_and_signal(workdir, sig, extra=()):
    """Starts a run, sends ``sig`` once its first checkpoint exists; returns the process."""
    proc = subprocess.Popen(command(workdir, extra), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline:
        steps = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else [])
                 if d.isdigit()]
        if steps or proc.poll() is not None:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the signal: " + proc.stderr.read()[-2000:]
    proc.send_signal(sig)
    proc.wait()
    return proc


@pytest.mark.parametrize("extra", [(), GRPO], ids=["ppo", "grpo"])
def test_kill_and_restart_is_bitwise(tmp_path, extra):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    start_and_signal(killed, signal.SIGKILL, extra)
    ckpt_dir = os.path.join(killed, "checkpoints")
    killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert killed_at < NUM_STEPS
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    resumed = run_to_end(killed, extra)
    assert "resuming from step" in resumed.stderr
    run_to_end(full, extra)
    if extra:
        with open(os.path.join(full, "summary.json")) as f:
            assert json.load(f)["algorithm"] == "grpo"

    a, b = flat(final_state(full)), flat(final_state(killed))
    assert len(a) == len(b) and len(a) > 10
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with open(os.path.join(full, "summary.json")) as f1, \
            open(os.path.join(killed, "summary.json")) as f2:
        assert json.load(f1) == json.load(f2)
    with open(os.path.join(full, "reference_cache.json")) as f1, \
            open(os.path.join(killed, "reference_cache.json")) as f2:
        cache = json.load(f1)
        assert cache == json.load(f2) and len(cache) > 0


def test_sigterm_checkpoints_and_exits(tmp_path):
    workdir = str(tmp_path / "preempted")
    proc = start_and_signal(workdir, signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr.read()[-2000:]
    ckpt_dir = os.path.join(workdir, "checkpoints")
    saved = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert 0 < saved < NUM_STEPS
    resumed = run_to_end(workdir)
    assert f"resuming from step {saved}" in resumed.stderr
    assert os.path.exists(os.path.join(workdir, "summary.json"))
