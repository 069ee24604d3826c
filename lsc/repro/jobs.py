"""Running a stage's jobs: one after another in this process, or in parallel worker processes.

A stage of the reproduction runs several independent jobs (the reward-model replicates, the
predictors, the RLHF runs). :func:`run_jobs` runs them with ``workers`` processes:

* ``workers = 1``: one after another in this process;
* ``workers > 1``: each job in a fresh *spawned* Python process (JAX is not fork-safe), at most
  ``workers`` at a time. On a small CPU machine one job does not keep every core busy (small
  matrices, per-step host work), so two jobs side by side use the machine better
  (``benchmarks/parallel_jobs.py`` measures it). Each worker process sets XLA's CPU
  threads with ``threads_per_worker`` (0: XLA's default) and shares the persistent compilation
  cache of the reproduction, so replicates compile once.

:func:`default_workers` is the choice for a config's ``workers = 0``: two on the CPU backend when
the process may run on at least two cores, one on an accelerator (jobs in two processes would
share its memory) and in multi-process runs.

Every job writes its ``config.json`` and links the reproduction's world into its workdir first
(:func:`prepare`); a job that returns a non-zero exit code (preempted, failed) stops the stage
with :class:`JobStopped` after the jobs already started have finished, and the next run resumes
every unfinished job from its checkpoints. A SIGTERM to the stage's process while workers run is
passed to them: running jobs write their preemption checkpoint and stop, jobs not yet started
never start, and the stage stops with the preempted exit code. Results are the same either way
(same seeds, same data), up to XLA's last-bit differences between thread counts. Each job is
reported to the job's progress (:func:`lsc.progress.current`): ``run i of n`` as it starts, or as
each worker finishes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import multiprocessing
import os
import signal
import threading
from typing import Any, Callable, List, Sequence

import ml_collections
from absl import flags as absl_flags
from absl import logging

from lsc import config as config_lib
from lsc import progress, runtime
from lsc.train.runner import PREEMPTED_EXIT_CODE


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


def default_workers() -> int:
    """Workers for ``workers = 0``: 2 on the CPU backend of a single-process run that may use at
    least two cores (``os.sched_getaffinity``), else 1 (BENCHMARKS.md, "A stage's jobs", has the
    RLHF stage's times with one and two workers)."""
    import jax

    if jax.default_backend() != "cpu" or jax.process_count() > 1:
        return 1
    return 2 if len(os.sched_getaffinity(0)) >= 2 else 1


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
    """The body of a worker process: XLA settings, then the job. After a SIGTERM (the stage's,
    :func:`run_jobs`) a job that has not started returns the preempted exit code at once."""
    if runtime.sigterm_pending():
        return PREEMPTED_EXIT_CODE
    if threads > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_cpu_multi_thread_eigen="
                                   f"{'true' if threads > 1 else 'false'} "
                                   f"intra_op_parallelism_threads={threads}").strip()
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if not absl_flags.FLAGS.is_parsed():  # no absl app runs here: nothing to parse, and no
        absl_flags.FLAGS.mark_as_parsed()  # "Logging before flag parsing" line from each worker
    logging.use_absl_handler()  # the parent's log format
    logging.set_verbosity(logging.INFO)
    runtime.quiet_library_logs()
    run = getattr(importlib.import_module(module), function)
    code = int(run(ml_collections.ConfigDict(config), workdir))
    if code == PREEMPTED_EXIT_CODE:
        runtime.note_sigterm()
    return code


def _forward_sigterm(futures, received: threading.Event) -> Callable[[int, Any], None]:
    """The stage's SIGTERM handler while workers run: jobs not yet started are cancelled and
    every worker process gets the signal, so running jobs checkpoint and stop (their
    :class:`lsc.runtime.Preemption`) and queued ones never start; ``received`` is set."""

    def handler(signum, frame):
        logging.warning("SIGTERM received: passed to the stage's worker processes; their jobs "
                        "checkpoint and stop")
        received.set()
        for future in futures:
            future.cancel()
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    return handler


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
    main_thread = threading.current_thread() is threading.main_thread()
    received = threading.Event()
    submitted: list = []
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if main_thread:
            signal.signal(signal.SIGTERM, _forward_sigterm(submitted, received))
        with concurrent.futures.ProcessPoolExecutor(
                max_workers=min(workers, len(jobs)), mp_context=context,
                initializer=runtime.record_sigterm) as pool:
            futures = {pool.submit(_in_worker, job.run.__module__, job.run.__name__,
                                   job.config.to_dict(), job.workdir, cache_dir,
                                   int(threads_per_worker)): job for job in jobs}
            submitted.extend(futures)
            done = 0
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                if future.cancelled():
                    continue
                code = future.result()
                done += 1
                logging.info("%s: exit code %d", job.name, code)
                progress.current().run(done, len(jobs), job.label, finished=True)
                if code != 0:
                    failures.append((job, code))
    finally:
        if main_thread:  # None: a handler not installed from Python; the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if failures:
        job, code = failures[0]
        raise JobStopped(job.name, code)
    if received.is_set():
        raise JobStopped("the stage (SIGTERM)", PREEMPTED_EXIT_CODE)
