"""The jitted rollout and update of one RL run, with explicit shardings.

:class:`RLTrainer` places the policy, the value model, ``pi0`` and the reward models on the mesh
by their logical axes and the batch-major arrays over the batch axes (the shardings come from
:mod:`lsc.parallel.partitioning`), and jits :func:`lsc.align.rlhf.rollout.rollout` and
:func:`lsc.align.rlhf.updates.update` once each, with ``in_shardings``/``out_shardings`` and the
RL state donated to the update. The KL coefficient is a traced input, so a sweep over ``gamma``
in one process compiles each function once; :attr:`RLTrainer.traces` counts traces
(compilations). With ``rl.time_phases`` the rollout runs as three jitted phases (reference,
sample, score) with a device sync after each, so the per-step time split is measured; results
equal the fused rollout's up to XLA fusion rounding.
"""

from __future__ import annotations

import time
from typing import Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from lsc.align import common
from lsc.align import utility as utility_lib
from lsc.align.rlhf import rollout as rollout_lib
from lsc.align.rlhf import updates as updates_lib
from lsc.align.rlhf.config import RLConfig
from lsc.align.rlhf.state import Frozen, Models, RLState, Rollout, Static, merge_params
from lsc.models import heads
from lsc.parallel import partitioning
from lsc.train import loop as train_loop
from lsc.train import metrics as metrics_lib


def _copy(x):
    """A copy of array ``x``; a ``jax.ShapeDtypeStruct`` (an abstract model) as it is."""
    return x if isinstance(x, jax.ShapeDtypeStruct) else jnp.copy(x)


def _place(tree, shardings):
    """``tree`` put on the mesh with ``shardings``; abstract leaves (``jax.ShapeDtypeStruct``)
    become abstract leaves carrying their sharding (an abstract trainer, e.g. ``lsc.plan``)."""
    leaves = jax.tree.leaves(tree)
    if not any(isinstance(x, jax.ShapeDtypeStruct) for x in leaves):
        return jax.device_put(tree, shardings)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
        if isinstance(x, jax.ShapeDtypeStruct) else jax.device_put(x, s), tree, shardings)


class RLTrainer:
    """The jitted rollout and update of one run (see the module docstring).

    The policy starts as a copy of ``pi0``; the PPO value model is a copy of ``pi0``'s backbone
    with a zero-initialised :class:`lsc.models.heads.ValueHead` (values start at 0). ``pi0``, the
    reward models and the predictors are frozen (never differentiated, not in the state).

    Args:
      spec: the utility.
      cfg: :class:`RLConfig`.
      models: :class:`Models`.
      tx_policy, tx_value: optax optimisers.
      mesh, rules: the device mesh and logical-axis rules.
      num_prompts: ``N`` prompt slots of the reference cache.
      response_len: ``R``, the response budget of every sample.
      fixed_tokens: ``int32[m, R0]`` fixed responses
        (:func:`lsc.align.references.fixed_response_tokens`).
      seed: the value head's initialisation and the default RNG seed of :meth:`init_state`.
      reference_lookup_only: the state's reference table is complete (a bank): the rollout looks
        references up and never estimates one.
    """

    def __init__(self, spec: utility_lib.UtilitySpec, cfg: RLConfig, models: Models,
                 tx_policy: optax.GradientTransformation, tx_value: optax.GradientTransformation,
                 mesh: Mesh, rules, *, num_prompts: int, response_len: int,
                 fixed_tokens: Optional[np.ndarray] = None, seed: int = 0,
                 reference_lookup_only: bool = False):
        self.spec, self.cfg, self.mesh, self.rules = spec, cfg, mesh, rules
        self.reference_lookup_only = bool(reference_lookup_only)
        self.response_len = int(response_len)
        self.tx_policy, self.tx_value = tx_policy, tx_value
        self.traces = {"rollout": 0, "update": 0, "reference": 0, "sample": 0, "score": 0}
        self.seed = int(seed)
        self.num_prompts = int(num_prompts)
        m = spec.num_properties
        ppo = cfg.algorithm == "ppo"
        self.replicated = partitioning.replicated(mesh)

        # Graph definitions (static) and states placed on the mesh.
        pi0_gd, pi0_state = nnx.split(models.pi0)
        self.pi0_graphdef = pi0_gd
        policy_model = nnx.merge(pi0_gd, jax.tree.map(_copy, pi0_state))
        self.policy_graphdef, policy_params, policy_rest = nnx.split(policy_model, nnx.Param, ...)
        if ppo:
            backbone = nnx.merge(pi0_gd, jax.tree.map(_copy, pi0_state))
            value_model = heads.ValueModel(backbone, rngs=nnx.Rngs(self.seed + 7))
            self.value_graphdef, value_params, value_rest = nnx.split(value_model, nnx.Param, ...)
        else:
            self.value_graphdef = None
            value_params, value_rest = {"unused": jnp.zeros((), jnp.float32)}, {}
        rm_gds, rm_states = common.split_models(models.reward_models)
        pr_gds, pr_states = common.split_models(list(models.predictors) or [None] * m)
        self.rm_graphdefs, self.predictor_graphdefs = rm_gds, pr_gds
        self.predictor_fns = tuple(models.predictor_fns) or (None,) * m
        shard = lambda s: None if s is None else partitioning.state_shardings(s, mesh, rules)  # noqa
        fixed = np.zeros((m, 1), np.int32) if fixed_tokens is None else np.asarray(fixed_tokens)
        frozen = Frozen(pi0=pi0_state, rms=tuple(rm_states), predictors=tuple(pr_states),
                        policy_rest=policy_rest, value_rest=value_rest,
                        fixed_tokens=jnp.asarray(fixed, jnp.int32))
        self.frozen_shardings = Frozen(
            pi0=shard(pi0_state), rms=tuple(shard(s) for s in rm_states),
            predictors=tuple(shard(s) for s in pr_states), policy_rest=shard(policy_rest),
            value_rest=shard(value_rest) if ppo else {}, fixed_tokens=self.replicated)
        self.frozen = _place(frozen, self.frozen_shardings)
        self.static = Static(
            spec=spec, cfg=cfg, response_len=self.response_len, tx_policy=tx_policy,
            tx_value=tx_value, pi0_graphdef=pi0_gd, policy_graphdef=self.policy_graphdef,
            value_graphdef=self.value_graphdef, rm_graphdefs=tuple(rm_gds),
            predictor_graphdefs=tuple(pr_gds), predictor_fns=self.predictor_fns,
            reference_lookup_only=self.reference_lookup_only, on_trace=self._count)

        p_sh = partitioning.state_shardings(policy_params, mesh, rules)
        v_sh = partitioning.state_shardings(value_params, mesh, rules) if ppo else \
            jax.tree.map(lambda _: self.replicated, value_params)
        self.state_shardings = RLState(
            step=self.replicated, policy=p_sh,
            policy_opt=partitioning.opt_state_shardings(tx_policy, policy_params, p_sh, mesh),
            value=v_sh,
            value_opt=partitioning.opt_state_shardings(tx_value, value_params, v_sh, mesh),
            rng=self.replicated, ref_table=self.replicated, ref_filled=self.replicated)
        # On the mesh already: a pi0 loaded without shardings (lsc.train.checkpoint.load_model)
        # sits on one device, which the initial state's jit with mesh-wide out_shardings does not
        # take.
        self._initial = _place((policy_params, value_params), (p_sh, v_sh))
        self._init_jit = None
        self._rollout_jit = None
        self._phase_jits = None
        self._update_jit = None
        self.batch_shardings = None
        self.rollout_shapes = None  # the rollout's jax.ShapeDtypeStruct, once built

    # ------------------------------------------------------------------------------ state

    def init_state(self, reference: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                   seed: Optional[int] = None) -> RLState:
        """The state of a fresh run (policy = ``pi0``), placed on the mesh.

        Args:
          reference: ``(float32[N, m] table, bool[N] filled)`` to start the per-prompt reference
            cache from (the cache of an earlier run on the same prompts, base policy and reward
            models, e.g. the previous ``gamma`` of a sweep); None starts it empty.
          seed: the run's RNG seed (sampling keys, mini-batch shuffling); None: the trainer's.
            One trainer (its compiled steps) serves the runs of several seeds.
        """
        seed = self.seed if seed is None else int(seed)
        policy_params, value_params = self._initial
        m = self.spec.num_properties
        if reference is None:
            table = np.zeros((self.num_prompts, m), np.float32)
            filled = np.zeros((self.num_prompts,), bool)
        else:
            table = np.asarray(reference[0], np.float32)
            filled = np.asarray(reference[1], bool)
            if table.shape != (self.num_prompts, m) or filled.shape != (self.num_prompts,):
                raise ValueError(f"reference cache of shapes {table.shape} and {filled.shape} "
                                 f"does not fit {self.num_prompts} prompts x {m} properties")

        if self._init_jit is None:  # compiled once, whatever the seed (a traced input)
            self._init_jit = jax.jit(self._make_state, out_shardings=self.state_shardings)
        return self._init_jit(policy_params, value_params, table, filled,
                              np.asarray(seed, np.int32))

    def _make_state(self, policy_params, value_params, table, filled, seed) -> RLState:
        rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 2))
        return RLState(step=jnp.zeros((), jnp.int32), policy=policy_params,
                       policy_opt=self.tx_policy.init(policy_params),
                       value=value_params, value_opt=self.tx_value.init(value_params),
                       rng=rng, ref_table=table, ref_filled=filled)

    def abstract_state(self) -> RLState:
        """The ``jax.ShapeDtypeStruct`` of every leaf of :meth:`init_state`'s state."""
        m = self.spec.num_properties
        return jax.eval_shape(self._make_state, *self._initial,
                              jax.ShapeDtypeStruct((self.num_prompts, m), jnp.float32),
                              jax.ShapeDtypeStruct((self.num_prompts,), jnp.bool_),
                              jax.ShapeDtypeStruct((), jnp.int32))

    # ------------------------------------------------------------------------------ jitting

    def _count(self, name: str) -> None:
        self.traces[name] += 1

    def rollout_step(self, state, frozen, batch, kl_coef):
        return rollout_lib.rollout(self.static, state, frozen, batch, kl_coef)

    def update_step(self, state, frozen, ro, kl_coef):
        return updates_lib.update(self.static, state, frozen, ro, kl_coef)


    def _build(self, batch):
        self.batch_shardings = train_loop.global_batch_shardings(batch, self.mesh)
        st_sh, fr_sh, b_sh, rep = (self.state_shardings, self.frozen_shardings,
                                   self.batch_shardings, self.replicated)
        state_abs = self.abstract_state()
        batch_abs = train_loop.global_shapes(batch)
        kl_abs = jax.ShapeDtypeStruct((), jnp.float32)
        traces = dict(self.traces)
        _, ro_abs = jax.eval_shape(self.rollout_step, state_abs, self.frozen, batch_abs, kl_abs)
        self.traces = traces  # shape inference is not a compilation
        self.rollout_shapes = ro_abs
        ro_sh = partitioning.rows_shardings(ro_abs, self.mesh)
        self._rollout_jit = jax.jit(self.rollout_step, in_shardings=(st_sh, fr_sh, b_sh, rep),
                                    out_shardings=(st_sh, ro_sh))
        self._update_jit = jax.jit(self.update_step, in_shardings=(st_sh, fr_sh, ro_sh, rep),
                                   out_shardings=(st_sh, rep), donate_argnums=(0,))
        if self.cfg.time_phases:
            b, k, r = batch_abs["prompt"].shape[0], self.cfg.num_samples, self.response_len
            tok_sh = partitioning.batch_sharding(
                jax.ShapeDtypeStruct((b, k, r), jnp.int32), self.mesh)

            def reference_phase(s, f, bt):
                return rollout_lib.reference_phase(self.static, s, f, bt)

            def sample_phase(s, f, bt):
                return rollout_lib.sample_phase(self.static, s, f, bt)

            def score_phase(s, f, bt, tokens, mask, r_ref, kl_coef, new):
                ro = rollout_lib.score_phase(self.static, s, f, bt, tokens, mask, r_ref, kl_coef)
                ro.metrics["reference_new"] = new.astype(jnp.float32)
                return ro

            self._phase_jits = {
                "reference": jax.jit(reference_phase, in_shardings=(st_sh, fr_sh, b_sh),
                                     out_shardings=(partitioning.batch_sharding(
                                         jax.ShapeDtypeStruct((b, 1), jnp.float32), self.mesh),
                                         rep, rep, rep)),
                "sample": jax.jit(sample_phase, in_shardings=(st_sh, fr_sh, b_sh),
                                  out_shardings=(tok_sh, tok_sh)),
                "score": jax.jit(score_phase, in_shardings=(st_sh, fr_sh, b_sh, tok_sh, tok_sh,
                                                         None, rep, rep),
                                 out_shardings=ro_sh),
            }

    def lower(self, batch: Mapping[str, np.ndarray]) -> Dict[str, jax.stages.Lowered]:
        """``{'rollout', 'update'}``: the jitted steps lowered for host batches like ``batch``
        on abstract inputs (the state's shapes, the rollout's), so nothing runs."""
        if self._rollout_jit is None:
            self._build(batch)
        state = self.abstract_state()
        kl = jax.ShapeDtypeStruct((), jnp.float32)
        return {"rollout": self._rollout_jit.lower(state, self.frozen,
                                                   train_loop.global_shapes(batch), kl),
                "update": self._update_jit.lower(state, self.frozen, self.rollout_shapes, kl)}

    def rollout(self, state: RLState, batch: Mapping[str, np.ndarray], kl_coef: float,
                timings: Optional[dict] = None) -> Tuple[RLState, Rollout]:
        """One rollout for a host batch ``{'prompt': int32[B, P], 'slot': int32[B]}``."""
        if self._rollout_jit is None:
            self._build(batch)
        gb = train_loop.global_batch(batch, self.batch_shardings)
        gamma = jnp.asarray(kl_coef, jnp.float32)
        if not self.cfg.time_phases:
            t0 = time.perf_counter()
            state, ro = self._rollout_jit(state, self.frozen, gb, gamma)
            jax.block_until_ready(ro)
            if timings is not None:
                timings["time/rollout"] = time.perf_counter() - t0
            return state, ro
        t0 = time.perf_counter()
        r_ref, table, filled, new = self._phase_jits["reference"](state, self.frozen, gb)
        jax.block_until_ready(r_ref)
        t1 = time.perf_counter()
        tokens, mask = self._phase_jits["sample"](state, self.frozen, gb)
        jax.block_until_ready(tokens)
        t2 = time.perf_counter()
        ro = self._phase_jits["score"](state, self.frozen, gb, tokens, mask, r_ref, gamma, new)
        jax.block_until_ready(ro)
        t3 = time.perf_counter()
        if timings is not None:
            timings.update({"time/reference": t1 - t0, "time/sample": t2 - t1,
                            "time/score": t3 - t2, "time/rollout": t3 - t0})
        return state.replace(ref_table=table, ref_filled=filled), ro

    def update(self, state: RLState, ro: Rollout, kl_coef: float,
               timings: Optional[dict] = None) -> Tuple[RLState, dict]:
        """One update from a rollout; the state is donated."""
        t0 = time.perf_counter()
        state, metrics = self._update_jit(state, self.frozen, ro,
                                          jnp.asarray(kl_coef, jnp.float32))
        jax.block_until_ready(metrics)
        if timings is not None:
            timings["time/update"] = time.perf_counter() - t0
        return state, metrics

    def step(self, state: RLState, batch, kl_coef: float, timings: Optional[dict] = None):
        """Rollout and update: ``(state, host metrics {name: float})``."""
        state, ro = self.rollout(state, batch, kl_coef, timings)
        state, upd = self.update(state, ro, kl_coef, timings)
        host = metrics_lib.to_floats(jax.device_get({**ro.metrics, **upd}))
        return state, host

    def policy_model(self, state: RLState) -> nnx.Module:
        """The current policy as a module."""
        return merge_params(self.policy_graphdef, state.policy, self.frozen.policy_rest)
