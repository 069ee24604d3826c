"""Policy samples on a fixed prompt set, scored on device: what every evaluation needs.

:class:`PromptSet` holds ``N`` evaluation prompts (token rows and texts), the base policy
``pi0`` and the proxy reward models. :meth:`PromptSet.sample` draws ``k`` samples per prompt from
any policy with the same architecture as ``pi0`` (the KV-cache sampler, batches of fixed shape,
so one compilation per ``k``) and returns a :class:`Samples`: the tokens, their per-token
log-probabilities under the policy (the sampler's ``model_logprobs``: the policy's own
distribution over the whole vocabulary) and under ``pi0`` (teacher-forced), the response mask,
every proxy reward, and the decoded texts. Both log-probabilities are of the models' full
softmax, so ``logp - logp0`` is the per-token log-ratio (up to rounding).

``pi0`` and the reward models read each prompt batch once: their prompt states
(:meth:`lsc.models.decoder.DecoderLM.prompt_state`) are kept per batch and continued over every
set of responses drawn on those prompts (:func:`lsc.models.decoder.extend_log_probs`,
:func:`lsc.align.references.score_samples`); models without a decoder backbone read
``concat([prompt, response])`` every time.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
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
      logp: ``float32[N, k, R]`` log-probs under the sampling policy's own distribution (0 on
        padding).
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


@functools.partial(jax.jit, static_argnames=("k",))
def _teacher_forced_from_state(split, prompt_state, tokens, mask, *, k):
    """``float32[B * k, R]``: :func:`_teacher_forced` continued from the ``B`` prompts' state."""
    graphdef, state = split
    return decoder_lib.extend_log_probs(nnx.merge(graphdef, state),
                                        decoder_lib.repeat_prompt_state(prompt_state, k),
                                        tokens, mask)


@functools.partial(jax.jit, static_argnames=("response_len",))
def _prompt_states(pi0_split, rm_splits, prompts, *, response_len):
    """``(pi0's prompt state or None, per reward model its state or None)`` of ``prompts``."""
    pi0 = nnx.merge(*pi0_split)
    pi0_state = (pi0.prompt_state(prompts, response_len) if decoder_lib.extends(pi0) else None)
    return pi0_state, reference_lib.prompt_states(
        tuple(s[0] for s in rm_splits), tuple(s[1] for s in rm_splits), prompts, response_len)


@jax.jit
def _scores(rm_splits, prompts, tokens, states=None):
    gds = tuple(s[0] for s in rm_splits)
    sts = tuple(s[1] for s in rm_splits)
    return reference_lib.score_samples(gds, sts, prompts, tokens, states=states)


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
        self._states = {}  # batch start -> _prompt_states of that batch (kept on device)

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def subset(self, index: np.ndarray) -> "PromptSet":
        """The prompts ``index int[N']`` of this set, with the same models and settings."""
        index = np.asarray(index, np.int64)
        out = copy.copy(self)
        out.prompts = self.prompts[index]
        out.texts = [self.texts[i] for i in index]
        out._states = {}
        return out

    def batches(self):
        """``(start, real rows, int32[batch_size, P] device prompts)``; the last batch is padded
        by repeating its first row (:func:`lsc.data.pipeline.padded_batches`)."""
        for start, real, chunk in pipeline.padded_batches(self.prompts, self.batch_size):
            yield start, real, jnp.asarray(chunk)

    def prompt_states(self, start: int, chunk: jax.Array):
        """``pi0``'s and the reward models' states of the batch at ``start`` (``chunk``, from
        :meth:`batches`), computed on first use and kept."""
        if start not in self._states:
            self._states[start] = _prompt_states(self.pi0, self.rms, chunk,
                                                 response_len=self.response_len)
        return self._states[start]

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """``float32[N, k, n_rms]`` proxy rewards of given responses ``tokens int32[N, k, R]``
        (right-padded, EOS included) to the prompts, every reward model."""
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim != 3 or tokens.shape[0] != len(self):
            raise ValueError(f"tokens must have shape [{len(self)}, k, R], got {tokens.shape}")
        parts = []
        if tokens.shape[2] != self.response_len:
            raise ValueError(f"tokens have {tokens.shape[2]} response slots, the prompt set "
                             f"{self.response_len}")
        for (start, real, chunk), (_, _, rows) in zip(
                self.batches(), pipeline.padded_batches(tokens, self.batch_size)):
            rew = _scores(self.rms, chunk, jnp.asarray(rows), self.prompt_states(start, chunk)[1])
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
        for start, real, chunk, out in pi0_samples.draw_batches(
                gd, st, self.prompts, key, num_samples=k, max_new_tokens=self.response_len,
                temperature=self.temperature, batch_size=self.batch_size):
            b, r = chunk.shape[0], self.response_len
            flat = out.tokens.reshape(b * k, r)
            mask = out.mask.reshape(b * k, r).astype(jnp.float32)
            pi0_state, rm_states = self.prompt_states(start, chunk)
            if log_probs:
                logp = out.model_logprobs.reshape(b * k, r)
                if policy is None:
                    logp0 = logp
                elif pi0_state is not None:
                    logp0 = _teacher_forced_from_state(self.pi0, pi0_state, flat, mask, k=k)
                else:
                    logp0 = _teacher_forced(self.pi0, jnp.repeat(chunk, k, axis=0), flat, mask)
            else:
                logp = logp0 = jnp.zeros((b * k, r), jnp.float32)
            rew = (_scores(rms, chunk, out.tokens, rm_states[:len(rms)]) if rewards
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
