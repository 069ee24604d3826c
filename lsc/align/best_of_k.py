"""Best-of-k: draw k samples per prompt from the base policy, keep the one of highest utility.

:func:`best_of_k` is one pure device computation for a batch of prompts (sampling with
``lsc.models.sampling.sample`` on the given key, scoring with every reward model, the utility of
:mod:`lsc.align.utility`, an argmax per prompt); :class:`BestOfK` jits it (compiled once per
shape). Ties go to the lowest sample index, so with ``k = 1`` the result is the base policy's
sample itself.

The job :func:`run` (``job = 'best_of_k'``) estimates the references of the evaluation prompts
(:mod:`lsc.align.references`, with a key independent of the selection samples), runs best-of-k
for every ``k`` of ``best_of_k.ks`` and writes ``<workdir>/best_of_k/k<k>.jsonl`` (one line per
prompt: the prompt, the chosen response, its per-property rewards, references, utility and the
chosen index; on the synthetic world also the gold scores) and ``<workdir>/results.json``
(per k: mean utility, mean rewards, mean gold scores); ``<workdir>/config.json`` records the models
that ran (:mod:`lsc.train.run_models`). The models are read onto the mesh of ``config.mesh``, each
array straight into its sharding.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc import runtime
from lsc.align import common
from lsc.align import references as reference_lib
from lsc.align import utility as utility_lib
from lsc.data import pipeline
from lsc.models import sampling
from lsc.train import common as train_common
from lsc.train import run_models

Array = jax.Array


class BestOfKOutput(NamedTuple):
    """Result of :func:`best_of_k` (``B`` prompts, ``k`` samples, ``m`` properties, ``R`` tokens).

    Attributes:
      tokens: ``int32[B, R]`` the chosen responses (right-padded).
      rewards: ``float32[B, m]`` their per-property rewards.
      utility: ``float32[B]`` their utilities.
      index: ``int32[B]`` which of the k samples was chosen.
      all_utilities: ``float32[B, k]`` the utility of every sample.
      all_rewards: ``float32[B, k, m]`` the rewards of every sample.
    """

    tokens: Array
    rewards: Array
    utility: Array
    index: Array
    all_utilities: Array
    all_rewards: Array


def best_of_k(spec: utility_lib.UtilitySpec, pi0_graphdef: nnx.GraphDef, pi0_state: Any,
              rm_graphdefs: Sequence[nnx.GraphDef], rm_states: Sequence[Any], prompts: Array,
              r_ref: Array, key: Array, *, k: int, max_new_tokens: int,
              temperature: float = 1.0) -> BestOfKOutput:
    """Best-of-k selection for ``prompts int32[B, P]`` (pure; jit it).

    Args:
      spec: the utility.
      pi0_graphdef, pi0_state: the base policy.
      rm_graphdefs, rm_states: one reward model per property.
      prompts: ``int32[B, P]`` left-padded prompts.
      r_ref: ``float32[B, m]`` reference rewards (ignored by methods without a reference).
      key: PRNG key, passed as is to ``sampling.sample``.
      k: samples per prompt; max_new_tokens: ``R``; temperature: sampling temperature.
    """
    if k < 1:
        raise ValueError(f"best-of-k needs k >= 1, got {k}")
    out = sampling.sample(pi0_graphdef, pi0_state, prompts, key, max_new_tokens=int(max_new_tokens),
                          num_samples=int(k), temperature=float(temperature))
    rew = reference_lib.score_samples(rm_graphdefs, rm_states, prompts, out.tokens)  # [B, k, m]
    u = utility_lib.utility(spec, rew, jnp.asarray(r_ref, jnp.float32)[:, None, :])  # [B, k]
    idx = jnp.argmax(u, axis=1).astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(  # noqa: E731
        x, idx.reshape((-1, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0]
    return BestOfKOutput(take(out.tokens), take(rew), take(u), idx, u, rew)


class BestOfK:
    """:func:`best_of_k` under ``jax.jit`` for fixed models and ``k``:
    ``BestOfK(...)(pi0_state, rm_states, prompts, r_ref, key) -> BestOfKOutput``."""

    def __init__(self, spec, pi0_graphdef, rm_graphdefs, *, k: int, max_new_tokens: int,
                 temperature: float = 1.0):
        self.traces = 0

        def best_of_k_step(pi0_state, rm_states, prompts, r_ref, key):
            self.traces += 1
            return best_of_k(spec, pi0_graphdef, pi0_state, tuple(rm_graphdefs), rm_states,
                             prompts, r_ref, key, k=k, max_new_tokens=max_new_tokens,
                             temperature=temperature)

        self._jitted = jax.jit(best_of_k_step)

    def __call__(self, pi0_state, rm_states, prompts, r_ref, key) -> BestOfKOutput:
        return self._jitted(pi0_state, tuple(rm_states), jnp.asarray(prompts, jnp.int32),
                            jnp.asarray(r_ref, jnp.float32), key)


def write_jsonl(path: str, records: Sequence[Dict[str, Any]]) -> None:
    """Writes ``records`` one JSON object per line (atomically)."""
    with runtime.atomic_open(path) as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``best_of_k`` job (see the module docstring); returns the exit code."""
    spec = utility_lib.spec_from_config(config.rewards)
    section = config.best_of_k
    tok, table, texts = common.tokenizer_and_prompts(config, workdir,
                                                     section.get("split", "test"))
    n = min(int(section.get("num_prompts", len(table))) or len(table), len(table))
    prompts_np = table.arrays["prompt"][:n]
    texts = texts[:n]
    batch = int(section.batch_size)
    r_len = int(config.data.response_len)
    temperature = float(config.get("sampling", {}).get("temperature", 1.0))

    loaded = common.job_models(config, spec, tok.vocab_size,
                               shardings=run_models.mesh_shardings(
                                   *train_common.make_mesh(config)))
    run_models.record(workdir, config, loaded.records)
    pi0_gd, pi0_st = nnx.split(loaded.pi0)
    rm_gds, rm_sts = common.split_models(loaded.reward_models)
    pr_gds, pr_sts = common.split_models(loaded.predictors)
    estimator = reference_lib.ReferenceEstimator(
        spec, pi0_gd, rm_gds, max_new_tokens=r_len, temperature=temperature,
        fixed_tokens=reference_lib.fixed_response_tokens(spec, tok, r_len),
        predictor_graphdefs=pr_gds)
    key = jax.random.key(int(config.seed))
    ref_key, sel_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)

    # Batches of one shape (the last one padded); each batch keeps its references.
    batches = list(pipeline.padded_batches(prompts_np, batch))
    t0 = time.perf_counter()
    refs = [common.host(estimator(pi0_st, rm_sts, chunk, jax.random.fold_in(ref_key, start),
                                  pr_sts).r_ref)
            for start, _, chunk in batches]
    r_ref = np.concatenate([ref[:real] for (_, real, _), ref in zip(batches, refs)])
    ref_seconds = time.perf_counter() - t0
    logging.info("references of %d prompts in %.2fs", n, ref_seconds)

    out_dir = os.path.join(workdir, "best_of_k")
    os.makedirs(out_dir, exist_ok=True)
    gold_ok = config.data.source == "synthetic"
    results: Dict[str, Any] = {"method": spec.method, "properties": list(spec.properties),
                               "num_prompts": n, "reference_seconds": ref_seconds, "per_k": {}}
    ks = section.ks if isinstance(section.ks, (tuple, list)) else (section.ks,)
    for k in [int(x) for x in ks]:
        selector = BestOfK(spec, pi0_gd, rm_gds, k=k, max_new_tokens=r_len,
                           temperature=temperature)
        t0 = time.perf_counter()
        chunks = []
        for (start, _, chunk), ref in zip(batches, refs):
            res = selector(pi0_st, rm_sts, chunk, ref,
                           jax.random.fold_in(jax.random.fold_in(sel_key, k), start))
            chunks.append(jax.device_get(res))
        seconds = time.perf_counter() - t0
        tokens = np.concatenate([c.tokens for c in chunks])[:n]
        rew = np.concatenate([c.rewards for c in chunks])[:n]
        util = np.concatenate([c.utility for c in chunks])[:n]
        index = np.concatenate([c.index for c in chunks])[:n]
        responses = common.decode(tok, tokens)
        gold = {}
        if gold_ok:
            from lsc.data import world

            gold = {p: world.gold_scores(texts, responses, p) for p in spec.properties
                    if p in world.GOLD_SCORERS}
        records = []
        for j in range(n):
            rec = {"prompt": texts[j], "response": responses[j], "index": int(index[j]),
                   "utility": float(util[j]),
                   "rewards": {p: float(rew[j, c]) for c, p in enumerate(spec.properties)},
                   "r_ref": {p: float(r_ref[j, c]) for c, p in enumerate(spec.properties)}}
            if gold:
                rec["gold"] = {p: float(v[j]) for p, v in gold.items()}
            records.append(rec)
        if jax.process_index() == 0:
            write_jsonl(os.path.join(out_dir, f"k{k}.jsonl"), records)
        summary = {"utility": float(util.mean()), "seconds": seconds,
                   "rewards": {p: float(rew[:, c].mean()) for c, p in enumerate(spec.properties)}}
        if gold:
            summary["gold"] = {p: float(v.mean()) for p, v in gold.items()}
        results["per_k"][str(k)] = summary
        logging.info("best-of-%d: utility %.4f, rewards %s, %.2fs", k, summary["utility"],
                     summary["rewards"], seconds)
    if jax.process_index() == 0:
        runtime.write_json_atomic(os.path.join(workdir, "results.json"), results)
    return 0
