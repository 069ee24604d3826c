"""The GRPO study: does group normalisation undo LSC? (``configs/repro/grpo_study.py``).

Under GRPO the advantage of a sample is ``(u - mean_group u) / std_group u``. For a prompt whose
samples all sit well above ``r_ref`` the LSC utility is nearly flat, so dividing by the group's
small std re-inflates exactly the differences LSC shrinks. The study asks, on the synthetic
world, whether LSC's effect against the raw reward survives each advantage estimator.

Declared before any run (the comparison grid, the statistic and the rule):

* **Runs** (``rlhf.runs`` of the config): helpfulness raw vs LSC (85th-percentile reference)
  under each of PPO, RLOO, GRPO and Dr. GRPO, the same objective ``E[u] - gamma KL`` (KL in the
  return, the main job's gamma per utility), 12 sequences a step, 100 steps, the main job's RL
  seeds; two properties under GRPO: LSC sum vs sigma_AND vs GDPO (normalise each reward within
  the group, then sum).
* **Statistic and rule**: those of the main job's RL arm (:mod:`lsc.repro.rl_arm`,
  :data:`lsc.repro.claims.RL_RULE`): per RL seed, the paired difference ``A - B`` of the gold
  win rate at matched KL (the helpfulness win rate for one property, the AND win rate for two),
  averaged over the points of ``rl_arm.kl_grid`` bracketed in every trajectory of both methods
  (``rl_arm.path``, ``rl_arm.max_gap``);
  the interval across seeds, Holm-adjusted over the study's claims, and its outcome
  (:mod:`lsc.eval.decision`; :data:`STUDY_CLAIMS`).
* **"Group normalisation undoes LSC"** is read as: LSC vs raw *reproduces* under PPO, RLOO or
  Dr. GRPO and not under GRPO. Any other pattern is reported as it is.
* **Exact analogue** (shown, not decided; :mod:`lsc.repro.grpo_exact`): GRPO's per-group std
  scaling acts as a per-prompt temperature on the utility; the exact KL-regularised optimum on
  the main job's sample banks with and without it, LSC minus raw at matched KL.

Stages: the main job's first six (world, reward models, SFT, predictors, base samples, exact;
reused from a finished main job's workdir with ``study.reuse_workdir``), then ``rlhf`` and
``evaluate`` (the main job's, on the study's runs) and ``study`` (``study.json``, the figures,
``study.md``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

import jax
import ml_collections
from absl import logging

from lsc import runtime
from lsc import stages as stages_lib
from lsc.eval import decision, plots
from lsc.repro import evaluation, exact_arm, figures, grpo_exact
from lsc.repro import pipeline
from lsc.repro import rl_arm
from lsc.repro.claims import MATCHED, RL_RULE, RLClaim

ALGORITHMS = ("ppo", "rloo", "grpo", "dr_grpo")
LABELS = {"ppo": "PPO", "rloo": "RLOO", "grpo": "GRPO", "dr_grpo": "Dr. GRPO"}

STUDY_CLAIMS = tuple(
    RLClaim(f"lsc_vs_raw_{a}", f"study ({LABELS[a]})",
            f"Under {LABELS[a]}, the LSC-transformed reward (85th-percentile reference) reaches a "
            "higher helpfulness win rate than the raw reward at the same KL.",
            f"helpful_lsc_{a}", f"helpful_raw_{a}", MATCHED, "helpful")
    for a in ALGORITHMS) + (
    RLClaim("lsc_sum_vs_sigma_and_grpo", "study (GRPO, helpful and harmless)",
            "Under GRPO, the sum of LSC rewards reaches a higher AND win rate than sigma_AND of "
            "the same logits at the same KL.", "hh_lsc_sum_grpo", "hh_sigma_and_grpo", MATCHED,
            "and"),
    RLClaim("lsc_sum_vs_gdpo_grpo", "study (GRPO, helpful and harmless)",
            "Under GRPO, the sum of LSC rewards reaches a higher AND win rate than GDPO "
            "(each reward normalised within the group, then summed) at the same KL.",
            "hh_lsc_sum_grpo", "hh_gdpo_grpo", MATCHED, "and"),
    RLClaim("sigma_and_vs_gdpo_grpo", "study (GRPO, helpful and harmless)",
            "Under GRPO, sigma_AND reaches a higher AND win rate than GDPO at the same KL.",
            "hh_sigma_and_grpo", "hh_gdpo_grpo", MATCHED, "and"),
)

EARLIER = ("world", "reward_models", "sft", "predictor", "base_samples", "exact")
# The stage directories the study's rlhf and evaluate stages read from the workdir.
_LINKED = ("world", "predictor")


def undone_verdict(claims: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """The declared reading of "group normalisation undoes LSC" from the per-estimator
    verdicts of LSC vs raw: ``{"undone": bool, "verdicts": {algorithm: verdict}, "text"}``."""
    v = {a: next((c["verdict"] for c in claims if c["key"] == f"lsc_vs_raw_{a}"), None)
         for a in ALGORITHMS}
    kept = [a for a in ("ppo", "rloo", "dr_grpo") if v[a] == decision.REPRODUCES]
    undone = bool(kept) and v["grpo"] != decision.REPRODUCES
    if undone:
        text = (f"LSC's effect holds under {', '.join(LABELS[a] for a in kept)} and not under "
                "GRPO: group normalisation undoes it here.")
    elif v["grpo"] == decision.REPRODUCES:
        text = "LSC's effect holds under GRPO: group normalisation does not undo it here."
    else:
        text = ("LSC vs raw reproduces under none of PPO, RLOO and Dr. GRPO, so the study cannot "
                "say whether GRPO undoes it: the verdicts are " +
                ", ".join(f"{LABELS[a]} {v[a]}" for a in ALGORITHMS) + ".")
    return {"undone": undone, "verdicts": v, "text": text}


def draw_figures(trajs, out_dir: str) -> List[str]:
    """The study's figures: per estimator, raw vs LSC helpfulness win rate along KL
    (``grpo_study_<algorithm>_helpful_vs_kl.png``), and the two-property GRPO runs' AND win rate
    (``grpo_study_hh_and_vs_kl.png``); one colour per run, one line per seed. Returns the paths
    written."""
    col = exact_arm.GOLD_JUDGED.index
    specs = [(f"grpo_study_{a}_helpful_vs_kl.png", "helpful", "helpfulness win rate",
              f"{LABELS[a]}: raw vs LSC", [f"helpful_raw_{a}", f"helpful_lsc_{a}"])
             for a in ALGORITHMS]
    specs.append(("grpo_study_hh_and_vs_kl.png", "and", "AND win rate",
                  "GRPO, helpful and harmless: LSC sum vs sigma_AND vs GDPO",
                  ["hh_lsc_sum_grpo", "hh_sigma_and_grpo", "hh_gdpo_grpo"]))
    paths = []
    for name, metric, label, title, methods in specs:
        groups = {m: figures.runs_of(trajs, m, lambda r, c=col(metric):
                                     r["metrics"][..., c].mean(axis=1))
                  for m in methods if m in trajs}
        if groups:
            paths.append(plots.plot_trajectories(groups, os.path.join(out_dir, name),
                                                 metric=label, title=title,
                                                 chance_line=metric != "and"))
    return paths


def render(claims, undone: Mapping[str, Any], exact: Mapping[str, Any],
           seconds: Mapping[str, float]) -> str:
    """``study.md``."""
    lines = ["# GRPO study: does group normalisation undo LSC?", "",
             f"**Rule**: {RL_RULE}.", "",
             f"**Reading (declared)**: {undone['text']}", ""]
    lines += rl_arm.render(claims, {}, {}, header=False)
    if exact:
        lines += ["## Exact analogue (shown, not decided)", "",
                  "GRPO's per-group std scaling as a per-prompt temperature on the utility: the "
                  "exact optimum on the main job's banks, LSC minus raw helpfulness win rate at "
                  "matched KL, per reward-model replicate.", "",
                  grpo_exact.render(exact), ""]
    if seconds:
        lines += ["Stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), ""]
    return "\n".join(lines)


def study_stage(config: ml_collections.ConfigDict, stage_dir: str, earlier: Dict[str, Any]):
    """Decides :data:`STUDY_CLAIMS` on the evaluated trajectories; writes ``study.json``,
    ``study.md`` and the figures in the workdir."""
    workdir = os.path.dirname(stage_dir)
    trajs = rl_arm.load(earlier["evaluate"]["trajectories"])
    base = evaluation.load_base_samples(earlier["base_samples"]["path"])
    ex = config.exact
    claims = rl_arm.evaluate_rl_claims(
        trajs, kl_grid=[float(x) for x in config.rl_arm.kl_grid], path=str(config.rl_arm.path),
        max_gap=float(config.rl_arm.max_gap), delta=float(ex.delta),
        confidence=float(ex.confidence), claims=STUDY_CLAIMS)
    undone = undone_verdict(claims)
    exact = grpo_exact.analogue(base, [float(x) for x in config.exact.kl_grid],
                                include_gold=True)
    out_dir = os.path.join(workdir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    paths = draw_figures(trajs, out_dir)
    status = stages_lib.load_status(workdir)
    seconds = {k: float(v.get("seconds", 0.0)) for k, v in status.items()
               if k in ("rlhf", "evaluate")}
    results = {"claims": claims, "undone": undone, "exact_analogue": json.loads(grpo_exact.to_json(exact)),
               "kl_grid": [float(x) for x in config.rl_arm.kl_grid],
               "exact_kl_grid": [float(x) for x in config.exact.kl_grid],
               "seeds": {m: sorted(int(s) for s in runs) for m, runs in trajs.items()},
               "kl_coef": {m: float(config.rlhf.runs[m].kl_coef) for m in trajs
                           if m in config.rlhf.runs},
               "figures": paths}
    if jax.process_index() == 0:
        runtime.write_json_atomic(os.path.join(workdir, "study.json"), results)
        runtime.write_text_atomic(os.path.join(workdir, "study.md"),
                                  render(claims, undone, exact, seconds))
    logging.info("GRPO study: %s", undone["text"])
    return {"study": os.path.join(workdir, "study.json"), "verdicts": undone["verdicts"]}


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
