"""A reward pipeline of named stages: centre, transform each property, aggregate the properties.

A :class:`Pipeline` turns per-property rewards ``r float32[B, k, m]`` (``k`` samples of ``B``
prompts, ``m`` properties) into one utility per sample, in three stages (:func:`apply`):

1. *centre*: ``l = r - r_ref`` (``r_ref = 0`` when the pipeline does not centre or none is given);
2. *transform* (:data:`TRANSFORMS`), per property:

   * ``identity`` -- ``l``;
   * ``lsc`` -- ``log sigma(l)`` (:func:`lsc.rewards.lsc`; Wang et al. 2024);
   * ``par`` -- ``sigma(l)`` (:func:`lsc.rewards.par` with the reference as the single reference
     response; Fu et al. 2025);
   * ``clip`` -- ``min(max(l, low), high)`` (:func:`lsc.rewards.clip`, ``Pipeline.clip``);
   * ``batch_norm`` -- ``(l - mean) / (std + eps)`` over all valid samples of the batch
     (:func:`lsc.rewards.batch_normalize`; population std, ``ddof = 0``, as that function has it);
   * ``minmax`` -- ``(l - min) / (max - min + eps)`` over all valid samples of the batch
     (:func:`lsc.rewards.batch_minmax`);
   * ``group_norm`` -- GDPO's group reward-decoupled normalisation (normalise each reward within
     the group of a prompt's ``k`` samples, then sum): ``(l - mean) / (std + eps)`` with mean and
     std over the valid samples of the prompt's group, per property. ``std`` has
     ``ddof = 1``, as :func:`lsc.align.advantages.grpo` (and TRL) compute it. A group whose valid
     values are all equal gives 0 (tested as max == min, so no ``rounding / eps`` noise), a group
     with fewer than 2 valid samples gives 0, and a masked sample gives 0. A per-prompt reference
     cancels here, so ``gdpo`` does not centre;

3. *aggregate* (:data:`AGGREGATIONS`) over the property axis: ``sum``, ``weighted_sum``
   (``sum_i w_i t_i``, one weight per property), ``sigma_and`` / ``sigma_or`` (the note's logical
   aggregations; they take logits, so only after transform ``identity``).

A masked sample (``mask`` False) gets transformed values 0 and utility 0 under every pipeline;
it never enters a batch or group statistic. Its ``logits`` are still ``r - r_ref``.

:func:`from_method` maps every ``rewards.method`` name (:mod:`lsc.rewards.names`) to its stages:
the per-response methods of :func:`lsc.align.utility.utility` (which keeps computing those itself;
the pipeline gives the same numbers), ``gdpo`` (``group_norm + sum``, not centred) and stage
strings ``'<transform>+<aggregation>[_nocenter]'``. :func:`stage_metrics` gives each stage's
per-property means for logging.

Everything here is pure ``jax.numpy`` and jittable with the pipeline static (it is a frozen,
hashable dataclass).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from lsc import rewards as rewards_lib
from lsc.align import advantages
from lsc.rewards import names

Array = jax.Array
EPS = advantages.EPS

TRANSFORMS: Tuple[str, ...] = names.PIPELINE_TRANSFORMS
"""``identity``, ``lsc``, ``par``, ``clip``, ``batch_norm``, ``minmax``, ``group_norm``."""
AGGREGATIONS: Tuple[str, ...] = names.PIPELINE_AGGREGATIONS
"""``sum``, ``weighted_sum``, ``sigma_and``, ``sigma_or``."""
GROUP_TRANSFORMS: Tuple[str, ...] = names.GROUP_TRANSFORMS
"""The transforms that need the ``[B, k, m]`` layout (statistics over the batch or the group)."""
LOGIT_AGGREGATIONS = ("sigma_and", "sigma_or")

# The per-response methods as (transform, aggregation) after resolving aliases and _nocenter.
_METHOD_STAGES: Dict[str, Tuple[str, str]] = {
    "sum": ("identity", "sum"),
    "weighted_sum": ("identity", "weighted_sum"),
    "lsc_sum": ("lsc", "sum"),
    "lsc_weighted_sum": ("lsc", "weighted_sum"),
    "sigma_and": ("identity", "sigma_and"),
    "sigma_or": ("identity", "sigma_or"),
    names.PAR: ("par", "sum"),
    names.GDPO: ("group_norm", "sum"),
}


def _choices() -> str:
    return f"{', '.join(names.METHOD_CHOICES)}, or a stage string {names.STAGE_SYNTAX}"


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The stages of a reward pipeline (module docstring).

    Attributes:
      transform: one of :data:`TRANSFORMS`.
      aggregation: one of :data:`AGGREGATIONS`.
      center: subtract ``r_ref`` before the transform.
      weights: one float per property for ``weighted_sum``, else None.
      clip: ``(low, high)`` bounds of transform ``clip`` (either may be None, not both), else None.
      method: the ``rewards.method`` this pipeline came from, for error messages only.
    """

    transform: str
    aggregation: str
    center: bool = True
    weights: Optional[Tuple[float, ...]] = None
    clip: Optional[Tuple[Optional[float], Optional[float]]] = None
    method: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        name = f"rewards.method {self.method!r}" if self.method else "rewards.method"
        stages = f"transform {self.transform!r} + aggregation {self.aggregation!r}"
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{name}: unknown transform {self.transform!r}; choose one of: "
                             f"{', '.join(TRANSFORMS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"{name}: unknown aggregation {self.aggregation!r}; choose one of: "
                             f"{', '.join(AGGREGATIONS)}")
        if self.aggregation in LOGIT_AGGREGATIONS and self.transform != "identity":
            raise ValueError(f"{name}: {stages} is invalid: {self.aggregation} combines logits, "
                             "so it needs transform 'identity'")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if self.aggregation == "weighted_sum" and not self.weights:
            raise ValueError(f"{name}: {stages} needs rewards.weights (one number per property)")
        if self.aggregation != "weighted_sum" and self.weights:
            raise ValueError(f"{name}: aggregation {self.aggregation!r} takes no rewards.weights, "
                             f"got {self.weights!r}")
        if self.clip is not None:
            bounds = tuple(self.clip)
            if len(bounds) != 2 or all(b is None for b in bounds):
                raise ValueError(f"{name}: rewards.clip must be (low, high) with at least one "
                                 f"bound, got {self.clip!r}")
            low, high = (None if b is None else float(b) for b in bounds)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name}: rewards.clip needs low <= high, got {self.clip!r}")
            object.__setattr__(self, "clip", (low, high))
        if self.transform == "clip" and self.clip is None:
            raise ValueError(f"{name}: transform 'clip' needs rewards.clip = (low, high)")
        if self.transform != "clip" and self.clip is not None:
            raise ValueError(f"{name}: rewards.clip is used by transform 'clip' only, got "
                             f"{self.clip!r} with {stages}")

    @property
    def uses_reference(self) -> bool:
        """False when ``r_ref`` cannot change the utility (not centred, or ``group_norm``)."""
        return self.center and self.transform != "group_norm"


def from_method(method: str, weights: Optional[Sequence[float]] = None,
                clip: Optional[Tuple[Optional[float], Optional[float]]] = None) -> Pipeline:
    """The :class:`Pipeline` of a ``rewards.method`` name (module docstring).

    Args:
      method: a name of :data:`lsc.rewards.names.METHOD_CHOICES` (aliases and ``*_nocenter``
        variants included) or a stage string ``'<transform>+<aggregation>[_nocenter]'``.
      weights: one weight per property (weighted aggregations only).
      clip: ``(low, high)`` (transform ``clip`` only).

    Raises:
      ValueError: an unknown name (listing the choices) or stages that do not fit together.
    """
    weights = tuple(weights) if weights is not None and len(weights) else None
    clip = tuple(clip) if clip is not None and len(clip) else None
    stages = names.split_stages(method)
    if stages is None:
        if not isinstance(method, str) or not names.is_method(method):
            raise ValueError(f"rewards.method {method!r} is unknown; choose one of: "
                             f"{_choices()}")
        canonical = names.canonical_method(method)
        center = not canonical.endswith(names.NOCENTER_SUFFIX)
        base = canonical if center else canonical[: -len(names.NOCENTER_SUFFIX)]
        transform, aggregation = _METHOD_STAGES[base]
    else:
        transform, aggregation, center = stages
    center = center and names.uses_reference(method)
    return Pipeline(transform, aggregation, center=center, weights=weights, clip=clip,
                    method=str(method))


class Stages(NamedTuple):
    """Every stage of :func:`apply` (``[B, k]`` stands for the rewards' leading shape).

    Attributes:
      logits: ``float32[B, k, m]`` centred rewards ``r - r_ref`` (``r`` when not centring).
      transformed: ``float32[B, k, m]`` transformed logits (0 for masked samples).
      utility: ``float32[B, k]`` aggregated utilities (0 for masked samples).
      rewards: ``float32[B, k, m]`` the raw rewards, as given.
    """

    logits: Array
    transformed: Array
    utility: Array
    rewards: Array


def _per_property(fn, x: Array, valid: Optional[Array]) -> Array:
    return jnp.stack([fn(x[..., i], valid) for i in range(x.shape[-1])], axis=-1)


def group_normalize(logits: Array, valid: Optional[Array] = None, eps: float = EPS) -> Array:
    """GDPO's per-property group normalisation (module docstring).

    Args:
      logits: ``float32[B, k, m]``; a prompt's ``k`` samples form its group.
      valid: ``bool[B, k]`` samples that count, or None for all.
      eps: added to the std (``ddof = 1``).

    Returns:
      ``float32[B, k, m]``: ``(l - mean) / (std + eps)`` over each group's valid samples; 0 for
      masked samples, groups with fewer than 2 valid samples and groups of equal values.
    """
    return advantages.standardize(logits, valid, eps)


def _check_shapes(pipeline: Pipeline, r: Array, r_ref, mask):
    if r.ndim == 0:
        raise ValueError("rewards need a trailing axis of properties, got a scalar")
    m = r.shape[-1]
    if pipeline.transform in GROUP_TRANSFORMS and r.ndim != 3:
        raise ValueError(f"transform {pipeline.transform!r} needs rewards [B, k, m] (k samples of "
                         f"B prompts), got shape {r.shape}")
    if pipeline.weights is not None and len(pipeline.weights) != m:
        raise ValueError(f"{len(pipeline.weights)} rewards.weights for {m} properties")
    ref = None
    if r_ref is not None:
        ref = jnp.asarray(r_ref, jnp.float32)
        if r.ndim == 3 and ref.ndim == 2:
            raise ValueError(f"r_ref {ref.shape} against rewards {r.shape} is ambiguous; give "
                             "the per-prompt reference as [B, 1, m] (r_ref[:, None, :])")
        try:
            shape = jnp.broadcast_shapes(r.shape, ref.shape)
        except ValueError:
            shape = None
        if shape != r.shape:
            raise ValueError(f"r_ref {ref.shape} does not broadcast to rewards {r.shape}")
    valid = None
    if mask is not None:
        valid = jnp.asarray(mask, bool)
        if valid.shape != r.shape[:-1]:
            raise ValueError(f"mask {valid.shape} must have the rewards' shape without the "
                             f"properties axis, {r.shape[:-1]}")
    return ref, valid


def _transform(pipeline: Pipeline, l: Array, valid: Optional[Array]) -> Array:
    t = pipeline.transform
    if t == "identity":
        return l
    if t == "lsc":
        return rewards_lib.lsc(l)
    if t == "par":
        return rewards_lib.par(l, jnp.zeros((1,), l.dtype))
    if t == "clip":
        low, high = pipeline.clip
        return rewards_lib.clip(l, low, high)
    if t == "batch_norm":
        return _per_property(rewards_lib.batch_normalize, l, valid)
    if t == "minmax":
        return _per_property(rewards_lib.batch_minmax, l, valid)
    return group_normalize(l, valid)


def _aggregate(pipeline: Pipeline, t: Array) -> Array:
    a = pipeline.aggregation
    if a == "sum":
        return jnp.sum(t, axis=-1)
    if a == "weighted_sum":
        return jnp.sum(t * jnp.asarray(pipeline.weights, jnp.float32), axis=-1)
    if a == "sigma_and":
        return rewards_lib.sigma_and(t, axis=-1)
    return rewards_lib.sigma_or(t, axis=-1)


def apply(pipeline: Pipeline, rewards, r_ref=None, mask=None) -> Stages:
    """Runs ``pipeline`` on per-property rewards (pure; jit it with ``pipeline`` static).

    Args:
      pipeline: the stages.
      rewards: ``float32[B, k, m]`` rewards of ``k`` samples of ``B`` prompts (the transforms of
        :data:`GROUP_TRANSFORMS` need exactly this layout; the elementwise ones accept any
        ``[..., m]``).
      r_ref: reference rewards broadcastable to ``rewards``: ``float32[B, 1, m]`` per prompt (as
        :func:`lsc.align.utility.utility`'s callers pass), ``[m]`` or ``[B, k, m]``; a ``[B, m]``
        reference against ``[B, k, m]`` rewards is refused as ambiguous. None means 0; ignored
        when the pipeline does not centre.
      mask: ``bool[B, k]`` (the rewards' shape without ``m``), True for samples that count; None
        for all.

    Returns:
      :class:`Stages` (float32): ``logits``, ``transformed`` and ``rewards`` of the rewards'
      shape, ``utility`` of ``rewards.shape[:-1]``.
    """
    r = jnp.asarray(rewards, jnp.float32)
    ref, valid = _check_shapes(pipeline, r, r_ref, mask)
    logits = r - ref if (pipeline.center and ref is not None) else r
    transformed = _transform(pipeline, logits, valid)
    if valid is not None:
        transformed = jnp.where(valid[..., None], transformed, 0.0)
    utility = _aggregate(pipeline, transformed)
    if valid is not None:
        utility = jnp.where(valid, utility, 0.0)
    return Stages(logits, transformed, utility, r)


def _masked_mean(x: Array, valid: Optional[Array]) -> Array:
    if valid is None:
        return jnp.mean(x)
    v = jnp.broadcast_to(valid, x.shape)
    return jnp.sum(jnp.where(v, x, 0.0)) / jnp.maximum(jnp.sum(v), 1)


def stage_metrics(properties: Sequence[str], stages: Stages, r_ref=None,
                  mask=None) -> Dict[str, Array]:
    """Per-step scalar means of each stage, per property (pure; jittable).

    Args:
      properties: the ``m`` property names (the rewards' last axis).
      stages: :func:`apply`'s output.
      r_ref: the reference rewards given to :func:`apply` (any shape ending in ``m``, e.g.
        ``[B, m]`` or ``[B, 1, m]``), or None (logged as 0).
      mask: ``bool[B, k]`` as given to :func:`apply`, or None.

    Returns:
      ``{'reward/<p>': mean raw reward, 'transformed/<p>': mean transformed reward}`` over valid
      samples, and ``'r_ref/<p>'``: the mean reference over all its entries; float32 scalars.
    """
    m = stages.rewards.shape[-1]
    if len(properties) != m:
        raise ValueError(f"{len(properties)} property names for {m} properties")
    valid = None if mask is None else jnp.asarray(mask, bool)[..., None]
    ref = (jnp.zeros((m,), jnp.float32) if r_ref is None
           else jnp.asarray(r_ref, jnp.float32).reshape(-1, m))
    out: Dict[str, Array] = {}
    for i, p in enumerate(properties):
        out[f"reward/{p}"] = _masked_mean(stages.rewards[..., i:i + 1], valid)
        out[f"transformed/{p}"] = _masked_mean(stages.transformed[..., i:i + 1], valid)
        out[f"r_ref/{p}"] = jnp.mean(ref[..., i])
    return out
