"""sigma_AND / sigma_OR / LSC against a high-precision (mpmath) evaluation of the note's theorem 2.1."""

import itertools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsc import rewards

F32_EPS = float(np.finfo(np.float32).eps)


def mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def mp_logit(p):
    return mpmath.log(p) - mpmath.log(1 - p)


def _dps(logits) -> int:
    # Enough decimal digits to resolve exp(-|l|) next to 1.
    return int(max(np.max(np.abs(logits)), 1.0) / 2.3) + 60


def ref_sigma_and(logits) -> float:
    """logit(prod_i sigma(l_i)), theorem 2.1 (eq. 2), in high precision."""
    with mpmath.workdps(_dps(logits)):
        p = mpmath.mpf(1)
        for l in logits:
            p *= mp_sigmoid(mpmath.mpf(float(l)))
        return float(mp_logit(p))


def ref_sigma_or(logits) -> float:
    """logit(1 - prod_i (1 - sigma(l_i))), theorem 2.1 (eq. 3), in high precision."""
    with mpmath.workdps(_dps(logits)):
        q = mpmath.mpf(1)
        for l in logits:
            q *= 1 - mp_sigmoid(mpmath.mpf(float(l)))
        return float(mp_logit(1 - q))


def ref_lsc(r, r_ref) -> float:
    with mpmath.workdps(_dps([r, r_ref])):
        return float(mpmath.log(mp_sigmoid(mpmath.mpf(float(r)) - mpmath.mpf(float(r_ref)))))


def _tolerance(logits, ref) -> float:
    # float32 accuracy: a few ulps of the result, and of the inputs' scale where intermediate
    # sums of that size are formed.
    return 8 * F32_EPS * max(1.0, abs(ref)) + 2 * F32_EPS * float(np.max(np.abs(logits)))


EXTREME_CASES = [
    [30.0, 30.0, 30.0],
    [-50.0, -50.0],
    [1e4, 1e4],
    [-1e4, -1e4],
    [1e4, -1e4],
    [-1e4, 1e4, 0.0],
    [1e4, 1e4, 1e4, 1e4],
    [100.0, 200.0],
    [-88.0, -104.0],
    [88.0, 104.0, 17.0],
    [0.0, 0.0],
    [1e-6, -1e-6],
    [20.0, 0.5],
    [9999.0, -3.0, 16.0],
]


def _random_cases(n=60, seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        m = int(rng.integers(2, 6))
        scale = [1.0, 10.0, 100.0, 1e4][i % 4]
        cases.append(np.clip(rng.normal(0, scale, size=m), -1e4, 1e4).astype(np.float32).tolist())
    return cases


def check_against_reference(fn, ref_fn, cases):
    """Returns the cases where ``fn`` is non-finite or off the reference beyond float32 accuracy."""
    bad = []
    for case in cases:
        x = np.asarray(case, np.float32)
        got = float(fn(jnp.asarray(x)))
        want = ref_fn(x)
        if not np.isfinite(got) or abs(got - want) > _tolerance(x, want):
            bad.append((case, got, want))
    return bad


@pytest.mark.parametrize(
    "fn,ref_fn",
    [(rewards.sigma_and, ref_sigma_and), (rewards.sigma_or, ref_sigma_or)],
    ids=["sigma_and", "sigma_or"],
)
def test_theorem_2_1_high_precision(fn, ref_fn):
    cases = EXTREME_CASES + _random_cases()
    assert check_against_reference(fn, ref_fn, cases) == []


def naive_sigma_and(logits):
    p = jnp.prod(jax.nn.sigmoid(logits), axis=-1)
    return jnp.log(p) - jnp.log1p(-p)


def naive_sigma_or(logits):
    q = jnp.prod(1 - jax.nn.sigmoid(logits), axis=-1)
    return jnp.log(1 - q) - jnp.log(q)


def test_the_reference_check_rejects_naive_formulas():
    # The check above must be able to fail: the textbook formulas overflow already at [30, 30, 30].
    assert not np.isfinite(float(naive_sigma_and(jnp.array([30.0, 30.0, 30.0]))))
    assert not np.isfinite(float(naive_sigma_or(jnp.array([-50.0, -50.0]))))
    assert check_against_reference(naive_sigma_and, ref_sigma_and, EXTREME_CASES)
    assert check_against_reference(naive_sigma_or, ref_sigma_or, EXTREME_CASES)


def test_lsc_high_precision():
    rng = np.random.default_rng(1)
    r = np.concatenate([rng.normal(0, 30, 50), [1e4, -1e4, 0.0, 88.0, -104.0]]).astype(np.float32)
    r_ref = np.concatenate([rng.normal(0, 30, 50), [-1e4, 1e4, 0.0, 0.0, 0.0]]).astype(np.float32)
    got = np.asarray(rewards.lsc(jnp.asarray(r), jnp.asarray(r_ref)))
    for g, a, b in zip(got, r, r_ref):
        want = ref_lsc(a, b)
        assert np.isfinite(g)
        assert abs(g - want) <= 8 * F32_EPS * max(1.0, abs(want)) + 2 * F32_EPS * max(abs(a), abs(b))


def test_lsc_broadcasts_reference_over_samples():
    r = jnp.arange(12.0).reshape(3, 4)
    r_ref = jnp.array([[1.0], [5.0], [20.0]])
    got = rewards.lsc(r, r_ref)
    want = -np.log1p(np.exp(-(np.arange(12.0).reshape(3, 4) - np.array([[1.0], [5.0], [20.0]]))))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_single_logit_is_returned_unchanged():
    x = jnp.array([[-1e4], [-3.5], [0.0], [17.25], [1e4]])
    np.testing.assert_array_equal(rewards.sigma_and(x), x[:, 0])
    np.testing.assert_array_equal(rewards.sigma_or(x), x[:, 0])


def test_axis_argument_and_leading_dims():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 5, size=(3, 4, 5)).astype(np.float32)
    for axis in (0, 1, 2, -1):
        got = np.asarray(rewards.sigma_and(jnp.asarray(x), axis=axis))
        moved = np.moveaxis(x, axis, -1)
        assert got.shape == moved.shape[:-1]
        flat = moved.reshape(-1, moved.shape[-1])
        want = np.array([ref_sigma_and(row) for row in flat]).reshape(moved.shape[:-1])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_log_sigma_and_is_the_sum_of_lsc():
    x = np.array([[3.0, -2.0, 0.5], [1e4, -1e4, 7.0]], np.float32)
    want = [
        sum(ref_lsc(v, 0.0) for v in row) for row in x
    ]
    np.testing.assert_allclose(rewards.log_sigma_and(jnp.asarray(x)), want, rtol=1e-6)


# ----- property-based tests -----

finite_logits = st.lists(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32), min_size=2, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(finite_logits, st.integers(0, 5), st.floats(0.0, 50.0, width=32))
def test_monotone_in_every_property(logits, index, delta):
    x = np.asarray(logits, np.float32)
    i = index % len(x)
    y = x.copy()
    y[i] = np.float32(min(float(x[i]) + delta, 1e4))
    for fn in (rewards.sigma_and, rewards.sigma_or):
        a, b = float(fn(jnp.asarray(x))), float(fn(jnp.asarray(y)))
        assert b >= a - _tolerance(x, a)


@settings(max_examples=150, deadline=None)
@given(finite_logits, st.randoms(use_true_random=False))
def test_permutation_invariant_and_de_morgan(logits, rnd):
    x = np.asarray(logits, np.float32)
    perm = list(range(len(x)))
    rnd.shuffle(perm)
    a = float(rewards.sigma_and(jnp.asarray(x)))
    b = float(rewards.sigma_and(jnp.asarray(x[perm])))
    assert abs(a - b) <= _tolerance(x, a)
    o = float(rewards.sigma_or(jnp.asarray(x)))
    assert o == pytest.approx(-float(rewards.sigma_and(-jnp.asarray(x))), abs=_tolerance(x, o))


@settings(max_examples=150, deadline=None)
@given(finite_logits)
def test_and_below_min_or_above_max(logits):
    # P(all) <= min_i P(i) and P(any) >= max_i P(i), and logit is increasing.
    x = np.asarray(logits, np.float32)
    a, o = float(rewards.sigma_and(jnp.asarray(x))), float(rewards.sigma_or(jnp.asarray(x)))
    assert np.isfinite(a) and np.isfinite(o)
    assert a <= float(np.min(x)) + _tolerance(x, a)
    assert o >= float(np.max(x)) - _tolerance(x, o)


# ----- gradients -----


def ref_grad(kind, x, i):
    """d sigma_<kind> / d x_i by mpmath's numerical differentiation in high precision."""
    with mpmath.workdps(_dps(x) + 40):
        def f(t):
            xs = [mpmath.mpf(float(v)) for v in x]
            xs[i] = t
            return mp_logit_prod(kind, xs)

        return float(mpmath.diff(f, mpmath.mpf(float(x[i]))))


def mp_logit_prod(kind, xs):
    if kind == "and":
        p = mpmath.mpf(1)
        for v in xs:
            p *= mp_sigmoid(v)
        return mp_logit(p)
    q = mpmath.mpf(1)
    for v in xs:
        q *= 1 - mp_sigmoid(v)
    return mp_logit(1 - q)


@pytest.mark.parametrize("kind,fn", [("and", rewards.sigma_and), ("or", rewards.sigma_or)])
@pytest.mark.parametrize(
    "x",
    [[0.3, -1.2, 2.0], [30.0, 30.0, 30.0], [-50.0, -50.0], [20.0, 0.5], [15.0, -14.0], [90.0, 95.0]],
)
def test_gradients_match_high_precision(kind, fn, x):
    g = np.asarray(jax.grad(fn)(jnp.asarray(x, jnp.float32)))
    want = [ref_grad(kind, x, i) for i in range(len(x))]
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_gradients_finite_at_the_extremes():
    values = [-1e4, -1e3, -104.0, -88.0, -30.0, -15.0, 0.0, 15.0, 30.0, 88.0, 104.0, 1e3, 1e4]
    cases = jnp.asarray(list(itertools.product(values, repeat=2)), jnp.float32)
    for fn in (rewards.sigma_and, rewards.sigma_or, rewards.log_sigma_and):
        g = jax.vmap(jax.grad(fn))(cases)
        assert bool(jnp.all(jnp.isfinite(g))), fn.__name__
        # Each partial derivative of logit(P(all)) / logit(P(any)) lies in [0, 1].
        if fn is not rewards.log_sigma_and:
            assert bool(jnp.all((g >= -1e-6) & (g <= 1 + 1e-5))), fn.__name__
    g = jax.vmap(jax.grad(lambda r: rewards.lsc(r, 0.0)))(jnp.asarray(values, jnp.float32))
    assert bool(jnp.all(jnp.isfinite(g)))


# ----- jit / vmap / dtypes -----


def test_jit_and_vmap_agree_with_eager():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(0, 40, size=(6, 5, 3)).astype(np.float32))
    for fn in (rewards.sigma_and, rewards.sigma_or, rewards.log_sigma_and):
        eager = fn(x)
        np.testing.assert_allclose(jax.jit(fn)(x), eager, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(jax.vmap(fn)(x), eager, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(jax.vmap(jax.vmap(fn))(x), eager, rtol=1e-6, atol=1e-6)
    ref = x[..., 0]
    np.testing.assert_allclose(jax.jit(rewards.lsc)(x, ref[..., None]), rewards.lsc(x, ref[..., None]))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_preserved_and_computed_in_float32(dtype):
    x = jnp.asarray([[30.0, 30.0, 30.0], [-50.0, -50.0, 2.0]], dtype)
    for fn in (rewards.sigma_and, rewards.sigma_or, rewards.log_sigma_and):
        out = fn(x)
        assert out.dtype == dtype
        want = fn(x.astype(jnp.float32)).astype(dtype)
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(want, np.float32))
    assert rewards.lsc(x, jnp.zeros((), dtype)).dtype == dtype
    # Integer rewards are promoted to float32.
    assert rewards.lsc(jnp.arange(3), 1).dtype == jnp.float32
