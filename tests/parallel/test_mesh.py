"""Meshes and logical-axis rules."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from lsc.parallel import mesh as meshlib
from lsc.parallel import partitioning as pt


def test_eight_simulated_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("config,shape", [
    ({"data": 8}, (8, 1, 1)),
    ({"data": -1}, (8, 1, 1)),
    ({"fsdp": 4, "tensor": 2}, (1, 4, 2)),
    ({"data": 2, "tensor": 4}, (2, 1, 4)),
    ({"data": -1, "tensor": 2}, (4, 1, 2)),
    (None, (8, 1, 1)),
])
def test_make_mesh_shapes(config, shape):
    mesh = meshlib.make_mesh(config)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape[a] for a in mesh.axis_names) == shape
    assert len(set(mesh.devices.flat)) == 8


@pytest.mark.parametrize("config,match", [
    ({"data": 3}, "use 3 devices"),
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"data": -1, "tensor": 3}, "not divisible"),
    ({"model": 8}, "unknown axes"),
    ({"data": 0}, "mesh.data"),
])
def test_make_mesh_errors(config, match):
    with pytest.raises(ValueError, match=match):
        meshlib.make_mesh(config)


def test_logical_to_spec_rules_and_divisibility():
    mesh = meshlib.make_mesh({"fsdp": 4, "tensor": 2})
    assert pt.logical_to_spec(("embed", "heads", "head_dim"), mesh=mesh, shape=(32, 4, 8)) == P(
        "fsdp", "tensor", None)
    # MQA: one kv head cannot be split over tensor=2, so it is replicated.
    assert pt.logical_to_spec(("embed", "kv_heads", "head_dim"), mesh=mesh, shape=(32, 1, 8)) == P(
        "fsdp", None, None)
    # batch over data and fsdp; data has size 1 here and is dropped.
    assert pt.logical_to_spec(("batch", "length"), mesh=mesh, shape=(8, 5)) == P("fsdp", None)
    # Without a mesh the rules apply verbatim.
    assert pt.logical_to_spec(("batch", "vocab")) == P(("data", "fsdp"), "tensor")
    # A mesh axis is used at most once per array.
    assert pt.logical_to_spec(("mlp", "vocab"), mesh=mesh, shape=(8, 8)) == P("tensor", None)


def test_rules_from_config_overrides():
    rules = dict(pt.rules_from_config({"embed": None, "batch": ["data"]}))
    assert rules["embed"] is None and rules["batch"] == ("data",)
    assert rules["mlp"] == "tensor"
