"""A small decoder Bradley-Terry reward model for "harmless" on the synthetic gold world: the
config of ``configs/rm/synthetic_helpful.py`` with ``rm.property = 'harmless'``.

Usage::

  python -m lsc.main --config=configs/rm/synthetic_harmless.py --workdir=runs/rm_harmless
  python -m lsc.main --config=configs/rm/synthetic_harmless.py:t5 --workdir=runs/rm_harmless_t5

The default backbone is a small decoder; ``:t5`` selects a small T5.1.1 encoder-decoder.

Trains in about a minute on two CPU cores; ``summary.json`` reports the held-out pairwise
accuracy next to the gold-label ceiling.
"""

import ml_collections

from configs.rm import synthetic_helpful

VARIANTS = ("decoder", "t5")  # '' is 'decoder'


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if (arg or "decoder") not in VARIANTS:
        raise ValueError(f"configs/rm/synthetic_harmless.py: unknown argument {arg!r}; use "
                         "'decoder' (the default) or 't5'")
    config = synthetic_helpful.get_config(arg)
    config.rm.property = "harmless"
    return config
