"""The stages of the miniature reproduction, in data-flow order, and :func:`run`.

=====================  ==========================================================================
stage                  what it does (outputs under ``<workdir>/<stage>/``)
=====================  ==========================================================================
world                  the synthetic gold world and its tokenizer, read back through the reader
reward_models          one ``train_rm`` run per property on the limited preference data
sft                    the base policy ``pi0`` (``train_sft`` on the demonstrations)
reference_predictor    one ``train_reference`` run per property (the note's "predict median")
base_samples           ``pi0`` on the evaluation prompts: judging samples, a second independent
                       set (the base entry), reference samples and selection samples, all scored
                       by the proxy reward models and the gold judge (``base_samples.npz``)
best_of_k              the note's grid: sigma_AND / sigma_OR x oracle median / predicted median /
                       no subtraction, plus the sum baselines, for every k (``entries.json``)
rlhf                   one ``rlhf`` gamma sweep per ``rlhf.runs`` entry (raw vs LSC; raw sum vs
                       LSC sum)
evaluate               every RLHF policy (and its snapshots along training) judged against the
                       base samples: KL, win rates with CIs, underfitting, reward hacking,
                       shortcut features (``entries.json``)
report                 ``results.json``, the figures and ``report.md`` in the workdir
=====================  ==========================================================================

Each stage runs once: its status is kept in ``<workdir>/stages.json`` and a rerun skips finished
stages; the jobs inside a stage resume from their own checkpoints. A preempted job stops the
reproduction with the job's exit code.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np
from absl import logging

from lsc import config as config_lib
from lsc import runtime
from lsc import stages as stages_lib
from lsc.align import rlhf as align_rlhf
from lsc.data import hh_rlhf, synthetic
from lsc.repro import evaluation, figures, grid, subconfigs
from lsc.repro.subconfigs import PROPERTIES
from lsc.rewards import names
from lsc.train import common as train_common
from lsc.train import reference_predictor as train_reference
from lsc.train import reward_model as train_reward_model
from lsc.train import sft as train_sft


class JobStopped(RuntimeError):
    """A job inside a stage stopped early (preempted or failed); ``exit_code`` is its code."""

    def __init__(self, job: str, exit_code: int):
        super().__init__(f"{job} stopped with exit code {exit_code}")
        self.exit_code = exit_code


def _world_dir(stage_dir: str) -> str:
    return os.path.join(os.path.dirname(stage_dir), "world")


def _run_job(run_fn, sub: ml_collections.ConfigDict, workdir: str, world_dir: str) -> None:
    """Runs one job in ``workdir`` (its ``world/`` linked to the reproduction's world)."""
    os.makedirs(workdir, exist_ok=True)
    link = os.path.join(workdir, "world")
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(world_dir, workdir), link)
    config_lib.validate(sub)
    runtime.write_json_atomic(os.path.join(workdir, "config.json"), sub.to_dict())
    code = run_fn(sub, workdir)
    if code != 0:
        raise JobStopped(f"{sub.job} in {workdir}", code)


# --------------------------------------------------------------------------- stages


def world_stage(config: ml_collections.ConfigDict, stage_dir: str, earlier: Dict[str, Any]):
    """Writes the synthetic world in the hh-rlhf format and reads it back through the reader.

    Returns the file layout, record counts, the reader's skip counts and the gold scores of the
    demonstrations (the base policy's training data) per property.
    """
    world_config = synthetic.WorldConfig(**config.world.to_dict())
    files = synthetic.write_world(stage_dir, seed=int(config.seed), cfg=world_config)
    tokenizer_path = synthetic.write_tokenizer(stage_dir)
    stats = hh_rlhf.ReadStats()
    counts = {}
    for name in ("helpful", "harmless"):
        for split, path in getattr(files, name).items():
            pairs, _ = hh_rlhf.read_pairs(path, on_error=config.data.on_error, stats=stats)
            counts[f"{name}/{split}"] = len(pairs)
    demos, _ = hh_rlhf.read_demonstrations(files.sft["train"], config.data.on_error, stats)
    prompts, _ = hh_rlhf.read_prompts(files.prompts["train"], config.data.on_error, stats)
    counts["sft/train"] = len(demos)
    counts["prompts/train"] = len(prompts)
    hh_rlhf.write_read_stats(stats, stage_dir)
    demo_prompts = [d.prompt for d in demos]
    demo_responses = [d.response for d in demos]
    gold = {}
    for prop in PROPERTIES:
        scores = synthetic.gold_scores(demo_prompts, demo_responses, prop)
        gold[prop] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
    logging.info("world: %s; demonstrations' gold helpful %.3f +- %.3f, harmless %.3f +- %.3f",
                 ", ".join(f"{k} {v}" for k, v in counts.items()), gold["helpful"]["mean"],
                 gold["helpful"]["std"], gold["harmless"]["mean"], gold["harmless"]["std"])
    return {"root": files.root, "tokenizer": tokenizer_path, "counts": counts,
            "skipped": dict(stats.skipped), "demonstrations_gold": gold}


def reward_models_stage(config, stage_dir, earlier):
    """One ``train_rm`` run per property; returns their workdirs and held-out metrics."""
    out = {}
    for prop in PROPERTIES:
        workdir = os.path.join(stage_dir, prop)
        _run_job(train_reward_model.run, subconfigs.reward_model(config, prop), workdir,
                 _world_dir(stage_dir))
        summary = evaluation.run_summary(workdir)
        held_out = summary.get("held_out", {})
        out[prop] = {"workdir": workdir, "accuracy": held_out.get("accuracy"),
                     "gold_ceiling": summary.get("gold_ceiling", {}).get("expected"),
                     "held_out": held_out}
        logging.info("reward model %s: held-out accuracy %s, gold-label ceiling %s", prop,
                     out[prop]["accuracy"], out[prop]["gold_ceiling"])
    return out


def sft_stage(config, stage_dir, earlier):
    """The base policy; returns its workdir and held-out metrics."""
    workdir = os.path.join(stage_dir, "policy")
    _run_job(train_sft.run, subconfigs.sft(config), workdir, _world_dir(stage_dir))
    summary = evaluation.run_summary(workdir)
    return {"workdir": workdir, "eval": summary.get("eval", {})}


def reference_predictor_stage(config, stage_dir, earlier):
    """One predictor of the median proxy reward under ``pi0`` per property."""
    out = {}
    policy = earlier["sft"]["workdir"]
    for prop in PROPERTIES:
        workdir = os.path.join(stage_dir, prop)
        rm = earlier["reward_models"][prop]["workdir"]
        _run_job(train_reference.run, subconfigs.reference_predictor(config, rm, policy), workdir,
                 _world_dir(stage_dir))
        out[prop] = {"workdir": workdir, "eval": evaluation.run_summary(workdir).get("eval", {})}
        logging.info("reference predictor %s: %s", prop, out[prop]["eval"])
    return out


def base_samples_stage(config, stage_dir, earlier):
    """``pi0`` on the evaluation prompts (see :mod:`lsc.repro.evaluation`)."""
    ctx = evaluation.Context.load(config, earlier, os.path.dirname(stage_dir))
    path = os.path.join(stage_dir, evaluation.BASE_SAMPLES)
    info = evaluation.draw_base_samples(ctx, config, path)
    return {"path": path, **info}


def best_of_k_stage(config, stage_dir, earlier):
    """The note's best-of-k grid; returns the number of entries (``entries.json``)."""
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    bok = config.best_of_k
    cells = [(m, r) for m in bok.methods for r in bok.references]
    for method in bok.baselines:
        cells.append((method, names.NO_REFERENCE if method in names.RAW_NAMES
                      else "oracle_median"))
    refs = {"oracle_median": base["oracle_median"], "predict_median": base["predict_median"]}
    tok = evaluation.load_tokenizer(os.path.dirname(stage_dir))
    sel_texts = evaluation.decode_grid(tok, base["selection"]["tokens"])

    def features(idx):
        from lsc.eval import diagnostics

        chosen = [sel_texts[i][j] for i, j in enumerate(idx)]
        return {"shortcuts": diagnostics.shortcut_features(chosen, evaluation.SHORTCUTS)}

    entries = grid.grid_entries(
        properties=PROPERTIES, cells=cells, ks=[int(k) for k in bok.ks],
        rewards=base["selection"]["rewards"], gold=base["selection"]["gold"], references=refs,
        base_gold=base["judge"]["gold"][:, 0], kl_rewards=base["reference"]["rewards"],
        bootstrap=evaluation.bootstrap_kwargs(config), features=features)
    path = os.path.join(stage_dir, "entries.json")
    runtime.write_json_atomic(path, entries)
    return {"entries": path, "num_entries": len(entries)}


def rlhf_stage(config, stage_dir, earlier):
    """One gamma sweep per ``rlhf.runs`` entry; returns their workdirs."""
    rms = {p: earlier["reward_models"][p]["workdir"] for p in PROPERTIES}
    preds = {p: earlier["reference_predictor"][p]["workdir"] for p in PROPERTIES}
    out = {}
    for name in config.rlhf.runs:
        workdir = os.path.join(stage_dir, name)
        sub = subconfigs.rlhf(config, name, rms, earlier["sft"]["workdir"], preds)
        _run_job(align_rlhf.run, sub, workdir, _world_dir(stage_dir))
        out[name] = {"workdir": workdir, "kl_coefs": align_rlhf.kl_coefs(sub)}
    return out


def evaluate_stage(config, stage_dir, earlier):
    """Judges every RLHF run; writes ``entries.json`` (base entry and RLHF entries)."""
    ctx = evaluation.Context.load(config, earlier, os.path.dirname(stage_dir))
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    entries: List[Dict[str, Any]] = [evaluation.base_entry(base, config)]
    curves = {}
    for name, run in earlier["rlhf"].items():
        run_cfg = train_common.load_run_config(run["workdir"])
        for gamma in run["kl_coefs"]:
            gdir = align_rlhf.gamma_workdir(run["workdir"], gamma, run["kl_coefs"])
            entry, curve = evaluation.rlhf_entry(ctx, config, base, name, run_cfg, gamma, gdir)
            entries.append(entry)
            curves[entry["name"]] = curve
            logging.info("%s: KL %.3f, win %s", entry["name"], entry["kl"]["mean"],
                         {k: round(v["value"], 3) for k, v in entry["win_rate"].items()})
    path = os.path.join(stage_dir, "entries.json")
    runtime.write_json_atomic(path, entries)
    runtime.write_json_atomic(os.path.join(stage_dir, "curves.json"), curves)
    return {"entries": path, "curves": os.path.join(stage_dir, "curves.json"),
            "num_entries": len(entries)}


def report_stage(config, stage_dir, earlier):
    """``results.json``, figures and ``report.md`` in the workdir."""
    workdir = os.path.dirname(stage_dir)
    return figures.write_outputs(config, earlier, workdir)


STAGES: List[stages_lib.Stage] = [
    stages_lib.Stage("world", "generate the synthetic gold world", world_stage),
    stages_lib.Stage("reward_models", "train the proxy reward models", reward_models_stage),
    stages_lib.Stage("sft", "SFT the base policy", sft_stage),
    stages_lib.Stage("reference_predictor", "train the reference-median predictors",
                     reference_predictor_stage),
    stages_lib.Stage("base_samples", "sample and score the base policy on the evaluation prompts",
                     base_samples_stage),
    stages_lib.Stage("best_of_k", "best-of-k over aggregations x references", best_of_k_stage),
    stages_lib.Stage("rlhf", "RLHF over a sweep of KL coefficients", rlhf_stage),
    stages_lib.Stage("evaluate", "win rates and diagnostics with the gold judge", evaluate_stage),
    stages_lib.Stage("report", "results.json, figures and report.md", report_stage),
]


def validate(config: ml_collections.ConfigDict) -> None:
    """Validates the config of every job the reproduction will run (before anything runs)."""
    subconfigs.validate_all(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Runs the stages; returns the exit code (0, or a stopped job's code: preempted or
    failed)."""
    try:
        stages_lib.run_stages(STAGES, config, workdir)
    except JobStopped as e:
        logging.warning("%s; rerun the same command to resume", e)
        return e.exit_code
    if jax.process_index() == 0:
        logging.info("Reproduction complete: %s, %s and the figures in %s",
                     os.path.join(workdir, "results.json"), os.path.join(workdir, "report.md"),
                     os.path.join(workdir, "figures"))
    return 0
