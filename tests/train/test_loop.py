"""The shared training loop, in process on the 8 simulated CPU devices of tests/conftest.py."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lsc.data import pipeline
from lsc.parallel import mesh as mesh_lib
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import loop, runner
from lsc.train import reward_model as rm
from train_fixtures import (OPTIM, ListIterator, create_rm, flat_params, tiny_pairs,
                            train_config)

# The centering term gives the head bias a real gradient (BT alone leaves it at exactly 0 in
# theory, so Adam would amplify rounding noise there).
LOSS = rm.pairwise_loss_fn(center_coef=0.05)


def one_device_mesh():
    return mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])


def run(workdir, *, mesh=None, data=None, optim=OPTIM, evaluator=None, compute_dtype="float32",
        **kw):
    data = data if data is not None else tiny_pairs(64)
    return loop.train(
        workdir=str(workdir), create_model=create_rm(compute_dtype=compute_dtype), loss_fn=LOSS,
        train_data=pipeline.batch_iterator(data, kw.get("batch_size", 8), seed=3),
        train_config=train_config(**kw), optim_config=optim,
        mesh=mesh or one_device_mesh(), seed=0, evaluator=evaluator)


def assert_params_equal(a, b, **tol):
    fa, fb = flat_params(a), flat_params(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if tol:
            np.testing.assert_allclose(fa[k], fb[k], err_msg=str(k), **tol)
        else:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=str(k))


def evaluator_for(data):
    return loop.Evaluator(
        data=lambda: pipeline.batch_iterator(data, 8, shuffle=False, num_epochs=1, prefetch=0),
        outputs=rm.pair_rewards,
        finalize=lambda out: {"accuracy": rm.pairwise_metrics(out["r_chosen"],
                                                              out["r_rejected"])["accuracy"]})


def test_compiles_once_learns_and_writes_outputs(tmp_path):
    data = tiny_pairs(64)
    result = run(tmp_path, data=data, num_steps=40, eval_every=20, save_every=10,
                 keep_checkpoints=2, optim=dict(OPTIM, learning_rate=3e-2),
                 evaluator=evaluator_for(tiny_pairs(32, seed=9)))
    assert result.compilations == 1
    summary = json.load(open(tmp_path / "summary.json"))
    train = summary["history"]["train"]
    assert [r["step"] for r in train] == list(range(2, 41, 2))
    assert np.mean([r["loss"] for r in train[-5:]]) < np.mean([r["loss"] for r in train[:3]])
    assert [r["step"] for r in summary["history"]["eval"]] == [20, 40]
    assert summary["eval"]["accuracy"] > 0.75
    # keep_checkpoints=2: only the two newest remain.
    assert checkpoint_lib.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [30, 40]
    events = os.listdir(tmp_path / "tensorboard")
    assert any(e.startswith("events.out.tfevents") for e in events)
    # float32 master weights; the learning rate follows warm-up (step 1 has lr 0 -> 0.5 peak).
    assert all(v.dtype == np.float32 for v in flat_params(result.state).values())
    assert train[0]["learning_rate"] == pytest.approx((0.0 + 0.5) * 3e-2 / 2)


def test_resume_after_leftover_tmp_dir_is_bitwise_identical(tmp_path):
    full = run(tmp_path / "full", num_steps=9)  # checkpoints 3, 6, 9
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    os.remove(part / "summary.json")
    # The save of step 9 died half-way: only orbax's temporary directory, with partial content.
    shutil.rmtree(part / "checkpoints" / "9")
    tmp = part / "checkpoints" / "9.orbax-checkpoint-tmp"
    (tmp / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    (tmp / "state.orbax-checkpoint-tmp" / "garbage").write_bytes(b"\x00" * 10)
    ckpt = checkpoint_lib.Checkpointer(str(part / "checkpoints"))
    assert ckpt.latest_step() == 6
    ckpt.close()
    resumed = run(part, num_steps=9)
    assert resumed.step == 9
    assert not tmp.exists()
    assert_params_equal(full.state, resumed.state)
    assert open(tmp_path / "full" / "summary.json").read() == open(part / "summary.json").read()


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    data = tiny_pairs(64)
    batches = list(pipeline.batch_iterator(data, 8, seed=1, num_epochs=1, prefetch=0))
    batches[6] = dict(batches[6], nan=np.ones((8,), np.int32))
    for b in batches:
        b.setdefault("nan", np.zeros((8,), np.int32))

    def nan_loss(model, batch, rng):
        loss, count, sums = LOSS(model, batch, rng)
        return loss * jnp.where(jnp.any(batch["nan"] > 0), jnp.nan, 1.0), count, sums

    with pytest.raises(runner.NonFiniteLossError, match=r"at step 7.*last good checkpoint is step 6"):
        loop.train(workdir=str(tmp_path), create_model=create_rm(), loss_fn=nan_loss,
                   train_data=ListIterator(batches), train_config=train_config(num_steps=8),
                   optim_config=OPTIM, mesh=one_device_mesh())
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.all_steps() == [3, 6]
    ckpt.close()
    assert not (tmp_path / "summary.json").exists()
    # Resuming restores step 6 (finite) and the data position after 6 batches.
    it = ListIterator(batches)
    with pytest.raises(runner.NonFiniteLossError, match="at step 7"):
        loop.train(workdir=str(tmp_path), create_model=create_rm(), loss_fn=nan_loss,
                   train_data=it, train_config=train_config(num_steps=8),
                   optim_config=OPTIM, mesh=one_device_mesh())
    assert it.pos == 7


@pytest.mark.slow
def test_a_failed_last_save_never_hides_the_error_that_stopped_the_run(tmp_path, monkeypatch):
    """Closing the checkpointer waits for its background save, which can fail (a full disk). A
    run already failing raises its own error (the save's is logged); a run that ended well raises
    the save's."""
    def failing_close(self):
        raise OSError("no space left on device")

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "close", failing_close)
    data = tiny_pairs(64)
    batches = list(pipeline.batch_iterator(data, 8, seed=1, num_epochs=1, prefetch=0))

    def nan_loss(model, batch, rng):
        loss, count, sums = LOSS(model, batch, rng)
        return loss * jnp.nan, count, sums

    with pytest.raises(runner.NonFiniteLossError, match="at step 1"):
        loop.train(workdir=str(tmp_path / "nan"), create_model=create_rm(), loss_fn=nan_loss,
                   train_data=ListIterator(batches), train_config=train_config(num_steps=2),
                   optim_config=OPTIM, mesh=one_device_mesh())
    with pytest.raises(OSError, match="no space left"):
        loop.train(workdir=str(tmp_path / "ok"), create_model=create_rm(), loss_fn=LOSS,
                   train_data=ListIterator(batches), train_config=train_config(num_steps=2),
                   optim_config=OPTIM, mesh=one_device_mesh())


@pytest.fixture(scope="module")
def single_device_runs(tmp_path_factory):
    out = {}
    for name in ("adamw", "adafactor"):
        workdir = tmp_path_factory.mktemp(f"single_{name}")
        result = run(workdir, num_steps=4, optim=dict(OPTIM, name=name))
        out[name] = (result, json.load(open(workdir / "summary.json"))["train"])
    return out


@pytest.mark.parametrize("mesh_config,name", [
    ({"data": 8}, "adamw"),
    ({"data": 2, "fsdp": 2, "tensor": 2}, "adamw"),
    ({"fsdp": 4, "tensor": 2}, "adafactor"),
], ids=["data8", "data2-fsdp2-tensor2", "fsdp4-tensor2-adafactor"])
@pytest.mark.slow
def test_sharded_matches_single_device(tmp_path, single_device_runs, mesh_config, name):
    single, single_train = single_device_runs[name]
    mesh = mesh_lib.make_mesh(mesh_config)
    sharded = run(tmp_path, num_steps=4, optim=dict(OPTIM, name=name), mesh=mesh)
    assert_params_equal(single.state, sharded.state, rtol=2e-5, atol=2e-6)
    # Parameters really are distributed.
    q = sharded.state.params["backbone"]["layers"][0]["attn"]["q"]["kernel"].get_value()
    assert len(q.sharding.device_set) == 8
    if mesh_config.get("tensor", 1) > 1:
        assert "tensor" in str(q.sharding.spec)
    sharded_train = json.load(open(tmp_path / "summary.json"))["train"]
    assert single_train["loss"] == pytest.approx(sharded_train["loss"], rel=1e-5)


@pytest.mark.slow
def test_grad_accumulation_equals_big_batch():
    mesh = one_device_mesh()
    tx = optax.sgd(0.5)
    graphdef, state, shardings = loop.init_state(create_rm(), tx, mesh, (), seed=0)
    batch = {k: jnp.asarray(v) for k, v in next(pipeline.batch_iterator(
        tiny_pairs(64), 16, seed=0, prefetch=0)).items()}
    batch["valid"] = batch["valid"].at[3].set(0).at[10].set(0)  # unequal counts per micro-batch
    sched = lambda t: 0.5  # noqa: E731
    outs = {}
    for k in (1, 4):
        step = jax.jit(loop.make_train_step(graphdef, LOSS, tx, sched, grad_accum_steps=k))
        outs[k] = step(state, batch)
    (s1, m1), (s4, m4) = outs[1], outs[4]
    assert float(m1["examples"]) == float(m4["examples"]) == 14.0
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-5)
    assert_params_equal(s1, s4, rtol=1e-5, atol=1e-7)
    # And the update really is SGD on the mean loss over the 14 valid rows (numeric check).
    params = state.params

    def mean_loss(p):
        model = nnx.merge(graphdef, p, state.model_state)
        s, c, _ = LOSS(model, batch, None)
        return s / c

    g = jax.jit(jax.grad(mean_loss))(params)
    want = jax.tree.map(lambda p, g: p - 0.5 * g, params, g)
    for (path, a), (_, b) in zip(nnx.to_flat_state(want), nnx.to_flat_state(s4.params)):
        np.testing.assert_allclose(np.asarray(a.get_value()), np.asarray(b.get_value()),
                                   rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_bfloat16_compute_keeps_float32_master_weights(tmp_path):
    f32 = run(tmp_path / "f32", num_steps=2)
    bf16 = run(tmp_path / "bf16", num_steps=2, compute_dtype="bfloat16")
    assert all(v.dtype == np.float32 for v in flat_params(bf16.state).values())
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf16.state.opt_state)
               if jnp.issubdtype(x.dtype, jnp.floating))
    a = json.load(open(tmp_path / "f32" / "summary.json"))["history"]["train"][0]["loss"]
    b = json.load(open(tmp_path / "bf16" / "summary.json"))["history"]["train"][0]["loss"]
    assert a == pytest.approx(b, rel=3e-2)
    assert a != b


def test_bad_train_config_is_rejected():
    with pytest.raises(ValueError, match="grad_accum_steps=3 must divide train.batch_size=8"):
        train_config(grad_accum_steps=3)
    with pytest.raises(ValueError, match="unknown fields"):
        loop.TrainConfig.from_mapping({"num_steps": 1, "batch_size": 1, "lr": 1})
