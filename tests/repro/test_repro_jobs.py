"""A stage's jobs, one after another or in spawned worker processes (lsc.repro.jobs)."""

import json
import os
import re
import signal
import threading
import time

import ml_collections
import pytest

from lsc import runtime
from lsc.repro import jobs as jobs_lib


def write_pid(config, workdir):
    """A job: records its process id and config seed; exits with ``config.code``."""
    with open(os.path.join(workdir, "ran.json"), "w") as f:
        json.dump({"pid": os.getpid(), "seed": int(config.seed)}, f)
    return int(config.code)


def wait_for_sigterm(config, workdir):
    """A job: waits inside ``runtime.Preemption`` (as a training loop does) until SIGTERM, then
    records it and exits with the preempted code (0 after 60 s without one)."""
    with runtime.Preemption() as preemption:
        open(os.path.join(workdir, "started"), "w").close()
        deadline = time.time() + 60
        while not preemption.requested and time.time() < deadline:
            time.sleep(0.02)
    with open(os.path.join(workdir, "ran.json"), "w") as f:
        json.dump({"pid": os.getpid(), "preempted": preemption.requested}, f)
    return 143 if preemption.requested else 0


def log_a_line(config, workdir):
    """A job: logs one INFO line through absl."""
    from absl import logging

    logging.info("hello from the job in %s", os.path.basename(workdir))
    return 0


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


@pytest.mark.slow
def test_workers_run_every_job_in_other_processes(tmp_path, world):
    jobs = [_job(tmp_path, f"j{i}", seed=i) for i in range(3)]
    jobs_lib.run_jobs(jobs, world, workers=2, threads_per_worker=1)
    ran = [_ran(tmp_path, f"j{i}") for i in range(3)]
    assert [r["seed"] for r in ran] == [0, 1, 2]
    assert os.getpid() not in {r["pid"] for r in ran}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_a_stopped_job_stops_the_stage_with_its_exit_code(tmp_path, world, workers):
    jobs = [_job(tmp_path, "ok"), _job(tmp_path, "preempted", code=42)]
    with pytest.raises(jobs_lib.JobStopped) as e:
        jobs_lib.run_jobs(jobs, world, workers=workers)
    assert e.value.exit_code == 42 and "preempted" in str(e.value)
    assert _ran(tmp_path, "ok")["seed"] == 0  # the other job still ran


@pytest.mark.slow
def test_sigterm_reaches_the_workers_and_the_queued_jobs_never_start(tmp_path, world):
    config = ml_collections.ConfigDict({"job": "train_rm", "seed": 0})
    waiting = [jobs_lib.Job(wait_for_sigterm, config, str(tmp_path / n)) for n in ("a", "b")]
    queued = [_job(tmp_path, n) for n in ("c", "d", "e")]

    def terminate_once_both_run():
        deadline = time.time() + 120
        while time.time() < deadline and not all(
                (tmp_path / n / "started").exists() for n in ("a", "b")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends the main job

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_once_both_run, daemon=True).start()
    with pytest.raises(jobs_lib.JobStopped) as e:
        jobs_lib.run_jobs(waiting + queued, world, workers=2)
    assert e.value.exit_code == 143
    assert _ran(tmp_path, "a")["preempted"] and _ran(tmp_path, "b")["preempted"]
    assert not any((tmp_path / n / "ran.json").exists() for n in ("c", "d", "e"))
    assert signal.getsignal(signal.SIGTERM) == previous
    assert not runtime.sigterm_pending()  # this process keeps no stale request


def test_default_workers_two_on_a_two_core_cpu_else_one(monkeypatch):
    import jax

    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert jobs_lib.default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert jobs_lib.default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert jobs_lib.default_workers() == 1


def test_a_stage_runs_default_workers_when_the_config_says_0(monkeypatch, tmp_path):
    from lsc.repro import pipeline

    seen = []
    monkeypatch.setattr(jobs_lib, "run_jobs", lambda jobs, world, workers, threads: seen.append(
        workers))
    monkeypatch.setattr(jobs_lib, "default_workers", lambda: 7)
    stage = str(tmp_path / "stage")
    pipeline._run_jobs(ml_collections.ConfigDict({"workers": 0}), stage, [])
    pipeline._run_jobs(ml_collections.ConfigDict({"workers": 3}), stage, [])
    pipeline._run_jobs(ml_collections.ConfigDict({"workers": 0}), stage, [], workers=2)
    assert seen == [7, 3, 2]


@pytest.mark.slow
def test_workers_log_in_the_parents_format(tmp_path, world, capfd):
    config = ml_collections.ConfigDict({"job": "train_rm", "seed": 0})
    jobs = [jobs_lib.Job(log_a_line, config, str(tmp_path / n)) for n in ("w1", "w2")]
    jobs_lib.run_jobs(jobs, world, workers=2)
    err = capfd.readouterr().err
    assert "Logging before flag parsing" not in err
    for name in ("w1", "w2"):
        line = next(x for x in err.splitlines() if f"hello from the job in {name}" in x)
        assert re.match(r"I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\] ", line), line
