"""KL-regularised RLHF: maximise ``E[u(x, y)] - gamma * KL(pi || pi0)`` with PPO, RLOO, GRPO or
Dr. GRPO.

One RL step is

1. **rollout** (one jitted call): reference rewards of the prompt batch (looked up in the bank
   computed before RL, :mod:`lsc.align.reference_bank`, or estimated from the frozen base policy
   ``pi0`` through the per-prompt cache, :mod:`lsc.align.reference`) -> ``k`` samples per
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
:class:`lsc.train.loop.NonFiniteLossError`.

Metrics per step: ``utility``, ``objective`` (``utility - gamma * kl``), ``reward/<property>``,
``r_ref/<property>``, ``kl`` (sequence sum of the chosen estimator), ``kl_k1``, ``kl_k3``,
``entropy``, ``response_length``, ``policy_loss``, ``clip_fraction``, ``value_loss``,
``value_clip_fraction`` (PPO), ``kl_loss``, ``group_std``, ``zero_std_fraction`` (GRPO family),
``reference_new`` (prompts estimated this step; the reference's
cost in samples is ``reference_new * K``), and the timings ``time/rollout``, ``time/update`` and,
with ``time_phases``, ``time/reference``, ``time/sample``, ``time/score`` (TensorBoard and log
only).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lsc import progress as progress_lib
from lsc import runtime, schema
from lsc.align import advantages as advantages_lib
from lsc.align import common
from lsc.align import losses
from lsc.align import reference as reference_lib
from lsc.align import reference_bank
from lsc.align import utility as utility_lib
from lsc.data import pipeline
from lsc.models import decoder as decoder_lib
from lsc.models import heads, sampling
from lsc.parallel import distributed, partitioning
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import loop as train_loop
from lsc.train import metrics as metrics_lib
from lsc.train import optim
from lsc.train import common as train_common

ALGORITHMS = ("ppo", "rloo", "grpo", "dr_grpo")
GROUP_ALGORITHMS = ("grpo", "dr_grpo")  # clipped updates on group advantages, no value head
KL_PENALTIES = ("reward", "loss")
Array = jax.Array

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
        (:mod:`lsc.align.reference_bank`) and only look references up in the loop; False:
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


def _merge_params(graphdef, params, rest):
    return nnx.merge(graphdef, params, rest)


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
      fixed_tokens: ``int32[m, R0]`` fixed responses (:func:`reference.fixed_response_tokens`).
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
        self.replicated = NamedSharding(mesh, PartitionSpec())

        # Graph definitions (static) and states placed on the mesh.
        pi0_gd, pi0_state = nnx.split(models.pi0)
        self.pi0_graphdef = pi0_gd
        policy_model = nnx.merge(pi0_gd, jax.tree.map(jnp.copy, pi0_state))
        self.policy_graphdef, policy_params, policy_rest = nnx.split(policy_model, nnx.Param, ...)
        if ppo:
            backbone = nnx.merge(pi0_gd, jax.tree.map(jnp.copy, pi0_state))
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
        self.frozen = jax.device_put(frozen, self.frozen_shardings)

        p_sh = partitioning.state_shardings(policy_params, mesh, rules)
        v_sh = partitioning.state_shardings(value_params, mesh, rules) if ppo else \
            jax.tree.map(lambda _: self.replicated, value_params)
        self.state_shardings = RLState(
            step=self.replicated, policy=p_sh,
            policy_opt=train_loop.opt_state_shardings(tx_policy, policy_params, p_sh, mesh),
            value=v_sh,
            value_opt=train_loop.opt_state_shardings(tx_value, value_params, v_sh, mesh),
            rng=self.replicated, ref_table=self.replicated, ref_filled=self.replicated)
        self._initial = (policy_params, value_params)
        self._init_jit = None
        self._rollout_jit = None
        self._phase_jits = None
        self._update_jit = None
        self.batch_shardings = None

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
            def make(policy_params, value_params, table, filled, seed):
                rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 2))
                return RLState(step=jnp.zeros((), jnp.int32), policy=policy_params,
                               policy_opt=self.tx_policy.init(policy_params),
                               value=value_params, value_opt=self.tx_value.init(value_params),
                               rng=rng, ref_table=table, ref_filled=filled)

            self._init_jit = jax.jit(make, out_shardings=self.state_shardings)
        return self._init_jit(policy_params, value_params, table, filled,
                              np.asarray(seed, np.int32))

    # ------------------------------------------------------------------------------ pure parts

    def _keys(self, state: RLState):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)

    def _reference_phase(self, state: RLState, frozen: Frozen, batch):
        """``(r_ref [B, m], ref_table, ref_filled, new)``."""
        self.traces["reference"] += 1
        ref_key, _, _ = self._keys(state)
        prompts = batch["prompt"]
        b = prompts.shape[0]
        m = self.spec.num_properties
        if not self.spec.uses_reference:
            return (jnp.zeros((b, m), jnp.float32), state.ref_table, state.ref_filled,
                    jnp.zeros((), jnp.int32))
        if self.reference_lookup_only:  # a complete bank: nothing is estimated in the loop
            return (state.ref_table[batch["slot"]], state.ref_table, state.ref_filled,
                    jnp.zeros((), jnp.int32))

        def estimate(p, key):
            return reference_lib.estimate_reference(
                self.spec, self.pi0_graphdef, frozen.pi0, self.rm_graphdefs, frozen.rms, p, key,
                max_new_tokens=self.response_len, temperature=self.cfg.temperature,
                fixed_tokens=frozen.fixed_tokens, predictor_graphdefs=self.predictor_graphdefs,
                predictor_states=frozen.predictors, predictor_fns=self.predictor_fns).r_ref

        if self.cfg.reference_cache:
            return reference_lib.cached_reference(estimate, state.ref_table, state.ref_filled,
                                                  batch["slot"], prompts, ref_key)
        return (estimate(prompts, ref_key), state.ref_table, state.ref_filled,
                jnp.asarray(b, jnp.int32))

    def _sample_phase(self, state: RLState, frozen: Frozen, batch):
        """``(tokens int32[B, k, R], mask bool[B, k, R])`` from the current policy."""
        self.traces["sample"] += 1
        _, sample_key, _ = self._keys(state)
        gd, st = _policy_full_state(self.policy_graphdef, state.policy, frozen.policy_rest)
        out = sampling.sample(gd, st, batch["prompt"], sample_key,
                              max_new_tokens=self.response_len, num_samples=self.cfg.num_samples,
                              temperature=self.cfg.temperature)
        return out.tokens, out.mask

    def _score_phase(self, state: RLState, frozen: Frozen, batch, tokens, mask, r_ref,
                     kl_coef) -> Rollout:
        self.traces["score"] += 1
        b, k, r = tokens.shape
        n = b * k
        prompts = jnp.repeat(batch["prompt"], k, axis=0)
        flat = tokens.reshape(n, r)
        fmask = mask.reshape(n, r).astype(jnp.float32)
        rew = reference_lib.score_samples(self.rm_graphdefs, frozen.rms, batch["prompt"], tokens)
        u = utility_lib.utility(self.spec, rew, r_ref[:, None, :]).reshape(n)
        policy = _merge_params(self.policy_graphdef, state.policy, frozen.policy_rest)
        logits = decoder_lib.response_logits(policy, prompts, flat)
        logp = decoder_lib.token_log_probs(logits, flat) * fmask
        pi0 = nnx.merge(self.pi0_graphdef, frozen.pi0)
        logp0 = decoder_lib.response_log_probs(pi0, prompts, flat, fmask)
        kl = losses.kl_estimate(logp, logp0, self.cfg.kl_estimator) * fmask
        kl1 = jnp.sum(losses.kl_estimate(logp, logp0, "k1") * fmask, axis=1)
        kl3 = jnp.sum(losses.kl_estimate(logp, logp0, "k3") * fmask, axis=1)
        if self.value_graphdef is not None:
            vm = _merge_params(self.value_graphdef, state.value, frozen.value_rest)
            values = vm(prompts, flat).astype(jnp.float32) * fmask
        else:
            values = jnp.zeros((n, r), jnp.float32)
        seq_kl = jnp.sum(kl, axis=1)
        metrics = {
            "utility": jnp.mean(u),
            "objective": jnp.mean(u - kl_coef * seq_kl),
            "kl": jnp.mean(seq_kl),
            "kl_k1": jnp.mean(kl1),
            "kl_k3": jnp.mean(kl3),
            "entropy": losses.entropy(logits, fmask),
            "response_length": jnp.mean(jnp.sum(fmask, axis=1)),
        }
        flat_rew = rew.reshape(n, -1)
        for i, name in enumerate(self.spec.properties):
            metrics[f"reward/{name}"] = jnp.mean(flat_rew[:, i])
            metrics[f"r_ref/{name}"] = jnp.mean(r_ref[:, i])
        return Rollout(prompts, flat, fmask, jax.lax.stop_gradient(logp), logp0 * fmask, kl,
                       values, u, flat_rew, r_ref, metrics)

    def _rollout(self, state: RLState, frozen: Frozen, batch, kl_coef):
        self.traces["rollout"] += 1
        r_ref, table, filled, new = self._reference_phase(state, frozen, batch)
        tokens, mask = self._sample_phase(state, frozen, batch)
        ro = self._score_phase(state, frozen, batch, tokens, mask, r_ref, kl_coef)
        ro.metrics["reference_new"] = new.astype(jnp.float32)
        return state.replace(ref_table=table, ref_filled=filled), ro

    def _update(self, state: RLState, frozen: Frozen, ro: Rollout, kl_coef):
        self.traces["update"] += 1
        cfg = self.cfg
        _, _, update_key = self._keys(state)
        pgd, vgd = self.policy_graphdef, self.value_graphdef

        def new_logp(params, prompts, tokens, mask):
            model = _merge_params(pgd, params, frozen.policy_rest)
            return decoder_lib.response_log_probs(model, prompts, tokens, mask)

        metrics = {}
        if cfg.algorithm == "rloo":
            seq_kl = jnp.sum(ro.kl, axis=1)
            returns = (ro.utility - kl_coef * seq_kl).reshape(-1, cfg.num_samples)
            adv = losses.rloo_advantages(returns).reshape(-1)

            def loss_fn(params):
                lp = new_logp(params, ro.prompts, ro.tokens, ro.mask)
                return losses.rloo_loss(lp, ro.mask, adv)

            loss, grads = jax.value_and_grad(loss_fn)(state.policy)
            updates, popt = self.tx_policy.update(grads, state.policy_opt, state.policy)
            policy = optax.apply_updates(state.policy, updates)
            metrics.update(policy_loss=loss, grad_norm=optax.tree.norm(grads),
                           clip_fraction=jnp.zeros(()), value_loss=jnp.zeros(()),
                           value_clip_fraction=jnp.zeros(()),
                           advantage_std=jnp.std(adv))
            new_state = state.replace(step=state.step + 1, policy=policy, policy_opt=popt)
            return new_state, metrics

        if cfg.algorithm in GROUP_ALGORITHMS:
            return self._group_update(state, ro, kl_coef, new_logp, update_key)

        rewards_tok = losses.token_rewards(ro.utility, ro.kl, ro.mask, kl_coef)
        adv, ret = losses.gae(rewards_tok, ro.values, ro.mask, cfg.discount, cfg.gae_lambda)
        if cfg.whiten_advantages:
            adv = losses.whiten(adv, ro.mask)
        n = ro.tokens.shape[0]
        mb = n // cfg.num_minibatches
        iters = cfg.ppo_epochs * cfg.num_minibatches
        perms = jnp.stack([jax.random.permutation(jax.random.fold_in(update_key, e), n)
                           for e in range(cfg.ppo_epochs)])  # [E, N]
        order = perms.reshape(iters, mb)

        def policy_loss(params, idx):
            lp = new_logp(params, ro.prompts[idx], ro.tokens[idx], ro.mask[idx])
            return losses.ppo_policy_loss(lp, ro.logp[idx], adv[idx], ro.mask[idx], cfg.clip_eps)

        def value_loss(params, idx):
            vm = _merge_params(vgd, params, frozen.value_rest)
            v = vm(ro.prompts[idx], ro.tokens[idx]).astype(jnp.float32)
            return losses.ppo_value_loss(v, ro.values[idx], ret[idx], ro.mask[idx],
                                         cfg.value_clip_eps)

        def body(carry, idx):
            policy, popt, value, vopt = carry
            (pl, cf), pg = jax.value_and_grad(policy_loss, has_aux=True)(policy, idx)
            (vl, vcf), vg = jax.value_and_grad(value_loss, has_aux=True)(value, idx)
            pu, popt = self.tx_policy.update(pg, popt, policy)
            policy = optax.apply_updates(policy, pu)
            vu, vopt = self.tx_value.update(vg, vopt, value)
            value = optax.apply_updates(value, vu)
            out = jnp.stack([pl, cf, vl, vcf, optax.tree.norm(pg), optax.tree.norm(vg)])
            return (policy, popt, value, vopt), out

        carry = (state.policy, state.policy_opt, state.value, state.value_opt)
        (policy, popt, value, vopt), outs = jax.lax.scan(body, carry, order)
        means = jnp.mean(outs, axis=0)
        metrics.update(policy_loss=means[0], clip_fraction=means[1], value_loss=means[2],
                       value_clip_fraction=means[3], grad_norm=means[4],
                       value_grad_norm=means[5],
                       advantage_std=jnp.sqrt(losses.masked_mean(adv ** 2, ro.mask)))
        new_state = state.replace(step=state.step + 1, policy=policy, policy_opt=popt,
                                  value=value, value_opt=vopt)
        return new_state, metrics

    def _group_update(self, state: RLState, ro: Rollout, kl_coef, new_logp, update_key):
        """GRPO / Dr. GRPO: group advantages of the returns (:mod:`lsc.align.advantages`), then
        ``ppo_epochs`` passes of ``num_minibatches`` clipped updates of the policy; the KL to
        ``pi0`` in the return (``kl_penalty='reward'``) or as a ``k3`` loss term ('loss')."""
        cfg = self.cfg
        length_norm = advantages_lib.LENGTH_NORMALISED[cfg.algorithm]
        in_loss = cfg.kl_penalty == "loss"
        seq_kl = jnp.sum(ro.kl, axis=1)
        returns = ro.utility if in_loss else ro.utility - kl_coef * seq_kl
        grouped = returns.reshape(-1, cfg.num_samples)
        adv = advantages_lib.group_advantages(cfg.algorithm, grouped).reshape(-1)
        n = ro.tokens.shape[0]
        mb = n // cfg.num_minibatches
        iters = cfg.ppo_epochs * cfg.num_minibatches
        perms = jnp.stack([jax.random.permutation(jax.random.fold_in(update_key, e), n)
                           for e in range(cfg.ppo_epochs)])
        order = perms.reshape(iters, mb)

        def loss_fn(params, idx):
            lp = new_logp(params, ro.prompts[idx], ro.tokens[idx], ro.mask[idx])
            pl, frac = advantages_lib.policy_loss(lp, ro.logp[idx], adv[idx], ro.mask[idx],
                                                  cfg.clip_eps, length_norm)
            kl = advantages_lib.kl_loss(lp, ro.logp0[idx], ro.mask[idx], length_norm)
            total = pl + kl_coef * kl if in_loss else pl
            return total, (pl, frac, kl)

        def body(carry, idx):
            policy, popt = carry
            (_, (pl, frac, kl)), g = jax.value_and_grad(loss_fn, has_aux=True)(policy, idx)
            updates, popt = self.tx_policy.update(g, popt, policy)
            policy = optax.apply_updates(policy, updates)
            return (policy, popt), jnp.stack([pl, frac, kl, optax.tree.norm(g)])

        (policy, popt), outs = jax.lax.scan(body, (state.policy, state.policy_opt), order)
        means = jnp.mean(outs, axis=0)
        stats = advantages_lib.group_stats(grouped)
        metrics = dict(policy_loss=means[0], clip_fraction=means[1], kl_loss=means[2],
                       grad_norm=means[3], value_loss=jnp.zeros(()),
                       value_clip_fraction=jnp.zeros(()), advantage_std=jnp.std(adv),
                       group_std=stats["group_std"], zero_std_fraction=stats["zero_std_fraction"])
        return state.replace(step=state.step + 1, policy=policy, policy_opt=popt), metrics

    # ------------------------------------------------------------------------------ jitting

    def _rollout_shardings(self, ro_shape):
        def one(x):
            return partitioning.batch_sharding(x, self.mesh) if getattr(x, "ndim", 0) else \
                self.replicated
        return jax.tree.map(one, ro_shape)

    def _build(self, batch):
        self.batch_shardings = train_loop.global_batch_shardings(batch, self.mesh)
        st_sh, fr_sh, b_sh, rep = (self.state_shardings, self.frozen_shardings,
                                   self.batch_shardings, self.replicated)
        state_abs = jax.eval_shape(self.init_state)
        batch_abs = train_loop.global_shapes(batch)
        kl_abs = jax.ShapeDtypeStruct((), jnp.float32)
        traces = dict(self.traces)
        _, ro_abs = jax.eval_shape(self._rollout, state_abs, self.frozen, batch_abs, kl_abs)
        self.traces = traces  # shape inference is not a compilation
        ro_sh = self._rollout_shardings(ro_abs)
        self._rollout_jit = jax.jit(self._rollout, in_shardings=(st_sh, fr_sh, b_sh, rep),
                                    out_shardings=(st_sh, ro_sh))
        self._update_jit = jax.jit(self._update, in_shardings=(st_sh, fr_sh, ro_sh, rep),
                                   out_shardings=(st_sh, rep), donate_argnums=(0,))
        if self.cfg.time_phases:
            b, k, r = batch_abs["prompt"].shape[0], self.cfg.num_samples, self.response_len
            tok_sh = partitioning.batch_sharding(
                jax.ShapeDtypeStruct((b, k, r), jnp.int32), self.mesh)
            ref_fn = lambda s, f, bt: self._reference_phase(s, f, bt)  # noqa: E731

            def score_fn(s, f, bt, tokens, mask, r_ref, kl_coef, new):
                ro = self._score_phase(s, f, bt, tokens, mask, r_ref, kl_coef)
                ro.metrics["reference_new"] = new.astype(jnp.float32)
                return ro

            self._phase_jits = {
                "reference": jax.jit(ref_fn, in_shardings=(st_sh, fr_sh, b_sh),
                                     out_shardings=(partitioning.batch_sharding(
                                         jax.ShapeDtypeStruct((b, 1), jnp.float32), self.mesh),
                                         rep, rep, rep)),
                "sample": jax.jit(self._sample_phase, in_shardings=(st_sh, fr_sh, b_sh),
                                  out_shardings=(tok_sh, tok_sh)),
                "score": jax.jit(score_fn, in_shardings=(st_sh, fr_sh, b_sh, tok_sh, tok_sh,
                                                         None, rep, rep),
                                 out_shardings=ro_sh),
            }

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
        return _merge_params(self.policy_graphdef, state.policy, self.frozen.policy_rest)


def _policy_full_state(graphdef, params, rest):
    """``(graphdef, state)`` of the full policy for the sampler."""
    model = _merge_params(graphdef, params, rest)
    return nnx.split(model)


@dataclasses.dataclass
class RLResult:
    """What :func:`train_rlhf` returns."""

    state: RLState
    trainer: RLTrainer
    step: int
    preempted: bool
    summary: dict


class _SlotBatches:
    """Prompt batches with their cache slots added (``slot int32[B]``); checkpointable."""

    def __init__(self, it: pipeline.BatchIterator, slots: reference_lib.PromptSlots):
        self.it, self.slots = it, slots

    def __next__(self):
        b = next(self.it)
        return {"prompt": b["prompt"], "slot": self.slots(b["prompt_id"])}

    def get_state(self):
        return self.it.get_state()

    def set_state(self, s):
        self.it.set_state(s)


def make_trainer(spec: utility_lib.UtilitySpec, cfg: RLConfig, models: Models, num_prompts: int,
                 response_len: int, policy_optim: Mapping | None, value_optim: Mapping | None,
                 mesh: Mesh, rules=partitioning.DEFAULT_RULES, *, seed: int = 0,
                 fixed_tokens: Optional[np.ndarray] = None,
                 reference: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> RLTrainer:
    """The :class:`RLTrainer` of :func:`train_rlhf` (optimisers scheduled over
    ``cfg.num_steps * cfg.updates_per_step`` updates; references only looked up when
    ``reference`` is complete); ``seed`` initialises the value head."""
    total_updates = cfg.num_steps * cfg.updates_per_step
    tx_p = optim.make_optimizer(policy_optim, total_updates)
    tx_v = optim.make_optimizer(value_optim, total_updates)
    complete = reference is not None and bool(np.all(np.asarray(reference[1])))
    return RLTrainer(spec, cfg, models, tx_p, tx_v, mesh, rules, num_prompts=num_prompts,
                     response_len=response_len, fixed_tokens=fixed_tokens, seed=seed,
                     reference_lookup_only=complete)


def train_rlhf(*, workdir: str, spec: utility_lib.UtilitySpec, rl_config: RLConfig,
               models: Models, prompts: pipeline.TokenizedData, response_len: int,
               policy_optim: Mapping | None, value_optim: Mapping | None, mesh: Mesh,
               rules=partitioning.DEFAULT_RULES, seed: int = 0,
               fixed_tokens: Optional[np.ndarray] = None,
               reference: Optional[Tuple[np.ndarray, np.ndarray]] = None,
               trainer: Optional[RLTrainer] = None) -> RLResult:
    """Runs RLHF to ``rl_config.num_steps`` (resuming from ``<workdir>/checkpoints``).

    Args:
      workdir: output directory (``checkpoints/``, ``tensorboard/``, ``summary.json``,
        ``reference_cache.json``, ``model/`` with the final policy).
      spec: the utility; rl_config: :class:`RLConfig`; models: :class:`Models`.
      prompts: the alignment prompt table (kind 'prompts', with ``prompt_id``).
      response_len: ``R``.
      policy_optim, value_optim: :mod:`lsc.train.optim` fields of the two optimisers (their
        schedules count optimiser updates: ``rl_config.updates_per_step`` per RL step).
      mesh, rules: device mesh and logical-axis rules; seed: the run's seed (``rl.seed``).
      fixed_tokens: ``int32[m, R0]`` fixed responses of fixed_response references.
      reference: the reference cache a fresh run starts from (:meth:`RLTrainer.init_state`);
        ignored when resuming (the checkpoint holds the cache). A complete one (every prompt
        filled, e.g. :mod:`lsc.align.reference_bank`) is only looked up.
      trainer: a trainer of an earlier run of the same job (same utility, ``rl_config`` up to
        ``kl_coef``, models and prompts) to reuse with its compiled steps; None builds one
        (:func:`make_trainer`).

    Returns:
      :class:`RLResult`.
    """
    cfg = rl_config
    os.makedirs(workdir, exist_ok=True)
    slots = reference_lib.PromptSlots(prompts.arrays["prompt_id"])
    if trainer is None:
        trainer = make_trainer(spec, cfg, models, len(slots), response_len, policy_optim,
                               value_optim, mesh, rules, seed=seed, fixed_tokens=fixed_tokens,
                               reference=reference)
    data = _SlotBatches(train_common.train_iterator(prompts, cfg.batch_size, seed), slots)
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=cfg.keep_checkpoints)
    state = trainer.init_state(reference, seed=seed)
    mstate = metrics_lib.MetricsState()
    latest = ckpt.latest_step()
    start = 0
    if latest is not None:
        state, data_state, mjson = ckpt.restore(latest, checkpoint_lib.abstract_like(state))
        data.set_state(data_state)
        mstate = metrics_lib.MetricsState.from_json(mjson)
        start = int(jax.device_get(state.step))
        if start != latest:
            raise ValueError(f"checkpoint {latest} holds step {start}; {ckpt.directory} is "
                             "inconsistent")
        logging.info("resuming from step %d", start)
    if start > cfg.num_steps:
        raise ValueError(f"{workdir}: checkpoint step {start} is beyond rl.num_steps="
                         f"{cfg.num_steps}")
    is_chief = jax.process_index() == 0
    writer = metrics_lib.MetricsWriter(os.path.join(workdir, "tensorboard"),
                                       purge_step=start + 1 if start else None, enabled=is_chief)
    last_saved = latest
    preempted = False
    step = start

    def save(at):
        nonlocal last_saved
        if at != last_saved:
            ckpt.save(at, state, data.get_state(), mstate.to_json())
            last_saved = at

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.num_steps, initial=start, unit="step", dynamic_ncols=True,
               file=sys.stderr, disable=not (cfg.progress and is_chief), desc="rlhf",
               **progress_lib.inner_bar_kwargs())
    try:
        with runtime.Preemption() as preemption:
            stop = distributed.any_process(preemption.requested)
            while step < cfg.num_steps and not stop:
                batch = next(data)
                timings: Dict[str, float] = {}
                state, host = trainer.step(state, batch, cfg.kl_coef, timings)
                step += 1
                for name in ("policy_loss", "value_loss", "utility"):
                    if not math.isfinite(host[name]):
                        raise train_loop.NonFiniteLossError(step, host[name], last_saved,
                                                            ckpt.directory)
                mstate.add(host)
                writer.scalars(step, timings, "time")
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.num_steps:
                    means = mstate.flush(step)
                    writer.scalars(step, means, "train")
                    logging.info("step %d: utility %.4f kl %.4f entropy %.3f len %.2f | %s", step,
                                 means["utility"], means["kl"], means["entropy"],
                                 means["response_length"],
                                 " ".join(f"{k}={v * 1e3:.1f}ms" for k, v in timings.items()))
                if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    export_snapshot(workdir, trainer, state, step)
                stop = distributed.any_process(preemption.requested)
                if step % cfg.save_every == 0 or step == cfg.num_steps or stop:
                    save(step)
            if stop and step < cfg.num_steps:
                preempted = True
                save(step)
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    logging.info("compilations: %s", trainer.traces)
    if preempted:
        return RLResult(state, trainer, step, True, {})
    table, filled = jax.device_get((state.ref_table, state.ref_filled))
    if is_chief:
        reference_lib.write_cache(os.path.join(workdir, "reference_cache.json"), slots, table,
                                  filled, spec.properties)
    summary = {"step": step, "kl_coef": cfg.kl_coef, "algorithm": cfg.algorithm,
               "method": spec.method, "properties": list(spec.properties),
               "train": dict(mstate.history["train"][-1]) if mstate.history["train"] else {},
               "history": mstate.history,
               "reference_prompts_cached": int(np.sum(filled))}
    _, _, rest = nnx.split(trainer.policy_model(state), nnx.Param, ...)
    checkpoint_lib.export_model(workdir, state.policy, rest)
    if is_chief:
        runtime.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    return RLResult(state, trainer, step, False, summary)


SNAPSHOT_DIR = "snapshots"


def snapshot_dir(workdir: str, step: int) -> str:
    """Where :func:`export_snapshot` puts the policy of ``step`` (a workdir for
    ``lsc.train.checkpoint.load_model``)."""
    return os.path.join(workdir, SNAPSHOT_DIR, str(int(step)))


def snapshot_steps(workdir: str) -> List[int]:
    """The steps with an exported policy snapshot, ascending."""
    root = os.path.join(workdir, SNAPSHOT_DIR)
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root)
                  if d.isdigit() and os.path.isdir(os.path.join(root, d, checkpoint_lib.MODEL_DIR)))


def export_snapshot(workdir: str, trainer: "RLTrainer", state: RLState, step: int) -> str:
    """Exports the policy of ``state`` to :func:`snapshot_dir` (replacing an earlier export of
    the same step, e.g. after a restart)."""
    _, _, rest = nnx.split(trainer.policy_model(state), nnx.Param, ...)
    return checkpoint_lib.export_model(snapshot_dir(workdir, step), state.policy, rest)


def gold_evaluation(policy: nnx.Module, pi0: nnx.Module, tok, prompts: np.ndarray,
                    texts: Sequence[str], properties: Sequence[str], *, response_len: int,
                    seed: int, batch_size: int = 50) -> Dict[str, Any]:
    """Gold scores (the synthetic world's judges) of one sample per prompt from ``policy`` and
    from ``pi0``: per property the two means and the win rate of the policy (ties count 1/2),
    plus the "AND" and "OR" win rates: the minimum and the maximum over properties of the
    per-property outcome (1 win, 1/2 tie, 0 loss), as ``lsc.eval.win_rate`` defines them (ties are
    common for the discrete harmlessness score). A quick look for a standalone ``rlhf`` job; the
    reproduction judges with ``lsc.eval`` (bootstrap CIs, independent base samples)."""
    from lsc.data import synthetic

    props = [p for p in properties if p in synthetic.GOLD_SCORERS] or ["helpful", "harmless"]
    key = jax.random.key(seed)
    out: Dict[str, Any] = {"num_prompts": len(texts)}
    samples = {}
    for name, model in (("policy", policy), ("pi0", pi0)):
        gd, st = nnx.split(model)
        chunks = []
        for i, real, chunk in pipeline.padded_batches(prompts, batch_size):
            res = sampling.sample(gd, st, jnp.asarray(chunk), jax.random.fold_in(key, i),
                                  max_new_tokens=response_len, num_samples=1)
            chunks.append(np.asarray(res.tokens[:real, 0]))
        samples[name] = common.decode(tok, np.concatenate(chunks))
    outcomes = []
    for p in props:
        a = synthetic.gold_scores(texts, samples["policy"], p)
        b = synthetic.gold_scores(texts, samples["pi0"], p)
        o = (a > b) + 0.5 * (a == b)
        out[p] = {"policy": float(a.mean()), "pi0": float(b.mean()), "win_rate": float(o.mean())}
        outcomes.append(o)
    out["and_win_rate"] = float(np.mean(np.min(outcomes, axis=0)))
    out["or_win_rate"] = float(np.mean(np.max(outcomes, axis=0)))
    out["examples"] = [{"prompt": t, "policy": sp, "pi0": s0} for t, sp, s0 in
                       list(zip(texts, samples["policy"], samples["pi0"]))[:5]]
    return out


def kl_coefs(config: ml_collections.ConfigDict) -> list:
    """``config.rl.kl_coef`` as a list (a tuple is a sweep)."""
    v = config.rl.kl_coef
    return [float(x) for x in v] if isinstance(v, (tuple, list)) else [float(v)]


def rl_seeds(config: ml_collections.ConfigDict) -> list:
    """``config.rl.seed`` as a list (a tuple runs one training per seed; absent: ``[config.seed]``,
    the behaviour of configs written before ``rl.seed`` existed)."""
    v = config.rl.get("seed", None)
    if v is None:
        v = config.get("seed", 0)
    return [int(x) for x in v] if isinstance(v, (tuple, list)) else [int(v)]


def gamma_workdir(workdir: str, gamma: float, gammas: Sequence[float]) -> str:
    """The directory of the run with ``kl_coef = gamma`` of the sweep ``gammas``: ``workdir``
    itself for a single value, else ``<workdir>/kl_<gamma>``."""
    return workdir if len(gammas) == 1 else os.path.join(workdir, f"kl_{gamma:g}")


def run_workdir(workdir: str, seed: int, gamma: float, seeds: Sequence[int],
                gammas: Sequence[float]) -> str:
    """The directory of the run (``rl.seed = seed``, ``kl_coef = gamma``) of a job sweeping
    ``seeds`` x ``gammas``: ``<workdir>[/seed_<seed>][/kl_<gamma>]``, each level only when that
    sweep has several values."""
    base = workdir if len(seeds) == 1 else os.path.join(workdir, f"seed_{int(seed)}")
    return gamma_workdir(base, gamma, gammas)


def reference_table(config: ml_collections.ConfigDict, spec: utility_lib.UtilitySpec,
                    models: Models, prompts: np.ndarray, fixed: np.ndarray
                    ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The reference bank of a job (:mod:`lsc.align.reference_bank`): ``(float32[N, m],
    bool[N])`` for :func:`train_rlhf`'s ``reference``, or None when the utility uses no
    reference or ``rl.reference_bank`` is off. Quantile sources read
    ``config.rewards.reference_samples`` when set, else draw from ``pi0`` with a key of
    ``config.seed`` (not ``rl.seed``: every run of the job sees the same references)."""
    if not spec.uses_reference or not bool(config.rl.get("reference_bank", True)):
        return None
    r_len = int(config.data.response_len)
    temperature = float(config.rl.get("temperature", 1.0))
    path = config.rewards.get("reference_samples", "") or ""
    k = reference_lib.quantile_samples(spec)
    samples = (reference_bank.read_samples(path, prompts, num_samples=k, response_len=r_len,
                                           temperature=temperature) if path and k else None)
    start = time.perf_counter()
    table = reference_bank.compute(
        spec, models.pi0, models.reward_models, prompts, response_len=r_len,
        temperature=temperature, key=jax.random.fold_in(jax.random.key(int(config.seed)), 11),
        samples=samples, fixed_tokens=fixed, predictors=models.predictors,
        predictor_fns=models.predictor_fns)
    logging.info("reference bank: %d prompts x %d properties in %.1fs (%s); mean %s",
                 table.shape[0], table.shape[1], time.perf_counter() - start,
                 f"samples of {path}" if samples is not None else "estimated here",
                 np.round(table.mean(axis=0), 4).tolist())
    return table, np.ones((table.shape[0],), bool)


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``rlhf`` job: one run per ``rl.seed`` x ``rl.kl_coef`` (tuples sweep; each run in
    :func:`run_workdir`). Every prompt's reference is computed once before the first run
    (:func:`reference_table`). Exit code 0, 1 (non-finite loss) or
    :data:`lsc.train.loop.PREEMPTED_EXIT_CODE`."""
    spec = utility_lib.spec_from_config(config.rewards)
    tok, table, _ = common.tokenizer_and_prompts(config, workdir, "train")
    r_len = int(config.data.response_len)
    models = Models(pi0=common.load_policy(config, tok.vocab_size),
                    reward_models=common.load_reward_models(config, spec, tok.vocab_size),
                    predictors=common.load_predictors(spec, tok.vocab_size))
    fixed = reference_lib.fixed_response_tokens(spec, tok, r_len)
    mesh, rules = train_common.make_mesh(config)
    gammas, seeds = kl_coefs(config), rl_seeds(config)
    results = {}
    reference = reference_table(config, spec, models, table.arrays["prompt"], fixed)
    # One trainer (compiled steps) per gamma, shared by the seeds (rebuilt per seed only when
    # references are estimated in the loop, whose cache flag it fixes); its value head is
    # initialised from the world seed, so a seed's run does not depend on the job's other seeds.
    trainers: Dict[float, RLTrainer] = {}
    for seed in seeds:
        # Without a bank the gamma runs of a seed share their cache: each starts from the
        # previous run's, so every prompt's reference is estimated once per seed.
        cache = reference
        for gamma in gammas:
            run_dir = run_workdir(workdir, seed, gamma, seeds, gammas)
            key = f"{gamma:g}" if len(seeds) == 1 else f"{seed}/{gamma:g}"
            cfg = RLConfig.from_mapping(config.rl, kl_coef=gamma)
            if gamma not in trainers or (reference is None and spec.uses_reference):
                trainers[gamma] = make_trainer(
                    spec, cfg, models, len(table.arrays["prompt_id"]), r_len,
                    config.rl.get("policy_optim"), config.rl.get("value_optim"), mesh, rules,
                    seed=int(config.seed), fixed_tokens=fixed, reference=cache)
            try:
                res = train_rlhf(workdir=run_dir, spec=spec, rl_config=cfg, models=models,
                                 prompts=table, response_len=r_len,
                                 policy_optim=config.rl.get("policy_optim"),
                                 value_optim=config.rl.get("value_optim"), mesh=mesh,
                                 rules=rules, seed=seed, fixed_tokens=fixed, reference=cache,
                                 trainer=trainers[gamma])
            except train_loop.NonFiniteLossError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            if res.preempted:
                return train_loop.PREEMPTED_EXIT_CODE
            if reference is None:
                cache = jax.device_get((res.state.ref_table, res.state.ref_filled))
            results[key] = dict(res.summary["train"])
            if config.data.source == "synthetic" and int(config.rl.get("gold_eval_prompts", 0)):
                _, test_table, test_texts = common.tokenizer_and_prompts(config, workdir, "test")
                n = min(int(config.rl.gold_eval_prompts), len(test_texts))
                gold = gold_evaluation(res.trainer.policy_model(res.state), models.pi0, tok,
                                       test_table.arrays["prompt"][:n], test_texts[:n],
                                       spec.properties, response_len=r_len,
                                       seed=int(config.seed) + 1)
                if jax.process_index() == 0:
                    runtime.write_json_atomic(os.path.join(run_dir, "gold.json"), gold)
                results[key]["gold"] = {k: v for k, v in gold.items() if k != "examples"}
                logging.info("gold evaluation (seed %d, gamma %g): %s", seed, gamma,
                             results[key]["gold"])
    if jax.process_index() == 0:
        single = len(gammas) == 1 and len(seeds) == 1
        runtime.write_json_atomic(
            os.path.join(workdir, "results.json" if single else "sweep.json"), results)
    return 0
