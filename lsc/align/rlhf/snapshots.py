"""Policy snapshots along a run: ``<workdir>/snapshots/<step>/model`` (for curves along
training; each loads with :func:`lsc.train.checkpoint.load_model`)."""

from __future__ import annotations

import os
from typing import List

from flax import nnx

from lsc.train import checkpoint as checkpoint_lib

SNAPSHOT_DIR = "snapshots"


def scheduled(step: int, every: int, early_every: int = 0, early_until: int = 0) -> bool:
    """Whether the policy of ``step`` (``>= 1``) is exported: every ``every`` steps, and every
    ``early_every`` steps up to ``early_until`` (``rl.snapshot_every``,
    ``rl.snapshot_every_early``, ``rl.snapshot_early_until``; 0 turns a part off)."""
    step = int(step)
    if every and step % every == 0:
        return True
    return bool(early_every) and step <= early_until and step % early_every == 0


def snapshot_dir(workdir: str, step: int) -> str:
    """Where :func:`export_snapshot` puts the policy of ``step`` (a workdir for
    ``lsc.train.checkpoint.load_model``)."""
    return os.path.join(workdir, SNAPSHOT_DIR, str(int(step)))


def snapshot_steps(workdir: str) -> List[int]:
    """The steps with an exported policy snapshot, ascending."""
    root = os.path.join(workdir, SNAPSHOT_DIR)
    if not os.path.isdir(root):
        return []
    return sorted(int(d) for d in os.listdir(root)
                  if d.isdigit() and os.path.isdir(os.path.join(root, d, checkpoint_lib.MODEL_DIR)))


def export_snapshot(workdir: str, trainer, state, step: int) -> str:
    """Exports the policy of ``state`` to :func:`snapshot_dir` (replacing an earlier export of
    the same step, e.g. after a restart)."""
    _, _, rest = nnx.split(trainer.policy_model(state), nnx.Param, ...)
    return checkpoint_lib.export_model(snapshot_dir(workdir, step), state.policy, rest)


