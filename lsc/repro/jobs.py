"""Running a stage's jobs: one after another in this process, or in parallel worker processes.

A stage of the reproduction runs several independent jobs (the reward-model replicates, the
reference predictors, the RLHF runs). :func:`run_jobs` runs them with ``workers`` processes:

* ``workers = 1``: one after another in this process;
* ``workers > 1``: each job in a fresh *spawned* Python process (JAX is not fork-safe), at most
  ``workers`` at a time. On a small CPU machine one training job keeps about 1.4 of 2 cores busy
  (small matrices, per-step host work), so two jobs side by side use the machine better
  (``benchmarks/parallel_jobs.py`` measures it). Each worker process sets XLA's CPU
  threads with ``threads_per_worker`` (0: XLA's default) and shares the persistent compilation
  cache of the reproduction, so replicates compile once.

Every job writes its ``config.json`` and links the reproduction's world into its workdir first
(:func:`prepare`); a job that returns a non-zero exit code (preempted, failed) stops the stage
with :class:`JobStopped` after the jobs already started have finished, and the next run resumes
every unfinished job from its checkpoints. Results are the same either way (same seeds, same
data), up to XLA's last-bit differences between thread counts. Each job is reported to the job's
progress (:func:`lsc.progress.current`): ``run i of n`` as it starts, or as each worker finishes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import multiprocessing
import os
from typing import Callable, List, Sequence

import ml_collections
from absl import logging

from lsc import config as config_lib
from lsc import progress, runtime


class JobStopped(RuntimeError):
    """A job inside a stage stopped early (preempted or failed); ``exit_code`` is its code."""

    def __init__(self, job: str, exit_code: int):
        super().__init__(f"{job} stopped with exit code {exit_code}")
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a stage: ``run`` (a module-level ``run(config, workdir) -> exit code``), its
    config and workdir."""

    run: Callable[[ml_collections.ConfigDict, str], int]
    config: ml_collections.ConfigDict
    workdir: str

    @property
    def name(self) -> str:
        return f"{self.config.job} in {self.workdir}"

    @property
    def label(self) -> str:
        """The short name shown in the job's progress: the workdir's last component."""
        return os.path.basename(os.path.normpath(self.workdir))


def prepare(job: Job, world_dir: str) -> None:
    """Validates the job's config, writes it to ``config.json`` and links the world into the
    job's workdir."""
    os.makedirs(job.workdir, exist_ok=True)
    link = os.path.join(job.workdir, "world")
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(world_dir, job.workdir), link)
    config_lib.validate(job.config)
    runtime.write_json_atomic(os.path.join(job.workdir, "config.json"), job.config.to_dict())


def _in_worker(module: str, function: str, config: dict, workdir: str, cache_dir: str,
               threads: int) -> int:
    """The body of a worker process: XLA settings, then the job."""
    if threads > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_cpu_multi_thread_eigen="
                                   f"{'true' if threads > 1 else 'false'} "
                                   f"intra_op_parallelism_threads={threads}").strip()
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    logging.set_verbosity(logging.INFO)
    run = getattr(importlib.import_module(module), function)
    return int(run(ml_collections.ConfigDict(config), workdir))


def run_jobs(jobs: Sequence[Job], world_dir: str, workers: int = 1,
             threads_per_worker: int = 0) -> None:
    """Runs ``jobs`` (module docstring); raises :class:`JobStopped` with the first non-zero exit
    code."""
    jobs = list(jobs)
    for job in jobs:
        prepare(job, world_dir)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs, start=1):
            progress.current().run(i, len(jobs), job.label)
            code = job.run(job.config, job.workdir)
            if code != 0:
                raise JobStopped(job.name, code)
        return
    import jax

    cache_dir = jax.config.jax_compilation_cache_dir or ""
    context = multiprocessing.get_context("spawn")
    failures: List[tuple] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                                mp_context=context) as pool:
        futures = {pool.submit(_in_worker, job.run.__module__, job.run.__name__,
                               job.config.to_dict(), job.workdir, cache_dir,
                               int(threads_per_worker)): job for job in jobs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            job = futures[future]
            code = future.result()
            logging.info("%s: exit code %d", job.name, code)
            progress.current().run(done, len(jobs), job.label, finished=True)
            if code != 0:
                failures.append((job, code))
    if failures:
        job, code = failures[0]
        raise JobStopped(job.name, code)
