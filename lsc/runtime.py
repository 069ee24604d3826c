"""Process-level helpers shared by every job: atomic JSON files, SIGTERM (preemption) handling
and a readable console log."""

from __future__ import annotations

import json
import logging as std_logging
import os
import signal
import threading
from typing import Any

from absl import logging


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` as JSON to ``path`` through a temporary file, fsync and ``os.replace``,
    so a crash leaves either the old file or the new one, never a partial one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Preemption:
    """Context manager that records SIGTERM (TPU preemption) instead of dying on it.

    Inside the block, ``requested`` turns True when SIGTERM arrives; the training loops check it
    after each step, write a checkpoint and exit. Only the main thread can install the handler;
    elsewhere the block is a no-op. The previous handler is restored on exit.
    """

    def __init__(self):
        self.requested = False
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
