"""RLHF step breakdown: sample / score / reference / update, and growth with k and response length.

Usage::

  python benchmarks/rlhf_step.py [--steps 5] [--out benchmarks/RESULTS_rlhf.md]

Runs :class:`lsc.align.rlhf.RLTrainer` (PPO, phased rollout so every phase is timed separately)
with randomly initialised decoder models (policy, pi0, one reward model of the same shape) on the
available devices. The reference is recomputed every step (``reference_cache = False``) with the
quantile source, so its cost is that of ``K`` base-policy samples per prompt. For each setting the
first step (compilation) is dropped and the median over the remaining steps is reported. Ratios
are against the baseline setting measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lsc.align import rlhf, utility  # noqa: E402
from lsc.models import decoder, heads  # noqa: E402
from lsc.parallel import mesh as mesh_lib  # noqa: E402
from lsc.parallel import partitioning  # noqa: E402
from lsc.train import optim  # noqa: E402

VOCAB, P, B = 256, 32, 8


def arch():
    return decoder.DecoderConfig(vocab_size=VOCAB, d_model=64, num_layers=2, num_heads=4,
                                 num_kv_heads=4, head_dim=16, mlp_dim=128, init_std=0.02)


def measure(k: int, r: int, ref_k: int, steps: int, mesh):
    spec = utility.UtilitySpec("lsc", ("helpful",),
                               (utility.ReferenceSpec("quantile", 0.85, ref_k),))
    rm = heads.RewardModel(decoder.DecoderLM(arch(), rngs=nnx.Rngs(5)), rngs=nnx.Rngs(6),
                           head_init=nnx.initializers.normal(1.0))
    models = rlhf.Models(pi0=decoder.DecoderLM(arch(), rngs=nnx.Rngs(0)), reward_models=[rm])
    cfg = rlhf.RLConfig(num_steps=steps, batch_size=B, algorithm="ppo", num_samples=k,
                        kl_coef=0.05, ppo_epochs=1, num_minibatches=1, time_phases=True,
                        reference_cache=False, progress=False)
    tx = optim.make_optimizer(dict(learning_rate=1e-4), steps)
    trainer = rlhf.RLTrainer(spec, cfg, models, tx, tx, mesh, partitioning.DEFAULT_RULES,
                             num_prompts=B, response_len=r)
    rng = np.random.default_rng(0)
    prompts = rng.integers(2, VOCAB, (B, P)).astype(np.int32)
    batch = {"prompt": prompts, "slot": np.arange(B, dtype=np.int32)}
    state = trainer.init_state()
    rows = []
    for _ in range(steps + 1):
        t = {}
        t0 = time.perf_counter()
        state, _ = trainer.step(state, batch, 0.05, t)
        t["time/step"] = time.perf_counter() - t0
        rows.append(t)
    rows = rows[1:]  # drop the compiling step
    keys = ("time/sample", "time/score", "time/reference", "time/update", "time/step")
    return {kk: statistics.median(row[kk] for row in rows) for kk in keys}, trainer.traces


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "RESULTS_rlhf.md"))
    args = ap.parse_args()
    mesh = mesh_lib.make_mesh({"data": -1})
    settings = [(1, 16), (2, 16), (4, 16), (8, 16), (1, 32), (1, 64)]
    ref_k = 8
    results = []
    for k, r in settings:
        times, traces = measure(k, r, ref_k, args.steps, mesh)
        results.append(((k, r), times))
        print(f"k={k} R={r}: " + ", ".join(f"{n.split('/')[1]} {v * 1e3:.1f} ms"
                                           for n, v in times.items()) + f"  traces={traces}",
              flush=True)
    base = results[0][1]["time/step"]
    dev = jax.devices()[0]
    lines = [
        "# RLHF step breakdown",
        "",
        f"Command: `python benchmarks/rlhf_step.py --steps {args.steps}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"JAX {jax.__version__} on {dev.platform} ({len(jax.devices())} device(s)).",
        "",
        f"Setting: PPO (1 epoch, 1 mini-batch), B = {B} prompts of P = {P} tokens, decoder policy "
        f"/ pi0 / reward model with d_model 64, 2 layers, vocabulary {VOCAB} (random weights), "
        f"reference = 0.85-quantile of K = {ref_k} pi0 samples recomputed every step (no cache). "
        f"Median over {args.steps} steps after the compiling one; every phase is a separate "
        "jitted call followed by a device sync.",
        "",
        "| k | R | sample ms | score ms | reference ms | update ms | step ms | step / (k=1, R=16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (k, r), t in results:
        lines.append(f"| {k} | {r} | {t['time/sample'] * 1e3:.1f} | {t['time/score'] * 1e3:.1f} "
                     f"| {t['time/reference'] * 1e3:.1f} | {t['time/update'] * 1e3:.1f} "
                     f"| {t['time/step'] * 1e3:.1f} | {t['time/step'] / base:.2f} |")
    lines += ["", "`score` includes the reward model, the policy and pi0 log-probabilities, the "
              "KL estimates and the value head; `step` is the whole step including host "
              "overhead."]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
