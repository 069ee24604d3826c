"""A job as an ordered list of stages, cached in the workdir so a rerun skips finished stages.

The status of every stage is kept in ``<workdir>/stages.json`` (written atomically) once the stage
has returned (with its wall seconds and the CPU time and minor page faults of this process and
its finished child processes, :func:`cpu_usage`), so a run killed inside a stage reruns that stage (whose jobs resume from their own
checkpoints) and skips the ones before it. The job's progress (one bar on a terminal, log lines
otherwise) is :mod:`lsc.progress`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import ml_collections

from lsc import progress, runtime

# run(config, stage_dir, results_of_earlier_stages) -> JSON-serialisable result dict
StageFn = Callable[[ml_collections.ConfigDict, str, Dict[str, Any]], Dict[str, Any]]

STATUS_FILE = "stages.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage; ``weight`` is its expected seconds for the job's progress (None: the default
    of :mod:`lsc.progress`)."""

    name: str
    description: str
    run: StageFn
    weight: Optional[float] = None


def cpu_usage() -> Dict[str, float]:
    """``{"user", "system"}`` CPU seconds and ``minor_faults`` so far of this process plus its
    waited-for children (the stages' spawned job workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": own.ru_utime + kids.ru_utime, "system": own.ru_stime + kids.ru_stime,
            "minor_faults": float(own.ru_minflt + kids.ru_minflt)}


def load_status(workdir: str) -> Dict[str, Any]:
    path = os.path.join(workdir, STATUS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_stages(
    stages: Sequence[Stage], config: ml_collections.ConfigDict, workdir: str
) -> Dict[str, Any]:
    """Runs ``stages`` in order, reporting to a :class:`lsc.progress.JobProgress`; returns
    ``{"completed": [...], "results": {...}}``: the names of the stages done (now or in an
    earlier run) and each stage's result."""
    status = load_status(workdir)
    results: Dict[str, Any] = {}
    completed: List[str] = []
    job = progress.JobProgress([stage.name for stage in stages],
                               [stage.weight for stage in stages])
    with job:
        for stage in stages:
            entry = status.get(stage.name, {})
            if entry.get("status") == "done":
                job.skip(stage.name)
                results[stage.name] = entry.get("result", {})
                completed.append(stage.name)
                continue
            job.start(stage.name, stage.description)
            stage_dir = os.path.join(workdir, stage.name)
            os.makedirs(stage_dir, exist_ok=True)
            start, cpu = time.perf_counter(), cpu_usage()
            result = stage.run(config, stage_dir, dict(results))
            seconds = time.perf_counter() - start
            used = {k: round(v - cpu[k], 3) for k, v in cpu_usage().items()}
            status[stage.name] = {"status": "done", "seconds": round(seconds, 3),
                                  "cpu_user": used["user"], "cpu_system": used["system"],
                                  "minor_faults": int(used["minor_faults"]), "result": result}
            runtime.write_json_atomic(os.path.join(workdir, STATUS_FILE), status)
            results[stage.name] = result
            completed.append(stage.name)
            job.finish(stage.name, seconds)
    return {"completed": completed, "results": results}
