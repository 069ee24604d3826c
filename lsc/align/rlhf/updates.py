"""The policy updates of one RL step, registered by ``rl.algorithm`` in :data:`UPDATES`; each
is a pure function ``(static, state, frozen, rollout, kl_coef, new_logp, key) -> (state,
metrics)`` that :class:`lsc.align.rlhf.trainer.RLTrainer` jits once.

* ``ppo`` (:func:`gae_update`): per-token rewards ``-gamma * kl_t`` plus the utility at the last
  token, GAE advantages (optionally whitened), then ``ppo_epochs`` passes over
  ``num_minibatches`` shuffled mini-batches (a ``lax.scan``) of the clipped policy loss (policy
  optimiser) and the clipped value loss (value optimiser);
* ``rloo`` (:func:`rloo_update`): sequence returns ``u - gamma * sum_t kl_t``, leave-one-out
  advantages over the ``k >= 2`` samples of each prompt, one REINFORCE step;
* ``grpo`` / ``dr_grpo`` (:func:`group_update`): group advantages of the same returns, then
  ``ppo_epochs`` x ``num_minibatches`` clipped policy updates (no value head), normalised per
  sequence length (GRPO) or by a constant (Dr. GRPO), or as ``rl.loss_reduction`` says
  (:attr:`lsc.align.rlhf.config.GroupConfig.reduction`); with
  ``kl_penalty='loss'`` the KL leaves the return and enters the loss as ``gamma`` times the
  ``k3`` KL to ``pi0``.

Every update obtains its advantages from the estimator registry,
``lsc.align.advantages.ESTIMATORS[cfg.estimator]`` (``gae`` for PPO, else the algorithm's name);
the losses are :mod:`lsc.align.losses`. Every update logs the advantage statistics
``advantage_mean``, ``advantage_std`` and ``advantage_abs_mean`` (over the rollout's sequences;
PPO over its tokens).
"""

from __future__ import annotations

from typing import Callable, Dict

import jax
import jax.numpy as jnp
import optax

from lsc.align import advantages as advantages_lib
from lsc.align import losses
from lsc.align.rlhf.state import Frozen, RLState, Rollout, Static, merge_params
from lsc.align.rlhf.rollout import keys
from lsc.models import decoder as decoder_lib


def _minibatch_order(key, n: int, epochs: int, num_minibatches: int):
    """``int32[epochs * num_minibatches, n // num_minibatches]``: one permutation per epoch."""
    perms = jnp.stack([jax.random.permutation(jax.random.fold_in(key, e), n)
                       for e in range(epochs)])  # [E, N]
    return perms.reshape(epochs * num_minibatches, n // num_minibatches)


def _advantage_stats(adv, mask=None) -> Dict[str, jax.Array]:
    """``advantage_mean``, ``advantage_std`` and ``advantage_abs_mean`` of sequence advantages
    ``[N]`` or, with ``mask [N, R]``, of token advantages (PPO: the std is the root mean square
    of the whitened advantages, as before)."""
    if mask is None:
        return {"advantage_mean": jnp.mean(adv), "advantage_std": jnp.std(adv),
                "advantage_abs_mean": jnp.mean(jnp.abs(adv))}
    return {"advantage_mean": losses.masked_mean(adv, mask),
            "advantage_std": jnp.sqrt(losses.masked_mean(adv ** 2, mask)),
            "advantage_abs_mean": losses.masked_mean(jnp.abs(adv), mask)}


def rloo_update(st: Static, state: RLState, frozen: Frozen, ro: Rollout, kl_coef, new_logp,
                update_key):
    """RLOO: leave-one-out advantages of the sequence returns, one REINFORCE step."""
    cfg = st.cfg
    metrics = {}
    seq_kl = jnp.sum(ro.kl, axis=1)
    returns = (ro.utility - kl_coef * seq_kl).reshape(-1, cfg.num_samples)
    adv = advantages_lib.group_advantages(cfg.estimator, returns).reshape(-1)

    def loss_fn(params):
        lp = new_logp(params, ro.prompts, ro.tokens, ro.mask)
        return losses.rloo_loss(lp, ro.mask, adv)

    loss, grads = jax.value_and_grad(loss_fn)(state.policy)
    updates, popt = st.tx_policy.update(grads, state.policy_opt, state.policy)
    policy = optax.apply_updates(state.policy, updates)
    metrics.update(policy_loss=loss, grad_norm=optax.tree.norm(grads),
                   clip_fraction=jnp.zeros(()), value_loss=jnp.zeros(()),
                   value_clip_fraction=jnp.zeros(()), **_advantage_stats(adv))
    new_state = state.replace(step=state.step + 1, policy=policy, policy_opt=popt)
    return new_state, metrics


def gae_update(st: Static, state: RLState, frozen: Frozen, ro: Rollout, kl_coef, new_logp,
               update_key):
    """PPO with a value head: GAE advantages, clipped policy and value losses."""
    cfg = st.cfg
    vgd = st.value_graphdef
    metrics = {}
    rewards_tok = advantages_lib.token_rewards(ro.utility, ro.kl, ro.mask, kl_coef)
    adv, ret = advantages_lib.ESTIMATORS[cfg.estimator](rewards_tok, ro.values, ro.mask,
                                                        cfg.discount, cfg.gae_lambda)
    if cfg.whiten_advantages:
        adv = advantages_lib.whiten(adv, ro.mask)
    order = _minibatch_order(update_key, ro.tokens.shape[0], cfg.ppo_epochs, cfg.num_minibatches)

    def policy_loss(params, idx):
        lp = new_logp(params, ro.prompts[idx], ro.tokens[idx], ro.mask[idx])
        return losses.ppo_policy_loss(lp, ro.logp[idx], adv[idx], ro.mask[idx], cfg.clip_eps)

    def value_loss(params, idx):
        vm = merge_params(vgd, params, frozen.value_rest)
        v = vm(ro.prompts[idx], ro.tokens[idx]).astype(jnp.float32)
        return losses.ppo_value_loss(v, ro.values[idx], ret[idx], ro.mask[idx],
                                     cfg.value_clip_eps)

    def body(carry, idx):
        policy, popt, value, vopt = carry
        (pl, cf), pg = jax.value_and_grad(policy_loss, has_aux=True)(policy, idx)
        (vl, vcf), vg = jax.value_and_grad(value_loss, has_aux=True)(value, idx)
        pu, popt = st.tx_policy.update(pg, popt, policy)
        policy = optax.apply_updates(policy, pu)
        vu, vopt = st.tx_value.update(vg, vopt, value)
        value = optax.apply_updates(value, vu)
        out = jnp.stack([pl, cf, vl, vcf, optax.tree.norm(pg), optax.tree.norm(vg)])
        return (policy, popt, value, vopt), out

    carry = (state.policy, state.policy_opt, state.value, state.value_opt)
    (policy, popt, value, vopt), outs = jax.lax.scan(body, carry, order)
    means = jnp.mean(outs, axis=0)
    metrics.update(policy_loss=means[0], clip_fraction=means[1], value_loss=means[2],
                   value_clip_fraction=means[3], grad_norm=means[4],
                   value_grad_norm=means[5], **_advantage_stats(adv, ro.mask))
    new_state = state.replace(step=state.step + 1, policy=policy, policy_opt=popt,
                              value=value, value_opt=vopt)
    return new_state, metrics


def group_update(st: Static, state: RLState, frozen: Frozen, ro: Rollout, kl_coef, new_logp,
                 update_key):
    """GRPO / Dr. GRPO: group advantages of the returns (:mod:`lsc.align.advantages`), then
    ``ppo_epochs`` passes of ``num_minibatches`` clipped updates of the policy, their per-token
    losses reduced by ``cfg.reduction`` (``rl.loss_reduction``, else the algorithm's own); the
    KL to ``pi0`` in the return (``kl_penalty='reward'``) or as a ``k3``
    loss term ('loss')."""
    cfg = st.cfg
    reduction = cfg.reduction
    in_loss = cfg.kl_penalty == "loss"
    seq_kl = jnp.sum(ro.kl, axis=1)
    returns = ro.utility if in_loss else ro.utility - kl_coef * seq_kl
    grouped = returns.reshape(-1, cfg.num_samples)
    adv = advantages_lib.group_advantages(cfg.estimator, grouped).reshape(-1)
    order = _minibatch_order(update_key, ro.tokens.shape[0], cfg.ppo_epochs, cfg.num_minibatches)

    def loss_fn(params, idx):
        lp = new_logp(params, ro.prompts[idx], ro.tokens[idx], ro.mask[idx])
        pl, frac = losses.ppo_policy_loss(lp, ro.logp[idx], adv[idx], ro.mask[idx],
                                          cfg.clip_eps, reduction)
        kl = losses.kl_loss(lp, ro.logp0[idx], ro.mask[idx], reduction)
        total = pl + kl_coef * kl if in_loss else pl
        return total, (pl, frac, kl)

    def body(carry, idx):
        policy, popt = carry
        (_, (pl, frac, kl)), g = jax.value_and_grad(loss_fn, has_aux=True)(policy, idx)
        updates, popt = st.tx_policy.update(g, popt, policy)
        policy = optax.apply_updates(policy, updates)
        return (policy, popt), jnp.stack([pl, frac, kl, optax.tree.norm(g)])

    (policy, popt), outs = jax.lax.scan(body, (state.policy, state.policy_opt), order)
    means = jnp.mean(outs, axis=0)
    stats = advantages_lib.group_stats(grouped)
    metrics = dict(policy_loss=means[0], clip_fraction=means[1], kl_loss=means[2],
                   grad_norm=means[3], value_loss=jnp.zeros(()),
                   value_clip_fraction=jnp.zeros(()), **_advantage_stats(adv),
                   group_std=stats["group_std"], zero_std_fraction=stats["zero_std_fraction"])
    return state.replace(step=state.step + 1, policy=policy, policy_opt=popt), metrics


UpdateFn = Callable[..., tuple]
UPDATES: Dict[str, UpdateFn] = {"ppo": gae_update, "rloo": rloo_update, "grpo": group_update,
                                "dr_grpo": group_update}
"""The update of each ``rl.algorithm``."""


def update(st: Static, state: RLState, frozen: Frozen, ro: Rollout, kl_coef):
    """The update of ``st.cfg.algorithm`` (:data:`UPDATES`): ``(state, metrics)``."""
    st.on_trace("update")
    _, _, update_key = keys(state)
    pgd = st.policy_graphdef

    def new_logp(params, prompts, tokens, mask):
        model = merge_params(pgd, params, frozen.policy_rest)
        return decoder_lib.response_log_probs(model, prompts, tokens, mask)

    return UPDATES[st.cfg.algorithm](st, state, frozen, ro, kl_coef, new_logp, update_key)
