"""Will a job fit? ``python -m lsc.plan --config=<config file>[:arg] [--config.<field>=...]
[--mesh=data:1,fsdp:8,tensor:1] [--num_devices=8] [--device=h100] [--mfu=0.4] [--headroom=0.9]``

Without running a step (and without creating a weight) the planner builds the job's step from
abstract shapes, lowers and compiles it over ``N`` simulated CPU devices with the config's mesh
and shardings, and prints per device what the step needs:

* the job's steps: the train step of ``train_rm``, ``train_sft`` and ``train_predictor``
  (:mod:`lsc.train.loop`, the jobs' own losses), the rollout (sampling, scoring, the KL and
  values) and the update of ``rlhf`` (:class:`lsc.align.rlhf.RLTrainer`, any algorithm), for
  the config's global batch (``train.batch_size``; ``rl.batch_size`` prompts);
* parameters (trained, and the frozen models of ``rlhf``: ``pi0``, reward models, predictors)
  and optimiser state, per device, from the sharded abstract state (each leaf's shard shape);
* per compiled step, XLA's ``memory_analysis()`` of the partitioned program: arguments,
  outputs, the outputs that alias donated arguments, temporaries and generated code, and its
  peak ``arguments + outputs - aliased + temporaries + code``; the job's peak is the largest
  step's;
* FLOPs per step per device: the matrix products of the partitioned program (``dot``: ``2 x
  output elements x contracted size``) with every loop body counted as many times as the loop
  runs (XLA's known trip count; a loop without one -- the sampler's, which stops when every
  sample has ended -- at its bound ``data.response_len - 1``), next to XLA's
  ``cost_analysis()`` (which counts a loop body once);
* the step time at ``--mfu`` of the device's peak (:mod:`lsc.plan_devices`) for the config's
  compute dtype (``arch.compute_dtype`` of the trained model);
* ``FITS`` or ``DOES NOT FIT``: the peak against ``--headroom`` times the device's memory; the
  exit code is 0, 1 when it does not fit, 2 for a bad config or flag.

The numbers are XLA's CPU compiler's for the same partitioned program; a GPU or TPU compiler
fuses and schedules differently, so temporaries differ (tests/test_plan.py bounds the CPU
estimate against a real step). ``rlhf`` models come from the config sections (``policy.model``,
``rm_model``) or, for run directories that exist, from their ``config.json`` (never their
weights); the reference bank is taken as computed before RL (``rl.reference_bank``), and the
reference cache has ``rl.batch_size`` rows (its size does not matter).

The config is checked as :mod:`lsc.main` checks it, except the data paths the planner never
reads (:data:`UNREAD_FIELDS`: no dataset or tokenizer needs to be on the planning machine); run
directories named in the config (``policy.workdir``, ``rm_workdir``) must exist, since their
``config.json`` gives their architecture.

``--mesh`` overrides ``config.mesh`` (``axis:size`` pairs; -1 takes the remaining devices of
``--num_devices``); without -1 the mesh's product is the device count. The process must start
with no JAX backend yet: the planner sets ``JAX_PLATFORMS=cpu`` and ``N`` CPU devices
(``jax_num_cpu_devices``, as ``launch/local.sh``'s ``LSC_CPU_DEVICES``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lsc import plan_devices

PLANNED_JOBS = ("train_rm", "train_sft", "train_predictor", "rlhf")
MODEL_SECTIONS = ("model", "policy.model", "rm_model")
UNREAD_FIELDS = ("data.path", "data.tokenizer", "data.chat_template")  # not checked: no data read


# ----------------------------------------------------------------------------- devices and mesh


def parse_mesh(text: str) -> Dict[str, int]:
    """``'data:1,fsdp:8'`` -> ``{'data': 1, 'fsdp': 8}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition(":")
        if not size or not re.fullmatch(r"-?\d+", size.strip()):
            raise ValueError(f"--mesh: {part!r} is not axis:size (e.g. data:1,fsdp:8,tensor:1)")
        out[name.strip()] = int(size)
    return out


def device_count(mesh_config: Optional[Mapping[str, int]], num_devices: int) -> int:
    """The devices the mesh takes: the product of its sizes, or ``num_devices`` when an axis is
    -1 (or the mesh is empty: every device on ``data``)."""
    sizes = [int(v) for v in dict(mesh_config or {}).values()]
    if not sizes or -1 in sizes:
        return int(num_devices)
    return math.prod(sizes)


# LLVM's cheap pipeline for the CPU code: XLA's HLO passes, partitioning and buffer assignment
# (what the planner reads) are unchanged; only the machine code, which never runs, is worse.
QUICK_CPU_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def use_cpu_devices(n: int):
    """``n`` simulated CPU devices for this process (before JAX starts a backend), compiled with
    :data:`QUICK_CPU_FLAGS`; returns them. A process whose backend has started (a test session)
    must already have at least ``n``."""
    import jax

    own = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    names = {f.split("=")[0] for f in own}
    os.environ["XLA_FLAGS"] = " ".join(own + [f for f in QUICK_CPU_FLAGS
                                              if f.split("=")[0] not in names])
    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:  # a backend is running: use its devices
        pass
    devices = jax.devices("cpu")
    if len(devices) < n:
        raise ValueError(f"the mesh needs {n} devices; this process has {len(devices)} CPU "
                         "devices (run lsc.plan in a fresh process)")
    return devices[:n]


# ----------------------------------------------------------------------------- FLOPs from HLO


_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_CALLEES = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation)"
                      r"=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


@dataclasses.dataclass
class LoopFlops:
    """Matrix-product FLOPs of one HLO module with loops at their trip counts."""

    flops: float
    unknown_loops: int  # while loops without a known trip count (taken at the given bound)


def _dims(shape_text: str) -> Optional[List[int]]:
    m = _SHAPE.match(shape_text.strip())
    if not m:
        return None
    return [int(d) for d in m.group(1).split(",") if d]


def matmul_flops(hlo_text: str, unknown_trip_count: int = 1) -> LoopFlops:
    """``2 x output elements x contracted size`` summed over the ``dot`` instructions of the HLO
    module ``hlo_text`` (``compiled.as_text()``: per device after partitioning), every
    computation counted as often as it runs: a while loop's body and condition ``n`` times
    (``known_trip_count``, else ``unknown_trip_count``), the branches of a conditional as the
    most expensive one, fusions and calls once per call."""
    computations: Dict[str, list] = {}
    entry = None
    current = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and "=" not in line.split("(")[0]:
            current = m.group(1)
            computations[current] = []
            if line.lstrip().startswith("ENTRY"):
                entry = current
            continue
        if current is not None and line.strip() == "}":
            current = None
            continue
        if current is not None:
            computations[current].append(line)

    own: Dict[str, float] = {}
    calls: Dict[str, list] = collections.defaultdict(list)  # (callee names, multiplier, kind)
    unknown = collections.Counter()
    for name, lines in computations.items():
        shapes: Dict[str, str] = {}
        total = 0.0
        for line in lines:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            var, shape_text, opcode, rest = m.groups()
            shapes[var] = shape_text
            if opcode == "dot":
                out = _dims(shape_text)
                operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
                lhs = _dims(shapes.get(operands[0], "")) if operands else None
                cm = _CONTRACT.search(rest)
                if out is not None and lhs is not None and cm:
                    k = math.prod(lhs[int(d)] for d in cm.group(1).split(",") if d)
                    total += 2.0 * math.prod(out) * k
            elif opcode == "while":
                tm = _TRIP.search(rest)
                n = int(tm.group(1)) if tm else int(unknown_trip_count)
                if not tm:
                    unknown[name] += 1
                callees = [c for kind, c in _CALLEES.findall(rest) if kind in ("body", "condition")]
                calls[name].append((callees, n, "sum"))
                continue
            elif opcode == "conditional":
                bm = _BRANCHES.search(rest)
                names = ([b.strip().lstrip("%") for b in bm.group(1).split(",")] if bm else
                         [c for kind, c in _CALLEES.findall(rest)
                          if kind in ("true_computation", "false_computation")])
                calls[name].append((names, 1, "max"))
                continue
            callees = [c for kind, c in _CALLEES.findall(rest) if kind in ("calls", "to_apply")]
            if callees:
                calls[name].append((callees, 1, "sum"))
        own[name] = total

    memo: Dict[str, Tuple[float, int]] = {}

    def cost(name: str) -> Tuple[float, int]:
        if name in memo:
            return memo[name]
        memo[name] = (0.0, 0)  # recursion guard
        flops, loops = own.get(name, 0.0), unknown[name]
        for callees, n, kind in calls.get(name, []):
            parts = [cost(c) for c in callees if c in computations]
            if not parts:
                continue
            if kind == "max":
                f, u = max(parts)
            else:
                f, u = sum(p[0] for p in parts), sum(p[1] for p in parts)
            flops += n * f
            loops += u
        memo[name] = (flops, loops)
        return memo[name]

    if entry is None:
        return LoopFlops(0.0, 0)
    flops, loops = cost(entry)
    return LoopFlops(flops, loops)


# ----------------------------------------------------------------------------- compiled steps


@dataclasses.dataclass
class StepPlan:
    """One compiled step, per device (bytes and FLOPs)."""

    name: str
    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    code: int
    flops: float  # matmul FLOPs, loops at their trip counts
    xla_flops: float  # compiled.cost_analysis()['flops'] (loop bodies once)
    unknown_loops: int

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


def analyse(name: str, lowered, unknown_trip_count: int = 1) -> StepPlan:
    """Compiles ``lowered`` (a ``jax.stages.Lowered``) and reads its memory and FLOPs."""
    compiled = lowered.compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else {}
    loops = matmul_flops(compiled.as_text(), unknown_trip_count)
    return StepPlan(name, int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes),
                    int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes),
                    int(mem.generated_code_size_in_bytes), loops.flops,
                    float((cost or {}).get("flops", 0.0)), loops.unknown_loops)


def per_device_bytes(abstract, shardings) -> int:
    """Bytes one device holds of the tree ``abstract`` (arrays or ``jax.ShapeDtypeStruct``)
    placed with ``shardings`` (the largest shard: every device of an even split)."""
    import jax
    import numpy as np

    def one(x, s):
        shape = s.shard_shape(tuple(x.shape)) if s is not None else tuple(x.shape)
        return math.prod(shape) * np.dtype(x.dtype).itemsize

    return int(sum(jax.tree.leaves(jax.tree.map(one, abstract, shardings))))


def total_bytes(abstract) -> Tuple[int, int]:
    """``(entries, bytes)`` of every leaf of ``abstract``."""
    import jax
    import numpy as np

    leaves = jax.tree.leaves(abstract)
    return (int(sum(math.prod(x.shape) for x in leaves)),
            int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)))


@dataclasses.dataclass
class Plan:
    """What :func:`plan` finds (bytes per device unless named otherwise)."""

    job: str
    mesh: Dict[str, int]
    compute_dtype: str
    parameters: int  # trained parameters, entries in all
    parameter_bytes_total: int
    parameter_bytes: int
    optimizer_bytes: int
    frozen_bytes: int  # rlhf's frozen models
    steps: List[StepPlan]

    @property
    def peak(self) -> int:
        return max(s.peak for s in self.steps)

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.steps)


# ----------------------------------------------------------------------------- the jobs' steps


def _section(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if node is not None and hasattr(node, "get") else None
    return node


def _vocab_size(config: ml_collections.ConfigDict) -> int:
    """The smallest vocabulary of the config's model sections: the planner reads no tokenizer,
    and a tokenizer's vocabulary only bounds sampling (no shape depends on it)."""
    sizes = [int(s.arch.vocab_size) for s in map(lambda d: _section(config, d), MODEL_SECTIONS)
             if s is not None and s.get("arch") is not None and s.arch.get("vocab_size")]
    return min(sizes) if sizes else 1


def _compute_dtype(record) -> str:
    """The compute dtype of a model record (:class:`lsc.train.run_models.ModelRecord`)."""
    return str(record.arch.get("compute_dtype", "float32"))


def _train_batch(config: ml_collections.ConfigDict):
    """A zero host batch of ``train.batch_size`` rows in the job's layout
    (:mod:`lsc.data.pipeline`)."""
    import numpy as np

    from lsc.train import predictor

    b, p, r = int(config.train.batch_size), int(config.data.prompt_len), \
        int(config.data.response_len)
    rows = lambda *shape: np.zeros((b,) + shape, np.int32)  # noqa: E731
    if config.job == "train_predictor":
        return predictor.target_table(rows(p), np.zeros((b,), np.float32)).arrays
    if config.job == "train_sft":
        return {"prompt": rows(p), "response": rows(r), "valid": rows()}
    if config.rm.loss == "bradley_terry":
        return {"prompt": rows(p), "chosen": rows(r), "rejected": rows(r), "valid": rows()}
    return {"prompt": rows(p), "response": rows(r), "label": rows(), "valid": rows()}


def _train_plan(config: ml_collections.ConfigDict, mesh, rules) -> Plan:
    from lsc.train import loop, optim, predictor, reward_model, run_models, sft

    reward = config.job in ("train_rm", "train_predictor")
    create, _, record = run_models.describe_config_model("model", "model", config.model,
                                                         _vocab_size(config), int(config.seed),
                                                         reward=reward)
    loss_fn = {"train_rm": lambda: reward_model.train_loss(config),
               "train_sft": sft.sft_loss_fn,
               "train_predictor": predictor.predictor_loss_fn}[config.job]()
    cfg = loop.TrainConfig.from_mapping(config.train)
    tx = optim.make_optimizer(config.optim, cfg.num_steps)
    schedule = optim.make_schedule(config.optim, cfg.num_steps)
    graphdef, state, shardings = loop.abstract_state(create, tx, mesh, rules, int(config.seed))
    batch = _train_batch(config)
    step = loop.jit_train_step(
        loop.make_train_step(graphdef, loss_fn, tx, schedule,
                             grad_accum_steps=cfg.grad_accum_steps),
        shardings, loop.global_batch_shardings(batch, mesh), mesh)
    lowered = step.lower(state, loop.global_shapes(batch))
    count, total = total_bytes(state.params)
    return Plan(config.job, dict(mesh.shape), _compute_dtype(record), count, total, per_device_bytes(state.params, shardings.params),
                per_device_bytes(state.opt_state, shardings.opt_state), 0,
                [analyse("train step", lowered)])


def _rlhf_plan(config: ml_collections.ConfigDict, mesh, rules) -> Plan:
    import jax
    import numpy as np

    from lsc.align import common as align_common
    from lsc.align import utility as utility_lib
    from lsc.align.rlhf import job as rlhf_job
    from lsc.align.rlhf.config import rl_config
    from lsc.align.rlhf.state import Models

    spec = utility_lib.spec_from_config(config.rewards)
    models = align_common.job_models(config, spec, _vocab_size(config), abstract=True)
    cfg = rl_config(config.rl, kl_coef=rlhf_job.kl_coefs(config)[0],
                    seed=rlhf_job.rl_seeds(config)[0])
    r_len, b = int(config.data.response_len), int(cfg.batch_size)
    bank = spec.uses_reference and bool(config.rl.get("reference_bank", True))
    reference = (np.zeros((b, spec.num_properties), np.float32), np.ones((b,), bool))
    trainer = rlhf_job.make_trainer(
        spec, cfg, Models(pi0=models.pi0, reward_models=models.reward_models,
                          predictors=models.predictors),
        b, r_len, mesh, rules, seed=int(config.seed),
        fixed_tokens=np.zeros((spec.num_properties, r_len), np.int32),
        reference=reference if bank else None)
    batch = {"prompt": np.zeros((b, int(config.data.prompt_len)), np.int32),
             "slot": np.arange(b, dtype=np.int32)}
    lowered = trainer.lower(batch)
    state = trainer.abstract_state()
    sh = trainer.state_shardings
    trained = (state.policy, state.value) if cfg.algorithm == "ppo" else (state.policy,)
    trained_sh = (sh.policy, sh.value) if cfg.algorithm == "ppo" else (sh.policy,)
    count, total = total_bytes(trained)
    frozen = trainer.frozen
    return Plan("rlhf", dict(mesh.shape), _compute_dtype(models.records[0]), count, total, per_device_bytes(trained, trained_sh),
                per_device_bytes((state.policy_opt, state.value_opt),
                                 (sh.policy_opt, sh.value_opt)),
                per_device_bytes(frozen, jax.tree.map(lambda x: x.sharding, frozen)),
                [analyse("rollout", lowered["rollout"], unknown_trip_count=max(r_len - 1, 1)),
                 analyse("update", lowered["update"])])


def plan(config: ml_collections.ConfigDict, devices=None) -> Plan:
    """The :class:`Plan` of ``config`` (``config.mesh`` over ``devices``, default every device).

    Raises ``ValueError`` for a job the planner does not build."""
    from lsc.parallel import mesh as mesh_lib
    from lsc.parallel import partitioning

    if config.job not in PLANNED_JOBS:
        raise ValueError(f"config.job={config.job!r}: lsc.plan builds the steps of "
                         f"{', '.join(PLANNED_JOBS)}")
    mesh = mesh_lib.make_mesh(config.get("mesh", None), devices=devices)
    rules = partitioning.rules_from_config(config.get("rules", None))
    return _rlhf_plan(config, mesh, rules) if config.job == "rlhf" else \
        _train_plan(config, mesh, rules)


# ----------------------------------------------------------------------------- the report


def _gb(n: float) -> str:
    """Bytes in GB (10^9), or MB below one GB."""
    if abs(n) < plan_devices.GB:
        return f"{n / 10 ** 6:,.2f} MB"
    return f"{n / plan_devices.GB:,.2f} GB"


def report(p: Plan, device: plan_devices.Device, mfu: float, headroom: float
           ) -> Tuple[bool, List[str]]:
    """``(fits, lines)``: the printed report of ``p`` for ``device``."""
    n = math.prod(p.mesh.values())
    mesh = ", ".join(f"{k}={v}" for k, v in p.mesh.items())
    lines = [f"job {p.job}, mesh {mesh} ({n} devices), compute dtype {p.compute_dtype}",
             f"device {device.name}: {device.bf16_flops / 1e12:g} TFLOP/s bf16, "
             f"{'no' if device.fp32_flops is None else f'{device.fp32_flops / 1e12:g} TFLOP/s'} "
             f"fp32 peak, {device.memory_text} ({device.source})",
             f"trained parameters: {p.parameters:,} ({_gb(p.parameter_bytes_total)} in all)",
             "per device:",
             f"  parameters        {_gb(p.parameter_bytes)}",
             f"  optimizer state   {_gb(p.optimizer_bytes)}"]
    if p.job == "rlhf":
        lines.append(f"  frozen models     {_gb(p.frozen_bytes)} (pi0, reward models, "
                     "predictors)")
    peak_flops = device.peak_flops(p.compute_dtype)
    for s in p.steps:
        lines += [f"  step '{s.name}' (compiled for {n} CPU devices, XLA memory_analysis):",
                  f"    arguments {_gb(s.arguments)}, outputs {_gb(s.outputs)} "
                  f"(aliasing donated arguments {_gb(s.aliased)}), temporaries "
                  f"{_gb(s.temporaries)}, generated code {_gb(s.code)}",
                  f"    peak {_gb(s.peak)} (arguments + outputs - aliased + temporaries + code)",
                  f"    FLOPs {s.flops:.3e} (matmuls, loops at their trip counts"
                  + (f"; {s.unknown_loops} loop(s) at the bound response_len - 1"
                     if s.unknown_loops else "")
                  + f"); XLA cost_analysis {s.xla_flops:.3e} (loop bodies once)"]
    if peak_flops is None:
        lines.append(f"step time: {device.name} has no datasheet {p.compute_dtype} peak")
    else:
        seconds = p.flops / (mfu * peak_flops)
        lines.append(f"step time at {mfu:.0%} MFU: {seconds:.3g} s ({p.flops:.3e} FLOPs per "
                     f"device per step / ({mfu:g} x {peak_flops / 1e12:g} TFLOP/s "
                     f"{p.compute_dtype}))")
    others = [f"{key} {'fits' if p.peak <= headroom * d.memory_bytes else 'does not fit'}"
              for key, d in plan_devices.DEVICES.items() if d is not device]
    lines.append(f"the same peak on the other devices (at {headroom:.0%}): {', '.join(others)}")
    limit = headroom * device.memory_bytes
    fits = p.peak <= limit
    lines.append(f"{'FITS' if fits else 'DOES NOT FIT'}: peak {_gb(p.peak)} per device "
                 f"{'<=' if fits else '>'} {headroom:.0%} of {device.memory_text} "
                 f"({_gb(limit)}) on {device.name}")
    return fits, lines


# ----------------------------------------------------------------------------- command line

def _define_flags() -> Dict[str, Any]:
    """The command line's flags, defined when the module runs as a program (a process that has
    imported :mod:`lsc.main` keeps its own ``--config``)."""
    return {
        "config": config_flags.DEFINE_config_file(
            "config", None, "Experiment config file, e.g. configs/rm/t5_base.py:helpful.",
            lock_config=True),
        "mesh": flags.DEFINE_string("mesh", "",
                                    "Mesh, e.g. data:1,fsdp:8,tensor:1 (empty: config.mesh)."),
        "num_devices": flags.DEFINE_integer(
            "num_devices", 8, "Devices of a mesh with a -1 axis (else the mesh's product)."),
        "device": flags.DEFINE_enum("device", "h100", list(plan_devices.DEVICES),
                                    "The accelerator."),
        "mfu": flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation of the step-time estimate."),
        "headroom": flags.DEFINE_float("headroom", 0.9,
                                       "The fraction of device memory the peak may use."),
    }


def main(argv, f: Mapping[str, Any]) -> int:
    """The program: plans ``--config`` and prints the report; returns the exit code."""
    from lsc import config as config_lib
    from lsc import runtime

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = f["config"].value
    runtime.quiet_library_logs()
    try:
        if f["mesh"].value:
            with config.unlocked():
                config.mesh = ml_collections.ConfigDict(parse_mesh(f["mesh"].value))
        # lsc.main's checks, less those of the data the planner never reads.
        config_lib.validate(config, {k: v for k, v in config_lib.RULES.items()
                                     if k not in UNREAD_FIELDS}, jobs=PLANNED_JOBS)
        if not 0 < f["mfu"].value <= 1 or not 0 < f["headroom"].value <= 1:
            raise ValueError("--mfu and --headroom must lie in (0, 1]")
        devices = use_cpu_devices(device_count(config.get("mesh", None), f["num_devices"].value))
        result = plan(config, devices)
    except (ValueError, OSError, config_lib.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fits, lines = report(result, plan_devices.DEVICES[f["device"].value], f["mfu"].value,
                         f["headroom"].value)
    print("\n".join(lines))
    return 0 if fits else 1


if __name__ == "__main__":
    _FLAGS = _define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(lambda argv: sys.exit(main(argv, _FLAGS)))
