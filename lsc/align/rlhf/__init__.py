"""KL-regularised RLHF: maximise ``E[u(x, y)] - gamma * KL(pi || pi0)`` with PPO, RLOO, GRPO or
Dr. GRPO.

One RL step is

1. **rollout** (one jitted call): reference rewards of the prompt batch (looked up in the bank
   computed before RL, :mod:`lsc.align.references.bank`, or estimated from the frozen base policy
   ``pi0`` through the per-prompt cache, :mod:`lsc.align.references`) -> ``k`` samples per
   prompt from the current policy (``lsc.models.sampling``) -> every reward model's score ->
   the utility (:mod:`lsc.align.utility`) -> log-probabilities under the policy and ``pi0``,
   per-token KL estimates (``k1`` or ``k3``), the value head's values (PPO);
2. **update** (one jitted call):

   * ``ppo``: per-token rewards ``-gamma * kl_t`` plus the utility at the last token, GAE
     advantages (optionally whitened), then ``ppo_epochs`` passes over ``num_minibatches``
     shuffled mini-batches (a ``lax.scan``) of the clipped policy loss (policy optimiser) and the
     clipped value loss (value optimiser);
   * ``rloo``: sequence returns ``u - gamma * sum_t kl_t``, leave-one-out advantages over the
     ``k >= 2`` samples of each prompt, one REINFORCE step;
   * ``grpo`` / ``dr_grpo``: group advantages of the same returns over a prompt's ``k >= 2``
     samples (:mod:`lsc.align.advantages`: divided by the group's std, or not), then
     ``ppo_epochs`` x ``num_minibatches`` clipped policy updates (no value head), normalised per
     sequence length (GRPO) or by a constant (Dr. GRPO); with ``kl_penalty='loss'`` the KL leaves
     the return and enters the loss as ``gamma`` times the ``k3`` KL to ``pi0``.

Both jitted functions are pure functions of ``(graphdef, state)`` with explicit
``in_shardings``/``out_shardings``: the policy, value model, ``pi0`` and reward models are placed on
the mesh by their logical axes (``lsc.parallel.partitioning``), batch-major arrays over the batch
axes; the RL state is donated to the update. The KL coefficient is a traced input, so a sweep
over ``gamma`` in one process compiles each function once. :attr:`RLTrainer.traces` counts
traces (compilations).

With ``rl.time_phases`` the rollout runs as three jitted phases (reference, sample, score) with a
device sync after each, so the per-step time split sample / score / reference / update is
measured; results equal the fused rollout's up to XLA fusion rounding.

State, checkpoints, resume. :class:`RLState` holds the step, policy and value parameters and their
optimiser states, the RNG key data and the reference cache (``ref_table``, ``ref_filled``); it is
saved with :class:`lsc.train.checkpoint.Checkpointer` together with the prompt iterator's position
and the metrics history every ``rl.save_every`` steps, at the end and on SIGTERM. A run killed at
any point and restarted with the same workdir continues to the same parameters (bitwise on CPU)
and writes the same ``summary.json`` (which holds no timings). ``pi0`` and the reward models are
frozen and rebuilt from their sources. A non-finite loss stops the run with
:class:`lsc.train.runner.NonFiniteLossError`.

Metrics per step: ``utility``, ``objective`` (``utility - gamma * kl``), ``reward/<property>``,
``r_ref/<property>``, ``transformed/<property>`` (the reward pipeline's per-property transformed
reward, :mod:`lsc.align.reward_pipeline`), ``kl`` (sequence sum of the chosen estimator), ``kl_k1``, ``kl_k3``,
``entropy``, ``response_length``, ``policy_loss``, ``clip_fraction``, ``value_loss``,
``value_clip_fraction`` (PPO), ``advantage_mean``, ``advantage_std``, ``advantage_abs_mean``,
``kl_loss``, ``group_std``, ``zero_std_fraction`` (GRPO family),
``reference_new`` (prompts estimated this step; the reference's
cost in samples is ``reference_new * K``), and the timings ``time/rollout``, ``time/update`` and,
with ``time_phases``, ``time/reference``, ``time/sample``, ``time/score`` (TensorBoard and log
only).

The package, by concern (imports run one way, top to bottom):

* :mod:`~lsc.align.rlhf.config` -- ``config.rl``'s rules and its typed config per algorithm
  family (:func:`rl_config`: :class:`PPOConfig`, :class:`GroupConfig`);
* :mod:`~lsc.align.rlhf.state` -- the pytrees (:class:`RLState`, :class:`Frozen`,
  :class:`Rollout`, :class:`Models`, the closed-over :class:`Static`);
* :mod:`~lsc.align.rlhf.rollout` -- sample, score, reference lookup (pure functions);
* :mod:`~lsc.align.rlhf.updates` -- the update of each algorithm, registered by name; every
  update takes its advantages from the estimator registry of :mod:`lsc.align.advantages`, its
  losses from :mod:`lsc.align.losses`;
* :mod:`~lsc.align.rlhf.trainer` -- :class:`RLTrainer`: shardings, jitting, timings;
* :mod:`~lsc.align.rlhf.snapshots`, :mod:`~lsc.align.rlhf.gold` -- policy snapshots and a quick
  gold look;
* :mod:`~lsc.align.rlhf.job` -- :func:`train_rlhf` on the shared runner
  (:mod:`lsc.train.runner`) and the ``rlhf`` job (:func:`run`).
"""

from lsc.align.rlhf.config import (ALGORITHMS, CLIPPED_GROUP_ALGORITHMS, FAMILIES,
                                   KL_PENALTIES, RL_RULES, STOP_WINDOW, GroupConfig, PPOConfig,
                                   RLConfig, rl_config)
from lsc.align.rlhf.gold import gold_evaluation
from lsc.align.rlhf.job import (RLResult, gamma_workdir, kl_coefs, kl_dir, make_trainer,
                                rl_seeds, run, run_workdir, SEED_PREFIX, seed_dir, train_rlhf)
from lsc.align.rlhf.snapshots import (SNAPSHOT_DIR, export_snapshot, scheduled, snapshot_dir,
                                      snapshot_steps)
from lsc.align.rlhf.state import Frozen, Models, RLState, Rollout, Static
from lsc.align.rlhf.trainer import RLTrainer

__all__ = [
    "ALGORITHMS", "CLIPPED_GROUP_ALGORITHMS", "FAMILIES", "KL_PENALTIES", "RL_RULES",
    "STOP_WINDOW",    "GroupConfig", "PPOConfig", "RLConfig", "rl_config", "gold_evaluation",
    "RLResult", "gamma_workdir", "kl_coefs", "kl_dir", "make_trainer", "rl_seeds", "run",
    "run_workdir", "SEED_PREFIX", "seed_dir", "train_rlhf", "SNAPSHOT_DIR", "export_snapshot",
    "scheduled", "snapshot_dir",
    "snapshot_steps", "Frozen", "Models", "RLState", "Rollout", "Static", "RLTrainer",
]
