"""Utilities of every aggregation method against float64 numpy formulas and ``lsc.rewards``."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lsc import config as config_lib
from lsc import rewards
from lsc.align import utility


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


W = np.array([0.3, 1.7])


def numpy_utility(method, r, ref):
    """The paper's / note's formulas in float64."""
    base = method[: -len("_nocenter")] if method.endswith("_nocenter") else method
    l = r if (method.endswith("_nocenter") or method == "raw") else r - ref
    return {
        "raw": lambda: r.sum(-1),
        "sum": lambda: l.sum(-1),
        "weighted_sum": lambda: (W * l).sum(-1),
        "lsc": lambda: np.log(_sig(l)).sum(-1),
        "lsc_sum": lambda: np.log(_sig(l)).sum(-1),
        "lsc_weighted_sum": lambda: (W * np.log(_sig(l))).sum(-1),
        "sigma_and": lambda: _logit(np.prod(_sig(l), -1)),
        "sigma_or": lambda: _logit(1 - np.prod(1 - _sig(l), -1)),
        "par": lambda: _sig(l).sum(-1),
    }[base]()


def _spec(method):
    base = method[: -len("_nocenter")] if method.endswith("_nocenter") else method
    weights = tuple(W) if base in rewards.WEIGHTED_METHODS else None
    return utility.UtilitySpec(method=method, properties=("helpful", "harmless"),
                               references=(utility.ReferenceSpec("quantile"),
                                           utility.ReferenceSpec("none")), weights=weights)


@pytest.mark.parametrize("method", utility.METHODS)
def test_every_method_matches_formula_and_lsc_rewards(method):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 4, 2)) * 2
    ref = rng.normal(size=(3, 1, 2))
    spec = _spec(method)
    got = np.asarray(utility.utility(spec, jnp.asarray(r, jnp.float32),
                                     jnp.asarray(ref, jnp.float32)), np.float64)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, numpy_utility(method, r, ref), rtol=2e-5, atol=2e-5)
    # And the same numbers as calling lsc.rewards directly.
    rf, reff = jnp.asarray(r, jnp.float32), jnp.asarray(ref, jnp.float32)
    if method in rewards.METHODS:
        w = None if spec.weights is None else jnp.asarray(W, jnp.float32)
        direct = rewards.aggregate(method, rf, reff, w)
    elif method == "raw":
        direct = jnp.sum(rf, -1)
    elif method == "lsc":
        direct = jnp.sum(rewards.lsc(rf, reff), -1)
    else:
        direct = jnp.sum(rewards.par(rf, jnp.broadcast_to(reff, rf.shape)[..., None]), -1)
    np.testing.assert_allclose(got, np.asarray(direct), rtol=1e-6, atol=1e-6)


def test_spec_from_config_and_errors():
    cfg = ml_collections.ConfigDict({
        "method": "lsc_sum", "weights": (),
        "properties": {
            "helpful": {"rm_workdir": "", "reference": {"source": "quantile", "quantile": 0.85,
                                                        "num_samples": 8}},
            "harmless": {"rm_workdir": "", "reference": {"source": "fixed_response",
                                                         "response": "i am sorry"}}}})
    spec = utility.spec_from_config(cfg)
    assert spec.properties == ("harmless", "helpful")  # sorted by name
    assert spec.references[1].quantile == 0.85 and spec.references[0].source == "fixed_response"
    assert spec.weights is None and spec.uses_reference
    bad = cfg.to_dict()
    bad["properties"]["helpful"]["reference"]["quantile"] = 1.5
    with pytest.raises(ValueError, match="properties.helpful.reference.quantile"):
        utility.spec_from_config(bad)
    with pytest.raises(ValueError, match="needs rewards.weights"):
        utility.UtilitySpec("weighted_sum", ("a",), (utility.ReferenceSpec(),))
    with pytest.raises(ValueError, match="unknown"):
        utility.UtilitySpec("bogus", ("a",), (utility.ReferenceSpec(),))
    with pytest.raises(ValueError, match="end in 2 properties"):
        utility.utility(spec, jnp.zeros((3, 1)))


def test_config_rules_accept_utility_methods():
    cfg = ml_collections.ConfigDict({"rewards": {"method": "raw", "weights": ()}})
    config_lib.validate(cfg)
    cfg.rewards.method = "nonsense"
    with pytest.raises(config_lib.ConfigError, match="rewards.method"):
        config_lib.validate(cfg)
    bad = ml_collections.ConfigDict({"rl": {"algorithm": "a2c", "kl_estimator": "k2",
                                            "kl_coef": (0.1, -1.0)},
                                     "policy": {"workdir": "/no/such/run"}})
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(bad)
    fields = {f for f, _ in info.value.errors}
    assert fields == {"rl.algorithm", "rl.kl_estimator", "rl.kl_coef", "policy.workdir"}
