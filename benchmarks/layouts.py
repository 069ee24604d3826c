"""Two layout choices of ``lsc.models.layers``, each against its alternative form, in one run.

1. **Attention** (the reward-model train step). :func:`lsc.models.layers.dot_product_attention`
   computes multi-head attention (one query head per key/value head) with ``[B, L, H, D]``
   einsums; grouped-query attention keeps a group axis, ``[B, L, K, G, D]``. The alternative
   sends every model through the grouped form, with ``G = 1`` for multi-head attention. The
   train step of ``benchmarks/train_step.py`` (``--setting``, default ``t5-enc-mini``: T5.1.1
   encoder d256 L4, 8 pairs of 128 tokens) is built twice in one process, with the grouped form
   for every model (``grouped``, patched in below) and with the library's function
   (``current``); both must give the same losses; they are timed in alternating windows of
   ``--steps`` steps.
2. **Projections** (sampling at batch 1). :class:`lsc.models.layers.Einsum` computes an
   equation that is a matmul over merged axes (``'BLE,EHD->BLHD'``, ``'BLHD,HDE->BLE'``) as one
   2-D ``jnp.dot``; the alternative is ``jnp.einsum``. The KV-cache sampler
   (:func:`lsc.models.sampling.sample`) on the 8M decoder of ``benchmarks/sampling.py``
   (``small-8M``: batch 1, 32 prompt + 64 greedy tokens) runs with the einsum (``einsum``,
   patched in) and with the library's module (``current``), alternating; each switch clears
   JAX's caches and compiles outside the timed calls; both must give the same tokens.

Reported: the median of ``--repeats`` windows per form and the ratio. Run it under ``taskset``
with the project's allocator preloaded, as the entry points run:
``LD_PRELOAD=libtcmalloc_minimal.so.4 taskset -c 0 python benchmarks/layouts.py --threads 1``
(``--threads 2`` with ``taskset -c 0,1``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="t5-enc-mini")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", choices=["attention", "projections"], default=None)
    return parser.parse_args()


ARGS = _args()
sys.argv = [sys.argv[0], "--threads", str(ARGS.threads)]  # train_step reads its flags at import

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import train_step as ts  # noqa: E402
from flax import nnx  # noqa: E402

from lsc.models import layers, sampling  # noqa: E402

CURRENT = layers.dot_product_attention
CURRENT_EINSUM = layers.Einsum.__call__


def einsum_call(self, x):
    """:class:`lsc.models.layers.Einsum` as it was: ``jnp.einsum`` for every equation."""
    dtype = self.dtype or x.dtype
    y = jnp.einsum(self.equation, x.astype(dtype), self.kernel[...].astype(dtype))
    if self.bias is not None:
        y = y + self.bias[...].astype(dtype)
    return y


def grouped_attention(q, k, v, mask=None, *, scale, bias=None, softcap=None):
    """The grouped-query form for every model (``G = 1`` for multi-head attention)."""
    b, l, h, d = q.shape
    kh = k.shape[2]
    g = h // kh
    logits = jnp.einsum("blkgd,bskd->bkgls", q.reshape(b, l, kh, g, d), k,
                        preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    if bias is not None:
        logits = logits + bias.astype(jnp.float32).reshape(bias.shape[0], kh, g, l, -1)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, l, k.shape[1]))
        logits = jnp.where(mask[:, None, None, :, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgls,bskd->blkgd", probs, v).reshape(b, l, h, d)


def build(setting, path, attention):
    """The compiled, donated train step with ``attention`` in the model, and its first state."""
    layers.dot_product_attention = attention
    try:
        return ts.compiled_step(path, setting)
    finally:
        layers.dot_product_attention = CURRENT


def attention():
    setting = next(s for s in ts.SETTINGS if s[0] == ARGS.setting)
    name, d, n_layers, heads, d_ff, vocab, *_ = setting
    print(f"\ntrain step: {setting}")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        ts.build_checkpoint(path, d, n_layers, heads, d_ff, vocab)
        for label, attention in (("grouped", grouped_attention), ("current", CURRENT)):
            compiled, state, batch = build(setting, path, attention)
            losses = []
            for _ in range(3):  # warm-up; the losses of the first steps, compared below
                state, metrics = compiled(state, batch)
                losses.append(float(metrics["loss"]))
            runs[label] = dict(compiled=compiled, state=state, batch=batch, losses=losses,
                               times=[])
    for _ in range(ARGS.repeats):
        for run in runs.values():
            start = time.perf_counter()
            for _ in range(ARGS.steps):
                run["state"], _ = run["compiled"](run["state"], run["batch"])
            jax.block_until_ready(run["state"])
            run["times"].append((time.perf_counter() - start) / ARGS.steps)
    print("\n| attention | ms / step | pairs / s | first 3 losses |")
    print("|---|---|---|---|")
    batch_pairs = setting[6]
    for label, run in runs.items():
        ms = statistics.median(run["times"]) * 1e3
        print(f"| {label} | {ms:.1f} | {batch_pairs / ms * 1e3:.2f} | "
              f"{', '.join(f'{x:.6f}' for x in run['losses'])} |")
    if runs["grouped"]["losses"] != runs["current"]["losses"]:
        raise SystemExit("error: the two attention forms gave different losses")
    ratio = statistics.median(runs["grouped"]["times"]) / statistics.median(runs["current"]["times"])
    print(f"\ncurrent / grouped speed: {ratio:.3f}x")


def projections():
    import sampling as bench_sampling  # benchmarks/sampling.py (reads --threads at import)

    name, batch, k, plen, new = "small-8M", 1, 1, 32, 64
    with tempfile.TemporaryDirectory() as tmp:
        _, model, cfg = bench_sampling.build(name, os.path.join(tmp, name))
    graphdef, state = nnx.split(model)
    prompts = jnp.asarray(bench_sampling.prompts_for(batch, plen, cfg.vocab_size))
    key = jax.random.key(0)

    def call():
        out = sampling.sample(graphdef, state, prompts, key, max_new_tokens=new, num_samples=k,
                              temperature=0.0, eos_id=cfg.vocab_size, allow_pad=True)
        return jax.block_until_ready(out).tokens

    forms = {"einsum": einsum_call, "current": CURRENT_EINSUM}
    times = {label: [] for label in forms}
    tokens = {}
    try:
        for _ in range(ARGS.repeats):
            for label, form in forms.items():
                layers.Einsum.__call__ = form
                jax.clear_caches()
                tokens[label] = np.asarray(call())  # compiles
                window = []
                for _ in range(5):
                    start = time.perf_counter()
                    call()
                    window.append(time.perf_counter() - start)
                times[label].append(statistics.median(window))
    finally:
        layers.Einsum.__call__ = CURRENT_EINSUM
    print(f"\nsampling: {name}, batch {batch}, {plen} prompt + {new} greedy tokens; same tokens: "
          f"{np.array_equal(tokens['einsum'], tokens['current'])}")
    print("\n| projections | ms / call | tokens / s |")
    print("|---|---|---|")
    for label, t in times.items():
        ms = statistics.median(t) * 1e3
        print(f"| {label} | {ms:.1f} | {batch * k * new / ms * 1e3:,.0f} |")
    if not np.array_equal(tokens["einsum"], tokens["current"]):
        raise SystemExit("error: the two projection forms sampled different tokens")
    ratio = statistics.median(times["einsum"]) / statistics.median(times["current"])
    print(f"\ncurrent / einsum speed: {ratio:.3f}x")


def main():
    print(f"jax {jax.__version__}, cores {sorted(os.sched_getaffinity(0))}, threads "
          f"{ARGS.threads}, LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    if ARGS.only in (None, "attention"):
        attention()
    if ARGS.only in (None, "projections"):
        projections()


if __name__ == "__main__":
    main()
