"""Sampling throughput on CPU: our KV-cache sampler vs. our model without a cache vs. `transformers`.

All three run the *same weights*: a random-weight ``LlamaForCausalLM`` (or
``T5ForConditionalGeneration``, when ``lsc.models.t5`` is present) is built with PyTorch
`transformers`, saved, and imported with ``lsc.models.hf_decoder.load_decoder`` (``hf_t5.load_t5``).
For T5, (b) reruns the encoder and the decoder over the whole prefix at every step. For every
(model, batch, k, prompt length, new tokens) setting the script measures, in the same run,

* (a) ``lsc.models.sampling.sample`` (jitted prefill + ``while_loop`` decode with a KV cache),
* (b) ``lsc.models.sampling.sample_without_cache`` (full forward over the prefix at every step),
* (c) ``transformers`` ``generate`` (PyTorch, KV cache, CPU),

as generated tokens per second (``batch * k * new_tokens / seconds``, median of ``--repeats``
timed runs after one warm-up/compilation run; one timed run for the slow (b)), the ratios a/b
and a/c, and the achieved FLOP/s
of (a) against a float32 ``jnp`` matmul peak measured at the start of the run. EOS is disabled so
every row generates exactly ``new_tokens`` tokens. With ``k = 1`` decoding is greedy and the
tokens of (a), (b) and (c) are compared (column ``same``); with ``k > 1`` it samples at
temperature 1 (``num_return_sequences = k`` in `transformers`).

Threads: by default both frameworks run single-threaded (``--threads 1``: XLA with
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, ``torch.set_num_threads(1)``),
which is the fair and stable setting on a shared 2-core machine; ``--threads N`` (N > 1) leaves
XLA's default thread pool on and gives torch N threads.

Usage: ``python benchmarks/sampling.py [--quick] [--repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two settings only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="1: single-threaded XLA and torch; N > 1: XLA default, torch N")
    parser.add_argument("--only", nargs="*", default=None, metavar="MODEL:BATCH:K",
                        help="run only these settings, e.g. small-8M:1:1")
    parser.add_argument("--json", default="", help="also write the rows as JSON here")
    return parser.parse_args(argv)


ARGS = _parse_args()
if ARGS.threads == 1:  # must be set before jax initialises its CPU backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_util  # noqa: E402
from flax import nnx  # noqa: E402

from lsc.models import hf_decoder, sampling  # noqa: E402

MODELS = {
    # decoder (Llama architecture): (vocab, d_model, layers, heads, kv_heads, mlp)
    "tiny-1M": (1024, 64, 2, 4, 2, 256),
    "small-8M": (8192, 256, 4, 8, 4, 1024),
    # T5.1.1 (gated-GELU, untied head): (vocab, d_model, layers each stack, heads, d_kv, d_ff)
    "t5-tiny-1M": (1024, 64, 2, 4, 16, 256),
    "t5-small-10M": (8192, 256, 4, 8, 32, 1024),
}

# (model, batch, k, prompt length, new tokens)
SETTINGS = [
    ("tiny-1M", 1, 1, 32, 64),
    ("tiny-1M", 8, 1, 32, 64),
    ("tiny-1M", 8, 4, 32, 64),
    ("small-8M", 1, 1, 32, 64),
    ("small-8M", 8, 1, 32, 64),
    ("small-8M", 4, 4, 32, 64),
    ("small-8M", 16, 1, 96, 16),
]
T5_SETTINGS = [
    ("t5-tiny-1M", 8, 1, 32, 64),
    ("t5-small-10M", 1, 1, 32, 64),
    ("t5-small-10M", 8, 1, 32, 32),
    ("t5-small-10M", 4, 4, 32, 32),
]
QUICK = [SETTINGS[0], SETTINGS[3], T5_SETTINGS[1]]


def build(name, path):
    import torch
    import transformers

    vocab, d, layers, heads, kv, mlp = MODELS[name]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=mlp, pad_token_id=0, eos_token_id=1,
        bos_token_id=2, tie_word_embeddings=False, initializer_range=0.1,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(path)
    model, our_cfg = hf_decoder.load_decoder(path)
    return hf, model, our_cfg


def t5_available():
    try:
        import lsc.models.hf_t5  # noqa: F401
        import lsc.models.t5  # noqa: F401
    except ImportError:
        return False
    return True


def build_t5(name, path):
    import torch
    import transformers

    from lsc.models import hf_t5

    vocab, d, layers, heads, d_kv, d_ff = MODELS[name]
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=vocab, d_model=d, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    hf.save_pretrained(path)
    model = hf_t5.load_t5(path)
    return hf, model, model.config


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy"))
def _t5_no_cache(graphdef, state, prompts, key, *, max_new_tokens, greedy):
    """T5 sampling without a cache: every step reruns the encoder and the decoder over
    ``[start] + tokens so far``; same selection and key schedule as ``sampling.sample``."""
    model = nnx.merge(graphdef, state)
    n = prompts.shape[0]
    temperature = jnp.float32(0.0 if greedy else 1.0)
    start = jnp.full((n, 1), model.config.decoder_start_id, jnp.int32)
    buf = jnp.concatenate([start, jnp.zeros((n, max_new_tokens), jnp.int32)], axis=1)

    def body(step, buf):
        logits = model(prompts, buf[:, :-1])
        last = jax.lax.dynamic_index_in_dim(logits, step, axis=1, keepdims=False)
        tok, _ = sampling._select(last, jax.random.fold_in(key, step), temperature, 0, 1.0)
        return jax.lax.dynamic_update_slice(buf, tok[:, None], (jnp.zeros((), jnp.int32), step + 1))

    return jax.lax.fori_loop(0, max_new_tokens, body, buf)[:, 1:]


def t5_flops_per_token(c, prompt_len, context):
    """Forward FLOPs per generated token of a T5 (decoder step + the prompt's encoder pass and
    cross-attention keys/values amortised over ``context - prompt_len`` generated tokens)."""
    d, hd, f, v = c.d_model, c.num_heads * c.d_kv, c.d_ff, c.vocab_size
    dec_layers = c.num_decoder_layers or c.num_layers
    ff = 3 * d * f if c.is_gated else 2 * d * f
    dec = dec_layers * (4 * d * hd + 2 * d * hd + ff) + d * v
    dec_attn = dec_layers * 2 * (context - prompt_len + prompt_len) * hd
    enc = prompt_len * (c.num_layers * (4 * d * hd + ff) + dec_layers * 2 * d * hd)
    enc += c.num_layers * 2 * prompt_len * prompt_len * hd
    generated = max(1.0, 2 * (context - prompt_len))
    return 2.0 * dec + 2.0 * dec_attn + 2.0 * enc / generated


def prompts_for(batch, length, vocab, seed=0):
    rs = np.random.RandomState(seed)
    tokens = rs.randint(3, vocab, size=(batch, length)).astype(np.int32)
    lengths = rs.randint(length // 2, length + 1, size=batch)
    for i, n in enumerate(lengths):  # left padding
        tokens[i, : length - n] = 0
    return tokens


def main():
    args = ARGS
    import torch

    torch.set_num_threads(args.threads)
    peak = bench_util.matmul_peak()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"float32 jnp matmul peak (1024^3): {peak / 1e9:.1f} GFLOP/s")
    print()
    header = ("| model | batch | k | prompt | new | (a) cache tok/s | (b) no-cache tok/s | "
              "(c) HF tok/s | a/b | a/c | (a) GFLOP/s | % of peak | same |")
    print(header)
    print("|" + "|".join(["---"] * 13) + "|")
    built = {}
    tmp = tempfile.mkdtemp(prefix="lsc_bench_")
    settings = QUICK if args.quick else SETTINGS + T5_SETTINGS
    if args.only is not None:
        wanted = set(args.only)
        settings = [x for x in SETTINGS + T5_SETTINGS if f"{x[0]}:{x[1]}:{x[2]}" in wanted]
        if len(settings) != len(wanted):
            raise SystemExit(f"error: --only {sorted(wanted)}: unknown setting(s); known: "
                             f"{[f'{x[0]}:{x[1]}:{x[2]}' for x in SETTINGS + T5_SETTINGS]}")
    rows = []
    if not t5_available():
        print("(lsc.models.t5 not importable: T5 rows skipped)")
        settings = [x for x in settings if not x[0].startswith("t5")]
    for name, batch, k, plen, new in settings:
        is_t5 = name.startswith("t5")
        if name not in built:
            builder = build_t5 if is_t5 else build
            built[name] = builder(name, os.path.join(tmp, name))
        hf, model, cfg = built[name]
        hf.generation_config.eos_token_id = None
        g, s = nnx.split(model)
        s = jax.device_put(s)  # imported weights are host arrays
        prompts = prompts_for(batch, plen, cfg.vocab_size)
        jp = jnp.asarray(prompts)
        greedy = k == 1
        temp = 0.0 if greedy else 1.0
        no_eos = cfg.vocab_size  # an id that is never generated
        key = jax.random.key(0)

        def ours():
            out = sampling.sample(g, s, jp, key, max_new_tokens=new, num_samples=k,
                                  temperature=temp, eos_id=no_eos, allow_pad=True)
            return jax.block_until_ready(out)

        if is_t5:
            jp_k = jnp.repeat(jp, k, axis=0)

            def ours_nocache():
                return jax.block_until_ready(
                    _t5_no_cache(g, s, jp_k, key, max_new_tokens=new, greedy=greedy))
        else:
            def ours_nocache():
                out = sampling.sample_without_cache(
                    g, s, jp, key, max_new_tokens=new, num_samples=k, temperature=temp,
                    eos_id=no_eos, allow_pad=True)
                return jax.block_until_ready(out)

        mask = torch.tensor((prompts != 0).astype(np.int64))
        ids = torch.tensor(prompts.astype(np.int64))

        def theirs():
            with torch.no_grad():
                return hf.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                    do_sample=not greedy, num_return_sequences=k, top_k=None, top_p=None,
                    pad_token_id=0, eos_token_id=None,
                )

        _, ta = bench_util.median_time(ours, args.repeats)
        _, tb = bench_util.median_time(ours_nocache, 1)  # the slow baseline: one timed run
        _, tc = bench_util.median_time(theirs, args.repeats)
        tokens = batch * k * new
        same = "-"
        if greedy:
            a = np.asarray(ours().tokens[:, 0])
            c = theirs().numpy()
            c = c[:, 1:] if is_t5 else c[:, plen:]  # T5 output starts with the start token
            same = "yes" if np.array_equal(a, c) else f"{np.mean(a == c):.2f}"
        ctx = plen + new / 2
        if is_t5:
            flops = t5_flops_per_token(cfg, plen, ctx) * tokens
        else:
            flops = cfg.flops_per_token(int(ctx)) * tokens
        gflops = flops / ta / 1e9
        print(f"| {name} | {batch} | {k} | {plen} | {new} | {tokens / ta:,.0f} | "
              f"{tokens / tb:,.0f} | {tokens / tc:,.0f} | {tb / ta:.1f}x | {tc / ta:.1f}x | "
              f"{gflops:.2f} | {100 * gflops * 1e9 / peak:.1f}% | {same} |", flush=True)
        rows.append(dict(model=name, batch=batch, k=k, prompt=plen, new=new,
                         cache_tok_s=tokens / ta, no_cache_tok_s=tokens / tb,
                         hf_tok_s=tokens / tc, a_over_c=tc / ta, same=same))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(peak_gflops=peak / 1e9, rows=rows), f, indent=1)
    print()
    print("tok/s: generated tokens per second (batch * k * new), median of "
          f"{args.repeats} runs ((b): 1 run) after a warm-up run; a/b, a/c: speed-up of (a); "
          "GFLOP/s: forward FLOPs of the generated tokens (2 * matmul params + attention at the "
          "mean context) per second of (a).")


if __name__ == "__main__":
    main()
