"""Field rules and config dataclasses built from mappings, shared by every config section.

A *rule* checks one field's value: it returns None when the value is fine, else what is allowed
(``"'linear' is not allowed; choose one of: constant, cosine"``). The module that reads a config
section declares the rules of its fields next to its code (:data:`lsc.train.optim.RULES`,
:data:`lsc.train.loop.TRAIN_RULES`, :data:`lsc.align.rlhf.RL_RULES`,
:data:`lsc.align.utility.REFERENCE_RULES`); its typed config checks them on construction
(:func:`check`), and :mod:`lsc.config` checks the same rules up front on a whole experiment
config (:func:`prefixed` places a section's rules under its dotted path).

:func:`from_mapping` builds a config dataclass from a dict or ``ml_collections.ConfigDict`` and
rejects keys that are not fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Type, TypeVar

# A rule gets the value and the whole config (None outside lsc.config) and returns None when the
# value is fine, else a description of what is allowed.
Rule = Callable[[Any, Any], Optional[str]]
T = TypeVar("T")


def _values(value: Any) -> List[Any]:
    """A scalar as ``[value]``; a tuple/list (a sweep) as its elements."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def one_of(choices: Iterable[str]) -> Rule:
    """Every value (each element of a sweep) is one of ``choices``."""
    choices = tuple(choices)

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


def prefixed(prefix: str, rules: Mapping[str, Rule]) -> Dict[str, Rule]:
    """``rules`` keyed by their dotted path under ``prefix`` (``'rl'`` + ``'num_steps'``)."""
    return {f"{prefix}.{name}": rule for name, rule in rules.items()}


def check(values: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str) -> None:
    """Checks each field of ``values`` that has a rule (fields without one, and rules without a
    field, are skipped).

    Raises:
      ValueError: ``"<prefix>.<field>: <what is allowed>"`` for the first failing field.
    """
    for name, rule in rules.items():
        if name in values:
            if isinstance(values[name], (tuple, list)):  # a sweep belongs in the config file only
                raise ValueError(f"{prefix}.{name}: {values[name]!r} is not allowed here; give "
                                 "one value")
            message = rule(values[name], None)
            if message:
                raise ValueError(f"{prefix}.{name}: {message}")


def from_mapping(cls: Type[T], mapping: Mapping[str, Any], *, unknown: Optional[str] = None,
                 overrides: Optional[Mapping[str, Any]] = None) -> T:
    """``cls(**mapping)`` for a config dataclass ``cls``.

    Args:
      cls: the dataclass.
      mapping: a dict or ``ml_collections.ConfigDict`` of field values.
      unknown: how the error for keys that are not fields begins (default
        ``'unknown <cls> fields'``); the keys and the known fields follow.
      overrides: field values that replace those of ``mapping``.

    Raises:
      ValueError: on keys that are not fields (and whatever ``cls`` raises on bad values).
    """
    if hasattr(mapping, "to_dict"):
        mapping = mapping.to_dict()
    values = dict(mapping)
    values.update(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(values) - set(fields))
    if extra:
        head = unknown or f"unknown {cls.__name__} fields"
        raise ValueError(f"{head} {extra}; known: {sorted(fields)}")
    return cls(**values)
