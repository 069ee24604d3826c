"""The entry point's memory allocator: tcmalloc when the system has it, else the pip mimalloc.

XLA's CPU runtime allocates and frees the temporaries of every step; with glibc's malloc, large
blocks are fresh ``mmap`` s that the kernel must clear and fault in each time, so a small
training job spends a large share of its CPU time in the kernel. tcmalloc and mimalloc keep and
reuse those pages (``benchmarks/allocator.py`` measures the three side by side).
:func:`reexec_with_allocator` restarts the process once with the chosen allocator preloaded.

``LSC_ALLOCATOR`` chooses:

* unset or empty (auto): tcmalloc when installed (Debian/Ubuntu package
  ``libtcmalloc-minimal4``, optional), else mimalloc from the ``cmeel-mimalloc`` wheel (a core
  dependency); an allocator already in ``LD_PRELOAD`` is kept;
* ``tcmalloc`` or ``mimalloc``: that one, an error when it is not installed;
* ``system``: glibc's malloc.

Under mimalloc the restarted process gets :data:`MIMALLOC_OPTIONS` (unless the environment sets
them): no purging of freed memory back to the kernel, so XLA's step temporaries keep their pages
as under tcmalloc instead of being cleared and faulted in again after mimalloc's default 1-second
delay. Transparent huge pages stay allowed (mimalloc's default): they cost a small training job
about a second of system time in larger first faults, and save the large-batch sampling and
scoring of the main job's base-sample stage half of its (``benchmarks/allocator.py`` and
BENCHMARKS.md, "Allocators").

The allocator changes where memory comes from, never what is computed. This module imports
nothing heavy: it must run before JAX is loaded.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import sys
from typing import Callable, Dict, Mapping, Optional, Sequence

ENV = "LSC_ALLOCATOR"
CHOICES = ("tcmalloc", "mimalloc", "system")  # or unset/empty: auto
AUTO = ("tcmalloc", "mimalloc")  # auto's order of preference
MARK = "LSC_ALLOCATOR_REEXEC"  # set in the restarted process: the allocator it runs under
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")
MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
# mimalloc's settings under the entry point (environment variables; a value already set wins).
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
_MIMALLOC_FILE = re.compile(r"libmimalloc\.so(\.\d+)?$")  # libmimalloc.so.3, not .so.3.4


def find_tcmalloc() -> Optional[str]:
    """The soname of a system tcmalloc (``libtcmalloc_minimal.so.4``), or None."""
    for name in TCMALLOC_NAMES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def find_mimalloc() -> Optional[str]:
    """The absolute path of mimalloc from the ``cmeel-mimalloc`` wheel
    (``.../site-packages/cmeel.prefix/lib/libmimalloc.so.3``), or None when it is not installed."""
    from importlib import metadata  # standard library only: no import of the wheel itself

    try:
        files = metadata.distribution(MIMALLOC_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    named = sorted((f for f in files if _MIMALLOC_FILE.search(str(f))), key=lambda f: -len(str(f)))
    for file in named:  # the soname first (libmimalloc.so.3), then libmimalloc.so
        path = os.path.abspath(str(file.locate()))
        if os.path.isfile(path):
            return path
    return None


FINDERS: Dict[str, Callable[[], Optional[str]]] = {
    "tcmalloc": find_tcmalloc, "mimalloc": find_mimalloc}


def requested(env: Mapping[str, str]) -> Optional[str]:
    """``env``'s ``LSC_ALLOCATOR``: one of :data:`CHOICES`, or None for auto (unset or empty).
    Raises SystemExit naming the allowed values for anything else."""
    value = env.get(ENV, "")
    if value and value not in CHOICES:
        raise SystemExit(f"error: {ENV}={value!r}; use one of {', '.join(CHOICES)}, "
                         "or leave it unset for tcmalloc when installed, else mimalloc")
    return value or None


def _entries(env: Mapping[str, str]):
    return [p for p in re.split(r"[:\s]+", env.get("LD_PRELOAD", "")) if p]


def _allocator_of(entry: str) -> Optional[str]:
    return next((name for name in AUTO if name in os.path.basename(entry)), None)


def preloaded(env: Mapping[str, str] = os.environ) -> Optional[str]:
    """The name of the first allocator of :data:`AUTO` in ``env``'s ``LD_PRELOAD``, or None."""
    return next(filter(None, map(_allocator_of, _entries(env))), None)


def chosen(env: Mapping[str, str] = os.environ) -> str:
    """The allocator that ``env`` runs the entry point under: its ``LSC_ALLOCATOR``, or in auto
    the allocator already in ``LD_PRELOAD``, else the first of :data:`AUTO` installed, else
    ``system``."""
    name = requested(env) or preloaded(env)
    return name or next((n for n in AUTO if FINDERS[n]()), "system")


def with_allocator(env: Mapping[str, str], name: Optional[str] = None) -> Dict[str, str]:
    """A copy of ``env`` that runs under allocator ``name`` (one of :data:`CHOICES`; default:
    :func:`chosen`, from ``env``'s ``LSC_ALLOCATOR``).

    ``LD_PRELOAD`` starts with that allocator's library, then ``env``'s own entries other than
    an allocator of :data:`AUTO`; for ``system`` it holds only those. When it already holds the
    allocator chosen, it is kept as it is; otherwise, under mimalloc, :data:`MIMALLOC_OPTIONS`
    are added where ``env`` does not set them. A ``name`` given here is also written to
    ``LSC_ALLOCATOR``, so an entry point started with the copy keeps that allocator. Raises
    SystemExit for an unknown name or a named allocator that is not installed.
    """
    env = dict(env)
    if name is not None:
        requested({ENV: name})
        env[ENV] = name
    name = chosen(env)
    if preloaded(env) == name:
        return env
    if name == "mimalloc":
        env = {**MIMALLOC_OPTIONS, **env}
    library = None if name == "system" else FINDERS[name]()
    if name != "system" and library is None:
        raise SystemExit(f"error: {ENV}={name}, but {name} is not installed (tcmalloc: apt-get "
                         f"install libtcmalloc-minimal4; mimalloc: pip install "
                         f"{MIMALLOC_DISTRIBUTION})")
    entries = [library] * bool(library) + [p for p in _entries(env) if not _allocator_of(p)]
    env.pop("LD_PRELOAD", None)
    if entries:
        env["LD_PRELOAD"] = " ".join(entries)
    return env


def reexec_with_allocator(module: str, argv: Sequence[str]) -> None:
    """Replaces this process with ``python -m <module> <argv[1:]>`` under the allocator that
    ``LSC_ALLOCATOR`` chooses (:func:`with_allocator`), with :data:`MARK` set to its name; returns
    and changes nothing when the process already runs under it or was already restarted."""
    if os.environ.get(MARK):
        return
    env = with_allocator(os.environ)
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return
    env[MARK] = chosen(env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)
