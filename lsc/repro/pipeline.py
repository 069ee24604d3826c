"""The stages of the miniature reproduction, in data-flow order, and :func:`run`.

=====================  ==========================================================================
stage                  what it does (outputs under ``<workdir>/<stage>/``)
=====================  ==========================================================================
world                  the synthetic gold world and its tokenizer, read back through the reader
reward_models          ``train_rm`` runs on the limited preference data: ``world.pair_replicates``
                       per property, each on its own draw of the pairs and initialisation
sft                    the base policy ``pi0`` (``train_sft`` on the demonstrations)
predictor              one ``train_predictor`` run per reward model (the note's "predict median")
base_samples           ``pi0`` on the evaluation prompts: judging samples, a second independent
                       set (the base entry), reference samples, the exact arm's banks and
                       opponents and the refusal, scored by every proxy reward model and the gold
                       judge (``scored_base_samples.npz``)
exact                  the exact arm: every utility's KL-regularised optimum and best-of-k on the
                       banks, per reward-model replicate and with gold scores (``exact.npz``)
rlhf                   one ``rlhf`` job per ``rlhf.runs`` entry (raw vs LSC; raw sum vs LSC sum):
                       a run per RL seed at the method's gamma, on replicate 0's reward models,
                       references from the predictors' shared base-policy samples
evaluate               every RLHF run judged along training (its snapshots: KL, win rates against
                       the exact arm's opponents, proxy and gold, shortcut rates;
                       ``trajectories.npz``) and its final policy (``entries.json``)
report                 every claim decided into ``results.json`` (:mod:`lsc.repro.results`,
                       written once), then the figures and ``report.md`` in the workdir
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

from lsc import runtime
from lsc import stages as stages_lib
from lsc.align import rlhf as align_rlhf
from lsc.align.references import pi0_samples
from lsc.data import hh_rlhf, world, world_data
from lsc.repro import evaluation, exact_arm, judging, results, subconfigs
from lsc.repro import jobs as jobs_lib
from lsc.repro.subconfigs import PROPERTIES
from lsc.train import predictor as train_predictor
from lsc.train import reward_model as train_reward_model
from lsc.train import sft as train_sft



def _world_dir(stage_dir: str) -> str:
    return _stage_dir(stage_dir, "world")


def _stage_dir(stage_dir: str, name: str) -> str:
    """The directory of stage ``name`` of the reproduction ``stage_dir`` belongs to."""
    return os.path.join(os.path.dirname(stage_dir), name)


def _run_jobs(config: ml_collections.ConfigDict, stage_dir: str, jobs,
              workers: int = 0) -> None:
    """A stage's independent jobs, ``workers`` (default ``config.workers``; 0:
    :func:`lsc.repro.jobs.default_workers`) at a time (:mod:`lsc.repro.jobs`)."""
    workers = workers or int(config.get("workers", 1)) or jobs_lib.default_workers()
    jobs_lib.run_jobs(jobs, _world_dir(stage_dir), workers,
                      int(config.get("threads_per_worker", 0)))


# --------------------------------------------------------------------------- stages


def world_stage(config: ml_collections.ConfigDict, stage_dir: str, earlier: Dict[str, Any]):
    """Writes the synthetic world in the hh-rlhf format and reads it back through the reader.

    Returns the file layout, record counts, the reader's skip counts and the gold scores of the
    demonstrations (the base policy's training data) per property.
    """
    world_config = world.WorldConfig(**config.world.to_dict())
    files = world_data.write_world(stage_dir, seed=int(config.seed), cfg=world_config)
    tokenizer_path = world_data.write_tokenizer(stage_dir, version=world_config.version)
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
    hh_rlhf.finish_read(stats, stage_dir, hh_rlhf.max_skip_fraction(config.data))
    demo_prompts = [d.prompt for d in demos]
    demo_responses = [d.response for d in demos]
    gold = {}
    for prop in PROPERTIES:
        scores = world.gold_scores(demo_prompts, demo_responses, prop)
        gold[prop] = {"mean": float(np.mean(scores)), "std": float(np.std(scores))}
    logging.info("world: %s; demonstrations' gold helpful %.3f +- %.3f, harmless %.3f +- %.3f",
                 ", ".join(f"{k} {v}" for k, v in counts.items()), gold["helpful"]["mean"],
                 gold["helpful"]["std"], gold["harmless"]["mean"], gold["harmless"]["std"])
    return {"root": files.root, "tokenizer": tokenizer_path, "counts": counts,
            "skipped": dict(stats.skipped), "demonstrations_gold": gold}


def _replicate_dir(stage_dir: str, prop: str, replicate: int) -> str:
    """``<stage_dir>/<prop>/r<replicate>``: a replicate's run (reward model or predictor)."""
    return os.path.join(stage_dir, prop, subconfigs.replicate_name(replicate))


def reward_models_stage(config, stage_dir, earlier):
    """``world.pair_replicates`` ``train_rm`` runs per property; returns, per property and
    replicate (``r<i>``, :func:`lsc.repro.subconfigs.replicate_name`), its workdir and metrics
    (the RLHF runs use ``r0``)."""
    n = subconfigs.replicates(config)
    _run_jobs(config, stage_dir, [
        jobs_lib.Job(train_reward_model.run, subconfigs.reward_model(config, prop, r),
                     _replicate_dir(stage_dir, prop, r)) for prop in PROPERTIES for r in range(n)])
    out = {}
    for prop in PROPERTIES:
        reps = []
        for r in range(n):
            workdir = _replicate_dir(stage_dir, prop, r)
            summary = evaluation.run_summary(workdir)
            held_out = summary.get("held_out", {})
            reps.append({"workdir": workdir, "accuracy": held_out.get("accuracy"),
                         "gold_ceiling": summary.get("gold_ceiling", {}).get("expected"),
                         "held_out": held_out})
            logging.info("reward model %s replicate %d: held-out accuracy %s, gold-label "
                         "ceiling %s", prop, r, reps[-1]["accuracy"], reps[-1]["gold_ceiling"])
        out[prop] = {subconfigs.replicate_name(r): rep for r, rep in enumerate(reps)}
    return out


def sft_stage(config, stage_dir, earlier):
    """The base policy; returns its workdir and held-out metrics."""
    workdir = os.path.join(stage_dir, "policy")
    _run_jobs(config, stage_dir, [jobs_lib.Job(train_sft.run, subconfigs.sft(config), workdir)])
    summary = evaluation.run_summary(workdir)
    return {"workdir": workdir, "eval": summary.get("eval", {})}


def predictor_stage(config, stage_dir, earlier):
    """One predictor of the median proxy reward under ``pi0`` per reward model (same layout as
    the reward models' stage), all trained on targets from one shared draw of base-policy
    samples (``reference_samples.npz`` in the stage directory,
    :mod:`lsc.align.references.pi0_samples`)."""
    policy = earlier["sft"]["workdir"]
    rms = {p: evaluation.replicate_runs(earlier["reward_models"][p]) for p in PROPERTIES}
    # One draw of base-policy samples for every predictor (they differ by reward model only).
    samples = os.path.join(stage_dir, pi0_samples.FILE)
    if not os.path.exists(samples):
        train_predictor.write_reference_samples(
            subconfigs.predictor(config, "", policy),
            os.path.join(stage_dir, "samples"), samples)
    _run_jobs(config, stage_dir, [
        jobs_lib.Job(train_predictor.run,
                     subconfigs.predictor(config, rm["workdir"], policy, samples),
                     _replicate_dir(stage_dir, prop, r))
        for prop in PROPERTIES for r, rm in enumerate(rms[prop])])
    out = {}
    for prop in PROPERTIES:
        reps = []
        for r in range(len(rms[prop])):
            workdir = _replicate_dir(stage_dir, prop, r)
            reps.append({"workdir": workdir,
                         "eval": evaluation.run_summary(workdir).get("eval", {})})
            logging.info("predictor %s replicate %d: %s", prop, r, reps[-1]["eval"])
        out[prop] = {subconfigs.replicate_name(r): rep for r, rep in enumerate(reps)}
    return out


def base_samples_stage(config, stage_dir, earlier):
    """``pi0`` on the evaluation prompts (see :mod:`lsc.repro.evaluation`)."""
    ctx = evaluation.Context.load(config, earlier, os.path.dirname(stage_dir))
    path = os.path.join(stage_dir, evaluation.SCORED_BASE_SAMPLES)
    info = evaluation.draw_base_samples(ctx, config, path)
    return {"path": path, **info}


def exact_stage(config, stage_dir, earlier):
    """The exact arm (:mod:`lsc.repro.exact_arm`); returns the path of ``exact.npz``."""
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    texts = evaluation.prompt_texts(config, os.path.dirname(stage_dir))
    ex = config.exact
    arrays = exact_arm.compute(base, texts, subconfigs.replicates(config),
                               [float(x) for x in ex.kl_grid], [int(k) for k in ex.ks],
                               int(ex.rematch_resamples), int(config.seed))
    path = os.path.join(stage_dir, "exact.npz")
    runtime.write_npz_atomic(path, **arrays)
    stats = exact_arm.world_stats(base["bank"]["gold"], base["opponents"]["gold"], texts)
    logging.info("world statistics of the banks: %s", stats)
    return {"path": path, "world_stats": stats}


def rlhf_stage(config, stage_dir, earlier):
    """One ``rlhf`` job per ``rlhf.runs`` entry (a run per RL seed at the method's gamma), on
    replicate 0's reward models, with the references of the predictors' shared base-policy
    samples; returns each method's workdir, gammas and seeds."""
    first = subconfigs.replicate_name(0)
    rms = {p: earlier["reward_models"][p][first]["workdir"] for p in PROPERTIES}
    preds = {p: earlier["predictor"][p][first]["workdir"] for p in PROPERTIES}
    samples = os.path.join(_stage_dir(stage_dir, "predictor"), pi0_samples.FILE)
    subs = {name: subconfigs.rlhf(config, name, rms, earlier["sft"]["workdir"], preds,
                                  samples if os.path.exists(samples) else "")
            for name in config.rlhf.runs}
    _run_jobs(config, stage_dir, [jobs_lib.Job(align_rlhf.run, sub, os.path.join(stage_dir, name))
                                  for name, sub in subs.items()],
              workers=int(config.rlhf.get("workers", 0)))
    return {name: {"workdir": os.path.join(stage_dir, name),
                   "kl_coefs": align_rlhf.kl_coefs(sub), "seeds": align_rlhf.rl_seeds(sub)}
            for name, sub in subs.items()}


TRAJECTORIES = "trajectories.npz"


def evaluate_stage(config, stage_dir, earlier):
    """Judges every RLHF run along training (:mod:`lsc.repro.judging`: one job per method, in
    parallel workers; :func:`evaluation.trajectory`, all in ``trajectories.npz``:
    ``<run key>/<field>``, :func:`evaluation.run_key`) and its final policy (``entries.json``:
    the base entry and one entry ``rlhf/<run key>`` per method, seed and gamma)."""
    judging.write_inputs(stage_dir, earlier)
    _run_jobs(config, stage_dir, [
        jobs_lib.Job(judging.run, judging.job_config(config, stage_dir, name),
                     os.path.join(stage_dir, name)) for name in earlier["rlhf"]])
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    entries, curves, arrays = judging.collect(stage_dir, earlier["rlhf"])
    entries = [evaluation.base_entry(base, config)] + entries
    runtime.write_npz_atomic(os.path.join(stage_dir, TRAJECTORIES), **arrays)
    path = os.path.join(stage_dir, "entries.json")
    runtime.write_json_atomic(path, entries)
    runtime.write_json_atomic(os.path.join(stage_dir, "curves.json"), curves)
    return {"entries": path, "curves": os.path.join(stage_dir, "curves.json"),
            "trajectories": os.path.join(stage_dir, TRAJECTORIES),
            "num_entries": len(entries)}


def report_stage(config, stage_dir, earlier):
    """``results.json``, figures and ``report.md`` in the workdir."""
    workdir = os.path.dirname(stage_dir)
    return results.write_outputs(config, earlier, workdir)


# Weights: the stages' seconds in the README's run (seed 0), for the job's progress and ETA.
STAGES: List[stages_lib.Stage] = [
    stages_lib.Stage("world", "generate the synthetic gold world", world_stage, weight=7),
    stages_lib.Stage("reward_models", "train the proxy reward models", reward_models_stage,
                     weight=210),
    stages_lib.Stage("sft", "SFT the base policy", sft_stage, weight=20),
    stages_lib.Stage("predictor", "train the reference-median predictors",
                     predictor_stage, weight=79),
    stages_lib.Stage("base_samples", "sample and score the base policy on the evaluation prompts",
                     base_samples_stage, weight=211),
    stages_lib.Stage("exact", "exact optima and best-of-k on the banks", exact_stage, weight=7),
    stages_lib.Stage("rlhf", "RLHF, every method with every RL seed", rlhf_stage, weight=270),
    stages_lib.Stage("evaluate", "every RLHF run judged along training", evaluate_stage,
                     weight=260),
    stages_lib.Stage("report", "results.json, figures and report.md", report_stage, weight=4),
]


def validate(config: ml_collections.ConfigDict) -> None:
    """Validates the config of every job the reproduction will run (before anything runs)."""
    subconfigs.validate_all(config)


def compilation_cache(workdir: str) -> None:
    """A persistent XLA compilation cache in ``<workdir>/jax_cache`` unless one is configured:
    the replicated jobs of a stage compile the same programs (and a resumed run reuses them)."""
    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_staged(stages: List[stages_lib.Stage], config: ml_collections.ConfigDict,
               workdir: str) -> int:
    """Runs ``stages`` with the workdir's compilation cache; returns 0, or a stopped job's exit
    code (preempted or failed) after saying how to resume."""
    compilation_cache(workdir)
    try:
        stages_lib.run_stages(stages, config, workdir)
    except jobs_lib.JobStopped as e:
        logging.warning("%s; rerun the same command to resume", e)
        return e.exit_code
    return 0


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Runs the stages; returns the exit code (0, or a stopped job's code: preempted or
    failed)."""
    code = run_staged(STAGES, config, workdir)
    if code:
        return code
    if jax.process_index() == 0:
        logging.info("Reproduction complete: %s, %s and the figures in %s",
                     os.path.join(workdir, "results.json"), os.path.join(workdir, "report.md"),
                     os.path.join(workdir, "figures"))
    return 0
