"""aggregate() and the shapings against numpy formulas written out independently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsc import rewards


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_logit(p):
    return np.log(p) - np.log1p(-p)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 2, size=(4, 6, 2))  # [prompts, k samples, properties]
    r_ref = rng.normal(0, 2, size=(4, 1, 2))  # one reference per prompt and property
    w = np.array([0.7, 0.3])
    return r, r_ref, w


def expected(method, r, r_ref, w):
    base = method.removesuffix("_nocenter")
    l = r if method.endswith("_nocenter") else r - r_ref
    return {
        "sum": lambda: l.sum(-1),
        "weighted_sum": lambda: (l * w).sum(-1),
        "lsc_sum": lambda: np_log_sigmoid(l).sum(-1),
        "lsc_weighted_sum": lambda: (np_log_sigmoid(l) * w).sum(-1),
        "sigma_and": lambda: np_logit(np.prod(np_sigmoid(l), -1)),
        "sigma_or": lambda: np_logit(1 - np.prod(1 - np_sigmoid(l), -1)),
    }[base]()


@pytest.mark.parametrize("method", rewards.METHODS)
def test_every_method_matches_its_formula(method, batch):
    r, r_ref, w = batch
    weights = w if rewards.check_method(method) in rewards.WEIGHTED_METHODS else None
    got = rewards.aggregate(method, jnp.asarray(r, jnp.float32), jnp.asarray(r_ref, jnp.float32), weights)
    assert got.shape == (4, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected(method, r, r_ref, w), rtol=2e-5, atol=2e-5)


def test_jit_and_bf16():
    r = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5, 2)), jnp.bfloat16)
    f = jax.jit(lambda x: rewards.aggregate("sigma_or", x, jnp.zeros((3, 1, 2))))
    out = f(r)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32),
        np.asarray(rewards.aggregate("sigma_or", r.astype(jnp.float32)).astype(jnp.bfloat16), np.float32),
    )


def test_unknown_method_lists_known_ones():
    with pytest.raises(ValueError) as e:
        rewards.aggregate("product", jnp.zeros((2, 2)))
    for name in ("sum", "lsc_sum", "sigma_and", "sigma_or", "sigma_and_nocenter"):
        assert name in str(e.value)


def test_weights_required_exactly_by_weighted_methods():
    with pytest.raises(ValueError, match="needs weights"):
        rewards.aggregate("weighted_sum", jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="takes no weights"):
        rewards.aggregate("sigma_and", jnp.zeros((2, 2)), weights=jnp.ones(2))


def test_lsc_sum_and_sigma_and_rank_samples_alike(batch):
    r, r_ref, _ = batch
    a = np.asarray(rewards.aggregate("lsc_sum", jnp.asarray(r), jnp.asarray(r_ref)))
    b = np.asarray(rewards.aggregate("sigma_and", jnp.asarray(r), jnp.asarray(r_ref)))
    np.testing.assert_array_equal(np.argsort(a, -1), np.argsort(b, -1))


# ----- shapings -----


def test_par_is_mean_probability_of_beating_references():
    rng = np.random.default_rng(2)
    r = rng.normal(size=(5,))
    refs = rng.normal(size=(5, 4))
    want = np_sigmoid(r[:, None] - refs).mean(-1)
    np.testing.assert_allclose(rewards.par(jnp.asarray(r), jnp.asarray(refs)), want, rtol=1e-6)
    mask = np.array([[True, False, True, True]] * 5)
    want_m = np.array([np_sigmoid(r[i] - refs[i][mask[i]]).mean() for i in range(5)])
    np.testing.assert_allclose(
        rewards.par(jnp.asarray(r), jnp.asarray(refs), jnp.asarray(mask)), want_m, rtol=1e-6
    )


def test_clip_and_its_bounds_check():
    np.testing.assert_array_equal(rewards.clip(jnp.array([-3.0, 0.5, 9.0]), -1.0, 2.0), [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(rewards.clip(jnp.array([-3.0, 9.0]), high=2.0), [-3.0, 2.0])
    with pytest.raises(ValueError, match="low <= high"):
        rewards.clip(jnp.zeros(2), 1.0, 0.0)


def test_batch_normalize_and_minmax():
    rng = np.random.default_rng(3)
    r = rng.normal(3, 2, size=(4, 8))
    np.testing.assert_allclose(
        rewards.batch_normalize(jnp.asarray(r, jnp.float32)), (r - r.mean()) / (r.std() + 1e-6), rtol=1e-5, atol=1e-6
    )
    mask = rng.random((4, 8)) < 0.5
    v = r[mask]
    np.testing.assert_allclose(
        rewards.batch_normalize(jnp.asarray(r, jnp.float32), jnp.asarray(mask)),
        (r - v.mean()) / (v.std() + 1e-6),
        rtol=1e-5, atol=1e-6,
    )
    np.testing.assert_allclose(
        rewards.batch_minmax(jnp.asarray(r, jnp.float32), jnp.asarray(mask)),
        (r - v.min()) / (v.max() - v.min() + 1e-6),
        rtol=1e-5, atol=1e-6,
    )
