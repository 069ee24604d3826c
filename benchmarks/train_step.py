"""Reward-model train-step throughput on CPU: our jitted step vs. the equivalent PyTorch step.

Both sides train the *same* Bradley-Terry reward model from the *same* weights: a T5.1.1 encoder
(random weights, built with PyTorch ``transformers`` as ``T5ForConditionalGeneration``, saved and
imported with ``lsc.models.hf_t5.load_t5``; PyTorch loads the same directory as
``T5EncoderModel``) reading ``concat([prompt, response])``, mean-pooled over real tokens, and a
linear head (same initial weights on both sides). One step scores the chosen and the rejected
response of ``batch`` pairs (``2 * batch`` sequences), takes ``-log sigmoid(r_c - r_r)``
averaged over the pairs, back-propagates and applies AdamW (lr 1e-4, the same betas/eps/decay)
after global-norm clipping at 1.0.

* ours: :func:`lsc.train.loop.make_train_step` with :func:`lsc.train.reward_model.pairwise_loss_fn`
  under ``jax.jit`` with the train state donated (the loop's step);
* PyTorch: ``T5EncoderModel`` + ``nn.Linear``, ``torch.optim.AdamW``,
  ``clip_grad_norm_``, eager mode.

Reported per setting: pairs (examples) per second for each (median over ``--repeats`` timed
windows of ``--steps`` steps after warm-up / compilation; the windows of the two sides alternate
so both see the same load on a shared machine), the ratio ours/PyTorch, the step's
FLOPs from XLA's cost analysis of our compiled step, the achieved FLOP/s of each side (same FLOP
count), and the fraction of a float32 ``jnp`` matmul peak (best of 10) measured at the start of the run. The
initial losses of the two sides are printed as a check that the steps compute the same thing.

Threads: ``--threads 1`` (default) runs both single-threaded (XLA
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, ``torch.set_num_threads(1)``),
the stable setting on a shared 2-core machine; ``--threads N`` leaves XLA's pool on and gives
torch ``N`` threads.

Usage: ``python benchmarks/train_step.py [--quick] [--repeats 3] [--threads 1] [--out FILE.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small setting")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed window")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help="also write a markdown report here")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="run only these settings, e.g. t5-enc-mini")
    parser.add_argument("--json", default="", help="also write the rows as JSON here")
    return parser.parse_args(argv)


ARGS = _parse_args()
if ARGS.threads == 1:  # must be set before jax initialises its CPU backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_util  # noqa: E402
from flax import nnx  # noqa: E402

from lsc.models import heads, hf_t5  # noqa: E402
from lsc.train import reward_model as rm  # noqa: E402

OPTIM = dict(name="adamw", learning_rate=1e-4, warmup_steps=0, schedule="constant",
             weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=1.0)

# (name, d_model, layers, heads, d_ff, vocab, batch pairs, prompt len, response len)
SETTINGS = [
    ("t5-enc-mini", 256, 4, 4, 1024, 8192, 8, 64, 64),
    ("t5-enc-small", 512, 6, 8, 1024, 32128, 8, 96, 32),
]
QUICK = [SETTINGS[0]]


class EncoderRewardModel(nnx.Module):
    """T5 encoder over ``concat([prompt, response])``, mean-pooled over real tokens, linear head."""

    def __init__(self, t5, *, rngs: nnx.Rngs):
        self.shared = t5.shared
        self.encoder = t5.encoder
        self.head = heads.RewardHead(t5.d_model, rngs=rngs)

    def __call__(self, prompt, response):
        tokens = jnp.concatenate([prompt, response], axis=1)
        mask = tokens != 0
        h = self.encoder(self.shared(tokens), mask).astype(jnp.float32)
        m = mask[..., None].astype(jnp.float32)
        return self.head(jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))


def torch_model_and_step(path, head_w, head_b, threads):
    import torch
    from transformers import T5EncoderModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    enc = T5EncoderModel.from_pretrained(path, torch_dtype=torch.float32)
    enc.train()
    head = torch.nn.Linear(enc.config.d_model, 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.asarray(head_w).T.copy()))
        head.bias.copy_(torch.from_numpy(np.asarray(head_b).copy()))
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=OPTIM["learning_rate"], betas=(OPTIM["b1"], OPTIM["b2"]),
                            eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"])

    def step(batch):
        b = batch["prompt"].shape[0]
        p = torch.from_numpy(batch["prompt"]).long()
        tokens = torch.cat([torch.cat([p, torch.from_numpy(batch["chosen"]).long()], 1),
                            torch.cat([p, torch.from_numpy(batch["rejected"]).long()], 1)], 0)
        mask = (tokens != 0).float()
        h = enc(input_ids=tokens, attention_mask=mask).last_hidden_state
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        rewards = head(pooled)[:, 0]
        loss = -torch.nn.functional.logsigmoid(rewards[:b] - rewards[b:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, OPTIM["grad_clip_norm"])
        opt.step()
        return float(loss.detach())

    return step


def build_checkpoint(path, d_model, layers, n_heads, d_ff, vocab):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=vocab, d_model=d_model, d_kv=d_model // n_heads, d_ff=d_ff,
                   num_layers=layers, num_decoder_layers=1, num_heads=n_heads,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    T5ForConditionalGeneration(cfg).save_pretrained(path)


def compiled_step(path, setting, head_w=None):
    """Our train step on the checkpoint at ``path`` (:func:`build_checkpoint`) for ``setting``:
    the model (head kernel ``head_w`` ``float32[d_model, 1]`` when given, else its init), its
    first train state, and the jitted step with the state donated, compiled for the setting's
    batch (:func:`bench_util.pair_batch`). Returns ``(compiled, state, batch)``."""
    *_, vocab, batch, p, r = setting
    model = EncoderRewardModel(hf_t5.load_t5(path), rngs=nnx.Rngs(0))
    if head_w is not None:
        model.head.proj.kernel[...] = jnp.asarray(head_w)
    compiled, state, jbatch, _ = bench_util.compile_train_step(
        model, rm.pairwise_loss_fn(), OPTIM, bench_util.pair_batch(batch, p, r, vocab))
    return compiled, state, jbatch


def run_setting(setting, peak, tmp):
    name, d, layers, n_heads, d_ff, vocab, batch, p, r = setting
    path = os.path.join(tmp, name)
    build_checkpoint(path, d, layers, n_heads, d_ff, vocab)
    data = bench_util.pair_batch(batch, p, r, vocab)

    head_w = np.random.default_rng(1).normal(0, 0.02, (d, 1)).astype(np.float32)
    head_b = np.zeros((1,), np.float32)
    compiled, state, jbatch = compiled_step(path, setting, head_w)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    holder = {"state": state}

    def ours():
        holder["state"], metrics = compiled(holder["state"], jbatch)
        return metrics

    first_ours = float(ours()["loss"])
    jax.block_until_ready(holder["state"])
    torch_step = torch_model_and_step(path, head_w, head_b, ARGS.threads)
    first_torch = torch_step(data)
    # Interleaved windows (ours, PyTorch, ours, ...) so both see the same machine load.
    t_ours, t_torch = bench_util.timed_pair(lambda: jax.block_until_ready(ours()),
                                 lambda: torch_step(data), ARGS.steps, ARGS.repeats)
    return {
        "setting": f"{name} d{d} L{layers} B{batch}x2 len{p + r}",
        "ours_ex_s": batch / t_ours, "torch_ex_s": batch / t_torch,
        "ratio": t_torch / t_ours, "gflop_step": flops / 1e9,
        "ours_gflops": flops / t_ours / 1e9, "torch_gflops": flops / t_torch / 1e9,
        "ours_peak": flops / t_ours / peak, "torch_peak": flops / t_torch / peak,
        "loss0": (first_ours, first_torch),
    }


def main():
    settings = QUICK if ARGS.quick else SETTINGS
    if ARGS.only is not None:
        settings = [s for s in SETTINGS if s[0] in ARGS.only]
        if len(settings) != len(set(ARGS.only)):
            raise SystemExit(f"error: --only {ARGS.only}: known settings "
                             f"{[s[0] for s in SETTINGS]}")
    peak = bench_util.matmul_peak()
    print(f"jax {jax.__version__}, devices {jax.devices()}, threads {ARGS.threads}")
    print(f"float32 matmul peak (best of 10, 1024^3, jnp): {peak / 1e9:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in settings:
            rows.append(run_setting(s, peak, tmp))
    header = ("| setting | ours pairs/s | PyTorch pairs/s | ours/PyTorch | GFLOP/step | ours GFLOP/s "
              "(% peak) | PyTorch GFLOP/s (% peak) | first loss ours / PyTorch |")
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['ours_ex_s']:.2f} | {r['torch_ex_s']:.2f} | {r['ratio']:.2f}x "
            f"| {r['gflop_step']:.2f} | {r['ours_gflops']:.1f} ({100 * r['ours_peak']:.0f}%) "
            f"| {r['torch_gflops']:.1f} ({100 * r['torch_peak']:.0f}%) "
            f"| {r['loss0'][0]:.5f} / {r['loss0'][1]:.5f} |")
    table = "\n".join(lines)
    print(table)
    if ARGS.json:
        with open(ARGS.json, "w", encoding="utf-8") as f:
            json.dump(dict(peak_gflops=peak / 1e9, rows=rows), f, indent=1)
    if ARGS.out:
        try:
            cpu = subprocess.run("lscpu | head -20", shell=True, capture_output=True,
                                 text=True).stdout
        except OSError:
            cpu = platform.processor()
        cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
        with open(ARGS.out, "w", encoding="utf-8") as f:
            f.write("# Reward-model train step: ours (JAX) vs PyTorch\n\n")
            f.write(f"Command: `{cmd}`\n\n")
            f.write(f"Machine (`lscpu | head -20`):\n\n```\n{cpu}```\n\n")
            f.write(f"jax {jax.__version__}; threads per framework: {ARGS.threads}; float32 "
                    f"matmul peak measured in the run: {peak / 1e9:.1f} GFLOP/s\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
