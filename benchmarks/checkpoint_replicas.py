"""A checkpoint save of a state replicated over several CPU devices of one process: orbax's
default array handler (replica-parallel: each replicated array cut into one slice per device)
vs :func:`lsc.train.checkpoint.state_handler` (whole arrays from replica 0), side by side.

The state is ``--arrays`` float32 arrays of shape ``[64, 32]`` replicated over ``--devices``
simulated CPU devices (the test suite's setting has 8). Each setting writes ``--saves``
asynchronous checkpoints with a ``lsc.train.checkpoint.Checkpointer`` whose ``state`` item uses
that handler, settings alternating ``--repeats`` times; reported per setting (medians over every
save but each checkpointer's first): the seconds ``save`` blocks the caller, and the seconds until
the write is complete on disk. Every checkpoint is restored and compared with the state.

Usage: ``python benchmarks/checkpoint_replicas.py [--devices 8] [--arrays 200] [--saves 5]
[--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--arrays", type=int, default=200)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, PartitionSpec

    from lsc.train import checkpoint as checkpoint_lib

    mesh = jax.make_mesh((args.devices,), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    state = {f"w{i}": jax.device_put(jnp.full((64, 32), float(i)), replicated)
             for i in range(args.arrays)}
    original = checkpoint_lib.state_handler
    # orbax's default: its global type registry, replica-parallel for jax.Array on CPU
    handlers = {"orbax default": ocp.PyTreeCheckpointHandler, "lsc state_handler": original}
    results = {name: {"blocking": [], "complete": []} for name in handlers}
    for _ in range(args.repeats):
        for name, make in handlers.items():
            checkpoint_lib.state_handler = make
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = checkpoint_lib.Checkpointer(tmp, keep=2)
                for step in range(1, args.saves + 2):
                    start = time.perf_counter()
                    ckpt.save(step, state, {}, {})
                    blocking = time.perf_counter() - start
                    ckpt.wait()
                    if step > 1:  # the first save of a checkpointer sets things up
                        results[name]["blocking"].append(blocking)
                        results[name]["complete"].append(time.perf_counter() - start)
                restored, _, _ = ckpt.restore(args.saves + 1, checkpoint_lib.abstract_like(state))
                ckpt.close()
                for key, value in state.items():
                    np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value))
    checkpoint_lib.state_handler = original
    print(f"jax {jax.__version__}, orbax {ocp.__version__}: {args.arrays} arrays [64, 32] "
          f"replicated over {args.devices} CPU devices, {args.saves} saves x {args.repeats}")
    print("| state handler | save blocks, s | save complete, s |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {statistics.median(r['blocking']):.3f} | "
              f"{statistics.median(r['complete']):.3f} |")


if __name__ == "__main__":
    main()
