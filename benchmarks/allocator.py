"""The entry point under glibc's malloc, tcmalloc and mimalloc (``lsc.allocator``), side by side.

Runs the same job, ``python -m lsc.main --config=configs/rm/synthetic_helpful.py`` with
``--steps`` training steps from an empty workdir, as a child process with ``LSC_ALLOCATOR`` set
to each of ``--allocators`` in turn (the entry point restarts itself under it), repeating the
round ``--repeats`` times, each round starting one allocator later. Reported per allocator
(medians): the child's wall time, user and system CPU time, minor page faults and peak resident
memory (``os.wait4``), and the machine's 1-minute load average around its runs. Every run must
write the same ``summary.json`` (an allocator never changes results); the script exits with an
error when they differ.

Usage: ``python benchmarks/allocator.py [--steps 200] [--repeats 1]
[--allocators system tcmalloc mimalloc]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lsc import allocator  # noqa: E402  (imports nothing heavy)


def _child(workdir: str, steps: int, choice: str) -> dict:
    """One run of the job under allocator ``choice``: its times, faults, peak memory, summary."""
    cmd = [sys.executable, "-m", "lsc.main", "--config=configs/rm/synthetic_helpful.py",
           f"--workdir={workdir}", f"--config.train.num_steps={steps}",
           "--config.train.progress=False"]
    env = dict(os.environ, **{allocator.ENV: choice})
    env.pop(allocator.MARK, None)
    load = os.getloadavg()[0]
    with open(workdir + ".log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # the restarted process keeps the child's pid
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(workdir + ".log") as log:
            sys.exit(f"error: {choice}: {' '.join(cmd)} failed:\n{log.read()[-4000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime,
            "minflt": usage.ru_minflt, "rss": usage.ru_maxrss / 2**20,
            "load": (load + os.getloadavg()[0]) / 2, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--allocators", nargs="+", default=["system", "tcmalloc", "mimalloc"],
                        choices=allocator.CHOICES)
    args = parser.parse_args()
    libraries = {"system": "glibc"}
    for name in args.allocators:
        if name != "system":
            libraries[name] = allocator.FINDERS[name]()
            if libraries[name] is None:
                sys.exit(f"error: {name} is not installed; leave it out of --allocators")
    runs = {name: [] for name in args.allocators}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in args.allocators[rep:] + args.allocators[:rep]:  # each first in turn
                row = _child(os.path.join(tmp, f"{name}{rep}"), args.steps, name)
                runs[name].append(row)
                print(name, {k: round(v, 2) for k, v in row.items() if k != "summary"},
                      flush=True)
    summaries = {json.dumps(r["summary"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(summaries) != 1:
        sys.exit(f"error: the runs wrote {len(summaries)} different summary.json files")
    print(f"\nreward-model training, {args.steps} steps, {os.cpu_count()} CPUs, "
          f"{args.repeats} run(s) each (medians); the same summary.json in every run\n")
    print("| allocator | library | wall s | user s | system s | minor faults | peak RSS GiB | "
          "load avg | wall / first's |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["wall"] for r in runs[args.allocators[0]])
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "summary"}
        print(f"| {name} | {os.path.basename(libraries[name])} | {med['wall']:.1f} | "
              f"{med['user']:.1f} | {med['sys']:.1f} | {med['minflt'] / 1e6:.2f} M | "
              f"{med['rss']:.2f} | {med['load']:.1f} | {med['wall'] / base:.2f} |")


if __name__ == "__main__":
    main()
