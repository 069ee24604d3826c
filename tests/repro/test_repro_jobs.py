"""A stage's jobs, one after another or in spawned worker processes (lsc.repro.jobs)."""

import json
import os

import ml_collections
import pytest

from lsc.repro import jobs as jobs_lib


def write_pid(config, workdir):
    """A job: records its process id and config seed; exits with ``config.code``."""
    with open(os.path.join(workdir, "ran.json"), "w") as f:
        json.dump({"pid": os.getpid(), "seed": int(config.seed)}, f)
    return int(config.code)


def _job(tmp_path, name, code=0, seed=0):
    config = ml_collections.ConfigDict({"job": "train_rm", "seed": seed, "code": code})
    return jobs_lib.Job(write_pid, config, str(tmp_path / name))


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "world"
    path.mkdir()
    return str(path)


def _ran(tmp_path, name):
    return json.loads((tmp_path / name / "ran.json").read_text())


def test_one_after_another_in_this_process(tmp_path, world):
    jobs_lib.run_jobs([_job(tmp_path, "a", seed=1), _job(tmp_path, "b", seed=2)], world)
    assert [_ran(tmp_path, n)["pid"] for n in "ab"] == [os.getpid()] * 2
    for name, seed in (("a", 1), ("b", 2)):  # prepare(): the config and the world link
        saved = json.loads((tmp_path / name / "config.json").read_text())
        assert saved["seed"] == seed
        assert os.path.realpath(tmp_path / name / "world") == os.path.realpath(world)


def test_workers_run_every_job_in_other_processes(tmp_path, world):
    jobs = [_job(tmp_path, f"j{i}", seed=i) for i in range(3)]
    jobs_lib.run_jobs(jobs, world, workers=2, threads_per_worker=1)
    ran = [_ran(tmp_path, f"j{i}") for i in range(3)]
    assert [r["seed"] for r in ran] == [0, 1, 2]
    assert os.getpid() not in {r["pid"] for r in ran}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopped_job_stops_the_stage_with_its_exit_code(tmp_path, world, workers):
    jobs = [_job(tmp_path, "ok"), _job(tmp_path, "preempted", code=42)]
    with pytest.raises(jobs_lib.JobStopped) as e:
        jobs_lib.run_jobs(jobs, world, workers=workers)
    assert e.value.exit_code == 42 and "preempted" in str(e.value)
    assert _ran(tmp_path, "ok")["seed"] == 0  # the other job still ran
