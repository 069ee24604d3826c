"""Every change to the main job (and the GRPO study) made after seeing its results, with the
verdicts under each
version: one table, rendered into ``report.md`` (:func:`render`) and by the README's table
command (:mod:`lsc.repro.tables`).

The rows are the project's record (its README and commit history); verdicts that were never
recorded say so. The last change, this rule, shows both rules' verdicts on the same runs in the
results tables themselves (the "previous rule" column), so its row points there.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple


@dataclasses.dataclass(frozen=True)
class Change:
    """A change made after seeing results: ``what`` changed, ``when`` (commits, date), ``why``
    (what was seen), and the verdicts ``before`` and ``after`` it."""

    what: str
    when: str
    why: str
    before: str
    after: str


CHANGES: Tuple[Change, ...] = (
    Change("World version 1 -> 2, with the exact arm replacing the sampled best-of-k grid and "
           "unpaired intervals (three replicates per property, delta 0.01, 500 evaluation "
           "prompts; the RL arm no longer decided)",
           "336831c, 3b950b4; first results 412a241, 8216f49 (2026-12-01)",
           "version 1's verdicts were fragile (one seed, unpaired) and its benign prompts had "
           "almost no harmlessness variation (base-vs-base ties 0.83; version 2: 0.28)",
           "version 1 (d991fef): LSC vs raw and LSC sum vs raw sum (RL) inconclusive; AND, OR, "
           "the crossing and the reference inconclusive; reward hacking yes (fragile); "
           "underfitting inconclusive; no lower-tail claim",
           "seed 0: lsc_vs_raw inconclusive, lsc_sum_vs_raw_sum yes, and_beats_raw_sum yes, "
           "or_beats_raw_sum no, and_or_cross no, reference_matters inconclusive, lower_tail "
           "inconclusive; seed 1: no, yes, yes, no, no, inconclusive, no"),
    Change("RL gamma per method (raw 0.01, LSC 0.003) from single-seed pilots on the seed-0 "
           "world, judged by the training KL alone",
           "8a2dcf2, b260468 (2026-12-01)",
           "the earlier RL arm's seed-0 runs reached KL 4.8 (LSC) and 7.7 (raw) at gamma 0.01",
           "RL claims not decided (one seed per gamma); other gammas' verdicts not recorded",
           "the first decided RL verdicts were those of the batch-16 run (next row)"),
    Change("RL batch 16 -> 12 prompts per step",
           "cf12b20, b260468 (2026-12-01)",
           "the batch-16 main job took 15 min 4 s, over the 15-minute budget",
           "world seed 0, batch 16: rl_lsc_vs_raw yes (+0.025, +0.035, +0.014), "
           "rl_lsc_sum_vs_raw_sum inconclusive, rl_reward_hacking no, rl_underfitting "
           "inconclusive; world seed 1 not run",
           "batch 12: all four RL claims inconclusive on world seeds 0 and 1"),
    Change("First rule revision: per-replicate classes (above 0 first, all replicates must "
           "agree) -> the rule read at the comparison level",
           "c818882, 4a1f645 (2026-12-01)",
           "after the first two runs, comparisons whose replicates all lay inside +-delta, some "
           "above 0, were inconclusive",
           "seed 0: lsc_vs_raw, reference_matters, lower_tail inconclusive (2 yes, 2 no, 3 "
           "inconclusive); seed 1: reference_matters inconclusive (2 yes, 4 no, 1 inconclusive)",
           "seed 0: lsc_vs_raw and lower_tail no (2 yes, 4 no, 1 inconclusive); seed 1: "
           "reference_matters no (2 yes, 5 no)"),
    Change("This rule: six replicates per property (three before), the interval across "
           "replicates, five outcomes, Holm; proxy-judged AND / OR added",
           "this README's runs",
           "a fresh run of the same commit on another CPU changed 4 of 7 exact-arm verdicts: "
           "the intervals ignored the replicate variation and 'yes' needed every replicate's "
           "lower bound above 0",
           "the previous rule's verdicts on the same runs: the 'previous rule' column of the "
           "tables below",
           "the 'verdict' column of the tables below"),
    Change("The RL arm rebuilt: 3 -> 10 RL seeds per method, the t-interval across seeds "
           "(the pooled bootstrap over prompts before); snapshots every 5 steps to step 50, then "
           "every 10 (every 25 before), up to 200 steps with a stop at 9 nats (100 steps "
           "before); the isotonic reading with bracketed grid points only, grid 0.5-8 nats "
           "(first crossing, extrapolated from pi0 below the first snapshot, before); reward "
           "hacking as the gold-costly feature rate and the proxy-gold gap at matched KL (the "
           "drop after a peak the statistic chose before); underfitting as helpful_not_below on "
           "all prompts, as in the exact arm (the lowest quartile's win rate before); "
           "trajectories judged on 200 stratified evaluation prompts",
           "this README's runs",
           "all four RL claims inconclusive on every run; three seeds' pooled interval left out "
           "training noise, readings at KL 0.5-1 lay below the first snapshot and favoured the "
           "run whose first snapshot had the lower KL, the hacking statistic's peak was chosen "
           "on the curve it measured",
           "world seeds 0, 1, 2 and seed 0 with offset 6: rl_lsc_vs_raw, rl_lsc_sum_vs_raw_sum, "
           "rl_reward_hacking, rl_underfitting inconclusive",
           "the rl_ rows of the tables below"),
    Change("RL snapshots also taken whenever the running training KL rises 0.5 nats "
           "(rl.snapshot_kl), the fixed late schedule every 20 steps instead of 10; and a "
           "per-grid-point table of the RL claims (descriptive, not decided); from the pilot's "
           "time alone (20.3 min), before its claims were seen: trajectory prompts 250 -> 200 "
           "and rl.stop_kl 10 -> 9",
           "9b587ff, after a pilot of the rebuilt arm on world seed 0 (RL seeds 0-9, 250 "
           "trajectory prompts, rl.stop_kl 10) and before world seeds 1 and 2; the per-point "
           "table after world seed 0's run",
           "in the pilot no grid point above 1.5 nats (helpfulness) or 2 nats (sums) was "
           "bracketed within 1 nat in all twenty trajectories of a claim: between 10-step "
           "snapshots the KL often rose more than 1 nat; with the KL-triggered snapshots most "
           "trajectories bracket 6-9 of the 10 points, but the common grid stayed at 0.5-2 nats",
           "pilot: all seven RL claims inconclusive (grid 0.5-1.5 nats, helpfulness; 0.5-2, sums)",
           "the rl_ rows of the tables below (the decision rule itself unchanged)"),
    Change("RL arm: a seed reads the grid points bracketed in both of its own trajectories "
           "(rl_arm.points = per_seed; a seed with none is left out) instead of only the points "
           "bracketed in all twenty trajectories of a claim (reported beside it, not decided); "
           "snapshots on a 0.3-nat rise of the running training KL (0.5 before), every 5 steps "
           "to step 30 (50 before), then every 40 (20 before); the RL and evaluate stages rerun "
           "on world seed 0's first six stages",
           "5201428 (2026-12-05), after the four runs at 9b587ff",
           "on all four runs the common grid stopped at 2 nats (sums) and at 0.5-2 nats "
           "(helpfulness), never reaching raw's decline at 5-8 nats: one trajectory in twenty "
           "jumping several nats in a step (raw sum: 5.1 -> 12.6 nats in 4 steps) removed a "
           "point for every seed, and between snapshots the KL often rose 1-1.3 nats",
           "all seven RL claims inconclusive on every run, except rl_lsc_sum_vs_raw_sum "
           "opposite on world seed 2 (Holm [-0.0379, -0.0027]); LSC sum minus raw sum on AND "
           "-0.022, -0.028, -0.020, -0.021 (seeds 0, 1, 2, offset 6)",
           "world seed 0 only (the other runs were stopped for the next change): "
           "rl_hacking_rate_sum opposite (-0.0673, Holm [-0.1300, -0.0047]), the six others "
           "inconclusive (rl_lsc_vs_raw +0.0172 [-0.0084, +0.0428], rl_lsc_sum_vs_raw_sum "
           "-0.0225 [-0.0603, +0.0154]); 3-10 points per seed"),
    Change("RL snapshots every 5 steps to the end (every 5 to step 30, then every 40 before), "
           "the 0.3-nat KL trigger kept; the RL and evaluate stages rerun on the four runs' "
           "first six stages",
           "after the previous row's world-seed-0 run (2026-12-05)",
           "the KL trigger follows the running training KL, a noisy proxy for the evaluation KL: "
           "a trigger read on a noisy high set the next one too high, so the evaluation KL often "
           "rose 1-3 nats between snapshots (raw sum, RL seed 3: 3.8 -> 6.8 nats over steps "
           "43-76 with no snapshot); the snapshot steps, not the claims, were the reason, but "
           "the claims had been seen",
           "the previous row's 'after'",
           "the rl_ rows of the tables below; the common-points statistic in their last "
           "column"),
    Change("GRPO study (configs/repro/grpo_study.py): the main job's policy learning rate 2e-4 "
           "(3e-4 before), up to 150 steps (100), snapshots every 2 steps to step 24 then every "
           "10 (every 5 to 50, then 10), stop at 5.5 nats (6), 150 trajectory prompts (200) to "
           "pay for the snapshots; each seed reads the points its own runs bracket (the RL "
           "arm's per_seed rule)",
           "7d2005c and 5201428 (2026-12-05)",
           "the first run's common grid was empty at both gamma levels: KL rose from about 0.7 "
           "to 1.5-2.5 nats between steps 10 and 15, and only 3-10 of 10 seeds bracketed each "
           "point",
           "every study claim inconclusive (no grid point), reading 'as is'",
           "docs/grpo_study.md's tables"),
    Change("Scoring and judging read each prompt once (reward models and pi0 continue a prompt "
           "state over the responses), judging takes the policy's log-probs from the sampler "
           "instead of a teacher-forced pass, and snapshots are one safetensors file: the same "
           "quantities, different in rounding only; all four runs rerun (world seeds 2 and 0 "
           "offset 6 from scratch; world seeds 0 and 1 from the predictor stage on, their first "
           "three stages identical bit for bit) and the GRPO study rerun",
           "ff8d430, 16c4146 (2026-12-05)",
           "the main job took 19-21 min, over the 15-minute budget (a change for time, made "
           "after the previous row's verdicts were seen; the verdicts could move only as far as "
           "another CPU's rounding moves them)",
           "the previous row's 'after': every exact-arm verdict as now; rl_hacking_rate_sum "
           "opposite on world seed 0 (Holm [-0.1102, -0.0004]), every other RL claim "
           "inconclusive on every run",
           "every exact-arm verdict unchanged on all four runs; rl_hacking_rate_sum on world "
           "seed 0 inconclusive (-0.0540, Holm [-0.1096, +0.0016]), so every RL claim is "
           "inconclusive on every run; the RL win-rate estimates within 0.0021 of the previous ones, "
           "the hacking rates within 0.008, the hacking gaps (in pi0's SD) within 0.019"),
)


def render() -> List[str]:
    """Markdown lines of the table of :data:`CHANGES`."""
    out = ["| change | when | what was seen | verdicts before | verdicts after |",
           "|---|---|---|---|---|"]
    for c in CHANGES:
        out.append(f"| {c.what} | {c.when} | {c.why} | {c.before} | {c.after} |")
    return out
