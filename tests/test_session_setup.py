"""The test session's own setup (tests/conftest.py, tests/jax_subprocess.py): each xdist worker on
its own share of the cores."""

import os

import pytest

from jax_subprocess import session_cores, worker_cores


def test_xdist_workers_get_disjoint_equal_core_shares():
    assert [worker_cores(f"gw{i}", 2, {0, 1}) for i in range(2)] == [[0], [1]]
    shares = [worker_cores(f"gw{i}", 3, range(8)) for i in range(3)]
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert worker_cores("gw0", 1, [4, 2]) == [2, 4]
    assert worker_cores("gw0", 3, [0, 1]) is None  # more workers than cores: no pinning
    assert worker_cores("master", 1, [0]) is None


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER")
                    or os.environ.get("LSC_TEST_PIN_CORES", "1") == "0"
                    or not hasattr(os, "sched_getaffinity"),
                    reason="only in a pinned xdist worker")
def test_this_worker_runs_on_its_share():
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    expected = worker_cores(os.environ["PYTEST_XDIST_WORKER"], workers, session_cores())
    if expected is None:
        pytest.skip("more workers than cores")
    assert sorted(os.sched_getaffinity(0)) == expected
