"""Alignment tests: a persistent XLA compilation cache shared by the tests of this directory and
their subprocesses."""

import os

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    directory = os.environ.get("LSC_TEST_JAX_CACHE_DIR") or str(
        tmp_path_factory.mktemp("jax_compilation_cache"))
    old = {name: getattr(jax.config, name) for name in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    os.environ["LSC_TEST_JAX_CACHE_DIR"] = directory
    yield directory
    for name, value in old.items():
        jax.config.update(name, value)
