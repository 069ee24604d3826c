"""Which jitted functions JAX compiles while a block runs (``jax_log_compiles``), to assert that
no step function recompiles after its first call."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator, List, Tuple

import jax

_COMPILING = re.compile(r"Compiling (?:jit|pjit)\((?P<name>[^)]*)\) with global shapes and types "
                        r"(?P<signature>.*?)\. Argument mapping")


class CompileLog(logging.Handler):
    """Records ``(function name, argument shapes and types)`` of every compilation."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.events: List[Tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _COMPILING.search(record.getMessage())
        if m:
            self.events.append((m.group("name"), m.group("signature")))

    def count(self, name: str) -> int:
        """Compilations of the functions named ``name``."""
        return sum(1 for n, _ in self.events if n == name)


@contextlib.contextmanager
def compile_log() -> Iterator[CompileLog]:
    log = CompileLog()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    level, previous = logger.level, jax.config.jax_log_compiles
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        yield log
    finally:
        jax.config.update("jax_log_compiles", previous)
        logger.removeHandler(log)
        logger.setLevel(level)
