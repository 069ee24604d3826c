"""Results entries: the schema of one evaluated run, its validation and loading.

Results entry schema
--------------------
One JSON object per evaluated run (``results.json`` holds a list of them, or an object with the
list under ``"entries"``).
Required fields:

``name``         str, unique, e.g. ``"rlhf/helpful_lsc/seed_0"`` (``<procedure>/<run>/seed_<s>
                 [/kl_<gamma>]``, the run's directories).
``procedure``    ``"base"`` (the base policy judged against independent base samples),
                 ``"best_of_k"`` or ``"rlhf"``.
``method``       the utility that was maximised, in the results' words of
                 :mod:`lsc.rewards.names` (``raw``, ``lsc``, ``raw_sum``, ``lsc_sum``,
                 ``sigma_and``, ``sigma_or``, ``par``, ``*_nocenter``, ...); ``"base"`` for the
                 base entry. ``<m>_nocenter`` is read as method ``<m>`` with reference ``none``.
``reference``    how ``r_ref`` was obtained, in the results' words of
                 :func:`lsc.rewards.names.reference_label`: ``"median"``, ``"p85"`` (quantiles),
                 ``"predictor"``, ``"fixed_response"``, ``"none"`` (no subtraction), or several
                 properties' joined (``"helpful:p85+harmless:fixed_response"``); any other string
                 is allowed; ``None`` means ``"none"`` (:func:`lsc.rewards.names.reference_name`).
``rewards``      list of the properties whose proxy rewards were optimised (``["helpful"]`` for
                 the single-reward runs, ``["harmless", "helpful"]`` for the aggregations);
                 ``[]`` for the base entry.
``k``            int, best-of-k only (the base entry may use 1).
``kl_coef``      float ``gamma``, rlhf only.
``kl``           ``{"mean": float, "se": float, "estimator": str}``: KL(pi || pi0) in nats;
                 estimator ``"k1"`` / ``"k3"`` (``lsc.eval.kl.estimate_kl``), ``"analytic"``
                 (``log k - (k-1)/k``) or ``"best_of_k_plugin"``; the base entry has ``mean = 0``.
``win_rate``     ``{<property>: I, "and": I, "or": I}`` with ``I = {"value", "ci_low",
                 "ci_high"}`` (``lsc.eval.win_rate.win_rates``), judged by the gold judge (or an
                 evaluator RM) against independent base samples.
``proxy_reward`` ``{<property>: float}`` mean proxy reward of the policy's samples.
``gold``         ``{<property>: float}`` mean gold score of the policy's samples.

Optional fields: ``underfitting`` (``lsc.eval.diagnostics.underfitting`` output; ``per_prompt``
may be dropped), ``reward_hacking`` (``diagnostics.reward_hacking`` output for the run's training
curve), ``shortcuts`` (``diagnostics.shortcut_features``), ``seed``, ``num_prompts``, ``seeds``
(``win_rate.across_seeds`` output), ``kl_analytic`` (best-of-k: ``log k - (k-1)/k``, when ``kl``
holds an estimate such as ``lsc.eval.kl.best_of_k_kl_plugin``; the analytic value overstates the
KL when utilities tie: identical responses, discrete judges). Other fields are kept and ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lsc.rewards import names

PROCEDURES = ("base", "best_of_k", "rlhf")


# --------------------------------------------------------------------------- entries


def _fail(entry: Mapping[str, Any], msg: str):
    raise ValueError(f"results entry {entry.get('name', '<unnamed>')!r}: {msg}")


def _check_interval(entry, where: str, iv) -> None:
    if not isinstance(iv, Mapping) or any(k not in iv for k in ("value", "ci_low", "ci_high")):
        _fail(entry, f"{where} must be {{'value', 'ci_low', 'ci_high'}}, got {iv!r}")
    v, lo, hi = (float(iv[k]) for k in ("value", "ci_low", "ci_high"))
    if not all(math.isfinite(x) for x in (v, lo, hi)):
        _fail(entry, f"{where} has non-finite numbers: {iv!r}")
    if not lo <= hi:
        _fail(entry, f"{where} has ci_low > ci_high: {iv!r}")


def validate_entry(entry: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` naming the entry and field when ``entry`` breaks the schema."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"a results entry must be a mapping, got {type(entry).__name__}")
    for field in ("name", "procedure", "method", "kl", "win_rate", "proxy_reward", "gold"):
        if field not in entry:
            _fail(entry, f"missing field {field!r}")
    if "reference" not in entry:
        _fail(entry, "missing field 'reference' (None for no reference)")
    rewards = entry.get("rewards")
    if (not isinstance(rewards, (list, tuple))
            or not all(isinstance(r, str) for r in rewards)):
        _fail(entry, f"rewards must be a list of property names ([] for the base entry), got "
                     f"{rewards!r}")
    if entry["procedure"] not in PROCEDURES:
        _fail(entry, f"procedure must be one of {PROCEDURES}, got {entry['procedure']!r}")
    if entry["procedure"] == "best_of_k":
        k = entry.get("k")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            _fail(entry, f"best_of_k entries need an integer k >= 1, got {k!r}")
    if entry["procedure"] == "rlhf":
        c = entry.get("kl_coef")
        if not isinstance(c, (int, float, np.floating)) or isinstance(c, bool) or not c >= 0:
            _fail(entry, f"rlhf entries need kl_coef >= 0, got {c!r}")
    kl = entry["kl"]
    if not isinstance(kl, Mapping) or "mean" not in kl:
        _fail(entry, f"kl must be {{'mean', 'se', 'estimator'}}, got {kl!r}")
    if not math.isfinite(float(kl["mean"])):
        _fail(entry, f"kl.mean must be finite, got {kl['mean']!r}")
    wr = entry["win_rate"]
    if not isinstance(wr, Mapping) or "and" not in wr or "or" not in wr:
        _fail(entry, "win_rate must hold every property plus 'and' and 'or'")
    for key, iv in wr.items():
        _check_interval(entry, f"win_rate.{key}", iv)
    for field in ("proxy_reward", "gold"):
        if not isinstance(entry[field], Mapping):
            _fail(entry, f"{field} must map property -> mean score")


def validate_entries(entries: Sequence[Mapping[str, Any]]) -> None:
    """:func:`validate_entry` for each entry, and unique names."""
    seen = set()
    for e in entries:
        validate_entry(e)
        if e["name"] in seen:
            _fail(e, "duplicate name")
        seen.add(e["name"])


def normalized(entry: Mapping[str, Any]) -> Tuple[str, str]:
    """``(method, reference)`` of an entry, with ``*_nocenter`` and empty references read as
    reference ``"none"`` (:func:`lsc.rewards.names.split_nocenter`)."""
    return names.split_nocenter(entry["method"], entry.get("reference"))


def label(entry: Mapping[str, Any]) -> str:
    """``<method>`` or ``<method>_<reference>`` (the note's run names)."""
    return names.run_label(*normalized(entry))


def make_entry(name: str, procedure: str, method: str, reference: Optional[str],
               rewards: Sequence[str], kl: Mapping[str, Any], win_rate: Mapping[str, Any],
               proxy_reward: Mapping[str, float], gold: Mapping[str, float], *,
               k: Optional[int] = None, kl_coef: Optional[float] = None,
               **extra: Any) -> Dict[str, Any]:
    """Builds and validates one results entry (module docstring); ``extra`` fields are kept."""
    entry: Dict[str, Any] = {
        "name": name, "procedure": procedure, "method": method, "reference": reference,
        "rewards": list(rewards), "kl": dict(kl), "win_rate": {k_: dict(v) for k_, v in
                                                               win_rate.items()},
        "proxy_reward": {p: float(v) for p, v in proxy_reward.items()},
        "gold": {p: float(v) for p, v in gold.items()},
    }
    if k is not None:
        entry["k"] = int(k)
    if kl_coef is not None:
        entry["kl_coef"] = float(kl_coef)
    entry.update(extra)
    validate_entry(entry)
    return entry


def load_entries(path: str) -> List[Dict[str, Any]]:
    """Entries from a JSON file holding a list of entries or ``{"entries": [...]}``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    entries = data.get("entries") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries or {{'entries': [...]}}")
    validate_entries(entries)
    return entries
