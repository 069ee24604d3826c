"""The config of every job the reproduction runs, built from its sections.

Each stage runs an ordinary job (``train_rm``, ``train_sft``, ``train_predictor``, ``rlhf``) on a
config assembled here: the stage's section of the reproduction config (``rm``, ``sft``,
``predictor``, ``rl`` + ``rlhf.runs.<name>``) plus the shared ``seed``, ``world`` and
``data`` fields, so every job sees the same world and tokenizer. :func:`validate_all` checks
every such config before anything runs and names bad fields by their path in the reproduction
config (``config.rm.train.num_steps``).
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import ml_collections

from lsc import config as config_lib
from lsc.eval import trajectory

PROPERTIES = ("harmless", "helpful")  # the order of every reward axis (sorted, as utility specs)


def _copy(section: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(section.to_dict())


def _shared(config: ml_collections.ConfigDict, sub: ml_collections.ConfigDict, job: str
            ) -> ml_collections.ConfigDict:
    sub.job = job
    sub.seed = int(config.seed)
    sub.world = _copy(config.world)
    if "data" not in sub:
        sub.data = ml_collections.ConfigDict()
    for name in ("source", "path", "on_error"):
        sub.data[name] = config.data[name]
    return sub


def replicates(config: ml_collections.ConfigDict) -> int:
    """How many proxy reward models per property (``world.pair_replicates``)."""
    return int(config.world.get("pair_replicates", 1))


def replicate_name(replicate: int) -> str:
    """``r<replicate>``: a reward-model replicate's (and its predictor's) directory under its
    property, its key in the results and its source name in the exact arm (``replicate`` is the
    position, whatever ``world.replicate_offset``)."""
    return f"r{int(replicate)}"


def reward_model(config: ml_collections.ConfigDict, prop: str, replicate: int = 0
                 ) -> ml_collections.ConfigDict:
    """The ``train_rm`` config of property ``prop``, replicate position ``replicate``: its pair
    draw and seed index ``rm.replicate`` is ``world.replicate_offset + replicate``."""
    sub = _shared(config, _copy(config.rm), "train_rm")
    sub.rm.property = prop
    sub.rm.replicate = int(config.world.get("replicate_offset", 0)) + int(replicate)
    return sub


def sft(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``train_sft`` config of the base policy."""
    return _shared(config, _copy(config.sft), "train_sft")


def predictor(config: ml_collections.ConfigDict, rm_workdir: str = "",
              policy_workdir: str = "", samples_path: str = "") -> ml_collections.ConfigDict:
    """The ``train_predictor`` config of the predictor of one reward model's median
    (``samples_path``: the shared base-policy samples, empty to draw its own)."""
    sub = _shared(config, _copy(config.predictor), "train_predictor")
    sub.reference.rm_workdir = rm_workdir
    sub.reference.policy_workdir = policy_workdir
    sub.reference.samples_path = samples_path
    return sub


def rlhf(config: ml_collections.ConfigDict, name: str, rm_workdirs: Dict[str, str] = None,
         policy_workdir: str = "", predictor_workdirs: Dict[str, str] = None,
         samples_path: str = "") -> ml_collections.ConfigDict:
    """The ``rlhf`` config of method ``rlhf.runs.<name>``: one run per ``rl.seed`` at the
    method's ``kl_coef`` (``rl.kl_coef`` when the run has none), with ``rl`` updated by the
    run's ``rl`` section when it has one (e.g. ``algorithm``, ``num_samples``, ``batch_size``);
    ``samples_path``: the shared base-policy samples of the quantile references (empty: drawn by
    the job)."""
    sub = ml_collections.ConfigDict()
    sub.data = ml_collections.ConfigDict({
        "tokenizer": "", "prompt_len": int(config.data.prompt_len),
        "response_len": int(config.data.response_len)})
    sub = _shared(config, sub, "rlhf")
    sub.policy = ml_collections.ConfigDict({"workdir": policy_workdir})
    sub.rewards = _copy(config.rlhf.runs[name].rewards)
    for prop in sub.rewards.properties:
        sub.rewards.properties[prop].rm_workdir = (rm_workdirs or {}).get(prop, "")
        ref = sub.rewards.properties[prop].reference
        if ref.source == "predictor":
            ref.predictor_workdir = (predictor_workdirs or {}).get(prop, "")
    sub.rewards.reference_samples = samples_path
    sub.rl = _copy(config.rl)
    run = config.rlhf.runs[name]
    for field, value in run.get("rl", {}).items():  # per-run overrides (e.g. the algorithm)
        sub.rl[field] = value
    if "kl_coef" in run:
        gamma = run.kl_coef
        sub.rl.kl_coef = tuple(gamma) if isinstance(gamma, (tuple, list)) else (float(gamma),)
    sub.mesh = _copy(config.rlhf.mesh)
    return sub


def all_configs(config: ml_collections.ConfigDict
                ) -> List[Tuple[str, ml_collections.ConfigDict]]:
    """``(section path, job config)`` of every job of the reproduction (workdirs left empty)."""
    out = [("rm", reward_model(config, p)) for p in PROPERTIES]
    out.append(("sft", sft(config)))
    out.append(("predictor", predictor(config)))
    for name in config.rlhf.runs:
        out.append((f"rlhf.runs.{name}", rlhf(config, name)))
    return out


_SHARED_FIELDS = ("seed", "world", "data.source", "data.path", "data.on_error", "rl")


def validate_all(config: ml_collections.ConfigDict) -> None:
    """Validates every job config; raises one :class:`lsc.config.ConfigError` naming each bad
    field by its path in the reproduction config."""
    errors: List[Tuple[str, str]] = []
    seen = set()
    for section, sub in all_configs(config):
        try:
            config_lib.validate(sub)
        except config_lib.ConfigError as e:
            for field, message in e.errors:
                if any(field == f or field.startswith(f + ".") for f in _SHARED_FIELDS):
                    path = field
                elif section.startswith("rlhf.") and field.startswith("mesh."):
                    path = f"rlhf.{field}"
                else:
                    path = f"{section}.{field}"
                if path not in seen:
                    seen.add(path)
                    errors.append((path, message))
    errors.extend(_exact_errors(config))
    errors.extend(_rl_arm_errors(config))
    if errors:
        raise config_lib.ConfigError(errors)


def _exact_errors(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
    """Checks across the fields of the exact arm's section."""
    ex = config.get("exact")
    if ex is None:
        return [("exact", "is missing (bank sizes, KL grid, k values, decision rule)")]
    errors = []
    missing = sorted(set(int(k) for k in ex.primary_ks) - set(int(k) for k in ex.ks))
    if missing:
        errors.append(("exact.primary_ks", f"{missing} not in exact.ks {tuple(ex.ks)}"))
    top = math.log(int(ex.bank_size))
    too_high = [float(x) for x in ex.kl_grid if float(x) >= top]
    if too_high:
        errors.append(("exact.kl_grid", f"{too_high} not below log(exact.bank_size) = "
                                        f"{top:.3f}, the largest KL a bank of "
                                        f"{int(ex.bank_size)} supports"))
    return errors


def _rl_arm_errors(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
    """Checks of the RL arm's section (absent: no RL arm to check)."""
    ra = config.get("rl_arm")
    if ra is None:
        return []
    errors = []
    grid = [float(x) for x in ra.kl_grid]
    if not grid or any(not x > 0.0 for x in grid):
        errors.append(("rl_arm.kl_grid", f"must be KL values > 0, got {tuple(ra.kl_grid)}"))
    if str(ra.get("path", "")) not in trajectory.PATHS:
        errors.append(("rl_arm.path", f"must be one of {trajectory.PATHS}, got "
                                      f"{ra.get('path', None)!r}"))
    if not float(ra.get("max_gap", 0.0)) > 0.0:
        errors.append(("rl_arm.max_gap", f"must be > 0 nats, got {ra.get('max_gap', None)!r}"))
    if str(ra.get("points", "")) not in trajectory.POINTS:
        errors.append(("rl_arm.points", f"must be one of {trajectory.POINTS}, got "
                                        f"{ra.get('points', None)!r}"))
    return errors
