"""Training metrics: TensorBoard event files (tensorboardX, no TensorFlow), logging averages and a
resumable history.

:class:`MetricsState` is everything about metrics that must survive a restart for a resumed run to
write the same ``summary.json`` as an uninterrupted one: the history of logged values and the
running sums of the current logging interval. It round-trips through JSON exactly (Python floats
are written with ``repr``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Dict, List, Mapping, Optional

import numpy as np


@dataclasses.dataclass
class MetricsState:
    """History of logged metrics and the sums of the logging interval in progress.

    ``history[kind]`` is a list of ``{"step": int, name: float, ...}`` records (``kind`` is
    ``"train"`` or ``"eval"``); ``sums``/``count`` accumulate per-step train metrics until the next
    logging step.
    """

    history: Dict[str, List[dict]] = dataclasses.field(
        default_factory=lambda: {"train": [], "eval": []})
    sums: Dict[str, float] = dataclasses.field(default_factory=dict)
    count: int = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        """Adds one step's scalar metrics to the current interval."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def flush(self, step: int) -> Dict[str, float]:
        """Means over the interval, appended to ``history['train']``; the interval restarts."""
        if self.count == 0:
            return {}
        means = {k: v / self.count for k, v in sorted(self.sums.items())}
        self.history["train"].append({"step": int(step), **means})
        self.sums, self.count = {}, 0
        return means

    def add_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.history["eval"].append({"step": int(step), **{k: float(v) for k, v in
                                                            sorted(metrics.items())}})

    def to_json(self) -> dict:
        return {"history": self.history, "sums": self.sums, "count": self.count}

    @classmethod
    def from_json(cls, payload: Mapping) -> "MetricsState":
        for key in ("history", "sums", "count"):
            if key not in payload:
                raise ValueError(f"metrics state lacks {key!r}: {sorted(payload)}")
        history = {k: list(v) for k, v in payload["history"].items()}
        return cls(history=history, sums=dict(payload["sums"]), count=int(payload["count"]))


def _summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without PyTorch. tensorboardX imports torch
    whenever it is installed (the ``hf`` extra), only to also accept torch tensors, which the jobs
    never log, and that import would lengthen every job's start-up. While tensorboardX loads,
    ``import torch`` fails (``sys.modules['torch'] = None``), which it handles; a torch already
    imported is left alone."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import tensorboardX  # noqa: F401
        finally:
            del sys.modules["torch"]
    from tensorboardX import SummaryWriter

    return SummaryWriter


class MetricsWriter:
    """Scalars to TensorBoard event files under ``logdir`` (only where ``enabled``).

    ``purge_step``: on a resumed run, events at steps ``>= purge_step`` written by the interrupted
    run are hidden by TensorBoard, so the curves have no duplicated stretch.
    """

    def __init__(self, logdir: str, *, purge_step: Optional[int] = None, enabled: bool = True):
        self._writer = None
        if enabled:
            os.makedirs(logdir, exist_ok=True)
            self._writer = _summary_writer_class()(logdir, purge_step=purge_step, flush_secs=30)

    def scalars(self, step: int, metrics: Mapping[str, float], prefix: str) -> None:
        if self._writer is None:
            return
        for name, value in metrics.items():
            v = float(value)
            if math.isfinite(v):
                self._writer.add_scalar(f"{prefix}/{name}", v, global_step=int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def to_floats(metrics: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Host scalars ``{name: float}`` from a dict of 0-d arrays."""
    return {k: float(np.asarray(v)) for k, v in metrics.items()}
