"""The per-sequence utility ``u(x, y)`` that alignment maximises, from per-property rewards.

A :class:`UtilitySpec` names the properties (one reward model each), the aggregation method and
the reference source of every property; :func:`utility` maps rewards ``[..., m]`` and reference
rewards to utilities ``[...]`` by calling :mod:`lsc.rewards` (the formulas live there only).

Methods (``config.rewards.method``; the names and their aliases are those of
:mod:`lsc.rewards.names`):

* every name of :data:`lsc.rewards.METHODS` (``sum``, ``weighted_sum``, ``lsc_sum``,
  ``lsc_weighted_sum``, ``sigma_and``, ``sigma_or`` and their ``*_nocenter`` variants), applied by
  :func:`lsc.rewards.aggregate` to the rewards and references;
* ``raw`` -- alias of ``sum_nocenter``: the sum of the raw rewards, no reference; with one
  property this is the paper's "raw reward" baseline;
* ``lsc`` -- alias of ``lsc_sum``: ``sum_i log sigma(r_i - r_ref_i)``; with one property the
  paper's LSC utility, with several its logical AND;
* ``par`` -- Preference As Reward, ``sum_i sigma(r_i - r_ref_i)`` (:func:`lsc.rewards.par` with
  the property's reference as the single reference response);
* ``gdpo`` and stage strings ``'<transform>+<aggregation>[_nocenter]'`` (e.g. ``'clip+sum'``,
  ``'batch_norm+sum'``, ``'group_norm+sum'``) -- applied by
  :func:`lsc.align.reward_pipeline.apply` (the methods above are not routed through it). ``gdpo``
  normalises each reward within its prompt's group of k samples (std with ``ddof = 1``) and sums;
  it uses no reference. Group and batch transforms need rewards ``[B, k, m]``.

Config (``config.rewards``; :func:`spec_from_config`)::

  rewards.method = 'lsc_sum'
  rewards.weights = ()                     # one per property, weighted methods only
  rewards.clip = (low, high)               # transform 'clip' only (either bound may be None)
  rewards.properties.<name>.rm_workdir     # a finished train_rm run ('' = random init)
  rewards.properties.<name>.reference.source       # quantile | predictor | fixed_response | none
  rewards.properties.<name>.reference.quantile     # q of the quantile source
  rewards.properties.<name>.reference.num_samples  # k base-policy samples of the quantile source
  rewards.properties.<name>.reference.response     # the fixed response text
  rewards.properties.<name>.reference.predictor_workdir  # a finished train_predictor run

Properties are ordered by name (``ml_collections`` does not keep insertion order); that order is
the last axis of every rewards array. :data:`REFERENCE_RULES` are the rules of a reference's
fields, checked here on construction and by :mod:`lsc.config` up front.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from lsc import rewards, schema
from lsc.align import reward_pipeline
from lsc.rewards import names

METHODS: Tuple[str, ...] = names.UTILITY_METHODS
"""The per-response ``rewards.method`` names; ``gdpo`` and stage strings are accepted besides
(:func:`lsc.rewards.names.is_method`)."""

REFERENCE_RULES = {
    "source": schema.one_of(names.REFERENCE_SOURCES),
    "quantile": schema.number_in(0.0, 1.0),
    "num_samples": schema.number_in(1, integer=True),
}


@dataclasses.dataclass(frozen=True)
class ReferenceSpec:
    """How ``r_ref(x)`` of one property is obtained (see :mod:`lsc.align.references`).

    Attributes:
      source: 'quantile' (q-quantile of the reward of ``num_samples`` samples from the frozen
        base policy), 'predictor' (a trained prompt -> reference model), 'fixed_response' (the
        reward of ``response``), or 'none' (no subtraction).
      quantile: ``q`` in [0, 1] of the quantile source.
      num_samples: ``k >= 1`` base-policy samples per prompt of the quantile source.
      response: the fixed response text of the fixed_response source.
      predictor_workdir: the workdir of a finished ``train_predictor`` run (predictor source).
    """

    source: str = "none"
    quantile: float = 0.5
    num_samples: int = 16
    response: str = "I'm sorry, but I can't help with that."
    predictor_workdir: str = ""

    def __post_init__(self):
        schema.check(vars(self), REFERENCE_RULES, "reference")
        if self.source == "fixed_response" and not self.response:
            raise ValueError("reference.response is empty but reference.source='fixed_response'")


@dataclasses.dataclass(frozen=True)
class UtilitySpec:
    """Properties, their references, and the aggregation method.

    Attributes:
      method: one of :data:`METHODS`, ``gdpo`` or a stage string (module docstring).
      properties: property names (the order of the rewards' last axis).
      references: one :class:`ReferenceSpec` per property.
      weights: one weight per property for the weighted methods, else None.
      rm_workdirs: one ``train_rm`` workdir per property ('' for a random reward model).
      clip: ``(low, high)`` bounds of transform ``clip`` (stage strings ``'clip+...'`` only).
    """

    method: str
    properties: Tuple[str, ...]
    references: Tuple[ReferenceSpec, ...]
    weights: Optional[Tuple[float, ...]] = None
    rm_workdirs: Tuple[str, ...] = ()
    clip: Optional[Tuple[Optional[float], Optional[float]]] = None

    def __post_init__(self):
        if not names.is_method(self.method):
            raise ValueError(f"rewards.method {self.method!r} is unknown; choose one of: "
                             f"{', '.join(names.METHOD_CHOICES)}, or a stage string "
                             f"{names.STAGE_SYNTAX}")
        if not self.properties:
            raise ValueError("rewards.properties is empty; give at least one property")
        if len(self.references) != len(self.properties):
            raise ValueError(f"{len(self.properties)} properties but {len(self.references)} "
                             "references")
        if self.rm_workdirs and len(self.rm_workdirs) != len(self.properties):
            raise ValueError(f"{len(self.properties)} properties but {len(self.rm_workdirs)} "
                             "reward-model workdirs")
        if names.is_weighted(self.method):
            if not self.weights or len(self.weights) != len(self.properties):
                raise ValueError(f"rewards.method {self.method!r} needs rewards.weights with one "
                                 f"number per property ({len(self.properties)}), got "
                                 f"{self.weights!r}")
        elif self.weights:
            raise ValueError(f"rewards.method {self.method!r} takes no weights, got "
                             f"{self.weights!r}")
        if names.is_pipeline_method(self.method):
            reward_pipeline.from_method(self.method, self.weights, self.clip)  # checks stages
        elif self.clip is not None:
            raise ValueError(f"rewards.clip is used by transform 'clip' only (e.g. "
                             f"rewards.method='clip+sum'), got {self.clip!r} with "
                             f"rewards.method {self.method!r}")

    @property
    def num_properties(self) -> int:
        return len(self.properties)

    @property
    def uses_reference(self) -> bool:
        """False when the method ignores ``r_ref`` (``raw``, the ``*_nocenter`` methods, ``gdpo``
        and ``group_norm`` stage strings)."""
        return names.uses_reference(self.method)

    @property
    def pipeline(self) -> Optional[reward_pipeline.Pipeline]:
        """The :class:`~lsc.align.reward_pipeline.Pipeline` of ``gdpo`` and stage strings, else
        None (the per-response methods are computed by :func:`utility` directly)."""
        if not names.is_pipeline_method(self.method):
            return None
        return reward_pipeline.from_method(self.method, self.weights, self.clip)


def spec_from_config(rewards_config: Mapping) -> UtilitySpec:
    """A :class:`UtilitySpec` from ``config.rewards`` (see the module docstring).

    Raises ``ValueError`` naming the dotted field on a bad value.
    """
    if hasattr(rewards_config, "to_dict"):
        rewards_config = rewards_config.to_dict()
    props = rewards_config.get("properties") or {}
    if not props:
        raise ValueError("config.rewards.properties is empty; give at least one property")
    ordered, refs, workdirs = [], [], []
    for name in sorted(props):
        prop = props[name]
        try:
            refs.append(schema.from_mapping(ReferenceSpec, dict(prop.get("reference", {})),
                                            unknown="reference: unknown fields"))
        except ValueError as e:
            raise ValueError(f"config.rewards.properties.{name}.{e}") from None
        ordered.append(name)
        workdirs.append(str(prop.get("rm_workdir", "") or ""))
    weights = tuple(float(w) for w in (rewards_config.get("weights") or ())) or None
    clip = rewards_config.get("clip")
    clip = tuple(None if b is None else float(b) for b in clip) if clip else None
    return UtilitySpec(method=str(rewards_config.get("method", "lsc_sum")),
                       properties=tuple(ordered), references=tuple(refs), weights=weights,
                       rm_workdirs=tuple(workdirs), clip=clip)


def utility(spec: UtilitySpec, property_rewards: jax.Array,
            r_ref: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """``u(x, y)`` of every response.

    Args:
      spec: the utility's definition.
      property_rewards: ``float32[..., m]`` rewards (``m = spec.num_properties``), e.g.
        ``[B, k, m]`` for k samples of B prompts. ``gdpo`` and the stage strings with a group or
        batch transform need exactly ``[B, k, m]`` (the k axis is the prompt's group).
      r_ref: reference rewards broadcastable to ``property_rewards`` (e.g. ``[B, 1, m]``), or
        None for 0.
      mask: optional ``bool[B, k]`` valid samples, used by ``gdpo`` and stage strings only (see
        :func:`lsc.align.reward_pipeline.apply`); the per-response methods ignore it.

    Returns:
      ``float32[...]`` utilities (``property_rewards.shape[:-1]``).
    """
    r = jnp.asarray(property_rewards, jnp.float32)
    if r.ndim == 0 or r.shape[-1] != spec.num_properties:
        raise ValueError(f"property_rewards must end in {spec.num_properties} properties, got "
                         f"shape {r.shape}")
    pipeline = spec.pipeline
    if pipeline is not None:
        return reward_pipeline.apply(pipeline, r, r_ref, mask).utility
    weights = None if spec.weights is None else jnp.asarray(spec.weights, jnp.float32)
    method = names.canonical_method(spec.method)
    if method == names.PAR:
        ref = jnp.zeros_like(r) if r_ref is None else jnp.broadcast_to(
            jnp.asarray(r_ref, jnp.float32), r.shape)
        return jnp.sum(rewards.par(r, ref[..., None]), axis=-1)
    return rewards.aggregate(method, r, r_ref, weights)
