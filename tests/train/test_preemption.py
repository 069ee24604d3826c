"""End to end through ``python -m lsc.main`` (job ``train_rm``): SIGKILL mid-run (during a save)
and restart gives bitwise-identical parameters and an identical ``summary.json``; SIGTERM writes
a checkpoint and exits cleanly."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax_subprocess import subprocess_env

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Sharding info not provided")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "rm", "synthetic_helpful.py")
NUM_STEPS = 40
OVERRIDES = [
    "--config.world.pairs_train=256", "--config.world.pairs_test=64",
    "--config.world.sft_train=8", "--config.world.sft_test=8",
    "--config.world.prompts_train=8", "--config.world.prompts_test=8",
    "--config.model.arch.d_model=16", "--config.model.arch.num_layers=1",
    "--config.model.arch.num_heads=2", "--config.model.arch.num_kv_heads=2",
    "--config.model.arch.head_dim=8", "--config.model.arch.mlp_dim=32",
    f"--config.train.num_steps={NUM_STEPS}", "--config.train.batch_size=8",
    "--config.train.save_every=5", "--config.train.eval_every=20", "--config.train.log_every=5",
    "--config.train.keep_checkpoints=2", "--config.train.progress=False",
    "--config.optim.warmup_steps=5", "--config.eval.batch_size=32",
]


def env():
    return subprocess_env()


def command(workdir):
    return [sys.executable, "-m", "lsc.main", f"--config={CONFIG}", f"--workdir={workdir}",
            *OVERRIDES]


def run_to_end(workdir):
    proc = subprocess.run(command(workdir), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def start(workdir):
    return subprocess.Popen(command(workdir), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def complete_steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if re.fullmatch(r"\d+", n))


def saving(workdir):
    return bool(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


def wait_for(proc, predicate, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"process exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def final_state(workdir):
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "state")
    tree = ocp.PyTreeCheckpointer().restore(path)
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    run_to_end(workdir)
    return workdir


def assert_same_run(a, b):
    with open(os.path.join(a, "summary.json")) as f, open(os.path.join(b, "summary.json")) as g:
        assert f.read() == g.read()
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys() and len(sa) > 10
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_sigkill_during_a_save_then_restart_is_bitwise_identical(uninterrupted, tmp_path):
    workdir = str(tmp_path)
    proc = start(workdir)
    wait_for(proc, lambda: len(complete_steps(workdir)) >= 1, "the first checkpoint")
    first = complete_steps(workdir)
    wait_for(proc, lambda: saving(workdir) and complete_steps(workdir) != [], "a later save")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = complete_steps(workdir)
    assert killed_at and killed_at[-1] < NUM_STEPS, killed_at
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    run_to_end(workdir)
    assert complete_steps(workdir)[-1] == NUM_STEPS
    assert not saving(workdir)
    assert first[0] <= killed_at[-1]
    assert_same_run(uninterrupted, workdir)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(uninterrupted, tmp_path):
    workdir = str(tmp_path)
    proc = start(workdir)
    wait_for(proc, lambda: len(complete_steps(workdir)) >= 1, "the first checkpoint")
    seen = complete_steps(workdir)[-1]
    time.sleep(0.15)  # usually lands between regular saves, so the exit save is a new step
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert "SIGTERM received" in err
    stopped = int(re.search(r"preempted at step (\d+) of", err).group(1))
    steps = complete_steps(workdir)
    # The checkpoint holds exactly the state the run stopped at.
    assert seen <= stopped < NUM_STEPS and steps[-1] == stopped, (seen, stopped, steps)
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    run_to_end(workdir)  # and the preempted run resumes to the same result
    assert_same_run(uninterrupted, workdir)
