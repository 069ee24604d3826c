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
CACHE_MAX_BYTES = 8 << 30
CACHE_MIN_COMPILE_SECS = 0.05


def with_flags(xla_flags: str, flags) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with ``flags`` added, each flag once."""
    out = xla_flags.split()
    names = {f.split("=")[0] for f in out}
    out += [f for f in flags if f.split("=")[0] not in names]
    return " ".join(out)


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
