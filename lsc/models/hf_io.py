"""Reading Hugging Face checkpoint directories: the one error class, ``config.json``, the tensors,
their names and shapes, and filling an abstract module with converted tensors.

A checkpoint is a directory written by ``save_pretrained``: ``config.json`` plus either
``model.safetensors`` or shards listed in ``model.safetensors.index.json`` (its ``weight_map``).
Tensors are read one at a time with ``safetensors`` in numpy mode (no torch needed); bfloat16
tensors are read through ``ml_dtypes`` (a jax dependency). Only safetensors weights are read.

Every problem raises :class:`CheckpointError` naming the file (and the tensor or field):

* ``config.json`` missing, not valid JSON, or not a JSON object;
* no ``model.safetensors`` / ``model.safetensors.index.json`` (naming the ``.bin`` / ``.pt`` /
  ``.h5`` / ``.msgpack`` weights found instead), or a weight file whose header cannot be read;
* an index without a ``weight_map``, a shard it lists that does not exist, or tensors it lists
  that are in no shard;
* a tensor that cannot be decoded, or whose dtype is not a float (integer or quantized weights);
* tensors missing from or unexpected in a checkpoint, or of the wrong shape
  (:func:`check_tensors`); a module parameter without a converted tensor, of another shape, or a
  converted tensor without a parameter (:func:`fill_module`).

Model-specific reading (which ``config.json`` fields and tensor names a model has) lives in
:mod:`lsc.models.hf_t5`, :mod:`lsc.models.hf_decoder` and :mod:`lsc.models.hf_reward`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Tuple

import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".h5", ".msgpack")


class CheckpointError(ValueError):
    """A Hugging Face checkpoint that cannot be imported (unsupported, incomplete or
    mismatched)."""


def read_hf_config(path: str) -> dict:
    """The parsed ``config.json`` of checkpoint directory ``path`` (a dict)."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{cfg_path}: no config.json (expected a save_pretrained directory)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: not a JSON object")
    return cfg


def _weight_files(path: str) -> Tuple[List[str], Dict[str, str]]:
    """``(safetensors files, index weight_map)`` of checkpoint directory ``path`` (the map is
    empty for a single file)."""
    index = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, SINGLE_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index (no 'weight_map'): {e}"
                                  ) from None
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
        for file in files:
            if not os.path.isfile(file):
                raise CheckpointError(f"{index}: lists shard {os.path.basename(file)}, which "
                                      "does not exist")
        return files, weight_map
    if os.path.isfile(single):
        return [single], {}
    others = sorted(n for n in os.listdir(path) if n.endswith(_OTHER_WEIGHT_SUFFIXES))
    hint = f" (found {others}; only safetensors is supported)" if others else (
        " (only safetensors is supported)")
    raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")


class TensorReader:
    """Lazy access to the tensors of checkpoint directory ``path`` (single file or sharded):
    names and shapes from the file headers without loading, one tensor at a time on request, so
    peak host memory stays near the size of the converted model. Raises
    :class:`CheckpointError` as the module docstring lists."""

    def __init__(self, path: str):
        self.path = path
        files, weight_map = _weight_files(path)
        self._file_of: Dict[str, str] = {}
        self._shapes: Dict[str, Tuple[int, ...]] = {}
        for file in files:
            try:
                with safe_open(file, framework="numpy") as f:
                    shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            except Exception as e:  # safetensors raises plain exceptions for unreadable files
                raise CheckpointError(f"{file}: not a readable safetensors file: {e}") from e
            self._file_of.update(dict.fromkeys(shapes, file))
            self._shapes.update(shapes)
        missing = sorted(set(weight_map) - set(self._file_of))
        if missing:
            raise CheckpointError(f"{os.path.join(path, INDEX_FILE)}: tensors listed but not in "
                                  f"any shard: {missing}")
        self._handles: Dict[str, Any] = {}

    def names(self) -> List[str]:
        """Sorted tensor names."""
        return sorted(self._shapes)

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` as stored (a float dtype: float16/32/64 or bfloat16)."""
        file = self._file_of[name]
        try:
            if file not in self._handles:
                self._handles[file] = safe_open(file, framework="numpy")
            arr = self._handles[file].get_tensor(name)
        except Exception as e:  # safetensors raises plain exceptions for undecodable dtypes
            raise CheckpointError(f"{file}: cannot read tensor {name!r}: {e}") from e
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(
                f"{file}: tensor {name!r} has dtype {arr.dtype}; a float dtype is required "
                "(quantized checkpoints are not supported)"
            )
        return arr


def accessors(tensors: Any) -> Tuple[set, Callable[[str], Tuple[int, ...]],
                                      Callable[[str], np.ndarray]]:
    """``(names, shape_of, get)`` of ``tensors``: a name -> array mapping, or a reader with
    ``names()``, ``shape(name)`` and ``get(name)`` (e.g. :class:`TensorReader`)."""
    if isinstance(tensors, Mapping):
        return (set(tensors), lambda n: tuple(np.shape(tensors[n])),
                lambda n: np.asarray(tensors[n]))
    return set(tensors.names()), tensors.shape, tensors.get


def check_tensors(tensors: Any, expected: Mapping[str, Tuple[int, ...]], *,
                  ignorable: Callable[[str], bool] = lambda name: False,
                  source: str = "checkpoint", model: str = "the config") -> None:
    """Raises :class:`CheckpointError` (naming ``source``, the checkpoint) listing the tensors
    of ``tensors`` (see :func:`accessors`) missing from or unexpected by ``expected`` (name ->
    shape; ``ignorable`` names are tolerated extras), or naming the first whose shape differs.
    ``model`` describes what the tensors should match."""
    names, shape_of, _ = accessors(tensors)
    missing = sorted(set(expected) - names)
    extra = sorted(n for n in names - set(expected) if not ignorable(n))
    if missing or extra:
        parts = ([f"missing tensors {missing}"] if missing else []) + (
            [f"unexpected tensors {extra}"] if extra else [])
        raise CheckpointError(f"{source}: tensors do not match {model}: " + "; ".join(parts))
    for name, shape in expected.items():
        got = tuple(shape_of(name))
        if got != tuple(shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {got}, expected "
                                  f"{tuple(shape)} from config.json")


def fill_module(create: Callable[[], nnx.Module], pure: Mapping, *,
                source: str = "checkpoint") -> nnx.Module:
    """``create()`` built abstractly (``nnx.eval_shape``; no random initialisation is run) and
    filled with ``pure``, a nested dict of numpy arrays or a flat one keyed by path tuples, each
    cast to its parameter's dtype and kept in host memory (numpy arrays: no device holds the
    model; ``jax.device_put`` places them, e.g. straight onto a mesh's shardings). Raises
    :class:`CheckpointError` (naming ``source``) for a parameter with no value or a different
    shape, or a value without a parameter."""
    abstract = nnx.eval_shape(create)
    graphdef, state = nnx.split(abstract)
    flat = bool(pure) and all(isinstance(k, tuple) for k in pure)
    given = dict(pure) if flat else _flatten(pure)
    values = {}
    for path, var in nnx.to_flat_state(state):
        key = tuple(path)
        name = ".".join(map(str, key))
        if key not in given:
            raise CheckpointError(f"{source}: no tensor for parameter {name}")
        if tuple(given[key].shape) != tuple(var.shape):
            raise CheckpointError(f"{source}: parameter {name} would get shape "
                                  f"{tuple(given[key].shape)}, expected {tuple(var.shape)}")
        values[key] = np.asarray(given[key], dtype=var.dtype)
    extra = sorted(".".join(map(str, k)) for k in set(given) - set(values))
    if extra:
        raise CheckpointError(f"{source}: converted tensors without a parameter: {extra}")
    nnx.replace_by_pure_dict(state, _unflatten(values))
    return nnx.merge(graphdef, state)


def _flatten(tree: Mapping, prefix: Tuple = ()) -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[Tuple, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = value
    return out
