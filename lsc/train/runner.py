"""The outer training loop every job shares: resume, cadence, SIGTERM, NaN stop, progress.

:func:`run` drives any ``step_fn(state, batch) -> (state, host_metrics, timings)`` to
``cadence.num_steps``; the jobs (:func:`lsc.train.loop.train` for reward models, SFT and reference
predictors; :func:`lsc.align.rlhf.job.train_rlhf` for RL) supply the state, the data and the
step, and hooks for what only they do (periodic evaluation, policy snapshots). The runner owns:

* **Resume.** The newest checkpoint in ``<workdir>/checkpoints``
  (:class:`lsc.train.checkpoint.Checkpointer`: state, the data iterator's position, the metrics
  history) is restored into the structure of ``init(fresh=False)``; a fresh run starts from
  ``init(fresh=True)``.
* **Cadence.** Metrics are averaged and written to TensorBoard (``<workdir>/tensorboard``,
  prefix ``train``) every ``log_every`` steps and at the end; a checkpoint is written every
  ``save_every`` steps, at the end and on SIGTERM, in the background while the next steps run;
  the checkpointer is closed on every exit (errors included), which waits for the last write,
  so :func:`run` never returns or raises with a save in flight. Timings go to TensorBoard only
  (prefix ``time``), never to the history, so a killed-and-resumed run has the history of an
  uninterrupted one.
* **SIGTERM.** After the step in progress the runner saves and returns ``preempted=True``; with
  several processes a SIGTERM to any of them stops all after the same step.
* **Early stop.** With a :class:`StopRule`, the run ends after the first step at which the mean
  of a metric over the last steps exceeds a threshold, as a run at ``num_steps`` ends
  (metrics flushed, checkpoint, ``at_end``); :attr:`Outcome.stopped` says why. The window of
  the metric's last values is saved with every checkpoint, so a resumed run stops at the same
  step, and one resumed from its stop checkpoint stops at once.
* **Numerics.** A non-finite value of any of ``finite`` raises :class:`NonFiniteLossError`
  naming the step; nothing is saved after the last finite step.
* **Progress.** A tqdm bar (rate, ETA) beneath the job's bar when there is one
  (:mod:`lsc.progress`), on the chief process only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from absl import logging

from lsc import progress as progress_lib
from lsc.parallel import distributed
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import metrics as metrics_lib
from lsc import runtime

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: a controlled exit after the preemption checkpoint

StepFn = Callable[[Any, Mapping[str, Any]], Tuple[Any, Dict[str, float], Dict[str, float]]]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; ``step`` is the step that produced it."""

    def __init__(self, step: int, value: float, last_checkpoint: Optional[int], directory: str):
        self.step, self.value, self.last_checkpoint = step, value, last_checkpoint
        where = (f"the last good checkpoint is step {last_checkpoint} in {directory}"
                 if last_checkpoint is not None else "no checkpoint had been written yet")
        super().__init__(f"non-finite training loss {value} at step {step}; training stopped, "
                         f"{where}")


@dataclasses.dataclass(frozen=True)
class Cadence:
    """How long a run goes and how often it logs and saves.

    Attributes:
      num_steps: the step the run ends at.
      log_every: average and write the metrics every this many steps (and at the end).
      save_every: checkpoint every this many steps (and at the end, and on SIGTERM).
      keep_checkpoints: checkpoints kept on disk.
      progress: show the tqdm bar.
      steps_field: the config field of ``num_steps``, for error messages.
    """

    num_steps: int
    log_every: int
    save_every: int
    keep_checkpoints: int
    progress: bool = True
    steps_field: str = "num_steps"


@dataclasses.dataclass(frozen=True)
class StopRule:
    """Stop once the mean of the per-step ``metric`` over the last ``window`` steps exceeds
    ``above`` (``field``: the config field of ``above``, for the reason)."""

    metric: str
    above: float
    window: int
    field: str

    def reason(self, recent: Sequence[float]) -> Optional[str]:
        """Why a run whose last values of :attr:`metric` are ``recent`` stops; None while it
        goes on (fewer than :attr:`window` values, or a mean at most :attr:`above`)."""
        if len(recent) < self.window:
            return None
        mean = sum(float(x) for x in recent[-self.window:]) / self.window
        if not mean > self.above:
            return None
        return (f"the mean {self.metric} of the last {self.window} steps, {mean:.4g}, exceeds "
                f"{self.field} = {self.above:g}")


STOP_WINDOW_KEY = "stop_window"
"""The key of :class:`StopRule`'s window in a checkpoint's metrics record."""


class Run:
    """What hooks see of a run in progress: the TensorBoard ``writer``, the metrics history
    ``metrics`` (:class:`lsc.train.metrics.MetricsState`), the ``bar``, ``workdir`` and
    ``recent``: the last values of a :class:`StopRule`'s metric, at most its window, up to the
    current step (kept in checkpoints; empty without a rule)."""

    def __init__(self, workdir: str, writer: metrics_lib.MetricsWriter,
                 metrics: metrics_lib.MetricsState, bar: Any):
        self.workdir, self.writer, self.metrics, self.bar = workdir, writer, metrics, bar
        self.recent: List[float] = []


@dataclasses.dataclass
class Outcome:
    """What :func:`run` returns: the final ``state`` and ``step``, the ``start`` step (after a
    resume), whether SIGTERM stopped it, the metrics history, the loop's wall seconds and why a
    :class:`StopRule` ended it (None when it did not)."""

    state: Any
    step: int
    start: int
    preempted: bool
    metrics: metrics_lib.MetricsState
    seconds: float
    stopped: Optional[str] = None


Hook = Callable[[int, Any, Run], None]


def _close_checkpointer(ckpt: checkpoint_lib.Checkpointer, failed: bool) -> None:
    """Closes ``ckpt``, waiting for its last save. When the run is already failing, an error of
    that save is logged instead of raised, so that it does not replace the run's own error."""
    try:
        ckpt.close()
    except Exception:  # noqa: BLE001 - while failing, the run's own exception is the one to raise
        if not failed:
            raise
        logging.exception("checkpoint: the last save in %s failed", ckpt.directory)


def run(*, workdir: str, init: Callable[[bool], Any], data: Any, step_fn: StepFn,
        cadence: Cadence, finite: Sequence[str], name: str = "train",
        after_log: Optional[Callable[[int, Dict[str, float], Run], None]] = None,
        after_step: Optional[Hook] = None, at_end: Optional[Hook] = None,
        stop: Optional[StopRule] = None) -> Outcome:
    """Runs ``step_fn`` from the newest checkpoint (or ``init(True)``) to ``cadence.num_steps``.

    Args:
      workdir: the run's directory (``checkpoints/``, ``tensorboard/``).
      init: ``init(fresh) -> state``; with ``fresh=False`` only its structure, shapes and
        shardings are used (the restore target).
      data: an endless batch iterator with ``get_state()`` / ``set_state()``.
      step_fn: ``(state, batch) -> (state, {name: float}, {timing name: seconds})``.
      cadence: :class:`Cadence`.
      finite: metric names that must stay finite.
      name: the progress bar's label.
      after_log: called after each metrics flush with ``(step, means, run)``.
      after_step: called after every step with ``(step, state, run)`` (evaluation, snapshots).
      at_end: called once after the last step of a run that was not preempted (before the
        writer closes).
      stop: end the run early by this rule (module docstring); None: run to ``num_steps``.

    Returns:
      :class:`Outcome`.

    Raises:
      NonFiniteLossError: a ``finite`` metric became NaN or infinite.
      ValueError: the checkpoint directory is inconsistent or beyond ``num_steps``.
    """
    for attr in ("get_state", "set_state"):
        if not hasattr(data, attr):
            raise TypeError(f"the training data must have {attr}() "
                            "(a lsc.data.pipeline.BatchIterator)")
    os.makedirs(workdir, exist_ok=True)
    is_chief = jax.process_index() == 0
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=cadence.keep_checkpoints)
    latest = ckpt.latest_step()
    state = init(latest is None)
    mstate = metrics_lib.MetricsState()
    recent: list = []  # the stop rule's window: the metric's last values
    start = 0
    if latest is not None:
        state, data_state, metrics_json = ckpt.restore(latest, checkpoint_lib.abstract_like(state))
        data.set_state(data_state)
        mstate = metrics_lib.MetricsState.from_json(metrics_json)
        recent = [float(x) for x in metrics_json.get(STOP_WINDOW_KEY, [])]
        start = int(jax.device_get(state.step))
        if start != latest:
            ckpt.close()
            raise ValueError(f"checkpoint {latest} holds step {start}; the checkpoint directory "
                             f"{ckpt.directory} is inconsistent")
        logging.info("resuming from step %d", start)
    if start > cadence.num_steps:
        ckpt.close()
        raise ValueError(f"{workdir}: checkpoint step {start} is beyond {cadence.steps_field}="
                         f"{cadence.num_steps}")

    writer = metrics_lib.MetricsWriter(os.path.join(workdir, "tensorboard"),
                                       purge_step=start + 1 if start else None, enabled=is_chief)
    from tqdm.auto import tqdm

    bar = tqdm(total=cadence.num_steps, initial=start, unit="step", dynamic_ncols=True,
               file=sys.stderr, disable=not (cadence.progress and is_chief), desc=name,
               **progress_lib.inner_bar_kwargs())
    ctx = Run(workdir, writer, mstate, bar)
    last_saved = latest
    preempted = False
    step = start

    def save(at: int):
        nonlocal last_saved
        if at != last_saved:
            record = mstate.to_json()
            if stop is not None:
                record[STOP_WINDOW_KEY] = list(recent)
            ckpt.save(at, state, data.get_state(), record)
            last_saved = at

    t0 = time.perf_counter()
    failed = False
    try:
        with runtime.Preemption() as preemption:
            term = distributed.any_process(preemption.requested)
            stopped = stop.reason(recent) if stop is not None else None
            while step < cadence.num_steps and not term and not stopped:
                state, host, timings = step_fn(state, next(data))
                step += 1
                for key in finite:
                    if not math.isfinite(host[key]):
                        raise NonFiniteLossError(step, host[key], last_saved, ckpt.directory)
                mstate.add(host)
                if stop is not None:
                    recent = (recent + [float(host[stop.metric])])[-stop.window:]
                    stopped = stop.reason(recent)
                    if stopped:
                        logging.info("%s: stopped at step %d: %s", name, step, stopped)
                if timings:
                    writer.scalars(step, timings, "time")
                bar.update(1)
                if step % cadence.log_every == 0 or step == cadence.num_steps or stopped:
                    means = mstate.flush(step)
                    writer.scalars(step, means, "train")
                    bar.set_postfix({k: f"{means[k]:.4f}" for k in finite[:1]}, refresh=False)
                    if after_log is not None:
                        after_log(step, means, ctx)
                if after_step is not None:
                    ctx.recent = list(recent)
                    after_step(step, state, ctx)
                term = distributed.any_process(preemption.requested)
                if (step % cadence.save_every == 0 or step == cadence.num_steps or term
                        or stopped):
                    save(step)
            if term and step < cadence.num_steps and not stopped:
                preempted = True
                save(step)
        if not preempted and at_end is not None:
            at_end(step, state, ctx)
    except BaseException:
        failed = True
        raise
    finally:
        try:
            bar.close()
            writer.flush()
            writer.close()
        finally:
            _close_checkpointer(ckpt, failed)
    seconds = time.perf_counter() - t0
    steps_run = step - start
    logging.info("%s: %d steps in %.1fs (%.2f steps/s)", name, steps_run, seconds,
                 steps_run / max(seconds, 1e-9))
    if preempted:
        logging.warning("preempted at step %d of %d; checkpoint written, rerun to resume", step,
                        cadence.num_steps)
    return Outcome(state, step, start, preempted, mstate, seconds, stopped)


def finish(workdir: str, summary: Mapping[str, Any]) -> None:
    """Writes ``<workdir>/summary.json`` atomically (chief process only)."""
    if jax.process_index() == 0:
        runtime.write_json_atomic(os.path.join(workdir, "summary.json"), dict(summary))
