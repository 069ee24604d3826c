"""Preemption-safe checkpoints of a training run with orbax-checkpoint's ``CheckpointManager``.

A checkpoint of step ``s`` is the directory ``<directory>/<s>`` with three items:

* ``state`` - the train state pytree (parameters, optimiser state, step, RNG key data; arrays),
  written with ``ocp.args.PyTreeSave`` (:func:`state_handler`; the layout of orbax's standard
  checkpoints) and restored onto the shardings of an abstract target;
* ``data`` - the data iterator's JSON state (``BatchIterator.get_state()``), ``ocp.args.JsonSave``;
* ``metrics`` - the JSON metrics state (history and partial logging sums), ``ocp.args.JsonSave``.

Orbax writes a step into a temporary directory and renames it into place only when every item is
complete, so a crash (or SIGKILL) during a save leaves at most a temporary directory behind: the
previous checkpoints are untouched, :meth:`Checkpointer.latest_step` ignores the unfinished one,
and the temporary directory is removed the next time a :class:`Checkpointer` opens the directory
(``cleanup_tmp_directories``). A step returned by ``latest_step`` is complete on disk. Only the
last ``keep`` checkpoints are kept.

Saves are asynchronous by default: :meth:`Checkpointer.save` waits for the save before it, takes
what it needs from the state, starts orbax's write in a background thread and returns; the
training loop runs on while the files are written. Orbax copies accelerator arrays to host memory
before ``save`` returns; CPU arrays it would only view, so those are first copied into fresh
buffers on their devices (:func:`copy_cpu_arrays`: one extra copy of the state in host memory
while a save is in flight). Either way the caller may donate or overwrite its arrays at once.
:meth:`wait` and :meth:`close` wait for the last save, as do :meth:`latest_step`,
:meth:`all_steps` and :meth:`restore` (so they see complete checkpoints only); the training loop
closes its checkpointer on every exit, preemption and errors included, so a run never ends with a
save in flight. ``async_save=False`` writes before returning.

On the CPU backend the state and exported models (:func:`export_model`) are written without
orbax's replica-parallel saving (:func:`state_handler`). Every CPU device of a process shares its
host memory, so cutting each replicated array into one slice per device (orbax's default outside
GPUs, meant to spread the writes of a replicated array over the hosts of a pod) only adds a
dispatched slice per device and array: with 8 CPU devices a save of a 200-array state blocks the
loop for 0.54 s instead of 0.13 s (BENCHMARKS.md). The files have the same layout either way.

Exported models come in two forms that :func:`load_model` reads alike: the orbax directory
``<workdir>/model`` (:func:`export_model`: a run's final model, any sharding, every process
taking part) and the single file ``<workdir>/model.safetensors`` (:func:`export_model_file`:
the policy snapshots an RLHF run writes every few steps; one process holding every array, no
orbax machinery: about 3 ms instead of 40 ms to write the main job's policy, BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from lsc import runtime

ITEMS = ("state", "data", "metrics")


class Checkpointer:
    """Saves and restores ``(train state, data-iterator state, metrics state)`` per step.

    Args:
      directory: where the step directories live (created if missing).
      keep: number of most recent checkpoints kept (``>= 1``).
      async_save: write in a background thread (module docstring); False writes in :meth:`save`.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.path.abspath(directory)
        self.async_save = bool(async_save)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=self.async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": state_handler(), "data": ocp.JsonCheckpointHandler(),
                           "metrics": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint's step, or None when there is none (waits for a save
        in flight)."""
        self.wait()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint kept, ascending (waits for a save in flight)."""
        self.wait()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, metrics_state: dict) -> bool:
        """Writes checkpoint ``step`` (a no-op returning False if that step already exists).

        ``state``: a pytree of arrays (``jax.Array`` leaves may be donated or deleted as soon as
        this returns); ``data_state`` / ``metrics_state``: JSON-serialisable dicts (copied).
        Asynchronous unless ``async_save=False`` (module docstring).
        """
        if step in self.all_steps():
            return False
        if self.async_save:
            state = copy_cpu_arrays(state)
            data_state, metrics_state = _json_copy(data_state), _json_copy(metrics_state)
        args = ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),
            data=ocp.args.JsonSave(data_state),
            metrics=ocp.args.JsonSave(metrics_state),
        )
        self._manager.save(step, args=args, force=True)
        logging.info("checkpoint: %s step %d in %s",
                     "saving" if self.async_save else "saved", step, self.directory)
        return True

    def wait(self) -> None:
        """Blocks until the last save is complete on disk (raises its error, if it failed)."""
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract_state: Any) -> Tuple[Any, dict, dict]:
        """Restores checkpoint ``step``; returns ``(state, data_state, metrics_state)``.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings (e.g.
        ``jax.tree.map(ocp.utils.to_shape_dtype_struct, state)``); arrays come back with those
        shardings.
        """
        steps = self.all_steps()
        if step not in steps:
            raise FileNotFoundError(f"{self.directory}: no complete checkpoint for step {step}; "
                                    f"available: {steps}")
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                abstract_state,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
            data=ocp.args.JsonRestore(),
            metrics=ocp.args.JsonRestore(),
        )
        restored = self._manager.restore(step, args=args)
        logging.info("checkpoint: restored step %d from %s", step, self.directory)
        return restored.state, restored.data, restored.metrics

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def state_handler() -> ocp.PyTreeCheckpointHandler:
    """The handler of the ``state`` item: orbax's standard types, with replica-parallel saving of
    ``jax.Array`` leaves off on the CPU backend (module docstring) and orbax's default elsewhere."""
    scalar = ocp.type_handlers.ScalarHandler()
    replica_parallel = False if jax.default_backend() == "cpu" else None
    registry = ocp.type_handlers.create_type_handler_registry(
        (int, scalar), (float, scalar), (bytes, scalar), (np.number, scalar),
        (np.ndarray, ocp.type_handlers.NumpyHandler()),
        (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=replica_parallel)),
        (str, ocp.type_handlers.StringHandler()))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def copy_cpu_arrays(tree: Any) -> Any:
    """``tree`` with every ``jax.Array`` leaf on CPU devices copied into a new buffer on the same
    devices and sharding (other leaves, accelerator arrays included, as they are). The copy stays
    valid when the original buffers are donated to the next step. A runtime copy in one process;
    arrays spanning several processes may compile an identity program per shape and sharding."""

    def copy(x):
        if isinstance(x, jax.Array) and all(d.platform == "cpu" for d in x.sharding.device_set):
            return jax.device_put(x, x.sharding, may_alias=False)
        return x

    return jax.tree.map(copy, tree)


def _json_copy(tree: dict) -> dict:
    return json.loads(json.dumps(tree))


def abstract_like(tree: Any) -> Any:
    """``jax.ShapeDtypeStruct`` (with sharding) for every array of ``tree``."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


MODEL_DIR = "model"


def export_model(workdir: str, params: Any, model_state: Any) -> str:
    """Writes the final ``{'params', 'model_state'}`` of a run to ``<workdir>/model`` (atomic,
    replacing an earlier export) for later jobs; returns the directory."""
    path = os.path.join(os.path.abspath(workdir), MODEL_DIR)
    with ocp.Checkpointer(state_handler()) as ckptr:
        ckptr.save(path, args=ocp.args.PyTreeSave({"params": params, "model_state": model_state}),
                   force=True)
    return path


MODEL_FILE = "model.safetensors"


def _flat_arrays(params: Any, model_state: Any) -> dict:
    """``{'params/<path>' or 'model_state/<path>': array}`` of two ``nnx.State`` (or pure dict)
    trees, ``<path>`` the '/'-joined keys of :func:`flax.nnx.to_pure_dict`."""
    from flax import nnx
    from flax.traverse_util import flatten_dict

    out = {}
    for name, tree in (("params", params), ("model_state", model_state)):
        pure = nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree
        for keys, value in flatten_dict(pure).items():
            out["/".join([name, *(str(k) for k in keys)])] = value
    return out


def export_model_file(workdir: str, params: Any, model_state: Any) -> str:
    """Writes ``{'params', 'model_state'}`` to the one file ``<workdir>/model.safetensors``
    (atomic, replacing an earlier export; :func:`load_model` reads it like :func:`export_model`'s
    directory); returns its path. For frequent small exports from one process: every array must
    be fully addressable here (:func:`export_model` writes any sharding)."""
    from safetensors.numpy import save

    arrays = {}
    for key, value in _flat_arrays(params, model_state).items():
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            raise ValueError(f"{key} is not fully addressable by this process; use export_model")
        arrays[key] = np.asarray(jax.device_get(value))
    path = os.path.join(os.path.abspath(workdir), MODEL_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with runtime.atomic_open(path, "wb") as f:
        f.write(save(arrays))
    return path


def has_model(workdir: str) -> bool:
    """Whether ``workdir`` holds an exported model (either form, :func:`load_model`)."""
    return (os.path.isdir(os.path.join(workdir, MODEL_DIR))
            or os.path.isfile(os.path.join(workdir, MODEL_FILE)))


def _load_model_file(path: str, structs: dict) -> dict:
    """``structs`` (``{'params', 'model_state'}``, states of ``jax.ShapeDtypeStruct`` with
    shardings; filled in place) with the arrays of the safetensors file ``path``
    (:func:`export_model_file`) placed as they say."""
    from flax import nnx
    from flax.traverse_util import flatten_dict, unflatten_dict
    from safetensors.numpy import load_file

    arrays = load_file(path)
    for name in ("params", "model_state"):
        filled = {}
        for keys, struct in flatten_dict(nnx.to_pure_dict(structs[name])).items():
            key = "/".join([name, *(str(k) for k in keys)])
            if key not in arrays:
                raise KeyError(f"{path}: no array {key!r}; the file holds another model")
            value = arrays.pop(key)
            if value.shape != tuple(struct.shape) or value.dtype != struct.dtype:
                raise ValueError(f"{path}: {key} has {value.shape} {value.dtype}, the model "
                                 f"{tuple(struct.shape)} {struct.dtype}")
            filled[keys] = jax.device_put(value, struct.sharding)
        if filled:
            nnx.replace_by_pure_dict(structs[name], unflatten_dict(filled))
    if arrays:
        raise ValueError(f"{path}: arrays the model does not have: {sorted(arrays)[:5]}")
    return structs


def load_model(workdir: str, create_model, shardings=None) -> Any:
    """The model of a finished run: ``create_model()``'s structure (built abstractly) filled with
    the parameters exported to ``<workdir>/model`` by :func:`export_model`.

    ``shardings``: None restores every array whole on this process's first device; else a
    function of the abstract target ``{'params': nnx.State, 'model_state': nnx.State}`` returning
    a matching pytree of ``jax.sharding.Sharding`` (e.g.
    :func:`lsc.train.run_models.mesh_shardings`: each array's ``NamedSharding`` on a mesh from
    its logical axes), and orbax reads each array straight into its sharding (in a
    multi-process run, each process only its own shards)."""
    from flax import nnx

    path = os.path.join(os.path.abspath(workdir), MODEL_DIR)
    file = os.path.join(os.path.abspath(workdir), MODEL_FILE)
    if not os.path.isdir(path) and not os.path.isfile(file):
        raise FileNotFoundError(f"{path}: no exported model; run the training job for {workdir} "
                                "to completion first")
    graphdef, params, model_state = _abstract_model(create_model)
    target = {"params": params, "model_state": model_state}
    if shardings is None:
        structs = jax.tree.map(_host_struct, target)
    else:
        structs = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            target, shardings(target))
    if not os.path.isdir(path):
        restored = _load_model_file(file, structs)
    else:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(path, structs)
    return nnx.merge(graphdef, restored["params"], restored["model_state"])


@functools.lru_cache(maxsize=16)
def _abstract_model(create_model) -> Tuple[Any, Any, Any]:
    """``(graphdef, params, model_state)`` of ``create_model()`` built abstractly, once per
    ``create_model`` (loading many exports of one architecture, e.g. a run's snapshots, traces
    the constructor once)."""
    from flax import nnx

    return nnx.split(nnx.eval_shape(create_model), nnx.Param, ...)


def _host_struct(x):
    """``x``'s shape and dtype on this process's first device (every process restores a full
    copy; ``jax.devices()[0]`` belongs to process 0 in a multi-process run)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
