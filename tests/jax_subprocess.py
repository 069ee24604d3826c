"""Environment for tests that run ``python -m lsc.main`` in a subprocess on 8 simulated CPU devices,
sharing the session's persistent compilation cache when one is set up (``tests/conftest.py``)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    cache = os.environ.get("LSC_TEST_JAX_CACHE_DIR")
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env
