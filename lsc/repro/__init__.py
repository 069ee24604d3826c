"""The miniature reproduction (the README's main job): every stage of the paper on the synthetic
gold world, cached in the workdir (``configs/repro/synthetic_hh.py``).

Modules, in data-flow order: :mod:`~lsc.repro.subconfigs` (the config of every job the
reproduction runs), :mod:`~lsc.repro.jobs` (how a stage runs its jobs),
:mod:`~lsc.repro.samples` (policy samples scored on device), :mod:`~lsc.repro.evaluation` (base
samples and judging with the gold judge), :mod:`~lsc.repro.exact_arm` (every utility's exact
optima and best-of-k on the banks), :mod:`~lsc.repro.claims` (the claims and their decision),
:mod:`~lsc.repro.figures` (results.json, figures, report.md) and :mod:`~lsc.repro.pipeline`
(the stages and :func:`run`). Beside the main job: :mod:`~lsc.repro.grpo_study` (raw vs LSC
under four advantage estimators, ``configs/repro/grpo_study.py``) and its exact analogue
:mod:`~lsc.repro.grpo_exact`.
"""

from lsc.repro.pipeline import STAGES, run, validate

__all__ = ["STAGES", "run", "validate"]
