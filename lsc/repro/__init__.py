"""The miniature reproduction (the README's main job): every stage of the paper on the synthetic
gold world, cached in the workdir (``configs/repro/synthetic_hh.py``).

Modules, in data-flow order: :mod:`~lsc.repro.subconfigs` (the config of every job the
reproduction runs), :mod:`~lsc.repro.jobs` (how a stage runs its jobs),
:mod:`~lsc.repro.samples` (policy samples scored on device), :mod:`~lsc.repro.evaluation` (base
samples and judging with the gold judge), :mod:`~lsc.repro.exact_arm` (every utility's exact
optima and best-of-k on the banks), :mod:`~lsc.repro.claims` (the declared claims; the exact
arm's decision), :mod:`~lsc.repro.rl_arm` (the RL arm's trajectories at matched KL and their
decision), :mod:`~lsc.repro.results` (the report stage: every claim decided into results.json,
then the figures and report.md), :mod:`~lsc.repro.figures` (the figures, drawn from the decided
results) and :mod:`~lsc.repro.pipeline` (the stages and :func:`run`). Beside the main job:
:mod:`~lsc.repro.grpo_study` (raw vs LSC under four advantage estimators,
``configs/repro/grpo_study.py``) and its exact analogue :mod:`~lsc.repro.grpo_exact`. After
it: :mod:`~lsc.repro.tables` (``python -m lsc.repro.tables W1 W2 ...``: the README's results
tables from workdirs' results.json).
"""

from lsc.repro.pipeline import STAGES, run, validate

__all__ = ["STAGES", "run", "validate"]
