"""``config.rl``: the RL algorithms, their fields' rules and their typed configs.

One typed config per algorithm family, chosen by ``rl.algorithm`` (:data:`FAMILIES`), each a
frozen dataclass validated on construction:

* :class:`RLConfig`, the base: the fields every algorithm reads;
* :class:`PPOConfig` (``'ppo'``): plus the clipped update's passes, the value head and GAE;
* :class:`GroupConfig` (``'rloo'``, ``'grpo'``, ``'dr_grpo'``): plus the clipped update's passes
  (GRPO, Dr. GRPO) and where the KL goes (``kl_penalty``).

:func:`rl_config` builds the family's config from ``config.rl`` and drops no key: a key of the
family is a field; a key of another family (one config file serves every algorithm, switched with
``--config.rl.algorithm``) is checked against its rule and listed in the config's ``unread``
(the job logs it); any other key is an error.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type

from lsc import schema
from lsc.align import advantages as advantages_lib
from lsc.align import losses

KL_PENALTIES = ("reward", "loss")
STOP_WINDOW = 5
"""Training steps whose mean ``kl_k1`` ``rl.stop_kl`` is compared with."""

# The rules of config.rl's fields (lsc.schema), of every family. A tuple rl.kl_coef or rl.seed in
# a config is a sweep, one run per value.
RL_RULES = {
    "algorithm": schema.one_of(("ppo",) + advantages_lib.GROUP_ESTIMATORS),
    "num_steps": schema.number_in(1, integer=True),
    "batch_size": schema.number_in(1, integer=True),
    "num_samples": schema.number_in(1, integer=True),
    "kl_coef": schema.number_in(0.0),
    "kl_estimator": schema.one_of(losses.KL_ESTIMATORS),
    "kl_penalty": schema.one_of(KL_PENALTIES),
    "loss_reduction": lambda value, config: _check_loss_reduction(value),
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
    "snapshot_every_early": schema.number_in(0, integer=True),
    "snapshot_early_until": schema.number_in(0, integer=True),
    "stop_kl": schema.number_in(0.0),
    "snapshot_kl": schema.number_in(0.0),
    "seed": schema.number_in(0, 2**31 - 1, integer=True),
}


def _check_loss_reduction(value) -> Optional[str]:
    """The rule of ``rl.loss_reduction``: '' or one of :data:`lsc.align.losses.REDUCTIONS`."""
    if value == "" or value in losses.REDUCTIONS:
        return None
    return (f"{value!r} is not allowed; choose '' (the algorithm's own: grpo 'sequence', dr_grpo "
            "'constant') or one of " + ", ".join(repr(r) for r in losses.REDUCTIONS))


def _optim_field():
    """An optimiser section (:mod:`lsc.train.optim` fields, a mapping; None: the defaults)."""
    return dataclasses.field(default=None, hash=False)


@dataclasses.dataclass(frozen=True)
class RLConfig(abc.ABC):
    """The fields every algorithm reads (validated on construction against :data:`RL_RULES`;
    ``kl_coef`` and ``seed`` may be tuples, sweeps, in the config file, and are one value here).
    Built by :func:`rl_config` as the family of ``algorithm`` (:data:`FAMILIES`).

    Attributes:
      algorithm: 'ppo' (:class:`PPOConfig`), 'rloo', 'grpo' or 'dr_grpo' (:class:`GroupConfig`).
      num_steps: RL steps (one rollout and one update each).
      batch_size: prompts per step ``B``.
      num_samples: samples per prompt ``k`` (the group algorithms need ``k >= 2``); ``N = B * k``
        rows.
      kl_coef: ``gamma``.
      kl_estimator: 'k1' or 'k3' (:func:`lsc.align.losses.kl_estimate`).
      kl_penalty: 'reward' (``gamma`` times the sequence KL subtracted from the return) or
        'loss' (GRPO's form: ``gamma`` times the ``k3`` KL to ``pi0`` added to the policy loss;
        'grpo' and 'dr_grpo' only).
      temperature: sampling temperature of the policy and of ``pi0``'s reference samples.
      reference_cache: keep each prompt's reference for the whole run (estimated once).
      time_phases: run the rollout as separately timed phases.
      log_every, save_every, keep_checkpoints: logging and checkpointing cadence.
      progress: tqdm progress bar.
      snapshot_every: every this many steps export the policy to
        ``<workdir>/snapshots/<step>/model.safetensors`` (kept; for curves along training); 0: never.
      snapshot_every_early, snapshot_early_until: also export every ``snapshot_every_early``
        steps up to step ``snapshot_early_until`` (a denser start; both 0: off, else both > 0;
        :func:`lsc.align.rlhf.snapshots.scheduled`).
      snapshot_kl: also export the policy after any step at which the mean training ``kl_k1``
        of the last :data:`STOP_WINDOW` steps is at least this many nats above its value at the
        previous export (snapshots dense in KL where the KL moves fast,
        :func:`lsc.align.rlhf.snapshots.kl_triggered`); 0: off.
      stop_kl: stop the run once the mean training ``kl_k1`` of its last
        :data:`STOP_WINDOW` steps exceeds this (the final policy is exported as at
        ``num_steps``; ``summary.json`` records the step and why); 0: off.
      reference_bank: compute every prompt's reference once before the first run
        (:mod:`lsc.align.references.bank`) and only look references up in the loop; False:
        estimate them inside the loop, through the cache when ``reference_cache``.
      gold_eval_prompts: on the synthetic world, judge the final policy against ``pi0`` on this
        many test prompts with the gold rewards (``gold.json``); 0: never.
      seed: seeds the RL randomness only -- prompt order, sampling keys -- separately from
        ``config.seed`` (the world, the reward models, the base policy, the value head's
        initialisation); a tuple in the config file runs one training per seed. Two runs with
        the same ``seed`` see the same prompt order and sampling keys whatever their utility
        (common random numbers).
      policy_optim: the policy optimiser's :mod:`lsc.train.optim` fields (its schedule counts
        :attr:`updates_per_step` updates per RL step).
      unread: the keys of ``config.rl`` that this algorithm does not read (another family's
        fields, and for 'rloo' the clipped update's), sorted; checked by their rules.
    """

    num_steps: int
    batch_size: int
    algorithm: str = "ppo"
    num_samples: int = 1
    kl_coef: float = 0.1
    kl_estimator: str = "k1"
    kl_penalty: str = "reward"
    temperature: float = 1.0
    reference_cache: bool = True
    time_phases: bool = True
    log_every: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    progress: bool = True
    snapshot_every: int = 0
    snapshot_every_early: int = 0
    snapshot_early_until: int = 0
    snapshot_kl: float = 0.0
    stop_kl: float = 0.0
    reference_bank: bool = True
    gold_eval_prompts: int = 0
    seed: int = 0
    policy_optim: Optional[Mapping[str, Any]] = _optim_field()
    unread: Tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("kl_coef", "seed"):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)):
                raise ValueError(f"rl.{name} must be one number here, got {value!r}")
        schema.check(vars(self), RL_RULES, "rl")
        if (self.snapshot_every_early > 0) != (self.snapshot_early_until > 0):
            raise ValueError(f"rl.snapshot_every_early={self.snapshot_every_early} and "
                             f"rl.snapshot_early_until={self.snapshot_early_until} must both be "
                             "0 (no early schedule) or both > 0")
        family = FAMILIES[self.algorithm]
        if type(self) is not family:
            raise ValueError(f"rl.algorithm={self.algorithm!r} is configured by "
                             f"{family.__name__}, not {type(self).__name__} (build it with "
                             "lsc.align.rlhf.rl_config)")
        if self.kl_penalty == "loss" and self.algorithm not in CLIPPED_GROUP_ALGORITHMS:
            raise ValueError(f"rl.kl_penalty='loss' needs rl.algorithm in "
                             f"{CLIPPED_GROUP_ALGORITHMS}, got {self.algorithm!r}")

    @property
    @abc.abstractmethod
    def estimator(self) -> str:
        """The name of the algorithm's advantage estimator in
        :data:`lsc.align.advantages.ESTIMATORS`."""

    @property
    @abc.abstractmethod
    def updates_per_step(self) -> int:
        """Optimiser updates per RL step (the optimisers' schedules count these)."""

    @classmethod
    def reads(cls, algorithm: str) -> Tuple[str, ...]:
        """The fields of ``cls`` that ``algorithm`` reads."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "unread")


def _check_minibatches(cfg) -> None:
    n = cfg.batch_size * cfg.num_samples
    if n % cfg.num_minibatches:
        raise ValueError(f"rl.num_minibatches={cfg.num_minibatches} must divide "
                         f"rl.batch_size * rl.num_samples = {n}")


@dataclasses.dataclass(frozen=True)
class PPOConfig(RLConfig):
    """``rl.algorithm='ppo'``: per-token rewards, GAE advantages over a value head, clipped policy
    and value updates (:func:`lsc.align.rlhf.updates.gae_update`). The fields of
    :class:`RLConfig`, and:

    Attributes:
      ppo_epochs, num_minibatches: passes over the rollout and mini-batches per pass;
        ``num_minibatches`` must divide ``N``.
      clip_eps, value_clip_eps: the ratio's and the value's clipping.
      gae_lambda, discount: GAE parameters.
      whiten_advantages: normalise the advantages over the rollout's tokens.
      value_optim: the value head's optimiser (:mod:`lsc.train.optim` fields).
    """

    ppo_epochs: int = 1
    num_minibatches: int = 1
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    gae_lambda: float = 0.95
    discount: float = 1.0
    whiten_advantages: bool = True
    value_optim: Optional[Mapping[str, Any]] = _optim_field()

    def __post_init__(self):
        super().__post_init__()
        _check_minibatches(self)

    @property
    def estimator(self) -> str:
        return "gae"

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * self.num_minibatches


@dataclasses.dataclass(frozen=True)
class GroupConfig(RLConfig):
    """``rl.algorithm`` 'rloo', 'grpo' or 'dr_grpo': the baseline of a sample is its group, the
    prompt's ``k >= 2`` samples (:mod:`lsc.align.advantages`); no value head. 'rloo' takes one
    REINFORCE step per rollout (:func:`lsc.align.rlhf.updates.rloo_update`); 'grpo' and
    'dr_grpo' take clipped updates (:func:`lsc.align.rlhf.updates.group_update`). The fields of
    :class:`RLConfig`, and:

    Attributes:
      ppo_epochs, num_minibatches: passes over the rollout and mini-batches per pass ('grpo',
        'dr_grpo'; ``num_minibatches`` must divide ``N``).
      clip_eps: the ratio's clipping ('grpo', 'dr_grpo').
      loss_reduction: how the clipped update reduces its per-token losses ('grpo', 'dr_grpo';
        :func:`lsc.align.losses.reduce_tokens`): '' the algorithm's own
        (:data:`DEFAULT_REDUCTION`: GRPO's 'sequence', Dr. GRPO's 'constant'), or 'sequence',
        'constant' or 'token' (:attr:`reduction`).
    """

    ppo_epochs: int = 1
    num_minibatches: int = 1
    clip_eps: float = 0.2
    loss_reduction: str = ""

    CLIPPED_UPDATE: ClassVar[Tuple[str, ...]] = ("ppo_epochs", "num_minibatches", "clip_eps",
                                                 "loss_reduction")

    def __post_init__(self):
        super().__post_init__()
        if self.num_samples < 2:
            raise ValueError(f"rl.algorithm={self.algorithm!r} needs rl.num_samples >= 2 (a "
                             f"group of samples per prompt), got {self.num_samples}")
        if self.algorithm in CLIPPED_GROUP_ALGORITHMS:
            _check_minibatches(self)

    @property
    def estimator(self) -> str:
        return self.algorithm

    @property
    def reduction(self) -> str:
        """The clipped update's reduction of its per-token losses: ``loss_reduction``, or the
        algorithm's own (:data:`DEFAULT_REDUCTION`) when it is ''."""
        return self.loss_reduction or DEFAULT_REDUCTION[self.algorithm]

    @property
    def updates_per_step(self) -> int:
        if self.algorithm in CLIPPED_GROUP_ALGORITHMS:
            return self.ppo_epochs * self.num_minibatches
        return 1

    @classmethod
    def reads(cls, algorithm: str) -> Tuple[str, ...]:
        fields = super().reads(algorithm)
        if algorithm in CLIPPED_GROUP_ALGORITHMS:
            return fields
        return tuple(f for f in fields if f not in cls.CLIPPED_UPDATE)


FAMILIES: Dict[str, Type[RLConfig]] = {"ppo": PPOConfig, "rloo": GroupConfig,
                                       "grpo": GroupConfig, "dr_grpo": GroupConfig}
"""The typed config of each ``rl.algorithm``."""
ALGORITHMS = tuple(FAMILIES)  # ppo, rloo, grpo, dr_grpo
CLIPPED_GROUP_ALGORITHMS = ("grpo", "dr_grpo")  # clipped updates on group advantages
DEFAULT_REDUCTION = {"grpo": "sequence", "dr_grpo": "constant"}
"""Each clipped group algorithm's own reduction of its per-token losses
(:func:`lsc.align.losses.reduce_tokens`): GRPO's mean per sequence, Dr. GRPO's constant
``N * R``."""
_FIELDS = {f.name for family in set(FAMILIES.values()) for f in dataclasses.fields(family)
           } - {"unread"}


def rl_config(mapping: Optional[Mapping[str, Any]] = None, **overrides) -> RLConfig:
    """The typed config of ``config.rl`` (``mapping``, a dict or ``ConfigDict``, with
    ``overrides`` replacing its values): the family of its ``algorithm`` (:data:`FAMILIES`),
    the other families' keys listed in ``unread`` (module docstring).

    Raises:
      ValueError: ``rl.<field>: ...`` for a bad value (of any key with a rule), ``rl: unknown
        fields`` for a key of no family, and the family's checks across fields.
    """
    if hasattr(mapping, "to_dict"):
        mapping = mapping.to_dict()
    values = dict(mapping or {})
    values.update(overrides)
    extra = sorted(set(values) - _FIELDS)
    if extra:
        raise ValueError(f"rl: unknown fields {extra}; known: {sorted(_FIELDS)}")
    schema.check(values, RL_RULES, "rl")
    algorithm = values.get("algorithm", "ppo")
    family = FAMILIES[algorithm]
    own = {f.name for f in dataclasses.fields(family)} - {"unread"}
    reads = family.reads(algorithm)
    unread = tuple(sorted(k for k in values if k not in reads))
    return family(**{k: v for k, v in values.items() if k in own}, unread=unread)
