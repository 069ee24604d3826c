"""lsc.train.checkpoint.Checkpointer's asynchronous saves, on the 8 simulated CPU devices of
tests/conftest.py: what a save writes is the state at the call, even when the caller donates the
arrays to the next step or changes its dicts before the write ends, and the donation still
happens (a buffer that the write still reads would make JAX skip it and copy instead). An exported
model loads straight onto a mesh's shardings."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from lsc.train import checkpoint as checkpoint_lib


def _state(w: np.ndarray, step: int) -> dict:
    return {"w": jnp.asarray(w), "step": jnp.int32(step), "host": np.arange(3, dtype=np.int32)}


@pytest.mark.parametrize("async_save", [True, False])
def test_saves_hold_the_state_at_the_call_when_the_caller_donates_it(tmp_path, async_save):
    w0 = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    step_fn = jax.jit(lambda s: {**s, "w": s["w"] * 2.0 + 1.0, "step": s["step"] + 1},
                      donate_argnums=0)
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path), keep=5, async_save=async_save)
    state = _state(w0, 0)
    data_state = {"pos": 0, "order": [3, 1, 2]}
    donated = []
    for step in range(1, 4):
        state = step_fn(state)
        saved_w = state["w"]
        assert ckpt.save(step, state, data_state, {"loss": [float(step)]})
        state = step_fn(state)  # donates the saved buffers at once
        donated.append(saved_w.is_deleted())
        data_state["pos"] += 1  # and changes the dict the save was given
        data_state["order"].append(step)
    assert not ckpt.save(3, state, data_state, {})  # an existing step: no-op
    ckpt.close()

    reopened = checkpoint_lib.Checkpointer(str(tmp_path))
    assert reopened.all_steps() == [1, 2, 3]
    expected = w0.astype(np.float64)
    for step in range(1, 4):
        expected = expected * 2.0 + 1.0  # the state saved at `step` had 2 * step - 1 updates
        restored, data, metrics = reopened.restore(
            step, checkpoint_lib.abstract_like(_state(w0, 0)))
        np.testing.assert_allclose(np.asarray(restored["w"]), expected, rtol=1e-6)
        assert int(restored["step"]) == 2 * step - 1
        np.testing.assert_array_equal(np.asarray(restored["host"]), np.arange(3))
        assert data == {"pos": step - 1, "order": [3, 1, 2] + list(range(1, step))}
        assert metrics == {"loss": [float(step)]}
        expected = expected * 2.0 + 1.0
    reopened.close()
    assert donated == [True] * 3


def test_cpu_arrays_are_copied_onto_the_same_devices_and_sharding():
    mesh = jax.make_mesh((4, 2), ("data", "model"), devices=jax.devices()[:8])
    x = jax.device_put(np.arange(64.0, dtype=np.float32).reshape(8, 8),
                       NamedSharding(mesh, PartitionSpec("data", "model")))
    tree = {"x": x, "n": 3, "host": np.ones(2)}
    out = checkpoint_lib.copy_cpu_arrays(tree)
    assert out["x"].sharding == x.sharding
    np.testing.assert_array_equal(np.asarray(out["x"]), np.asarray(x))
    pointers = {s.device: s.data.unsafe_buffer_pointer() for s in x.addressable_shards}
    assert all(s.data.unsafe_buffer_pointer() != pointers[s.device]
               for s in out["x"].addressable_shards)
    assert out["n"] == 3 and out["host"] is tree["host"]
    x.delete()
    np.testing.assert_array_equal(np.asarray(out["x"]),
                                  np.arange(64.0, dtype=np.float32).reshape(8, 8))


def test_checkpoints_keep_orbax_standard_layout_both_ways(tmp_path):
    """A replicated and a sharded array on 8 devices: a checkpoint that orbax's standard
    ``StandardSave`` wrote (this module's earlier format) restores through the Checkpointer, and
    the Checkpointer's own checkpoints read back with orbax's ``StandardCheckpointer``."""
    import orbax.checkpoint as ocp

    mesh = jax.make_mesh((8,), ("data",), devices=jax.devices()[:8])
    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    tree = {"replicated": jax.device_put(w, NamedSharding(mesh, PartitionSpec())),
            "sharded": jax.device_put(w * 3.0, NamedSharding(mesh, PartitionSpec("data"))),
            "step": jnp.int32(7)}
    older = tmp_path / "older"
    with ocp.CheckpointManager(str(older), item_names=checkpoint_lib.ITEMS) as manager:
        manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                data=ocp.args.JsonSave({"pos": 1}),
                                                metrics=ocp.args.JsonSave({})))
        manager.wait_until_finished()
    ckpt = checkpoint_lib.Checkpointer(str(older))
    restored, data, _ = ckpt.restore(5, checkpoint_lib.abstract_like(tree))
    ckpt.close()
    assert data == {"pos": 1} and int(restored["step"]) == 7
    np.testing.assert_array_equal(np.asarray(restored["replicated"]), w)
    np.testing.assert_array_equal(np.asarray(restored["sharded"]), w * 3.0)
    assert restored["sharded"].sharding == tree["sharded"].sharding

    newer = tmp_path / "newer"
    ckpt = checkpoint_lib.Checkpointer(str(newer))
    assert ckpt.save(2, tree, {}, {})
    ckpt.close()
    with ocp.StandardCheckpointer() as reader:
        plain = reader.restore(str(newer / "2" / "state"), checkpoint_lib.abstract_like(tree))
    np.testing.assert_array_equal(np.asarray(plain["replicated"]), w)
    np.testing.assert_array_equal(np.asarray(plain["sharded"]), w * 3.0)
    assert int(plain["step"]) == 7


def _tiny_decoder():
    from flax import nnx

    from lsc.models import decoder as decoder_lib

    cfg = decoder_lib.DecoderConfig.from_mapping(dict(
        vocab_size=64, d_model=16, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=8,
        mlp_dim=32))
    return decoder_lib.DecoderLM(cfg, rngs=nnx.Rngs(3))


def test_exported_model_loads_onto_the_mesh_shardings_of_its_logical_axes(tmp_path):
    from flax import nnx

    from lsc.parallel import mesh as mesh_lib
    from lsc.parallel import partitioning
    from lsc.train import run_models

    model = _tiny_decoder()
    _, params, rest = nnx.split(model, nnx.Param, ...)
    checkpoint_lib.export_model(str(tmp_path), params, rest)
    expected_values = [np.asarray(x) for x in jax.tree.leaves(nnx.split(model)[1])]

    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    rules = partitioning.DEFAULT_RULES
    loaded = checkpoint_lib.load_model(
        str(tmp_path), _tiny_decoder,
        shardings=run_models.mesh_shardings(mesh, rules))
    one_device = checkpoint_lib.load_model(str(tmp_path), _tiny_decoder)
    reference = partitioning.state_shardings(nnx.split(nnx.eval_shape(_tiny_decoder))[1], mesh,
                                             rules)

    arrays = jax.tree.leaves(nnx.split(loaded)[1])
    references = jax.tree.leaves(reference)
    singles = jax.tree.leaves(nnx.split(one_device)[1])
    assert len(arrays) == len(references) == len(singles) == len(expected_values)
    sharded = 0
    for x, ref, single, want in zip(arrays, references, singles, expected_values):
        assert x.sharding == ref, (x.shape, x.sharding, ref)
        assert len(single.sharding.device_set) == 1
        if not x.sharding.is_fully_replicated:
            sharded += 1
            assert len(x.sharding.device_set) == 8
            assert all(s.data.size < x.size for s in x.addressable_shards)
        np.testing.assert_array_equal(np.asarray(x), want)
        np.testing.assert_array_equal(np.asarray(single), want)
    assert sharded > 0


def test_a_model_file_loads_like_the_orbax_export_onto_one_device_or_a_mesh(tmp_path):
    """``export_model_file`` writes one safetensors file that ``load_model`` reads back exactly,
    onto one device or onto the mesh shardings of the logical axes; the file is atomic (no
    temporary left) and a file of another model is refused by name."""
    from flax import nnx
    from safetensors.numpy import load_file

    from lsc.parallel import mesh as mesh_lib
    from lsc.parallel import partitioning
    from lsc.train import run_models

    model = _tiny_decoder()
    for var in jax.tree.leaves(nnx.state(model, nnx.Param)):
        assert var.dtype == np.float32
    _, params, rest = nnx.split(model, nnx.Param, ...)
    path = checkpoint_lib.export_model_file(str(tmp_path / "run"), params, rest)
    assert sorted(os.listdir(tmp_path / "run")) == [checkpoint_lib.MODEL_FILE]
    assert checkpoint_lib.has_model(str(tmp_path / "run"))
    assert "params/layers/0/attn/q/kernel" in load_file(path)
    want = [np.asarray(x) for x in jax.tree.leaves(nnx.split(model)[1])]
    one = checkpoint_lib.load_model(str(tmp_path / "run"), _tiny_decoder)
    for x, w in zip(jax.tree.leaves(nnx.split(one)[1]), want):
        np.testing.assert_array_equal(np.asarray(x), w)
    tokens = np.array([[0, 5, 6, 7]], np.int32)
    np.testing.assert_array_equal(np.asarray(one(tokens)), np.asarray(model(tokens)))
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    rules = partitioning.DEFAULT_RULES
    sharded = checkpoint_lib.load_model(str(tmp_path / "run"), _tiny_decoder,
                                        shardings=run_models.mesh_shardings(mesh, rules))
    reference = partitioning.state_shardings(nnx.split(nnx.eval_shape(_tiny_decoder))[1], mesh,
                                             rules)
    for x, ref, w in zip(jax.tree.leaves(nnx.split(sharded)[1]), jax.tree.leaves(reference), want):
        assert x.sharding == ref
        np.testing.assert_array_equal(np.asarray(x), w)

    def other():
        from lsc.models import decoder as decoder_lib

        cfg = decoder_lib.DecoderConfig.from_mapping(dict(
            vocab_size=64, d_model=16, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=8,
            mlp_dim=32))
        return decoder_lib.DecoderLM(cfg, rngs=nnx.Rngs(3))

    with pytest.raises(KeyError, match="layers/1"):
        checkpoint_lib.load_model(str(tmp_path / "run"), other)
    with pytest.raises(FileNotFoundError, match="no exported model"):
        checkpoint_lib.load_model(str(tmp_path / "none"), _tiny_decoder)
