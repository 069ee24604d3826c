"""The paper's math: reward transforms, aggregations and reference estimators (pure jax.numpy).

Public API (stable; later stages and users depend on these names):

* :func:`lsc` -- ``log sigma(r - r_ref)``.
* :func:`sigma_and`, :func:`sigma_or` -- the note's logical aggregations, numerically stable.
* :func:`quantile_reference` -- per-prompt q-quantile of k sampled rewards, on device.
* :func:`aggregate` -- named aggregations over a trailing axis of properties (:data:`METHODS`).
* :func:`par`, :func:`clip`, :func:`batch_normalize`, :func:`batch_minmax` -- published shapings.
* :mod:`lsc.rewards.names` -- the one vocabulary of utility methods and references (accepted
  aliases such as ``raw`` and ``lsc``, reference sources, the names results and plots use).

Formulas and sources: ``lsc/rewards/README.md``.
"""

from lsc.rewards import names
from lsc.rewards.aggregate import METHODS, WEIGHTED_METHODS, aggregate, check_method
from lsc.rewards.reference import quantile_reference
from lsc.rewards.shaping import batch_minmax, batch_normalize, clip, par
from lsc.rewards.transforms import log_sigma_and, lsc, sigma_and, sigma_or

__all__ = [
    "METHODS",
    "WEIGHTED_METHODS",
    "aggregate",
    "batch_minmax",
    "batch_normalize",
    "check_method",
    "clip",
    "log_sigma_and",
    "lsc",
    "names",
    "par",
    "quantile_reference",
    "sigma_and",
    "sigma_or",
]
