"""The miniature reproduction on the synthetic gold world (the README's main job).

Usage::

  python -m lsc.main --config=configs/repro/synthetic_hh.py --workdir=runs/repro
  python -m lsc.main --config=configs/repro/synthetic_hh.py:large --workdir=runs/repro_large
  python -m lsc.main --config=configs/repro/synthetic_hh.py:tiny --workdir=/tmp/repro_tiny

``:large`` is a bigger world with more samples, steps and seeds, for tighter results; ``:tiny``
runs every stage at toy sizes (a smoke test of the pipeline; its numbers mean nothing).

Sections (see ``lsc/repro/`` for how each stage reads them):

* ``seed``, ``data``, ``world`` -- shared by every stage (one world, one tokenizer);
* ``rm`` -- the proxy reward models (``configs/rm/synthetic_helpful.py`` fields; one run per
  property);
* ``sft`` -- the base policy (``configs/sft/synthetic.py`` fields);
* ``predictor`` -- the note's "predict median" (one predictor per property);
* ``rewards.properties.<p>.reference`` -- ``num_samples`` independent base-policy samples per
  prompt, whose proxy-reward quantiles are the oracle references (median, 85th percentile);
* ``exact`` -- the exact arm (:mod:`lsc.repro.exact_arm`): bank and opponent sizes, the KL grid
  and the k values, the primary statistics' grids, the decision rule's ``delta``, the bootstrap;
  ``world.pair_replicates`` is the number of proxy reward models per property (independent pair
  draws and initialisations), each scoring the same banks; ``world.replicate_offset`` shifts
  their draws and seeds (replicate ``r<i>`` uses index ``replicate_offset + i``) with the world,
  the base policy and the banks unchanged;
* ``rl`` -- PPO settings shared by every RLHF run; ``seed``: the RL seeds (each method runs once
  per seed, separately from the world's ``seed``); ``snapshot_every_early``,
  ``snapshot_early_until`` and ``snapshot_every``: the trajectory's points; ``save_every``: the
  checkpoints; ``stop_kl``: the early stop;
* ``rlhf`` -- ``runs.<name>.rewards`` and ``runs.<name>.kl_coef``: the utility and gamma of each
  RLHF method (the paper's raw vs LSC for helpfulness, raw sum vs LSC sum for both properties);
* ``rl_arm`` -- the RL claims' KL grid, reading path and largest bracketing gap
  (:mod:`lsc.repro.rl_arm`);
* ``evaluate`` -- evaluation prompts, bootstrap, seeds of the judging samples.
"""

import ml_collections

from configs import common
from configs.rlhf import synthetic as rlhf_synthetic
from configs.predictor import synthetic as predictor_synthetic
from configs.rm import synthetic_helpful
from configs.sft import synthetic as sft_synthetic

VARIANTS = ("default", "large", "tiny")  # '' is 'default'
SHARED = ("job", "seed", "world", "parallel")  # set by the reproduction, not per stage


def _section(preset: ml_collections.ConfigDict, drop=SHARED) -> ml_collections.ConfigDict:
    out = ml_collections.ConfigDict(preset.to_dict())
    for name in drop:
        if name in out:
            del out[name]
    return out


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    size = arg or "default"
    if size not in VARIANTS:
        raise ValueError(f"configs/repro/synthetic_hh.py: unknown variant {arg!r}; use '', "
                         "'large' or 'tiny'")
    large, tiny = size == "large", size == "tiny"

    config = ml_collections.ConfigDict()
    config.job = "repro"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"
    config.data.path = ""  # only for real data (hh_rlhf)
    config.data.on_error = "raise"  # or "skip": skip bad records and count them
    config.data.prompt_len = 32
    config.data.response_len = 24  # R: the response budget of every policy sample

    # Sizes and knobs of the synthetic gold world (lsc.data.world.WorldConfig).
    if large:
        config.world = common.world(pairs=(16000, 2000), sft=(16000, 500), prompts=(4000, 2000))
    elif tiny:
        config.world = common.world(pairs=(200, 100), sft=(300, 50), prompts=(64, 64))
    else:
        config.world = common.world(pairs=(4000, 500), sft=(4000, 500), prompts=(1000, 500))
    config.world.pair_replicates = 2 if tiny else 6  # proxy reward models per property
    # A fresh set of replicates with the world, pi0 and banks fixed: the stand-in for another
    # CPU's rounding.
    config.world.replicate_offset = 0

    # Proxy reward models: one train_rm run per property on the limited preference data.
    rm = _section(synthetic_helpful.get_config())
    del rm.rm.property
    rm.train.eval_every = 0
    rm.train.num_steps = 1000 if large else 10 if tiny else 300
    rm.train.progress = False
    config.rm = rm

    # The base policy pi0: SFT on the demonstrations.
    sft = _section(sft_synthetic.get_config())
    sft.train.num_steps = 1000 if large else 10 if tiny else 400
    sft.train.eval_every = 0
    sft.train.progress = False
    config.sft = sft

    # The note's "predict median": one predictor of the median proxy reward per property.
    pred = _section(predictor_synthetic.get_config())
    del pred.reference.rm_workdir, pred.reference.policy_workdir
    pred.data.response_len = config.data.response_len
    pred.reference.num_samples = 32 if large else 4 if tiny else 8  # its targets: medians of 8
    pred.train.num_steps = 600 if large else 10 if tiny else 200
    pred.train.eval_every = 0
    pred.train.progress = False
    config.predictor = pred

    # The oracle reference of the best-of-k grid (the note's "oracle median").
    config.rewards = ml_collections.ConfigDict()
    config.rewards.properties = ml_collections.ConfigDict()
    for name in ("harmless", "helpful"):
        prop = ml_collections.ConfigDict()
        prop.reference = ml_collections.ConfigDict()
        prop.reference.source = "quantile"
        prop.reference.quantile = 0.5
        prop.reference.num_samples = 32 if large else 4 if tiny else 16
        config.rewards.properties[name] = prop

    # The exact arm: KL-regularised optima and best-of-k in closed form on banks of base
    # samples, every utility on the same banks and opponents. The grids, the primary statistics
    # and the decision rule (lsc.repro.claims) are fixed here, before any result is seen.
    config.exact = ml_collections.ConfigDict()
    config.exact.bank_size = 16 if tiny else 64  # N candidates per prompt
    config.exact.num_opponents = 4 if tiny else 16  # M independent base opponents per prompt
    # Target KLs (nats) of the optima; the bank supports up to log N (4.16 for N = 64).
    config.exact.kl_grid = (0.25, 0.5, 1.0) if tiny else (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    config.exact.ks = (1, 2, 4) if tiny else (1, 2, 4, 8, 16, 32)
    config.exact.primary_ks = (2, 4) if tiny else (4, 8, 16)  # best-of-k claims: mean over these
    config.exact.delta = 0.01  # "no effect of practical size": the interval inside +-delta
    config.exact.confidence = 0.95
    config.exact.bootstrap_resamples = 200 if tiny else 2000
    config.exact.rematch_resamples = 10 if tiny else 50  # gamma re-solved in each resample

    # RLHF (the RL arm): PPO shared by every run
    # (configs/rlhf/synthetic.py fields), one run per entry of rlhf.runs and per RL seed.
    # Declared before any result (lsc.repro.rl_arm): the RL seed is the unit of replication,
    # 10 seeds (20 in :large, 2 in :tiny), separate from the world seed; for a given seed every
    # method sees the same prompt order and sampling keys (common random numbers). One gamma
    # per method, chosen so that its trajectory reaches the high-KL regime by the last step.
    rl = ml_collections.ConfigDict(rlhf_synthetic.get_config("helpful_raw").rl.to_dict())
    rl.seed = tuple(range(20 if large else 2 if tiny else 10))
    rl.num_steps = 300 if large else 6 if tiny else 200
    # 12 prompts a step in the default variant keeps the RLHF stage within the main job's time
    # budget.
    rl.batch_size = 16 if large else 8 if tiny else 12
    # One PPO pass of two epochs over the whole rollout (no mini-batches), and a policy learning
    # rate twice the standalone config's: trajectories reach the high-KL regime in 100 steps.
    rl.num_minibatches = 1
    rl.policy_optim.learning_rate = 2e-4
    rl.value_optim.learning_rate = 2e-3
    rl.time_phases = False
    rl.gold_eval_prompts = 0  # the evaluate stage judges every run
    rl.progress = False
    # The trajectory's points: a snapshot every 5 steps (:tiny: steps 1, 2, 3 and 6), and after
    # any step at which the mean training kl_k1 of the last 5 steps has risen 0.3 nats since the
    # previous snapshot (where the KL moves fast, a snapshot every step); each judged on the
    # trajectory prompts against the exact arm's base opponents. (Changed after seeing results,
    # twice: README, "Changes made after seeing results". The first runs took snapshots every 5 steps
    # to step 50, then every 20, and on a 0.5-nat rise; a second run on world seed 0, every 5 to
    # 30, then every 40, and on a 0.3-nat rise. The running training KL is a noisy proxy for the
    # evaluation KL -- a rise read on a noisy high sets the next trigger too high -- so between
    # snapshots the evaluation KL often rose 1-3 nats.)
    rl.snapshot_every_early = 1 if tiny else 0
    rl.snapshot_early_until = 2 if tiny else 0
    rl.snapshot_every = 3 if tiny else 5
    rl.snapshot_kl = 0.3
    rl.save_every = 100  # checkpoints (resume), independent of the snapshots
    # Early stop: a run ends once the mean training kl_k1 of its last 5 steps exceeds 9 nats,
    # one above the top of rl_arm.kl_grid (its final policy is its last trajectory point;
    # summary.json records the step and why).
    rl.stop_kl = 9.0
    config.rl = rl

    config.rlhf = ml_collections.ConfigDict()
    config.rlhf.mesh = common.mesh()
    config.rlhf.runs = ml_collections.ConfigDict()
    # The references of the LSC runs: quantiles of the predictors' shared draw of
    # base-policy samples on the alignment prompts (predictor.reference.num_samples
    # per prompt), computed once per run before RL; the harmless reference is the refusal's.
    num_ref = int(pred.reference.num_samples)
    # gamma per method: the LSC utility is bounded above and its policy moves less per step at
    # the same gamma, hence a smaller gamma for LSC; the two values bring raw and LSC to about the
    # same training KL (chosen on the seed-0 world by the training KL alone).
    gammas = {"helpful_raw": 0.01, "helpful_lsc": 0.003, "hh_raw_sum": 0.01, "hh_lsc_sum": 0.003}
    for variant in common.RLHF_VARIANTS:  # helpful_raw, helpful_lsc, hh_raw_sum, hh_lsc_sum
        run = ml_collections.ConfigDict()
        run.rewards = common.rewards(variant, num_samples=num_ref)
        run.kl_coef = gammas[variant]
        config.rlhf.runs[variant] = run

    # The RL arm's decision (lsc.repro.rl_arm, lsc.repro.claims.RL_RULE), fixed before any
    # result. Each trajectory is read at the points of kl_grid on the declared path "isotonic"
    # (the snapshots' KL fitted non-decreasing over training, read on its first segment
    # containing the point), interpolating only between two snapshots at most max_gap nats
    # apart. A seed uses the grid points bracketed in both of its trajectories (points =
    # "per_seed"; a seed with none is left out; changed after the first runs from "common", the
    # points bracketed in every trajectory of both methods, which one run jumping several nats
    # in a step cut down to 0.5-2 nats for all: README, "Changes made after seeing results"). Per
    # seed, the mean over its points and the prompts of the paired difference;
    # the t-interval across seeds, Holm over the RL claims, the exact arm's outcomes with
    # exact.delta. The paths "first" and "last", and the "common" points, are reported beside
    # it, not decided. The
    # claims and their statistics: lsc.repro.claims.RL_ARM_CLAIMS.
    config.rl_arm = ml_collections.ConfigDict()
    config.rl_arm.kl_grid = ((0.5, 1.0, 1.5, 2.0) if tiny
                             else (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0))
    config.rl_arm.path = "isotonic"
    config.rl_arm.max_gap = 1.0
    config.rl_arm.points = "per_seed"

    config.evaluate = ml_collections.ConfigDict()
    config.evaluate.num_prompts = 0  # 0: every evaluation prompt (world.prompts_test)
    # The RL trajectories' points are judged on a subset of the evaluation prompts, stratified
    # by pi0's helpfulness and the same for every run (lsc.repro.evaluation.trajectory_prompts;
    # 0: all); each final policy's results entry on all of them. 200 of the 500 prompts (two
    # batches of evaluate.batch_size) keeps the main job within its time budget; the seed-level
    # interval carries the extra prompt noise (BENCHMARKS.md, "RL arm: the trajectory prompts",
    # compares it with all 500 on one world seed).
    config.evaluate.trajectory_prompts = 1000 if large else 32 if tiny else 200
    config.evaluate.batch_size = 100 if not tiny else 32
    config.evaluate.bootstrap_resamples = 2000 if not tiny else 200
    config.evaluate.confidence = 0.95

    # The independent jobs of a stage (replicates, predictors, RLHF runs): this many at a time,
    # each in its own process when > 1 (lsc.repro.jobs); workers = 0 means two on the CPU backend
    # with at least two cores, else one (lsc.repro.jobs.default_workers); the results are the
    # same either way (BENCHMARKS.md, "A stage's jobs", has the times).
    # threads_per_worker: XLA's CPU threads per worker (0: XLA's default).
    config.workers = 0
    config.threads_per_worker = 0
    # The RLHF jobs' workers (0: config.workers).
    config.rlhf.workers = 0
    config.parallel = common.parallel()  # multi-process start-up (lsc.parallel.distributed)
    return config
