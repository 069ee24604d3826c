"""The README's results tables, rendered from one or more workdirs' ``results.json``.

``python -m lsc.repro.tables W1 [W2 ...] [--out FILE | --into README.md]`` prints (writes, or
splices into a document's generated block, :func:`splice`) markdown: per run, a
label line (world seed, replicate offset, replicates, commit, CPU, date, wall time; from
``results["run"]``) with the exact arm's and the RL arm's claims (:func:`run_tables`); with
several runs, the claims' headline verdicts side by side (:func:`stability_table`); the reward
models' held-out accuracies (:func:`reward_model_table`); the changes made after seeing
results (:mod:`lsc.repro.disclosure`). Every function here is a pure function
of the loaded ``results.json`` dicts (:func:`load`), so the text depends on the files only.

Effects are printed with an explicit sign and 4 decimals; an interval ``[l, u]`` with its level
(``95%`` for the interval across replicates, Holm's step-down level for the adjusted one, which
decides the outcome; :mod:`lsc.eval.decision`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lsc.repro import disclosure, rl_arm
from lsc.repro.pipeline import STAGES

BOUNDARY_MARGIN = 0.002
"""A disagreement between runs is explained when a run's Holm interval has a bound within this
distance of a rule boundary (0 or +-delta)."""


def load(path: str) -> Dict[str, Any]:
    """``results.json`` of ``path``: a workdir, the file itself, or a gzip-compressed copy
    (``*.gz``, as kept in ``docs/results/``)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- formatting


def signed(x: Optional[float]) -> str:
    """``+0.0123`` (4 decimals, explicit sign; ``+0.0000`` for what rounds to zero); ``-`` for
    None."""
    if x is None:
        return "-"
    v = round(float(x), 4)
    return f"{v if v != 0 else 0.0:+.4f}"


def interval(iv: Optional[Mapping[str, float]]) -> str:
    """``[+0.0010, +0.0230]`` of ``{"ci_low", "ci_high"}``; ``-`` for None."""
    return "-" if not iv else f"[{signed(iv['ci_low'])}, {signed(iv['ci_high'])}]"


def level(confidence: float) -> str:
    """``95%``, ``97.5%``, ``98.33%``: a confidence level in percent, 2 decimals at most."""
    return f"{100.0 * float(confidence):.2f}".rstrip("0").rstrip(".") + "%"


def wall_time(seconds: float) -> str:
    """``6 min 32 s`` (whole seconds)."""
    m, s = divmod(int(round(float(seconds))), 60)
    return f"{m} min {s} s"


def run_label(run: Mapping[str, Any]) -> str:
    """The label line of a run (``results["run"]``, :func:`lsc.repro.results.decide_results`)."""
    commit = str(run.get("commit", "unknown"))
    short = commit[:7] if commit != "unknown" else commit
    if run.get("dirty"):
        short += " with local changes"
    return (f"World seed {run['world_seed']}, replicate offset {run['replicate_offset']} "
            f"({run['replicates']} replicates per property); commit {short}, {run['cpu']}, "
            f"{run['date']}, wall {wall_time(run['wall_seconds'])}.")


def run_name(run: Mapping[str, Any]) -> str:
    """``seed S`` or ``seed S, offset O`` (O != 0): a run's column in the stability table."""
    off = int(run.get("replicate_offset", 0))
    return f"seed {run['world_seed']}" + (f", offset {off}" if off else "")


def _verdict(claim: Mapping[str, Any]) -> str:
    small = " (small positive effect)" if claim.get("small_effect") else ""
    return f"**{claim['verdict']}**{small}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells: Sequence[str]) -> List[str]:
    return [_row(cells), _row(["---"] * len(cells))]


# --------------------------------------------------------------------------- one run


def decisive_rows(claim: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The rows that decide a claim: an exact claim's decisive comparisons, or the RL claim
    itself (it carries the same statistics: ``across``, ``holm``, ``replicate_values``,
    ``outcome``)."""
    if "comparisons" in claim:
        return [r for r in claim["comparisons"] if r.get("decisive")]
    return [claim]


def _stat_cells(row: Mapping[str, Any]) -> List[str]:
    """Estimate with the unadjusted interval, Holm interval with its level, per-replicate
    values, outcome."""
    across, holm = row.get("across"), row.get("holm")
    est = f"{signed(across['value'])} {interval(across)}" if across else "-"
    adj = f"{interval(holm)} ({level(holm['confidence'])})" if holm else "-"
    per = ", ".join(signed(v) for v in row.get("replicate_values") or []) or "-"
    out = row["outcome"] + (f" ({row['reason']})" if "across" not in row and row.get("reason")
                            else "")
    return [est, adj, per, out]


def _comparison(row: Mapping[str, Any]) -> str:
    what = row.get("kind") or row.get("arm", "")
    return f"{row['a']} - {row['b']} ({row['metric']}, {what})"


def exact_table(exact: Mapping[str, Any]) -> str:
    """The exact arm's claims: one row per claim and decisive comparison."""
    reps = exact.get("replicates") or []
    conf = level(exact.get("confidence", 0.95))
    lines = [f"Exact arm: delta = {float(exact['delta']):g}; outcome from the Holm interval "
             "(within each judge's family); the claim's verdict is its weakest comparison's; "
             "gold control: the same comparison on gold scores, with its bootstrap interval "
             "over prompts.", ""]
    lines += _header(["claim", "judge", "comparison", f"estimate [{conf} across replicates]",
                      "Holm interval (level)", f"per replicate ({', '.join(reps)})", "outcome",
                      "verdict", "previous rule", "gold control"])
    for claim in exact.get("claims", []):
        for row in decisive_rows(claim):
            control = row.get("control")
            lines.append(_row([claim["key"], claim.get("judge", ""), _comparison(row)]
                              + _stat_cells(row)
                              + [_verdict(claim), claim.get("previous_rule_verdict", "-"),
                                 f"{signed(control['value'])} {interval(control)}" if control
                                 else "-"]))
    return "\n".join(lines)


def rl_table(claims: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> str:
    """The RL arm's claims: one row per claim, per-seed values. Rows decided by the seed-level
    rule (with ``seed_values``, :func:`lsc.repro.rl_arm.evaluate_rl_claims`) get
    :func:`lsc.repro.rl_arm.claim_cells`; rows of the per-prompt rule (``replicate_values``,
    as in older ``results.json`` files) their own layout."""
    if claims and all("seed_values" in c for c in claims):
        return _rl_seed_table(claims)
    lines = ["RL arm: PPO trajectories at matched KL, paired by RL seed; Holm across the RL "
             "claims.", ""]
    lines += _header(["claim", "comparison", f"estimate [{level(confidence)} across seeds]",
                      "Holm interval (level)", "per seed", "outcome", "verdict",
                      "previous rule"])
    for c in claims:
        cells = _stat_cells(c)
        if c.get("replicate_values"):
            cells[2] = ", ".join(f"s{s}: {signed(v)}"
                                 for s, v in zip(c["seeds"], c["replicate_values"]))
        lines.append(_row([c["key"], _comparison(c)] + cells
                          + [_verdict(c), c.get("previous_rule_verdict", "-")]))
    return "\n".join(lines)


def _rl_seed_table(claims: Sequence[Mapping[str, Any]]) -> str:
    first = claims[0]
    lines = [f"RL arm: PPO trajectories read at matched KL on the {first.get('path', '')} path "
             f"(segments of at most {first.get('max_gap', float('nan')):g} nats), the RL seed as "
             "the unit: the t-interval across seeds, Holm across the RL claims; per seed: the "
             "mean, SD and count of positive values; the other paths are shown, not decided. "
             "The previous rule (per-seed bootstrap over prompts) does not apply.", ""]
    lines += _header(("claim",) + rl_arm.CLAIM_COLUMNS + ("verdict",))
    for c in claims:
        lines.append(_row([c["key"]] + rl_arm.claim_cells(c) + [_verdict(c)]))
    points = [c for c in claims if c.get("per_point")]
    if points:
        lines += ["", "Per grid point (descriptive, not decided): the mean over the seeds whose "
                  "two trajectories both bracket the point, and how many seeds that is; "
                  "* where the t-interval across those seeds excludes 0.", ""]
        lines += _header(["claim"] + [f"KL {p['kl']:g}" for p in points[0]["per_point"]])
        for c in points:
            lines.append(_row([c["key"]] + [_point_cell(p) for p in c["per_point"]]))
    return "\n".join(lines)


def _point_cell(point: Mapping[str, Any]) -> str:
    if point.get("value") is None:
        return "- (0)"
    lo, hi = point.get("ci_low"), point.get("ci_high")
    star = "*" if lo is not None and (lo > 0 or hi < 0) else ""
    return f"{signed(point['value'])}{star} ({point['seeds']})"


def stage_times(seconds: Mapping[str, float]) -> str:
    """``Stage times (s): world 3, reward_models 190, ...`` in the main job's stage order
    (:data:`lsc.repro.pipeline.STAGES`; other names after, as given)."""
    order = [st.name for st in STAGES if st.name in seconds]
    order += [k for k in seconds if k not in order]
    return "Stage times (s): " + ", ".join(f"{k} {float(seconds[k]):.0f}" for k in order) + "."


def run_tables(results: Mapping[str, Any]) -> str:
    """A run's label line with its stage times, its exact arm's table and (when it ran) its RL
    arm's."""
    label = run_label(results["run"])
    if results.get("stage_seconds"):
        label += " " + stage_times(results["stage_seconds"])
    parts = [label, exact_table(results["exact"])]
    if results.get("rl", {}).get("claims"):
        parts.append(rl_table(results["rl"]["claims"],
                              results["exact"].get("confidence", 0.95)))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- several runs


def run_names(runs: Sequence[Mapping[str, Any]]) -> List[str]:
    """:func:`run_name` of each run, with the CPU added where two runs share a name and the
    run's position (``run i``) where that is not enough."""
    names = [run_name(r["run"]) for r in runs]
    for extra in (lambda i: runs[i]["run"].get("cpu", ""), lambda i: f"run {i + 1}"):
        names = [f"{n}, {extra(i)}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    return names


def _claims(results: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    """Every decided claim of a run by key: the exact arm's, then the RL arm's."""
    out = {c["key"]: c for c in results["exact"].get("claims", [])}
    out.update({c["key"]: c for c in results.get("rl", {}).get("claims", [])})
    return out


def near_boundaries(claim: Mapping[str, Any], delta: float, margin: float = BOUNDARY_MARGIN
                    ) -> List[Tuple[str, float, float]]:
    """``(bound name, bound, boundary)`` for every Holm bound of the claim's decisive rows within
    ``margin`` of a rule boundary (``0``, ``+delta``, ``-delta``)."""
    out = []
    for row in decisive_rows(claim):
        holm = row.get("holm")
        if not holm:
            continue
        for name, key in (("lower", "ci_low"), ("upper", "ci_high")):
            for b in (0.0, float(delta), -float(delta)):
                if abs(float(holm[key]) - b) <= margin:
                    out.append((name, float(holm[key]), b))
                    break
    return out


def stability_table(runs: Sequence[Mapping[str, Any]], margin: float = BOUNDARY_MARGIN) -> str:
    """Every claim's headline verdict and Holm interval(s) per run, whether the runs agree, and
    for each disagreement the runs with a Holm bound within ``margin`` of a rule boundary."""
    names = run_names(runs)
    per_run = [_claims(r) for r in runs]
    keys: List[str] = []
    for claims in per_run:
        keys += [k for k in claims if k not in keys]
    lines = ["Stability: the headline verdict and Holm interval of every claim per run.", ""]
    lines += _header(["claim"] + names + ["agree"])
    notes = []
    for key in keys:
        cells, verdicts = [], []
        for claims in per_run:
            c = claims.get(key)
            if c is None:
                cells.append("-")
                continue
            verdicts.append(c["verdict"])
            ivs = "; ".join(interval(r.get("holm")) for r in decisive_rows(c))
            cells.append(f"{_verdict(c)} {ivs}")
        agree = "-" if len(verdicts) < 2 else ("yes" if len(set(verdicts)) == 1 else "no")
        lines.append(_row([key] + cells + [agree]))
        if agree == "no":
            notes.append(_disagreement(key, runs, per_run, names, margin))
    if notes:
        lines += ["", f"Disagreements (explained when a run's Holm interval has a bound within "
                  f"{margin:g} of a rule boundary, 0 or +-delta):"] + notes
    return "\n".join(lines)


def _disagreement(key: str, runs, per_run, names: Sequence[str], margin: float) -> str:
    flagged = []
    for results, claims, name in zip(runs, per_run, names):
        c = claims.get(key)
        if c is None:
            continue
        delta = float(c.get("delta", results["exact"]["delta"]))
        near = near_boundaries(c, delta, margin)
        if near:
            flagged.append(f"{name} (" + ", ".join(
                f"{n} bound {signed(v)} is {abs(v - b):.4f} from {signed(b)}"
                for n, v, b in near) + ")")
    if flagged:
        return f"- {key}: explained; " + "; ".join(flagged) + "."
    return (f"- {key}: **not explained**: no run has a Holm bound within {margin:g} of 0 or "
            "+-delta.")


def reward_model_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per property and run, the reward models' held-out pairwise accuracy: the mean and range
    over replicates, and the gold-label ceiling (mean over replicates)."""
    names = run_names(runs)
    props: List[str] = []
    for r in runs:
        props += [p for p in r.get("reward_models", {}) if p not in props]
    lines = ["Reward models: held-out pairwise accuracy, mean (range over replicates); gold-label "
             "ceiling.", ""]
    lines += _header(["property"] + names)
    for p in props:
        cells = []
        for r in runs:
            reps = list(r.get("reward_models", {}).get(p, {}).values())
            acc = [float(x["accuracy"]) for x in reps if x.get("accuracy") is not None]
            ceil = [float(x["gold_ceiling"]) for x in reps if x.get("gold_ceiling") is not None]
            if not acc:
                cells.append("-")
                continue
            cell = (f"{sum(acc) / len(acc):.3f} ({min(acc):.3f}-{max(acc):.3f}, "
                    f"{len(acc)} replicates)")
            if ceil:
                cell += f"; ceiling {sum(ceil) / len(ceil):.3f}"
            cells.append(cell)
        lines.append(_row([p] + cells))
    return "\n".join(lines)


def render(runs: Sequence[Mapping[str, Any]]) -> str:
    """The whole text: each run's tables, the stability table (several runs), the reward
    models' table and the changes made after seeing results (:mod:`lsc.repro.disclosure`),
    separated by blank lines and ending with a newline."""
    if not runs:
        raise ValueError("no results to render")
    parts = [run_tables(r) for r in runs]
    if len(runs) > 1:
        parts.append(stability_table(runs))
    parts.append(reward_model_table(runs))
    parts.append("\n".join(["Changes made after seeing results (lsc.repro.disclosure):", "",
                            *disclosure.render()]))
    return "\n\n".join(parts) + "\n"


BEGIN = "<!-- generated by: python -m lsc.repro.tables"
END = "<!-- end of the generated tables -->"


def generated_block(text: str) -> Tuple[List[str], str]:
    """``(sources, body)`` of the block a document carries between :data:`BEGIN` (which names
    the sources it was rendered from) and :data:`END`."""
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise ValueError(f"no generated block ({BEGIN!r} ... {END!r})")
    header, _, body = text[start:end].partition("-->\n")
    args = header[len(BEGIN):].split()
    sources = [a for a in args if not a.startswith("--")]
    if "--into" in args:
        sources = [a for a in sources if a != args[args.index("--into") + 1]]
    return sources, body.strip("\n") + "\n"


def splice(text: str, sources: Sequence[str], rendered: str, into: str) -> str:
    """``text`` with its generated block (or, when it has none, an error) replaced by
    ``rendered``, headed by the command that renders it."""
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise ValueError(f"{into} has no generated block: add the lines {BEGIN!r} ... -->' "
                         f"and {END!r} where the tables go")
    header = f"{BEGIN} {' '.join(sources)} --into {into} -->"
    return text[:start] + header + "\n\n" + rendered + "\n" + text[end:]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lsc.repro.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+",
                        help="workdirs of the main job (or their results.json files)")
    parser.add_argument("--out", default=None, help="write the markdown here, not to stdout")
    parser.add_argument("--into", default=None,
                        help="replace the generated block of this markdown file (e.g. README.md)")
    args = parser.parse_args(argv)
    text = render([load(p) for p in args.results])
    if args.into:
        with open(args.into, encoding="utf-8") as f:
            doc = splice(f.read(), args.results, text, args.into)
        with open(args.into, "w", encoding="utf-8") as f:
            f.write(doc)
    elif args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
