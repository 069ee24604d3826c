"""Multi-process start-up: ``jax.distributed.initialize`` from the config or the environment.

Sources, first match wins:

1. ``config.parallel.coordinator_address`` (with ``num_processes``, ``process_id`` and optional
   ``local_device_ids``): an explicit cluster, e.g. two processes on one machine.
2. The variables the launch scripts export (``launch/slurm.sbatch``):
   ``LSC_COORDINATOR_ADDRESS``, ``LSC_NUM_PROCESSES``, ``LSC_PROCESS_ID`` and optionally
   ``LSC_LOCAL_DEVICE_IDS`` (comma-separated).
3. ``LSC_DISTRIBUTED=auto`` (``launch/tpu.py`` on multi-host slices) or
   ``config.parallel.distributed = "auto"``: JAX's own cluster detection (TPU pods, SLURM, ...).

Otherwise the run is single-process. On CPU, collectives go through gloo. After start-up every
process sees the global device list, the mesh spans all processes, and :func:`is_main_process`
says which process writes logs, figures and ``results.json``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
from absl import logging


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How to start the distributed runtime; ``auto`` leaves detection to JAX."""

    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    local_device_ids: Optional[Sequence[int]] = None
    auto: bool = False


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _device_ids(value: Any, name: str) -> Optional[Sequence[int]]:
    if value in (None, "", ()):
        return None
    if isinstance(value, str):
        return tuple(_int(v, name) for v in value.split(",") if v.strip())
    return tuple(_int(v, name) for v in value)


def cluster_spec(
    parallel: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None
) -> Optional[ClusterSpec]:
    """The cluster to join from ``config.parallel`` and ``environ``; None for a single process."""
    parallel = dict(parallel or {})
    env = os.environ if environ is None else environ
    if parallel.get("coordinator_address"):
        prefix = "config.parallel"
        source = {k: parallel.get(k) for k in ("num_processes", "process_id", "local_device_ids")}
        address = parallel["coordinator_address"]
    elif env.get("LSC_COORDINATOR_ADDRESS"):
        prefix = "LSC"
        source = {
            "num_processes": env.get("LSC_NUM_PROCESSES"),
            "process_id": env.get("LSC_PROCESS_ID"),
            "local_device_ids": env.get("LSC_LOCAL_DEVICE_IDS"),
        }
        address = env["LSC_COORDINATOR_ADDRESS"]
    elif env.get("LSC_DISTRIBUTED") == "auto" or parallel.get("distributed") == "auto":
        return ClusterSpec(auto=True)
    else:
        return None

    def name(field: str) -> str:
        return f"{prefix}.{field}" if prefix != "LSC" else f"LSC_{field.upper()}"

    for field in ("num_processes", "process_id"):
        if source[field] in (None, ""):
            raise ValueError(f"{name(field)} is required with a coordinator address")
    num = _int(source["num_processes"], name("num_processes"))
    pid = _int(source["process_id"], name("process_id"))
    if num < 1 or not 0 <= pid < num:
        raise ValueError(
            f"{name('process_id')}={pid} must lie in [0, {name('num_processes')}={num})"
        )
    return ClusterSpec(
        coordinator_address=str(address),
        num_processes=num,
        process_id=pid,
        local_device_ids=_device_ids(source["local_device_ids"], name("local_device_ids")),
    )


def check_platforms() -> None:
    """Raises ``ValueError`` naming ``JAX_PLATFORMS`` when JAX cannot start the platforms it asks
    for (e.g. ``cuda`` on a machine without a visible GPU, where JAX itself only fails an
    assertion)."""
    requested = jax.config.jax_platforms
    if not requested or str(requested) == "cpu":
        return
    try:
        jax.devices()
    except (AssertionError, RuntimeError) as e:
        raise ValueError(
            f"JAX_PLATFORMS={requested}, but JAX cannot start {requested} on this machine "
            f"({type(e).__name__}: {str(e).strip() or 'no backend initialised'}). Check that the "
            "accelerator is visible (nvidia-smi, CUDA_VISIBLE_DEVICES / LSC_GPUS) and that a "
            "matching jaxlib plugin is installed (pip install 'jax[cuda12]'), or run on the CPU "
            "with launch/local.sh (JAX_PLATFORMS unset).") from e


def initialize(
    parallel: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None
) -> bool:
    """Joins the cluster described by ``config.parallel`` / the environment, if any, then checks
    that JAX can start the requested platforms (:func:`check_platforms`).

    Must run before anything touches JAX devices. Returns True when the runtime is distributed.
    """
    spec = cluster_spec(parallel, environ)
    if spec is None:
        check_platforms()
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
            local_device_ids=spec.local_device_ids,
        )
    check_platforms()
    logging.info(
        "process %d of %d; %d local and %d global devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )
    return True


def is_main_process() -> bool:
    """True on the process that writes logs, figures and ``results.json`` (process 0)."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. a SIGTERM one process received),
    so all processes take the same branch; with one process, ``flag`` itself.

    Every process must call it at the same point of the program (it runs a small collective).
    """
    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
    return bool(np.any(flags))


_BARRIER_CALLS: dict = {}


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process reaches ``barrier(name)``; a no-op with one process.

    Every process must make the same sequence of ``barrier`` calls. The wait goes through the
    coordination service, not a device collective, so the others wait as long as one process
    needs (e.g. to write files they then read), up to ``timeout_s``.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    count = _BARRIER_CALLS[name] = _BARRIER_CALLS.get(name, 0) + 1
    multihost.get_barrier_sync_fn()(key=f"lsc:{name}:{count}", timeout_ms=int(timeout_s * 1000))
