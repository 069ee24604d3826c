"""Test-wide setup: 8 simulated CPU devices, float32 matmuls at full precision, and a persistent
XLA compilation cache for the training and alignment tests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

# Directories whose tests (and their subprocesses) build many identical small programs from fresh
# closures: a persistent compilation cache lets each compile once.
CACHED_DIRS = ("train", "align")


@pytest.fixture(scope="session")
def jax_compilation_cache(tmp_path_factory):
    """A session-wide persistent XLA cache; subprocesses find it in ``LSC_TEST_JAX_CACHE_DIR``."""
    directory = str(tmp_path_factory.mktemp("jax_compilation_cache"))
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # the cache decides once whether it is enabled; let it decide again
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass
    os.environ["LSC_TEST_JAX_CACHE_DIR"] = directory
    yield directory
    for name, value in old.items():
        jax.config.update(name, value)


@pytest.fixture(autouse=True)
def _compilation_cache_for_cached_dirs(request):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    if os.path.relpath(str(request.node.path), tests_dir).split(os.sep)[0] in CACHED_DIRS:
        request.getfixturevalue("jax_compilation_cache")


def pytest_collection_modifyitems(config, items):
    """Files with slow (end-to-end) tests first, in their collected order otherwise: with one
    worker per core (``-n auto --dist loadfile``) the longest files start at once instead of
    leaving one worker busy at the end. A stable sort on a per-file key keeps each file's tests
    together and in order."""
    slow_files = {item.nodeid.split("::")[0] for item in items
                  if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_files)
