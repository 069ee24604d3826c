"""The one entry point: ``python -m lsc.main --config=configs/<...>.py[:arg] --workdir=DIR``.

The config's ``job`` field selects what runs (see :data:`JOBS`). Any field can be overridden on
the command line (``--config.rewards.method=sigma_and``). The config is validated before anything
runs: a bad value stops the run with one error naming the dotted field and what is allowed. The
resolved config is written to ``<workdir>/config.json``; every output goes under the workdir, and
rerunning with the same workdir resumes.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Dict, Iterator, Mapping

from lsc import allocator

if __name__ == "__main__":  # before JAX loads: restart once under tcmalloc or mimalloc
    allocator.reexec_with_allocator("lsc.main", sys.argv)

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from lsc import config as config_lib
from lsc import runtime
from lsc.parallel import distributed


class _Functions(Mapping):
    """``name -> function`` from ``name -> "module:function"``, each module imported on first
    access: a run imports its own job's modules only (an ``rlhf`` or ``train_rm`` run does not
    import the reproduction's figures and exact arm, nor matplotlib and scipy with them)."""

    def __init__(self, paths: Dict[str, str]):
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> Callable:
        module, function = self._paths[name].split(":")
        return getattr(importlib.import_module(module), function)

    def __contains__(self, name) -> bool:  # without importing anything
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


# job name -> run(config, workdir) -> process exit code
JOBS: Mapping[str, Callable[[ml_collections.ConfigDict, str], int]] = _Functions({
    "repro": "lsc.repro:run",
    "grpo_study": "lsc.repro.grpo_study:run",
    "rlhf": "lsc.align.rlhf:run",
    "best_of_k": "lsc.align.best_of_k:run",
    "train_rm": "lsc.train.reward_model:run",
    "train_sft": "lsc.train.sft:run",
    "train_predictor": "lsc.train.predictor:run",
})

# job name -> extra validation of the job's config (raises lsc.config.ConfigError)
VALIDATORS: Mapping[str, Callable[[ml_collections.ConfigDict], None]] = _Functions({
    "repro": "lsc.repro:validate",
    "grpo_study": "lsc.repro.grpo_study:validate",
})

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/repro/synthetic_hh.py[:arg].",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every output of the run.")
flags.mark_flags_as_required(["config", "workdir"])


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``config`` (after command-line overrides) to ``<workdir>/config.json``."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    runtime.write_text_atomic(path, config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return path


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    runtime.quiet_library_logs()
    errors = []
    try:
        config_lib.validate(config, jobs=tuple(JOBS))
    except config_lib.ConfigError as e:
        errors += e.errors
    if config.get("job") in VALIDATORS:
        try:
            VALIDATORS[config.job](config)
        except config_lib.ConfigError as e:
            errors += [err for err in e.errors if err not in errors]
    if errors:
        print(f"error: {config_lib.ConfigError(errors)}", file=sys.stderr)
        return 2
    try:
        distributed.initialize(config.get("parallel"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "://" in _WORKDIR.value:
        print(f"error: --workdir={_WORKDIR.value}: remote (URL) workdirs are not supported; the "
              "jobs write with local file operations. Use a directory every process can see, e.g. "
              "a GCS FUSE mount of the bucket (launch/README.md).", file=sys.stderr)
        return 2
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    if distributed.is_main_process():
        path = write_resolved_config(config, workdir)
        logging.info("job %r, workdir %s, resolved config written to %s", config.job, workdir, path)
    return JOBS[config.job](config, workdir)


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
