"""One rollout, as pure functions of ``(static, state, frozen, batch)``: reference rewards of
the prompt batch (looked up in the bank or estimated from ``pi0`` through the per-prompt cache,
:mod:`lsc.align.references`) -> ``k`` samples per prompt from the current policy -> every reward
model's score -> the reward pipeline (:mod:`lsc.align.utility`) -> log-probabilities under the
policy and ``pi0``, per-token KL estimates, the value head's values (PPO).

:func:`rollout` fuses the three phases; :class:`lsc.align.rlhf.trainer.RLTrainer` also jits them
separately to time them (``rl.time_phases``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lsc.align import losses
from lsc.align import references as reference_lib
from lsc.align import reward_pipeline
from lsc.align import utility as utility_lib
from lsc.align.rlhf.state import Frozen, RLState, Rollout, Static, merge_params, policy_full_state
from lsc.models import decoder as decoder_lib
from lsc.models import sampling


def keys(state: RLState):
    """The step's three keys: (reference, sample, update)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)



def reference_phase(st: Static, state: RLState, frozen: Frozen, batch):
    """``(r_ref [B, m], ref_table, ref_filled, new)``."""
    st.on_trace("reference")
    ref_key, _, _ = keys(state)
    prompts = batch["prompt"]
    b = prompts.shape[0]
    m = st.spec.num_properties
    if not st.spec.uses_reference:
        return (jnp.zeros((b, m), jnp.float32), state.ref_table, state.ref_filled,
                jnp.zeros((), jnp.int32))
    if st.reference_lookup_only:  # a complete bank: nothing is estimated in the loop
        return (state.ref_table[batch["slot"]], state.ref_table, state.ref_filled,
                jnp.zeros((), jnp.int32))

    def estimate(p, key):
        return reference_lib.estimate_reference(
            st.spec, st.pi0_graphdef, frozen.pi0, st.rm_graphdefs, frozen.rms, p, key,
            max_new_tokens=st.response_len, temperature=st.cfg.temperature,
            fixed_tokens=frozen.fixed_tokens, predictor_graphdefs=st.predictor_graphdefs,
            predictor_states=frozen.predictors, predictor_fns=st.predictor_fns).r_ref

    if st.cfg.reference_cache:
        return reference_lib.cached_reference(estimate, state.ref_table, state.ref_filled,
                                              batch["slot"], prompts, ref_key)
    return (estimate(prompts, ref_key), state.ref_table, state.ref_filled,
            jnp.asarray(b, jnp.int32))



def sample_phase(st: Static, state: RLState, frozen: Frozen, batch):
    """``(tokens int32[B, k, R], mask bool[B, k, R])`` from the current policy."""
    st.on_trace("sample")
    _, sample_key, _ = keys(state)
    gd, full = policy_full_state(st.policy_graphdef, state.policy, frozen.policy_rest)
    out = sampling.sample(gd, full, batch["prompt"], sample_key,
                          max_new_tokens=st.response_len, num_samples=st.cfg.num_samples,
                          temperature=st.cfg.temperature)
    return out.tokens, out.mask



def score_phase(st: Static, state: RLState, frozen: Frozen, batch, tokens, mask, r_ref,
                 kl_coef) -> Rollout:
    st.on_trace("score")
    b, k, r = tokens.shape
    n = b * k
    prompts = jnp.repeat(batch["prompt"], k, axis=0)
    flat = tokens.reshape(n, r)
    fmask = mask.reshape(n, r).astype(jnp.float32)
    rew = reference_lib.score_samples(st.rm_graphdefs, frozen.rms, batch["prompt"], tokens)
    # The reward pipeline's named stages (transform -> aggregate). For ``gdpo`` and stage strings
    # they are the utility; the other methods keep :func:`utility.utility`'s own code (the same
    # values, tested), and their stages are only logged.
    stages = reward_pipeline.apply(
        reward_pipeline.from_method(st.spec.method, st.spec.weights, st.spec.clip),
        rew, r_ref[:, None, :])
    if st.spec.pipeline is not None:
        u = stages.utility.reshape(n)
    else:
        u = utility_lib.utility(st.spec, rew, r_ref[:, None, :]).reshape(n)
    policy = merge_params(st.policy_graphdef, state.policy, frozen.policy_rest)
    logits = decoder_lib.response_logits(policy, prompts, flat)
    logp = decoder_lib.token_log_probs(logits, flat) * fmask
    pi0 = nnx.merge(st.pi0_graphdef, frozen.pi0)
    logp0 = decoder_lib.response_log_probs(pi0, prompts, flat, fmask)
    kl = losses.kl_estimate(logp, logp0, st.cfg.kl_estimator) * fmask
    kl1 = jnp.sum(losses.kl_estimate(logp, logp0, "k1") * fmask, axis=1)
    kl3 = jnp.sum(losses.kl_estimate(logp, logp0, "k3") * fmask, axis=1)
    if st.value_graphdef is not None:
        vm = merge_params(st.value_graphdef, state.value, frozen.value_rest)
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
    for i, name in enumerate(st.spec.properties):
        metrics[f"reward/{name}"] = jnp.mean(flat_rew[:, i])
        metrics[f"r_ref/{name}"] = jnp.mean(r_ref[:, i])
    # The transformed reward per property, before aggregation.
    for i, name in enumerate(st.spec.properties):
        metrics[f"transformed/{name}"] = jnp.mean(stages.transformed[..., i])
    return Rollout(prompts, flat, fmask, jax.lax.stop_gradient(logp), logp0 * fmask, kl,
                   values, u, flat_rew, r_ref, metrics)



def rollout(st: Static, state: RLState, frozen: Frozen, batch, kl_coef):
    st.on_trace("rollout")
    r_ref, table, filled, new = reference_phase(st, state, frozen, batch)
    tokens, mask = sample_phase(st, state, frozen, batch)
    ro = score_phase(st, state, frozen, batch, tokens, mask, r_ref, kl_coef)
    ro.metrics["reference_new"] = new.astype(jnp.float32)
    return state.replace(ref_table=table, ref_filled=filled), ro
