"""Shared pieces of the benchmarks: thread flags, the matmul peak, machine and software text, timing
helpers, reward-model pair batches and train steps, RLHF FLOP counts.

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


def _command(args) -> str:
    """Stripped stdout of ``args``, or '' when the program is absent or fails."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def environment() -> dict:
    """The machine and software of a run: ``platform``, ``cpu`` (:func:`lscpu`), ``gpu`` and
    ``driver`` (``nvidia-smi``; '' without one), the versions of python, jax, jaxlib, flax, torch
    and transformers (None when not importable), jax's backend and devices (and ``jax_cuda``,
    ``jax_cudnn`` with its CUDA plugin), torch's device and its CUDA and cuDNN versions (None where
    not built with them)."""
    import importlib

    env = {"platform": platform.platform(), "python": platform.python_version(), "cpu": lscpu()}
    smi = _command(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    first = smi.splitlines()[0].split(", ") if smi else ["", ""]
    env["gpu"], env["driver"] = first[0], first[-1]
    for name in ("jax", "jaxlib", "flax", "torch", "transformers"):
        try:
            env[name] = importlib.import_module(name).__version__
        except ImportError:
            env[name] = None
    try:
        import jax

        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [d.device_kind for d in jax.devices()]
        from jax._src.lib import cuda_versions  # None without jax's CUDA plugin

        if cuda_versions is not None:
            env["jax_cuda"] = cuda_versions.cuda_runtime_get_version()
            env["jax_cudnn"] = cuda_versions.cudnn_get_version()
    except (ImportError, AttributeError, RuntimeError):
        pass
    try:
        import torch

        env["torch_device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                               else "cpu")
        env["torch_cuda"] = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["torch_cudnn"] = cudnn
    except ImportError:
        pass
    return env


def median_time(fn, repeats: int) -> tuple:
    """``(first, median)``: seconds of a first call of ``fn`` (compilation, warm-up) and the
    median of ``repeats`` timed calls after it."""
    import numpy as np

    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def timed_pair(fn_a, fn_b, steps: int, repeats: int) -> tuple:
    """Median seconds per step of ``fn_a`` and ``fn_b``, timed in ``repeats`` alternating windows
    of ``steps`` calls each (so both see the same machine load)."""
    import numpy as np

    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, ta), (fn_b, tb)):
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            out.append((time.perf_counter() - t) / steps)
    return float(np.median(ta)), float(np.median(tb))


def pair_batch(batch: int, p: int, r: int, vocab: int, seed: int = 0) -> dict:
    """A Bradley-Terry batch of random tokens in ``[3, vocab)``: ``prompt int32[batch, p]``
    (left-padded, up to ``p / 2`` pads), ``chosen`` and ``rejected int32[batch, r]`` (EOS = 1 at a
    random length in ``[r / 2, r)``, then pads = 0) and ``valid int32[batch]`` (ones)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prompt = rng.integers(3, vocab, (batch, p)).astype(np.int32)
    chosen = rng.integers(3, vocab, (batch, r)).astype(np.int32)
    rejected = rng.integers(3, vocab, (batch, r)).astype(np.int32)
    for i in range(batch):
        prompt[i, : rng.integers(0, p // 2)] = 0
        for resp in (chosen, rejected):
            n = rng.integers(r // 2, r)
            resp[i, n] = 1
            resp[i, n + 1:] = 0
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "valid": np.ones((batch,), np.int32)}


def compile_train_step(model, loss_fn, optim_config, batch: dict, num_steps: int = 1000) -> tuple:
    """The loop's train step (:func:`lsc.train.loop.make_train_step`) for ``model`` (an nnx
    module), ``loss_fn`` and optimiser section ``optim_config``, jitted with the state donated
    and compiled for ``batch`` (numpy arrays). Returns ``(compiled, first state, device batch,
    compile seconds)``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from lsc.train import loop, optim

    tx = optim.make_optimizer(optim_config, num_steps)
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = loop.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            model_state=model_state, opt_state=tx.init(params),
                            rng=jax.random.key_data(jax.random.key(0)))
    step = loop.make_train_step(graphdef, loss_fn, tx, optim.make_schedule(optim_config, num_steps))
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, jbatch).compile()
    return compiled, state, jbatch, time.perf_counter() - t0


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


def t5_reward_step_flops(c, rows: int, p: int, r: int) -> float:
    """Model FLOPs of one train step (forward + backward = 3 forwards) of a T5 reward model on
    ``rows`` sequences of a ``p``-token prompt (encoder) and ``[start] + r`` response tokens
    (decoder), every slot counted: 2 FLOPs per matmul parameter per token (encoder layers on
    prompt tokens; decoder self-attention, cross-attention query / output and feed-forward on
    decoder tokens; cross-attention keys / values on prompt tokens; no LM head) plus attention
    scores and mixing, ``4 * context * heads * d_kv`` per token and layer (context: ``p`` in the
    encoder and across, the mean ``(r + 1) / 2`` causally)."""
    d, hd = c.d_model, c.num_heads * c.d_kv
    ff = (3 if c.is_gated else 2) * d * c.d_ff
    t = r + 1
    enc = p * c.num_layers * (2 * (4 * d * hd + ff) + 4 * p * hd)
    cross_kv = p * c.num_decoder_layers * 2 * (2 * d * hd)
    dec = t * c.num_decoder_layers * (2 * (6 * d * hd + ff) + 4 * (t / 2) * hd + 4 * p * hd)
    return 3.0 * rows * (enc + cross_kv + dec)
