"""Device meshes from configs.

A mesh config maps axis names to sizes, e.g. ``{'data': -1, 'fsdp': 1, 'tensor': 1}`` (dict or
``ml_collections.ConfigDict``); at most one size may be ``-1``, meaning "all remaining devices".
The mesh axes are always created in the order ``MESH_AXES`` (``data``, ``fsdp``, ``tensor``);
axes missing from the config have size 1. All axes are ``AxisType.Auto`` (sharding propagated by
the compiler from the annotated inputs, the t5x / big_vision style).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(config: Optional[Mapping[str, int]], num_devices: int) -> dict:
    """Resolved ``{axis: size}`` for ``num_devices`` devices (``-1`` filled in, sizes checked)."""
    config = dict(config.to_dict() if hasattr(config, "to_dict") else (config or {}))
    unknown = sorted(set(config) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh: unknown axes {unknown}; allowed: {list(MESH_AXES)}")
    sizes = {a: int(config.get(a, 1)) for a in MESH_AXES}
    if not config:
        sizes["data"] = -1
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ValueError(f"mesh.{a} must be a positive size or -1, got {s}")
    rest = [a for a, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {rest}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if rest:
        if num_devices % known:
            raise ValueError(
                f"mesh: {num_devices} devices are not divisible by the fixed axes' product {known}"
            )
        sizes[rest[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"mesh: axis sizes {sizes} use {math.prod(sizes.values())} devices, "
            f"but {num_devices} are available"
        )
    return sizes


def make_mesh(
    config: Optional[Mapping[str, int]] = None,
    *,
    devices: Optional[Sequence[jax.Device]] = None,
) -> Mesh:
    """A ``Mesh`` with axes ``('data', 'fsdp', 'tensor')`` sized by ``config`` (see module doc).

    ``devices`` defaults to ``jax.devices()``; with no config every device goes to ``data``.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(config, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
