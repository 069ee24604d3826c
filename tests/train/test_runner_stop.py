"""The runner's early stop (:class:`lsc.train.runner.StopRule`): the step it stops at, what it
records, and a resumed run stopping at the same step (the window is in the checkpoint) or at once
(resumed from its stop checkpoint)."""

import os

import jax.numpy as jnp
import pytest
from flax import struct

from lsc.train import runner
from train_fixtures import ListIterator

RULE = runner.StopRule("kl_k1", 4.0, 3, "rl.stop_kl")


@struct.dataclass
class _State:
    step: jnp.ndarray


class _Crash(RuntimeError):
    pass


def _run(workdir, *, num_steps=10, save_every=100, crash_at=None, calls=None, windows=None):
    """A run whose step ``s`` logs ``kl_k1 = s``: the mean of steps s-2..s is s - 1 > 4 first at
    step 6."""
    def step_fn(state, batch):
        step = int(state.step) + 1
        if calls is not None:
            calls.append(step)
        if step == crash_at:
            raise _Crash(step)
        return _State(jnp.asarray(step, jnp.int32)), {"loss": 0.0, "kl_k1": float(step)}, {}

    return runner.run(
        workdir=str(workdir), init=lambda fresh: _State(jnp.asarray(0, jnp.int32)),
        data=ListIterator([{}] * 100), step_fn=step_fn,
        cadence=runner.Cadence(num_steps, 4, save_every, 3, False), finite=("loss",), stop=RULE,
        after_step=(None if windows is None
                    else lambda step, state, ctx: windows.append((step, list(ctx.recent)))))


def test_reason_needs_a_full_window_above_the_threshold():
    assert RULE.reason([9.0, 9.0]) is None
    assert RULE.reason([1.0, 4.0, 7.0]) is None  # mean 4, not above
    assert RULE.reason([0.0, 4.0, 5.0, 7.0]) == (
        "the mean kl_k1 of the last 3 steps, 5.333, exceeds rl.stop_kl = 4")


@pytest.mark.slow
def test_stops_records_and_resumes_to_the_same_step(tmp_path):
    out = _run(tmp_path / "full")
    assert out.step == 6 and not out.preempted and "rl.stop_kl = 4" in out.stopped
    assert out.metrics.history["train"][-1]["step"] == 6  # flushed at the stop
    assert os.path.isdir(tmp_path / "full" / "checkpoints" / "6")
    # Resumed from its stop checkpoint: stops at once, no step taken.
    calls = []
    again = _run(tmp_path / "full", calls=calls)
    assert (again.step, again.stopped, calls) == (6, out.stopped, [])
    # Crashed at step 5 after the checkpoint at 4: the window [2, 3, 4] comes back with it.
    with pytest.raises(_Crash):
        _run(tmp_path / "crashed", save_every=4, crash_at=5)
    windows = []
    resumed = _run(tmp_path / "crashed", save_every=4, windows=windows)
    assert (resumed.start, resumed.step, resumed.stopped) == (4, 6, out.stopped)
    # Hooks see the window up to their step, the restored values included.
    assert windows == [(5, [3.0, 4.0, 5.0]), (6, [4.0, 5.0, 6.0])]
    # No rule crossed: the run goes to num_steps.
    assert _run(tmp_path / "short", num_steps=5).stopped is None
