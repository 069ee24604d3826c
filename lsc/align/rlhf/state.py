"""The RL run's pytrees: the changing :class:`RLState`, the :class:`Frozen` models, one
:class:`Rollout`, and the :class:`Models` a job loads."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
from flax import nnx, struct

Array = jax.Array


@struct.dataclass
class RLState:
    """Everything of a run that changes (a pytree; see the module docstring)."""

    step: Array
    policy: Any
    policy_opt: Any
    value: Any
    value_opt: Any
    rng: Array
    ref_table: Array
    ref_filled: Array


@struct.dataclass
class Frozen:
    """The models that do not train, and constants (passed to the jitted functions)."""

    pi0: Any
    rms: Tuple[Any, ...]
    predictors: Tuple[Any, ...]
    policy_rest: Any
    value_rest: Any
    fixed_tokens: Array


class Rollout(NamedTuple):
    """One rollout, ``N = B * k`` rows (row ``i * k + j`` is sample ``j`` of prompt ``i``)."""

    prompts: Array  # int32[N, P]
    tokens: Array  # int32[N, R]
    mask: Array  # float32[N, R]
    logp: Array  # float32[N, R], under the policy that sampled
    logp0: Array  # float32[N, R], under pi0
    kl: Array  # float32[N, R], the chosen estimator, 0 on padding
    values: Array  # float32[N, R] (PPO; zeros for RLOO)
    utility: Array  # float32[N]
    rewards: Array  # float32[N, m]
    r_ref: Array  # float32[B, m]
    metrics: Dict[str, Array]


@dataclasses.dataclass
class Models:
    """The modules of a run: the base policy, one reward model per property, optional reference
    predictors (None where a property does not use one) and optional predictor functions."""

    pi0: nnx.Module
    reward_models: Sequence[nnx.Module]
    predictors: Sequence[Optional[nnx.Module]] = ()
    predictor_fns: Sequence[Any] = ()




@dataclasses.dataclass(frozen=True)
class Static:
    """What the jitted rollout and update close over (not traced): the utility ``spec``, the
    :class:`~lsc.align.rlhf.config.RLConfig` ``cfg``, the response budget, the optimisers and the
    models' graph definitions (``value_graphdef`` None without a value head). ``on_trace(name)``
    is called each time a function named ``name`` is traced (the trainer counts compilations)."""

    spec: Any
    cfg: Any
    response_len: int
    tx_policy: Any
    tx_value: Any
    pi0_graphdef: Any
    policy_graphdef: Any
    value_graphdef: Any
    rm_graphdefs: Tuple[Any, ...]
    predictor_graphdefs: Tuple[Any, ...]
    predictor_fns: Tuple[Any, ...]
    reference_lookup_only: bool
    on_trace: Callable[[str], None] = lambda name: None


def merge_params(graphdef, params, rest):
    """The module of ``graphdef`` with trained ``params`` and the ``rest`` of its state."""
    return nnx.merge(graphdef, params, rest)


def policy_full_state(graphdef, params, rest):
    """``(graphdef, state)`` of the full policy for the sampler."""
    model = merge_params(graphdef, params, rest)
    return nnx.split(model)
