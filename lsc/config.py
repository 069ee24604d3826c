"""Up-front validation of experiment configs (``ml_collections.ConfigDict``).

Every rule names a dotted field (``*`` matches any key at that level, e.g.
``rewards.properties.*.reference.quantile``) and is checked only where the config has that
field, so one rule table serves every experiment. :func:`validate` collects every violation and
raises one :class:`ConfigError` whose message names each dotted field, its value and what is
allowed.

The rules of a typed config section are declared once, next to the code that reads it, and
:data:`RULES` places them under their dotted paths (:func:`lsc.schema.prefixed`):
``train.*`` (:data:`lsc.train.loop.TRAIN_RULES`), ``optim.*``, ``rl.policy_optim.*``,
``rl.value_optim.*`` (:data:`lsc.train.optim.RULES`), ``rl.*``
(:data:`lsc.align.rlhf.RL_RULES`) and ``rewards.properties.*.reference.*``
(:data:`lsc.align.utility.REFERENCE_RULES`); those typed configs check the same rules when they
are built. Precision is one field per model section (:data:`MODEL_SECTIONS`):
``<section>.arch.compute_dtype`` (:data:`lsc.models.layers.COMPUTE_DTYPES`); the trained models
(:data:`TRAINED_MODEL_SECTIONS`) keep ``arch.param_dtype='float32'`` master weights;
``<section>.arch.attention_impl`` (:data:`lsc.models.layers.ATTENTION_IMPLS`) picks XLA or
cuDNN attention, and 'cudnn' where cuDNN cannot run is an error here. Every list of choices is the constant of the module that uses it (e.g.
:data:`lsc.models.heads.POOLINGS`, :data:`lsc.rewards.names.METHOD_CHOICES`,
:data:`lsc.data.DATA_SOURCES`). The imports go one way: this module imports the domain modules,
never the reverse.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import ml_collections

from lsc.align import common as align_common
from lsc.align import rlhf, utility
from lsc.data import DATA_SOURCES, chat_template, hh_rlhf, world
from lsc.models import heads, layers
from lsc.rewards import names
from lsc.schema import Rule, number_in, one_of, prefixed
from lsc.train import common as train_common
from lsc.train import loop, optim, reward_model


class ConfigError(ValueError):
    """A config failed validation; ``errors`` lists ``(dotted_field, message)`` pairs."""

    def __init__(self, errors: Sequence[Tuple[str, str]]):
        self.errors = list(errors)
        lines = [f"config.{field}: {message}" for field, message in self.errors]
        super().__init__("invalid config:\n  " + "\n  ".join(lines))


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


def _float32_master_weights(value, config) -> Optional[str]:
    """The parameters of a model that is trained are stored in float32 (bfloat16 compute is
    ``<section>.arch.compute_dtype``)."""
    if value != "float32":
        return (f"{value!r} is not allowed; a trained model keeps float32 master weights "
                "(set arch.compute_dtype='bfloat16' for bfloat16 compute)")
    return None


# The config sections that describe a model (``kind``, ``arch``, ``init_from``, ``pooling``).
MODEL_SECTIONS = ("model", "policy.model", "rm_model")
TRAINED_MODEL_SECTIONS = ("model", "policy.model")


def _attention_impl_rule(section: str) -> Rule:
    """``<section>.arch.attention_impl``: one of :data:`lsc.models.layers.ATTENTION_IMPLS`;
    'cudnn' only where the section's compute dtype, head dim, soft-capping and dropout let cuDNN's
    kernel run (:func:`lsc.models.layers.attention_impl`); the model checks the device when it is
    built."""

    def rule(value, config) -> Optional[str]:
        message = one_of(layers.ATTENTION_IMPLS)(value, config)
        if message or value != "cudnn":
            return message
        arch = config
        for part in f"{section}.arch".split("."):
            arch = arch.get(part, {})
        # What the config alone rules out; the device (validation runs before JAX may touch
        # one, e.g. before jax.distributed.initialize) is checked when the model is built.
        _, reason = layers.attention_impl(
            "auto", platform=layers.CUDNN_PLATFORMS[0], dtype=arch.get("compute_dtype", "float32"),
            head_dim=int(arch.get("head_dim", arch.get("d_kv", 0)) or 0), max_head_dim=256,
            softcap=arch.get("attn_logit_softcap", 0) > 0,
            dropout=arch.get("dropout_rate", 0) > 0)
        if reason:
            return f"'cudnn' cannot run: {reason}; use 'auto' (xla where cuDNN cannot run) or 'xla'"
        return None

    return rule


def _needs_data_path(config) -> bool:
    return config.get("data", {}).get("source", "synthetic") == "hh_rlhf"


def _method_rule(value, config) -> Optional[str]:
    for v in (value if isinstance(value, (tuple, list)) else [value]):
        if not names.is_method(v):
            return (f"{v!r} is not allowed; choose one of: {', '.join(names.METHOD_CHOICES)}, "
                    f"or a stage string {names.STAGE_SYNTAX}")
    if names.is_weighted(value) and not config.rewards.get("weights"):
        return f"{value!r} needs config.rewards.weights (one number per property)"
    stages = names.split_stages(value)
    if stages and stages[0] == "clip" and not config.rewards.get("clip"):
        return f"{value!r} needs config.rewards.clip = (low, high)"
    return None


def _clip_rule(value, config) -> Optional[str]:
    """Empty / None (not used) or ``(low, high)``: numbers or None, not both None, low <= high."""
    if value is None or (isinstance(value, (tuple, list)) and not value):
        return None
    allowed = "must be (low, high): numbers or None, at least one a number, low <= high"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return f"{value!r} is not allowed; {allowed}"
    low, high = value
    bounds = [b for b in (low, high) if b is not None]
    if not bounds or any(number_in()(b, config) for b in bounds) or (
            len(bounds) == 2 and low > high):
        return f"{value!r} is not allowed; {allowed}"
    return None


def _optional_path(value, config) -> Optional[str]:
    """Empty (not used) or the path of an existing file or directory."""
    if not value:
        return None
    return existing_path()(value, config)


def _chat_template_rule(value, config) -> Optional[str]:
    """'auto' (the policy checkpoint's own template, if any), 'none' or empty (prompts stay
    hh-rlhf transcripts), or a directory holding a chat template."""
    if str(value or "").lower() in ("", "none", "auto"):
        return None
    message = _optional_path(value, config)
    if message:
        return message
    try:
        chat_template.load_chat_template(str(value))
    except chat_template.ChatTemplateError as e:
        return str(e)
    return None


RULES: Dict[str, Rule] = {
    "seed": number_in(0, 2**32 - 1, integer=True),
    "rewards.method": _method_rule,
    **prefixed("rewards.properties.*.reference", utility.REFERENCE_RULES),
    "rewards.weights.*": number_in(),
    "rewards.clip": _clip_rule,
    "data.source": one_of(DATA_SOURCES),
    "data.path": existing_path(when=_needs_data_path),
    "data.on_error": one_of(hh_rlhf.ON_ERROR),
    "data.max_skip_fraction": number_in(0.0, 1.0),
    "data.pad_id": number_in(-1, integer=True),
    "data.chat_template": _chat_template_rule,
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
    "world.version": one_of(world.VERSIONS),
    "world.pair_replicates": number_in(1, integer=True),
    "world.replicate_offset": number_in(0, integer=True),
    "best_of_k.ks": number_in(1, integer=True),
    # Alignment jobs (lsc.align).
    "rewards.properties.*.rm_workdir": _optional_path,
    "rewards.properties.*.reference.predictor_workdir": _optional_path,
    "rewards.reference_samples": _optional_path,
    "policy.workdir": _optional_path,
    **prefixed("rl", rlhf.RL_RULES),
    **prefixed("rl.policy_optim", optim.RULES),
    **prefixed("rl.value_optim", optim.RULES),
    "best_of_k.num_prompts": number_in(0, integer=True),
    "best_of_k.batch_size": number_in(1, integer=True),
    "best_of_k.split": one_of(align_common.PROMPT_SPLITS),
    # The reproduction's exact arm (lsc.repro.exact_arm; checks across fields in
    # lsc.repro.subconfigs.validate_all).
    "exact.bank_size": number_in(2, integer=True),
    "exact.num_opponents": number_in(1, integer=True),
    "exact.kl_grid": number_in(1e-6),
    "exact.ks": number_in(1, integer=True),
    "exact.primary_ks": number_in(1, integer=True),
    "exact.delta": number_in(0.0),
    "exact.confidence": number_in(0.5, 0.999),
    "exact.bootstrap_resamples": number_in(10, integer=True),
    "exact.rematch_resamples": number_in(0, integer=True),
    "workers": number_in(0, integer=True),  # 0: lsc.repro.jobs.default_workers()
    "threads_per_worker": number_in(0, integer=True),
    # Training jobs (lsc.train).
    "data.prompt_len": number_in(1, integer=True),
    "data.response_len": number_in(1, integer=True),
    "model.kind": one_of(train_common.MODEL_KINDS),
    # Precision, one field per model: <section>.arch.compute_dtype (lsc.models.layers).
    **{f"{s}.arch.compute_dtype": one_of(layers.COMPUTE_DTYPES) for s in MODEL_SECTIONS},
    **{f"{s}.arch.param_dtype": _float32_master_weights for s in TRAINED_MODEL_SECTIONS},
    "rm_model.arch.param_dtype": one_of(layers.PARAM_DTYPES),
    # Attention implementation, one field per model: <section>.arch.attention_impl.
    **{f"{s}.arch.attention_impl": _attention_impl_rule(s) for s in MODEL_SECTIONS},
    "model.pooling": one_of(heads.POOLINGS),
    "model.init_from": existing_path(when=lambda c: bool(c.model.get("init_from"))),
    "rm.property": one_of(hh_rlhf.SUBSET_GROUPS),
    "rm.loss": one_of(reward_model.LOSSES),
    "rm.margin": number_in(),
    "rm.center_coef": number_in(0.0),
    "rm.replicate": number_in(0, integer=True),
    **prefixed("train", loop.TRAIN_RULES),
    **prefixed("optim", optim.RULES),
    "eval.batch_size": number_in(1, integer=True),
    "eval.calibration_bins": number_in(1, integer=True),
    "reference.rm_workdir": existing_path(when=lambda c: bool(c.reference.get("rm_workdir"))),
    "reference.policy_workdir": existing_path(
        when=lambda c: bool(c.reference.get("policy_workdir"))),
    "reference.samples_path": existing_path(when=lambda c: bool(c.reference.get("samples_path"))),
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
    if not errors:
        errors = typed_section_errors(config)
    if errors:
        raise ConfigError(errors)


_LEADING_FIELD = re.compile(r"^(?:config\.)?([A-Za-z_]\w*(?:\.[A-Za-z_*]\w*)*)")


def _as_field_error(section: str, error: Exception) -> Tuple[str, str]:
    """``(dotted_field, message)`` of a typed config's error: the field its message starts with
    (``'rl.algorithm=...'``, ``'reference.source: ...'``), else the section."""
    text = str(error)
    match = _LEADING_FIELD.match(text)
    if not match or "." not in match.group(1):
        return section, text
    rest = text[match.end():]
    if rest.startswith((": ", " ")):  # 'field: what is allowed', 'field is empty ...'
        text = rest[2:] if rest.startswith(": ") else rest[1:]
    return match.group(1), text


def typed_section_errors(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
    """Builds the typed configs of the sections ``config`` has, as the jobs will
    (:class:`lsc.train.loop.TrainConfig` from ``train``, the typed ``rl``
    (:func:`lsc.align.rlhf.rl_config`) for every ``kl_coef`` and ``seed`` of a sweep,
    :class:`lsc.align.utility.UtilitySpec` from
    ``rewards``), so their checks across fields (``rl.algorithm='rloo'`` needs
    ``rl.num_samples >= 2``, ``train.grad_accum_steps`` divides ``train.batch_size``, a
    ``fixed_response`` reference has a response) fail before anything runs. Returns
    ``(dotted_field, message)`` pairs."""
    builders = []
    if "train" in config:
        builders.append(("train", lambda: loop.TrainConfig.from_mapping(config.train)))
    if "rl" in config:
        builders.extend(
            ("rl", lambda gamma=gamma, seed=seed: rlhf.rl_config(config.rl, kl_coef=gamma,
                                                                   seed=seed))
            for gamma in rlhf.kl_coefs(config) for seed in rlhf.rl_seeds(config))
    if "rewards" in config and config.rewards.get("properties"):
        builders.append(("rewards", lambda: utility.spec_from_config(config.rewards)))
    errors: List[Tuple[str, str]] = []
    for section, build in builders:
        try:
            build()
        except (ValueError, TypeError) as e:
            error = _as_field_error(section, e)
            if error not in errors:
                errors.append(error)
    return errors
