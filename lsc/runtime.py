"""Process-level helpers shared by every job: atomic file writes, SIGTERM (preemption)
handling and a readable console log.

Results, caches, samples and resolved configs are written through :func:`atomic_open` (or its
variants :func:`write_json_atomic`, :func:`write_text_atomic`, :func:`write_npz_atomic`): a
temporary file in the same directory, flushed, fsync-ed and moved onto the destination with
``os.replace``, so a crash leaves either the old file or the new one, never a partial one.
(Checkpoints are orbax's own atomic directories; the synthetic world's files are complete once
its ``world.json`` marker, written last and atomically, exists.)
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import signal
import threading
from typing import IO, Any, Iterator

import numpy as np
from absl import logging


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file ``<path>.tmp.<pid>`` for writing (``mode``: ``"w"``, UTF-8 text, or
    ``"wb"``); when the block ends normally the file is flushed, fsync-ed and moved onto ``path``
    (``os.replace``). When the block raises, the temporary file is removed and ``path`` is left
    as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes with mode 'w' or 'wb', got {mode!r}")
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode, encoding=None if mode == "wb" else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` to ``path`` as indented JSON with sorted keys and a final newline
    (:func:`atomic_open`)."""
    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` (UTF-8, :func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(text)


def write_npz_atomic(path: str, **arrays: Any) -> None:
    """``np.savez`` of ``arrays`` to ``path`` (:func:`atomic_open`); ``path`` is used as given
    (no ``.npz`` is appended)."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


_sigterm_pending = False


def record_sigterm() -> None:
    """Makes SIGTERM outside a :class:`Preemption` block only be recorded: every later block
    then starts as requested. For processes that run jobs for another one (the stage workers
    of :mod:`lsc.repro.jobs`), which may receive the stage's SIGTERM before or between their
    jobs' training loops. Main thread only."""

    def handler(signum, frame):
        logging.warning("SIGTERM received: the job stops at its first checkpoint")
        note_sigterm()

    signal.signal(signal.SIGTERM, handler)


def note_sigterm() -> None:
    """Records a SIGTERM for :func:`sigterm_pending` and later :class:`Preemption` blocks."""
    global _sigterm_pending
    _sigterm_pending = True


def sigterm_pending() -> bool:
    """Whether a SIGTERM was recorded (:func:`record_sigterm`, :func:`note_sigterm`)."""
    return _sigterm_pending


class Preemption:
    """Context manager that records SIGTERM (TPU preemption) instead of dying on it.

    Inside the block, ``requested`` turns True when SIGTERM arrives (or at once, when one was
    recorded before: :func:`record_sigterm`); the training loops check it after each step, write
    a checkpoint and exit. Only the main thread can install the handler; elsewhere the block is a
    no-op. The previous handler is restored on exit.
    """

    def __init__(self):
        self.requested = _sigterm_pending
        self._previous = None

    def _handler(self, signum, frame):
        logging.warning("SIGTERM received: checkpointing after the current step, then exiting")
        self.requested = True

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


NOISY_LIBRARIES = ("/orbax/",)


class _QuietLibraries(std_logging.Filter):
    """Drops INFO (and lower) records logged from inside :data:`NOISY_LIBRARIES`."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        path = record.pathname.replace(os.sep, "/")
        return not any(lib in path for lib in NOISY_LIBRARIES)


def quiet_library_logs() -> None:
    """Keeps orbax's per-save INFO lines (dozens per checkpoint) out of the console; warnings
    and errors still show. ``--verbosity=1`` (absl) shows everything."""
    if logging.get_verbosity() >= 1:
        return
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())
