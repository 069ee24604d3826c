"""The RL arm's trade: trajectories judged on a subset of the evaluation prompts against all of
them, side by side on the runs of one finished main job.

The main job judges every snapshot of every RLHF run on ``evaluate.trajectory_prompts`` of the
``N`` evaluation prompts (a stratified subset, :func:`lsc.repro.evaluation.trajectory_prompts`).
This script re-judges the runs of ``--workdir`` (its ``rlhf`` stage, ``--seeds`` of them) twice
in one invocation, in ``--out``: on the subset (``--subset``, default the workdir's own setting)
and on all ``N`` prompts, each by the main job's evaluate stage
(:func:`lsc.repro.pipeline.evaluate_stage`: its jobs, two workers). It decides the RL claims
(:func:`lsc.repro.rl_arm.evaluate_rl_claims`, the workdir's ``rl_arm`` settings) on each and
reports, per claim, the mean over seeds of the statistic under both, and the per-seed difference
subset - full with its t-interval across seeds: an unbiased subset has an interval that covers
0. Timings: each judging's wall time, and their ratio.

Usage: ``python benchmarks/trajectory_prompts.py --workdir=runs/repro --out=/tmp/tp
[--seeds=0,1,2,3,4] [--subset=250] [--json=out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from lsc import stages as stages_lib  # noqa: E402
from lsc.eval import decision  # noqa: E402
from lsc.repro import pipeline, rl_arm  # noqa: E402


def judge(config, earlier, out_dir: str, world_dir: str) -> dict:
    """Every run of ``earlier["rlhf"]`` judged by the main job's evaluate stage in
    ``<out_dir>/evaluate`` (the workdir's world linked beside it); returns ``{run: {seed:
    fields}}`` (:func:`lsc.repro.rl_arm.load`'s layout)."""
    stage_dir = os.path.join(out_dir, "evaluate")
    os.makedirs(stage_dir, exist_ok=True)
    link = os.path.join(out_dir, "world")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(world_dir), link)
    result = pipeline.evaluate_stage(config, stage_dir, earlier)
    return rl_arm.load(result["trajectories"])


def claims(config, trajs) -> list:
    ra = config.rl_arm
    return rl_arm.evaluate_rl_claims(trajs, kl_grid=[float(x) for x in ra.kl_grid],
                                     path=str(ra.path), max_gap=float(ra.max_gap),
                                     delta=float(config.exact.delta),
                                     confidence=float(config.exact.confidence),
                                     points=str(ra.points))


def compare(sub: list, full: list, confidence: float) -> list:
    """Per claim: the statistic under both and the per-seed difference subset - full."""
    rows = []
    for a, b in zip(sub, full):
        row = {"key": a["key"], "subset": a.get("across", {}).get("value"),
               "full": b.get("across", {}).get("value"), "outcome_subset": a["outcome"],
               "outcome_full": b["outcome"], "grid_subset": a["grid_used"],
               "grid_full": b["grid_used"]}
        if a["seed_values"] and len(a["seed_values"]) == len(b["seed_values"]) >= 2:
            d = np.asarray(a["seed_values"]) - np.asarray(b["seed_values"])
            row["difference"] = decision.across_seeds(d, confidence)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, help="a finished main job's workdir")
    ap.add_argument("--out", required=True, help="where the two judgings are written")
    ap.add_argument("--seeds", default="", help="RL seeds to judge (default: all)")
    ap.add_argument("--subset", type=int, default=-1,
                    help="prompts of the subset (default: the workdir's "
                         "evaluate.trajectory_prompts)")
    ap.add_argument("--json", default="", help="also write the comparison here")
    args = ap.parse_args()
    with open(os.path.join(args.workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    status = stages_lib.load_status(args.workdir)
    earlier = {k: v["result"] for k, v in status.items() if v.get("status") == "done"}
    if "rlhf" not in earlier:
        raise SystemExit(f"{args.workdir}: the rlhf stage is not done")
    if args.seeds:
        keep = [int(s) for s in args.seeds.split(",")]
        if len(keep) < 2:
            raise SystemExit("--seeds needs 2 or more seeds (the interval across seeds)")
        earlier["rlhf"] = {m: dict(r, seeds=[s for s in r["seeds"] if s in keep])
                           for m, r in earlier["rlhf"].items()}
    subset = (int(config.evaluate.get("trajectory_prompts", 0)) if args.subset < 0
              else args.subset)
    pipeline.compilation_cache(args.workdir)
    world_dir = os.path.join(args.workdir, "world")
    out, seconds = {}, {}
    for name, num in (("subset", subset), ("full", 0)):
        cfg = ml_collections.ConfigDict(config.to_dict())
        cfg.evaluate.trajectory_prompts = num
        start = time.perf_counter()
        trajs = judge(cfg, earlier, os.path.join(args.out, name), world_dir)
        seconds[name] = time.perf_counter() - start
        out[name] = claims(cfg, trajs)
    rows = compare(out["subset"], out["full"], float(config.exact.confidence))
    fmt = lambda x: "-" if x is None else f"{x:+.4f}"  # noqa: E731
    print(f"subset {subset} prompts: {seconds['subset']:.0f} s; all prompts: "
          f"{seconds['full']:.0f} s (ratio {seconds['full'] / seconds['subset']:.2f})")
    print("| claim | subset | all | subset - all (95% CI over seeds) | outcome subset / all |")
    print("|---|---|---|---|---|")
    for r in rows:
        d = r.get("difference")
        diff = "-" if d is None else (f"{d['value']:+.4f} [{d['ci_low']:+.4f}, "
                                      f"{d['ci_high']:+.4f}]")
        print(f"| {r['key']} | {fmt(r['subset'])} | {fmt(r['full'])} | {diff} | "
              f"{r['outcome_subset']} / {r['outcome_full']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"subset": subset, "seconds": seconds, "claims": rows}, f, indent=2)


if __name__ == "__main__":
    main()
