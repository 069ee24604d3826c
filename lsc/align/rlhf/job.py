"""The ``rlhf`` job: one run per ``rl.seed`` x ``rl.kl_coef``, each driven by the shared runner
(:func:`lsc.train.runner.run`: resume, cadence, SIGTERM, NaN stop, progress), with the reference
bank computed once before the first run.

The workdir, for any number of seeds and KL coefficients:

* ``config.json`` -- the config, with the models that ran (:mod:`lsc.train.run_models`:
  ``models.policy``, ``models.value`` (PPO), ``models["reward_model/<property>"]``,
  ``models["predictor/<property>"]``; ``policy.model`` and ``rm_model`` hold the loaded
  checkpoints' sections);
* ``results.json`` -- ``{"seeds": [s, ...], "kl_coefs": [gamma, ...], "runs": [{"seed": s,
  "kl_coef": gamma, "dir": <the run's directory relative to the workdir, "." for a single run>,
  "train": <the run's last logged training metrics>, "gold": <gold.json without its examples;
  only with rl.gold_eval_prompts on the synthetic world>}, ...]}``, one entry per run, seeds in
  the outer loop (:func:`collect_results`);
* per run, ``<workdir>[/seed_<s>][/kl_<gamma>]`` (:func:`run_workdir`; a level only when that
  sweep has several values): ``checkpoints/``, ``tensorboard/``, ``summary.json`` (no timings: a
  killed-and-resumed run writes the same file), ``reference_cache.json``, ``model/`` (the final
  policy), ``snapshots/<step>/model.safetensors`` with ``rl.snapshot_every`` (and the early schedule,
  :func:`lsc.align.rlhf.snapshots.scheduled`) and ``gold.json`` with ``rl.gold_eval_prompts`` on
  the synthetic world. A run stopped by ``rl.stop_kl`` ends like one at ``rl.num_steps``
  (checkpoint, ``model/``, ``summary.json`` with ``stopped_early: {"step", "reason"}``, null for
  a run that went to ``rl.num_steps``) and counts as finished.

A rerun whose runs have all finished (:func:`finished`) loads nothing and computes nothing: it
rewrites ``config.json``'s model records and ``results.json`` from the files and returns.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from lsc import runtime
from lsc.align import common
from lsc.align import references as reference_lib
from lsc.align.references import bank as reference_bank
from lsc.align import utility as utility_lib
from lsc.align.rlhf import gold as gold_lib
from lsc.align.rlhf import snapshots
from lsc.align.rlhf.config import STOP_WINDOW, PPOConfig, RLConfig, rl_config
from lsc.align.rlhf.state import Models, RLState
from lsc.align.rlhf.trainer import RLTrainer
from lsc.data import pipeline
from lsc.parallel import partitioning
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import common as train_common
from lsc.train import optim, run_models, runner


@dataclasses.dataclass
class RLResult:
    """What :func:`train_rlhf` returns."""

    state: RLState
    trainer: RLTrainer
    step: int
    preempted: bool
    summary: dict


class _SlotBatches:
    """Prompt batches with their cache slots added (``slot int32[B]``); checkpointable."""

    def __init__(self, it: pipeline.BatchIterator, slots: reference_lib.PromptSlots):
        self.it, self.slots = it, slots

    def __next__(self):
        b = next(self.it)
        return {"prompt": b["prompt"], "slot": self.slots(b["prompt_id"])}

    def get_state(self):
        return self.it.get_state()

    def set_state(self, s):
        self.it.set_state(s)


def make_trainer(spec: utility_lib.UtilitySpec, cfg: RLConfig, models: Models, num_prompts: int,
                 response_len: int, mesh: Mesh, rules=partitioning.DEFAULT_RULES, *, seed: int = 0,
                 fixed_tokens: Optional[np.ndarray] = None,
                 reference: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> RLTrainer:
    """The :class:`RLTrainer` of :func:`train_rlhf` (optimisers of ``cfg.policy_optim`` and, for
    PPO, ``cfg.value_optim`` scheduled over ``cfg.num_steps * cfg.updates_per_step`` updates;
    references only looked up when ``reference`` is complete); ``seed`` initialises the value
    head."""
    total_updates = cfg.num_steps * cfg.updates_per_step
    value_optim = cfg.value_optim if isinstance(cfg, PPOConfig) else None
    tx_p = optim.make_optimizer(cfg.policy_optim, total_updates)
    tx_v = optim.make_optimizer(value_optim, total_updates)
    complete = reference is not None and bool(np.all(np.asarray(reference[1])))
    return RLTrainer(spec, cfg, models, tx_p, tx_v, mesh, rules, num_prompts=num_prompts,
                     response_len=response_len, fixed_tokens=fixed_tokens, seed=seed,
                     reference_lookup_only=complete)


def train_rlhf(*, workdir: str, spec: utility_lib.UtilitySpec, rl_config: RLConfig,
               models: Models, prompts: pipeline.TokenizedData, response_len: int, mesh: Mesh,
               rules=partitioning.DEFAULT_RULES, fixed_tokens: Optional[np.ndarray] = None,
               reference: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               trainer: Optional[RLTrainer] = None) -> RLResult:
    """Runs RLHF to ``rl_config.num_steps`` (resuming from ``<workdir>/checkpoints``).

    Args:
      workdir: output directory (``checkpoints/``, ``tensorboard/``, ``summary.json``,
        ``reference_cache.json``, ``model/`` with the final policy).
      spec: the utility; rl_config: the typed ``config.rl`` (:func:`rl_config`; its ``seed``
        is the run's); models: :class:`Models`.
      prompts: the alignment prompt table (kind 'prompts', with ``prompt_id``).
      response_len: ``R``.
      mesh, rules: device mesh and logical-axis rules.
      fixed_tokens: ``int32[m, R0]`` fixed responses of fixed_response references.
      reference: the reference cache a fresh run starts from (:meth:`RLTrainer.init_state`);
        ignored when resuming (the checkpoint holds the cache). A complete one (every prompt
        filled, e.g. :mod:`lsc.align.references.bank`) is only looked up.
      trainer: a trainer of an earlier run of the same job (same utility, ``rl_config`` up to
        ``kl_coef``, models and prompts) to reuse with its compiled steps; None builds one
        (:func:`make_trainer`).

    Returns:
      :class:`RLResult`.
    """
    cfg = rl_config
    slots = reference_lib.PromptSlots(prompts.arrays["prompt_id"])
    if trainer is None:
        trainer = make_trainer(spec, cfg, models, len(slots), response_len, mesh, rules,
                               seed=cfg.seed, fixed_tokens=fixed_tokens, reference=reference)
    data = _SlotBatches(train_common.train_iterator(prompts, cfg.batch_size, cfg.seed), slots)

    def step_fn(state, batch):
        timings: Dict[str, float] = {}
        state, host = trainer.step(state, batch, cfg.kl_coef, timings)
        return state, host, timings

    def after_log(step: int, means: Dict[str, float], ctx: runner.Run):
        logging.info("step %d: utility %.4f kl %.4f entropy %.3f len %.2f", step,
                     means["utility"], means["kl"], means["entropy"], means["response_length"])

    level: List[Optional[float]] = [None]  # the running KL at the last export

    def after_step(step: int, state: RLState, ctx: runner.Run):
        if level[0] is None:
            level[0] = snapshots.kl_level(workdir, step)
        running = sum(ctx.recent) / len(ctx.recent) if ctx.recent else 0.0
        if (snapshots.scheduled(step, cfg.snapshot_every, cfg.snapshot_every_early,
                                cfg.snapshot_early_until)
                or snapshots.kl_triggered(ctx.recent, level[0], cfg.snapshot_kl)):
            snapshots.export_snapshot(workdir, trainer, state, step, kl_level=running)
            level[0] = running

    # The stop rule's window of training kl_k1 also drives the KL-triggered snapshots (a rule
    # that never stops when only rl.snapshot_kl is set).
    stop = (runner.StopRule("kl_k1", float(cfg.stop_kl) if cfg.stop_kl > 0 else math.inf,
                            STOP_WINDOW, "rl.stop_kl")
            if cfg.stop_kl > 0 or cfg.snapshot_kl > 0 else None)

    out = runner.run(
        workdir=workdir, init=lambda fresh: trainer.init_state(reference, seed=cfg.seed),
        data=data,
        step_fn=step_fn,
        cadence=runner.Cadence(cfg.num_steps, cfg.log_every, cfg.save_every,
                               cfg.keep_checkpoints, cfg.progress, "rl.num_steps"),
        finite=("policy_loss", "value_loss", "utility"), name="rlhf", after_log=after_log,
        after_step=after_step, stop=stop)
    state, step = out.state, out.step
    logging.info("compilations: %s", trainer.traces)
    if out.preempted:
        return RLResult(state, trainer, step, True, {})
    table, filled = jax.device_get((state.ref_table, state.ref_filled))
    if jax.process_index() == 0:
        reference_lib.write_cache(os.path.join(workdir, "reference_cache.json"), slots, table,
                                  filled, spec.properties)
    history = out.metrics.history
    summary = {"step": step, "kl_coef": cfg.kl_coef, "algorithm": cfg.algorithm,
               "method": spec.method, "properties": list(spec.properties),
               "train": dict(history["train"][-1]) if history["train"] else {},
               "history": history,
               "reference_prompts_cached": int(np.sum(filled)),
               "stopped_early": ({"step": step, "reason": out.stopped} if out.stopped
                                 else None)}
    _, _, rest = nnx.split(trainer.policy_model(state), nnx.Param, ...)
    checkpoint_lib.export_model(workdir, state.policy, rest)
    runner.finish(workdir, summary)
    return RLResult(state, trainer, step, False, summary)


def kl_coefs(config: ml_collections.ConfigDict) -> list:
    """``config.rl.kl_coef`` as a list (a tuple is a sweep)."""
    v = config.rl.kl_coef
    return [float(x) for x in v] if isinstance(v, (tuple, list)) else [float(v)]


def rl_seeds(config: ml_collections.ConfigDict) -> list:
    """``config.rl.seed`` as a list (a tuple runs one training per seed; absent: ``[config.seed]``,
    the behaviour of configs written before ``rl.seed`` existed)."""
    v = config.rl.get("seed", None)
    if v is None:
        v = config.get("seed", 0)
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)]


SEED_PREFIX = "seed_"


def seed_dir(seed: int) -> str:
    """``seed_<seed>``: the directory level of RL seed ``seed`` (and its name in results)."""
    return f"{SEED_PREFIX}{int(seed)}"


def kl_dir(gamma: float) -> str:
    """``kl_<gamma>``: the directory level of KL coefficient ``gamma`` (and its name in
    results)."""
    return f"kl_{gamma:g}"


def gamma_workdir(workdir: str, gamma: float, gammas: Sequence[float]) -> str:
    """The directory of the run with ``kl_coef = gamma`` of the sweep ``gammas``: ``workdir``
    itself for a single value, else ``<workdir>/kl_<gamma>``."""
    return workdir if len(gammas) == 1 else os.path.join(workdir, kl_dir(gamma))


def run_workdir(workdir: str, seed: int, gamma: float, seeds: Sequence[int],
                gammas: Sequence[float]) -> str:
    """The directory of the run (``rl.seed = seed``, ``kl_coef = gamma``) of a job sweeping
    ``seeds`` x ``gammas``: ``<workdir>[/seed_<seed>][/kl_<gamma>]``, each level only when that
    sweep has several values."""
    base = workdir if len(seeds) == 1 else os.path.join(workdir, seed_dir(seed))
    return gamma_workdir(base, gamma, gammas)


def _gold_evaluated(config: ml_collections.ConfigDict) -> bool:
    return config.data.source == "synthetic" and bool(int(config.rl.get("gold_eval_prompts", 0)))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """True when every run of the job has its ``summary.json`` at ``rl.num_steps`` or stopped
    early by ``rl.stop_kl`` (and its ``gold.json`` when the gold evaluation is on)."""
    gammas, seeds = kl_coefs(config), rl_seeds(config)
    for seed in seeds:
        for gamma in gammas:
            run_dir = run_workdir(workdir, seed, gamma, seeds, gammas)
            summary = _read_json(os.path.join(run_dir, "summary.json"))
            if summary is None or (int(summary["step"]) < int(config.rl.num_steps)
                                   and not summary.get("stopped_early")):
                return False
            if _gold_evaluated(config) and not os.path.exists(os.path.join(run_dir, "gold.json")):
                return False
    return True


def collect_results(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The job's ``results.json`` (layout in the module docstring) from its runs'
    ``summary.json`` and ``gold.json``."""
    gammas, seeds = kl_coefs(config), rl_seeds(config)
    runs = []
    for seed in seeds:
        for gamma in gammas:
            run_dir = run_workdir(workdir, seed, gamma, seeds, gammas)
            entry = {"seed": seed, "kl_coef": gamma, "dir": os.path.relpath(run_dir, workdir),
                     "train": _read_json(os.path.join(run_dir, "summary.json"))["train"]}
            if _gold_evaluated(config):
                gold = _read_json(os.path.join(run_dir, "gold.json"))
                entry["gold"] = {k: v for k, v in gold.items() if k != "examples"}
            runs.append(entry)
    return {"seeds": seeds, "kl_coefs": gammas, "runs": runs}


def _write_results(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        runtime.write_json_atomic(os.path.join(workdir, "results.json"),
                                  collect_results(config, workdir))


def _record_models(config: ml_collections.ConfigDict, workdir: str,
                   records: Sequence[run_models.ModelRecord]) -> None:
    """``config.json``'s model records (:func:`lsc.train.run_models.record`), with PPO's value
    model after the policy."""
    records = list(records)
    if config.rl.get("algorithm", "ppo") == "ppo":
        records.insert(1, run_models.value_record(records[0]))
        logging.info("built %s", records[1].summary())
    run_models.record(workdir, config, records)


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``rlhf`` job: one run per ``rl.seed`` x ``rl.kl_coef`` (tuples sweep; each run in
    :func:`run_workdir`). Every prompt's reference is computed once before the first run
    (:func:`lsc.align.references.bank.reference_table`); a job whose runs have all finished does nothing
    (:func:`finished`). Exit code 0, 1 (non-finite loss) or
    :data:`lsc.train.runner.PREEMPTED_EXIT_CODE`."""
    spec = utility_lib.spec_from_config(config.rewards)
    if finished(config, workdir):
        logging.info("rlhf: every run in %s has finished; nothing to do", workdir)
        _record_models(config, workdir, common.job_models(config, spec, 0, load=False).records)
        _write_results(config, workdir)
        return 0
    tok, table, _ = common.tokenizer_and_prompts(config, workdir, "train")
    r_len = int(config.data.response_len)
    mesh, rules = train_common.make_mesh(config)
    loaded = common.job_models(config, spec, tok.vocab_size,
                               shardings=run_models.mesh_shardings(mesh, rules))
    _record_models(config, workdir, loaded.records)
    models = Models(pi0=loaded.pi0, reward_models=loaded.reward_models,
                    predictors=loaded.predictors)
    fixed = reference_lib.fixed_response_tokens(spec, tok, r_len)
    gammas, seeds = kl_coefs(config), rl_seeds(config)
    reference = reference_bank.reference_table(config, spec, models, table.arrays["prompt"],
                                               fixed)
    # One trainer (compiled steps) per gamma, shared by the seeds (rebuilt per seed only when
    # references are estimated in the loop, whose cache flag it fixes); its value head is
    # initialised from the world seed, so a seed's run does not depend on the job's other seeds.
    trainers: Dict[float, RLTrainer] = {}
    for seed in seeds:
        # Without a bank the gamma runs of a seed share their cache: each starts from the
        # previous run's, so every prompt's reference is estimated once per seed.
        cache = reference
        for gamma in gammas:
            run_dir = run_workdir(workdir, seed, gamma, seeds, gammas)
            cfg = rl_config(config.rl, kl_coef=gamma, seed=seed)
            if cfg.unread:
                logging.info("rl.algorithm=%r reads none of rl.%s", cfg.algorithm,
                             ", rl.".join(cfg.unread))
            if gamma not in trainers or (reference is None and spec.uses_reference):
                trainers[gamma] = make_trainer(
                    spec, cfg, models, len(table.arrays["prompt_id"]), r_len, mesh, rules,
                    seed=int(config.seed), fixed_tokens=fixed, reference=cache)
            try:
                res = train_rlhf(workdir=run_dir, spec=spec, rl_config=cfg, models=models,
                                 prompts=table, response_len=r_len, mesh=mesh, rules=rules,
                                 fixed_tokens=fixed, reference=cache, trainer=trainers[gamma])
            except runner.NonFiniteLossError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            if res.preempted:
                return runner.PREEMPTED_EXIT_CODE
            if reference is None:
                cache = jax.device_get((res.state.ref_table, res.state.ref_filled))
            if _gold_evaluated(config):
                _, test_table, test_texts = common.tokenizer_and_prompts(config, workdir, "test")
                n = min(cfg.gold_eval_prompts, len(test_texts))
                gold = gold_lib.gold_evaluation(res.trainer.policy_model(res.state), models.pi0, tok,
                                       test_table.arrays["prompt"][:n], test_texts[:n],
                                       spec.properties, response_len=r_len,
                                       seed=int(config.seed) + 1)
                if jax.process_index() == 0:
                    runtime.write_json_atomic(os.path.join(run_dir, "gold.json"), gold)
                logging.info("gold evaluation (seed %d, gamma %g): %s", seed, gamma,
                             {k: v for k, v in gold.items() if k != "examples"})
    _write_results(config, workdir)
    return 0
