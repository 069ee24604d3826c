"""The models a job runs, as they really are: built or loaded through one path, logged once,
and recorded in ``<workdir>/config.json``.

A model comes from a *source*, the config field that names it: a run directory
(``policy.workdir``, ``rewards.properties.<name>.rm_workdir``,
``rewards.properties.<name>.reference.predictor_workdir``, ``reference.rm_workdir``,
``reference.policy_workdir``: a finished training job or a checkpoint converted by
:mod:`lsc.models.hf_convert`, rebuilt from the ``model`` section of its ``config.json``), a
checkpoint (``model.init_from``: its own ``config.json`` gives the architecture) or a config
section (``model``, ``policy.model``, ``rm_model``: random initialisation).

Each model is described by a :class:`ModelRecord` (its role in the job, source, path, kind,
architecture, pooling, parameter count) and logged once when the job takes it. :func:`record`
then rewrites the job's ``config.json`` (written by :mod:`lsc.main` or :mod:`lsc.repro.jobs`
from the config as given) so that it describes what ran:

* ``models.<role>`` -- every record, e.g. ``models.policy``, ``models.value``,
  ``models["reward_model/helpful"]``, ``models["predictor/helpful"]``, ``models.model``;
* the config sections that a loaded checkpoint overrides hold the checkpoint's model section
  (:func:`loaded_sections`): ``model`` with ``model.init_from``, ``policy.model`` with
  ``policy.workdir``, ``rm_model`` when every reward model comes from an ``rm_workdir`` and they
  share one model section (the section is removed when they differ).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence

import jax
import ml_collections
from absl import logging
from flax import nnx

from lsc import runtime
from lsc.models import heads
from lsc.parallel import distributed
from lsc.parallel import partitioning
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import common

MODELS_SECTION = "models"  # the section of config.json that lists the records


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One model of a job.

    Attributes:
      role: its part in the job (``'policy'``, ``'value'``, ``'reward_model/<property>'``,
        ``'predictor/<property>'``, ``'model'`` for the model a training job trains).
      source: the dotted config field it comes from (e.g. ``'policy.workdir'``).
      path: the run directory or checkpoint; empty for a randomly initialised model.
      kind: ``model.kind`` (``'decoder'``, ``'t5'``, ``'t5_classifier'``).
      arch: the architecture that ran (the fields of the model's config dataclass).
      parameters: the number of parameters (``nnx.Param`` entries).
      pooling: the reward head's ``model.pooling`` (reward models and predictors), else None.
    """

    role: str
    source: str
    path: str
    kind: str
    arch: Dict[str, Any]
    parameters: int
    pooling: Optional[str] = None

    def section(self) -> Dict[str, Any]:
        """The model section that rebuilds this model (``kind``, ``arch``, ``pooling``)."""
        out = {"kind": self.kind, "arch": dict(self.arch)}
        if self.pooling is not None:
            out["pooling"] = self.pooling
        return out

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.pooling is None:
            del out["pooling"]
        return out

    def summary(self) -> str:
        """One line: role, kind, architecture, parameters and where it comes from."""
        a = self.arch
        layers = (f"{a['num_layers']}+{a.get('num_decoder_layers') or a['num_layers']} layers"
                  if self.kind == "t5" else f"{a.get('num_layers')} layers")
        shape = f"d_model {a.get('d_model')}, {layers}, {a.get('num_heads')} heads, " \
                f"vocab {a.get('vocab_size')}"
        origin = (f"from {self.source}={self.path}" if self.path
                  else f"random init of config.{self.source}")
        return f"{self.role}: {self.kind} ({shape}), {self.parameters:,} parameters, {origin}"


def parameter_count(model: nnx.Module) -> int:
    """Entries of ``model``'s ``nnx.Param`` leaves (concrete or abstract)."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


class Built(NamedTuple):
    """A model with the function that builds its structure and its record."""

    model: nnx.Module
    create: Callable[[], nnx.Module]
    record: ModelRecord


def _record(role: str, source: str, path: str, model_config, arch_cfg, model: nnx.Module,
            reward: bool, where: str) -> ModelRecord:
    return ModelRecord(role, source, path, str(model_config.kind), dataclasses.asdict(arch_cfg),
                       parameter_count(model),
                       common.reward_pooling(model_config, where) if reward else None)


def describe_run_model(role: str, source: str, workdir: str, vocab_size: int, *,
                       reward: bool) -> tuple:
    """``(create, record)`` of the model exported by run directory ``workdir`` (named by config
    field ``source``), without reading its weights; the parameter count is read from the
    abstract model. Errors name ``source`` and the directory."""
    run_cfg = common.load_run_config(workdir)
    where = f"config.{source}={workdir!r}: its config.json model"
    create, _, arch_cfg = common.backbone_factory(run_cfg.model, vocab_size, int(run_cfg.seed),
                                                  where)
    if reward:
        create, _ = common.reward_model_factory(run_cfg.model, vocab_size, int(run_cfg.seed),
                                                where=where)
    rec = _record(role, source, workdir, run_cfg.model, arch_cfg, nnx.eval_shape(create), reward,
                  where)
    return create, rec


def load_run_model(role: str, source: str, workdir: str, vocab_size: int, *,
                   reward: bool, shardings=None) -> Built:
    """The model exported by run directory ``workdir`` (:func:`lsc.train.checkpoint.load_model`),
    rebuilt from its ``config.json``; logged once. ``shardings`` as in ``load_model``: None puts
    the whole model on one device, :func:`mesh_shardings` reads it onto a job's mesh."""
    create, rec = describe_run_model(role, source, workdir, vocab_size, reward=reward)
    model = checkpoint_lib.load_model(workdir, create, shardings)
    logging.info("loaded %s", rec.summary())
    return Built(model, create, rec)


def mesh_shardings(mesh: jax.sharding.Mesh, rules: partitioning.Rules
                   ) -> Callable[[Any], Any]:
    """The ``shardings`` argument of :func:`load_run_model` that reads a model straight onto
    ``mesh``: each array's ``NamedSharding`` from its logical axes and ``rules``
    (:func:`lsc.parallel.partitioning.state_shardings`, as a random initialisation gets)."""
    return functools.partial(partitioning.state_shardings, mesh=mesh, rules=rules)


def describe_config_model(role: str, source: str, model_config, vocab_size: int, seed: int, *,
                          reward: bool = False, head_init=None) -> tuple:
    """``(create, initial or None, record)`` of the model of config section ``model_config``
    (named by ``source``): random initialisation from ``seed``, or the checkpoint of its
    ``init_from`` (``initial``; the record then holds that checkpoint's architecture). Logged
    once; the parameter count is read from the abstract model."""
    where = f"config.{source}"
    create, initial, arch_cfg = common.backbone_factory(model_config, vocab_size, seed, where)
    if reward:
        create, initial = common.reward_model_factory(model_config, vocab_size, seed,
                                                      head_init=head_init, where=where)
    init_from = model_config.get("init_from", "") or ""
    rec = _record(role, f"{source}.init_from" if init_from else source, init_from, model_config,
                  arch_cfg, nnx.eval_shape(create), reward, where)
    logging.info("built %s", rec.summary())
    return create, initial, rec


def value_record(policy: ModelRecord) -> ModelRecord:
    """The PPO value model's record: the policy's backbone with a value head
    (:class:`lsc.models.heads.ValueModel`)."""
    head = nnx.eval_shape(lambda: heads.ValueHead(int(policy.arch["d_model"]),
                                                  rngs=nnx.Rngs(0)))
    return dataclasses.replace(policy, role="value",
                               parameters=policy.parameters + parameter_count(head))


def loaded_sections(records: Sequence[ModelRecord]) -> Dict[str, Optional[Dict[str, Any]]]:
    """``{dotted config section: model section or None (remove it)}`` for the sections that the
    records' checkpoints override (see the module docstring)."""
    out: Dict[str, Optional[Dict[str, Any]]] = {}
    for rec in records:
        if rec.source == "model.init_from":
            out["model"] = rec.section()
        elif rec.source == "policy.workdir":
            out["policy.model"] = rec.section()
    rms = [r for r in records if r.role.startswith("reward_model/")]
    if rms and all(r.path for r in rms):
        sections = [r.section() for r in rms]
        out["rm_model"] = sections[0] if all(s == sections[0] for s in sections) else None
    return out


def record(workdir: str, config: ml_collections.ConfigDict,
           records: Sequence[ModelRecord]) -> None:
    """Rewrites ``<workdir>/config.json`` (the config as given when the file is absent) with
    ``models`` and the overridden sections (module docstring); process 0 only."""
    if not distributed.is_main_process():
        return
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            written = json.load(f)
    else:
        written = json.loads(config.to_json_best_effort())
    for dotted, section in loaded_sections(records).items():
        *parents, last = dotted.split(".")
        node = written
        for p in parents:
            node = node.setdefault(p, {})
        if section is None:
            node.pop(last, None)
        else:
            node[last] = {**node.get(last, {}), **section}
    written[MODELS_SECTION] = {r.role: r.to_dict() for r in records}
    os.makedirs(workdir, exist_ok=True)
    runtime.write_json_atomic(path, written)


def records_of(config_json: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The ``models`` section of a parsed ``config.json`` (empty when absent)."""
    return dict(config_json.get(MODELS_SECTION, {}))
