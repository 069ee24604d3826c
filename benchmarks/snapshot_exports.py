"""Policy snapshots: orbax's model directory vs one safetensors file, written and read back.

An RLHF run of the main job exports its policy every 5 steps and the evaluate stage loads every
snapshot: about 1,500 of each per run of the job. This script writes and loads the same model
(the main job's policy size: a decoder with ``d_model`` 64, 2 layers, vocabulary 256; or
``--d-model``/``--layers`` for another) both ways, alternating, in one run:

* ``orbax``: :func:`lsc.train.checkpoint.export_model` (``<dir>/model``, orbax's PyTree
  checkpoint) and :func:`lsc.train.checkpoint.load_model` from it;
* ``file``: :func:`lsc.train.checkpoint.export_model_file` (``<dir>/model.safetensors``) and
  :func:`lsc.train.checkpoint.load_model` from it,

each into a fresh directory per repeat (the snapshots' pattern), and reports the medians, their
ratio, and whether both loads give the exported arrays bit for bit.

Usage: ``python benchmarks/snapshot_exports.py [--repeats 30] [--threads 0] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_util  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    bench_util.set_threads(args.threads)
    import jax
    import numpy as np
    from flax import nnx

    from lsc.models import decoder
    from lsc.train import checkpoint

    cfg = decoder.DecoderConfig.from_mapping(dict(
        vocab_size=256, d_model=args.d_model, num_layers=args.layers, num_heads=4,
        num_kv_heads=4, head_dim=args.d_model // 4, mlp_dim=2 * args.d_model))

    def create():
        return decoder.DecoderLM(cfg, rngs=nnx.Rngs(0))

    model = create()
    _, params, rest = nnx.split(model, nnx.Param, ...)
    want = [np.asarray(x) for x in jax.tree.leaves(params)]
    ways = {"orbax": checkpoint.export_model, "file": checkpoint.export_model_file}
    times = {name: {"export": [], "load": []} for name in ways}
    exact = {name: True for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):
            for name, export in ways.items():
                where = os.path.join(tmp, f"{name}_{i}")
                t0 = time.perf_counter()
                export(where, params, rest)
                t1 = time.perf_counter()
                loaded = checkpoint.load_model(where, create)
                t2 = time.perf_counter()
                got = jax.tree.leaves(nnx.split(loaded, nnx.Param, ...)[1])
                exact[name] &= all(np.array_equal(np.asarray(g), w) for g, w in zip(got, want))
                if i:  # the first round compiles and builds the abstract model
                    times[name]["export"].append(t1 - t0)
                    times[name]["load"].append(t2 - t1)
    rows = {name: {k: float(np.median(v)) for k, v in t.items()} for name, t in times.items()}
    n = sum(int(np.prod(w.shape)) for w in want)
    print(f"model: {n:,} parameters; medians of {args.repeats}")
    print(f"{'way':<8}{'export ms':>11}{'load ms':>10}{'exact':>7}")
    for name, r in rows.items():
        print(f"{name:<8}{1e3 * r['export']:>11.1f}{1e3 * r['load']:>10.1f}{str(exact[name]):>7}")
    for k in ("export", "load"):
        print(f"{k}: orbax / file = {rows['orbax'][k] / rows['file'][k]:.1f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "exact": exact, "parameters": n,
                       "environment": bench_util.environment()}, f, indent=2)


if __name__ == "__main__":
    main()
