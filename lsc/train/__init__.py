"""Training jobs: reward models, SFT and the predictor, on one shared loop.

* :mod:`lsc.train.loop` -- the jitted, sharded training loop (``TrainConfig``): accumulation,
  mixed precision, resume, SIGTERM save, NaN stop, metrics, ``summary.json``.
* :mod:`lsc.train.optim` -- optimisers and schedules from ``config.optim`` (its defaults are
  :data:`lsc.train.optim.DEFAULTS`).
* :mod:`lsc.train.checkpoint` -- preemption-safe orbax checkpoints.
* :mod:`lsc.train.metrics` -- TensorBoard events, logged averages, progress.
* :mod:`lsc.train.common` -- the world on disk, tokenizers and models from a job config.
* Jobs: :mod:`lsc.train.reward_model` (``train_rm``), :mod:`lsc.train.sft` (``train_sft``),
  :mod:`lsc.train.predictor` (``train_predictor``).
"""
