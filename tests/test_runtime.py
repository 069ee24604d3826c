"""Process-level helpers: the console keeps orbax's INFO chatter out, not its warnings."""

import logging

from absl import logging as absl_logging

from lsc import runtime


def _record(path, level):
    return logging.LogRecord("absl", level, path, 1, "msg", None, None)


def test_library_info_lines_are_filtered_but_warnings_and_our_lines_are_kept():
    runtime.quiet_library_logs()
    handler = absl_logging.get_absl_handler()
    runtime.quiet_library_logs()  # idempotent
    filters = [f for f in handler.filters if isinstance(f, runtime._QuietLibraries)]
    assert len(filters) == 1
    orbax = "/site-packages/orbax/checkpoint/_src/checkpoint_manager.py"
    assert not handler.filter(_record(orbax, logging.INFO))
    assert handler.filter(_record(orbax, logging.WARNING))
    assert handler.filter(_record("/repo/lsc/train/loop.py", logging.INFO))
    handler.removeFilter(filters[0])
