"""Checkpoint saves written in the background vs in the training loop, side by side on CPU.

Runs the same job, ``python -m lsc.main --config=configs/rm/synthetic_helpful.py`` with
``--steps`` training steps and a checkpoint every ``--save-every`` steps from an empty workdir, as
a child process whose ``lsc.train.checkpoint.Checkpointer`` saves synchronously
(``async_save=False``, the loop waits for each write) or in the background (the default),
alternating ``--repeats`` times, both under the entry point's allocator (``lsc.allocator``).
Reported per setting (medians): wall time of the child, its user and system CPU time, and the
seconds the training loop spent inside ``Checkpointer.save`` (including the wait for the previous
save).
Every run must write the same ``summary.json``; the script exits with an error when they differ.

Usage: ``python benchmarks/checkpoint_saves.py [--steps 200] [--save-every 10] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lsc import allocator  # noqa: E402

# The child: lsc.main's job with the Checkpointer's mode fixed and its save() timed.
CHILD = """
import atexit, functools, json, sys, time
from lsc.train import checkpoint
mode, out = sys.argv[1] == "background", sys.argv[2]
spent = [0.0, 0]
original_save = checkpoint.Checkpointer.save
def timed_save(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return original_save(self, *args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - start
        spent[1] += 1
checkpoint.Checkpointer.save = timed_save
checkpoint.Checkpointer = functools.partial(checkpoint.Checkpointer, async_save=mode)
atexit.register(lambda: json.dump({"in_save": spent[0], "saves": spent[1]}, open(out, "w")))
from lsc import main
sys.argv = ["lsc.main"] + sys.argv[3:]
main.run()
"""


def _child(workdir: str, steps: int, save_every: int, mode: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    stats = workdir + ".json"
    env = allocator.with_allocator(os.environ)
    subprocess.run([sys.executable, "-c", CHILD, mode, stats,
                    "--config=configs/rm/synthetic_helpful.py", f"--workdir={workdir}",
                    f"--config.train.num_steps={steps}", f"--config.train.save_every={save_every}",
                    "--config.train.progress=False"],
                   cwd=ROOT, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    saved = json.load(open(stats))
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    return {"wall": wall, "user": after.ru_utime - before.ru_utime,
            "sys": after.ru_stime - before.ru_stime, "in_save": saved["in_save"],
            "saves": saved["saves"], "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = {"sync": [], "background": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for mode in runs:
                row = _child(os.path.join(tmp, f"{mode}{rep}"), args.steps, args.save_every, mode)
                runs[mode].append(row)
                print(mode, {k: round(v, 2) for k, v in row.items() if k != "summary"}, flush=True)
    summaries = {json.dumps(r["summary"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(summaries) != 1:
        sys.exit(f"error: the runs wrote {len(summaries)} different summary.json files")
    print(f"\nreward-model training, {args.steps} steps, a checkpoint every {args.save_every} "
          f"steps, {os.cpu_count()} CPUs; the same summary.json in every run\n")
    print("| saves | wall s | user s | system s | loop inside `save` s | saves | wall / sync's |")
    print("|---|---|---|---|---|---|---|")
    base = statistics.median(r["wall"] for r in runs["sync"])
    for mode, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("wall", "user", "sys", "in_save")}
        print(f"| {mode} | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.1f} | "
              f"{med['in_save']:.2f} | {rows[0]['saves']} | {med['wall'] / base:.2f} |")


if __name__ == "__main__":
    main()
