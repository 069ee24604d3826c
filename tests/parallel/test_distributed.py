"""Cluster discovery from the config and from the launch scripts' environment variables."""

import pytest

from lsc.parallel import distributed


def test_single_process_by_default():
    assert distributed.cluster_spec({}, {}) is None


def test_launch_script_environment():
    spec = distributed.cluster_spec(
        {},
        {
            "LSC_COORDINATOR_ADDRESS": "gpu01:24242",
            "LSC_NUM_PROCESSES": "4",
            "LSC_PROCESS_ID": "3",
            "LSC_LOCAL_DEVICE_IDS": "1",
        },
    )
    assert spec == distributed.ClusterSpec("gpu01:24242", 4, 3, (1,))


def test_config_wins_over_environment():
    spec = distributed.cluster_spec(
        {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 0},
        {"LSC_COORDINATOR_ADDRESS": "elsewhere:1", "LSC_NUM_PROCESSES": "8", "LSC_PROCESS_ID": "5"},
    )
    assert spec == distributed.ClusterSpec("127.0.0.1:1234", 2, 0, None)


def test_auto_detection():
    assert distributed.cluster_spec({}, {"LSC_DISTRIBUTED": "auto"}).auto
    assert distributed.cluster_spec({"distributed": "auto"}, {}).auto


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"LSC_COORDINATOR_ADDRESS": "h:1", "LSC_PROCESS_ID": "0"}, "LSC_NUM_PROCESSES is required"),
        (
            {"LSC_COORDINATOR_ADDRESS": "h:1", "LSC_NUM_PROCESSES": "2", "LSC_PROCESS_ID": "2"},
            "LSC_PROCESS_ID=2 must lie in [0, LSC_NUM_PROCESSES=2)",
        ),
        (
            {"LSC_COORDINATOR_ADDRESS": "h:1", "LSC_NUM_PROCESSES": "two", "LSC_PROCESS_ID": "0"},
            "LSC_NUM_PROCESSES must be an integer",
        ),
    ],
)
def test_bad_environment_is_named(env, needle):
    with pytest.raises(ValueError) as e:
        distributed.cluster_spec({}, env)
    assert needle in str(e.value)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match=r"config\.parallel\.process_id is required"):
        distributed.cluster_spec({"coordinator_address": "h:1", "num_processes": 2}, {})


@pytest.mark.parametrize("relpath,arg", [("repro/synthetic_hh.py", ""), ("sft/synthetic.py", ""),
                                         ("rm/synthetic_helpful.py", ""),
                                         ("rm/t5_base.py", "harmless"),
                                         ("predictor/synthetic.py", ""),
                                         ("rlhf/synthetic.py", "helpful_lsc"),
                                         ("best_of_k/synthetic.py", "hh_lsc_sum")])
def test_shipped_configs_take_the_cluster_from_their_parallel_section(relpath, arg):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", relpath)
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    assert distributed.cluster_spec(config.parallel, {}) is None  # single process by default
    # What --config.parallel.coordinator_address=... --config.parallel.num_processes=2 ... set.
    config.parallel.coordinator_address = "127.0.0.1:4321"
    config.parallel.num_processes = "2"
    config.parallel.process_id = "1"
    config.parallel.local_device_ids = "2,3"
    assert distributed.cluster_spec(config.parallel, {}) == distributed.ClusterSpec(
        "127.0.0.1:4321", 2, 1, (2, 3))
