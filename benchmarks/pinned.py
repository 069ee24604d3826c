"""Ours vs PyTorch with both pinned to the same cores, and XLA's CPU options, in one run.

For each core set (``--cores``, default ``0`` then ``0,1``) and each XLA option set
(``--variants``), this runs under ``taskset -c <cores>``, one after the other:

* ``benchmarks/train_step.py --only <--train-setting>``: the reward-model train step, ours
  (jitted, donated) against the PyTorch eager step on the same weights; reported as
  ours / PyTorch (pairs per second);
* ``benchmarks/sampling.py --only <--sampling-setting>``: our KV-cache sampler against
  ``transformers`` ``generate`` on the same weights; reported as ours / ``generate`` (tokens per
  second);
* a 1024^3 ``jnp`` matmul in float32 and in bfloat16 (best of 10): whether this CPU gains from
  bfloat16 (native on AMX / AVX512-BF16 CPUs; emulated elsewhere).

Each benchmark times both frameworks in the same process, in alternating windows, so a ratio
never mixes two sittings. Threads follow the core set: on one core XLA runs single-threaded
(``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) and PyTorch gets one
thread; on ``n`` cores XLA keeps its thread pool, which takes its size from the cores
``taskset`` leaves it, and PyTorch gets ``n`` threads.

Allocators (``--allocators``): ``tcmalloc`` or ``mimalloc`` preloads that allocator into every
benchmark process, as the project's entry points do (``lsc.allocator``; the default is the one
they choose), so both frameworks run under it; ``system`` keeps glibc's malloc for both. The
allocator is a row of the table.

A variant is a name and XLA flags added to ``XLA_FLAGS`` (``name=--flag=value,--flag2=value``);
``default`` adds none. The variants explored in BENCHMARKS.md ("XLA's CPU options") are in
``VARIANTS``.

Usage: ``python benchmarks/pinned.py [--cores 0 0,1] [--variants default ynn_off ...]
[--allocators tcmalloc mimalloc system] [--repeats 5] [--out FILE.md]``. Needs ``taskset``
(util-linux) and the ``hf`` extra.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import bench_util  # benchmarks/ is on sys.path when this script runs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

sys.path.insert(0, ROOT)
from lsc import allocator  # noqa: E402  (imports nothing heavy)

VARIANTS = {
    # jaxlib 0.10's default on CPU: each dot is its own YNNPACK (XNNPACK's successor) call.
    "default": (),
    # No library fusions: XLA emits the dots itself.
    "ynn_off": ("--xla_cpu_experimental_ynn_fusion_type=",),
    # YNNPACK fusions that take in the elementwise ops and reductions around the dots.
    "ynn_fused": ("--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",),
    # LLVM's cheap pipeline (what the test suite uses): the cost of less optimised code.
    "quick_compile": ("--xla_backend_optimization_level=0",
                      "--xla_llvm_disable_expensive_passes=true"),
}


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", nargs="+", default=["0", "0,1"],
                        help="core sets for taskset -c, one run each")
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help=f"names from {sorted(VARIANTS)} or name=--flag,--flag")
    parser.add_argument("--allocators", nargs="+", default=[allocator.chosen()],
                        choices=allocator.CHOICES,
                        help="malloc of the benchmark processes, one run each")
    parser.add_argument("--train-setting", default="t5-enc-mini")
    parser.add_argument("--sampling-setting", default="small-8M:1:1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="", help="also write the markdown table here")
    return parser.parse_args(argv)


def variant_flags(spec: str):
    """``(name, flags)`` of a ``--variants`` entry."""
    if "=" in spec.split("--")[0]:
        name, flags = spec.split("=", 1)
        return name, tuple(f for f in flags.split(",") if f)
    if spec not in VARIANTS:
        raise SystemExit(f"error: unknown variant {spec!r}; known: {sorted(VARIANTS)}")
    return spec, VARIANTS[spec]


def _run(script, args, cores, flags, malloc, out_json):
    threads = len(cores.split(","))
    env = allocator.with_allocator(dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
        [os.environ.get("XLA_FLAGS", ""), *flags]).strip()), malloc)
    cmd = ["taskset", "-c", cores, sys.executable, os.path.join(HERE, script),
           "--threads", str(threads), "--json", out_json, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    with open(out_json, encoding="utf-8") as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - start
    return result


MATMUL = ("import json, sys; sys.path.insert(0, sys.argv[2]); import bench_util; "
          "json.dump({d: bench_util.matmul_peak(dtype=d) / 1e9 for d in ('float32', 'bfloat16')},"
          " open(sys.argv[1], 'w'))")


def matmul_rates(cores, flags, malloc, out_json):
    """GFLOP/s of a 1024^3 ``jnp`` matmul in float32 and bfloat16 (best of 10,
    :func:`bench_util.matmul_peak`) on ``cores``."""
    single = (bench_util.SINGLE_THREAD_XLA_FLAGS.split() if len(cores.split(",")) == 1 else [])
    env = allocator.with_allocator(dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(
        [os.environ.get("XLA_FLAGS", ""), *flags, *single]).strip()), malloc)
    subprocess.run(["taskset", "-c", cores, sys.executable, "-c", MATMUL, out_json, HERE],
                   env=env, check=True)
    with open(out_json, encoding="utf-8") as f:
        return json.load(f)


def main():
    args = _parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("error: taskset not found (util-linux)")
    variants = [variant_flags(v) for v in args.variants]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cores, malloc, (name, flags) in itertools.product(args.cores, args.allocators,
                                                              variants):
            train = _run("train_step.py", ["--only", args.train_setting, "--repeats",
                                           str(args.repeats)],
                         cores, flags, malloc, os.path.join(tmp, "train.json"))["rows"][0]
            samp = _run("sampling.py", ["--only", args.sampling_setting, "--repeats",
                                        str(args.repeats)],
                        cores, flags, malloc, os.path.join(tmp, "sampling.json"))["rows"][0]
            mm = matmul_rates(cores, flags, malloc, os.path.join(tmp, "matmul.json"))
            row = dict(cores=cores, allocator=malloc, variant=name, flags=" ".join(flags),
                       mm_f32=mm["float32"], mm_bf16=mm["bfloat16"],
                       train_ours=train["ours_ex_s"], train_torch=train["torch_ex_s"],
                       train_ratio=train["ratio"], sample_ours=samp["cache_tok_s"],
                       sample_hf=samp["hf_tok_s"], sample_ratio=samp["a_over_c"],
                       same=samp["same"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"train step: `{args.train_setting}`; sampling: `{args.sampling_setting}` "
             "(model:batch:k); median of {0} windows each".format(args.repeats), "",
             "| cores | malloc | XLA options | train pairs/s ours | PyTorch | ours / PyTorch "
             "| sampling tok/s ours | `generate` | ours / `generate` | same tokens "
             "| matmul GFLOP/s f32 / bf16 |",
             "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['cores']} | {r['allocator']} | {r['variant']} | {r['train_ours']:.2f} | "
                     f"{r['train_torch']:.2f} | {r['train_ratio']:.2f}x | "
                     f"{r['sample_ours']:,.0f} | {r['sample_hf']:,.0f} | "
                     f"{r['sample_ratio']:.2f}x | {r['same']} | "
                     f"{r['mm_f32']:.0f} / {r['mm_bf16']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
