"""The reward pipeline's stages against numpy references, and its agreement with the utilities."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lsc import config as config_lib
from lsc.align import reward_pipeline as rp
from lsc.align import utility
from lsc.rewards import names

W = (0.3, 1.7)
CLIP = (-0.5, 1.0)
EPS = rp.EPS


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _batch():
    """B=3, k=4, m=2: prompt 1 has a zero-std group on property 0 (its 3 valid values equal),
    prompt 0 a masked sample, and prompt 2 only one valid sample."""
    rng = np.random.default_rng(0)
    r = (rng.normal(size=(3, 4, 2)) * 2).astype(np.float32)
    r[1, :, 0] = 0.1  # zero-std group: the centred mean of 3 rounds, a naive (l - mean) / (std +
    # eps) gives -0.056 there instead of 0
    ref = rng.normal(size=(3, 1, 2)).astype(np.float32)
    mask = np.ones((3, 4), bool)
    mask[0, 2] = False
    mask[1, 3] = False
    mask[2, 1:] = False
    r[0, 2] = np.nan  # a masked sample's value must not leak into any statistic
    return r, ref, mask


def np_transform(name, l, mask):
    """The transforms in float64; masked samples give 0."""
    l = l.astype(np.float64)
    v = mask[..., None]
    if name == "identity":
        t = l
    elif name == "lsc":
        t = np.log(_sig(l))
    elif name == "par":
        t = _sig(l)
    elif name == "clip":
        t = np.clip(l, *CLIP)
    elif name in ("batch_norm", "minmax"):
        t = np.zeros_like(l)
        for i in range(l.shape[-1]):
            x = l[..., i][mask]
            if name == "batch_norm":
                t[..., i] = (l[..., i] - x.mean()) / (x.std() + EPS)  # ddof = 0
            else:
                t[..., i] = (l[..., i] - x.min()) / (x.max() - x.min() + EPS)
    else:  # group_norm
        t = np.zeros_like(l)
        for b in range(l.shape[0]):
            for i in range(l.shape[-1]):
                x = l[b, mask[b], i]
                if len(x) < 2 or np.all(x == x[0]):
                    continue
                t[b, mask[b], i] = (x - x.mean()) / (x.std(ddof=1) + EPS)
    return np.where(v, t, 0.0)


def np_aggregate(name, t):
    return {"sum": lambda: t.sum(-1), "weighted_sum": lambda: (np.asarray(W) * t).sum(-1),
            "sigma_and": lambda: _logit(np.prod(_sig(t), -1)),
            "sigma_or": lambda: _logit(1 - np.prod(1 - _sig(t), -1))}[name]()


def _pipeline(transform, aggregation, center=True):
    return rp.Pipeline(transform, aggregation, center=center,
                       weights=W if aggregation == "weighted_sum" else None,
                       clip=CLIP if transform == "clip" else None)


@pytest.mark.parametrize("transform", rp.TRANSFORMS)
@pytest.mark.parametrize("center", [True, False])
def test_every_transform_matches_numpy(transform, center):
    r, ref, mask = _batch()
    st = rp.apply(_pipeline(transform, "sum", center), r, ref, mask)
    l = r - ref if center else r
    np.testing.assert_allclose(np.asarray(st.logits)[mask], l[mask], rtol=1e-6)
    want = np_transform(transform, l, mask)
    got = np.asarray(st.transformed)
    assert got.shape == (3, 4, 2) and got.dtype == np.float32
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(st.utility), np.where(mask, want.sum(-1), 0.0),
                               rtol=2e-5, atol=2e-5)


def test_group_norm_edge_cases_are_exact_zeros():
    r, ref, mask = _batch()
    for p in (rp.from_method("gdpo"), rp.Pipeline("group_norm", "sum", center=True)):
        t = np.asarray(rp.apply(p, r, ref, mask).transformed)
        assert np.all(t[1, :, 0] == 0.0)       # zero-std group
        assert np.all(t[2] == 0.0)             # one valid sample
        assert np.all(t[0, 2] == 0.0) and np.all(t[1, 3] == 0.0)  # masked samples
        assert np.all(t[1, :3, 1] != 0.0)      # the other property of that prompt is normalised
    # Equal values whose mean rounds (the naive formula gives ~1e-3 here), and k = 1.
    assert np.all(np.asarray(rp.group_normalize(jnp.full((1, 6, 1), 0.01))) == 0.0)
    assert np.all(np.asarray(rp.group_normalize(jnp.ones((2, 1, 3)))) == 0.0)


@pytest.mark.parametrize("aggregation", rp.AGGREGATIONS)
def test_every_aggregation_matches_numpy(aggregation):
    r, ref, mask = _batch()
    for transform in (("identity",) if aggregation in rp.LOGIT_AGGREGATIONS
                      else ("identity", "lsc", "clip", "group_norm")):
        st = rp.apply(_pipeline(transform, aggregation), r, ref, mask)
        want = np_aggregate(aggregation, np_transform(transform, r - ref, mask))
        np.testing.assert_allclose(np.asarray(st.utility), np.where(mask, want, 0.0),
                                   rtol=2e-5, atol=2e-5, err_msg=transform)


def test_gdpo_is_per_reward_group_normalisation_then_sum():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(3, 4, 2)).astype(np.float32) * np.array([1.0, 50.0], np.float32)
    ref = rng.normal(size=(3, 1, 2)).astype(np.float32)
    got = np.asarray(rp.apply(rp.from_method("gdpo"), r, ref).utility)
    x = r.astype(np.float64)
    z = (x - x.mean(1, keepdims=True)) / (x.std(1, ddof=1, keepdims=True) + EPS)
    np.testing.assert_allclose(got, z.sum(-1), rtol=1e-5, atol=1e-5)
    # Each property weighs alike whatever its scale (unlike normalising the summed reward).
    np.testing.assert_allclose(np.asarray(rp.apply(rp.from_method("gdpo"), r).utility), got,
                               rtol=1e-6, atol=1e-6)  # no reference used


def _spec(method, clip=None):
    weights = W if names.is_weighted(method) else None
    return utility.UtilitySpec(method=method, properties=("harmless", "helpful"),
                               references=(utility.ReferenceSpec("quantile"),
                                           utility.ReferenceSpec("none")),
                               weights=weights, clip=clip)


@pytest.mark.parametrize("method", names.UTILITY_METHODS)
def test_from_method_matches_the_existing_utility(method):
    rng = np.random.default_rng(2)
    r = jnp.asarray(rng.normal(size=(3, 4, 2)) * 2, jnp.float32)
    ref = jnp.asarray(rng.normal(size=(3, 1, 2)), jnp.float32)
    spec = _spec(method)
    assert spec.pipeline is None  # the existing path stays the existing code
    p = rp.from_method(method, spec.weights)
    assert p.uses_reference == spec.uses_reference
    got = rp.apply(p, r, ref).utility
    np.testing.assert_allclose(np.asarray(got), np.asarray(utility.utility(spec, r, ref)),
                               rtol=1e-6, atol=1e-7)


def test_from_method_stages():
    expect = {"lsc_sum": ("lsc", "sum", True), "raw": ("identity", "sum", False),
              "lsc": ("lsc", "sum", True), "par": ("par", "sum", True),
              "sigma_or_nocenter": ("identity", "sigma_or", False),
              "lsc_weighted_sum": ("lsc", "weighted_sum", True),
              "gdpo": ("group_norm", "sum", False), "clip+sum": ("clip", "sum", True),
              "batch_norm+sum_nocenter": ("batch_norm", "sum", False),
              "minmax+weighted_sum": ("minmax", "weighted_sum", True),
              "group_norm+sum": ("group_norm", "sum", False)}
    for method, stages in expect.items():
        p = rp.from_method(method, W if names.is_weighted(method) else None,
                           CLIP if method.startswith("clip") else None)
        assert (p.transform, p.aggregation, p.center) == stages, method
    assert names.is_pipeline_method("gdpo") and names.is_pipeline_method("clip+sum")
    assert not names.is_pipeline_method("lsc_sum")
    assert not names.uses_reference("gdpo") and not names.uses_reference("group_norm+sum")
    assert names.uses_reference("clip+sum") and not names.uses_reference("clip+sum_nocenter")
    assert names.is_weighted("minmax+weighted_sum") and not names.is_weighted("gdpo")


def test_invalid_combinations_raise_clearly():
    with pytest.raises(ValueError, match="rewards.method 'bogus' is unknown.*gdpo.*stage string"):
        rp.from_method("bogus")
    with pytest.raises(ValueError, match="unknown.*stage string"):
        rp.from_method("lsc+mean")
    with pytest.raises(ValueError, match="rewards.method 'lsc\\+sigma_and'.*needs transform "
                                         "'identity'"):
        rp.from_method("lsc+sigma_and")
    with pytest.raises(ValueError, match="needs rewards.weights"):
        rp.from_method("minmax+weighted_sum")
    with pytest.raises(ValueError, match="takes no rewards.weights"):
        rp.from_method("gdpo", weights=W)
    with pytest.raises(ValueError, match="needs rewards.clip"):
        rp.from_method("clip+sum")
    with pytest.raises(ValueError, match="rewards.clip is used by transform 'clip' only"):
        rp.from_method("lsc_sum", clip=CLIP)
    with pytest.raises(ValueError, match="low <= high"):
        rp.from_method("clip+sum", clip=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown transform"):
        rp.Pipeline("softmax", "sum")
    r, ref, mask = _batch()
    with pytest.raises(ValueError, match="needs rewards \\[B, k, m\\]"):
        rp.apply(rp.from_method("gdpo"), r[0])
    with pytest.raises(ValueError, match="ambiguous"):
        rp.apply(rp.from_method("lsc_sum"), r, ref[:, 0])
    with pytest.raises(ValueError, match="mask"):
        rp.apply(rp.from_method("gdpo"), r, None, mask[:, :2])
    with pytest.raises(ValueError, match="rewards.weights for 2 properties"):
        rp.apply(rp.from_method("weighted_sum", weights=(1.0,)), r, ref)
    # Elementwise stages take any [..., m].
    assert rp.apply(rp.from_method("clip+sum", clip=CLIP), r[0, 0]).utility.shape == ()


def test_jit_and_metrics():
    r, ref, mask = _batch()
    for method in ("gdpo", "batch_norm+sum", "lsc_sum"):
        p = rp.from_method(method)
        fn = jax.jit(lambda x, p=p: rp.apply(p, x, ref, mask).utility)
        np.testing.assert_allclose(np.asarray(fn(r)), np.asarray(rp.apply(p, r, ref, mask).utility),
                                   rtol=1e-6, atol=1e-6)
    st = rp.apply(rp.from_method("lsc_sum"), r, ref, mask)
    metrics = jax.jit(lambda s: rp.stage_metrics(("harmless", "helpful"), s, ref[:, 0], mask))(st)
    assert set(metrics) == {f"{s}/{p}" for s in ("reward", "transformed", "r_ref")
                            for p in ("harmless", "helpful")}
    np.testing.assert_allclose(float(metrics["reward/helpful"]), r[..., 1][mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["transformed/harmless"]),
                               np.log(_sig(r - ref))[..., 0][mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["r_ref/helpful"]), ref[..., 1].mean(), rtol=1e-5)


def test_utility_spec_and_config_accept_gdpo_and_stage_strings():
    props = {"helpful": {"rm_workdir": "", "reference": {"source": "quantile"}},
             "harmless": {"rm_workdir": "", "reference": {"source": "none"}}}
    spec = utility.spec_from_config(ml_collections.ConfigDict(
        {"method": "gdpo", "weights": (), "properties": props}))
    assert spec.method == "gdpo" and not spec.uses_reference
    assert spec.pipeline == rp.from_method("gdpo")
    r, ref, _ = _batch()
    r = np.nan_to_num(r)
    np.testing.assert_allclose(np.asarray(utility.utility(spec, r, ref)),
                               np.asarray(rp.apply(rp.from_method("gdpo"), r).utility))
    clip_spec = utility.spec_from_config({"method": "clip+sum", "clip": [-0.5, None],
                                          "properties": props})
    assert clip_spec.clip == (-0.5, None) and clip_spec.uses_reference
    np.testing.assert_allclose(np.asarray(utility.utility(clip_spec, r, ref)),
                               np.maximum(r - ref, -0.5).sum(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="needs rewards.clip"):
        utility.spec_from_config({"method": "clip+sum", "properties": props})
    with pytest.raises(ValueError, match="rewards.clip is used by transform 'clip' only"):
        _spec("lsc_sum", clip=CLIP)
    with pytest.raises(ValueError, match="unknown.*gdpo"):
        _spec("gdpo2")
    # Up-front config validation.
    cfg = ml_collections.ConfigDict({"rewards": {"method": "gdpo", "weights": (),
                                                 "clip": (), "properties": props}})
    config_lib.validate(cfg)
    cfg.rewards.method = "clip+sum"
    with pytest.raises(config_lib.ConfigError, match="rewards.method.*rewards.clip"):
        config_lib.validate(cfg)
    cfg.rewards.clip = (-1.0, 2.0)
    config_lib.validate(cfg)
    cfg.rewards.clip = (2.0, -1.0)
    with pytest.raises(config_lib.ConfigError, match="config.rewards.clip"):
        config_lib.validate(cfg)
    cfg.rewards.clip = ()
    cfg.rewards.method = "lsc+sigma_and"
    with pytest.raises(config_lib.ConfigError, match="rewards.method.*identity"):
        config_lib.validate(cfg)
