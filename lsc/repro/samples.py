"""Policy samples on a fixed prompt set, scored on device: what every evaluation needs.

:class:`PromptSet` holds ``N`` evaluation prompts (token rows and texts), the base policy
``pi0`` and the proxy reward models. :meth:`PromptSet.sample` draws ``k`` samples per prompt from
any policy with the same architecture as ``pi0`` (the KV-cache sampler, batches of fixed shape,
so one compilation per ``k``) and returns a :class:`Samples`: the tokens, their per-token
log-probabilities under the policy and under ``pi0`` (teacher-forced by
:func:`lsc.models.decoder.response_log_probs`, the same function for both, so
``logp - logp0`` is an exact per-token log-ratio), the response mask, every proxy reward, and
the decoded texts.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc import runtime
from lsc.align import common as align_common
from lsc.align import references as reference_lib
from lsc.align.references import pi0_samples
from lsc.data import pipeline
from lsc.models import decoder as decoder_lib


@dataclasses.dataclass
class Samples:
    """``k`` samples for each of ``N`` prompts (``R`` response tokens, ``m`` reward models).

    Attributes:
      tokens: ``int32[N, k, R]`` right-padded responses.
      mask: ``bool[N, k, R]`` response tokens (True up to and including EOS).
      logp: ``float32[N, k, R]`` log-probs under the sampling policy (0 on padding).
      logp0: ``float32[N, k, R]`` log-probs of the same tokens under ``pi0`` (0 on padding).
      rewards: ``float32[N, k, m]`` proxy rewards.
      texts: ``N`` lists of ``k`` decoded responses.
    """

    tokens: np.ndarray
    mask: np.ndarray
    logp: np.ndarray
    logp0: np.ndarray
    rewards: np.ndarray
    texts: List[List[str]]

    @property
    def num_samples(self) -> int:
        return int(self.tokens.shape[1])

    def column(self, j: int) -> List[str]:
        """The ``j``-th sample of every prompt (``N`` texts)."""
        return [row[j] for row in self.texts]

    def save(self, path: str) -> None:
        """Arrays to ``path`` (``.npz``); texts are re-decoded on load."""
        runtime.write_npz_atomic(path, tokens=self.tokens, mask=self.mask, logp=self.logp,
                                 logp0=self.logp0, rewards=self.rewards)


@jax.jit
def _teacher_forced(split, prompts, tokens, mask):
    graphdef, state = split
    return decoder_lib.response_log_probs(nnx.merge(graphdef, state), prompts, tokens, mask)


@jax.jit
def _scores(rm_splits, prompts, tokens):
    gds = tuple(s[0] for s in rm_splits)
    sts = tuple(s[1] for s in rm_splits)
    return reference_lib.score_samples(gds, sts, prompts, tokens)


class PromptSet:
    """Evaluation prompts with the base policy and the proxy reward models.

    Args:
      prompts: ``int32[N, P]`` left-padded prompt rows.
      texts: the ``N`` prompt texts (for the gold judge).
      tokenizer: decodes responses.
      pi0: the base policy; reward_models: the ``m`` proxy reward models (property order).
      response_len: ``R``; batch_size: prompts per device call (the last batch is padded).
      temperature: sampling temperature (1.0 samples the policy itself).
    """

    def __init__(self, prompts: np.ndarray, texts: Sequence[str], tokenizer, pi0: nnx.Module,
                 reward_models: Sequence[nnx.Module], *, response_len: int, batch_size: int,
                 temperature: float = 1.0):
        self.prompts = np.asarray(prompts, np.int32)
        self.texts = list(texts)
        if len(self.texts) != self.prompts.shape[0]:
            raise ValueError(f"{self.prompts.shape[0]} prompt rows but {len(self.texts)} texts")
        self.tokenizer = tokenizer
        self.pi0 = nnx.split(pi0)
        self.rms = tuple(nnx.split(m) for m in reward_models)
        self.response_len = int(response_len)
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def subset(self, index: np.ndarray) -> "PromptSet":
        """The prompts ``index int[N']`` of this set, with the same models and settings."""
        index = np.asarray(index, np.int64)
        out = copy.copy(self)
        out.prompts = self.prompts[index]
        out.texts = [self.texts[i] for i in index]
        return out

    def batches(self):
        """``(start, real rows, int32[batch_size, P] device prompts)``; the last batch is padded
        by repeating its first row (:func:`lsc.data.pipeline.padded_batches`)."""
        for start, real, chunk in pipeline.padded_batches(self.prompts, self.batch_size):
            yield start, real, jnp.asarray(chunk)

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """``float32[N, k, n_rms]`` proxy rewards of given responses ``tokens int32[N, k, R]``
        (right-padded, EOS included) to the prompts, every reward model."""
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim != 3 or tokens.shape[0] != len(self):
            raise ValueError(f"tokens must have shape [{len(self)}, k, R], got {tokens.shape}")
        parts = []
        for (_, real, chunk), (_, _, rows) in zip(
                self.batches(), pipeline.padded_batches(tokens, self.batch_size)):
            rew = _scores(self.rms, chunk, jnp.asarray(rows))
            parts.append(np.asarray(jax.device_get(rew))[:real])
        return np.concatenate(parts)

    def sample(self, policy: Any, key: jax.Array, num_samples: int = 1,
               log_probs: bool = True, rewards: bool = True,
               num_reward_models: Optional[int] = None) -> Samples:
        """``num_samples`` samples per prompt from ``policy`` (a module or ``(graphdef, state)``;
        None: ``pi0``), batch ``i`` drawn with ``fold_in(key, i)``. ``log_probs=False`` skips the
        teacher-forced log-probabilities (``logp`` and ``logp0`` are then zeros),
        ``rewards=False`` the reward models (``rewards`` is then zeros); ``num_reward_models``
        scores with the first that many reward models only (``rewards[..., :n]``). The samples
        are drawn by :func:`lsc.align.references.pi0_samples.draw_batches`."""
        rms = self.rms if num_reward_models is None else self.rms[:int(num_reward_models)]
        split = self.pi0 if policy is None else (
            policy if isinstance(policy, tuple) else nnx.split(policy))
        gd, st = split
        k = int(num_samples)
        parts = {n: [] for n in ("tokens", "mask", "logp", "logp0", "rewards")}
        for _, real, chunk, out in pi0_samples.draw_batches(
                gd, st, self.prompts, key, num_samples=k, max_new_tokens=self.response_len,
                temperature=self.temperature, batch_size=self.batch_size):
            b, r = chunk.shape[0], self.response_len
            rows = jnp.repeat(chunk, k, axis=0)
            flat = out.tokens.reshape(b * k, r)
            mask = out.mask.reshape(b * k, r).astype(jnp.float32)
            if log_probs:
                logp = _teacher_forced(split, rows, flat, mask)
                logp0 = logp if policy is None else _teacher_forced(self.pi0, rows, flat, mask)
            else:
                logp = logp0 = jnp.zeros((b * k, r), jnp.float32)
            rew = (_scores(rms, chunk, out.tokens) if rewards
                   else jnp.zeros((b, k, len(rms)), jnp.float32))
            got = jax.device_get({"tokens": out.tokens, "mask": out.mask,
                                  "logp": logp.reshape(b, k, r), "logp0": logp0.reshape(b, k, r),
                                  "rewards": rew})
            for name, arr in got.items():
                parts[name].append(np.asarray(arr)[:real])
        arrays = {n: np.concatenate(v) for n, v in parts.items()}
        n = len(self)
        flat_texts = align_common.decode(self.tokenizer,
                                         arrays["tokens"].reshape(n * k, self.response_len))
        texts = [flat_texts[i * k:(i + 1) * k] for i in range(n)]
        return Samples(arrays["tokens"], arrays["mask"].astype(bool), arrays["logp"],
                       arrays["logp0"], arrays["rewards"], texts)
