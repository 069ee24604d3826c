"""A full PPO RLHF step side by side: our jitted step vs. the same work in PyTorch `transformers`.

Both sides run the same step on the same weights, the same shapes and in the same process:

1. **reference**: ``K`` samples per prompt from the frozen base policy ``pi0``, scored by the reward
   model, and their 0.85-quantile per prompt (``r_ref``);
2. **sample**: ``k`` samples per prompt from the policy (temperature 1, the pad token banned,
   EOS ends a row);
3. **score**: the reward model on every sample, the LSC utility ``log sigmoid(r - r_ref)``, the
   policy and ``pi0`` log-probabilities of the response tokens, per-token KL (k1, k3) and the
   entropy, the value model's per-token values;
4. **update**: per-token rewards ``-gamma * kl`` plus the utility at the last token, GAE
   advantages (whitened), then ``--epochs`` passes over ``--minibatches`` shuffled mini-batches of
   the clipped policy loss and the clipped value loss, each with its own AdamW (global-norm
   clipping at 1.0).

* ours: :class:`lsc.align.rlhf.RLTrainer` ``.step`` (PPO, ``reference_cache = False`` so the
  reference is estimated every step, phased rollout so the phases are timed; a second trainer
  with the fused rollout, ``time_phases = False``, gives the production step without the phase
  syncs);
* PyTorch: ``LlamaForCausalLM.generate`` for ``pi0`` and the policy (KV cache,
  ``num_return_sequences``), a ``LlamaModel`` backbone + ``nn.Linear`` head for the reward model
  and for the value model, ``torch.quantile`` for the reference, eager PPO with
  ``torch.optim.AdamW`` and ``clip_grad_norm_``.

Weights: a random-weight ``LlamaForCausalLM`` is the base policy (``save_pretrained`` and
:func:`lsc.models.hf_decoder.load_decoder`); a second one (another seed) is the reward model's
backbone; the reward head is drawn on our side and copied to PyTorch; both value models are a copy
of ``pi0``'s backbone with a zero head. The reward model's scores and the policy's
log-probabilities of the same tokens are compared before timing (``check`` line).

Timing: one warm-up step per side (our compilation), then ``--steps`` steps of each, alternating
(ours, PyTorch, ours, ...) so both see the same machine load; medians. The process CPU time of
each step is recorded too (CPU s / wall s says how many cores a side kept busy). Objects that
exist after the warm-up are frozen out of Python's garbage collector (``gc.freeze``), so a full
collection of the large jax + torch heap does not land inside one side's timed step. MFU: the step's
model FLOPs (:func:`bench_util.rlhf_step_flops`) per second over a float32 1024^3 ``jnp`` matmul
peak measured at the start of the run.

Threads: ``--threads 1`` (default) runs both single-threaded (XLA
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``,
``torch.set_num_threads(1)``); ``--threads N`` leaves XLA's pool on and gives torch ``N`` threads.

Usage: ``python benchmarks/rlhf_side_by_side.py [--quick] [--steps 3] [--threads 1] [--out F.md]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_util  # noqa: E402


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smallest model and shapes")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="prompts per step B")
    ap.add_argument("--k", type=int, default=4, help="policy samples per prompt")
    ap.add_argument("--ref-k", type=int, default=8, help="pi0 samples per prompt (reference)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--response-len", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="PPO epochs")
    ap.add_argument("--minibatches", type=int, default=2, help="PPO mini-batches per epoch")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-rollout trainer")
    ap.add_argument("--out", default="", help="also write a markdown report here")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.k, args.ref_k = 2, 2, 2
        args.prompt_len, args.response_len = 8, 8
        args.epochs, args.minibatches = 1, 2
        args.no_fused = True
    return args


# The flags are read when run as a script; importers (benchmarks/accelerator.py) pass their own.
ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    bench_util.set_threads(ARGS.threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from lsc.align import rlhf, utility  # noqa: E402
from lsc.models import heads, hf_decoder  # noqa: E402
from lsc.parallel import mesh as mesh_lib  # noqa: E402
from lsc.parallel import partitioning  # noqa: E402
from lsc.train import optim  # noqa: E402

# Llama shapes: (vocab, d_model, layers, heads, kv heads, mlp)
MODEL = (1024, 128, 2, 4, 2, 512)
QUICK_MODEL = (256, 32, 1, 2, 2, 64)
PAD, EOS, BOS = 0, 1, 2
QUANTILE, KL_COEF, TEMPERATURE = 0.85, 0.05, 1.0
CLIP_EPS, VALUE_CLIP_EPS, GAE_LAMBDA, DISCOUNT = 0.2, 0.2, 0.95, 1.0
OPTIM = dict(name="adamw", learning_rate=1e-5, warmup_steps=0, schedule="constant",
             weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=1.0)


# ------------------------------------------------------------------------------- weights


def llama_checkpoint(path, shape, seed, dtype=None):
    """Saves a random-weight ``LlamaForCausalLM`` of ``shape`` (vocab, d_model, layers, heads,
    kv heads, mlp; seed ``seed``, weights in ``dtype``, default float32) to ``path``; returns it."""
    vocab, d, layers, n_heads, kv, mlp = shape
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
        num_attention_heads=n_heads, num_key_value_heads=kv, intermediate_size=mlp,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS, tie_word_embeddings=False,
        initializer_range=0.1, max_position_embeddings=512)
    model = transformers.LlamaForCausalLM(cfg).to(dtype or torch.float32).eval()
    model.save_pretrained(path)
    return model


def build_checkpoints(tmp, shape):
    paths = {}
    for name, seed in (("pi0", 0), ("rm", 1)):
        paths[name] = os.path.join(tmp, name)
        llama_checkpoint(paths[name], shape, seed)
    return paths


def prompts_for(batch, length, vocab, seed=0):
    """``int32[batch, length]`` left-padded prompts of random lengths in ``[length/2, length]``."""
    rs = np.random.RandomState(seed)
    tokens = rs.randint(3, vocab, size=(batch, length)).astype(np.int32)
    for i, n in enumerate(rs.randint(length // 2, length + 1, size=batch)):
        tokens[i, : length - n] = PAD
    return tokens


# ------------------------------------------------------------------------------- ours


def build_ours(paths, args, mesh, time_phases, dtype="float32"):
    """Our PPO trainer on the checkpoints ``paths`` (float32 weights computing in ``dtype``);
    returns ``(trainer, policy config, reward model)``."""
    pi0, cfg = hf_decoder.load_decoder(paths["pi0"], dtype=dtype)
    rm_backbone, _ = hf_decoder.load_decoder(paths["rm"], dtype=dtype)
    rm = heads.RewardModel(rm_backbone, rngs=nnx.Rngs(6), head_init=nnx.initializers.normal(0.1))
    spec = utility.UtilitySpec("lsc", ("helpful",),
                               (utility.ReferenceSpec("quantile", QUANTILE, args.ref_k),))
    rl_cfg = rlhf.rl_config(
        num_steps=1000, batch_size=args.batch, algorithm="ppo", num_samples=args.k,
        kl_coef=KL_COEF, kl_estimator="k1", temperature=TEMPERATURE, ppo_epochs=args.epochs,
        num_minibatches=args.minibatches, clip_eps=CLIP_EPS, value_clip_eps=VALUE_CLIP_EPS,
        gae_lambda=GAE_LAMBDA, discount=DISCOUNT, whiten_advantages=True, reference_cache=False,
        time_phases=time_phases, progress=False)
    tx = optim.make_optimizer(OPTIM, 1000)
    trainer = rlhf.RLTrainer(spec, rl_cfg, rlhf.Models(pi0=pi0, reward_models=[rm]), tx, tx, mesh,
                             partitioning.DEFAULT_RULES, num_prompts=args.batch,
                             response_len=args.response_len)
    return trainer, cfg, rm


# ------------------------------------------------------------------------------- PyTorch


def _positions(mask):
    return (mask.cumsum(1) - 1).clamp(min=0)


class TorchScalarModel(torch.nn.Module):
    """A ``LlamaModel`` backbone and a linear head: the reward (hidden state of the last real token
    of ``[prompt, response]``) or per-response-token values (the state before each token)."""

    def __init__(self, backbone, head_w=None, head_b=None):
        super().__init__()
        self.backbone = backbone
        d = backbone.config.hidden_size
        self.head = torch.nn.Linear(d, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.zeros(1, d) if head_w is None else
                                   torch.from_numpy(np.asarray(head_w).T.copy()))
            self.head.bias.copy_(torch.zeros(1) if head_b is None else
                                 torch.from_numpy(np.asarray(head_b).copy()))

    def hidden(self, tokens, mask):
        return self.backbone(input_ids=tokens, attention_mask=mask,
                             position_ids=_positions(mask)).last_hidden_state

    def reward(self, tokens, mask):
        h = self.hidden(tokens, mask)
        length = tokens.shape[1]
        last = length - 1 - torch.argmax(mask.flip(1), dim=1)
        return self.head(h[torch.arange(h.shape[0], device=h.device), last])[:, 0].float()

    def values(self, tokens, mask, p, r):
        return self.head(self.hidden(tokens, mask)[:, p - 1:p - 1 + r])[..., 0].float()


def _logits(lm, tokens, mask, p, r):
    out = lm(input_ids=tokens, attention_mask=mask, position_ids=_positions(mask))
    return out.logits[:, p - 1:p - 1 + r].float()


def _masked_mean(x, m):
    return (x * m).sum() / m.sum().clamp(min=1.0)


class TorchPPO:
    """The same PPO RLHF step in PyTorch + `transformers` (see the module docstring).

    Float32 weights on ``device``; ``autocast`` (a torch dtype, e.g. ``torch.bfloat16``) runs the
    step's computation under ``torch.autocast`` in that dtype (None: float32)."""

    def __init__(self, paths, head_w, head_b, args, device="cpu", autocast=None):
        self.args = args
        self.device = torch.device(device)
        self.autocast = autocast

        def load(path):
            return transformers.LlamaForCausalLM.from_pretrained(
                path, dtype=torch.float32).to(self.device).eval()  # no dropout in Llama

        self.pi0 = load(paths["pi0"])
        self.policy = load(paths["pi0"])
        self.value = TorchScalarModel(load(paths["pi0"]).model).to(self.device).eval()
        self.rm = TorchScalarModel(load(paths["rm"]).model, head_w, head_b).to(self.device).eval()
        for mod in (self.pi0, self.rm):
            for prm in mod.parameters():
                prm.requires_grad_(False)
        for lm in (self.pi0, self.policy):
            lm.generation_config.eos_token_id = EOS
            lm.generation_config.pad_token_id = PAD

        def adamw(params):
            return torch.optim.AdamW(params, lr=OPTIM["learning_rate"],
                                     betas=(OPTIM["b1"], OPTIM["b2"]), eps=OPTIM["eps"],
                                     weight_decay=OPTIM["weight_decay"])

        self.opt_p = adamw(list(self.policy.parameters()))
        self.opt_v = adamw(list(self.value.parameters()))
        self.gen = torch.Generator().manual_seed(0)

    def compute(self):
        """The context the step computes in: ``torch.autocast`` in ``autocast``, or none."""
        return torch.autocast(self.device.type, dtype=self.autocast,
                              enabled=self.autocast is not None)

    def _clock(self):
        """``time.perf_counter()`` after the device's queued work is done."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _generate(self, lm, ids, mask, n):
        r = self.args.response_len
        out = lm.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                          temperature=TEMPERATURE, top_k=0, top_p=1.0, num_return_sequences=n,
                          max_new_tokens=r, suppress_tokens=[PAD], pad_token_id=PAD,
                          eos_token_id=EOS)[:, ids.shape[1]:]
        if out.shape[1] < r:  # every row finished early
            out = torch.nn.functional.pad(out, (0, r - out.shape[1]), value=PAD)
        return out

    def step(self, prompts: np.ndarray, timings: dict):
        with self.compute():
            return self._step(prompts, timings)

    def _step(self, prompts: np.ndarray, timings: dict):
        a = self.args
        b, p = prompts.shape
        r, k = a.response_len, a.k
        ids = torch.from_numpy(prompts.astype(np.int64)).to(self.device)
        pmask = (ids != PAD).long()
        t0 = self._clock()
        with torch.no_grad():
            # 1. reference: K pi0 samples per prompt, their reward quantile
            ref = self._generate(self.pi0, ids, pmask, a.ref_k)
            rows = ids.repeat_interleave(a.ref_k, 0)
            full = torch.cat([rows, ref], 1)
            ref_scores = self.rm.reward(full, (full != PAD).long()).view(b, a.ref_k)
            r_ref = torch.quantile(ref_scores, QUANTILE, dim=1)
            t1 = self._clock()
            # 2. sample: k policy samples per prompt
            resp = self._generate(self.policy, ids, pmask, k)
            t2 = self._clock()
            # 3. score
            prompts_k = ids.repeat_interleave(k, 0)
            full = torch.cat([prompts_k, resp], 1)
            fmask = (full != PAD).long()
            mask = (resp != PAD).float()
            rewards = self.rm.reward(full, fmask)
            u = torch.nn.functional.logsigmoid(rewards - r_ref.repeat_interleave(k))
            logits = _logits(self.policy, full, fmask, p, r)
            logp_all = torch.log_softmax(logits, -1)
            logp = logp_all.gather(-1, resp[..., None])[..., 0] * mask
            logp0 = torch.log_softmax(_logits(self.pi0, full, fmask, p, r), -1).gather(
                -1, resp[..., None])[..., 0] * mask
            log_r = logp0 - logp
            kl = -log_r * mask
            kl3 = ((torch.expm1(log_r) - log_r) * mask).sum(1)
            entropy = _masked_mean(-(logp_all.exp() * logp_all).sum(-1), mask)
            values = self.value.values(full, fmask, p, r) * mask
            metrics = {"utility": float(u.mean()), "kl": float(kl.sum(1).mean()),
                       "kl_k3": float(kl3.mean()), "entropy": float(entropy),
                       "response_length": float(mask.sum(1).mean())}
            t3 = self._clock()
            # 4. update: token rewards, GAE, whitening
            length = mask.sum(1).long()
            tok_r = -KL_COEF * kl
            last = (length - 1).clamp(min=0)
            tok_r[torch.arange(b * k, device=self.device), last] += u * (length > 0).float()
            next_v = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
            next_m = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1)
            delta = (tok_r + DISCOUNT * next_v * next_m - values) * mask
            adv = torch.zeros_like(delta)
            carry = torch.zeros(b * k, device=self.device)
            for t in range(r - 1, -1, -1):
                carry = (delta[:, t] + DISCOUNT * GAE_LAMBDA * carry * next_m[:, t]) * mask[:, t]
                adv[:, t] = carry
            returns = (adv + values) * mask
            mean = _masked_mean(adv, mask)
            adv = (adv - mean) * torch.rsqrt(_masked_mean((adv - mean) ** 2, mask) + 1e-8) * mask
            old_logp = logp
        n = b * k
        mb = n // a.minibatches
        losses = []
        for _ in range(a.epochs):
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            for i in range(a.minibatches):
                idx = perm[i * mb:(i + 1) * mb]
                tk, fm, m_ = full[idx], fmask[idx], mask[idx]
                lp = torch.log_softmax(_logits(self.policy, tk, fm, p, r), -1).gather(
                    -1, resp[idx][..., None])[..., 0] * m_
                ratio = torch.exp(lp - old_logp[idx])
                pl = _masked_mean(torch.maximum(-adv[idx] * ratio,
                                                -adv[idx] * ratio.clamp(1 - CLIP_EPS,
                                                                        1 + CLIP_EPS)), m_)
                self.opt_p.zero_grad(set_to_none=True)
                pl.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), OPTIM["grad_clip_norm"])
                self.opt_p.step()
                v = self.value.values(tk, fm, p, r)
                v_old = values[idx]
                v_clip = v_old + (v - v_old).clamp(-VALUE_CLIP_EPS, VALUE_CLIP_EPS)
                vl = 0.5 * _masked_mean(torch.maximum((v - returns[idx]) ** 2,
                                                      (v_clip - returns[idx]) ** 2), m_)
                self.opt_v.zero_grad(set_to_none=True)
                vl.backward()
                torch.nn.utils.clip_grad_norm_(self.value.parameters(), OPTIM["grad_clip_norm"])
                self.opt_v.step()
                losses.append((float(pl.detach()), float(vl.detach())))
        t4 = self._clock()
        metrics["policy_loss"] = float(np.mean([x[0] for x in losses]))
        metrics["value_loss"] = float(np.mean([x[1] for x in losses]))
        timings.update({"time/reference": t1 - t0, "time/sample": t2 - t1, "time/score": t3 - t2,
                        "time/update": t4 - t3, "time/step": t4 - t0})
        return metrics


# ------------------------------------------------------------------------------- checks


def parity_check(trainer, rm, torch_side, prompts, args):
    """Max |difference| of the reward model's scores and of the policy's log-probabilities of
    the same random responses under the two implementations."""
    rs = np.random.RandomState(1)
    v = torch_side.policy.config.vocab_size
    resp = rs.randint(3, v, size=(prompts.shape[0], args.response_len)).astype(np.int32)
    resp[:, -3:] = PAD
    ours_r = np.asarray(heads.score_model(rm, jnp.asarray(prompts), jnp.asarray(resp)))
    pol = trainer.policy_model(trainer.init_state())
    full = np.concatenate([prompts, resp], 1)
    ours_lp = np.asarray(jax.nn.log_softmax(pol(jnp.asarray(full))[:, prompts.shape[1] - 1:-1]))
    with torch.no_grad(), torch_side.compute():
        tf = torch.from_numpy(full.astype(np.int64)).to(torch_side.device)
        tm = (tf != PAD).long()
        th_r = torch_side.rm.reward(tf, tm).float().cpu().numpy()
        th_lp = torch.log_softmax(_logits(torch_side.policy, tf, tm, prompts.shape[1],
                                          args.response_len), -1).cpu().numpy()
    m = (resp != PAD)[..., None]
    return float(np.max(np.abs(ours_r - th_r))), float(np.max(np.abs((ours_lp - th_lp) * m)))


def side_by_side(paths, args, mesh, vocab, *, dtype="float32", device="cpu", autocast=None,
                 fused=False, log=print):
    """Both sides on the checkpoints ``paths`` (ours computing in ``dtype``; PyTorch on
    ``device`` under ``autocast``, see :class:`TorchPPO`): the parity check, one warm-up step
    each (ours compiles), then ``args.steps`` steps alternating (ours, PyTorch[, ours with the
    fused rollout when ``fused``]).

    Returns ``{'trainer', 'cfg', 'check': (max |reward diff|, max |log-prob diff|),
    'first_wall': {'ours', 'torch'} seconds of the warm-up steps, 'first': {'ours', 'torch'}
    their metrics, 'rows': {'ours', 'torch', 'fused'}: per step ``{'time/<phase>', 'cpu/step'}``}``.
    """
    prompts = prompts_for(args.batch, args.prompt_len, vocab)
    batch = {"prompt": prompts, "slot": np.arange(args.batch, dtype=np.int32)}
    trainer, cfg, rm = build_ours(paths, args, mesh, time_phases=True, dtype=dtype)
    head_w = np.asarray(rm.head.proj.kernel[...])
    head_b = np.asarray(rm.head.proj.bias[...])
    theirs = TorchPPO(paths, head_w, head_b, args, device=device, autocast=autocast)
    d_r, d_lp = parity_check(trainer, rm, theirs, prompts, args)
    log(f"check: max |reward ours - PyTorch| {d_r:.2e}, max |log-prob ours - PyTorch| "
        f"{d_lp:.2e} (same weights, same tokens)")

    holder = {"state": trainer.init_state()}

    def ours_step(tr, key):
        t = {}
        with bench_util.Clock() as c:
            holder[key], host = tr.step(holder[key], batch, KL_COEF, t)
        t["time/step"], t["cpu/step"] = c.wall, c.cpu
        return t, host

    def torch_step():
        t = {}
        with bench_util.Clock() as c:
            host = theirs.step(prompts, t)
        t["time/step"], t["cpu/step"] = c.wall, c.cpu
        return t, host

    with bench_util.Clock() as c_ours0:
        _, h_ours = ours_step(trainer, "state")
    with bench_util.Clock() as c_torch0:
        _, h_torch = torch_step()
    log(f"warm-up: ours {c_ours0.wall:.1f} s (compiles), PyTorch {c_torch0.wall:.2f} s; "
        f"first-step utility ours {h_ours['utility']:.4f} / PyTorch {h_torch['utility']:.4f}, "
        f"response length {h_ours['response_length']:.1f} / {h_torch['response_length']:.1f}")
    fused_trainer = None
    if fused:
        fused_trainer, _, _ = build_ours(paths, args, mesh, time_phases=False, dtype=dtype)
        holder["fused"] = fused_trainer.init_state()
        ours_step(fused_trainer, "fused")
    # A full (generation-2) collection walks every object of jax + torch + transformers (0.25-0.4 s
    # on this machine) and lands in whichever step happens to trigger it; freeze what exists now.
    gc.collect()
    gc.freeze()
    rows = {"ours": [], "torch": [], "fused": []}
    for i in range(args.steps):
        rows["ours"].append(ours_step(trainer, "state")[0])
        rows["torch"].append(torch_step()[0])
        if fused_trainer is not None:
            rows["fused"].append(ours_step(fused_trainer, "fused")[0])
        log(f"step {i}: ours {rows['ours'][-1]['time/step'] * 1e3:.0f} ms, PyTorch "
            f"{rows['torch'][-1]['time/step'] * 1e3:.0f} ms"
            + (f", ours fused {rows['fused'][-1]['time/step'] * 1e3:.0f} ms"
               if fused_trainer else ""))
    gc.unfreeze()
    return {"trainer": trainer, "cfg": cfg, "check": (d_r, d_lp),
            "first_wall": {"ours": c_ours0.wall, "torch": c_torch0.wall},
            "first": {"ours": h_ours, "torch": h_torch}, "rows": rows}


# ------------------------------------------------------------------------------- main


def main():
    args = ARGS
    bench_util.torch_threads(args.threads)
    torch.manual_seed(0)
    shape = QUICK_MODEL if args.quick else MODEL
    peak = bench_util.matmul_peak()
    print(f"{bench_util.software()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"float32 jnp matmul peak (best of 10, 1024^3): {peak / 1e9:.1f} GFLOP/s", flush=True)
    mesh = mesh_lib.make_mesh({"data": -1})
    tmp = tempfile.mkdtemp(prefix="lsc_rlhf_sbs_")
    paths = build_checkpoints(tmp, shape)
    run = side_by_side(paths, args, mesh, shape[0], fused=not args.no_fused,
                       log=lambda m: print(m, flush=True))
    trainer, cfg, rows = run["trainer"], run["cfg"], run["rows"]
    d_r, d_lp = run["check"]
    c_ours0 = run["first_wall"]["ours"]

    def med(side, name):
        return statistics.median(r[name] for r in rows[side]) if rows[side] else float("nan")

    flops = bench_util.rlhf_step_flops(cfg, batch=args.batch, k=args.k, prompt=args.prompt_len,
                                       response=args.response_len, ref_k=args.ref_k,
                                       ppo_epochs=args.epochs)
    phases = ("reference", "sample", "score", "update", "step")
    vocab, d, layers, n_heads, kv, mlp = shape
    setting = (f"Llama-architecture decoder: vocab {vocab}, d_model {d}, {layers} layers, "
               f"{n_heads} heads / {kv} kv heads, mlp {mlp} ({cfg.num_params() / 1e6:.2f}M "
               f"parameters; policy, pi0, value model and reward model each); B = {args.batch} "
               f"prompts of P = {args.prompt_len} tokens (left-padded), k = {args.k} samples of "
               f"R = {args.response_len} tokens, reference = {QUANTILE}-quantile of K = "
               f"{args.ref_k} pi0 samples per prompt every step, PPO {args.epochs} epochs x "
               f"{args.minibatches} mini-batches, gamma = {KL_COEF}")
    lines = [
        "| phase | ours ms | PyTorch ms | PyTorch / ours | GFLOP | ours GFLOP/s (MFU) | "
        "PyTorch GFLOP/s (MFU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for ph in phases:
        to, tt = med("ours", f"time/{ph}"), med("torch", f"time/{ph}")
        f = flops[ph]
        lines.append(f"| {ph} | {to * 1e3:.1f} | {tt * 1e3:.1f} | {tt / to:.2f}x | {f / 1e9:.3f} "
                     f"| {f / to / 1e9:.2f} ({100 * f / to / peak:.1f}%) "
                     f"| {f / tt / 1e9:.2f} ({100 * f / tt / peak:.1f}%) |")
    if rows["fused"]:
        tf_ = med("fused", "time/step")
        tt = med("torch", "time/step")
        f = flops["step"]
        lines.append(f"| step, fused rollout | {tf_ * 1e3:.1f} | {tt * 1e3:.1f} | {tt / tf_:.2f}x "
                     f"| {f / 1e9:.3f} | {f / tf_ / 1e9:.2f} ({100 * f / tf_ / peak:.1f}%) "
                     f"| {f / tt / 1e9:.2f} ({100 * f / tt / peak:.1f}%) |")
    ratio = med("torch", "time/step") / med("ours", "time/step")
    busy = {side: med(side, "cpu/step") / med(side, "time/step") for side in ("ours", "torch")}
    cpu_line = f"CPU s / wall s per step: ours {busy['ours']:.2f}, PyTorch {busy['torch']:.2f}"
    tok_line = (f"policy tokens generated per step: {flops['tokens']}; whole step: ours "
                f"{flops['tokens'] / med('ours', 'time/step'):,.0f} tok/s, PyTorch "
                f"{flops['tokens'] / med('torch', 'time/step'):,.0f} tok/s")
    table = "\n".join(lines)
    print()
    print(setting)
    print(table)
    print(f"full step: PyTorch / ours = {ratio:.2f}x; ours compile + first step "
          f"{c_ours0:.1f} s; traces {trainer.traces}")
    print(cpu_line)
    print(tok_line)
    if args.out:
        cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(f"# RLHF step side by side\n\nCommand: `{cmd}`\n\n"
                     f"```\n{bench_util.lscpu()}\n```\n\n{bench_util.software()}; threads "
                     f"{args.threads}; matmul peak {peak / 1e9:.1f} GFLOP/s\n\n{setting}\n\n"
                     f"check: reward {d_r:.2e}, log-prob {d_lp:.2e}\n\n{table}\n\n"
                     f"full step PyTorch / ours = {ratio:.2f}x\n\n{cpu_line}\n\n{tok_line}\n")


if __name__ == "__main__":
    main()
