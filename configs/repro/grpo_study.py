"""The GRPO study: does group normalisation undo LSC? (``lsc.repro.grpo_study``).

  python -m lsc.main --config=configs/repro/grpo_study.py --workdir=runs/grpo_study
  # reuse a finished main job's world, reward models, base policy and banks (its first six
  # stages are not rerun):
  python -m lsc.main --config=configs/repro/grpo_study.py --workdir=runs/grpo_study \
      --config.study.reuse_workdir=runs/repro

The main job's synthetic world and settings (``configs/repro/synthetic_hh.py``), with the RL arm
replaced by the study's runs, all on replicate 0's reward models, 100 steps, 12 sequences a step
(PPO: 12 prompts x 1 sample; RLOO, GRPO, Dr. GRPO: 3 prompts x 4 samples, the group), the same
RL seeds (common random numbers), a snapshot every 25 steps judged against the exact arm's
opponents:

* single property (helpfulness): raw vs LSC (85th-percentile reference) under each of PPO,
  RLOO, GRPO and Dr. GRPO; the objective is the same for every estimator (``E[u] - gamma KL``
  with the KL in the return, the main job's gamma per utility: raw 0.01, LSC 0.003), only the
  advantage estimator differs;
* two properties (helpful and harmless) under GRPO: LSC sum vs sigma_AND (the same references)
  vs GDPO (each reward normalised within the prompt's group, then summed; no reference).

The decision (fixed before any result, :data:`lsc.repro.grpo_study.STUDY_CLAIMS`): the RL arm's
rule (:mod:`lsc.repro.rl_arm`) on each comparison.
"""

import ml_collections

from configs import common
from configs.repro import synthetic_hh

ALGORITHMS = ("ppo", "rloo", "grpo", "dr_grpo")
GAMMAS = {"raw": 0.01, "lsc": 0.003}  # the main job's gamma per utility
GROUP_SIZE = 4
VARIANTS = synthetic_hh.VARIANTS  # the main job's sizes


def _rl(algorithm: str, batch: int) -> ml_collections.ConfigDict:
    """The per-run overrides of ``rl``: 12 sequences a step whatever the estimator."""
    rl = ml_collections.ConfigDict()
    rl.algorithm = algorithm
    if algorithm != "ppo":
        rl.num_samples = GROUP_SIZE
        rl.batch_size = batch // GROUP_SIZE
    return rl


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    config = synthetic_hh.get_config(variant)
    config.job = "grpo_study"
    config.study = ml_collections.ConfigDict()
    config.study.reuse_workdir = ""  # a finished main job's workdir: reuse its first six stages
    num_ref = int(config.predictor.reference.num_samples)
    batch = int(config.rl.batch_size)
    runs = ml_collections.ConfigDict()
    for algorithm in ALGORITHMS:
        for utility in ("raw", "lsc"):
            run = ml_collections.ConfigDict()
            run.rewards = common.rewards(f"helpful_{utility}", num_samples=num_ref)
            run.kl_coef = GAMMAS[utility]
            run.rl = _rl(algorithm, batch)
            runs[f"helpful_{utility}_{algorithm}"] = run
    for name, method in (("lsc_sum", "lsc_sum"), ("sigma_and", "sigma_and"), ("gdpo", "gdpo")):
        run = ml_collections.ConfigDict()
        run.rewards = common.rewards("hh_lsc_sum", num_samples=num_ref)
        run.rewards.method = method
        if method == "gdpo":  # per-prompt references cancel under group normalisation
            for prop in run.rewards.properties:
                run.rewards.properties[prop].reference.source = "none"
        run.kl_coef = GAMMAS["lsc"]
        run.rl = _rl("grpo", batch)
        runs[f"hh_{name}_grpo"] = run
    config.rlhf.runs = runs
    # The study's declared training (the main job's seeds): 100 steps (200 in :large, 6 in
    # :tiny), a snapshot every 25 (40, 3), checkpoints with the snapshots, no early stop.
    large, tiny = variant == "large", variant == "tiny"
    rl = config.rl
    rl.num_steps = 200 if large else 6 if tiny else 100
    rl.snapshot_every = 40 if large else 3 if tiny else 25
    rl.snapshot_every_early, rl.snapshot_early_until = 0, 0
    rl.save_every = rl.snapshot_every
    rl.stop_kl = 0.0
    return config
