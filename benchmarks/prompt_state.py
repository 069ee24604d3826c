"""Reading each prompt once: scoring and judging from kept prompt states vs the full pass.

The main job scores base-policy samples (``k`` per prompt, every reward model) and judges every
snapshot of every RLHF run on the same evaluation prompts. Two ways to compute the same numbers,
on decoders of the main job's size (``d_model`` 64, 2 layers, 4 heads, vocabulary 256; random
weights), side by side in one run (:func:`bench_util.timed_pair`, alternating windows):

* **scoring** ``k`` responses per prompt with ``m`` reward models: the full pass (each prompt
  repeated ``k`` times and read with every response, ``concat([prompt, response])``) vs
  :func:`lsc.align.references.score_samples`, which reads each prompt once
  (``DecoderLM.prompt_state``) and continues it over the ``k`` responses (``extend``);
* **judging** one batch of a snapshot (one sample per prompt; the policy's and ``pi0``'s
  log-probs; two reward models): the full pass (the sampler, then teacher-forced passes of the
  policy and of ``pi0``, then the reward models on ``concat``) vs what
  :class:`lsc.repro.samples.PromptSet` does (the sampler's ``model_logprobs`` for the policy;
  ``pi0`` and the reward models continued from the prompt states the batch keeps, computed once
  outside the timed loop).

Each row gives both times, their ratio and the largest absolute difference between the two
paths' outputs (rounding). Prompts ``int32[B, 32]`` are left-padded, responses ``int32[R = 24]``
right-padded after an EOS at a random length, as the sampler writes them.

Usage: ``python benchmarks/prompt_state.py [--threads 0] [--batch 100] [--repeats 3]
[--json out.json]``
(``--threads 0``: XLA's default thread pool, as the main job's workers run; 1: one thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_util  # noqa: E402

P, R, VOCAB = 32, 24, 256


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0,
                        help="0: XLA's default thread pool; 1: single-threaded XLA")
    parser.add_argument("--batch", type=int, default=100, help="prompts per call (the main "
                        "job's evaluate.batch_size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per way (one "
                        "call each for scoring; --judge-steps calls each for judging)")
    parser.add_argument("--judge-steps", type=int, default=5)
    parser.add_argument("--json", default="")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = _parse_args(argv)
    bench_util.set_threads(args.threads)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from configs.models import decoder as presets
    from lsc.align import references
    from lsc.models import decoder, heads, sampling

    cfg = dataclasses.replace(
        decoder.DecoderConfig.from_mapping(presets.get_config("tiny")), vocab_size=VOCAB,
        d_model=64, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16, mlp_dim=128)

    def reward_model(seed):
        return heads.RewardModel(decoder.DecoderLM(cfg, rngs=nnx.Rngs(seed)),
                                 rngs=nnx.Rngs(seed + 1), head_init=nnx.initializers.normal(1.0))

    rs = np.random.RandomState(0)
    b = args.batch
    lengths = rs.randint(8, P + 1, size=b)
    prompts = np.zeros((b, P), np.int32)
    for i, n in enumerate(lengths):
        prompts[i, P - n:] = rs.randint(3, VOCAB, size=n)
    prompts = jnp.asarray(prompts)

    def responses(k):
        out = np.zeros((b, k, R), np.int32)
        for i in range(b):
            for j in range(k):
                n = rs.randint(1, R + 1)
                out[i, j, :n] = rs.randint(3, VOCAB, size=n)
                out[i, j, n - 1] = cfg.eos_id
        return jnp.asarray(out)

    @jax.jit
    def full_scores(splits, prompts, samples):
        bb, k, r = samples.shape
        rows = jnp.repeat(prompts, k, axis=0)
        flat = samples.reshape(bb * k, r)
        return jnp.stack([references.score_rows(gd, st, rows, flat) for gd, st in splits],
                         axis=-1).reshape(bb, k, len(splits))

    @jax.jit
    def kept_scores(splits, prompts, samples):
        return references.score_samples(tuple(s[0] for s in splits), tuple(s[1] for s in splits),
                                        prompts, samples)

    rows = []
    rms = [nnx.split(reward_model(10 * i)) for i in range(12)]
    print(f"{'what':<34}{'full s':>10}{'kept s':>10}{'full/kept':>11}{'max |diff|':>12}")
    for m in (2, 12):
        for k in (1, 16, 64):
            if m == 2 and k == 64:
                continue
            samples = responses(k)
            splits = tuple(rms[:m])
            a = np.asarray(full_scores(splits, prompts, samples))
            c = np.asarray(kept_scores(splits, prompts, samples))
            ta, tc = bench_util.timed_pair(
                lambda: jax.block_until_ready(full_scores(splits, prompts, samples)),
                lambda: jax.block_until_ready(kept_scores(splits, prompts, samples)),
                1, args.repeats)
            row = {"what": f"score k={k}, {m} reward models", "full_s": ta, "kept_s": tc,
                   "ratio": ta / tc, "max_abs_diff": float(np.max(np.abs(a - c)))}
            rows.append(row)
            print(f"{row['what']:<34}{ta:>10.4f}{tc:>10.4f}{ta / tc:>11.2f}"
                  f"{row['max_abs_diff']:>12.2e}")

    # Judging one batch of a snapshot.
    policy = nnx.split(decoder.DecoderLM(cfg, rngs=nnx.Rngs(7)))
    pi0 = nnx.split(decoder.DecoderLM(cfg, rngs=nnx.Rngs(8)))
    judges = tuple(rms[:2])
    key = jax.random.key(0)

    @jax.jit
    def teacher_forced(split, prompts, tokens, mask):
        return decoder.response_log_probs(nnx.merge(*split), prompts, tokens, mask)

    @jax.jit
    def kept_states(pi0, judges, prompts):
        return (nnx.merge(*pi0).prompt_state(prompts, R),
                references.prompt_states(tuple(s[0] for s in judges),
                                         tuple(s[1] for s in judges), prompts, R))

    @jax.jit
    def from_states(pi0, judges, states, tokens, mask):
        pi0_state, rm_states = states
        logp0 = decoder.extend_log_probs(nnx.merge(*pi0), pi0_state, tokens, mask)
        rew = references.score_samples(tuple(s[0] for s in judges), tuple(s[1] for s in judges),
                                       prompts, tokens[:, None], states=rm_states)
        return logp0, rew

    def draw():
        return sampling.sample(*policy, prompts, key, max_new_tokens=R)

    def judge_full():
        out = draw()
        tokens, mask = out.tokens[:, 0], out.mask[:, 0].astype(jnp.float32)
        logp = teacher_forced(policy, prompts, tokens, mask)
        logp0 = teacher_forced(pi0, prompts, tokens, mask)
        return logp, logp0, full_scores(judges, prompts, out.tokens)

    states = kept_states(pi0, judges, prompts)

    def judge_kept():
        out = draw()
        tokens, mask = out.tokens[:, 0], out.mask[:, 0].astype(jnp.float32)
        logp0, rew = from_states(pi0, judges, states, tokens, mask)
        return out.model_logprobs[:, 0], logp0, rew

    a, c = judge_full(), judge_kept()
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, c))
    ts = bench_util.timed_pair(lambda: jax.block_until_ready(draw()),
                               lambda: jax.block_until_ready(draw()), args.judge_steps,
                               args.repeats)
    ta, tc = bench_util.timed_pair(lambda: jax.block_until_ready(judge_full()),
                                   lambda: jax.block_until_ready(judge_kept()),
                                   args.judge_steps, args.repeats)
    row = {"what": "judge one snapshot batch", "full_s": ta, "kept_s": tc, "ratio": ta / tc,
           "max_abs_diff": diff, "sampling_alone_s": float(np.mean(ts))}
    rows.append(row)
    print(f"{row['what']:<34}{ta:>10.4f}{tc:>10.4f}{ta / tc:>11.2f}{diff:>12.2e}")
    print(f"  (of which sampling alone: {row['sampling_alone_s']:.4f} s)")
    env = bench_util.environment()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "batch": b, "threads": args.threads, "environment": env},
                      f, indent=2)


if __name__ == "__main__":
    main()
