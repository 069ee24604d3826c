"""The names of utility methods and references: one vocabulary for configs, results and plots.

Methods (``config.rewards.method``; :data:`UTILITY_METHODS` lists every accepted name):

* the aggregations of :mod:`lsc.rewards.aggregate` (:data:`AGGREGATIONS`: ``sum``,
  ``weighted_sum``, ``lsc_sum``, ``lsc_weighted_sum``, ``sigma_and``, ``sigma_or`` and their
  ``*_nocenter`` variants, which ignore the reference);
* :data:`PAR` -- Preference As Reward (:func:`lsc.rewards.par`);
* the aliases of :data:`METHOD_ALIASES`, accepted on input: ``raw`` is ``sum_nocenter`` (the
  paper's raw-reward baseline) and ``lsc`` is ``lsc_sum`` (the paper's LSC utility);
  :func:`canonical_method` resolves them.

Results (``results.json``, ``report.md``, figure labels) name the paper's two utilities by the
number of rewards they combine (:func:`result_method`, :data:`RESULT_NAMES`): ``raw`` / ``lsc``
for one reward, ``sum`` / ``lsc_sum`` for several.

References. A config's ``reference.source`` is one of :data:`REFERENCE_SOURCES`. Results name a
reference in the note's words (:func:`reference_label`): ``oracle_median`` or ``oracle_p<q>``
(quantile), ``predict_median`` (predictor), ``refusal`` (fixed_response) and
:data:`NO_REFERENCE` (``'none'``, no subtraction: the ``zero`` source, and every method that
ignores the reference); several properties join theirs as ``helpful:oracle_p85+harmless:refusal``
(:func:`joint_reference_label`). Read back, ``None``, ``''`` and ``'zero'`` also mean no reference
(:func:`reference_name`), and ``<m>_nocenter`` is method ``<m>`` with no reference
(:func:`split_nocenter`). A run is labelled ``<method>`` or ``<method>_<reference>``
(:func:`run_label`).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from lsc.rewards.aggregate import METHODS as AGGREGATIONS
from lsc.rewards.aggregate import NOCENTER_SUFFIX, WEIGHTED_METHODS, check_method

PAR = "par"
METHOD_ALIASES: Dict[str, str] = {"raw": "sum_nocenter", "lsc": "lsc_sum"}
UTILITY_METHODS: Tuple[str, ...] = AGGREGATIONS + tuple(METHOD_ALIASES) + (PAR,)
"""Every accepted ``rewards.method``."""

# The results' names of the paper's two utilities: (one reward, several rewards).
RESULT_NAMES: Dict[str, Tuple[str, str]] = {"sum_nocenter": ("raw", "sum"),
                                            "lsc_sum": ("lsc", "lsc_sum")}
RAW_NAMES = RESULT_NAMES["sum_nocenter"]
LSC_NAMES = RESULT_NAMES["lsc_sum"]

REFERENCE_SOURCES = ("quantile", "predictor", "fixed_response", "zero")
NO_REFERENCE = "none"
NO_REFERENCE_ALIASES = (None, "", NO_REFERENCE, "zero")
_SOURCE_LABELS = {"predictor": "predict_median", "fixed_response": "refusal",
                  "zero": NO_REFERENCE}


def canonical_method(method: str) -> str:
    """``method`` with an alias of :data:`METHOD_ALIASES` resolved."""
    return METHOD_ALIASES.get(method, method)


def uses_reference(method: str) -> bool:
    """False when ``method`` ignores ``r_ref`` (``raw`` and the ``*_nocenter`` methods)."""
    return not canonical_method(method).endswith(NOCENTER_SUFFIX)


def is_weighted(method: str) -> bool:
    """True for the methods that need one weight per property."""
    method = canonical_method(method)
    return method in AGGREGATIONS and check_method(method) in WEIGHTED_METHODS


def result_method(method: str, num_rewards: int) -> str:
    """The results' name of ``method`` aggregating ``num_rewards`` rewards (module docstring)."""
    names = RESULT_NAMES.get(canonical_method(method))
    return method if names is None else names[0 if num_rewards == 1 else 1]


def reference_label(source: str, quantile: float = 0.5) -> str:
    """The note's name of a reference from its config ``source`` (and ``quantile``)."""
    if source == "quantile":
        q = float(quantile)
        return "oracle_median" if q == 0.5 else f"oracle_p{100 * q:g}"
    return _SOURCE_LABELS[source]


def joint_reference_label(properties: Sequence[str], labels: Sequence[str]) -> str:
    """One property's label, or ``'<p1>:<label1>+<p2>:<label2>'`` for several."""
    if len(labels) == 1:
        return labels[0]
    return "+".join(f"{p}:{label}" for p, label in zip(properties, labels))


def reference_name(reference: Any) -> str:
    """``reference`` with every spelling of "no reference" read as :data:`NO_REFERENCE`."""
    return NO_REFERENCE if reference in NO_REFERENCE_ALIASES else str(reference)


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
