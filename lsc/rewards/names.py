"""The names of utility methods and references: one vocabulary for configs, results and plots.

Methods (``config.rewards.method``; :data:`UTILITY_METHODS` lists every accepted name):

* the aggregations of :mod:`lsc.rewards.aggregate` (:data:`AGGREGATIONS`: ``sum``,
  ``weighted_sum``, ``lsc_sum``, ``lsc_weighted_sum``, ``sigma_and``, ``sigma_or`` and their
  ``*_nocenter`` variants, which ignore the reference);
* :data:`PAR` -- Preference As Reward (:func:`lsc.rewards.par`);
* the aliases of :data:`METHOD_ALIASES`, accepted on input: ``raw`` is ``sum_nocenter`` (the
  paper's raw-reward baseline) and ``lsc`` is ``lsc_sum`` (the paper's LSC utility);
  :func:`canonical_method` resolves them;
* pipeline methods (:func:`is_pipeline_method`, applied by :mod:`lsc.align.reward_pipeline`,
  whose utility of a sample may depend on the other samples of its prompt or batch):
  :data:`GDPO` (``'gdpo'``: each reward normalised within its prompt's group of k samples, then
  summed; no reference) and explicit stage strings ``'<transform>+<aggregation>'`` with an
  optional ``_nocenter`` suffix (:data:`PIPELINE_TRANSFORMS`, :data:`PIPELINE_AGGREGATIONS`;
  :func:`split_stages`), e.g. ``'clip+sum'`` or ``'batch_norm+weighted_sum_nocenter'``.

:data:`UTILITY_METHODS` are the per-response methods (a response's utility depends on its own
rewards only); :data:`METHOD_CHOICES` adds the named pipeline methods; :func:`is_method` also
accepts stage strings.

Results (``results.json``, ``report.md``, figure labels) name the paper's two utilities by the
number of rewards they combine (:func:`result_method`, :data:`RESULT_NAMES`): ``raw`` / ``lsc``
for one reward, ``raw_sum`` / ``lsc_sum`` for several (uncentred and LSC sums).

References. A config's ``reference.source`` is one of :data:`REFERENCE_SOURCES`; results name a
reference by the same word (:func:`reference_label`), except a quantile, named ``median`` or
``p<q>`` (``q`` in percent: ``p85``). :data:`NO_REFERENCE` (``'none'``) is the source of no
subtraction and the reference of every method that ignores it; several properties join theirs as
``helpful:p85+harmless:fixed_response`` (:func:`joint_reference_label`). Read back, ``None``
also means no reference (:func:`reference_name`), and ``<m>_nocenter`` is method ``<m>`` with
no reference (:func:`split_nocenter`). A run is labelled ``<method>`` or ``<method>_<reference>``
(:func:`run_label`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from lsc.rewards.aggregate import METHODS as AGGREGATIONS
from lsc.rewards.aggregate import NOCENTER_SUFFIX, WEIGHTED_METHODS, check_method

PAR = "par"
GDPO = "gdpo"
METHOD_ALIASES: Dict[str, str] = {"raw": "sum_nocenter", "lsc": "lsc_sum"}
UTILITY_METHODS: Tuple[str, ...] = AGGREGATIONS + tuple(METHOD_ALIASES) + (PAR,)
"""The per-response ``rewards.method`` names (aggregations, their aliases, ``par``)."""

# The stages of lsc.align.reward_pipeline (defined here so that the vocabulary lives in one place).
PIPELINE_TRANSFORMS: Tuple[str, ...] = (
    "identity", "lsc", "par", "clip", "batch_norm", "minmax", "group_norm")
PIPELINE_AGGREGATIONS: Tuple[str, ...] = ("sum", "weighted_sum", "sigma_and", "sigma_or")
GROUP_TRANSFORMS: Tuple[str, ...] = ("batch_norm", "minmax", "group_norm")
"""Transforms whose value for a sample depends on other samples (they need ``[B, k, m]``)."""
STAGE_SEPARATOR = "+"
PIPELINE_METHODS: Tuple[str, ...] = (GDPO,)
"""The named methods that only :mod:`lsc.align.reward_pipeline` applies."""
METHOD_CHOICES: Tuple[str, ...] = UTILITY_METHODS + PIPELINE_METHODS
"""Every accepted named ``rewards.method`` (stage strings are accepted besides)."""
STAGE_SYNTAX = (f"'<transform>+<aggregation>[{NOCENTER_SUFFIX}]' with transform one of "
                f"{', '.join(PIPELINE_TRANSFORMS)} and aggregation one of "
                f"{', '.join(PIPELINE_AGGREGATIONS)}")

# The results' names of the paper's two utilities: (one reward, several rewards).
RESULT_NAMES: Dict[str, Tuple[str, str]] = {"sum_nocenter": ("raw", "raw_sum"),
                                            "lsc_sum": ("lsc", "lsc_sum")}
RAW_NAMES = RESULT_NAMES["sum_nocenter"]
LSC_NAMES = RESULT_NAMES["lsc_sum"]

NO_REFERENCE = "none"
REFERENCE_SOURCES = ("quantile", "predictor", "fixed_response", NO_REFERENCE)


def canonical_method(method: str) -> str:
    """``method`` with an alias of :data:`METHOD_ALIASES` resolved."""
    return METHOD_ALIASES.get(method, method)


def split_stages(method: Any) -> Optional[Tuple[str, str, bool]]:
    """``(transform, aggregation, center)`` of a stage string ``'<t>+<a>[_nocenter]'``, else None.

    Only the names are checked here; :class:`lsc.align.reward_pipeline.Pipeline` checks that the
    stages fit together (e.g. ``sigma_and`` needs transform ``identity``).
    """
    if not isinstance(method, str) or method.count(STAGE_SEPARATOR) != 1:
        return None
    center = not method.endswith(NOCENTER_SUFFIX)
    body = method if center else method[: -len(NOCENTER_SUFFIX)]
    transform, aggregation = body.split(STAGE_SEPARATOR)
    if transform not in PIPELINE_TRANSFORMS or aggregation not in PIPELINE_AGGREGATIONS:
        return None
    return transform, aggregation, center


def is_pipeline_method(method: Any) -> bool:
    """True for :data:`GDPO` and stage strings (the methods of :mod:`lsc.align.reward_pipeline`)."""
    return method in PIPELINE_METHODS or split_stages(method) is not None


def is_method(method: Any) -> bool:
    """True for every accepted ``rewards.method``: :data:`METHOD_CHOICES` and stage strings."""
    return (isinstance(method, str) and method in METHOD_CHOICES) or is_pipeline_method(method)


def uses_reference(method: str) -> bool:
    """False when ``method`` ignores ``r_ref``: ``raw``, the ``*_nocenter`` methods, ``gdpo`` and
    the stage strings with transform ``group_norm`` (a per-prompt reference cancels there)."""
    if method == GDPO:
        return False
    stages = split_stages(method)
    if stages is not None:
        return stages[2] and stages[0] != "group_norm"
    return not canonical_method(method).endswith(NOCENTER_SUFFIX)


def is_weighted(method: str) -> bool:
    """True for the methods that need one weight per property."""
    stages = split_stages(method)
    if stages is not None:
        return stages[1] == "weighted_sum"
    method = canonical_method(method)
    return method in AGGREGATIONS and check_method(method) in WEIGHTED_METHODS


def result_method(method: str, num_rewards: int) -> str:
    """The results' name of ``method`` aggregating ``num_rewards`` rewards (module docstring)."""
    names = RESULT_NAMES.get(canonical_method(method))
    return method if names is None else names[0 if num_rewards == 1 else 1]


def reference_label(source: str, quantile: float = 0.5) -> str:
    """The results' name of a reference from its config ``source`` (and ``quantile``):
    ``median`` or ``p<q>`` for a quantile, else ``source`` itself."""
    if source == "quantile":
        q = float(quantile)
        return "median" if q == 0.5 else f"p{100 * q:g}"
    if source not in REFERENCE_SOURCES:
        raise ValueError(f"unknown reference source {source!r}; one of {REFERENCE_SOURCES}")
    return source


def joint_reference_label(properties: Sequence[str], labels: Sequence[str]) -> str:
    """One property's label, or ``'<p1>:<label1>+<p2>:<label2>'`` for several."""
    if len(labels) == 1:
        return labels[0]
    return "+".join(f"{p}:{label}" for p, label in zip(properties, labels))


def reference_name(reference: Any) -> str:
    """``reference``, with ``None`` read as :data:`NO_REFERENCE`."""
    return NO_REFERENCE if reference is None else str(reference)


def split_nocenter(method: Any, reference: Any) -> Tuple[str, str]:
    """``(method, reference)`` with ``<m>_nocenter`` read as ``<m>`` with no reference."""
    method = str(method)
    if method.endswith(NOCENTER_SUFFIX):
        return method[: -len(NOCENTER_SUFFIX)], NO_REFERENCE
    return method, reference_name(reference)


def run_label(method: str, reference: Any) -> str:
    """``<method>`` or ``<method>_<reference>`` (the note's run names)."""
    reference = reference_name(reference)
    return method if reference == NO_REFERENCE else f"{method}_{reference}"
