"""Logical axis rules -> ``PartitionSpec`` / ``NamedSharding``; sharded init and state placement.

Parameters carry logical axis names in their ``out_sharding`` metadata (``lsc.models.layers``).
A *rules* table maps each logical name to a mesh axis, a tuple of mesh axes, or ``None``
(replicated); names absent from the table are replicated. When a shape is known, a mesh axis that
does not divide the dimension (e.g. ``kv_heads = 1`` of MQA over ``tensor = 2``) is dropped for that
dimension, as is a mesh axis already used by an earlier dimension, so any model can be placed on
any mesh.

``DEFAULT_RULES`` is FSDP over ``fsdp`` on the embedding dimension plus Megatron-style tensor
parallelism over ``tensor`` (heads, MLP hidden, vocabulary), batch over ``data`` and ``fsdp``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import jax
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = Union[None, str, Tuple[str, ...]]
Rules = Sequence[Tuple[str, MeshAxes]]

DEFAULT_RULES: Tuple[Tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("relpos_buckets", None),
)


def _as_tuple(axes: MeshAxes) -> Tuple[str, ...]:
    if axes is None:
        return ()
    if isinstance(axes, str):
        return (axes,)
    return tuple(axes)


def logical_to_spec(
    logical_axes: Sequence[Optional[str]],
    rules: Rules = DEFAULT_RULES,
    mesh: Optional[Mesh] = None,
    shape: Optional[Sequence[int]] = None,
) -> PartitionSpec:
    """``PartitionSpec`` for an array whose dimensions have ``logical_axes``.

    With ``mesh`` and ``shape``, mesh axes absent from the mesh, of size 1, not dividing the
    dimension, or already used by an earlier dimension are dropped.
    """
    table = dict(rules)
    used: set = set()
    spec = []
    for i, name in enumerate(logical_axes):
        mesh_axes = _as_tuple(table.get(name)) if name is not None else ()
        kept = []
        size = None if shape is None else int(shape[i])
        for ax in mesh_axes:
            if ax in used:
                continue
            if mesh is not None:
                if ax not in mesh.shape or mesh.shape[ax] == 1:
                    continue
                if size is not None:
                    n = math.prod(mesh.shape[a] for a in kept) * mesh.shape[ax]
                    if size % n:
                        continue
            kept.append(ax)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _var_axes(v: nnx.Variable) -> Optional[Tuple[Optional[str], ...]]:
    axes = v.get_metadata().get("out_sharding")
    return tuple(axes) if axes else None


def state_specs(state: Any, rules: Rules = DEFAULT_RULES, mesh: Optional[Mesh] = None) -> Any:
    """Tree of ``PartitionSpec`` (inside the Variables, like ``nnx.get_partition_spec``) for an
    ``nnx.State`` (concrete or abstract); unannotated variables are replicated."""

    def spec(v):
        if not _is_var(v):
            return PartitionSpec()
        axes = _var_axes(v)
        value = v.get_value()
        if axes is None:
            return v.replace(PartitionSpec())
        return v.replace(logical_to_spec(axes, rules, mesh, getattr(value, "shape", None)))

    return jax.tree.map(spec, state, is_leaf=_is_var)


def state_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Tree of ``NamedSharding`` for ``state`` on ``mesh`` (structure of ``state``)."""
    specs = state_specs(state, rules, mesh)
    return jax.tree.map(lambda p: NamedSharding(mesh, p), specs)


def shard_state(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """``state`` placed on ``mesh`` according to its logical axes."""
    return jax.device_put(state, state_shardings(state, mesh, rules))


def shard_model(
    model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> Tuple[nnx.GraphDef, nnx.State]:
    """Splits ``model`` and places its state on ``mesh``; returns ``(graphdef, state)``."""
    graphdef, state = nnx.split(model)
    return graphdef, shard_state(state, mesh, rules)


def sharded_init(
    create: Callable[[], nnx.Module], mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> Tuple[nnx.GraphDef, nnx.State]:
    """Builds ``create()`` directly sharded: shapes from ``nnx.eval_shape``, then the
    initialisation runs under ``jax.jit`` with ``out_shardings`` from the logical axes, so no
    device ever holds the full unsharded parameters. Returns ``(graphdef, state)``."""
    abstract = nnx.eval_shape(create)
    graphdef, abs_state = nnx.split(abstract)
    shardings = state_shardings(abs_state, mesh, rules)

    init = jax.jit(lambda: nnx.split(create())[1], out_shardings=shardings)
    return graphdef, init()


def batch_sharding(tree: Any, mesh: Mesh, batch_axes: MeshAxes = ("data", "fsdp")) -> Any:
    """Shardings for a tree of batch-major arrays: the leading dimension over ``batch_axes`` (the
    mesh axes of size > 1 that divide it), the rest replicated; scalars replicated."""

    def one(x):
        shape = getattr(x, "shape", ())
        if not shape:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (len(shape) - 1),
                                                   (("batch", batch_axes),), mesh, shape))

    return jax.tree.map(one, tree)


def shard_batch(tree: Any, mesh: Mesh, batch_axes: MeshAxes = ("data", "fsdp")) -> Any:
    """``tree`` placed with :func:`batch_sharding`."""
    return jax.device_put(tree, batch_sharding(tree, mesh, batch_axes))


KV_CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")


def cache_shardings(cache: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Shardings for a sampling cache (``lsc.models.protocol``): 4-d arrays are key/value
    entries ``[B, T, heads, head_dim]`` (logical ``KV_CACHE_AXES``), other arrays are batch-major
    (``('batch', None, ...)``), scalars are replicated. Mesh axes that do not divide a dimension
    are dropped (see :func:`logical_to_spec`)."""

    def one(x):
        shape = getattr(x, "shape", ())
        if not shape:
            return NamedSharding(mesh, PartitionSpec())
        axes = KV_CACHE_AXES if len(shape) == 4 else ("batch",) + (None,) * (len(shape) - 1)
        return NamedSharding(mesh, logical_to_spec(axes, rules, mesh, shape))

    return jax.tree.map(one, cache)


def rules_from_config(config: Optional[Mapping[str, Any]]) -> Tuple[Tuple[str, MeshAxes], ...]:
    """Rules from a config mapping ``{logical: mesh axes}`` (lists become tuples), overriding
    :data:`DEFAULT_RULES` entry by entry; ``None`` gives the defaults."""
    if config is None:
        return DEFAULT_RULES
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    table = dict(DEFAULT_RULES)
    for name, axes in dict(config).items():
        table[name] = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    return tuple(table.items())


def opt_state_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                        param_shardings: Any, mesh: Mesh) -> Any:
    """Explicit shardings for ``tx.init(params)``: every optimiser leaf that has its parameter's
    shape (Adam moments, momentum) is sharded like the parameter; anything else (counts,
    Adafactor's factored row/column statistics) is replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, abstract_params)

    def pick(leaf, sharding, param):
        if getattr(leaf, "shape", None) == getattr(param, "shape", ()) and leaf.shape:
            return sharding
        return replicated

    try:
        return optax.tree_map_params(tx, pick, abstract_opt, param_shardings, abstract_params,
                                     transform_non_params=lambda _: replicated)
    except (ValueError, TypeError) as e:
        logging.warning("optimiser-state shardings by parameter failed (%s); replicating", e)
        return jax.tree.map(lambda _: replicated, abstract_opt)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array every device holds whole (scalars, small tables)."""
    return NamedSharding(mesh, PartitionSpec())


def rows_shardings(tree: Any, mesh: Mesh, batch_axes: MeshAxes = ("data", "fsdp")) -> Any:
    """Shardings of a pytree of batch-major arrays (e.g. an RL rollout): every leaf with a
    leading axis is split over ``batch_axes`` (:func:`batch_sharding`), scalars are replicated.
    ``tree`` may hold arrays or ``jax.ShapeDtypeStruct``."""
    def one(x):
        return batch_sharding(x, mesh, batch_axes) if getattr(x, "ndim", 0) else replicated(mesh)
    return jax.tree.map(one, tree)
