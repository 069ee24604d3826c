"""Where and from what a result was computed: the code's commit, the CPU, the date.

:func:`describe` is recorded in ``results.json`` (``run``) so that a table rendered from it
(:mod:`lsc.repro.tables`) carries its own label.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Dict, Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", _ROOT, *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def commit() -> Dict[str, object]:
    """``{"commit": <40 hex digits or "unknown">, "dirty": bool or None}`` of the checkout this
    package runs from (``dirty``: tracked files differ from the commit; None outside git)."""
    head = _git("rev-parse", "HEAD")
    if not head:
        return {"commit": "unknown", "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head, "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere) and its
    logical core count as seen by this process."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def describe() -> Dict[str, object]:
    """``{"commit", "dirty", "cpu", "date"}`` (``date``: UTC, ISO 8601 to the second)."""
    out = commit()
    out["cpu"] = cpu_model()
    out["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out
