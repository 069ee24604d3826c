"""The evaluate stage's jobs: each RLHF method's runs judged along training in one job.

The stage (:func:`lsc.repro.pipeline.evaluate_stage`) writes the earlier stages' results to
``<stage>/inputs.json`` and runs one :func:`run` job per ``rlhf.runs`` entry in
``<stage>/<method>`` (in parallel worker processes, :mod:`lsc.repro.jobs`). A job judges every
RL seed and gamma of its method (:func:`lsc.repro.evaluation.trajectory` and
:func:`lsc.repro.evaluation.rlhf_entry`) and writes, per run, ``<run dir>/trajectory.npz`` then
``<run dir>/judged.json`` (``{"entry", "curve"}``), the latter last: a run with ``judged.json``
is complete and a resumed job skips it. :func:`collect` reads them back in the stage's order.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, Mapping, Tuple

import ml_collections
import numpy as np
from absl import logging

from lsc import runtime
from lsc.align import rlhf as align_rlhf
from lsc.repro import evaluation
from lsc.train import common as train_common

INPUTS = "inputs.json"
TRAJECTORY = "trajectory.npz"
JUDGED = "judged.json"


def job_config(config: ml_collections.ConfigDict, stage_dir: str, method: str
               ) -> ml_collections.ConfigDict:
    """The config of method ``method``'s job: the reproduction's, with ``judge.inputs`` (the
    stage's ``inputs.json``) and ``judge.method``."""
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.judge = ml_collections.ConfigDict({"inputs": os.path.join(stage_dir, INPUTS),
                                           "method": method})
    return sub


def write_inputs(stage_dir: str, earlier: Mapping[str, Any]) -> None:
    """``<stage>/inputs.json``: the earlier stages' results the jobs read."""
    keep = ("sft", "reward_models", "predictor", "base_samples", "rlhf")
    runtime.write_json_atomic(os.path.join(stage_dir, INPUTS),
                              {k: earlier[k] for k in keep if k in earlier})


def runs_of(method: str, run: Mapping[str, Any]) -> Iterator[Tuple[str, str, int, float]]:
    """``(run key, RLHF run dir, seed, gamma)`` of every run of ``method`` (its ``rlhf`` stage
    result ``run``), seed-major."""
    gammas, seeds = run["kl_coefs"], run["seeds"]
    for seed in seeds:
        for gamma in gammas:
            yield (evaluation.run_key(method, seed, gamma, gammas),
                   align_rlhf.run_workdir(run["workdir"], seed, gamma, seeds, gammas),
                   int(seed), float(gamma))


def _out_dir(stage_dir: str, key: str) -> str:
    return os.path.join(stage_dir, *key.split("/"))


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Judges every run of ``config.judge.method`` (module docstring); ``workdir`` is
    ``<stage>/<method>`` with the reproduction's world linked in. Returns 0."""
    with open(config.judge.inputs) as f:
        earlier = json.load(f)
    method = str(config.judge.method)
    stage_dir = os.path.dirname(os.path.normpath(workdir))
    todo = [r for r in runs_of(method, earlier["rlhf"][method])
            if not os.path.exists(os.path.join(_out_dir(stage_dir, r[0]), JUDGED))]
    if not todo:
        return 0
    ctx = evaluation.Context.load(config, earlier, workdir)
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    run_cfg = train_common.load_run_config(earlier["rlhf"][method]["workdir"])
    for key, rdir, seed, gamma in todo:
        traj, final, final_gold = evaluation.trajectory(ctx, config, base, rdir)
        entry, curve = evaluation.rlhf_entry(ctx, config, base, key, run_cfg, gamma, seed,
                                             traj, final, final_gold)
        out = _out_dir(stage_dir, key)
        os.makedirs(out, exist_ok=True)
        runtime.write_npz_atomic(os.path.join(out, TRAJECTORY), **traj)
        runtime.write_json_atomic(os.path.join(out, JUDGED), {"entry": entry, "curve": curve})
        logging.info("%s: KL %s, win %s", entry["name"], np.round(traj["kl_k1"], 2).tolist(),
                     {k: round(v["value"], 3) for k, v in entry["win_rate"].items()})
    return 0


def collect(stage_dir: str, rlhf: Mapping[str, Any]
            ) -> Tuple[list, Dict[str, Any], Dict[str, np.ndarray]]:
    """``(entries, curves, arrays)`` of every judged run of the ``rlhf`` stage's result, in its
    methods' order (``arrays``: ``<run key>/<field>``)."""
    entries, curves, arrays = [], {}, {}
    for method, run in rlhf.items():
        for key, _, _, _ in runs_of(method, run):
            out = _out_dir(stage_dir, key)
            with open(os.path.join(out, JUDGED)) as f:
                judged = json.load(f)
            with np.load(os.path.join(out, TRAJECTORY), allow_pickle=False) as z:
                arrays.update({f"{key}/{field}": z[field] for field in z.files})
            entries.append(judged["entry"])
            curves[judged["entry"]["name"]] = judged["curve"]
    return entries, curves, arrays
