"""RLHF step breakdown: sample / score / reference / update, its growth with batch, k and response
length, its model FLOP utilisation, and where the KV cache, donation and on-device reference
estimation matter.

Usage::

  python benchmarks/rlhf_step.py [--steps 5] [--threads 1] [--quick] [--out FILE.md]

(``--out`` defaults to ``benchmarks/RESULTS_rlhf.md``.)

Runs :class:`lsc.align.rlhf.RLTrainer` (PPO, phased rollout so every phase is timed separately)
with randomly initialised decoder models (policy, pi0, one reward model of the same shape) on the
available devices. The reference is recomputed every step (``reference_cache = False``) with the
quantile source, so its cost is that of ``K`` base-policy samples per prompt. For each setting the
first step (compilation) is dropped and the median over the remaining steps is reported. Ratios
are against the baseline setting measured in the same run.

Table 1 (growth), per (B, k, R): the phase times; the step time against the baseline; generated
policy tokens per second; the step's model FLOPs (:func:`bench_util.rlhf_step_flops`: 2 x matmul
parameters + attention per forward token, backward twice the forward) and the MFU against a
float32 1024^3 ``jnp`` matmul peak measured at the start of the run; and XLA's memory for the
largest phase (arguments + outputs + temporaries - donated aliases, from the compiled phase's
``memory_analysis()``).

Table 2 (what matters), at one setting:

* KV cache: the sample phase's work (``B * k`` rows, ``R`` tokens) with
  :func:`lsc.models.sampling.sample` vs :func:`lsc.models.sampling.sample_without_cache`;
* donation: the trainer's update (RL state donated) vs the same function jitted without donation
  (time and XLA memory);
* reference: the trainer's on-device estimate (one jitted call: ``K`` pi0 samples, scoring,
  quantile) vs the same work orchestrated from the host (jitted sampler, device-to-host copy, one
  reward-model call per prompt, ``numpy.quantile``) vs the per-prompt cache once every prompt is
  cached (``reference_cache = True``: the estimate is skipped on device).

Each pair is timed in alternating calls (a, b, a, ...; median of ``--steps``, of ``--steps // 2``
for the no-cache sampler) so both see the same machine load.

Threads: ``--threads 1`` (default) runs XLA single-threaded (``--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``), as the other benchmarks do; ``--threads N`` leaves XLA's pool
on.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_util  # noqa: E402


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two tiny settings, one timed step")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "RESULTS_rlhf.md"))
    return ap.parse_args(argv)


ARGS = _parse_args()
bench_util.set_threads(ARGS.threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from lsc.align import rlhf, utility  # noqa: E402
from lsc.models import decoder, heads, sampling  # noqa: E402
from lsc.parallel import mesh as mesh_lib  # noqa: E402
from lsc.parallel import partitioning  # noqa: E402
from lsc.train import loop as train_loop  # noqa: E402
from lsc.train import optim  # noqa: E402

# A persistent compilation cache (in a fresh temporary directory) so that compiling a phase again
# for its memory analysis reads the executable compiled by the timed steps.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="lsc_rlhf_step_xla_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

VOCAB, P, REF_K, KL_COEF = 256, 32, 8, 0.05
# (B, k, R); the first is the baseline of the ratios
SETTINGS = [(8, 1, 16), (8, 2, 16), (8, 4, 16), (8, 8, 16), (8, 1, 32), (8, 1, 64),
            (4, 1, 16), (16, 1, 16), (32, 1, 16)]
EXTRAS_AT = (8, 4, 32)  # (B, k, R) of table 2
QUICK_SETTINGS = [(2, 1, 4), (2, 2, 4)]
QUICK_EXTRAS_AT = (2, 2, 4)


def arch():
    return decoder.DecoderConfig(vocab_size=VOCAB, d_model=64, num_layers=2, num_heads=4,
                                 num_kv_heads=4, head_dim=16, mlp_dim=128, init_std=0.02)


def make_trainer(b, k, r, ref_k, steps, mesh, reference_cache=False):
    spec = utility.UtilitySpec("lsc", ("helpful",),
                               (utility.ReferenceSpec("quantile", 0.85, ref_k),))
    rm = heads.RewardModel(decoder.DecoderLM(arch(), rngs=nnx.Rngs(5)), rngs=nnx.Rngs(6),
                           head_init=nnx.initializers.normal(1.0))
    models = rlhf.Models(pi0=decoder.DecoderLM(arch(), rngs=nnx.Rngs(0)), reward_models=[rm])
    cfg = rlhf.rl_config(num_steps=steps + 2, batch_size=b, algorithm="ppo", num_samples=k,
                         kl_coef=KL_COEF, ppo_epochs=1, num_minibatches=1, time_phases=True,
                         reference_cache=reference_cache, progress=False)
    tx = optim.make_optimizer(dict(learning_rate=1e-4), steps + 2)
    trainer = rlhf.RLTrainer(spec, cfg, models, tx, tx, mesh, partitioning.DEFAULT_RULES,
                             num_prompts=b, response_len=r)
    rng = np.random.default_rng(0)
    prompts = rng.integers(2, VOCAB, (b, P)).astype(np.int32)
    batch = {"prompt": prompts, "slot": np.arange(b, dtype=np.int32)}
    return trainer, batch, rm, models


def _footprint(jitted, *args):
    """XLA's bytes for one call: arguments + outputs + temporaries - donated aliases."""
    m = jitted.lower(*args).compile().memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def phase_memory(trainer, state, batch):
    """``{phase: bytes}`` of the four jitted phases at this setting (compiled functions are
    reused from the jit caches where XLA's compilation cache hits)."""
    gb = train_loop.global_batch(batch, trainer.batch_shardings)
    gamma = jnp.asarray(KL_COEF, jnp.float32)
    jits = trainer._phase_jits
    r_ref, _, _, new = jits["reference"](state, trainer.frozen, gb)
    tokens, mask = jits["sample"](state, trainer.frozen, gb)
    ro = jits["score"](state, trainer.frozen, gb, tokens, mask, r_ref, gamma, new)
    return {
        "reference": _footprint(jits["reference"], state, trainer.frozen, gb),
        "sample": _footprint(jits["sample"], state, trainer.frozen, gb),
        "score": _footprint(jits["score"], state, trainer.frozen, gb, tokens, mask, r_ref, gamma,
                            new),
        "update": _footprint(trainer._update_jit, state, trainer.frozen, ro, gamma),
    }, ro


def measure(b, k, r, ref_k, steps, mesh):
    trainer, batch, _, _ = make_trainer(b, k, r, ref_k, steps, mesh)
    state = trainer.init_state()
    rows = []
    for i in range(steps + 1):
        if i == 1:  # after the compiling step: keep full collections out of the timed steps
            gc.collect()
            gc.freeze()
        t = {}
        t0 = time.perf_counter()
        state, _ = trainer.step(state, batch, KL_COEF, t)
        t["time/step"] = time.perf_counter() - t0
        rows.append(t)
    gc.unfreeze()
    rows = rows[1:]  # drop the compiling step
    keys = ("time/sample", "time/score", "time/reference", "time/update", "time/step")
    times = {kk: statistics.median(row[kk] for row in rows) for kk in keys}
    t0 = time.perf_counter()
    mem, _ = phase_memory(trainer, state, batch)
    print(f"  (memory analysis {time.perf_counter() - t0:.1f} s)", flush=True)
    return times, mem, dict(trainer.traces)


def _paired_times(fn_a, fn_b, repeats):
    """Median seconds of ``fn_a`` and ``fn_b`` over ``repeats`` alternating calls (a, b, a, ...)
    after one warm-up / compiling call of each, so both see the same machine load."""
    fn_a()
    fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def extras(b, k, r, ref_k, steps, mesh):
    """Table 2 rows: (what, variant ms, baseline ms, ratio text, memory text)."""
    out = []
    trainer, batch, rm, models = make_trainer(b, k, r, ref_k, steps, mesh)
    state = trainer.init_state()
    state, _ = trainer.step(state, batch, KL_COEF, {})
    prompts = jnp.asarray(batch["prompt"])
    key = jax.random.key(0)

    # KV cache: the sample phase's work with and without a cache, at R and 2R.
    pg, ps = nnx.split(trainer.policy_model(state))
    for rr in (r, 2 * r):
        t_cache, t_none = _paired_times(
            lambda: jax.block_until_ready(sampling.sample(
                pg, ps, prompts, key, max_new_tokens=rr, num_samples=k).tokens),
            lambda: jax.block_until_ready(sampling.sample_without_cache(
                pg, ps, prompts, key, max_new_tokens=rr, num_samples=k).tokens),
            max(1, steps // 2))
        out.append((f"sampling {b * k} rows x R = {rr}: KV cache vs no cache (full prefix "
                    "every step)", t_cache, t_none, f"{t_none / t_cache:.1f}x", "-"))

    # Donation: the update with the RL state donated vs the same function without donation.
    mem, ro = phase_memory(trainer, state, batch)
    gamma = jnp.asarray(KL_COEF, jnp.float32)
    ro_sh = partitioning.rows_shardings(ro, trainer.mesh)
    plain = jax.jit(trainer.update_step, in_shardings=(trainer.state_shardings,
                                                       trainer.frozen_shardings, ro_sh,
                                                       trainer.replicated),
                    out_shardings=(trainer.state_shardings, trainer.replicated))
    mem_plain = _footprint(plain, state, trainer.frozen, ro, gamma)
    holder = {"s": jax.tree.map(jnp.copy, state)}

    def donated():
        holder["s"], m = trainer._update_jit(holder["s"], trainer.frozen, ro, gamma)
        jax.block_until_ready(m)

    t_don, t_plain = _paired_times(
        donated, lambda: jax.block_until_ready(plain(state, trainer.frozen, ro, gamma)), steps)
    out.append(("update: RL state donated vs not donated", t_don, t_plain,
                f"{t_plain / t_don:.2f}x", f"{mem['update'] / 2**20:.2f} vs "
                f"{mem_plain / 2**20:.2f} MiB"))

    # Reference: on device (one jitted call) vs orchestrated from the host vs cached.
    gb = train_loop.global_batch(batch, trainer.batch_shardings)
    ref_jit = trainer._phase_jits["reference"]
    g0, s0 = nnx.split(models.pi0)
    rg, rs = nnx.split(rm)

    def host():
        toks = np.asarray(sampling.sample(g0, s0, prompts, key, max_new_tokens=r,
                                          num_samples=ref_k).tokens)
        host_prompts = np.asarray(prompts)
        scores = np.stack([
            np.asarray(heads.score(rg, rs, jnp.asarray(np.repeat(host_prompts[i:i + 1], ref_k, 0)),
                                   jnp.asarray(toks[i]))) for i in range(b)])
        return np.quantile(scores, 0.85, axis=1)

    t_dev, t_host = _paired_times(
        lambda: jax.block_until_ready(ref_jit(state, trainer.frozen, gb)[0]), host, steps)
    cached, cbatch, _, _ = make_trainer(b, k, r, ref_k, steps, mesh, reference_cache=True)
    cstate = cached.init_state()
    for _ in range(2):  # the first step fills the cache
        cstate, _ = cached.step(cstate, cbatch, KL_COEF, {})
    cgb = train_loop.global_batch(cbatch, cached.batch_shardings)
    cref = cached._phase_jits["reference"]
    t_cached, t_dev2 = _paired_times(
        lambda: jax.block_until_ready(cref(cstate, cached.frozen, cgb)[0]),
        lambda: jax.block_until_ready(ref_jit(state, trainer.frozen, gb)[0]), steps)
    out.append((f"reference, K = {ref_k} per prompt: on device (one call) vs host-orchestrated "
                f"({b} reward-model calls, numpy quantile)", t_dev, t_host,
                f"{t_host / t_dev:.2f}x", "-"))
    out.append(("reference: per-prompt cache, every prompt cached vs estimated every step",
                t_cached, t_dev2, f"{t_dev2 / t_cached:.0f}x", "-"))
    return out


def main():
    args = ARGS
    steps = 1 if args.quick else args.steps
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    extras_at = QUICK_EXTRAS_AT if args.quick else EXTRAS_AT
    ref_k = 2 if args.quick else REF_K
    peak = bench_util.matmul_peak()
    print(f"{bench_util.software()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"float32 jnp matmul peak (best of 10, 1024^3): {peak / 1e9:.1f} GFLOP/s", flush=True)
    mesh = mesh_lib.make_mesh({"data": -1})
    cfg = arch()
    results = []
    for b, k, r in settings:
        times, mem, traces = measure(b, k, r, ref_k, steps, mesh)
        flops = bench_util.rlhf_step_flops(cfg, batch=b, k=k, prompt=P, response=r, ref_k=ref_k,
                                           ppo_epochs=1)
        results.append(((b, k, r), times, mem, flops))
        print(f"B={b} k={k} R={r}: " + ", ".join(f"{n.split('/')[1]} {v * 1e3:.1f} ms"
                                                 for n, v in times.items())
              + f"; memory {max(mem.values()) / 2**20:.2f} MiB ({max(mem, key=mem.get)}); "
              f"traces={traces}", flush=True)
    extra_rows = extras(*extras_at, ref_k, steps, mesh)
    base = results[0][1]["time/step"]
    dev = jax.devices()[0]
    lines = [
        "# RLHF step breakdown",
        "",
        "Command: `python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]) + "`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{bench_util.software()} on {dev.platform} ({len(jax.devices())} device(s)); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; float32 jnp matmul peak (best of 10, "
        f"1024^3) {peak / 1e9:.1f} GFLOP/s.",
        "",
        f"Setting: PPO (1 epoch, 1 mini-batch), B prompts of P = {P} tokens, decoder policy "
        f"/ pi0 / reward model with d_model 64, 2 layers, vocabulary {VOCAB} "
        f"({cfg.num_params() / 1e6:.2f}M parameters each, random weights), reference = "
        f"0.85-quantile of K = {ref_k} pi0 samples recomputed every step (no cache). Median over "
        f"{steps} steps after the compiling one; every phase is a separate jitted call followed "
        "by a device sync.",
        "",
        "| B | k | R | sample ms | score ms | reference ms | update ms | step ms | step / "
        "baseline | policy tok/s | GFLOP/step | GFLOP/s (MFU) | XLA MiB (largest phase) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (b, k, r), t, mem, fl in results:
        st = t["time/step"]
        big = max(mem, key=mem.get)
        lines.append(
            f"| {b} | {k} | {r} | {t['time/sample'] * 1e3:.1f} | {t['time/score'] * 1e3:.1f} "
            f"| {t['time/reference'] * 1e3:.1f} | {t['time/update'] * 1e3:.1f} "
            f"| {st * 1e3:.1f} | {st / base:.2f} | {fl['tokens'] / st:,.0f} "
            f"| {fl['step'] / 1e9:.3f} | {fl['step'] / st / 1e9:.2f} "
            f"({100 * fl['step'] / st / peak:.1f}%) | {mem[big] / 2**20:.2f} ({big}) |")
    b, k, r = extras_at
    lines += ["", "`score` includes the reward model, the policy and pi0 log-probabilities, the "
              "KL estimates and the value head; `step` is the whole step including host "
              "overhead; the baseline is the first row.", "",
              f"Where the KV cache, donation and on-device reference estimation matter "
              f"(B = {b}, k = {k}, R = {r}, K = {ref_k}):", "",
              "| what | ours ms | alternative ms | alternative / ours "
              "| XLA memory (ours vs alternative) |",
              "|---|---|---|---|---|"]
    for what, a, alt, ratio, mem in extra_rows:
        lines.append(f"| {what} | {a * 1e3:.1f} | {alt * 1e3:.1f} | {ratio} | {mem} |")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
