"""The note's "predict median" on the synthetic world: a small decoder that predicts, from the
prompt alone, the median reward of base-policy samples under a trained reward model.

The model, data, training and optimiser are those of ``configs/rm/synthetic_helpful.py``; this
file changes the job, the prompts and the schedule, and adds the ``reference`` section.

Usage (after a ``train_rm`` and a ``train_sft`` run with the same seed and world)::

  python -m lsc.main --config=configs/predictor/synthetic.py --workdir=runs/ref \\
      --config.reference.rm_workdir=runs/rm_helpful --config.reference.policy_workdir=runs/sft
"""

import ml_collections

from configs.rm import synthetic_helpful

VARIANTS = ("",)  # takes no argument


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/predictor/synthetic.py takes no argument, got "
                         f"{arg!r}")
    config = synthetic_helpful.get_config()
    config.job = "train_predictor"
    del config.rm
    config.world.prompts_train = 1000
    config.world.prompts_test = 200

    config.reference = ml_collections.ConfigDict()
    config.reference.rm_workdir = ""  # a finished train_rm run
    config.reference.policy_workdir = ""  # a finished train_sft run (the base policy)
    # Base-policy samples shared by several predictors (a reference_samples.npz of
    # lsc.train.predictor.write_reference_samples); empty: the job draws its own.
    config.reference.samples_path = ""
    config.reference.quantile = 0.5  # the median
    config.reference.num_samples = 16  # base-policy samples per prompt
    config.reference.sample_batch_size = 100
    config.reference.temperature = 1.0

    config.train.num_steps = 300
    config.train.eval_every = 100
    config.eval.batch_size = 100
    return config
