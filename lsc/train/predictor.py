"""The predictor (the note's "predict median"): ``r_ref(x)`` from the prompt alone.

Targets. For each prompt ``x`` the oracle reference is the ``q``-quantile of a reward model's
scores of ``k`` samples ``y ~ pi_0(. | x)`` from the base policy
(:func:`lsc.align.references.pi0_samples.score_quantiles`). The samples depend on the base
policy, the prompts and the seed only, so the predictors of several reward models can share one
draw: :func:`write_reference_samples` writes it (a reference-samples file,
:mod:`lsc.align.references.pi0_samples`), ``reference.samples_path`` reads it (the
reproduction's predictor stage draws once for its six predictors).

Predictor. A :class:`lsc.models.heads.RewardModel` on a decoder backbone called with the prompt
and an empty response (one pad token), so its scalar is read at the last prompt token. It is
trained with the squared error to the oracle targets of the training prompts (loss sum over
valid rows) by the shared loop, and evaluated on held-out prompts by its error against their
oracle quantiles (computed with a different sampling key): MAE, RMSE, correlation, and the MAE of
the constant predictor (the mean training target) as a baseline.

The job :func:`run` (``job = 'train_predictor'``) reads the reward model and the base policy
exported by finished ``train_rm`` and ``train_sft`` runs (``reference.rm_workdir``,
``reference.policy_workdir``; models rebuilt from their ``config.json``), and the shared samples
from ``reference.samples_path`` when set (checked against the prompts and the sampling settings),
else draws its own into ``<workdir>/reference_samples.npz``.
"""

from __future__ import annotations

import os
import sys
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lsc import runtime
from lsc.align.references import pi0_samples
from lsc.data import hh_rlhf, pipeline
from lsc.data.tokenizer import TruncationStats
from lsc.train import common, loop, run_models, runner


def _prompt_arrays(config: ml_collections.ConfigDict, workdir: str):
    """``(tokenizer, {split: int32[N, P]})``: the world's alignment (train) and evaluation (test)
    prompts, tokenized."""
    files, tok_path = common.world_files(config, workdir)
    tok = common.load_tokenizer(config, tok_path)
    p_len = int(config.data.prompt_len)
    out = {}
    for split in pi0_samples.SPLITS:
        texts, _ = hh_rlhf.read_prompts(files.prompts[split], config.data.on_error)
        out[split] = pipeline.tokenize_prompts(texts, tok, p_len).arrays["prompt"]
    return tok, out


def _sampling_settings(config: ml_collections.ConfigDict) -> Dict[str, float]:
    ref = config.reference
    return {"seed": int(config.seed), "num_samples": int(ref.num_samples),
            "max_new_tokens": int(config.data.response_len),
            "temperature": float(ref.temperature)}


def write_reference_samples(config: ml_collections.ConfigDict, workdir: str, path: str
                            ) -> Dict[str, np.ndarray]:
    """Draws the base-policy samples every predictor of ``config`` would draw (the policy of
    ``reference.policy_workdir``; :func:`lsc.align.references.pi0_samples.draw_splits` with
    ``config.seed``; the policy read onto the mesh of ``config.mesh``) and writes them to the
    reference-samples file ``path``, so that the predictors of several reward models share one
    draw (``reference.samples_path``). ``workdir`` receives the world's files. Returns the
    samples, ``{split: int32[N, k, R]}``."""
    ref = config.reference
    if not ref.get("policy_workdir"):
        raise ValueError("config.reference.policy_workdir is empty; give the workdir of a "
                         "finished train_sft run")
    tok, prompts = _prompt_arrays(config, workdir)
    policy = run_models.load_run_model("policy", "reference.policy_workdir", ref.policy_workdir,
                                       tok.vocab_size, reward=False,
                                       shardings=run_models.mesh_shardings(
                                           *common.make_mesh(config))).model
    settings = _sampling_settings(config)
    samples = pi0_samples.draw_splits(
        policy, prompts, settings["seed"], num_samples=settings["num_samples"],
        max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
        batch_size=int(ref.sample_batch_size))
    pi0_samples.write_file(path, prompts, samples, settings)
    return samples


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
    """The ``train_predictor`` job; exit code 0, :data:`lsc.train.runner.PREEMPTED_EXIT_CODE`
    or 1."""
    ref = config.reference
    for field in ("rm_workdir", "policy_workdir"):
        if not ref.get(field):
            raise ValueError(f"config.reference.{field} is empty; give the workdir of a finished "
                             f"{'train_rm' if field == 'rm_workdir' else 'train_sft'} run")
    if common.reward_pooling(config.model) != "last":
        raise ValueError("config.model.pooling must be 'last' for a predictor: it reads "
                         "the prompt alone (an empty response), which a pooled head cannot see")
    if config.data.source != "synthetic":
        raise ValueError("train_predictor reads the synthetic world's prompts; "
                         "config.data.source must be 'synthetic'")
    tok, prompts = _prompt_arrays(config, workdir)
    train_x, test_x = prompts["train"], prompts["test"]

    mesh, rules = common.make_mesh(config)
    loaded = run_models.load_run_model("reward_model", "reference.rm_workdir", ref.rm_workdir,
                                       tok.vocab_size, reward=True,
                                       shardings=run_models.mesh_shardings(mesh, rules))
    reward_model = loaded.model
    records = [loaded.record, run_models.describe_run_model(
        "policy", "reference.policy_workdir", ref.policy_workdir, tok.vocab_size, reward=False)[1]]

    targets_path = os.path.join(workdir, "oracle_targets.npz")
    if os.path.exists(targets_path):
        saved = np.load(targets_path)
        train_y, test_y = saved["train"], saved["test"]
    else:
        if ref.get("samples_path"):
            samples = pi0_samples.read_splits(ref.samples_path, prompts,
                                              _sampling_settings(config),
                                              field="config.reference.samples_path")
        else:
            samples = write_reference_samples(config, workdir,
                                              os.path.join(workdir, pi0_samples.FILE))
        kw = dict(quantile=float(ref.quantile), batch_size=int(ref.sample_batch_size))
        train_y, _ = pi0_samples.score_quantiles(reward_model, train_x, samples["train"], **kw)
        test_y, _ = pi0_samples.score_quantiles(reward_model, test_x, samples["test"], **kw)
        runtime.write_npz_atomic(targets_path, train=train_y, test=test_y)
    train_mean = float(np.mean(train_y))
    logging.info("oracle %.2f-quantiles over %d samples: train mean %.4f std %.4f",
                 float(ref.quantile), int(ref.num_samples), train_mean, float(np.std(train_y)))

    train_data = target_table(train_x, train_y)
    test_data = target_table(test_x, test_y)
    train_cfg = loop.TrainConfig.from_mapping(config.train)
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

