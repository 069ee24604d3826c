"""The progress of a whole job (a list of stages): one bar on a terminal, log lines otherwise.

:func:`lsc.stages.run_stages` opens a :class:`JobProgress` for the whole job; code inside a stage
reaches it through :func:`current` (a no-op object when no job is active), e.g.
:func:`lsc.repro.jobs.run_jobs` reports ``current().run(i, n, name)`` for each of a stage's jobs.

* **Weights.** Each stage has a weight, its expected seconds: the stage's own ``weight`` (the
  reproduction's stages carry their measured times, :data:`lsc.repro.pipeline.STAGES`), else the
  mean of the known weights (all unknown: equal weights). Inside a stage that reports runs, ``done / n`` of its
  weight counts as done.
* **Fraction and ETA.** The fraction done is the weight of the finished stages (stages skipped
  because done in an earlier run included) over the total. The ETA extrapolates the work done in
  this process: ``remaining * elapsed / done_here``, which is ``elapsed / fraction - elapsed``
  when nothing was skipped; unknown (``?``) until some work is done.
* **Display.** With ``sys.stderr`` a terminal (``LSC_PROGRESS=1`` forces it, ``=0`` turns it
  off) one tqdm bar at position 0 shows the stage, ``run i of n``, elapsed time and ETA, redrawn
  every second; the runs' own bars use :func:`inner_bar_kwargs` to draw beneath it (in spawned
  worker processes too, through an environment variable). Otherwise one ``logging.info`` line per
  stage start and finish and per run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, TextIO

from absl import logging

ENV = "LSC_PROGRESS"  # '0': no bar, '1': a bar even when stderr is not a terminal
_INNER_ENV = "LSC_PROGRESS_INNER"  # set while a job bar is drawn: runs draw beneath it
REFRESH_SECONDS = 1.0



def format_seconds(seconds: Optional[float]) -> str:
    """``'42s'``, ``'5m02s'``, ``'1h03m20s'``; ``'?'`` for None."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def bar_wanted(stream: TextIO) -> bool:
    """Whether to draw the job bar on ``stream``: ``LSC_PROGRESS`` if set, else ``isatty()``."""
    env = os.environ.get(ENV, "")
    if env in ("0", "1"):
        return env == "1"
    return bool(getattr(stream, "isatty", lambda: False)())


def stage_weights(names: Sequence[str],
                  weights: Optional[Sequence[Optional[float]]] = None) -> list:
    """Each stage's weight (module docstring): given, else the mean of the known ones (1.0 when
    none is known)."""
    given = list(weights) if weights is not None else [None] * len(names)
    known = list(given)
    positive = [float(w) for w in known if w is not None and w > 0]
    fill = sum(positive) / len(positive) if positive else 1.0
    return [float(w) if w is not None and w > 0 else fill for w in known]


class _NoJob:
    """What :func:`current` returns with no active job: every report is ignored."""

    def run(self, i: int, n: int, name: str = "", finished: bool = False) -> None:
        del i, n, name, finished


_NO_JOB = _NoJob()
_active: list = []  # the open JobProgress objects, innermost last


def current():
    """The innermost active :class:`JobProgress`, or a no-op object with the same ``run``."""
    return _active[-1] if _active else _NO_JOB


def inner_bar_kwargs() -> Dict[str, Any]:
    """tqdm keyword arguments for a run's own bar: beneath the job bar while one is drawn
    (``position=1, leave=False``), else ``{}``."""
    if any(job.bar is not None for job in _active) or os.environ.get(_INNER_ENV) == "1":
        return {"position": 1, "leave": False}
    return {}


class JobProgress:
    """The progress of one job; a context manager that makes it :func:`current`.

    Args:
      names: the stage names, in order.
      weights: a weight (expected seconds) or None per stage (:func:`stage_weights`).
      clock: seconds, monotonic (``time.monotonic``).
      stream: where the bar goes (``sys.stderr``).
    """

    def __init__(self, names: Sequence[str], weights: Optional[Sequence[Optional[float]]] = None,
                 clock: Callable[[], float] = time.monotonic, stream: Optional[TextIO] = None):
        self.names = list(names)
        self.weights = dict(zip(self.names, stage_weights(self.names, weights)))
        self.total = sum(self.weights.values()) or 1.0
        self._clock, self._start = clock, clock()
        self._stream = stream if stream is not None else sys.stderr
        self._skipped = 0.0  # weight done in earlier runs
        self._done = 0.0  # weight of the stages finished here
        self._stage: Optional[str] = None
        self._runs = (0, 0, "", False)  # (i, n, name, finished)
        self.bar = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._saved_env: Optional[str] = None

    # ------------------------------------------------------------------ numbers

    def elapsed(self) -> float:
        return self._clock() - self._start

    def _in_stage(self) -> float:
        i, n, _, finished = self._runs
        if self._stage is None or n <= 0:
            return 0.0
        return self.weights[self._stage] * (i if finished else max(i - 1, 0)) / n

    def fraction(self) -> float:
        """The fraction of the job's weight done, skipped stages included."""
        return min((self._skipped + self._done + self._in_stage()) / self.total, 1.0)

    def eta(self) -> Optional[float]:
        """Seconds left (module docstring); None before any work is done here."""
        here = self._done + self._in_stage()
        if here <= 0:
            return None
        remaining = max(self.total - self._skipped - here, 0.0)
        return remaining * self.elapsed() / here

    def status(self) -> str:
        """``'rlhf: run 3 of 4 (helpful_lsc)'``: the stage and the run in progress."""
        if self._stage is None:
            return "done" if self.fraction() >= 1.0 else "starting"
        i, n, name, finished = self._runs
        if n <= 0:
            return self._stage
        run = f"{i} of {n} runs done" if finished else f"run {i} of {n}"
        return f"{self._stage}: {run}" + (f" ({name})" if name else "")

    def _times(self) -> str:
        return f"elapsed {format_seconds(self.elapsed())}, ETA {format_seconds(self.eta())}"

    # ------------------------------------------------------------------ reports

    def skip(self, name: str) -> None:
        """Stage ``name`` was done in an earlier run: it counts as done."""
        self._skipped += self.weights[name]
        self._say(f"{self._prefix(name)}: done in an earlier run, skipped")

    def start(self, name: str, description: str = "") -> None:
        """Stage ``name`` starts (``description``: what it does)."""
        self._stage, self._runs = name, (0, 0, "", False)
        self._say(f"{self._prefix(name)}: {description or name}")

    def run(self, i: int, n: int, name: str = "", finished: bool = False) -> None:
        """Run ``i`` of the current stage's ``n`` starts (``finished``: ``i`` runs are done)."""
        if self._stage is None or n <= 1:
            return
        self._runs = (i, n, name, finished)
        if self.bar is None:
            self._log(self.status())
        self._draw()

    def finish(self, name: str, seconds: float) -> None:
        """Stage ``name`` returned after ``seconds``."""
        self._done += self.weights[name]
        self._stage, self._runs = None, (0, 0, "", False)
        self._say(f"{self._prefix(name)}: done in {format_seconds(seconds)}")

    # ------------------------------------------------------------------ display

    def _prefix(self, name: str) -> str:
        return f"[{self.names.index(name) + 1}/{len(self.names)}] {name}"

    def _percent(self) -> int:
        return int(100 * self.fraction() + 1e-9)

    def _log(self, message: str) -> None:
        logging.info("[job %d%%] %s; %s", self._percent(), message, self._times())

    def _say(self, message: str) -> None:
        """A stage line: above the bar when there is one, else a log line."""
        if self.bar is None:
            self._log(message)
            return
        self.bar.write(f"[job {self._percent()}%] {message}; {self._times()}",
                       file=self._stream)
        self._draw()

    def _draw(self) -> None:
        if self.bar is not None:
            self.bar.n = self._percent()
            self.bar.set_description_str(f"{self.status()} | {self._times()}", refresh=False)
            self.bar.refresh()

    def _redraw_every_second(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self._draw()

    def __enter__(self) -> "JobProgress":
        if bar_wanted(self._stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, position=0, leave=True, dynamic_ncols=True,
                            file=self._stream, bar_format="job {percentage:3.0f}%|{bar}| {desc}")
            self._saved_env = os.environ.get(_INNER_ENV)
            os.environ[_INNER_ENV] = "1"
            self._thread = threading.Thread(target=self._redraw_every_second, daemon=True)
            self._thread.start()
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)
        if self.bar is None:
            return
        self._stop.set()
        self._thread.join()
        self._draw()
        self.bar.close()
        self.bar = None
        if self._saved_env is None:
            os.environ.pop(_INNER_ENV, None)
        else:
            os.environ[_INNER_ENV] = self._saved_env
