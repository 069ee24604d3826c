"""A small decoder Bradley-Terry reward model for "helpful" on the synthetic gold world.

Usage::

  python -m lsc.main --config=configs/rm/synthetic_helpful.py --workdir=runs/rm_helpful
  python -m lsc.main --config=configs/rm/synthetic_helpful.py:t5 --workdir=runs/rm_helpful_t5
  python -m lsc.main --config=configs/rm/synthetic_helpful.py:large_data --workdir=runs/rm_large

The default backbone is a small decoder; ``:t5`` selects a small T5.1.1 encoder-decoder.

Trains in about a minute on two CPU cores; ``summary.json`` reports the held-out pairwise
accuracy next to the gold-label ceiling. The default (4,000 pairs) is the limited-data proxy of
the reproduction: held-out accuracy 0.662 against a ceiling of 0.747 (seed 0).

``:large_data`` (``_base.large_data``) trains on 100,000 pairs for 4,000 steps of 64, with a
3-layer decoder (8 heads of 8, same width) that reads the reward as the mean over the response
tokens (``model.pooling = 'mean'``): 0.740 against the same ceiling of 0.747 (0.731 measured on
the drawn labels; 0.741 on a second machine), 22-31 minutes of wall time on two idle cores. See
``docs/reward_model_accuracy.md`` for the learning curves and what each change is worth.
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
    base = _base()
    if arg == "large_data":
        return base.large_data(base.synthetic("helpful"))
    if arg not in ("", "decoder", "t5"):
        raise ValueError(f"configs/rm/synthetic_helpful.py: unknown argument {arg!r}; use "
                         "'decoder' (the default), 't5' or 'large_data'")
    return base.synthetic("helpful", arg or "decoder")
