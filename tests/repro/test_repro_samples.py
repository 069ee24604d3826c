"""Policy samples on a prompt set: log-probs, proxy rewards and texts, checked independently."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "align"))
import align_fixtures as fx  # noqa: E402

from lsc.eval import kl as kl_lib  # noqa: E402
from lsc.repro.samples import PromptSet  # noqa: E402


class WordTokenizer:
    pad_id, eos_id, vocab_size = 0, 1, fx.VOCAB

    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)


def _set(batch_size=3):
    prompts = fx.prompts(5)
    return PromptSet(prompts, [f"p{i}" for i in range(5)], WordTokenizer(), fx.policy(0),
                     [fx.reward_model(10), fx.reward_model(20)], response_len=fx.R,
                     batch_size=batch_size), prompts


@pytest.mark.slow
def test_base_policy_samples_have_zero_kl_and_direct_rewards():
    ps, prompts = _set()
    s = ps.sample(None, jax.random.key(0), num_samples=2)
    assert s.tokens.shape == (5, 2, fx.R) and s.rewards.shape == (5, 2, 2)
    np.testing.assert_array_equal(s.logp, s.logp0)
    # The same module passed explicitly: log-probs under pi0 recomputed, KL exactly 0.
    s2 = ps.sample(fx.policy(0), jax.random.key(0), num_samples=2)
    np.testing.assert_array_equal(s2.tokens, s.tokens)
    np.testing.assert_allclose(s2.logp, s2.logp0, atol=1e-6)
    est = kl_lib.estimate_kl(s2.logp.reshape(10, -1), s2.logp0.reshape(10, -1),
                             s2.mask.reshape(10, -1))
    assert abs(est.mean) < 1e-5
    # Rewards: each (prompt, response) row scored by calling the reward model directly.
    rm = fx.reward_model(20)
    for i in range(5):
        for j in range(2):
            direct = rm(jnp.asarray(prompts[i:i + 1]), jnp.asarray(s.tokens[i, j][None]))
            assert float(direct[0]) == pytest.approx(float(s.rewards[i, j, 1]), abs=1e-5)
    # Texts stop at EOS / pad.
    for i in range(5):
        for j in range(2):
            row = s.tokens[i, j].tolist()
            stop = next((t for t, v in enumerate(row) if v in (0, 1)), len(row))
            assert s.texts[i][j] == " ".join(f"w{v}" for v in row[:stop])


@pytest.mark.slow
def test_log_probs_are_those_of_a_full_forward_pass():
    ps, prompts = _set(batch_size=5)
    policy = fx.policy(3)
    s = ps.sample(policy, jax.random.key(1))
    full = np.concatenate([prompts, s.tokens[:, 0]], axis=1)
    logits = np.asarray(policy(jnp.asarray(full)), np.float64)
    p = prompts.shape[1]
    logz = np.log(np.exp(logits).sum(-1))
    for i in range(5):
        for t in range(fx.R):
            if s.mask[i, 0, t]:
                tok = s.tokens[i, 0, t]
                want = logits[i, p - 1 + t, tok] - logz[i, p - 1 + t]
                assert s.logp[i, 0, t] == pytest.approx(want, abs=1e-4)
            else:
                assert s.logp[i, 0, t] == 0.0


@pytest.mark.slow
def test_prompt_states_kept_across_calls_give_the_full_pass():
    """pi0's log-probs and the rewards come from the prompt states each batch keeps (the last
    batch padded); after a first call, samples of other policies still match a full forward pass
    of pi0 and direct reward-model calls."""
    ps, prompts = _set(batch_size=3)
    ps.sample(fx.policy(1), jax.random.key(2))
    pi0, rm = fx.policy(0), fx.reward_model(10)
    p = prompts.shape[1]
    for seed in (3, 4):
        s = ps.sample(fx.policy(seed), jax.random.key(seed), num_samples=2)
        for j in range(2):
            full = np.concatenate([prompts, s.tokens[:, j]], axis=1)
            logits = np.asarray(pi0(jnp.asarray(full)), np.float64)[:, p - 1:-1]
            logz = np.log(np.exp(logits).sum(-1))
            want = np.take_along_axis(logits, s.tokens[:, j, :, None], -1)[..., 0] - logz
            np.testing.assert_allclose(s.logp0[:, j], np.where(s.mask[:, j], want, 0.0),
                                       atol=1e-4)
            direct = np.asarray(rm(jnp.asarray(prompts), jnp.asarray(s.tokens[:, j])))
            np.testing.assert_allclose(s.rewards[:, j, 0], direct, atol=1e-5)


def test_a_subset_has_the_rows_and_texts_of_its_index_and_the_same_models():
    ps, prompts = _set()
    sub = ps.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.prompts, prompts[[4, 1]])
    assert sub.texts == ["p4", "p1"] and len(sub) == 2 and len(ps) == 5
    assert sub.pi0 is ps.pi0 and sub.rms is ps.rms and sub.batch_size == ps.batch_size
