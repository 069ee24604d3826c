"""``rl.loss_reduction``: the clipped group update (GRPO, Dr. GRPO) reduces its per-token losses
as the field says, whatever the advantage estimator; '' is the algorithm's own. Checked on one
update of a policy whose log-probabilities are its parameters, against a numpy computation of
the loss and of the SGD step (at ratio 1 the clipped surrogate's gradient is ``-A``)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lsc.align import rlhf
from lsc.align.rlhf import updates

B, K, R = 2, 3, 4  # prompts, group size, response budget
N = B * K
GAMMA = 0.1


def _rollout():
    rng = np.random.default_rng(0)
    lengths = np.array([4, 1, 3, 2, 4, 2])
    mask = (np.arange(R)[None, :] < lengths[:, None]).astype(np.float32)
    logp = (-rng.uniform(0.5, 2.0, (N, R)) * mask).astype(np.float32)
    kl = (rng.uniform(0.0, 0.3, (N, R)) * mask).astype(np.float32)
    utility = rng.normal(size=N).astype(np.float32)
    zeros = jnp.zeros((N, R), jnp.float32)
    ro = rlhf.Rollout(prompts=jnp.arange(N, dtype=jnp.int32)[:, None],
                      tokens=jnp.zeros((N, R), jnp.int32), mask=jnp.asarray(mask),
                      logp=jnp.asarray(logp), logp0=zeros, kl=jnp.asarray(kl), values=zeros,
                      utility=jnp.asarray(utility), rewards=jnp.zeros((N, 1)),
                      r_ref=jnp.zeros((B, 1)), metrics={})
    return ro, mask, logp, kl, utility


def _numpy_step(algorithm, reduction, mask, logp, kl, utility):
    """``(loss, new log-probabilities)`` of one SGD step (learning rate 1) in numpy."""
    returns = (utility.astype(np.float64) - GAMMA * kl.sum(axis=1)).reshape(B, K)
    adv = returns - returns.mean(axis=1, keepdims=True)
    if algorithm == "grpo":
        adv = adv / (returns.std(axis=1, ddof=1, keepdims=True) + 1e-6)
    adv = adv.reshape(N)
    per_token = -adv[:, None] * mask  # the surrogate at ratio 1, and its gradient
    weight = {"token": 1.0 / mask.sum() * np.ones((N, 1)),
              "sequence": 1.0 / (N * mask.sum(axis=1, keepdims=True)),
              "constant": 1.0 / (N * R) * np.ones((N, 1))}[reduction]
    return float(np.sum(per_token * weight)), logp - per_token * weight


@pytest.mark.parametrize("algorithm,loss_reduction,want", [
    ("grpo", "", "sequence"), ("grpo", "constant", "constant"), ("grpo", "token", "token"),
    ("dr_grpo", "", "constant"), ("dr_grpo", "sequence", "sequence")])
def test_group_update_reduces_by_rl_loss_reduction(algorithm, loss_reduction, want):
    cfg = rlhf.rl_config(num_steps=1, batch_size=B, algorithm=algorithm, num_samples=K,
                         loss_reduction=loss_reduction)
    assert cfg.reduction == want
    tx = optax.sgd(1.0)
    ro, mask, logp, kl, utility = _rollout()
    params = {"w": jnp.asarray(logp)}
    state = rlhf.RLState(step=jnp.zeros((), jnp.int32), policy=params,
                         policy_opt=tx.init(params), value=None, value_opt=None,
                         rng=jax.random.PRNGKey(0), ref_table=None, ref_filled=None)
    st = types.SimpleNamespace(cfg=cfg, tx_policy=tx)

    def new_logp(p, prompts, tokens, m):
        return p["w"][prompts[:, 0]]

    new, metrics = updates.group_update(st, state, None, ro, GAMMA, new_logp,
                                        jax.random.PRNGKey(1))
    loss, want_logp = _numpy_step(algorithm, want, mask, logp, kl, utility)
    np.testing.assert_allclose(float(metrics["policy_loss"]), loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(new.policy["w"]), want_logp, rtol=1e-5, atol=1e-6)


def test_loss_reduction_is_checked_and_unread_outside_the_clipped_group_algorithms():
    with pytest.raises(ValueError, match=r"rl.loss_reduction: 'mean' is not allowed; choose ''"):
        rlhf.rl_config(num_steps=1, batch_size=2, algorithm="grpo", num_samples=2,
                       loss_reduction="mean")
    for algorithm in ("ppo", "rloo"):
        cfg = rlhf.rl_config(num_steps=1, batch_size=2, algorithm=algorithm, num_samples=2,
                             loss_reduction="constant")
        assert cfg.unread == ("loss_reduction",)
