"""Where the reward-model train step's time goes on CPU, and its matmuls against PyTorch's.

Builds the step of ``benchmarks/train_step.py`` (setting ``--setting``, default ``t5-enc-mini``:
T5.1.1 encoder d256 L4, 8 pairs of 128 tokens) with single-threaded XLA, then:

1. profiles ``--steps`` steps with ``jax.profiler`` (XLA's per-thunk trace events,
   ``--xla_cpu_enable_xprof_traceme``) and sums the time per kind of operation (YNNPACK
   fusions, XLA's own dots, elementwise fusions, ...), per step;
2. times the step's matmul shapes alone, ``jnp.dot`` under ``jax.jit`` vs ``torch.matmul`` with
   one thread (best of 5 windows of 20), as in the step: ``[tokens, in] x [in, out]`` (forward),
   its input gradient and its weight gradient written as a plain product.

Run it under ``taskset -c 0`` so both frameworks have the same single core.

Usage: ``taskset -c 0 python benchmarks/train_step_profile.py [--setting t5-enc-mini] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_util import SINGLE_THREAD_XLA_FLAGS  # noqa: E402  (imports nothing heavy)

os.environ["XLA_FLAGS"] = " ".join((os.environ.get("XLA_FLAGS", ""),
                                    "--xla_cpu_enable_xprof_traceme=true", SINGLE_THREAD_XLA_FLAGS))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="t5-enc-mini")
    parser.add_argument("--steps", type=int, default=5)
    return parser.parse_args()


ARGS = _args()
sys.argv = [sys.argv[0], "--threads", "1"]  # train_step parses its own flags at import

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import train_step as ts  # noqa: E402


def build_step(setting, tmp):
    name, d, layers, heads, d_ff, vocab, batch, p, r = setting
    path = os.path.join(tmp, name)
    ts.build_checkpoint(path, d, layers, heads, d_ff, vocab)
    return ts.compiled_step(path, setting)


def profile(compiled, state, batch, steps):
    """Milliseconds per step by kind of XLA operation, and the step's wall time."""
    for _ in range(3):
        state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    wall = (time.perf_counter() - start) / steps
    out = tempfile.mkdtemp()
    with jax.profiler.trace(out, create_perfetto_trace=True):
        for _ in range(steps):
            state, _ = compiled(state, batch)
        jax.block_until_ready(state)
    trace = json.load(gzip.open(glob.glob(os.path.join(out, "**", "*.trace.json.gz"),
                                          recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ms, count = collections.defaultdict(float), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(("$", "ThunkExecutor", "end: ")) \
                or "Pjit" in name or "Execute" in name:
            continue
        kind = re.sub(r"\.\d+$", "", name)
        ms[kind] += e["dur"] / 1e3 / steps
        count[kind] += 1
    return wall, {k: (ms[k], count[k] // steps) for k in ms}


def matmuls(setting):
    import torch

    torch.set_num_threads(1)
    name, d, layers, heads, d_ff, vocab, batch, p, r = setting
    tokens = 2 * batch * (p + r)
    shapes = [("forward", tokens, d, d_ff), ("forward", tokens, d_ff, d),
              ("input grad", tokens, d_ff, d), ("input grad", tokens, d, d_ff),
              ("weight grad", d, tokens, d_ff), ("weight grad", d_ff, tokens, d),
              ("attention proj", tokens, d, d), ("attention weight grad", d, tokens, d)]

    def best(fn, *a):
        fn(*a)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                out = fn(*a)
            if hasattr(out, "block_until_ready"):
                out.block_until_ready()
            times.append((time.perf_counter() - start) / 20)
        return min(times)

    dot = jax.jit(jnp.dot)
    rows = []
    for what, m, k, n in shapes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        ours = best(dot, jnp.asarray(a), jnp.asarray(b))
        theirs = best(torch.matmul, torch.from_numpy(a), torch.from_numpy(b))
        rows.append((what, m, k, n, 2 * m * k * n / ours / 1e9, 2 * m * k * n / theirs / 1e9,
                     theirs / ours))
    return rows


def main():
    setting = next(s for s in ts.SETTINGS if s[0] == ARGS.setting)
    print(f"jax {jax.__version__}, cores {sorted(os.sched_getaffinity(0))}, setting {setting}")
    with tempfile.TemporaryDirectory() as tmp:
        compiled, state, batch = build_step(setting, tmp)
        wall, kinds = profile(compiled, state, batch, ARGS.steps)
    total = sum(v[0] for v in kinds.values())
    print(f"\nstep: {wall * 1e3:.0f} ms wall; traced operations {total:.0f} ms\n")
    print("| operation kind | ms / step | count / step | share |")
    print("|---|---|---|---|")
    for kind, (t, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:12]:
        print(f"| `{kind}` | {t:.1f} | {n} | {100 * t / total:.0f}% |")
    print("\n| matmul | m x k x n | ours GFLOP/s | PyTorch GFLOP/s | ours / PyTorch |")
    print("|---|---|---|---|---|")
    rows = matmuls(setting)
    for what, m, k, n, g_ours, g_theirs, ratio in rows:
        print(f"| {what} | {m} x {k} x {n} | {g_ours:.1f} | {g_theirs:.1f} | {ratio:.2f}x |")
    print(f"\nall shapes: ours / PyTorch {np.exp(np.mean(np.log([r[-1] for r in rows]))):.2f}x "
          "(geometric mean)")


if __name__ == "__main__":
    main()
