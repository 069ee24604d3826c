"""Jobs started from saved weights run on a mesh and give the one-device results.

``tests/parallel/saved_weights_jobs.py`` runs every such job (``train_rm`` from a Hugging Face
T5 via ``model.init_from``; ``train_predictor``, ``rlhf`` and ``best_of_k`` from Hugging Face
checkpoints converted by ``lsc.models.hf_convert`` and from the run directories of the jobs
before them) in one process per device layout, the layouts at the same time: one device (the
reference), 8 simulated CPU devices in one process, and 2 processes x 4 devices, both on the mesh
``data=2, fsdp=2, tensor=2``.

Every model a job reads from a run directory lies on the whole mesh, some arrays cut into shards
(nothing whole on one device), and the imported T5 is host arrays until it is put on the mesh.

8 devices against one: the same programs partitioned, so float32 sums run in another order;
parameters after two optimiser steps agree to ``PARAM_ATOL`` (float32 rounding; measured 2e-8),
metrics, rewards and oracle targets to ``RTOL`` / ``ATOL``, sampled tokens and best-of-k choices
exactly. 2 x 4 against 8: the same partitioned programs with other collectives, parameters to
``test_multiprocess``'s tolerances, the rest as against one.
"""

import json
import os
import sys

import numpy as np
import pytest

import saved_weights_jobs
from test_multiprocess import (ROOT, assert_metrics_match, assert_params_match, exported_params,
                               job_env, run_commands, summary, two_process_envs)

pytestmark = pytest.mark.hf
pytest.importorskip("transformers")

DRIVER = os.path.join(ROOT, "tests", "parallel", "saved_weights_jobs.py")
MESH = "data=2,fsdp=2,tensor=2"
TRAINED = ("train_rm", "train_predictor", "rlhf")  # the jobs that export a model
RTOL, ATOL, PARAM_ATOL = 1e-3, 1e-4, 1e-6


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The runs of every layout: ``<root>/{one,eight,two}/<job>``."""
    path = str(tmp_path_factory.mktemp("saved_weights"))
    saved_weights_jobs.prepare(path)
    cmd = [sys.executable, DRIVER, path]
    run_commands([(cmd + ["one", "data=-1"], job_env(1)), (cmd + ["eight", MESH], job_env(8))]
                 + [(cmd + ["two", MESH], env) for env in two_process_envs()],
                 os.path.join(path, "layout"))
    return path


def _json(*parts) -> dict:
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def _close(a, b, where: str) -> None:
    assert_metrics_match(a, b, where, RTOL, ATOL)


def _no_timing(tree):
    """``tree`` without wall-clock entries (keys with ``seconds`` in them)."""
    if isinstance(tree, dict):
        return {k: _no_timing(v) for k, v in tree.items() if "seconds" not in k}
    return tree


def _best_of_k(run: str) -> tuple:
    """``(results.json without timings, {k file: [(index, response), ...]})``."""
    choices = {}
    out = os.path.join(run, "best_of_k")
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), encoding="utf-8") as f:
            choices[name] = [(r["index"], r["response"]) for r in map(json.loads, f)]
    return _no_timing(_json(run, "results.json")), choices


def _params_close(a: str, b: str) -> None:
    """The models exported by runs ``a`` and ``b`` agree to ``PARAM_ATOL``."""
    pa, pb = exported_params(a), exported_params(b)
    assert sorted(pa) == sorted(pb), (a, b)
    for name in pa:
        np.testing.assert_allclose(pb[name], pa[name], rtol=0, atol=PARAM_ATOL,
                                   err_msg=f"{b} {name}")


def _assert_layouts_match(a: str, b: str, assert_params) -> None:
    """Every job of layout ``b`` gave layout ``a``'s results (module docstring); the exported
    models compared by ``assert_params(run_a, run_b)``."""
    for job in TRAINED:
        assert_params(os.path.join(a, job), os.path.join(b, job))
        _close(summary(os.path.join(a, job)), summary(os.path.join(b, job)), f"{job} summary")
    files = [(np.load(os.path.join(r, "train_predictor", "reference_samples.npz")),
              np.load(os.path.join(r, "train_predictor", "oracle_targets.npz"))) for r in (a, b)]
    (samples_a, targets_a), (samples_b, targets_b) = files
    for key in samples_a.files:
        np.testing.assert_array_equal(samples_b[key], samples_a[key], err_msg=key)
    for key in targets_a.files:
        np.testing.assert_allclose(targets_b[key], targets_a[key], rtol=RTOL, atol=ATOL)
    (results_a, choices_a), (results_b, choices_b) = (_best_of_k(os.path.join(r, "best_of_k"))
                                                      for r in (a, b))
    assert choices_b == choices_a
    _close(results_a, results_b, "best_of_k results")


# The models each job reads from a run directory (saved_weights_jobs.watch_loads).
LOADED = {"train_rm": [], "train_predictor": ["policy", "reward_model"],
          "rlhf": ["policy", "predictor/helpful", "reward_model/helpful"],
          "best_of_k": ["policy", "reward_model/helpful"]}


@pytest.mark.slow
@pytest.mark.parametrize("layout,devices", [("one", 1), ("eight", 8), ("two", 8)])
def test_saved_models_are_read_onto_the_mesh_and_imports_stay_on_the_host(root, layout, devices):
    for job, roles in LOADED.items():
        report = _json(root, layout, job, saved_weights_jobs.PLACEMENTS)
        assert report.pop("init_from", ["ndarray"]) == ["ndarray"], job
        assert sorted(report) == roles, job
        for role, placed in report.items():
            # Every array on the whole mesh; on 8 devices some cut into shards.
            assert placed == {"devices": [devices], "split": devices > 1}, (job, role)
    assert "init_from" in _json(root, layout, "train_rm", saved_weights_jobs.PLACEMENTS)


@pytest.mark.slow
def test_eight_devices_give_the_one_device_results(root):
    _assert_layouts_match(os.path.join(root, "one"), os.path.join(root, "eight"), _params_close)


@pytest.mark.slow
def test_two_processes_give_the_eight_device_results(root):
    _assert_layouts_match(os.path.join(root, "eight"), os.path.join(root, "two"),
                          assert_params_match)
