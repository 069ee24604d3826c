"""Test-wide setup: 8 simulated CPU devices, float32 matmuls at full precision, XLA's quick CPU
compilation, each xdist worker on its own share of the cores, the entry point's allocator for the
worker processes (``lsc.allocator``), and one persistent XLA compilation cache shared by every
worker and subprocess of the session.

Why (BENCHMARKS.md, "The test suite"): the tests' programs are small and run a few steps, so
compiling them is much of the suite's CPU time. ``jax_subprocess.TEST_XLA_FLAGS`` asks LLVM for
its cheap pipeline (the same XLA programs, less optimised machine code), and identical programs
built by different tests, workers and ``python -m lsc.main`` subprocesses compile once. The
environment is set here, at import, in the process that starts pytest-xdist's workers, so that
they and every subprocess inherit it. ``LSC_TEST_FAST_COMPILE=0`` runs the suite with XLA's
default compilation, ``LSC_TEST_PIN_CORES=0`` lets every worker use every core.
"""

import os
import shutil
import tempfile

from jax_subprocess import (  # tests/ is on sys.path: pytest puts it there for this file
    CACHE_MAX_BYTES, CACHE_MIN_COMPILE_SECS, TEST_XLA_FLAGS, pin_worker_cores, with_flags)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("LSC_TEST_FAST_COMPILE", "1") != "0":
    os.environ["XLA_FLAGS"] = with_flags(os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS)

from lsc import allocator  # noqa: E402  (imports nothing heavy)

# The entry point's allocator (LSC_ALLOCATOR, default tcmalloc when installed, else mimalloc): only
# processes started from here on (the xdist workers, subprocesses) load it.
_ALLOCATOR_ENV = allocator.with_allocator(os.environ)
os.environ.pop("LD_PRELOAD", None)
os.environ.update(_ALLOCATOR_ENV)

# One core set per xdist worker (tests/jax_subprocess.pin_worker_cores): the worker, XLA's thread
# pool in it and its subprocesses stay on their own cores instead of each worker's threads
# competing for every core. Done before jax is imported, since XLA sizes its pool from the
# process's affinity.
pin_worker_cores()

# One cache directory for the whole session: the controller makes it, the workers inherit it.
_OWN_CACHE = not os.environ.get("LSC_TEST_JAX_CACHE_DIR")
if _OWN_CACHE:
    os.environ["LSC_TEST_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="lsc_test_jax_cache_")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

# The persistent cache in this process (the workers' subprocesses get it from
# ``jax_subprocess.subprocess_env``), without a size limit (``jax_subprocess.CACHE_MAX_BYTES``).
# Programs that compile in under 50 ms (jnp's one-op programs) are not worth an entry.
jax.config.update("jax_compilation_cache_dir", os.environ["LSC_TEST_JAX_CACHE_DIR"])
jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECS)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """The process that made the session's cache removes it at the end."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ["LSC_TEST_JAX_CACHE_DIR"], ignore_errors=True)
