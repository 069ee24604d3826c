"""The miniature reproduction on the synthetic gold world (the README's main job).

Usage::

  python -m lsc.main --config=configs/repro/synthetic_hh.py --workdir=runs/repro
  python -m lsc.main --config=configs/repro/synthetic_hh.py:large --workdir=runs/repro_large
  python -m lsc.main --config=configs/repro/synthetic_hh.py:tiny --workdir=/tmp/repro_tiny

``:large`` is a bigger world with more samples, steps and seeds, for tighter results; ``:tiny``
runs every stage at toy sizes (a smoke test of the pipeline, about two minutes; its numbers mean
nothing).

Sections (see ``lsc/repro/`` for how each stage reads them):

* ``seed``, ``data``, ``world`` -- shared by every stage (one world, one tokenizer);
* ``rm`` -- the proxy reward models (``configs/rm/synthetic_helpful.py`` fields; one run per
  property);
* ``sft`` -- the base policy (``configs/sft/synthetic.py`` fields);
* ``reference_predictor`` -- the note's "predict median" (one predictor per property);
* ``rewards.properties.<p>.reference`` -- the oracle reference of the best-of-k grid: the
  ``quantile`` of ``num_samples`` independent base-policy samples per prompt (the median);
* ``best_of_k`` -- ``ks``, ``methods`` x ``references`` (the note's grid) and the ``baselines``;
* ``rl`` -- PPO settings shared by every RLHF run, ``kl_coef`` the gamma sweep;
* ``rlhf`` -- ``runs.<name>.rewards``: the utility of each RLHF run (the paper's raw vs LSC for
  helpfulness, raw sum vs LSC sum for both properties);
* ``evaluate`` -- evaluation prompts, bootstrap, seeds of the judging samples.
"""

import ml_collections

from configs import common
from configs.rlhf import synthetic as rlhf_synthetic
from configs.rm import reference_predictor_synthetic, synthetic_helpful
from configs.sft import synthetic as sft_synthetic

VARIANTS = ("default", "large", "tiny")
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
    config.data.path = ""  # only for real data (hh_rlhf / hf_parquet)
    config.data.on_error = "raise"  # or "skip": skip bad records and count them
    config.data.prompt_len = 32
    config.data.response_len = 24  # R: the response budget of every policy sample

    # Sizes and knobs of the synthetic gold world (lsc.data.synthetic.WorldConfig).
    if large:
        config.world = common.world(pairs=(16000, 2000), sft=(16000, 500), prompts=(4000, 2000))
    elif tiny:
        config.world = common.world(pairs=(200, 100), sft=(300, 50), prompts=(64, 64))
    else:
        config.world = common.world(pairs=(4000, 500), sft=(4000, 500), prompts=(1000, 1000))

    # Proxy reward models: one train_rm run per property on the limited preference data.
    rm = _section(synthetic_helpful.get_config())
    del rm.rm.property
    rm.train.eval_every = 0
    rm.train.num_steps = 1000 if large else 10 if tiny else 400
    rm.train.progress = False
    config.rm = rm

    # The base policy pi0: SFT on the demonstrations.
    sft = _section(sft_synthetic.get_config())
    sft.train.num_steps = 1000 if large else 10 if tiny else 400
    sft.train.eval_every = 0
    sft.train.progress = False
    config.sft = sft

    # The note's "predict median": one predictor of the median proxy reward per property.
    pred = _section(reference_predictor_synthetic.get_config())
    del pred.reference.rm_workdir, pred.reference.policy_workdir
    pred.data.response_len = config.data.response_len
    pred.reference.num_samples = 32 if large else 4 if tiny else 16
    pred.train.num_steps = 600 if large else 10 if tiny else 300
    pred.train.eval_every = 0
    pred.train.progress = False
    config.reference_predictor = pred

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

    config.best_of_k = ml_collections.ConfigDict()
    config.best_of_k.ks = (1, 2, 4, 8, 16, 32) if large else (1, 2, 4) if tiny else (1, 2, 4, 8, 16)
    config.best_of_k.methods = ("sigma_and", "sigma_or")  # x references below
    config.best_of_k.references = ("oracle_median", "predict_median", "none")
    config.best_of_k.baselines = ("sum", "lsc_sum")  # sum: no reference; lsc_sum: oracle median
    config.best_of_k.batch_size = 100 if not tiny else 32

    # RLHF: PPO shared by every run (configs/rlhf/synthetic.py fields), one run per entry of
    # rlhf.runs and per gamma of rl.kl_coef.
    rl = ml_collections.ConfigDict(rlhf_synthetic.get_config("helpful_raw").rl.to_dict())
    rl.kl_coef = (0.3, 0.1, 0.03, 0.01) if not tiny else (0.1, 0.03)
    rl.num_steps = 400 if large else 6 if tiny else 200
    rl.batch_size = 16 if not tiny else 8
    rl.gold_eval_prompts = 0  # the evaluate stage judges every run
    rl.progress = False
    rl.snapshot_every = 100 if large else 3 if tiny else 50  # policies for the hacking curves
    rl.save_every = rl.snapshot_every
    config.rl = rl

    config.rlhf = ml_collections.ConfigDict()
    config.rlhf.mesh = common.mesh()
    config.rlhf.runs = ml_collections.ConfigDict()
    num_ref = 32 if large else 4 if tiny else 16
    for variant in common.RLHF_VARIANTS:  # helpful_raw, helpful_lsc, hh_raw_sum, hh_lsc_sum
        run = ml_collections.ConfigDict()
        run.rewards = common.rewards(variant, num_samples=num_ref)
        config.rlhf.runs[variant] = run

    config.evaluate = ml_collections.ConfigDict()
    config.evaluate.num_prompts = 0  # 0: every evaluation prompt (world.prompts_test)
    config.evaluate.batch_size = 100 if not tiny else 32
    config.evaluate.bootstrap_resamples = 2000 if not tiny else 200
    config.evaluate.confidence = 0.95

    config.parallel = common.parallel()  # multi-process start-up (lsc.parallel.distributed)
    return config
