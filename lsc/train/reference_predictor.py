"""The reference predictor (the note's "predict median"): ``r_ref(x)`` from the prompt alone.

Targets. For each prompt ``x`` the oracle reference is the ``q``-quantile of a reward model's
scores of ``k`` samples ``y ~ pi_0(. | x)`` from the base policy, computed on device a batch of
prompts at a time: :func:`sample_base` draws the ``k`` samples (``lsc.models.sampling.sample``,
KV cache, jitted), and :func:`score_quantiles` scores the ``B * k`` (prompt, sample) rows with the
reward model in one jitted function that also takes ``lsc.rewards.quantile_reference`` over the
``k`` samples of each prompt (:func:`oracle_quantiles` does both). The samples depend on the
base policy, the prompts and the seed only, so the predictors of several reward models can share
one draw: :func:`write_base_samples` writes it, ``reference.samples_path`` reads it (the
reproduction's predictor stage draws once for its six predictors).

Predictor. A :class:`lsc.models.heads.RewardModel` on a decoder backbone called with the prompt
and an empty response (one pad token), so its scalar is read at the last prompt token. It is
trained with the squared error to the oracle targets of the training prompts (loss sum over
valid rows) by the shared loop, and evaluated on held-out prompts by its error against their
oracle quantiles (computed with a different sampling key): MAE, RMSE, correlation, and the MAE of
the constant predictor (the mean training target) as a baseline.

The job :func:`run` (``job = 'train_reference'``) reads the reward model and the base policy
exported by finished ``train_rm`` and ``train_sft`` runs (``reference.rm_workdir``,
``reference.policy_workdir``; models rebuilt from their ``config.json``), and the shared samples
from ``reference.samples_path`` when set (checked against the prompts and the sampling settings),
else draws its own into ``<workdir>/base_samples.npz``.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc import rewards, runtime
from lsc.data import hh_rlhf, pipeline
from lsc.data.tokenizer import TruncationStats
from lsc.models import sampling
from lsc.train import common, loop, run_models, runner


@jax.jit
def _score_quantile(rm_graphdef_state, prompts, samples, q):
    graphdef, state = rm_graphdef_state
    b, k, r = samples.shape
    rows = jnp.repeat(prompts, k, axis=0)
    scores = nnx.merge(graphdef, state)(rows, samples.reshape(b * k, r)).astype(jnp.float32)
    return rewards.quantile_reference(scores.reshape(b, k), q), scores.reshape(b, k)


def sample_base(policy: nnx.Module, prompts: np.ndarray, key: jax.Array, *, num_samples: int,
                max_new_tokens: int, batch_size: int = 64, temperature: float = 1.0
                ) -> np.ndarray:
    """``int32[N, k, R]``: ``k = num_samples`` base-policy responses per prompt.

    Args:
      policy: an ``Autoregressive`` decoder (the base policy).
      prompts: ``int32[N, P]`` left-padded prompts.
      key: sampling key; batch ``i`` uses ``fold_in(key, i)``.
      max_new_tokens, temperature: ``R`` and the sampling temperature.
      batch_size: prompts per device batch (the last batch is padded by repeating row 0 and
        trimmed, so every batch has one shape).
    """
    prompts = np.asarray(prompts, np.int32)
    if prompts.shape[0] == 0:
        raise ValueError("sample_base needs at least one prompt")
    pg, ps = nnx.split(policy)
    out = []
    for i, (_, real, chunk) in enumerate(pipeline.padded_batches(prompts, batch_size)):
        sampled = sampling.sample(pg, ps, jnp.asarray(chunk), jax.random.fold_in(key, i),
                                  max_new_tokens=max_new_tokens, num_samples=num_samples,
                                  temperature=temperature)
        out.append(np.asarray(sampled.tokens)[:real])
    return np.concatenate(out).astype(np.int32)


def score_quantiles(reward_model: nnx.Module, prompts: np.ndarray, samples: np.ndarray, *,
                    quantile: float, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """``(float32[N], float32[N, k])``: the ``q``-quantile over each prompt's ``k`` samples of
    the reward and the scores themselves, ``samples`` ``int32[N, k, R]`` scored on device a batch
    of prompts at a time (padded as in :func:`sample_base`)."""
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


SPLITS = ("train", "test")


def _prompt_arrays(config: ml_collections.ConfigDict, workdir: str):
    """``(tokenizer, {split: int32[N, P]})``: the world's alignment (train) and evaluation (test)
    prompts, tokenized."""
    files, tok_path = common.world_files(config, workdir)
    tok = common.load_tokenizer(config, tok_path)
    p_len = int(config.data.prompt_len)
    out = {}
    for split in SPLITS:
        texts, _ = hh_rlhf.read_prompts(files.prompts[split], config.data.on_error)
        out[split] = pipeline.tokenize_prompts(texts, tok, p_len).arrays["prompt"]
    return tok, out


def _sampling_settings(config: ml_collections.ConfigDict) -> Dict[str, float]:
    ref = config.reference
    return {"seed": int(config.seed), "num_samples": int(ref.num_samples),
            "max_new_tokens": int(config.data.response_len),
            "temperature": float(ref.temperature)}


def write_base_samples(config: ml_collections.ConfigDict, workdir: str, path: str
                       ) -> Dict[str, np.ndarray]:
    """Draws the base-policy samples every predictor of ``config`` would draw (the policy of
    ``reference.policy_workdir``; split ``s`` with key ``fold_in(key(seed), s)``) and writes them
    to ``path`` (``<split>_prompts int32[N, P]``, ``<split>_samples int32[N, k, R]`` and the
    sampling settings), so that the predictors of several reward models share one draw
    (``reference.samples_path``). ``workdir`` receives the world's files. Returns the samples,
    ``{split: int32[N, k, R]}``."""
    ref = config.reference
    if not ref.get("policy_workdir"):
        raise ValueError("config.reference.policy_workdir is empty; give the workdir of a "
                         "finished train_sft run")
    tok, prompts = _prompt_arrays(config, workdir)
    policy = run_models.load_run_model("policy", "reference.policy_workdir", ref.policy_workdir,
                                       tok.vocab_size, reward=False).model
    settings = _sampling_settings(config)
    key = jax.random.key(settings["seed"])
    arrays = {}
    for s, split in enumerate(SPLITS):
        arrays[f"{split}_prompts"] = prompts[split]
        arrays[f"{split}_samples"] = sample_base(
            policy, prompts[split], jax.random.fold_in(key, s),
            num_samples=settings["num_samples"], max_new_tokens=settings["max_new_tokens"],
            batch_size=int(ref.sample_batch_size), temperature=settings["temperature"])
    runtime.write_npz_atomic(path, **arrays, **{k: np.asarray(v) for k, v in settings.items()})
    return {split: arrays[f"{split}_samples"] for split in SPLITS}


def read_base_samples(path: str, config: ml_collections.ConfigDict,
                      prompts: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``{split: int32[N, k, R]}`` from ``path`` (written by :func:`write_base_samples`), after
    checking that it was drawn for these prompts with this config's sampling settings (a mismatch
    names ``config.reference.samples_path``)."""
    with np.load(path) as saved:
        for name, want in _sampling_settings(config).items():
            got = saved[name].item() if name in saved else None
            if got != want:
                raise ValueError(f"config.reference.samples_path={path}: drawn with {name}={got}, "
                                 f"but this config has {want}")
        out = {}
        for split in SPLITS:
            if not np.array_equal(saved[f"{split}_prompts"], prompts[split]):
                raise ValueError(f"config.reference.samples_path={path}: its {split} prompts "
                                 "differ from this config's world")
            out[split] = saved[f"{split}_samples"]
    return out


def prompt_only(prompts: jax.Array) -> jax.Array:
    """The empty response ``int32[B, 1]`` (one pad token) paired with ``prompts[B, P]``."""
    return jnp.zeros((prompts.shape[0], 1), jnp.int32)


def predictor_loss_fn() -> loop.LossFn:
    """Squared error of ``model(prompt, empty)`` to ``batch['target']`` (sums over valid rows)."""

    def loss_fn(model, batch, rng):
        del rng
        pred = model(batch["prompt"], prompt_only(batch["prompt"])).astype(jnp.float32)
        w = batch["valid"].astype(jnp.float32)
        err = pred - batch["target"].astype(jnp.float32)
        return jnp.sum(w * err * err), jnp.sum(w), {"abs_error": jnp.sum(w * jnp.abs(err))}

    return loss_fn


def predictor_metrics(pred: np.ndarray, oracle: np.ndarray, train_mean: float) -> Dict[str, float]:
    """MAE, RMSE and Pearson correlation of ``pred`` vs ``oracle`` (float ``[N]``), and the MAE
    of always predicting ``train_mean``."""
    pred = np.asarray(pred, np.float64).reshape(-1)
    oracle = np.asarray(oracle, np.float64).reshape(-1)
    if pred.shape != oracle.shape or pred.size == 0:
        raise ValueError(f"need equal non-empty arrays, got {pred.shape} and {oracle.shape}")
    err = pred - oracle
    corr = (float(np.corrcoef(pred, oracle)[0, 1])
            if pred.std() > 0 and oracle.std() > 0 else 0.0)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "correlation": corr, "baseline_mae": float(np.abs(oracle - train_mean).mean())}


def target_table(prompts: np.ndarray, targets: np.ndarray) -> pipeline.TokenizedData:
    """A table with ``prompt int32[N, P]``, ``target float32[N]`` and ``valid`` for the loop."""
    n = prompts.shape[0]
    arrays = {"prompt": np.asarray(prompts, np.int32),
              "target": np.asarray(targets, np.float32).reshape(n),
              "valid": np.ones((n,), np.int32)}
    return pipeline.TokenizedData("prompts", arrays, 0, TruncationStats(examples=n))


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``train_reference`` job; exit code 0, :data:`lsc.train.runner.PREEMPTED_EXIT_CODE` or 1."""
    ref = config.reference
    for field in ("rm_workdir", "policy_workdir"):
        if not ref.get(field):
            raise ValueError(f"config.reference.{field} is empty; give the workdir of a finished "
                             f"{'train_rm' if field == 'rm_workdir' else 'train_sft'} run")
    if common.reward_pooling(config.model) != "last":
        raise ValueError("config.model.pooling must be 'last' for a reference predictor: it reads "
                         "the prompt alone (an empty response), which a pooled head cannot see")
    if config.data.source != "synthetic":
        raise ValueError("train_reference reads the synthetic world's prompts; "
                         "config.data.source must be 'synthetic'")
    tok, prompts = _prompt_arrays(config, workdir)
    train_x, test_x = prompts["train"], prompts["test"]

    loaded = run_models.load_run_model("reward_model", "reference.rm_workdir", ref.rm_workdir,
                                       tok.vocab_size, reward=True)
    reward_model = loaded.model
    records = [loaded.record, run_models.describe_run_model(
        "policy", "reference.policy_workdir", ref.policy_workdir, tok.vocab_size, reward=False)[1]]

    targets_path = os.path.join(workdir, "oracle_targets.npz")
    if os.path.exists(targets_path):
        saved = np.load(targets_path)
        train_y, test_y = saved["train"], saved["test"]
    else:
        if ref.get("samples_path"):
            samples = read_base_samples(ref.samples_path, config, prompts)
        else:
            samples = write_base_samples(config, workdir,
                                         os.path.join(workdir, "base_samples.npz"))
        kw = dict(quantile=float(ref.quantile), batch_size=int(ref.sample_batch_size))
        train_y, _ = score_quantiles(reward_model, train_x, samples["train"], **kw)
        test_y, _ = score_quantiles(reward_model, test_x, samples["test"], **kw)
        runtime.write_npz_atomic(targets_path, train=train_y, test=test_y)
    train_mean = float(np.mean(train_y))
    logging.info("oracle %.2f-quantiles over %d samples: train mean %.4f std %.4f",
                 float(ref.quantile), int(ref.num_samples), train_mean, float(np.std(train_y)))

    train_data = target_table(train_x, train_y)
    test_data = target_table(test_x, test_y)
    train_cfg = loop.TrainConfig.from_mapping(config.train)
    mesh, rules = common.make_mesh(config)
    create, _, rec = run_models.describe_config_model("model", "model", config.model,
                                                      tok.vocab_size, int(config.seed), reward=True)
    run_models.record(workdir, config, records + [rec])

    def outputs(model, batch):
        return {"pred": model(batch["prompt"], prompt_only(batch["prompt"])).astype(jnp.float32),
                "target": batch["target"]}

    evaluator = loop.Evaluator(
        common.eval_iterator_factory(test_data, int(config.eval.batch_size)), outputs,
        lambda out: predictor_metrics(out["pred"], out["target"], train_mean))
    try:
        result = loop.train(
            workdir=workdir, create_model=create, loss_fn=predictor_loss_fn(),
            train_data=common.train_iterator(train_data, train_cfg.batch_size, int(config.seed)),
            train_config=train_cfg, optim_config=config.optim, mesh=mesh, rules=rules,
            seed=int(config.seed), evaluator=evaluator,
            summary_extra=lambda s, g: {"oracle": {"quantile": float(ref.quantile),
                                                   "num_samples": int(ref.num_samples),
                                                   "train_mean": train_mean,
                                                   "train_std": float(np.std(train_y)),
                                                   "test_std": float(np.std(test_y))}})
    except runner.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return runner.PREEMPTED_EXIT_CODE if result.preempted else 0

