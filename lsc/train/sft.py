"""Supervised fine-tuning of a decoder-only policy on demonstrations (teacher forcing).

Batches are the ``sft`` layout of :mod:`lsc.data.pipeline`: ``prompt int32[B, P]`` (left-padded),
``response int32[B, R]`` (right-padded, EOS included when it fits), ``valid int32[B]``. The model
reads ``concat([prompt, response])``; the logits at position ``P - 1 + t`` predict response token
``t`` (:func:`lsc.models.decoder.response_logits`). The loss is the summed negative
log-likelihood of the **response tokens only**: prompt tokens, pad tokens and padding rows
(``valid == 0``) contribute nothing; the example count of the loop is the number of response
tokens, so the reported loss is the per-token NLL.

The job :func:`run` (``job = 'train_sft'``) trains the synthetic world's base policy (or a policy
on the chosen responses of hh-rlhf's alignment half) with the shared loop and reports held-out
per-token NLL and perplexity; on the synthetic world it also samples the trained policy on
held-out prompts and reports the gold scores of its samples next to those of the demonstrations.
"""

from __future__ import annotations

import sys
from typing import Dict, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc.data import hh_rlhf, pipeline, world
from lsc.models import decoder as decoder_lib
from lsc.train import common, loop, run_models, runner


def response_token_nll(model: nnx.Module, batch: Mapping[str, jax.Array]):
    """``(nll float32[B, R], mask float32[B, R], correct float32[B, R])`` over response tokens;
    ``mask`` is 1 for real response tokens of valid rows."""
    response = batch["response"]
    logits = decoder_lib.response_logits(model, batch["prompt"], response)
    nll = -decoder_lib.token_log_probs(logits, response)
    mask = ((response != model.pad_id) & (batch["valid"][:, None] > 0)).astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == response).astype(jnp.float32)
    return nll, mask, correct


def sft_loss_fn() -> loop.LossFn:
    """Loss for :func:`lsc.train.loop.train`: summed response-token NLL over the token count."""

    def loss_fn(model, batch, rng):
        del rng
        nll, mask, correct = response_token_nll(model, batch)
        return jnp.sum(nll * mask), jnp.sum(mask), {"token_accuracy": jnp.sum(correct * mask)}

    return loss_fn


def _eval_outputs(model, batch) -> Dict[str, jax.Array]:
    nll, mask, correct = response_token_nll(model, batch)
    return {"nll_sum": jnp.sum(nll * mask, axis=1), "tokens": jnp.sum(mask, axis=1),
            "correct": jnp.sum(correct * mask, axis=1)}


def _finalize(out: Dict[str, np.ndarray]) -> Dict[str, float]:
    tokens = max(float(out["tokens"].sum()), 1.0)
    nll = float(out["nll_sum"].sum()) / tokens
    return {"nll": nll, "perplexity": float(np.exp(nll)),
            "token_accuracy": float(out["correct"].sum()) / tokens}


def _demonstrations(config: ml_collections.ConfigDict, workdir: str):
    stats = hh_rlhf.ReadStats()
    if config.data.source == "synthetic":
        files, tok_path = common.world_files(config, workdir)
        train, _ = hh_rlhf.read_demonstrations(files.sft["train"], config.data.on_error, stats)
        test, _ = hh_rlhf.read_demonstrations(files.sft["test"], config.data.on_error, stats)
    elif config.data.source == "hh_rlhf":
        root = config.data.path
        subsets = list(config.data.get("subsets", ("helpful", "harmless")))
        train_all, _ = hh_rlhf.read_demonstrations(hh_rlhf.subset_files(root, subsets, "train"),
                                                   config.data.on_error, stats)
        _, train = hh_rlhf.split_in_half(train_all)  # the alignment half
        test, _ = hh_rlhf.read_demonstrations(hh_rlhf.subset_files(root, subsets, "test"),
                                              config.data.on_error, stats)
        tok_path = ""
    else:
        raise ValueError(f"config.data.source={config.data.source!r} is not supported by "
                         "train_sft; use 'synthetic' or 'hh_rlhf'")
    hh_rlhf.finish_read(stats, workdir, hh_rlhf.max_skip_fraction(config.data))
    if not train or not test:
        raise ValueError(f"train_sft needs training and held-out demonstrations, got "
                         f"{len(train)} and {len(test)}")
    return train, test, tok_path


def sample_gold_scores(graphdef, state, tok, demos, prompt_len: int, max_new_tokens: int,
                       seed: int, num_prompts: int = 64) -> dict:
    """Samples the policy once on the first ``num_prompts`` held-out prompts (temperature 1) and
    returns the mean gold scores of the samples and of the demonstrations for those prompts."""
    from lsc.models import sampling

    demos = list(demos)[:num_prompts]
    data = pipeline.tokenize_prompts([d.prompt for d in demos], tok, prompt_len)
    out = sampling.sample(graphdef, state, jnp.asarray(data.arrays["prompt"]),
                          jax.random.key(seed), max_new_tokens=max_new_tokens)
    tokens = np.asarray(out.tokens)[:, 0]
    # Ids past the tokenizer's vocabulary (the model's vocabulary may be padded) have no text.
    outside = tokens >= tok.vocab_size
    samples = [tok.decode(row[row < tok.vocab_size].tolist()) for row in tokens]
    prompts = [d.prompt for d in demos]
    result = {"prompts": len(demos), "out_of_vocabulary_tokens": int(outside.sum())}
    if outside.any():
        logging.warning("%d sampled ids are outside the tokenizer's vocabulary (%d) and were "
                        "dropped before decoding", int(outside.sum()), tok.vocab_size)
    for prop in ("helpful", "harmless"):
        result[f"policy_{prop}"] = float(world.gold_scores(prompts, samples, prop).mean())
        result[f"demos_{prop}"] = float(world.gold_scores(
            prompts, [d.response for d in demos], prop).mean())
    result["examples"] = [{"prompt": p, "sample": s} for p, s in zip(prompts[:3], samples[:3])]
    return result


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """The ``train_sft`` job; exit code 0, :data:`lsc.train.runner.PREEMPTED_EXIT_CODE` or 1."""
    if config.model.kind != "decoder":
        raise ValueError("train_sft trains a decoder-only policy; set config.model.kind='decoder'")
    train_demos, test_demos, tok_default = _demonstrations(config, workdir)
    tok = common.load_tokenizer(config, tok_default)
    p_len, r_len = int(config.data.prompt_len), int(config.data.response_len)
    train_data = pipeline.tokenize_sft(train_demos, tok, p_len, r_len)
    test_data = pipeline.tokenize_sft(test_demos, tok, p_len, r_len)
    train_cfg = loop.TrainConfig.from_mapping(config.train)
    mesh, rules = common.make_mesh(config)
    create, _, rec = run_models.describe_config_model("model", "model", config.model,
                                                      tok.vocab_size, int(config.seed))
    run_models.record(workdir, config, [rec])
    evaluator = loop.Evaluator(common.eval_iterator_factory(test_data, int(config.eval.batch_size)),
                               _eval_outputs, _finalize)

    def extra(state, graphdef):
        out = {"train_examples": len(train_data)}
        if config.data.source == "synthetic":
            model_state = nnx.merge(graphdef, state.params, state.model_state)
            g, s = nnx.split(model_state)
            out["gold"] = sample_gold_scores(g, s, tok, test_demos, p_len, r_len,
                                             int(config.seed))
            logging.info("SFT policy gold scores: %s", {k: v for k, v in out["gold"].items()
                                                        if k != "examples"})
        return out

    try:
        result = loop.train(
            workdir=workdir, create_model=create, loss_fn=sft_loss_fn(),
            train_data=common.train_iterator(train_data, train_cfg.batch_size, int(config.seed)),
            train_config=train_cfg, optim_config=config.optim, mesh=mesh, rules=rules,
            seed=int(config.seed), evaluator=evaluator, summary_extra=extra)
    except runner.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return runner.PREEMPTED_EXIT_CODE if result.preempted else 0

