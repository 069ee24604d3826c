"""The GRPO study: does GRPO's division by the group's reward std undo LSC?
(``configs/repro/grpo_study.py``).

Under GRPO the advantage of a sample is ``(u - mean_group u) / std_group u``. For a prompt whose
samples all sit well above ``r_ref`` the LSC utility ``u = log sigmoid(r - r_ref)`` is nearly
flat, so dividing by the group's small std re-inflates exactly the differences LSC shrinks.
Dr. GRPO does not divide by the std, and also normalises the loss by a constant instead of by
each sequence's length; the study crosses the two.

Declared before any run (the runs, the grid, the statistic, the rule and the reading):

* **Runs** (``rlhf.runs``): helpfulness raw vs LSC (85th-percentile reference), replicate 0's
  reward model, a group of 4, 12 sequences a step, the main job's 10 RL seeds (common random
  numbers), under four estimators (:data:`ESTIMATORS`): ``grpo`` (std division, sequence
  normalisation), ``dr_grpo`` (neither), ``grpo_const`` (std division, constant normalisation),
  ``dr_grpo_seq`` (sequence normalisation only); at two gamma levels per utility
  (``study.gammas``; level ``g<k>``), one run ``helpful_<utility>_<estimator>_g<k>`` each
  (:func:`run_name`).
* **Grid.** One grid for every run, ``rl_arm.kl_grid``, each trajectory read on
  ``rl_arm.path`` with ``rl_arm.max_gap`` (:func:`lsc.eval.trajectory.read_at_kl`). Under the
  main job's ``rl_arm.points = "per_seed"`` a seed uses the points bracketed in every
  trajectory the statistic reads for that seed (the two of a matched claim, the four of a
  contrast); a seed with none is left out. The points bracketed in every trajectory of the level
  (:func:`common_grid`) are reported, and the contrasts on them (``points = "common"``) beside,
  not decided. (Changed after the first run: README, "Changes made after seeing results".)
* **Statistic.** Per RL seed, the gold helpfulness win rate read at its points and averaged
  over the points and prompts, of

  - ``lsc_vs_raw_<estimator>``: LSC - raw under the estimator (:func:`matched_claims`, the RL
    arm's ``matched`` kind);
  - ``diff_in_diff``: ``D = (LSC - raw | grpo) - (LSC - raw | dr_grpo)``;
  - ``std_division_alone``: ``(LSC - raw | grpo_const) - (LSC - raw | dr_grpo)``;
  - ``normalisation_alone``: ``(LSC - raw | dr_grpo_seq) - (LSC - raw | dr_grpo)``
    (:data:`CONTRASTS`, :func:`contrast_values`).
* **Rule** (the RL arm's, :data:`lsc.repro.claims.RL_RULE`): the t-interval across seeds
  (:func:`lsc.eval.decision.across_seeds`), Holm-adjusted over the level's seven claims, the
  outcome against ``exact.delta`` (:func:`lsc.eval.decision.outcome`). The primary level is
  ``study.primary_level`` (``g1``, the lower gammas); the other level is the same decision,
  reported beside it as a sensitivity check.
* **Reading** (:func:`undone_verdict`, on the primary level): "the group std undoes LSC" only
  when ``D``'s interval lies below 0 (outcome opposite: GRPO's LSC - raw below Dr. GRPO's) and
  the std-division ablation's interval lies below 0 too; "only one estimator shows an effect"
  when GRPO's and Dr. GRPO's LSC-vs-raw verdicts differ but ``D`` is inconclusive; otherwise the
  verdicts are reported as they are.
* **Exact analogue** (shown, not decided; :mod:`lsc.repro.grpo_exact`): GRPO's per-group std
  scaling acts as a per-prompt temperature on the utility; the exact KL-regularised optimum on
  the main job's sample banks with and without it, LSC minus raw at matched KL.

Stages: the main job's first six (world, reward models, SFT, predictors, base samples, exact;
reused from a finished main job's workdir with ``study.reuse_workdir``), then ``rlhf`` and
``evaluate`` (the main job's, on the study's runs) and ``study`` (``study.json``, the figures,
``study.md``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from lsc import runtime
from lsc import stages as stages_lib
from lsc.align import rlhf as align_rlhf
from lsc.eval import decision, plots
from lsc.eval import trajectory as traj_lib
from lsc.repro import evaluation, exact_arm, figures, grpo_exact
from lsc.repro import pipeline
from lsc.repro import rl_arm
from lsc.repro.claims import MATCHED, RL_RULE, RLClaim

ESTIMATORS = ("grpo", "dr_grpo", "grpo_const", "dr_grpo_seq")
LABELS = {"grpo": "GRPO", "dr_grpo": "Dr. GRPO",
          "grpo_const": "GRPO with constant normalisation",
          "dr_grpo_seq": "Dr. GRPO with sequence normalisation"}
UTILITIES = ("raw", "lsc")
METRIC = "helpful"
CONTRAST = "diff_in_diff"
"""The ``kind`` of a contrast's row: ``(LSC - raw | x) - (LSC - raw | y)``."""


@dataclasses.dataclass(frozen=True)
class Contrast:
    """``(LSC - raw | x) - (LSC - raw | y)`` of the helpfulness win rate at matched KL, per RL
    seed (``x``, ``y``: names of :data:`ESTIMATORS`)."""

    key: str
    text: str
    x: str
    y: str


CONTRASTS: Tuple[Contrast, ...] = (
    Contrast("diff_in_diff", "LSC's gain over raw at matched KL differs between GRPO and "
             "Dr. GRPO (the group std and the loss normalisation together).", "grpo",
             "dr_grpo"),
    Contrast("std_division_alone", "LSC's gain over raw differs between GRPO with Dr. GRPO's "
             "constant normalisation and Dr. GRPO (the group std alone).", "grpo_const",
             "dr_grpo"),
    Contrast("normalisation_alone", "LSC's gain over raw differs between Dr. GRPO with GRPO's "
             "sequence normalisation and Dr. GRPO (the loss normalisation alone).",
             "dr_grpo_seq", "dr_grpo"),
)
STD_UNDOES_LSC, ONE_ESTIMATOR_ONLY, AS_IS = "std_undoes_lsc", "one_estimator_only", "as_is"
READINGS = (STD_UNDOES_LSC, ONE_ESTIMATOR_ONLY, AS_IS)
CONTRAST_RULE = (
    "per RL seed, (LSC - raw | x) - (LSC - raw | y) of the helpfulness win rate at matched KL, "
    "the mean over the grid points bracketed in all four of the seed's trajectories and the "
    "prompts (a seed with none is left out); otherwise the RL arm's rule "
    "(the t-interval across seeds, Holm over the level's claims, exact.delta)")

# Estimates of the study's wall time (2 CPU cores; :func:`estimate_seconds`).
STEP_SECONDS = 0.09  # one RL step of one worker (12 sequences)
SNAPSHOT_SECONDS = 0.4  # judging one snapshot (the trajectory prompts)
FINAL_SECONDS = 1.0  # judging a run's final policy (every evaluation prompt)
COMPILE_SECONDS = 10.0  # per distinct run config
WORKERS = 2


def run_name(utility: str, estimator: str, level: int) -> str:
    """``helpful_<utility>_<estimator>_g<level>``: a run of the study (``rlhf.runs``)."""
    return f"helpful_{utility}_{estimator}_g{level}"


def level_runs(level: int) -> List[str]:
    """Every run of gamma level ``level``."""
    return [run_name(u, e, level) for e in ESTIMATORS for u in UTILITIES]


def matched_claims(level: int) -> Tuple[RLClaim, ...]:
    """LSC vs raw under each estimator at ``level`` (the RL arm's ``matched`` kind)."""
    return tuple(
        RLClaim(f"lsc_vs_raw_{e}", f"study ({LABELS[e]}, g{level})",
                f"Under {LABELS[e]}, the LSC-transformed reward (85th-percentile reference) "
                "reaches a higher helpfulness win rate than the raw reward at the same KL.",
                run_name("lsc", e, level), run_name("raw", e, level), MATCHED, METRIC)
        for e in ESTIMATORS)


def _win(run: Mapping[str, np.ndarray]) -> np.ndarray:
    """``float64[T, P]``: a trajectory's per-prompt helpfulness win rate."""
    return np.asarray(run["metrics"], np.float64)[..., exact_arm.GOLD_JUDGED.index(METRIC)]


def common_grid(trajs, runs: Sequence[str], grid: Sequence[float], *, path: str,
                max_gap: float) -> np.ndarray:
    """``bool[G]``: the points of ``grid`` bracketed (:func:`lsc.eval.trajectory.read_at_kl`) in
    every trajectory (every seed) of every run of ``runs`` in ``trajs`` (:func:`rl_arm.load`
    output); all False when none of them ran."""
    ok = [traj_lib.read_at_kl(r["kl_k1"], _win(r), grid, path=path, max_gap=max_gap)[1]
          for name in runs for r in trajs.get(name, {}).values()]
    return np.stack(ok).all(axis=0) if ok else np.zeros(len(grid), bool)


def contrast_values(trajs, x: str, y: str, level: int, grid: Sequence[float], *, path: str,
                    max_gap: float, points: str = rl_arm.PRIMARY_POINTS) -> Dict[str, Any]:
    """``(LSC - raw | x) - (LSC - raw | y)`` per RL seed at matched KL.

    Each of the four runs' trajectories (``run_name(<utility>, x or y, level)``) is read at
    ``grid`` on ``path`` with ``max_gap``; a seed's points are those bracketed in all four of its
    trajectories (``points="per_seed"``) or in every trajectory of the four runs
    (``"common"``); per seed, the mean over its points and the prompts of ``L_x - R_x - L_y +
    R_y`` of the per-prompt helpfulness win rates.

    Returns:
      ``{"seeds": [S]`` (those all four runs ran), ``"seeds_read"`` (those with a point),
      ``"used": bool[G]`` (points some seed uses), ``"points_per_seed": [S], "seed_values":
      float64[S']`` (one per seed read)``, "missing": [run]}``.
    """
    if points not in traj_lib.POINTS:
        raise ValueError(f"points must be one of {traj_lib.POINTS}, got {points!r}")
    names = [run_name(u, e, level) for e in (x, y) for u in ("lsc", "raw")]
    missing = [n for n in names if not trajs.get(n)]
    empty = {"seeds": [], "seeds_read": [], "used": np.zeros(len(grid), bool),
             "points_per_seed": [], "seed_values": np.zeros(0)}
    if missing:
        return {**empty, "missing": missing}
    seeds = sorted(set.intersection(*(set(trajs[n]) for n in names)))
    if not seeds:
        return {**empty, "missing": []}
    reads = {n: [traj_lib.read_at_kl(trajs[n][s]["kl_k1"], _win(trajs[n][s]), grid,
                                     path=path, max_gap=max_gap) for s in seeds]
             for n in names}
    use = np.stack([np.stack([ok for _, ok in reads[n]]) for n in names]).all(axis=0)  # [S, G]
    if points == "common":
        use = np.broadcast_to(use.all(axis=0), use.shape)
    values, read = [], []
    for i, s in enumerate(seeds):
        if use[i].any():
            lx, rx, ly, ry = (reads[n][i][0][use[i]] for n in names)
            values.append(float(np.mean(lx - rx - ly + ry)))
            read.append(s)
    return {"seeds": seeds, "seeds_read": read, "used": use.any(axis=0),
            "points_per_seed": [int(n) for n in use.sum(axis=1)],
            "seed_values": np.array(values), "missing": []}


def decide_level(trajs, level: int, kl_grid: Sequence[float], *, path: str, max_gap: float,
                 delta: float, confidence: float = 0.95,
                 points: str = rl_arm.PRIMARY_POINTS) -> Dict[str, Any]:
    """The seven claims of gamma level ``level`` (module docstring), Holm over them.

    Returns:
      ``{"level": "g<k>", "kl_grid": [G], "points", "grid_common": [G']`` (the points bracketed
      in every trajectory of the level)``, "claims": [row]}``: the four :func:`matched_claims`
      rows (:func:`lsc.repro.rl_arm.evaluate_rl_claims`) then one row per :data:`CONTRASTS`
      (``key, source, text, kind`` = :data:`CONTRAST`, ``a, b`` (the contrast's estimators
      ``x, y``), ``runs, metric, rule, delta, kl_grid, path, max_gap, points, seeds,
      seeds_read, points_per_seed, grid_used, seed_values, other_points`` and, when decided,
      ``across, outcome_unadjusted, holm``; always ``outcome, verdict, small_effect, reason``);
      every row with ``level``.
    """
    grid = [float(g) for g in kl_grid]
    used = common_grid(trajs, level_runs(level), grid, path=path, max_gap=max_gap)
    common = [g for g, u in zip(grid, used) if u]
    rows = rl_arm.evaluate_rl_claims(trajs, kl_grid=grid, path=path, max_gap=max_gap,
                                     delta=delta, confidence=confidence, points=points,
                                     claims=matched_claims(level))
    for c in CONTRASTS:
        got = contrast_values(trajs, c.x, c.y, level, grid, path=path, max_gap=max_gap,
                              points=points)
        row: Dict[str, Any] = {
            "key": c.key, "source": f"study (g{level})", "text": c.text, "kind": CONTRAST,
            "a": c.x, "b": c.y, "runs": [run_name(u, e, level) for e in (c.x, c.y)
                                         for u in ("lsc", "raw")],
            "metric": METRIC, "rule": CONTRAST_RULE, "delta": float(delta), "kl_grid": grid,
            "path": path, "max_gap": float(max_gap), "points": points, "seeds": got["seeds"],
            "seeds_read": got["seeds_read"], "points_per_seed": got["points_per_seed"],
            "grid_used": [g for g, u in zip(grid, got["used"]) if u],
            "seed_values": [float(v) for v in got["seed_values"]]}
        if got["missing"]:
            row.update(outcome=decision.INCONCLUSIVE,
                       reason=f"runs did not run: {', '.join(got['missing'])}")
        else:
            row["other_points"] = {}
            for other in traj_lib.POINTS:
                if other == points:
                    continue
                o = contrast_values(trajs, c.x, c.y, level, grid, path=path, max_gap=max_gap,
                                    points=other)
                row["other_points"][other] = rl_arm.undecided(
                    {"used": o["used"], "seed_values": o["seed_values"]}, grid, confidence)
            rl_arm.decide_row(row, row["seed_values"], delta, confidence)
        rows.append(row)
    for row in rows:
        row["level"] = f"g{level}"
    rl_arm.decide_family(rows, delta, confidence)
    return {"level": f"g{level}", "kl_grid": grid, "points": points, "grid_common": common,
            "claims": rows}


def _verdict(claims, key: str):
    return next((c["verdict"] for c in claims if c["key"] == key), None)


def undone_verdict(claims: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """The declared reading of one level's claims (:func:`decide_level` rows; module docstring):
    ``{"reading": one of READINGS, "undone": bool, "verdicts": {estimator: verdict of LSC vs
    raw}, "contrasts": {contrast key: verdict}, "text"}``."""
    v = {e: _verdict(claims, f"lsc_vs_raw_{e}") for e in ESTIMATORS}
    con = {c.key: _verdict(claims, c.key) for c in CONTRASTS}
    d, std = con["diff_in_diff"], con["std_division_alone"]
    listed = ("LSC vs raw: " + ", ".join(f"{LABELS[e]} {v[e]}" for e in ESTIMATORS)
              + "; contrasts: " + ", ".join(f"{k} {w}" for k, w in con.items()) + ".")
    if d == decision.OPPOSITE and std == decision.OPPOSITE:
        reading = STD_UNDOES_LSC
        text = ("LSC's gain over raw is smaller under GRPO than under Dr. GRPO (D below 0) and "
                "the std division alone lowers it too: the group std undoes LSC here. ")
    elif d == decision.INCONCLUSIVE and v["grpo"] != v["dr_grpo"]:
        reading = ONE_ESTIMATOR_ONLY
        text = (f"LSC vs raw is {v['grpo']} under GRPO and {v['dr_grpo']} under Dr. GRPO, but "
                "their difference D is inconclusive: only one estimator shows an effect, which "
                "does not show that the group std undoes LSC. ")
    else:
        reading = AS_IS
        text = f"Reported as it is (D {d}, the std division alone {std}). "
    return {"reading": reading, "undone": reading == STD_UNDOES_LSC, "verdicts": v,
            "contrasts": con, "text": text + listed}


def estimate_seconds(config: ml_collections.ConfigDict, *, step_s: float = STEP_SECONDS,
                     snapshot_s: float = SNAPSHOT_SECONDS, final_s: float = FINAL_SECONDS,
                     compile_s: float = COMPILE_SECONDS, workers: int = WORKERS
                     ) -> Dict[str, float]:
    """An estimate of the ``rlhf`` and ``evaluate`` stages' wall time (the first six reused),
    every run training ``rl.num_steps`` (no early stop), ``workers`` in parallel: RL steps,
    judging each snapshot (``pi0`` and the scheduled steps; the KL-triggered ones of
    ``rl.snapshot_kl`` are not counted) and each final policy, and one
    compilation per run config. ``{"runs", "snapshots_per_run", "rl", "judging", "compile",
    "total"}`` (seconds)."""
    rl = config.rl
    steps = int(rl.num_steps)
    seeds = len(tuple(rl.seed)) if isinstance(rl.seed, (tuple, list)) else 1
    configs = len(config.rlhf.runs)
    runs = configs * seeds
    snaps = 1 + sum(align_rlhf.scheduled(s, int(rl.snapshot_every),
                                         int(rl.snapshot_every_early),
                                         int(rl.snapshot_early_until))
                    for s in range(1, steps + 1))
    out = {"runs": runs, "snapshots_per_run": snaps,
           "rl": runs * steps * step_s / workers,
           "judging": runs * (snaps * snapshot_s + final_s) / workers,
           "compile": configs * compile_s / workers}
    out["total"] = out["rl"] + out["judging"] + out["compile"]
    return out


def draw_figures(trajs, out_dir: str, levels: Sequence[int] = (1, 2)) -> List[str]:
    """Per level and estimator, raw vs LSC helpfulness win rate along KL
    (``grpo_study_<estimator>_g<k>_helpful_vs_kl.png``); one colour per run, one line per seed.
    Returns the paths written."""
    paths = []
    for level in levels:
        for e in ESTIMATORS:
            names = [run_name(u, e, level) for u in UTILITIES]
            groups = {m: figures.runs_of(trajs, m, lambda r: _win(r).mean(axis=1))
                      for m in names if m in trajs}
            if groups:
                paths.append(plots.plot_trajectories(
                    groups, os.path.join(out_dir, f"grpo_study_{e}_g{level}_helpful_vs_kl.png"),
                    metric="helpfulness win rate", title=f"{LABELS[e]} (g{level}): raw vs LSC"))
    return paths


def _table(claims) -> List[str]:
    cols = ("claim", "comparison") + rl_arm.CLAIM_COLUMNS[1:]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in claims:
        what = (f"(LSC - raw | {c['a']}) - (LSC - raw | {c['b']})" if c["kind"] == CONTRAST
                else f"{c['a']} - {c['b']}")
        out.append("| " + " | ".join([c["key"], what] + rl_arm.claim_cells(c)[1:]) + " |")
    return out + [""]


def render(levels: Sequence[Mapping[str, Any]], readings: Sequence[Mapping[str, Any]],
           gammas: Mapping[str, Sequence[float]], exact: Mapping[str, Any],
           seconds: Mapping[str, float]) -> str:
    """``study.md``: per level (the primary first), its gammas, grid, claims and reading; the
    exact analogue."""
    lines = ["# GRPO study: does the group std undo LSC?", "",
             f"**Rule**: {RL_RULE}. Contrasts: {CONTRAST_RULE}.", ""]
    for i, (lv, reading) in enumerate(zip(levels, readings)):
        k = int(lv["level"][1:])
        role = "primary" if i == 0 else "sensitivity (not the reading)"
        lines += [f"## Level {lv['level']} ({role}): gamma raw {gammas['raw'][k - 1]:g}, "
                  f"LSC {gammas['lsc'][k - 1]:g}", "",
                  f"Grid (KL): {', '.join(f'{g:g}' for g in lv['kl_grid'])}; points per seed: "
                  f"{lv['points']}; bracketed in every trajectory of the level: "
                  + (", ".join(f"{g:g}" for g in lv["grid_common"]) or "none"), "",
                  f"**Reading (declared)**: {reading['text']}", ""]
        lines += _table(lv["claims"])
    if exact:
        lines += ["## Exact analogue (shown, not decided)", "",
                  "GRPO's per-group std scaling as a per-prompt temperature on the utility: the "
                  "exact optimum on the main job's banks, LSC minus raw helpfulness win rate at "
                  "matched KL, per reward-model replicate.", "",
                  grpo_exact.render(exact), ""]
    if seconds:
        lines += ["Stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), ""]
    return "\n".join(lines)


def decide(trajs, config: ml_collections.ConfigDict, confidence: float = None
           ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """``(levels, readings)``: :func:`decide_level` and :func:`undone_verdict` of every gamma
    level of ``config.study.gammas``, the primary (``study.primary_level``) first."""
    ex = config.exact
    primary = int(config.study.primary_level)
    count = len(tuple(config.study.gammas.raw))
    order = [primary] + [k for k in range(1, count + 1) if k != primary]
    levels = [decide_level(trajs, k, [float(x) for x in config.rl_arm.kl_grid],
                           path=str(config.rl_arm.path), max_gap=float(config.rl_arm.max_gap),
                           delta=float(ex.delta), points=str(config.rl_arm.points),
                           confidence=float(ex.confidence if confidence is None else confidence))
              for k in order]
    return levels, [undone_verdict(lv["claims"]) for lv in levels]


def study_stage(config: ml_collections.ConfigDict, stage_dir: str, earlier: Dict[str, Any]):
    """Decides every level's claims on the evaluated trajectories (:func:`decide`); writes
    ``study.json``, ``study.md`` and the figures in the workdir."""
    workdir = os.path.dirname(stage_dir)
    trajs = rl_arm.load(earlier["evaluate"]["trajectories"])
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    levels, readings = decide(trajs, config)
    gammas = {u: [float(g) for g in config.study.gammas[u]] for u in UTILITIES}
    exact = grpo_exact.analogue(base, [float(x) for x in config.exact.kl_grid],
                                include_gold=True)
    out_dir = os.path.join(workdir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    paths = draw_figures(trajs, out_dir, levels=range(1, len(gammas["raw"]) + 1))
    status = stages_lib.load_status(workdir)
    seconds = {k: float(v.get("seconds", 0.0)) for k, v in status.items()
               if k in ("rlhf", "evaluate")}
    results = {"primary_level": levels[0]["level"], "claims": levels[0]["claims"],
               "reading": readings[0], "levels": levels, "readings": readings,
               "gammas": gammas, "kl_grid": [float(x) for x in config.rl_arm.kl_grid],
               "exact_analogue": json.loads(grpo_exact.to_json(exact)),
               "exact_kl_grid": [float(x) for x in config.exact.kl_grid],
               "seeds": {m: sorted(int(s) for s in runs) for m, runs in trajs.items()},
               "kl_coef": {m: float(config.rlhf.runs[m].kl_coef) for m in trajs
                           if m in config.rlhf.runs},
               "estimate_seconds": estimate_seconds(config), "figures": paths}
    if jax.process_index() == 0:
        runtime.write_json_atomic(os.path.join(workdir, "study.json"), results)
        runtime.write_text_atomic(os.path.join(workdir, "study.md"),
                                  render(levels, readings, gammas, exact, seconds))
    logging.info("GRPO study: %s", readings[0]["text"])
    return {"study": os.path.join(workdir, "study.json"), "reading": readings[0]["reading"]}


EARLIER = ("world", "reward_models", "sft", "predictor", "base_samples", "exact")
# The stage directories the study's rlhf and evaluate stages read from the workdir.
_LINKED = ("world", "predictor")


STAGES: List[stages_lib.Stage] = (
    [s for s in pipeline.STAGES if s.name in EARLIER]
    + [stages_lib.Stage("rlhf", "RLHF, every study run with every RL seed",
                        pipeline.rlhf_stage, weight=600),
       stages_lib.Stage("evaluate", "every study run judged along training",
                        pipeline.evaluate_stage, weight=250),
       stages_lib.Stage("study", "the study's claims, figures and study.md", study_stage,
                        weight=10)])


def reuse(workdir: str, source: str) -> None:
    """Marks the first six stages of the study in ``workdir`` as done with the results of the
    finished main job in ``source`` (its stage directories are read in place; ``world`` and
    ``predictor`` are linked). A stage already done in ``workdir`` is kept."""
    src_status = stages_lib.load_status(source)
    missing = [s for s in EARLIER if src_status.get(s, {}).get("status") != "done"]
    if missing:
        raise ValueError(f"study.reuse_workdir={source!r}: stages {missing} are not done there "
                         "(run the main job first)")
    os.makedirs(workdir, exist_ok=True)
    status = stages_lib.load_status(workdir)
    for name in EARLIER:
        status.setdefault(name, src_status[name])
    for name in _LINKED:
        link = os.path.join(workdir, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(source, name)), link)
    runtime.write_json_atomic(os.path.join(workdir, stages_lib.STATUS_FILE), status)


def validate(config: ml_collections.ConfigDict) -> None:
    """The main job's validation of every job config (the study's runs included)."""
    pipeline.validate(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
    """Runs the study's stages (reusing ``study.reuse_workdir``'s first six when set)."""
    source = str(config.study.get("reuse_workdir", "") or "")
    if source:
        reuse(workdir, source)
    code = pipeline.run_staged(STAGES, config, workdir)
    if code:
        return code
    if jax.process_index() == 0:
        print(open(os.path.join(workdir, "study.md")).read())
    return 0
