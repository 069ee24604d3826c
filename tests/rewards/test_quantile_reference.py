"""quantile_reference against numpy.quantile, with and without masks; its host twin
quantile_numpy against numpy.quantile and against quantile_reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsc.rewards import quantile_reference
from lsc.rewards.reference import quantile_numpy


@pytest.mark.parametrize("q", [0.0, 0.15, 0.5, 0.85, 1.0])
@pytest.mark.parametrize("k", [1, 2, 7, 60])
def test_matches_numpy_quantile(q, k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(4, 3, k)).astype(np.float32)
    got = quantile_reference(jnp.asarray(x), q)
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, np.quantile(x, q, axis=-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_masked_rows_match_numpy_on_valid_entries(q):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 9)).astype(np.float32)
    mask = rng.random(size=(32, 9)) < 0.6
    mask[0] = False  # a row with no valid sample
    mask[1] = [True] + [False] * 8
    got = np.asarray(quantile_reference(jnp.asarray(x), q, mask=jnp.asarray(mask), fill_value=-7.0))
    for i in range(32):
        if mask[i].any():
            np.testing.assert_allclose(got[i], np.quantile(x[i][mask[i]], q), rtol=1e-6, atol=1e-6)
        else:
            assert got[i] == -7.0


def test_per_row_quantiles_broadcast():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2, 11)).astype(np.float32)
    q = np.array([0.5, 0.85], np.float32)  # one quantile per property
    got = quantile_reference(jnp.asarray(x), jnp.asarray(q))
    want = np.stack([np.quantile(x[:, j], q[j], axis=-1) for j in range(2)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_jit_vmap_and_traced_q():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(8, 16)).astype(np.float32))
    mask = jnp.asarray(rng.random((8, 16)) < 0.7)
    eager = quantile_reference(x, 0.85, mask=mask)
    np.testing.assert_allclose(jax.jit(quantile_reference)(x, 0.85, mask), eager, rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(lambda r, m: quantile_reference(r, 0.85, mask=m))(x, mask), eager, rtol=1e-6
    )
    # q as a traced argument: one compilation serves every quantile.
    f = jax.jit(lambda r, q: quantile_reference(r, q))
    for q in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(f(x, q), np.quantile(np.asarray(x), q, axis=-1), rtol=1e-6)
    assert f._cache_size() == 1


def test_dtype_and_gradient():
    x = jnp.asarray([[3.0, 1.0, 2.0, 5.0]], jnp.bfloat16)
    assert quantile_reference(x, 0.5).dtype == jnp.bfloat16
    # d median / d x for [1, 2, 3, 5] at q=0.5: h = 1.5 -> half on 2 and half on 3.
    g = jax.grad(lambda r: quantile_reference(r, 0.5).sum())(jnp.asarray([[3.0, 1.0, 2.0, 5.0]]))
    np.testing.assert_allclose(g, [[0.5, 0.0, 0.5, 0.0]])


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan")])
def test_rejects_quantile_outside_unit_interval(q):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile_reference(jnp.zeros((2, 3)), q)


def test_rejects_empty_sample_axis():
    with pytest.raises(ValueError, match="at least one sample"):
        quantile_reference(jnp.zeros((2, 0)), 0.5)


@pytest.mark.parametrize("q", [0.0, 0.15, 0.5, 0.85, 1.0])
@pytest.mark.parametrize("k", [1, 2, 7, 60])
def test_host_twin_is_numpy_linear_quantile_and_agrees_on_device(q, k):
    rng = np.random.default_rng(k)
    x64 = rng.normal(size=(4, k, 3))
    # float64 kept, any axis: numpy's linear interpolation, bitwise.
    got = quantile_numpy(x64, q, axis=1)
    assert got.dtype == np.float64 and got.shape == (4, 3)
    np.testing.assert_array_equal(got, np.quantile(x64, q, axis=1, method="linear"))
    # The same float32 arrays on device: equal up to float32 rounding.
    x32 = x64.astype(np.float32)
    on_device = quantile_reference(jnp.moveaxis(jnp.asarray(x32), 1, -1), q)
    np.testing.assert_allclose(quantile_numpy(x32, q, axis=1), on_device, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile_numpy(x64, 1.5)
