"""Independent training jobs one after another vs. side by side in worker processes (CPU).

The reproduction's stages run several independent jobs (reward-model replicates, reference
predictors, RLHF runs). This measures, in one run on the same machine, the wall time of ``--jobs``
reward-model trainings (``configs/rm/synthetic_helpful.py``, ``--steps`` steps each, replicates
0..n-1 of one world) run by :func:`lsc.repro.jobs.run_jobs`:

* ``sequential``: one after another in this process (XLA's default threads);
* ``2 workers``: two spawned processes at a time, XLA's default threads in each;
* ``2 workers x 1 thread``: two processes, each with single-threaded XLA.

Every setting starts from an empty workdir and its own empty persistent compilation cache (so
each pays its compilations the same way; the reproduction shares one cache across its jobs).
The settings run in the order given and ``--repeats`` times, alternating. Reported: the median
wall time and its ratio to ``sequential``, and the CPU time (user + system) of the whole process
tree.

Usage: ``python benchmarks/parallel_jobs.py [--jobs 4] [--steps 150] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.rm import synthetic_helpful  # noqa: E402
from lsc.data import world, world_data  # noqa: E402
from lsc.repro import jobs as jobs_lib  # noqa: E402
from lsc.train import reward_model  # noqa: E402

SETTINGS = {"sequential": (1, 0), "2 workers": (2, 0), "2 workers x 1 thread": (2, 1)}


def _jobs(root: str, n: int, steps: int):
    out = []
    for r in range(n):
        config = synthetic_helpful.get_config()
        config.world.pair_replicates = n
        config.rm.replicate = r
        config.train.num_steps = steps
        config.train.save_every = steps
        config.train.eval_every = 0
        config.train.progress = False
        out.append(jobs_lib.Job(reward_model.run, config, os.path.join(root, f"r{r}")))
    return out


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    times = {name: [] for name in SETTINGS}
    cpu = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        world_dir = os.path.join(tmp, "world")
        cfg = synthetic_helpful.get_config()
        world_cfg = world.WorldConfig(**{**cfg.world.to_dict(), "pair_replicates": args.jobs})
        world_data.write_world(world_dir, seed=int(cfg.seed), cfg=world_cfg)
        world_data.write_tokenizer(world_dir, version=world_cfg.version)
        for rep in range(args.repeats):
            for name, (workers, threads) in SETTINGS.items():
                root = os.path.join(tmp, f"{rep}_{name.replace(' ', '_')}")
                jax.config.update("jax_compilation_cache_dir", os.path.join(root, "cache"))
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
                start, c0 = time.perf_counter(), _cpu_seconds()
                jobs_lib.run_jobs(_jobs(root, args.jobs, args.steps), world_dir, workers, threads)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(_cpu_seconds() - c0)
                print(f"{name}: {times[name][-1]:.1f} s wall, {cpu[name][-1]:.1f} s CPU",
                      flush=True)
    base = statistics.median(times["sequential"])
    print(f"\n{args.jobs} reward-model jobs x {args.steps} steps, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__}\n")
    print("| setting | wall s (median) | sequential / setting | CPU s | busy cores |")
    print("|---|---|---|---|---|")
    for name in SETTINGS:
        wall = statistics.median(times[name])
        c = statistics.median(cpu[name])
        print(f"| {name} | {wall:.1f} | {base / wall:.2f}x | {c:.1f} | {c / wall:.2f} |")


if __name__ == "__main__":
    main()
