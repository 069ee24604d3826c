"""The test session's XLA settings, and the environment for tests that run ``python -m lsc.main``
in a subprocess on 8 simulated CPU devices with the session's persistent compilation cache
(``tests/conftest.py`` sets both up)."""

import os
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# LLVM's cheap pipeline for XLA's CPU code: the same XLA programs (HLO passes unchanged), less
# optimised machine code. The tests' programs are small and run a few steps, so compilation is
# most of their time (BENCHMARKS.md, "The test suite").
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
# No size limit (-1). With one, JAX's cache takes a file lock and, on every write, lists and stats
# every entry to find what to evict: a write under the lock took 0.1 s with 1,000 entries and 0.3 s
# with 3,000, far more than compiling the small programs it stores, and the suite writes thousands
# (BENCHMARKS.md, "The test suite"). Without the lock, a reader that meets an entry another
# process is still writing fails to decompress it, warns and compiles the program itself.
CACHE_MAX_BYTES = -1
CACHE_MIN_COMPILE_SECS = 0.05


def with_flags(xla_flags: str, flags) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with ``flags`` added, each flag once."""
    out = xla_flags.split()
    names = {f.split("=")[0] for f in out}
    out += [f for f in flags if f.split("=")[0] not in names]
    return " ".join(out)


def worker_cores(worker: str, workers: int, cpus) -> Optional[list]:
    """The cores of xdist worker ``worker`` ("gw<i>") among ``workers`` sharing ``cpus``: an equal
    contiguous share, the first ``len(cpus) % workers`` workers one core more; None when there
    are more workers than cores (or ``worker`` is not an xdist worker name)."""
    cpus = sorted(cpus)
    if not worker.startswith("gw") or not worker[2:].isdigit() or workers > len(cpus):
        return None
    i = int(worker[2:])
    share, extra = divmod(len(cpus), workers)
    start = i * share + min(i, extra)
    return cpus[start:start + share + (i < extra)]


def session_cores() -> list:
    """The cores the test session started on: ``LSC_TEST_CORES`` (set by the controller, before
    any worker pins itself), else this process's affinity."""
    listed = os.environ.get("LSC_TEST_CORES", "")
    return [int(c) for c in listed.split(",")] if listed else sorted(os.sched_getaffinity(0))


def pin_worker_cores() -> Optional[list]:
    """In an xdist worker (``PYTEST_XDIST_WORKER``), restricts this process to its share of the
    cores (:func:`worker_cores`); returns them, or None when nothing was pinned (not a worker,
    ``LSC_TEST_PIN_CORES=0``, or more workers than cores). In the controller (no worker name)
    it only records the cores the workers will share in ``LSC_TEST_CORES``
    (:func:`session_cores`), since a pinned worker can no longer see them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker and hasattr(os, "sched_getaffinity"):  # the controller: what workers share
        os.environ.setdefault("LSC_TEST_CORES", ",".join(map(str, session_cores())))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if (not worker or os.environ.get("LSC_TEST_PIN_CORES", "1") == "0"
            or not hasattr(os, "sched_setaffinity")):
        return None
    cores = worker_cores(worker, workers, session_cores())
    if cores:
        os.sched_setaffinity(0, cores)
    return cores


def subprocess_env(devices: Optional[int] = 8) -> dict:
    """This process's environment for a subprocess with ``devices`` simulated CPU devices (None:
    JAX's default, one), the session's XLA flags and its persistent compilation cache."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    own = "" if devices is None else f"--xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=with_flags(own, flags))
    cache = os.environ.get("LSC_TEST_JAX_CACHE_DIR")
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache,
                   JAX_COMPILATION_CACHE_MAX_SIZE=str(CACHE_MAX_BYTES),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(CACHE_MIN_COMPILE_SECS),
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env
