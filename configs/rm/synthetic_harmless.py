"""A small decoder Bradley-Terry reward model for "harmless" on the synthetic gold world.

Usage::

  python -m lsc.main --config=configs/rm/synthetic_harmless.py --workdir=runs/rm_harmless
  python -m lsc.main --config=configs/rm/synthetic_harmless.py:t5 --workdir=runs/rm_harmless_t5

The default backbone is a small decoder; ``:t5`` selects a small T5.1.1 encoder-decoder.

Trains in about a minute on two CPU cores; ``summary.json`` reports the held-out pairwise
accuracy next to the gold-label ceiling.
"""

import importlib.util
import os


def _base():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_base.py")
    spec = importlib.util.spec_from_file_location("_lsc_rm_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str = ""):
    return _base().synthetic("harmless", arg or "decoder")
