"""Up-front validation of experiment configs (``ml_collections.ConfigDict``).

Every rule names a dotted field (``*`` matches any key at that level, e.g.
``rewards.properties.*.reference.quantile``) and is checked only where the config has that
field, so one rule table serves every experiment. :func:`validate` collects every violation and
raises one :class:`ConfigError` whose message names each dotted field, its value and what is
allowed.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import ml_collections

from lsc import rewards

# A rule returns None when the value is fine, else a description of what is allowed.
Rule = Callable[[Any, ml_collections.ConfigDict], Optional[str]]


class ConfigError(ValueError):
    """A config failed validation; ``errors`` lists ``(dotted_field, message)`` pairs."""

    def __init__(self, errors: Sequence[Tuple[str, str]]):
        self.errors = list(errors)
        lines = [f"config.{field}: {message}" for field, message in self.errors]
        super().__init__("invalid config:\n  " + "\n  ".join(lines))


def _values(value: Any) -> List[Any]:
    """A scalar as ``[value]``; a tuple/list (a sweep) as its elements."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def one_of(choices: Sequence[str]) -> Rule:
    def rule(value, config):
        bad = [v for v in _values(value) if v not in choices]
        if bad:
            return f"{bad[0]!r} is not allowed; choose one of: {', '.join(map(str, choices))}"
        return None

    return rule


def number_in(lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> Rule:
    """Every value (each element of a sweep) is a number in ``[lo, hi]``."""
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} in [{lo}, {hi}]"
    if hi == math.inf:
        allowed = f"{kind} >= {lo}"

    def rule(value, config):
        for v in _values(value):
            ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok_type or not (lo <= v <= hi) or v != v:
                return f"{v!r} is not allowed; must be {allowed}"
        return None

    return rule


def existing_path(when: Callable[[ml_collections.ConfigDict], bool] = lambda c: True) -> Rule:
    """The value names an existing file or directory (checked only where ``when(config)``)."""

    def rule(value, config):
        if not when(config):
            return None
        if not value:
            return "is empty; give the path of an existing file or directory"
        if not os.path.exists(os.path.expanduser(str(value))):
            return f"{value!r} does not exist"
        return None

    return rule


def _needs_data_path(config) -> bool:
    return config.get("data", {}).get("source", "synthetic") != "synthetic"


# Utility names accepted by lsc.align.utility besides rewards.METHODS: 'raw' (sum of raw
# rewards), 'lsc' (sum of LSC-transformed rewards), 'par' (Preference As Reward).
EXTRA_UTILITY_METHODS = ("raw", "lsc", "par")


def _method_rule(value, config) -> Optional[str]:
    message = one_of(tuple(rewards.METHODS) + EXTRA_UTILITY_METHODS)(value, config)
    if message:
        return message
    if value in EXTRA_UTILITY_METHODS:
        return None
    base = rewards.check_method(value)
    has_weights = bool(config.rewards.get("weights"))
    if base in rewards.WEIGHTED_METHODS and not has_weights:
        return f"{value!r} needs config.rewards.weights (one number per property)"
    return None


def _optional_path(value, config) -> Optional[str]:
    """Empty (not used) or the path of an existing file or directory."""
    if not value:
        return None
    return existing_path()(value, config)


REFERENCE_SOURCES = ("quantile", "predictor", "fixed_response", "zero")
DATA_SOURCES = ("synthetic", "hh_rlhf", "hf_parquet")

RULES: Dict[str, Rule] = {
    "seed": number_in(0, 2**32 - 1, integer=True),
    "rewards.method": _method_rule,
    "rewards.properties.*.reference.source": one_of(REFERENCE_SOURCES),
    "rewards.properties.*.reference.quantile": number_in(0.0, 1.0),
    "rewards.properties.*.reference.num_samples": number_in(1, integer=True),
    "rewards.weights.*": number_in(),
    "data.source": one_of(DATA_SOURCES),
    "data.path": existing_path(when=_needs_data_path),
    "data.on_error": one_of(("raise", "skip")),
    "world.pairs_train": number_in(1, integer=True),
    "world.pairs_test": number_in(0, integer=True),
    "world.sft_train": number_in(1, integer=True),
    "world.sft_test": number_in(0, integer=True),
    "world.prompts_train": number_in(1, integer=True),
    "world.prompts_test": number_in(1, integer=True),
    "world.helpful_harmful_fraction": number_in(0.0, 1.0),
    "world.harmless_harmful_fraction": number_in(0.0, 1.0),
    "world.mixed_harmful_fraction": number_in(0.0, 1.0),
    "world.label_temperature": number_in(1e-6),
    "best_of_k.ks": number_in(1, integer=True),
    "rl.kl_coef": number_in(0.0),
    # Alignment jobs (lsc.align).
    "rewards.properties.*.rm_workdir": _optional_path,
    "rewards.properties.*.reference.predictor_workdir": _optional_path,
    "policy.workdir": _optional_path,
    "rl.algorithm": one_of(("ppo", "rloo")),
    "rl.num_steps": number_in(1, integer=True),
    "rl.batch_size": number_in(1, integer=True),
    "rl.num_samples": number_in(1, integer=True),
    "rl.kl_estimator": one_of(("k1", "k3")),
    "rl.temperature": number_in(1e-6),
    "rl.ppo_epochs": number_in(1, integer=True),
    "rl.num_minibatches": number_in(1, integer=True),
    "rl.clip_eps": number_in(1e-9),
    "rl.value_clip_eps": number_in(1e-9),
    "rl.gae_lambda": number_in(0.0, 1.0),
    "rl.discount": number_in(0.0, 1.0),
    "rl.log_every": number_in(1, integer=True),
    "rl.save_every": number_in(1, integer=True),
    "rl.keep_checkpoints": number_in(1, integer=True),
    "rl.gold_eval_prompts": number_in(0, integer=True),
    "rl.snapshot_every": number_in(0, integer=True),
    "rl.policy_optim.learning_rate": number_in(0.0),
    "rl.policy_optim.warmup_steps": number_in(0, integer=True),
    "rl.policy_optim.schedule": one_of(("constant", "cosine")),
    "rl.value_optim.learning_rate": number_in(0.0),
    "rl.value_optim.warmup_steps": number_in(0, integer=True),
    "rl.value_optim.schedule": one_of(("constant", "cosine")),
    "best_of_k.num_prompts": number_in(0, integer=True),
    "best_of_k.batch_size": number_in(1, integer=True),
    "best_of_k.split": one_of(("train", "test")),
    # Training jobs (lsc.train).
    "data.prompt_len": number_in(1, integer=True),
    "data.response_len": number_in(1, integer=True),
    "model.kind": one_of(("decoder", "t5")),
    "model.pooling": one_of(("last", "mean", "sum")),  # lsc.models.heads.POOLINGS
    "model.init_from": existing_path(when=lambda c: bool(c.model.get("init_from"))),
    "rm.property": one_of(("helpful", "harmless")),
    "rm.loss": one_of(("bradley_terry", "pointwise")),
    "rm.margin": number_in(),
    "rm.center_coef": number_in(0.0),
    "train.num_steps": number_in(1, integer=True),
    "train.batch_size": number_in(1, integer=True),
    "train.grad_accum_steps": number_in(1, integer=True),
    "train.log_every": number_in(1, integer=True),
    "train.eval_every": number_in(0, integer=True),
    "train.save_every": number_in(1, integer=True),
    "train.keep_checkpoints": number_in(1, integer=True),
    "train.compute_dtype": one_of(("float32", "bfloat16")),
    "optim.name": one_of(("adamw", "adafactor")),
    "optim.learning_rate": number_in(0.0),
    "optim.warmup_steps": number_in(0, integer=True),
    "optim.schedule": one_of(("constant", "cosine")),
    "optim.end_lr_fraction": number_in(0.0, 1.0),
    "optim.weight_decay": number_in(0.0),
    "optim.grad_clip_norm": number_in(0.0),
    "eval.batch_size": number_in(1, integer=True),
    "eval.calibration_bins": number_in(1, integer=True),
    "reference.rm_workdir": existing_path(when=lambda c: bool(c.reference.get("rm_workdir"))),
    "reference.policy_workdir": existing_path(
        when=lambda c: bool(c.reference.get("policy_workdir"))),
    "reference.quantile": number_in(0.0, 1.0),
    "reference.num_samples": number_in(1, integer=True),
    "reference.sample_batch_size": number_in(1, integer=True),
    "reference.temperature": number_in(0.0),
}


def _lookup(config: Any, parts: Sequence[str], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """Yields ``(dotted_path, value)`` for every field of ``config`` matching ``parts``."""
    if not parts:
        yield prefix, config
        return
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        return
    head, rest = parts[0], parts[1:]
    keys = list(config.keys()) if head == "*" else ([head] if head in config else [])
    for key in keys:
        yield from _lookup(config[key], rest, f"{prefix}.{key}" if prefix else key)


def validate(
    config: ml_collections.ConfigDict,
    rules: Dict[str, Rule] = RULES,
    jobs: Sequence[str] = (),
) -> None:
    """Checks ``config`` against ``rules`` (and ``config.job`` against ``jobs`` when given).

    Raises:
      ConfigError: naming every failing dotted field, its value and what is allowed.
    """
    errors: List[Tuple[str, str]] = []
    if jobs:
        if "job" not in config:
            errors.append(("job", f"is missing; choose one of: {', '.join(jobs)}"))
        else:
            message = one_of(jobs)(config.job, config)
            if message:
                errors.append(("job", message))
    for pattern, rule in rules.items():
        for field, value in _lookup(config, pattern.split(".")):
            message = rule(value, config)
            if message:
                errors.append((field, message))
    if errors:
        raise ConfigError(errors)
