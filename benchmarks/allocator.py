"""The entry point under glibc's malloc, tcmalloc and mimalloc (``lsc.allocator``), side by side.

Runs the same job from an empty workdir as a child process with ``LSC_ALLOCATOR`` set to each of
``--allocators`` in turn (the entry point restarts itself under it), repeating the round
``--repeats`` times, each round starting one allocator later. The job (``--job``): ``rm``,
``python -m lsc.main --config=configs/rm/synthetic_helpful.py`` with ``--steps`` training steps;
or ``main``, the main job ``--config=configs/repro/synthetic_hh.py<--variant>`` (e.g.
``--variant=:tiny``). An allocator may carry environment variables for its run,
``name,VAR=value,...`` (e.g. ``mimalloc,MIMALLOC_ALLOW_THP=1,MIMALLOC_PURGE_DELAY=1000``:
mimalloc with its own defaults instead of :data:`lsc.allocator.MIMALLOC_OPTIONS`). Reported per
allocator (medians): the child's wall time, user and system CPU time (its spawned workers
included), minor page faults and peak resident memory (``os.wait4``), and the machine's 1-minute
load average around its runs. Every run must write the same results (``summary.json``, or
``results.json`` without its timings: an allocator never changes results); the script exits with
an error when they differ.

Usage: ``python benchmarks/allocator.py [--job rm|main] [--steps 200] [--variant :tiny]
[--repeats 1] [--allocators system tcmalloc mimalloc]``.
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


# results.json fields that hold timings or the run's description, not results.
_TIMING_KEYS = ("run", "stage_seconds")


def _command(job: str, workdir: str, steps: int, variant: str) -> list:
    if job == "rm":
        return [sys.executable, "-m", "lsc.main", "--config=configs/rm/synthetic_helpful.py",
                f"--workdir={workdir}", f"--config.train.num_steps={steps}",
                "--config.train.progress=False"]
    return [sys.executable, "-m", "lsc.main", f"--config=configs/repro/synthetic_hh.py{variant}",
            f"--workdir={workdir}"]


def _results(job: str, workdir: str) -> dict:
    """The run's results: ``summary.json`` (``rm``) or ``results.json`` without its timings,
    with the run's own workdir written ``<workdir>`` (results name the files they came from)."""
    with open(os.path.join(workdir, "summary.json" if job == "rm" else "results.json")) as f:
        out = json.loads(f.read().replace(workdir, "<workdir>"))
    return out if job == "rm" else {k: v for k, v in out.items() if k not in _TIMING_KEYS}


def _parse(spec: str) -> tuple:
    """``(name, {VAR: value})`` of an ``--allocators`` entry ``name[,VAR=value,...]``."""
    name, *pairs = spec.split(",")
    if name not in allocator.CHOICES or any("=" not in p for p in pairs):
        raise argparse.ArgumentTypeError(
            f"{spec!r}: use one of {', '.join(allocator.CHOICES)}, optionally followed by "
            ",VAR=value pairs")
    return name, dict(p.split("=", 1) for p in pairs)


def _child(job: str, workdir: str, steps: int, variant: str, spec: str) -> dict:
    """One run of the job under allocator ``spec``: its times, faults, peak memory, results."""
    cmd = _command(job, workdir, steps, variant)
    choice, extra = _parse(spec)
    env = dict(os.environ, **extra, **{allocator.ENV: choice})
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
            sys.exit(f"error: {spec}: {' '.join(cmd)} failed:\n{log.read()[-4000:]}")
    summary = _results(job, workdir)
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime,
            "minflt": usage.ru_minflt, "rss": usage.ru_maxrss / 2**20,
            "load": (load + os.getloadavg()[0]) / 2, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", choices=("rm", "main"), default="rm")
    parser.add_argument("--steps", type=int, default=200, help="training steps of --job=rm")
    parser.add_argument("--variant", default="", help="config variant of --job=main, e.g. :tiny")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--allocators", nargs="+", default=["system", "tcmalloc", "mimalloc"],
                        help="name[,VAR=value,...] with name one of " + ", ".join(allocator.CHOICES))
    args = parser.parse_args()
    libraries = {}
    for spec in args.allocators:
        try:
            name, _ = _parse(spec)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
        libraries[spec] = "glibc" if name == "system" else allocator.FINDERS[name]()
        if libraries[spec] is None:
            sys.exit(f"error: {name} is not installed; leave it out of --allocators")
    runs = {spec: [] for spec in args.allocators}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in args.allocators[rep:] + args.allocators[:rep]:  # each first in turn
                row = _child(args.job, os.path.join(tmp, f"a{args.allocators.index(name)}_{rep}"),
                             args.steps, args.variant, name)
                runs[name].append(row)
                print(name, {k: round(v, 2) for k, v in row.items() if k != "summary"},
                      flush=True)
    summaries = {json.dumps(r["summary"], sort_keys=True) for rs in runs.values() for r in rs}
    what = (f"reward-model training, {args.steps} steps" if args.job == "rm" else
            f"the main job, configs/repro/synthetic_hh.py{args.variant}")
    same = "the same results in every run" if len(summaries) == 1 else "RESULTS DIFFER"
    print(f"\n{what}, {os.cpu_count()} CPUs, {args.repeats} run(s) each (medians); {same}\n")
    print("| allocator | library | wall s | user s | system s | system / user | minor faults | "
          "peak RSS GiB | load avg | wall / first's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["wall"] for r in runs[args.allocators[0]])
    for name, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "summary"}
        print(f"| {name} | {os.path.basename(libraries[name])} | {med['wall']:.1f} | "
              f"{med['user']:.1f} | {med['sys']:.1f} | {med['sys'] / med['user']:.1%} | "
              f"{med['minflt'] / 1e6:.2f} M | "
              f"{med['rss']:.2f} | {med['load']:.1f} | {med['wall'] / base:.2f} |")
    if len(summaries) != 1:
        sys.exit(f"error: the runs wrote {len(summaries)} different results")


if __name__ == "__main__":
    main()
