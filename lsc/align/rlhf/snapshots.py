"""Policy snapshots along a run: ``<workdir>/snapshots/<step>/model.safetensors`` (for curves
along training; one file per snapshot, :func:`lsc.train.checkpoint.export_model_file`; each loads
with :func:`lsc.train.checkpoint.load_model`, as do snapshots written earlier as orbax
``model`` directories), and beside it
``kl_level.json``: the running training KL at the export, from which the next KL-triggered export
is measured (:func:`kl_triggered`)."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import jax
from flax import nnx

from lsc import runtime
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


def kl_triggered(recent: Sequence[float], level: float, rise: float) -> bool:
    """Whether the policy is exported for its KL: ``rise > 0`` and the mean of ``recent`` (the
    last training ``kl_k1`` values, ``rl.stop_kl``'s window) is at least ``level + rise`` nats,
    ``level`` being that mean at the previous export (0 before any: ``pi0``)."""
    if rise <= 0 or not recent:
        return False
    return sum(float(x) for x in recent) / len(recent) >= level + rise


LEVEL_FILE = "kl_level.json"


def kl_level(workdir: str, before: int) -> float:
    """The running training KL recorded with the last snapshot of a step below ``before`` (0.0
    when there is none): the level a resumed run measures its next KL-triggered export from."""
    steps = [s for s in snapshot_steps(workdir) if s < int(before)]
    if not steps:
        return 0.0
    path = os.path.join(snapshot_dir(workdir, steps[-1]), LEVEL_FILE)
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f)["kl_level"])


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
                  if d.isdigit() and checkpoint_lib.has_model(os.path.join(root, d)))


def export_snapshot(workdir: str, trainer, state, step: int,
                    kl_level: Optional[float] = None) -> str:
    """Exports the policy of ``state`` to :func:`snapshot_dir` (replacing an earlier export of
    the same step, e.g. after a restart), with ``kl_level`` (the running training KL) in
    :data:`LEVEL_FILE` when given."""
    _, _, rest = nnx.split(trainer.policy_model(state), nnx.Param, ...)
    where = snapshot_dir(workdir, step)
    if all(x.is_fully_addressable for x in jax.tree.leaves((state.policy, rest))
           if isinstance(x, jax.Array)):
        out = checkpoint_lib.export_model_file(where, state.policy, rest)
    else:  # a policy sharded over several processes: orbax writes it collectively
        out = checkpoint_lib.export_model(where, state.policy, rest)
    if kl_level is not None:
        runtime.write_json_atomic(os.path.join(snapshot_dir(workdir, step), LEVEL_FILE),
                                  {"kl_level": float(kl_level)})
    return out


