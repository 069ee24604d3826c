"""Base-policy (``pi0``) samples for the references: drawn, scored into oracle quantiles, saved.

:func:`draw_batches` is the one loop that samples a policy on a table of prompts: fixed-shape
batches (:func:`lsc.data.pipeline.padded_batches`; the last is padded and trimmed), batch ``i``
drawn by :func:`lsc.models.sampling.sample` with ``fold_in(key, i)``. Each caller passes its own
key: the predictors' shared draw (:func:`draw_splits`: split ``s`` with
``fold_in(key(seed), s)``), the reproduction's evaluation samples
(:meth:`lsc.repro.samples.PromptSet.sample`: set ``j`` with ``fold_in(key(seed), j)``) and the
reference bank (:func:`lsc.align.references.bank.compute`: ``fold_in(key(seed), 11)``).
:func:`sample_base` returns the tokens of every prompt.

:func:`score_quantiles` scores ``k`` samples per prompt with a reward model and takes
:func:`lsc.rewards.quantile_reference` over them (one jitted function per batch): the oracle
quantile references, which the predictor learns (:func:`oracle_quantiles` draws and
scores).

The reference-samples file (:data:`FILE`, ``reference_samples.npz``; written by the
``train_predictor`` job and by the reproduction's ``predictor`` stage) holds, for each
split of :data:`SPLITS`, ``<split>_prompts int32[n, P]`` (left-padded token rows) and
``<split>_samples int32[n, k, R]``, and the sampling settings ``seed``, ``num_samples``,
``max_new_tokens``, ``temperature``. :func:`read_splits` reads it back for the same prompts and
settings (``config.reference.samples_path``); :func:`read_rows` finds the samples of given prompt
rows (``config.rewards.reference_samples``, the reference bank).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc import rewards, runtime
from lsc.align import references
from lsc.data import pipeline
from lsc.models import sampling

FILE = "reference_samples.npz"
SPLITS = ("train", "test")  # the splits of a reference-samples file


def draw_batches(graphdef: nnx.GraphDef, state: Any, prompts: np.ndarray, key: jax.Array, *,
                 num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                 batch_size: int = 64
                 ) -> Iterator[Tuple[int, int, jax.Array, sampling.SampleOutput]]:
    """Samples ``num_samples`` responses per prompt, a fixed-shape batch at a time.

    Args:
      graphdef, state: the split policy (an ``Autoregressive`` decoder).
      prompts: ``int32[N, P]`` left-padded prompts.
      key: sampling key; batch ``i`` uses ``fold_in(key, i)``.
      num_samples, max_new_tokens, temperature: ``k``, ``R`` and the sampling temperature.
      batch_size: prompts per batch (the last is padded by repeating its first row).

    Yields:
      ``(start, real, chunk int32[batch_size, P], SampleOutput)`` per batch: rows
      ``start .. start + real - 1`` of ``prompts`` are the first ``real`` rows of ``chunk`` and
      of the :class:`lsc.models.sampling.SampleOutput` (``[batch_size, k, R]`` arrays).
    """
    for i, (start, real, chunk) in enumerate(pipeline.padded_batches(prompts, batch_size)):
        chunk = jnp.asarray(chunk)
        yield start, real, chunk, sampling.sample(
            graphdef, state, chunk, jax.random.fold_in(key, i), max_new_tokens=max_new_tokens,
            num_samples=num_samples, temperature=temperature)


def sample_base(policy: nnx.Module, prompts: np.ndarray, key: jax.Array, *, num_samples: int,
                max_new_tokens: int, batch_size: int = 64, temperature: float = 1.0
                ) -> np.ndarray:
    """``int32[N, k, R]``: ``k = num_samples`` responses of ``policy`` (the base policy) per
    prompt of ``prompts int32[N, P]``, drawn by :func:`draw_batches` (same arguments)."""
    prompts = np.asarray(prompts, np.int32)
    if prompts.shape[0] == 0:
        raise ValueError("sample_base needs at least one prompt")
    pg, ps = nnx.split(policy)
    out = [np.asarray(sampled.tokens)[:real] for _, real, _, sampled in draw_batches(
        pg, ps, prompts, key, num_samples=num_samples, max_new_tokens=max_new_tokens,
        temperature=temperature, batch_size=batch_size)]
    return np.concatenate(out).astype(np.int32)


@jax.jit
def _score_quantile(rm_graphdef_state, prompts, samples, q):
    graphdef, state = rm_graphdef_state
    scores = references.score_samples((graphdef,), (state,), prompts, samples)[..., 0]
    return rewards.quantile_reference(scores, q), scores


def score_quantiles(reward_model: nnx.Module, prompts: np.ndarray, samples: np.ndarray, *,
                    quantile: float, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """``(float32[N], float32[N, k])``: the ``q``-quantile over each prompt's ``k`` samples of
    the reward and the scores themselves, ``samples`` ``int32[N, k, R]`` scored on device a batch
    of prompts at a time (padded as in :func:`draw_batches`)."""
    prompts = np.asarray(prompts, np.int32)
    samples = np.asarray(samples, np.int32)
    if samples.ndim != 3 or samples.shape[0] != prompts.shape[0] or prompts.shape[0] == 0:
        raise ValueError(f"samples must have shape [N, k, R] with N = {prompts.shape[0]} >= 1 "
                         f"prompts, got {samples.shape}")
    rm_split = nnx.split(reward_model)
    idx = np.arange(prompts.shape[0])
    qs, all_scores = [], []
    for _, real, rows in pipeline.padded_batches(idx, batch_size):
        q, scores = _score_quantile(rm_split, jnp.asarray(prompts[rows]),
                                    jnp.asarray(samples[rows]), jnp.float32(quantile))
        qs.append(np.asarray(q)[:real])
        all_scores.append(np.asarray(scores)[:real])
    return (np.concatenate(qs).astype(np.float32),
            np.concatenate(all_scores).astype(np.float32))


def oracle_quantiles(policy: nnx.Module, reward_model: nnx.Module, prompts: np.ndarray,
                     key: jax.Array, *, num_samples: int, quantile: float, max_new_tokens: int,
                     batch_size: int = 64, temperature: float = 1.0,
                     return_scores: bool = False):
    """``float32[N]`` q-quantiles of the reward over ``num_samples`` policy samples per prompt
    (:func:`sample_base` then :func:`score_quantiles`); with ``return_scores`` also the
    ``float32[N, k]`` scores."""
    samples = sample_base(policy, prompts, key, num_samples=num_samples,
                          max_new_tokens=max_new_tokens, batch_size=batch_size,
                          temperature=temperature)
    targets, scores = score_quantiles(reward_model, prompts, samples, quantile=quantile,
                                      batch_size=batch_size)
    return (targets, scores) if return_scores else targets


def draw_splits(policy: nnx.Module, prompts: Mapping[str, np.ndarray], seed: int, *,
                num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                batch_size: int = 64) -> Dict[str, np.ndarray]:
    """``{split: int32[N, k, R]}`` samples of ``policy`` for ``prompts {split: int32[N, P]}``
    (:data:`SPLITS` order), split ``s`` drawn by :func:`sample_base` with
    ``fold_in(key(seed), s)``."""
    key = jax.random.key(int(seed))
    return {split: sample_base(policy, prompts[split], jax.random.fold_in(key, s),
                               num_samples=num_samples, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, temperature=temperature)
            for s, split in enumerate(SPLITS)}


def write_file(path: str, prompts: Mapping[str, np.ndarray], samples: Mapping[str, np.ndarray],
               settings: Mapping[str, Any]) -> None:
    """Writes a reference-samples file (module docstring) atomically: ``prompts`` and
    ``samples`` per split, and the sampling ``settings`` (``seed``, ``num_samples``,
    ``max_new_tokens``, ``temperature``)."""
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_prompts"] = prompts[split]
        arrays[f"{split}_samples"] = samples[split]
    runtime.write_npz_atomic(path, **arrays, **{k: np.asarray(v) for k, v in settings.items()})


def read_splits(path: str, prompts: Mapping[str, np.ndarray], settings: Mapping[str, Any], *,
                field: str) -> Dict[str, np.ndarray]:
    """``{split: int32[N, k, R]}`` from the reference-samples file ``path`` after checking that it
    was drawn for these ``prompts`` (``{split: int32[N, P]}``) with these ``settings``; a mismatch
    raises ``ValueError`` naming ``<field>=<path>``."""
    with np.load(path) as saved:
        for name, want in settings.items():
            got = saved[name].item() if name in saved else None
            if got != want:
                raise ValueError(f"{field}={path}: drawn with {name}={got}, "
                                 f"but this config has {want}")
        out = {}
        for split in SPLITS:
            if not np.array_equal(saved[f"{split}_prompts"], prompts[split]):
                raise ValueError(f"{field}={path}: its {split} prompts "
                                 "differ from this config's world")
            out[split] = saved[f"{split}_samples"]
    return out


def read_rows(path: str, prompts: np.ndarray, *, num_samples: int, response_len: int,
              temperature: float) -> np.ndarray:
    """``int32[N, K', R]`` samples of ``prompts int32[N, P]`` from the reference-samples file
    ``path``, found by their token rows in any split.

    Args:
      path: a reference-samples file (module docstring).
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
        for split in SPLITS:
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
