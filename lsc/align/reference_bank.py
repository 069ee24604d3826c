"""The reference bank: every alignment prompt's ``r_ref(x)``, computed once before RL.

An RLHF run looks up each prompt's reference in a table (``float32[N, m]``, one row per prompt
of the alignment table, one column per property) instead of estimating it inside the training
loop. :func:`compute` fills the table with :func:`lsc.align.reference.estimate_reference` over
the prompts in fixed-size batches (one compiled program, one pass); the references of a job are
therefore estimated once, whatever its number of seeds and ``kl_coef`` values, and every run of
the job (and every method reading the same samples) sees the same references.

The quantile source needs ``K`` base-policy samples per prompt: :func:`read_samples` reads them
from a file of :func:`lsc.train.reference_predictor.write_base_samples` (the draw the reference
predictors train on, ``config.rewards.reference_samples``), matching prompts by their token rows
and checking the sampling settings; without a file :func:`compute` draws them from ``pi0`` with
``key``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc.align import common
from lsc.align import reference as reference_lib
from lsc.align.utility import UtilitySpec

SAMPLE_SPLITS = ("train", "test")  # the splits a base-samples file holds


def read_samples(path: str, prompts: np.ndarray, *, num_samples: int, response_len: int,
                 temperature: float) -> np.ndarray:
    """``int32[N, K', R]`` base-policy samples of ``prompts int32[N, P]`` from ``path``.

    Args:
      path: a ``.npz`` of :func:`lsc.train.reference_predictor.write_base_samples`
        (``<split>_prompts int32[n, P]``, ``<split>_samples int32[n, K', R]`` and the sampling
        settings ``num_samples``, ``max_new_tokens``, ``temperature``).
      prompts: the prompt rows to find (left-padded token ids, as the file's).
      num_samples: ``K``, the samples per prompt needed (``K' >= K``).
      response_len, temperature: must equal the file's ``max_new_tokens`` and ``temperature``.

    Raises:
      ValueError: naming ``config.rewards.reference_samples`` when the settings differ, the file
        has fewer samples per prompt, or some prompt is not in it.
    """
    field = f"config.rewards.reference_samples={path}"
    prompts = np.asarray(prompts, np.int32)
    with np.load(path) as f:
        got = {"max_new_tokens": int(f["max_new_tokens"]), "temperature": float(f["temperature"]),
               "num_samples": int(f["num_samples"])}
        if got["max_new_tokens"] != int(response_len):
            raise ValueError(f"{field}: samples of {got['max_new_tokens']} tokens, but "
                             f"data.response_len is {response_len}")
        if got["temperature"] != float(temperature):
            raise ValueError(f"{field}: drawn at temperature {got['temperature']}, but "
                             f"rl.temperature is {temperature}")
        if got["num_samples"] < int(num_samples):
            raise ValueError(f"{field}: {got['num_samples']} samples per prompt, but the "
                             f"quantile references need {num_samples}")
        rows, samples = [], []
        for split in SAMPLE_SPLITS:
            if f"{split}_prompts" in f.files:
                rows.append(np.asarray(f[f"{split}_prompts"], np.int32))
                samples.append(np.asarray(f[f"{split}_samples"], np.int32))
    if not rows or rows[0].shape[1] != prompts.shape[1]:
        raise ValueError(f"{field}: its prompts are not rows of {prompts.shape[1]} tokens")
    rows_all, samples_all = np.concatenate(rows), np.concatenate(samples)
    index = {r.tobytes(): i for i, r in enumerate(rows_all)}
    found = [index.get(r.tobytes(), -1) for r in prompts]
    missing = sum(i < 0 for i in found)
    if missing:
        raise ValueError(f"{field}: {missing} of {len(prompts)} alignment prompts have no "
                         "samples in it (drawn for another world or prompt_len?)")
    return samples_all[np.asarray(found)]


def compute(spec: UtilitySpec, pi0: nnx.Module, reward_models: Sequence[nnx.Module],
            prompts: np.ndarray, *, response_len: int, temperature: float = 1.0,
            key: Optional[jax.Array] = None, samples: Optional[np.ndarray] = None,
            fixed_tokens: Optional[np.ndarray] = None,
            predictors: Sequence[Optional[nnx.Module]] = (), predictor_fns: Sequence[Any] = (),
            batch_size: int = 64) -> np.ndarray:
    """``float32[N, m]`` references of ``prompts int32[N, P]`` (module docstring).

    Args:
      spec: the utility (its properties' reference specs).
      pi0, reward_models, predictors, predictor_fns: the frozen models, as in
        :class:`lsc.align.rlhf.Models`.
      response_len, temperature: the base-policy samples' length and temperature.
      key: PRNG key of the samples drawn here (batch ``i`` uses ``fold_in(key, i)``); needed
        when a property uses the quantile source and ``samples`` is None.
      samples: ``int32[N, K', R]`` pre-drawn samples (:func:`read_samples`).
      fixed_tokens: ``int32[m, R0]`` fixed responses (:func:`reference.fixed_response_tokens`).
      batch_size: prompts per device call (the last batch is padded by repeating a prompt).
    """
    prompts = np.asarray(prompts, np.int32)
    n, m = prompts.shape[0], spec.num_properties
    k = reference_lib.quantile_samples(spec)
    if k and samples is None and key is None:
        raise ValueError("the quantile reference source needs base-policy samples or a key to "
                         "draw them")
    if samples is not None and (samples.shape[0] != n or samples.shape[1] < k):
        raise ValueError(f"samples of shape {samples.shape} do not give {k} samples for each of "
                         f"{n} prompts")
    gd0, st0 = nnx.split(pi0)
    rm_gds, rm_sts = common.split_models(list(reward_models))
    pr_gds, pr_sts = common.split_models(list(predictors) or [None] * m)
    fns = tuple(predictor_fns) or (None,) * m
    fixed = jnp.asarray(np.zeros((m, 1), np.int32) if fixed_tokens is None else fixed_tokens)
    key = jax.random.key(0) if key is None else key

    @jax.jit
    def estimate(st0, rm_sts, pr_sts, fixed, chunk, key, chunk_samples):
        return reference_lib.estimate_reference(
            spec, gd0, st0, rm_gds, rm_sts, chunk, key, max_new_tokens=int(response_len),
            temperature=float(temperature), fixed_tokens=fixed, predictor_graphdefs=pr_gds,
            predictor_states=pr_sts, predictor_fns=fns, samples=chunk_samples).r_ref

    bs = max(1, min(int(batch_size), n))
    out = np.zeros((n, m), np.float32)
    for i, start in enumerate(range(0, n, bs)):
        rows = np.minimum(np.arange(start, start + bs), n - 1)
        real = min(bs, n - start)
        chunk_samples = None if samples is None else jnp.asarray(samples[rows][:, :max(k, 1)])
        r = estimate(st0, rm_sts, pr_sts, fixed, jnp.asarray(prompts[rows]),
                     jax.random.fold_in(key, i), chunk_samples)
        out[start:start + real] = np.asarray(r)[:real]
    return out
