"""The reference bank: every alignment prompt's ``r_ref(x)``, computed once before RL.

An RLHF run looks up each prompt's reference in a table (``float32[N, m]``, one row per prompt
of the alignment table, one column per property) instead of estimating it inside the training
loop. :func:`compute` fills the table with :func:`lsc.align.references.estimate_reference` over
the prompts in fixed-size batches (one compiled program, one pass); the references of a job are
therefore estimated once, whatever its number of seeds and ``kl_coef`` values, and every run of
the job (and every method reading the same samples) sees the same references.
:func:`reference_table` is the ``rlhf`` job's bank.

The quantile source needs ``K`` base-policy samples per prompt:
:func:`lsc.align.references.pi0_samples.read_rows` reads them from a reference-samples file (the
draw the predictors train on, ``config.rewards.reference_samples``), matching prompts
by their token rows and checking the sampling settings; without a file :func:`compute` draws them
from ``pi0`` with ``key`` (:func:`lsc.align.references.pi0_samples.sample_base`).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc.align import common
from lsc.align import references as reference_lib
from lsc.align.references import pi0_samples
from lsc.align.utility import UtilitySpec


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
      key: PRNG key of the samples drawn here (:func:`pi0_samples.sample_base`, batches of
        ``batch_size`` prompts, batch ``i`` with ``fold_in(key, i)``); needed when a property uses
        the quantile source and ``samples`` is None.
      samples: ``int32[N, K', R]`` pre-drawn samples (:func:`pi0_samples.read_rows`).
      fixed_tokens: ``int32[m, R0]`` fixed responses
        (:func:`lsc.align.references.fixed_response_tokens`).
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
    bs = max(1, min(int(batch_size), n))
    if k and samples is None:
        samples = pi0_samples.sample_base(pi0, prompts, key, num_samples=k,
                                          max_new_tokens=int(response_len), batch_size=bs,
                                          temperature=float(temperature))
    gd0, st0 = nnx.split(pi0)
    rm_gds, rm_sts = common.split_models(list(reward_models))
    pr_gds, pr_sts = common.split_models(list(predictors) or [None] * m)
    fns = tuple(predictor_fns) or (None,) * m
    fixed = jnp.asarray(np.zeros((m, 1), np.int32) if fixed_tokens is None else fixed_tokens)

    @jax.jit
    def estimate(st0, rm_sts, pr_sts, fixed, chunk, chunk_samples):
        # Every sample is given (or no property needs one): the sampling key is unused.
        return reference_lib.estimate_reference(
            spec, gd0, st0, rm_gds, rm_sts, chunk, jax.random.key(0),
            max_new_tokens=int(response_len), temperature=float(temperature),
            fixed_tokens=fixed, predictor_graphdefs=pr_gds, predictor_states=pr_sts,
            predictor_fns=fns, samples=chunk_samples).r_ref

    out = np.zeros((n, m), np.float32)
    for start in range(0, n, bs):
        rows = np.minimum(np.arange(start, start + bs), n - 1)
        real = min(bs, n - start)
        chunk_samples = None if samples is None else jnp.asarray(samples[rows][:, :max(k, 1)])
        r = estimate(st0, rm_sts, pr_sts, fixed, jnp.asarray(prompts[rows]), chunk_samples)
        out[start:start + real] = np.asarray(r)[:real]
    return out


def reference_table(config: ml_collections.ConfigDict, spec: UtilitySpec, models: Any,
                    prompts: np.ndarray, fixed: np.ndarray
                    ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The reference bank of an ``rlhf`` job: ``(float32[N, m], bool[N])`` for
    :func:`lsc.align.rlhf.train_rlhf`'s ``reference``, or None when the utility uses no
    reference or ``rl.reference_bank`` is off.

    Args:
      config: the job's config (``data.response_len``, ``rl.temperature``,
        ``rewards.reference_samples``, ``seed``).
      spec: the utility.
      models: the job's frozen models (:class:`lsc.align.rlhf.Models`).
      prompts: ``int32[N, P]`` the alignment prompts.
      fixed: ``int32[m, R0]`` fixed responses (:func:`lsc.align.references.fixed_response_tokens`).

    Quantile sources read ``config.rewards.reference_samples`` when set, else draw from ``pi0``
    with the key ``fold_in(key(config.seed), 11)`` (not ``rl.seed``: every run of the job sees
    the same references).
    """
    if not spec.uses_reference or not bool(config.rl.get("reference_bank", True)):
        return None
    r_len = int(config.data.response_len)
    temperature = float(config.rl.get("temperature", 1.0))
    path = config.rewards.get("reference_samples", "") or ""
    k = reference_lib.quantile_samples(spec)
    samples = (pi0_samples.read_rows(path, prompts, num_samples=k, response_len=r_len,
                                     temperature=temperature) if path and k else None)
    start = time.perf_counter()
    table = compute(
        spec, models.pi0, models.reward_models, prompts, response_len=r_len,
        temperature=temperature, key=jax.random.fold_in(jax.random.key(int(config.seed)), 11),
        samples=samples, fixed_tokens=fixed, predictors=models.predictors,
        predictor_fns=models.predictor_fns)
    logging.info("reference bank: %d prompts x %d properties in %.1fs (%s); mean %s",
                 table.shape[0], table.shape[1], time.perf_counter() - start,
                 f"samples of {path}" if samples is not None else "estimated here",
                 np.round(table.mean(axis=0), 4).tolist())
    return table, np.ones((table.shape[0],), bool)
