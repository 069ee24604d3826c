"""``config.rl``: the RL algorithms, their fields' rules and :class:`RLConfig`."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from lsc import schema
from lsc.align import advantages as advantages_lib
from lsc.align import losses

ALGORITHMS = ("ppo",) + tuple(advantages_lib.ESTIMATORS)  # ppo, rloo, grpo, dr_grpo
GROUP_ALGORITHMS = ("grpo", "dr_grpo")  # clipped updates on group advantages, no value head
KL_PENALTIES = ("reward", "loss")

# The rules of config.rl's fields (lsc.schema): RLConfig's, and gold_eval_prompts (read by run).
# A tuple rl.kl_coef in a config is a sweep, one run per value.
RL_RULES = {
    "algorithm": schema.one_of(ALGORITHMS),
    "num_steps": schema.number_in(1, integer=True),
    "batch_size": schema.number_in(1, integer=True),
    "num_samples": schema.number_in(1, integer=True),
    "kl_coef": schema.number_in(0.0),
    "kl_estimator": schema.one_of(losses.KL_ESTIMATORS),
    "kl_penalty": schema.one_of(KL_PENALTIES),
    "temperature": schema.number_in(1e-6),
    "ppo_epochs": schema.number_in(1, integer=True),
    "num_minibatches": schema.number_in(1, integer=True),
    "clip_eps": schema.number_in(1e-9),
    "value_clip_eps": schema.number_in(1e-9),
    "gae_lambda": schema.number_in(0.0, 1.0),
    "discount": schema.number_in(0.0, 1.0),
    "log_every": schema.number_in(1, integer=True),
    "save_every": schema.number_in(1, integer=True),
    "keep_checkpoints": schema.number_in(1, integer=True),
    "gold_eval_prompts": schema.number_in(0, integer=True),
    "snapshot_every": schema.number_in(0, integer=True),
    "seed": schema.number_in(0, 2**31 - 1, integer=True),
}


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """``config.rl`` (validated on construction against :data:`RL_RULES`; ``kl_coef`` may be a
    tuple, a sweep, in the config file, and is a single float here).

    Attributes:
      algorithm: 'ppo', 'rloo', 'grpo' or 'dr_grpo' (:mod:`lsc.align.advantages`: the group of a
        prompt's ``k`` samples gives the baseline; PPO's clipped update, no value head).
      num_steps: RL steps (one rollout and one update each).
      batch_size: prompts per step ``B``.
      num_samples: samples per prompt ``k`` (RLOO needs ``k >= 2``); ``N = B * k`` rows.
      kl_coef: ``gamma``.
      kl_estimator: 'k1' or 'k3' (:func:`lsc.align.losses.kl_estimate`).
      kl_penalty: 'reward' (``gamma`` times the sequence KL subtracted from the return) or
        'loss' (GRPO's form: ``gamma`` times the ``k3`` KL to ``pi0`` added to the policy loss;
        'grpo' and 'dr_grpo' only).
      temperature: sampling temperature of the policy and of ``pi0``'s reference samples.
      ppo_epochs, num_minibatches: passes over the rollout and mini-batches per pass (PPO);
        ``num_minibatches`` must divide ``N``.
      clip_eps, value_clip_eps: PPO's ratio and value clipping.
      gae_lambda, discount: GAE parameters.
      whiten_advantages: normalise PPO advantages over the rollout's tokens.
      reference_cache: keep each prompt's reference for the whole run (estimated once).
      time_phases: run the rollout as separately timed phases.
      log_every, save_every, keep_checkpoints: logging and checkpointing cadence.
      progress: tqdm progress bar.
      snapshot_every: every this many steps export the policy to
        ``<workdir>/snapshots/<step>/model`` (kept; for curves along training); 0: never.
      reference_bank: compute every prompt's reference once before the first run
        (:mod:`lsc.align.references.bank`) and only look references up in the loop; False:
        estimate them inside the loop, through the cache when ``reference_cache``.

    ``config.rl.seed`` (read by :func:`run`, not a field here) seeds the RL randomness only --
    prompt order, sampling keys, the value head's initialisation -- separately from
    ``config.seed`` (the world, the reward models, the base policy); a tuple runs one training per
    seed. Two runs with the same ``rl.seed`` see the same prompt order and sampling keys whatever
    their utility (common random numbers).
    """

    num_steps: int
    batch_size: int
    algorithm: str = "ppo"
    num_samples: int = 1
    kl_coef: float = 0.1
    kl_estimator: str = "k1"
    kl_penalty: str = "reward"
    temperature: float = 1.0
    ppo_epochs: int = 1
    num_minibatches: int = 1
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    gae_lambda: float = 0.95
    discount: float = 1.0
    whiten_advantages: bool = True
    reference_cache: bool = True
    time_phases: bool = True
    log_every: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True
    snapshot_every: int = 0
    reference_bank: bool = True

    def __post_init__(self):
        if isinstance(self.kl_coef, (tuple, list)):
            raise ValueError(f"rl.kl_coef must be one number >= 0 here, got {self.kl_coef!r}")
        schema.check(vars(self), RL_RULES, "rl")
        if self.algorithm in ("rloo",) + GROUP_ALGORITHMS and self.num_samples < 2:
            raise ValueError(f"rl.algorithm={self.algorithm!r} needs rl.num_samples >= 2 (a "
                             f"group of samples per prompt), got {self.num_samples}")
        if self.kl_penalty == "loss" and self.algorithm not in GROUP_ALGORITHMS:
            raise ValueError(f"rl.kl_penalty='loss' needs rl.algorithm in {GROUP_ALGORITHMS}, "
                             f"got {self.algorithm!r}")
        n = self.batch_size * self.num_samples
        if self.algorithm in ("ppo",) + GROUP_ALGORITHMS and n % self.num_minibatches:
            raise ValueError(f"rl.num_minibatches={self.num_minibatches} must divide "
                             f"rl.batch_size * rl.num_samples = {n}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], **overrides) -> "RLConfig":
        """From ``config.rl`` minus the optimiser sections; unknown fields are errors."""
        return schema.from_mapping(cls, mapping, unknown="rl: unknown fields", overrides=overrides,
                                   drop=("policy_optim", "value_optim", "gold_eval_prompts", "seed"))

    @property
    def updates_per_step(self) -> int:
        """Optimiser updates per RL step (the optimisers' schedules count these)."""
        if self.algorithm in ("ppo",) + GROUP_ALGORITHMS:
            return self.ppo_epochs * self.num_minibatches
        return 1


