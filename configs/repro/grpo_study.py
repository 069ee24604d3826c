"""The GRPO study: does GRPO's group std undo LSC? (``lsc.repro.grpo_study``).

  python -m lsc.main --config=configs/repro/grpo_study.py --workdir=runs/grpo_study \
      --config.study.reuse_workdir=runs/repro

(``study.reuse_workdir``: a finished main job's workdir, whose first six stages -- world, reward
models, base policy, predictors, base samples, exact arm -- are reused, not rerun; without it
the study runs them in its own workdir.)

Declared before any run: the main job's synthetic world and settings
(``configs/repro/synthetic_hh.py``) with the RL arm replaced by the study's runs, all on
replicate 0's helpfulness reward model, raw vs LSC (85th-percentile reference), a group of 4
samples per prompt and 12 sequences a step (3 prompts x 4), the main job's 10 RL seeds (common
random numbers). Four estimators (:data:`ESTIMATORS`: ``rl.algorithm`` and
``rl.loss_reduction``), crossing GRPO's two departures from Dr. GRPO:

* ``grpo``: group std division, per-sequence loss normalisation;
* ``dr_grpo``: no std division, constant normalisation;
* ``grpo_const``: std division with Dr. GRPO's constant normalisation;
* ``dr_grpo_seq``: no std division with GRPO's per-sequence normalisation.

Two gammas per utility, the same for every estimator (``study.gammas``: level ``g1`` raw 0.005,
LSC 0.0015; ``g2`` the main job's, raw 0.01, LSC 0.003; ``study.primary_level = 1``, the other
level a sensitivity check). A run is ``helpful_<utility>_<estimator>_g<level>``: 16 runs x 10
seeds. Every run trains up to 150 steps (300 in ``:large``) at the main job's policy learning
rate 2e-4, so that every trajectory reaches the common KL grid ``rl_arm.kl_grid = (0.5, 1, 1.5,
2, 3, 4)``; snapshots every 2 steps to step 24 (where GRPO's KL rises fastest), then every 10, and
whenever the running training KL has risen 0.5 nats (``rl.snapshot_kl``); early
stop at ``rl.stop_kl = 5.5`` (the grid's top + 1.5); checkpoints every 100 steps. Each snapshot is
judged on 150 trajectory prompts (``evaluate.trajectory_prompts``; the main job's 200 would
exceed the study's 30 minutes with these snapshots). ``:tiny``: 2 seeds, 6 steps (the end-to-end
test).

Changed after the first run (README, "Changes made after seeing results"): that run used the
learning rate 3e-4, 100 steps, snapshots every 5 steps to 50, stop at 6 nats and 200 prompts; its
KL rose about 1.5 nats between two snapshots around step 10-15 and no grid point was bracketed in
every trajectory.
"""

import ml_collections

from configs import common
from configs.repro import synthetic_hh

ESTIMATORS = {"grpo": ("grpo", "sequence"), "dr_grpo": ("dr_grpo", "constant"),
              "grpo_const": ("grpo", "constant"), "dr_grpo_seq": ("dr_grpo", "sequence")}
"""Each estimator's ``(rl.algorithm, rl.loss_reduction)``."""
UTILITIES = ("raw", "lsc")
GAMMAS = {"raw": (0.005, 0.01), "lsc": (0.0015, 0.003)}
"""gamma per utility at each level (``g1``, ``g2``): the main job's (raw 0.01, LSC 0.003, chosen
to bring the two to the same training KL under PPO) and half of it."""
PRIMARY_LEVEL = 1
GROUP_SIZE = 4
VARIANTS = synthetic_hh.VARIANTS  # the main job's sizes


def run_name(utility: str, estimator: str, level: int) -> str:
    """``helpful_<utility>_<estimator>_g<level>``: a run of the study (``rlhf.runs``)."""
    return f"helpful_{utility}_{estimator}_g{level}"


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    config = synthetic_hh.get_config(variant)
    large, tiny = variant == "large", variant == "tiny"
    config.job = "grpo_study"
    config.study = ml_collections.ConfigDict()
    config.study.reuse_workdir = ""  # a finished main job's workdir: reuse its first six stages
    config.study.gammas = ml_collections.ConfigDict(dict(GAMMAS))
    config.study.primary_level = PRIMARY_LEVEL
    num_ref = int(config.predictor.reference.num_samples)
    batch = int(config.rl.batch_size)
    runs = ml_collections.ConfigDict()
    for level in range(1, len(GAMMAS["raw"]) + 1):
        for estimator, (algorithm, reduction) in ESTIMATORS.items():
            for utility in UTILITIES:
                run = ml_collections.ConfigDict()
                run.rewards = common.rewards(f"helpful_{utility}", num_samples=num_ref)
                run.kl_coef = GAMMAS[utility][level - 1]
                run.rl = ml_collections.ConfigDict({
                    "algorithm": algorithm, "loss_reduction": reduction,
                    "num_samples": GROUP_SIZE, "batch_size": batch // GROUP_SIZE})
                runs[run_name(utility, estimator, level)] = run
    config.rlhf.runs = runs
    # The common KL grid, which every run reaches; the main job's path and gap.
    config.rl_arm.kl_grid = (0.5, 1.0, 1.5, 2.0) if tiny else (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    rl = config.rl
    rl.num_steps = 300 if large else 6 if tiny else 150
    rl.policy_optim.learning_rate = 2e-4  # the main job's
    rl.snapshot_every_early = 1 if tiny else 2  # tiny: steps 1, 2, 3 and 6
    rl.snapshot_early_until = 2 if tiny else 24
    rl.snapshot_every = 3 if tiny else 10
    rl.snapshot_kl = 0.5
    rl.save_every = 100
    rl.stop_kl = float(config.rl_arm.kl_grid[-1]) + 1.5
    if not tiny and not large:
        config.evaluate.trajectory_prompts = 150
    return config
