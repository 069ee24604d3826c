"""Ours vs PyTorch `transformers` on one accelerator: sampling, reward-model train step, PPO step.

Every case runs both sides in one process, on the same device (JAX's default backend; torch on
``cuda`` when available, else both on the CPU) and on the same weights: random weights are drawn
with PyTorch `transformers`, saved with ``save_pretrained`` and imported with the project's
Hugging Face import (:func:`lsc.models.hf_decoder.load_decoder`, ``model.init_from`` through
:mod:`lsc.train.common`). Times are medians after a warm-up; our compilation is reported apart
(``*_compile_s``: the first call's time minus the median, or XLA's compile time where the step is
compiled ahead).

1. **sampling** (``SIZES[...]['sampling']``; full: TinyLlama-1.1B shapes, weights and compute in
   bfloat16, prompts of 128 tokens, 128 new tokens, EOS disabled):
   :func:`lsc.models.sampling.sample` (KV cache, bfloat16 cache) vs ``generate`` (KV cache).
   Batch 1 decodes greedily on both sides (``greedy_agreement``: the mean fraction of leading
   tokens that agree); 64 prompts x 2 samples sample at temperature 1 with no top-k / top-p
   (``num_return_sequences = 2``).
   Reported: generated tokens per second.
2. **rm_train_step** (``configs/rm/t5_base.py``: T5.1.1-base, Bradley-Terry, ``pooling='last'``,
   bfloat16 compute on float32 weights, Adafactor at lr 1e-4 after global-norm clipping at 1.0;
   full: 16 pairs of a 384-token prompt and 128-token responses, 512 tokens a sequence): the
   project's jitted train step (:func:`lsc.train.loop.make_train_step`, state donated) vs an eager
   PyTorch step on ``T5ForConditionalGeneration`` (encoder over the prompt, decoder over ``[start]
   + response``, the last real response token's state into the same linear head, drawn at random
   rather than the job's zero head so the first losses say more than log 2) under
   ``torch.autocast`` in bfloat16, ``torch.optim.Adafactor`` at the same rate (its other settings
   its own), the same clipping.
   Reported: step time and MFU, the model FLOPs of :func:`bench_util.t5_reward_step_flops` per
   second over the device's dense peak in :data:`lsc.plan_devices.DEVICES` (None where the device
   is not in that table, e.g. a CPU); XLA's own count of our step beside it; the first step's
   loss of each side.
3. **ppo_step** (full: four Llama-architecture models of ~0.32B parameters: policy, pi0, value
   model, reward model; 16 prompts of 128 tokens, 4 samples of 128 tokens, the reference from 8
   pi0 samples per prompt every step, float32 weights computing in bfloat16): the step of
   ``benchmarks/rlhf_side_by_side.py`` (:class:`lsc.align.rlhf.RLTrainer` with timed phases vs
   its eager PyTorch PPO step under autocast), per phase and whole. MFU from
   :func:`bench_util.rlhf_step_flops`.

``--toy`` runs every case at tiny sizes in float32 (a CPU smoke test; its figures mean nothing).
Without CUDA both sides run on the CPU single-threaded (XLA's flags of
:func:`bench_util.set_threads`, ``torch.set_num_threads(1)``).
The JSON (``--out``) holds every figure, the sizes and the environment (device, driver,
versions); ``--markdown`` prints a table of it.

Usage: ``python benchmarks/accelerator.py [--toy] [--out F.json] [--markdown] [--only CASE ...]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
# JAX takes this fraction of an accelerator's memory up front; the rest is PyTorch's.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")

import bench_util  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():  # both on the CPU: one thread each (before jax starts)
    bench_util.set_threads(1)
    bench_util.torch_threads(1)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import rlhf_side_by_side as sbs  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from configs.models import t5_1_1  # noqa: E402
from configs.rm import t5_base  # noqa: E402
from lsc import plan_devices  # noqa: E402
from lsc.models import hf_decoder, sampling  # noqa: E402
from lsc.parallel import mesh as mesh_lib  # noqa: E402
from lsc.train import common  # noqa: E402
from lsc.train import reward_model as rm_lib  # noqa: E402

CASES = ("sampling", "rm_train_step", "ppo_step")

# Llama shapes are (vocab, d_model, layers, heads, kv heads, mlp).
SIZES = {
    "full": {
        "sampling": dict(shape=(32000, 2048, 22, 32, 4, 5632), dtype="bfloat16", prompt=128,
                         new=128, runs=((1, 1), (64, 2)), repeats=3),
        "rm_train_step": dict(t5="base", compute_dtype="bfloat16", pairs=16, prompt=384,
                              response=128, steps=3, repeats=3),
        "ppo_step": dict(shape=(32000, 1024, 20, 16, 16, 2816), dtype="bfloat16", batch=16, k=4,
                         ref_k=8, prompt_len=128, response_len=128, epochs=1, minibatches=2,
                         steps=2),
    },
    "toy": {
        "sampling": dict(shape=(256, 32, 2, 4, 2, 64), dtype="float32", prompt=8, new=8,
                         runs=((1, 1), (4, 2)), repeats=2),
        "rm_train_step": dict(t5="tiny", compute_dtype="float32", pairs=2, prompt=8, response=8,
                              steps=1, repeats=2),
        "ppo_step": dict(shape=(256, 32, 1, 2, 2, 64), dtype="float32", batch=2, k=2, ref_k=2,
                         prompt_len=8, response_len=8, epochs=1, minibatches=2, steps=2),
    },
}


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", action="store_true", help="tiny sizes in float32 (CPU smoke test)")
    ap.add_argument("--out", default="", help="write the JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the markdown table")
    ap.add_argument("--only", nargs="*", choices=CASES, default=None, help="run these cases")
    return ap.parse_args(argv)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_dtype(name: str):
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


# How JAX names the devices of lsc.plan_devices.DEVICES (``device_kind``, lower case, contains).
DEVICE_KINDS = {"h100": "h100", "h200": "h200", "a100": "a100", "tpu_v4": "tpu v4",
                "tpu_v5e": "tpu v5 lite", "tpu_v5p": "tpu v5p"}


def peak_flops(compute_dtype: str):
    """``(peak FLOP/s, key)`` of JAX's device in :data:`lsc.plan_devices.DEVICES` (its
    ``device_kind`` matched by :data:`DEVICE_KINDS`), or ``(None, None)`` when not listed."""
    kind = jax.devices()[0].device_kind.lower()
    for key, name in DEVICE_KINDS.items():
        if name in kind:
            return plan_devices.DEVICES[key].peak_flops(compute_dtype), key
    return None, None


def _mfu(flops, seconds, peak):
    return None if peak is None else flops / seconds / peak


# ------------------------------------------------------------------------------- sampling


def sampling_case(sz: dict, tmp: str, device: torch.device) -> list:
    """Tokens per second of ours and ``generate`` for each ``(batch, k)`` of ``sz['runs']``."""
    path = os.path.join(tmp, "llama")
    hf = sbs.llama_checkpoint(path, sz["shape"], seed=0, dtype=torch_dtype(sz["dtype"]))
    hf = hf.to(device)
    hf.generation_config.eos_token_id = None
    model, cfg = hf_decoder.load_decoder(path, dtype=sz["dtype"], param_dtype=sz["dtype"])
    g, s = nnx.split(model)
    s = jax.device_put(s)  # imported weights are host arrays: one copy on the device
    plen, new = sz["prompt"], sz["new"]
    rows = []
    for batch, k in sz["runs"]:
        prompts = sbs.prompts_for(batch, plen, cfg.vocab_size)
        jp = jnp.asarray(prompts)
        greedy = k == 1
        key = jax.random.key(0)

        def ours():
            out = sampling.sample(g, s, jp, key, max_new_tokens=new, num_samples=k,
                                  temperature=0.0 if greedy else 1.0, eos_id=cfg.vocab_size,
                                  allow_pad=True, cache_dtype=jnp.dtype(sz["dtype"]))
            return jax.block_until_ready(out)

        ids = torch.from_numpy(prompts.astype(np.int64)).to(device)
        mask = (ids != sbs.PAD).long()

        def theirs():
            with torch.no_grad():
                out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                                  min_new_tokens=new, do_sample=not greedy,
                                  num_return_sequences=k, top_k=0, top_p=1.0,
                                  pad_token_id=sbs.PAD, eos_token_id=None)
            sync(device)
            return out

        first_o, t_o = bench_util.median_time(ours, sz["repeats"])
        first_t, t_t = bench_util.median_time(theirs, sz["repeats"])
        tokens = batch * k * new
        row = dict(batch=batch, k=k, decoding="greedy" if greedy else "sampled, temperature 1",
                   prompt=plen, new=new, dtype=sz["dtype"], ours_s=t_o, torch_s=t_t,
                   ours_tok_s=tokens / t_o, torch_tok_s=tokens / t_t, speedup=t_t / t_o,
                   ours_first_call_s=first_o, ours_compile_s=max(first_o - t_o, 0.0),
                   torch_first_call_s=first_t, greedy_agreement=None)
        if greedy:
            a = np.asarray(ours().tokens[:, 0])
            c = theirs()[:, plen:].cpu().numpy()
            row["greedy_agreement"] = float(np.mean(np.cumprod(a == c, axis=1).mean(axis=1)))
        log(f"sampling b{batch} k{k}: ours {tokens / t_o:,.0f} tok/s, PyTorch "
            f"{tokens / t_t:,.0f} tok/s")
        rows.append(row)
    rows_params = cfg.num_params()
    for row in rows:
        row["params"] = rows_params
    return rows


# ------------------------------------------------------------------------------- reward model


class TorchT5Reward(torch.nn.Module):
    """``T5ForConditionalGeneration``'s encoder over the prompt, its decoder over ``[start] +
    response`` and a linear head on the state of the last real response token (the start token's
    for an empty response): :class:`lsc.models.heads.RewardModel` with ``pooling='last'``."""

    def __init__(self, t5, head_w, head_b):
        super().__init__()
        self.t5 = t5
        self.head = torch.nn.Linear(t5.config.d_model, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.asarray(head_w).T.copy()))
            self.head.bias.copy_(torch.from_numpy(np.asarray(head_b).copy()))

    def forward(self, prompt, response):
        p_mask = (prompt != 0).long()
        enc = self.t5.encoder(input_ids=prompt, attention_mask=p_mask).last_hidden_state
        start = torch.full_like(response[:, :1], self.t5.config.decoder_start_token_id)
        h = self.t5.decoder(input_ids=torch.cat([start, response], 1),
                            encoder_hidden_states=enc,
                            encoder_attention_mask=p_mask).last_hidden_state
        real = response != 0
        last_real = response.shape[1] - 1 - torch.argmax(real.flip(1).long(), dim=1)
        last = torch.where(real.any(1), last_real + 1, torch.zeros_like(last_real))
        return self.head(h[torch.arange(h.shape[0], device=h.device), last])[:, 0].float()


def t5_checkpoint(path: str, arch) -> None:
    """Saves a random-weight ``T5ForConditionalGeneration`` with the T5 config section ``arch``."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=arch.vocab_size, d_model=arch.d_model, d_kv=arch.d_kv, d_ff=arch.d_ff,
        num_layers=arch.num_layers, num_decoder_layers=arch.num_decoder_layers,
        num_heads=arch.num_heads,
        relative_attention_num_buckets=arch.relative_attention_num_buckets,
        relative_attention_max_distance=arch.relative_attention_max_distance,
        feed_forward_proj=arch.feed_forward_proj, tie_word_embeddings=arch.tie_word_embeddings,
        pad_token_id=arch.pad_id, eos_token_id=arch.eos_id,
        decoder_start_token_id=arch.decoder_start_id, dropout_rate=0.0)
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(path)


def rm_case(sz: dict, tmp: str, device: torch.device) -> dict:
    """Step time, MFU and the first loss of the project's T5 reward-model step and PyTorch's."""
    config = t5_base.get_config("helpful")
    config.model.arch = t5_1_1.get_config(sz["t5"])
    config.model.arch.compute_dtype = sz["compute_dtype"]
    path = os.path.join(tmp, "t5")
    t5_checkpoint(path, config.model.arch)
    config.model.init_from = path
    arch = config.model.arch
    # A random head (the job's is zero) so that the first losses compare more than log 2.
    _, initial = common.reward_model_factory(config.model, arch.vocab_size, int(config.seed),
                                             head_init=nnx.initializers.normal(0.1))
    model = initial()
    c = model.backbone.config
    data = bench_util.pair_batch(sz["pairs"], sz["prompt"], sz["response"], arch.vocab_size)
    compiled, state, jbatch, compile_s = bench_util.compile_train_step(
        model, rm_lib.train_loss(config), config.optim, data, int(config.train.num_steps))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    holder = {"state": state}

    def ours():
        holder["state"], metrics = compiled(holder["state"], jbatch)
        return float(metrics["loss"])

    t5 = transformers.T5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    head = model.head.proj
    theirs_model = TorchT5Reward(t5, head.kernel[...], head.bias[...]).to(device).train()
    params = list(theirs_model.parameters())
    opt = torch.optim.Adafactor(params, lr=float(config.optim.learning_rate))
    b = sz["pairs"]
    tb = {k: torch.from_numpy(v.astype(np.int64)).to(device) for k, v in data.items()}
    prompts = torch.cat([tb["prompt"], tb["prompt"]], 0)
    responses = torch.cat([tb["chosen"], tb["rejected"]], 0)
    autocast = torch.autocast(device.type, dtype=torch_dtype(sz["compute_dtype"]),
                              enabled=sz["compute_dtype"] != "float32")

    def theirs():
        with autocast:
            rewards = theirs_model(prompts, responses)
            loss = -torch.nn.functional.logsigmoid(rewards[:b] - rewards[b:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(config.optim.grad_clip_norm))
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    loss0_ours = ours()
    ours_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss0_torch = theirs()
    torch_first = time.perf_counter() - t0
    t_o, t_t = bench_util.timed_pair(ours, theirs, sz["steps"], sz["repeats"])
    flops = bench_util.t5_reward_step_flops(c, 2 * b, sz["prompt"], sz["response"])
    peak, peak_key = peak_flops(sz["compute_dtype"])
    log(f"rm_train_step: ours {t_o * 1e3:.1f} ms, PyTorch {t_t * 1e3:.1f} ms; first loss "
        f"{loss0_ours:.6f} / {loss0_torch:.6f}")
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return dict(
        model=f"T5.1.1-{sz['t5']}", params=int(n_params), pairs=b, prompt=sz["prompt"],
        response=sz["response"], compute_dtype=sz["compute_dtype"], optimizer="adafactor",
        ours_step_s=t_o, torch_step_s=t_t, speedup=t_t / t_o, ours_compile_s=compile_s,
        ours_first_step_s=ours_first, torch_first_step_s=torch_first,
        model_flops_per_step=flops, xla_flops_per_step=float(cost.get("flops", float("nan"))),
        peak_flops=peak, peak_device=peak_key, ours_mfu=_mfu(flops, t_o, peak),
        torch_mfu=_mfu(flops, t_t, peak), ours_loss0=loss0_ours, torch_loss0=loss0_torch)


# ------------------------------------------------------------------------------- PPO


def ppo_case(sz: dict, tmp: str, device: torch.device) -> dict:
    """Per-phase and whole-step times, MFU and parity of the PPO step of
    ``benchmarks/rlhf_side_by_side.py`` at the sizes ``sz``."""
    args = argparse.Namespace(**{k: v for k, v in sz.items() if k not in ("shape", "dtype")})
    paths = sbs.build_checkpoints(tmp, sz["shape"])
    mesh = mesh_lib.make_mesh({"data": -1})
    autocast = None if sz["dtype"] == "float32" else torch_dtype(sz["dtype"])
    run = sbs.side_by_side(paths, args, mesh, sz["shape"][0], dtype=sz["dtype"], device=device,
                           autocast=autocast, log=log)
    cfg, rows = run["cfg"], run["rows"]
    flops = bench_util.rlhf_step_flops(cfg, batch=args.batch, k=args.k, prompt=args.prompt_len,
                                       response=args.response_len, ref_k=args.ref_k,
                                       ppo_epochs=args.epochs)

    def med(side, phase):
        return statistics.median(r[f"time/{phase}"] for r in rows[side])

    phases = {ph: dict(ours_s=med("ours", ph), torch_s=med("torch", ph), model_flops=flops[ph])
              for ph in ("reference", "sample", "score", "update", "step")}
    t_o, t_t = phases["step"]["ours_s"], phases["step"]["torch_s"]
    peak, peak_key = peak_flops(sz["dtype"])
    first = run["first"]
    return dict(
        models=4, params_per_model=cfg.num_params(), dtype=sz["dtype"],
        **{k: v for k, v in sz.items() if k not in ("shape", "dtype")},
        phases=phases, ours_step_s=t_o, torch_step_s=t_t, speedup=t_t / t_o,
        ours_first_step_s=run["first_wall"]["ours"],
        ours_compile_s=max(run["first_wall"]["ours"] - t_o, 0.0),
        torch_first_step_s=run["first_wall"]["torch"], model_flops_per_step=flops["step"],
        policy_tokens_per_step=flops["tokens"], peak_flops=peak, peak_device=peak_key,
        ours_mfu=_mfu(flops["step"], t_o, peak), torch_mfu=_mfu(flops["step"], t_t, peak),
        check_reward_max_abs=run["check"][0], check_logprob_max_abs=run["check"][1],
        ours_utility0=first["ours"]["utility"], torch_utility0=first["torch"]["utility"])


# ------------------------------------------------------------------------------- report


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """One table of every case: the unit, both sides, ours' speed-up, MFU, compile time, check."""
    lines = ["| case | unit | ours | PyTorch | PyTorch time / ours | ours MFU | PyTorch MFU | "
             "ours compile s | check |", "|---|---|---|---|---|---|---|---|---|"]
    cases = result["cases"]
    for r in cases.get("sampling", []):
        check = ("-" if r["greedy_agreement"] is None
                 else f"greedy agreement {r['greedy_agreement']:.3f}")
        lines.append(
            f"| sampling {r['batch']} x {r['k']} ({r['decoding']}, {r['dtype']}) | tok/s | "
            f"{r['ours_tok_s']:,.0f} | {r['torch_tok_s']:,.0f} | {r['speedup']:.2f}x | - | - | "
            f"{r['ours_compile_s']:.1f} | {check} |")
    for name, label, check in (
            ("rm_train_step", "reward-model train step",
             lambda r: f"first loss {r['ours_loss0']:.5f} / {r['torch_loss0']:.5f}"),
            ("ppo_step", "PPO step",
             lambda r: f"reward {r['check_reward_max_abs']:.1e}, log-prob "
                       f"{r['check_logprob_max_abs']:.1e}")):
        r = cases.get(name)
        if r is None:
            continue
        lines.append(
            f"| {label} | ms | {r['ours_step_s'] * 1e3:,.1f} | {r['torch_step_s'] * 1e3:,.1f} | "
            f"{r['speedup']:.2f}x | {_fmt(r['ours_mfu'], '.1%')} | {_fmt(r['torch_mfu'], '.1%')} "
            f"| {r['ours_compile_s']:.1f} | {check(r)} |")
    env = result["environment"]
    device = env.get("gpu") or env.get("torch_device") or "cpu"
    lines.append("")
    lines.append(f"Device: {device} (driver {env.get('driver') or '-'}); jax {env.get('jax')} on "
                 f"{env.get('jax_backend')}, torch {env.get('torch')} on "
                 f"{env.get('torch_device')}, "
                 f"transformers {env.get('transformers')}; sizes '{result['sizes']}'; "
                 f"{result['wall_s']:.0f} s wall.")
    return "\n".join(lines)


def main(argv=None):
    args = _parse_args(argv)
    t_start = time.perf_counter()
    name = "toy" if args.toy else "full"
    sizes = SIZES[name]
    device = torch_device()
    env = bench_util.environment()
    same = (env.get("jax_backend") == "gpu") == (device.type == "cuda")
    if not same:
        log(f"warning: JAX runs on {env.get('jax_backend')}, PyTorch on {device}")
    runners = {"sampling": sampling_case, "rm_train_step": rm_case, "ppo_step": ppo_case}
    cases = {}
    with tempfile.TemporaryDirectory(prefix="lsc_accel_") as tmp:
        for case in args.only or CASES:
            log(f"== {case}")
            cases[case] = runners[case](sizes[case], os.path.join(tmp, case), device)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = dict(command="python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
                  sizes=name, config=sizes, environment=env, same_device=same,
                  torch_threads=torch.get_num_threads(),
                  xla_flags=os.environ.get("XLA_FLAGS", ""), cases=cases,
                  wall_s=time.perf_counter() - t_start)
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.markdown:
        print(markdown(result))
    elif not args.out:
        print(text)
    return result


if __name__ == "__main__":
    main()
