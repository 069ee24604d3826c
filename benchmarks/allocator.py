"""The entry point with glibc's malloc vs tcmalloc (``lsc.allocator``), side by side on CPU.

Runs the same job, ``python -m lsc.main --config=configs/rm/synthetic_helpful.py`` with
``--steps`` training steps from an empty workdir, as a child process with ``LSC_ALLOCATOR=system``
and with the default (tcmalloc, when installed), alternating ``--repeats`` times. Reported per
setting (medians): wall time, user and system CPU time and minor page faults of the child.

Usage: ``python benchmarks/allocator.py [--steps 200] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
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


def _child(workdir: str, steps: int, choice: str):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lsc.main",
                    "--config=configs/rm/synthetic_helpful.py", f"--workdir={workdir}",
                    f"--config.train.num_steps={steps}", "--config.train.progress=False"],
                   cwd=ROOT, check=True, capture_output=True,
                   env=dict(os.environ, **{allocator.ENV: choice}))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime,
            "sys": after.ru_stime - before.ru_stime, "minflt": after.ru_minflt - before.ru_minflt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    library = allocator.find_tcmalloc()
    if library is None:
        sys.exit("tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
    runs = {"system": [], "tcmalloc": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for choice in runs:
                runs[choice].append(_child(os.path.join(tmp, f"{choice}{rep}"), args.steps,
                                           choice))
                print(choice, {k: round(v, 1) for k, v in runs[choice][-1].items()}, flush=True)
    print(f"\nreward-model training, {args.steps} steps, {os.cpu_count()} CPUs, {library}\n")
    print("| allocator | wall s | user s | system s | minor faults | wall / system's |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["wall"] for r in runs["system"])
    for choice, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| {choice} | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.1f} | "
              f"{med['minflt'] / 1e6:.2f} M | {med['wall'] / base:.2f} |")


if __name__ == "__main__":
    main()
