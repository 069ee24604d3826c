"""Shared pieces of the benchmarks: thread flags, the matmul peak, machine text, RLHF FLOP counts.

Import this module before ``jax`` when using :func:`set_threads` (XLA reads ``XLA_FLAGS`` when its
CPU backend starts); nothing here imports ``jax`` at module level.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def set_threads(threads: int) -> None:
    """``threads == 1``: single-threaded XLA (the flags above, appended to ``XLA_FLAGS``; call
    before jax starts its CPU backend). PyTorch threads are set with :func:`torch_threads`."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                                   + SINGLE_THREAD_XLA_FLAGS).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def matmul_peak(n: int = 1024, repeats: int = 10, dtype: str = "float32") -> float:
    """Best ``jnp`` matmul rate (FLOP/s) in ``dtype`` over ``repeats`` runs of
    ``n x n @ n x n`` (after one compiling run)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2.0 * n**3 / float(np.min(times))


def lscpu(lines: int = 10) -> str:
    """The first ``lines`` lines of ``lscpu`` (or ``platform.processor()``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return "\n".join(out.splitlines()[:lines])
    except OSError:
        return platform.processor() or platform.machine()


def software() -> str:
    """Versions of jax, flax, torch and transformers (those importable)."""
    parts = []
    for name in ("jax", "flax", "torch", "transformers"):
        try:
            mod = __import__(name)
            parts.append(f"{name} {mod.__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


class Clock:
    """Wall and process CPU seconds of a block (``with Clock() as c: ...; c.wall, c.cpu``); the
    ratio ``cpu / wall`` says how many cores the block kept busy."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False


def rlhf_step_flops(cfg, *, batch: int, k: int, prompt: int, response: int, ref_k: int,
                    ppo_epochs: int, value_model: bool = True, num_reward_models: int = 1,
                    rm_cfg=None) -> dict:
    """Model FLOPs of one PPO RLHF step by the usual count, per phase.

    Per forward token: ``DecoderConfig.flops_per_token`` (2 x matmul parameters + attention at
    the token's context), without the LM head where none is computed (reward and value models,
    prompt tokens of a prefill but its last); a backward pass counts twice the forward. Policy,
    pi0 and value model have config ``cfg``, the reward models ``rm_cfg`` (default ``cfg``).
    Contexts are means over the sequence: ``P / 2`` for prefill tokens, ``P + R / 2`` for generated
    ones, ``(P + R) / 2`` for a full forward over ``[prompt, response]``. Every response slot is
    counted (rows that finished early still occupy theirs).

    Returns ``{'reference', 'sample', 'score', 'update', 'step'}`` in FLOPs and ``'tokens'``, the
    generated policy tokens (``batch * k * response``).
    """
    rm_cfg = rm_cfg or cfg
    p, r = prompt, response

    def per_token(c, ctx, head=True):
        lm_head = 2.0 * c.d_model * c.vocab_size
        return c.flops_per_token(int(round(ctx))) - (0.0 if head else lm_head)

    def sampling(rows):  # prefill (logits of the last prompt token only) + generated tokens
        return rows * (p * per_token(cfg, p / 2.0, head=False) + 2.0 * cfg.d_model * cfg.vocab_size
                       + r * per_token(cfg, p + r / 2.0))

    def fwd(c, rows, head=True):  # one full forward over [prompt, response]
        return rows * (p + r) * per_token(c, (p + r) / 2.0, head)

    n = batch * k
    ref = (sampling(batch * ref_k) + num_reward_models * fwd(rm_cfg, batch * ref_k, head=False)
           if ref_k else 0.0)
    sample = sampling(n)
    score = (num_reward_models * fwd(rm_cfg, n, head=False) + 2 * fwd(cfg, n)
             + (fwd(cfg, n, head=False) if value_model else 0.0))
    update = ppo_epochs * 3.0 * (fwd(cfg, n) + (fwd(cfg, n, head=False) if value_model else 0.0))
    return {"reference": ref, "sample": sample, "score": score, "update": update,
            "step": ref + sample + score + update, "tokens": n * r}
