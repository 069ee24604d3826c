"""Reward-model training: Bradley-Terry pairwise and pointwise cross-entropy, with evaluation.

Losses (per example; ``r_c``, ``r_r`` float32 ``[B]`` are the rewards of the chosen and rejected
responses, ``r`` float32 ``[B]`` a pointwise reward, ``y`` int ``[B]`` a 0/1 label):

* Bradley-Terry: ``-log sigmoid(r_c - r_r - margin)`` plus the centering regulariser
  ``center_coef * (r_c + r_r)**2`` (Eisenstein et al. 2023; TRL's ``center_rewards_coefficient``),
  whose batch mean is ``center_coef * mean((r_c + r_r)**2)``. It pins the free additive constant of
  a BT model so rewards are centred at zero.
* Pointwise: binary cross-entropy with the reward as the logit,
  ``-y log sigmoid(r) - (1 - y) log sigmoid(-r)``.

Evaluation on held-out pairs (``delta = r_c - r_r``):

* pairwise accuracy: ``mean(delta > 0) + 0.5 * mean(delta == 0)``;
* BT log-likelihood: ``mean(log sigmoid(delta))``;
* calibration of ``p = sigmoid(delta)``: each pair is counted in both orientations (``(p, 1)``
  and ``(1 - p, 0)``, so the outcome is not constant), probabilities are put into
  ``num_bins`` equal-width bins; per bin the mean confidence and the observed frequency; the
  expected calibration error is ``sum_b (n_b / N) |freq_b - conf_b|``.

The job :func:`run` (``job = 'train_rm'``) trains on the synthetic world or on the reward-model
half of hh-rlhf (``lsc.train.common``) with the shared loop (``lsc.train.loop``) and writes
``summary.json`` with the held-out metrics; on the synthetic world it also reports the gold-label
ceiling: the expected accuracy of the gold scorer on the held-out labels,
``mean(max(sigmoid(ds / T), 1 - sigmoid(ds / T)))`` with ``ds`` the gold score difference and
``T`` the label temperature (the labels were drawn from ``sigmoid(ds / T)``), and the gold
scorer's accuracy measured on the drawn labels.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc.data import pipeline, world
from lsc.train import common, loop, run_models, runner

LOSSES = ("bradley_terry", "pointwise")
REPLICATE_SEED_STRIDE = 1_000_003
"""``rm.replicate = r`` (pair draw ``r``) initialises and orders the data with
``seed + r * stride``."""


# ----------------------------------------------------------------------------- losses


def bradley_terry_loss(r_chosen: jax.Array, r_rejected: jax.Array, margin=0.0,
                       center_coef: float = 0.0) -> jax.Array:
    """Per-pair BT loss ``float32[B]``: ``-log sigmoid(r_c - r_r - margin) + c (r_c + r_r)^2``.

    ``margin`` is a scalar or ``float32[B]``; stable for large ``|r_c - r_r|``.
    """
    r_c = jnp.asarray(r_chosen, jnp.float32)
    r_r = jnp.asarray(r_rejected, jnp.float32)
    loss = -jax.nn.log_sigmoid(r_c - r_r - jnp.asarray(margin, jnp.float32))
    if center_coef:
        loss = loss + center_coef * jnp.square(r_c + r_r)
    return loss


def pointwise_loss(reward: jax.Array, label: jax.Array) -> jax.Array:
    """Per-example BCE ``float32[B]`` with ``reward`` as the logit of ``label`` (0/1)."""
    r = jnp.asarray(reward, jnp.float32)
    y = jnp.asarray(label, jnp.float32)
    return -(y * jax.nn.log_sigmoid(r) + (1.0 - y) * jax.nn.log_sigmoid(-r))


def pairwise_loss_fn(margin: float = 0.0, center_coef: float = 0.0) -> loop.LossFn:
    """Loss for :func:`lsc.train.loop.train` on pairwise batches (``prompt``, ``chosen``,
    ``rejected``, ``valid``; optional per-pair ``margin float32[B]``). Chosen and rejected are
    scored in one forward pass of ``2B`` rows."""

    def loss_fn(model, batch, rng):
        del rng
        b = batch["prompt"].shape[0]
        prompts = jnp.concatenate([batch["prompt"], batch["prompt"]], axis=0)
        responses = jnp.concatenate([batch["chosen"], batch["rejected"]], axis=0)
        rewards = model(prompts, responses).astype(jnp.float32)
        r_c, r_r = rewards[:b], rewards[b:]
        w = batch["valid"].astype(jnp.float32)
        m = batch.get("margin", margin)
        per = bradley_terry_loss(r_c, r_r, m, center_coef)
        delta = r_c - r_r
        acc = jnp.where(delta > 0, 1.0, jnp.where(delta == 0, 0.5, 0.0))
        sums = {
            "accuracy": jnp.sum(w * acc),
            "bt_nll": jnp.sum(w * -jax.nn.log_sigmoid(delta)),
            "reward_mean": jnp.sum(w * 0.5 * (r_c + r_r)),
        }
        return jnp.sum(w * per), jnp.sum(w), sums

    return loss_fn


def pointwise_loss_fn() -> loop.LossFn:
    """Loss for pointwise batches (``prompt``, ``response``, ``label``, ``valid``)."""

    def loss_fn(model, batch, rng):
        del rng
        r = model(batch["prompt"], batch["response"]).astype(jnp.float32)
        w = batch["valid"].astype(jnp.float32)
        y = batch["label"].astype(jnp.float32)
        per = pointwise_loss(r, y)
        correct = jnp.where((r > 0) == (y > 0.5), 1.0, 0.0)
        return jnp.sum(w * per), jnp.sum(w), {"accuracy": jnp.sum(w * correct),
                                              "reward_mean": jnp.sum(w * r)}

    return loss_fn


# ----------------------------------------------------------------------------- evaluation


def pair_rewards(model: nnx.Module, batch: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
    """Per-pair rewards ``{'r_chosen': float32[B], 'r_rejected': float32[B]}``."""
    b = batch["prompt"].shape[0]
    prompts = jnp.concatenate([batch["prompt"], batch["prompt"]], axis=0)
    responses = jnp.concatenate([batch["chosen"], batch["rejected"]], axis=0)
    rewards = model(prompts, responses).astype(jnp.float32)
    return {"r_chosen": rewards[:b], "r_rejected": rewards[b:]}


def _log_sigmoid_np(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def calibration(delta: np.ndarray, num_bins: int = 10) -> dict:
    """Reliability of ``p = sigmoid(delta)`` (both orientations; see the module docstring).

    Returns ``{'ece': float, 'bins': [{'lo', 'hi', 'count', 'confidence', 'frequency'}, ...]}``
    (empty bins have count 0 and NaN-free zeros).
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    delta = np.asarray(delta, np.float64).reshape(-1)
    p = np.exp(_log_sigmoid_np(delta))
    probs = np.concatenate([p, 1.0 - p])
    outcome = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    idx = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, num_bins - 1)
    bins, ece, n = [], 0.0, len(probs)
    for b in range(num_bins):
        sel = idx == b
        count = int(sel.sum())
        conf = float(probs[sel].mean()) if count else 0.0
        freq = float(outcome[sel].mean()) if count else 0.0
        if count:
            ece += count / n * abs(freq - conf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count,
                     "confidence": conf, "frequency": freq})
    return {"ece": float(ece), "bins": bins}


def pairwise_metrics(r_chosen: np.ndarray, r_rejected: np.ndarray, num_bins: int = 10,
                     bins: bool = False) -> dict:
    """Held-out metrics from per-pair rewards ``float[N]``: accuracy, BT log-likelihood (mean
    ``log sigmoid(delta)``), ECE, mean/std of the rewards; ``bins=True`` adds the reliability bins."""
    r_c = np.asarray(r_chosen, np.float64).reshape(-1)
    r_r = np.asarray(r_rejected, np.float64).reshape(-1)
    if r_c.shape != r_r.shape or r_c.size == 0:
        raise ValueError(f"need equal non-empty reward arrays, got {r_c.shape} and {r_r.shape}")
    delta = r_c - r_r
    cal = calibration(delta, num_bins)
    rewards = np.concatenate([r_c, r_r])
    out = {
        "accuracy": float(np.mean(np.where(delta > 0, 1.0, np.where(delta == 0, 0.5, 0.0)))),
        "log_likelihood": float(np.mean(_log_sigmoid_np(delta))),
        "ece": cal["ece"],
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "pairs": int(r_c.size),
    }
    if bins:
        out["reliability"] = cal["bins"]
    return out


def gold_ceiling(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
                 prop: str, temperature: float = 1.0) -> dict:
    """Accuracy ceiling of the synthetic world's held-out labels for property ``prop``.

    ``expected``: ``mean(max(s, 1 - s))`` with ``s = sigmoid((g_c - g_r) / T)`` (the Bayes
    accuracy under the label noise); ``measured``: the gold scorer's accuracy on the drawn labels
    (ties count one half); ``tie_fraction``: pairs whose gold scores are equal.
    """
    g_c = world.gold_scores(prompts, chosen, prop).astype(np.float64)
    g_r = world.gold_scores(prompts, rejected, prop).astype(np.float64)
    d = (g_c - g_r) / temperature
    s = np.exp(_log_sigmoid_np(d))
    return {
        "expected": float(np.mean(np.maximum(s, 1.0 - s))),
        "measured": float(np.mean(np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0)))),
        "tie_fraction": float(np.mean(d == 0)),
    }


# ----------------------------------------------------------------------------- the job


def _rm_evaluator(test: pipeline.TokenizedData, batch_size: int, num_bins: int) -> loop.Evaluator:
    return loop.Evaluator(
        data=common.eval_iterator_factory(test, batch_size),
        outputs=pair_rewards,
        finalize=lambda out: {k: v for k, v in pairwise_metrics(
            out["r_chosen"], out["r_rejected"], num_bins).items() if k != "pairs"},
    )


def train_loss(config: ml_collections.ConfigDict) -> loop.LossFn:
    """The loss of ``config.rm.loss``: :func:`pairwise_loss_fn` (``rm.margin``,
    ``rm.center_coef``) on pairwise batches or :func:`pointwise_loss_fn`."""
    if config.rm.loss == "bradley_terry":
        return pairwise_loss_fn(float(config.rm.margin), float(config.rm.center_coef))
    return pointwise_loss_fn()


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``train_rm`` job: trains a reward model; returns the process exit code.

    0 when done (``summary.json`` written), :data:`lsc.train.runner.PREEMPTED_EXIT_CODE` after a
    SIGTERM checkpoint, 1 on a non-finite loss (the error names the step).
    """
    prop = config.rm.property
    loss_kind = config.rm.loss
    # A replicate: its own draw of the training pairs, initialisation and data order.
    replicate = int(config.rm.get("replicate", 0))
    seed = int(config.seed) + REPLICATE_SEED_STRIDE * replicate
    if loss_kind not in LOSSES:
        raise ValueError(f"config.rm.loss must be one of {LOSSES}, got {loss_kind!r}")
    train_pairs, test_pairs, tok_default = common.read_pairs_for(config, workdir, prop, replicate)
    # Without data.tokenizer: the world's own, else the imported checkpoint's (spiece.model).
    tok = common.load_tokenizer(config, tok_default or config.model.get("init_from", ""))
    p_len, r_len = int(config.data.prompt_len), int(config.data.response_len)
    loss_fn = train_loss(config)
    if loss_kind == "bradley_terry":
        train_data = pipeline.tokenize_pairs(train_pairs, tok, p_len, r_len)
    else:
        train_data = pipeline.tokenize_pointwise(pipeline.pointwise_from_pairs(train_pairs), tok,
                                                 p_len, r_len)
    if not test_pairs:
        raise ValueError("no held-out pairs to evaluate the reward model on")
    test_data = pipeline.tokenize_pairs(test_pairs, tok, p_len, r_len)

    train_cfg = loop.TrainConfig.from_mapping(config.train)
    mesh, rules = common.make_mesh(config)
    create, initial, rec = run_models.describe_config_model("model", "model", config.model,
                                                            tok.vocab_size, seed, reward=True)
    run_models.record(workdir, config, [rec])
    eval_batch = int(config.eval.batch_size)
    num_bins = int(config.eval.calibration_bins)
    evaluator = _rm_evaluator(test_data, eval_batch, num_bins)

    def extra(state, graphdef):
        final = loop.evaluate(
            loop.Evaluator(evaluator.data, pair_rewards, lambda out: pairwise_metrics(
                out["r_chosen"], out["r_rejected"], num_bins, bins=True)),
            graphdef, state.params, state.model_state, mesh)
        out = {"held_out": final, "property": prop, "loss_kind": loss_kind,
               "train_examples": len(train_data)}
        if config.data.source == "synthetic":
            ceiling = gold_ceiling([p.prompt for p in test_pairs], [p.chosen for p in test_pairs],
                                   [p.rejected for p in test_pairs], prop,
                                   float(config.world.label_temperature))
            out["gold_ceiling"] = ceiling
            logging.info("held-out accuracy %.4f; gold-label ceiling %.4f (expected), %.4f "
                         "(measured)", final["accuracy"], ceiling["expected"], ceiling["measured"])
        return out

    try:
        result = loop.train(
            workdir=workdir, create_model=create, loss_fn=loss_fn,
            train_data=common.train_iterator(train_data, train_cfg.batch_size, seed),
            train_config=train_cfg, optim_config=config.optim, mesh=mesh, rules=rules,
            seed=seed, evaluator=evaluator, initial_model=initial,
            summary_extra=extra)
    except runner.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.preempted:
        return runner.PREEMPTED_EXIT_CODE
    logging.info("reward model done: %s", os.path.join(workdir, "summary.json"))
    return 0
