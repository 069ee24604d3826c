"""The job's progress (lsc.progress): weights, ETA, log lines without a terminal, the bar with one,
and its use by lsc.stages.run_stages and lsc.repro.jobs.run_jobs."""

import io
import json
import logging
import os

import ml_collections
import pytest
from tqdm.auto import tqdm

from lsc import progress
from lsc import stages as stages_lib
from lsc.repro import jobs as jobs_lib


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def no_bar(monkeypatch):
    monkeypatch.setenv(progress.ENV, "0")


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("[job ")]


def record_seed(config, workdir):
    """A job: writes its seed; exit code 0."""
    with open(os.path.join(workdir, "seed.txt"), "w") as f:
        f.write(str(config.seed))
    return 0


def _jobs(stage_dir, n):
    return [jobs_lib.Job(record_seed, ml_collections.ConfigDict({"job": "train_rm", "seed": i}),
                         os.path.join(stage_dir, f"r{i}")) for i in range(1, n + 1)]


def _world(tmp_path):
    os.makedirs(tmp_path / "world_src", exist_ok=True)
    return str(tmp_path / "world_src")


def test_format_seconds():
    assert [progress.format_seconds(s) for s in (None, 4.4, 302, 3800)] == [
        "?", "4s", "5m02s", "1h03m20s"]


def test_stage_weights_given_then_the_mean_of_the_known():
    assert progress.stage_weights(["world", "sft"], [9, 38]) == [9.0, 38.0]
    assert progress.stage_weights(["world", "x"], [None, 5.0]) == [5.0, 5.0]
    assert progress.stage_weights(["world", "x", "sft"], [9, None, 38]) == [9.0, 23.5, 38.0]
    assert progress.stage_weights(["x", "y", "z"]) == [1.0, 1.0, 1.0]
    from lsc.repro import pipeline
    assert all(s.weight > 0 for s in pipeline.STAGES)


def test_eta_is_elapsed_over_fraction_minus_elapsed(no_bar):
    clock = FakeClock()
    with progress.JobProgress(["a", "b", "c"], [10, 30, 60], clock=clock) as job:
        job.start("a")
        assert job.fraction() == 0.0 and job.eta() is None
        clock.now += 20
        job.finish("a", 20)
        elapsed, fraction = 20.0, 0.1
        assert job.fraction() == pytest.approx(fraction)
        assert job.eta() == pytest.approx(elapsed / fraction - elapsed)
        job.start("b")
        clock.now += 10
        job.run(2, 4, "r2")  # one of four runs done: a quarter of b
        elapsed, fraction = 30.0, (10 + 30 / 4) / 100
        assert job.fraction() == pytest.approx(fraction)
        assert job.eta() == pytest.approx(elapsed / fraction - elapsed)
        job.run(3, 4, "r3", finished=True)  # three runs done (worker processes)
        assert job.fraction() == pytest.approx((10 + 30 * 3 / 4) / 100)


def test_skipped_stages_count_as_done_and_the_eta_uses_the_work_done_here(no_bar):
    clock = FakeClock()
    with progress.JobProgress(["a", "b", "c"], [10, 30, 60], clock=clock) as job:
        job.skip("a")
        assert job.fraction() == pytest.approx(0.1) and job.eta() is None
        job.start("b")
        clock.now += 40
        job.finish("b", 40)
        assert job.fraction() == pytest.approx(0.4)
        assert job.eta() == pytest.approx(60 * 40 / 30)  # c at b's pace


def test_without_a_terminal_stages_and_runs_are_log_lines(tmp_path, no_bar, log):
    world = _world(tmp_path)

    def many(config, stage_dir, earlier):
        jobs_lib.run_jobs(_jobs(stage_dir, 3), world)
        return {"runs": 3}

    stages = [stages_lib.Stage("one", "the first stage", lambda c, d, e: {}, weight=10),
              stages_lib.Stage("many", "three runs", many, weight=30)]
    stages_lib.run_stages(stages, ml_collections.ConfigDict(), str(tmp_path / "w"))
    lines = _lines(log)
    assert lines[0].startswith("[job 0%] [1/2] one: the first stage; elapsed ")
    assert lines[0].endswith("ETA ?")
    assert lines[1].startswith("[job 25%] [1/2] one: done in ")
    assert lines[2].startswith("[job 25%] [2/2] many: three runs; elapsed ")
    runs = [line for line in lines if "many: run " in line]
    assert [line.split("; ")[0] for line in runs] == [
        "[job 25%] many: run 1 of 3 (r1)", "[job 50%] many: run 2 of 3 (r2)",
        "[job 75%] many: run 3 of 3 (r3)"]
    assert all("ETA " in line and "ETA ?" not in line for line in runs)
    assert lines[-1].startswith("[job 100%] [2/2] many: done in ")
    assert lines[-1].endswith("ETA 0s")


@pytest.mark.slow
def test_worker_processes_report_each_finished_run(tmp_path, no_bar, log):
    world = _world(tmp_path)
    with progress.JobProgress(["many"]) as job:
        job.start("many")
        jobs_lib.run_jobs(_jobs(str(tmp_path), 2), world, workers=2, threads_per_worker=1)
        assert job.fraction() == 1.0
    done = [line.split("; ")[0] for line in _lines(log) if "runs done" in line]
    assert [line.split(" (")[0] for line in done] == ["[job 50%] many: 1 of 2 runs done",
                                                      "[job 100%] many: 2 of 2 runs done"]


def test_a_forced_bar_draws_the_job_and_the_runs_beneath_it(monkeypatch):
    monkeypatch.setenv(progress.ENV, "1")
    monkeypatch.delenv("LSC_PROGRESS_INNER", raising=False)
    stream = io.StringIO()
    assert progress.inner_bar_kwargs() == {}
    with progress.JobProgress(["a", "b"], [1, 3], stream=stream) as job:
        assert job.bar is not None
        assert progress.current() is job
        assert progress.inner_bar_kwargs() == {"position": 1, "leave": False}
        job.start("a")
        job.finish("a", 1.0)
        job.start("b")
        job.run(1, 2, "r1")
        with tqdm(total=3, file=stream, desc="train", **progress.inner_bar_kwargs()) as inner:
            inner.update(3)
        job.run(2, 2, "r2")
        job.finish("b", 2.0)
    out = stream.getvalue()
    assert "b: run 2 of 2 (r2)" in out and "train" in out
    assert "[job 25%] [1/2] a: done in 1s" in out
    assert "job 100%|" in out
    assert progress.inner_bar_kwargs() == {} and "LSC_PROGRESS_INNER" not in os.environ
    assert progress.current().run(1, 2, "x") is None  # no job: a no-op


def test_run_stages_in_bar_mode_keeps_its_result_and_status_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "1")

    def make(name):
        def run(config, stage_dir, earlier):
            assert progress.inner_bar_kwargs() == {"position": 1, "leave": False}
            return {"name": name, "earlier": sorted(earlier)}

        return run

    stages = [stages_lib.Stage(name, f"stage {name}", make(name)) for name in "ab"]
    out = stages_lib.run_stages(stages, ml_collections.ConfigDict(), str(tmp_path))
    assert out == {"completed": ["a", "b"],
                   "results": {"a": {"name": "a", "earlier": []},
                               "b": {"name": "b", "earlier": ["a"]}}}
    status = json.loads((tmp_path / stages_lib.STATUS_FILE).read_text())
    assert sorted(status) == ["a", "b"]
    assert status["b"]["status"] == "done" and status["b"]["result"] == out["results"]["b"]
    assert isinstance(status["b"]["seconds"], float)
    for key in ("cpu_user", "cpu_system", "minor_faults"):  # this process's, at least 0
        assert status["b"][key] >= 0
    assert "job 100%|" in capsys.readouterr().err
    assert progress.inner_bar_kwargs() == {}


def test_run_stages_counts_stages_done_earlier(tmp_path, no_bar):
    seen = {}

    def record(config, stage_dir, earlier):
        seen["fraction"] = progress.current().fraction()
        return {}

    stages = [stages_lib.Stage("a", "a", record, weight=1),
              stages_lib.Stage("b", "b", record, weight=3)]
    stages_lib.run_stages(stages[:1], ml_collections.ConfigDict(), str(tmp_path))
    again = stages_lib.run_stages(stages, ml_collections.ConfigDict(), str(tmp_path))
    assert again["completed"] == ["a", "b"]
    assert seen["fraction"] == pytest.approx(0.25)  # inside b, with a skipped
