"""The entry point's memory allocator: tcmalloc when the system has it.

XLA's CPU runtime allocates and frees the temporaries of every step; with glibc's malloc, large
blocks are fresh ``mmap`` s that the kernel must clear and fault in each time, so a small
training job spends a quarter of its CPU time in the kernel. tcmalloc keeps and reuses those
pages (``benchmarks/allocator.py``, BENCHMARKS.md: a reward-model run 15% faster in wall time,
system time from 23 s to 3 s). :func:`reexec_with_tcmalloc` restarts the process once with tcmalloc preloaded when
the shared library is installed (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``); without
it nothing changes. ``LSC_ALLOCATOR=system`` keeps glibc's allocator.

This module imports nothing heavy: it must run before JAX is loaded.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Dict, Mapping, Optional, Sequence

ENV = "LSC_ALLOCATOR"  # "tcmalloc" (default: when installed) or "system"
_MARK = "LSC_ALLOCATOR_REEXEC"
LIBRARIES = ("tcmalloc_minimal", "tcmalloc")


def find_tcmalloc() -> Optional[str]:
    """The soname of an installed tcmalloc (``libtcmalloc_minimal.so.4``), or None."""
    for name in LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def preloaded() -> bool:
    """True when a tcmalloc is already in ``LD_PRELOAD``."""
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def with_tcmalloc(env: Mapping[str, str], library: Optional[str] = None) -> Dict[str, str]:
    """A copy of ``env`` whose ``LD_PRELOAD`` starts with ``library`` (default: the installed
    tcmalloc, :func:`find_tcmalloc`), then ``env``'s own entries; an unchanged copy when no
    tcmalloc is installed."""
    library = library or find_tcmalloc()
    env = dict(env)
    if library:
        env["LD_PRELOAD"] = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return env


def reexec_with_tcmalloc(module: str, argv: Sequence[str]) -> None:
    """Replaces this process with ``python -m <module> <argv[1:]>`` with tcmalloc preloaded, when
    tcmalloc is installed, not yet preloaded, not turned off (``LSC_ALLOCATOR=system``), and this
    process was not already restarted; otherwise returns and nothing changes."""
    choice = os.environ.get(ENV, "tcmalloc")
    if choice not in ("tcmalloc", "system"):
        raise SystemExit(f"error: {ENV}={choice!r}; use 'tcmalloc' or 'system'")
    if choice == "system" or preloaded() or os.environ.get(_MARK):
        return
    library = find_tcmalloc()
    if library is None:
        return
    env = dict(with_tcmalloc(os.environ, library), **{_MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)
