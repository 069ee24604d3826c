"""KL estimators against exact KLs of small distributions; best-of-k against brute force."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from lsc.eval import kl


def _exact_kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def test_estimators_match_exact_kl_of_a_product_distribution():
    rng = np.random.default_rng(0)
    t_len, vocab, n = 3, 4, 20000
    p = rng.dirichlet(np.ones(vocab), size=t_len)  # pi, one categorical per position
    p0 = rng.dirichlet(np.ones(vocab), size=t_len)  # pi0
    exact = sum(_exact_kl(p[t], p0[t]) for t in range(t_len))
    tokens = np.stack([rng.choice(vocab, n, p=p[t]) for t in range(t_len)], axis=1)
    logp = np.log(p[np.arange(t_len), tokens])
    logp0 = np.log(p0[np.arange(t_len), tokens])
    # Two padding slots with garbage values: the mask must exclude them.
    pad = np.full((n, 2), 123.0)
    logp, logp0 = np.concatenate([logp, pad], 1), np.concatenate([logp0, -pad], 1)
    mask = np.concatenate([np.ones((n, t_len), bool), np.zeros((n, 2), bool)], 1)
    for est in ("k1", "k3"):
        e = kl.estimate_kl(logp, logp0, mask, est)
        assert e.n == n and e.estimator == est
        assert abs(e.mean - exact) < 4 * e.se, (est, e, exact)
    np.testing.assert_allclose(kl.sequence_kl(logp, logp0, mask, "k1"),
                               np.sum((logp - logp0)[:, :t_len], axis=1))
    assert np.all(kl.sequence_kl(logp, logp0, mask, "k3") >= 0)


def test_estimators_match_exact_kl_of_an_autoregressive_distribution_with_eos():
    # Token 0 is EOS. Step 1 from a1 (pi) / b1 (pi0); if not EOS, step 2 from a2[y1] / b2[y1].
    rng = np.random.default_rng(1)
    v = 3
    a1, b1 = rng.dirichlet(np.ones(v)), rng.dirichlet(np.ones(v))
    a2, b2 = rng.dirichlet(np.ones(v), size=v), rng.dirichlet(np.ones(v), size=v)
    exact = 0.0
    for y1 in range(v):
        if y1 == 0:
            exact += a1[0] * np.log(a1[0] / b1[0])
            continue
        for y2 in range(v):
            pa, pb = a1[y1] * a2[y1, y2], b1[y1] * b2[y1, y2]
            exact += pa * np.log(pa / pb)
    n = 30000
    y1 = rng.choice(v, n, p=a1)
    y2 = np.array([rng.choice(v, p=a2[t]) for t in y1])
    mask = np.stack([np.ones(n, bool), y1 != 0], 1)
    logp = np.stack([np.log(a1[y1]), np.where(mask[:, 1], np.log(a2[y1, y2]), 0.0)], 1)
    logp0 = np.stack([np.log(b1[y1]), np.where(mask[:, 1], np.log(b2[y1, y2]), 0.0)], 1)
    for est in ("k1", "k3"):
        e = kl.estimate_kl(logp, logp0, mask, est)
        assert abs(e.mean - exact) < 4 * e.se, (est, e, exact)


def test_sample_output_shapes_and_errors():
    rng = np.random.default_rng(2)
    lp, lp0 = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))
    mask = rng.random((2, 3, 5)) < 0.7
    out = SimpleNamespace(logprobs=lp, mask=mask)
    e = kl.estimate_kl_from_samples(out, lp0, "k3")
    assert e.n == 6
    assert e.to_dict()["estimator"] == "k3"
    with pytest.raises(ValueError, match="same shape"):
        kl.estimate_kl(lp, lp0[:, :, :4], mask)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl.estimate_kl(lp, lp0, mask, "k2")
    bad = lp0.copy()
    bad[mask] = -np.inf
    with pytest.raises(ValueError, match="non-finite"):
        kl.estimate_kl(lp, bad, mask)


def _brute_force_best_of_k(p, u, k):
    """Distribution of the chosen atom by enumerating every k-tuple of draws (first max wins)."""
    n = len(p)
    q = np.zeros(n)
    for draws in itertools.product(range(n), repeat=k):
        prob = np.prod([p[d] for d in draws])
        best = max(range(k), key=lambda i: (u[draws[i]], -i))
        q[draws[best]] += prob
    return q


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_best_of_k_distribution_matches_brute_force(k):
    rng = np.random.default_rng(k)
    p = rng.dirichlet(np.ones(4))
    u = rng.normal(size=4)  # distinct utilities
    q = kl.best_of_k_distribution(p, u, k)
    np.testing.assert_allclose(q, _brute_force_best_of_k(p, u, k), atol=1e-12)
    brute_kl = kl.kl_divergence(_brute_force_best_of_k(p, u, k), p)
    assert kl.best_of_k_kl_exact(p, u, k) == pytest.approx(brute_kl, abs=1e-12)
    assert brute_kl <= kl.best_of_k_analytic(k) + 1e-12
    # Ties: two atoms share a utility level.
    u_tied = np.array([0.0, 1.0, 1.0, 2.0])
    np.testing.assert_allclose(kl.best_of_k_distribution(p, u_tied, k),
                               _brute_force_best_of_k(p, u_tied, k), atol=1e-12)


def test_analytic_value_is_the_continuous_limit():
    assert kl.best_of_k_analytic(1) == 0.0
    assert kl.best_of_k_analytic(4) == pytest.approx(np.log(4) - 0.75)
    n = 20000
    p = np.full(n, 1.0 / n)
    u = np.random.default_rng(0).permutation(n).astype(float)
    for k in (2, 4, 16, 64):
        exact = kl.best_of_k_kl_exact(p, u, k)
        assert exact <= kl.best_of_k_analytic(k)
        assert exact == pytest.approx(kl.best_of_k_analytic(k), abs=2e-3)
    # The bound holds for arbitrary discrete distributions, with or without ties.
    rng = np.random.default_rng(3)
    for _ in range(50):
        m = int(rng.integers(2, 8))
        p = rng.dirichlet(np.ones(m) * 0.5)
        u = rng.integers(0, 4, m).astype(float)
        k = int(rng.integers(1, 30))
        assert kl.best_of_k_kl_exact(p, u, k) <= kl.best_of_k_analytic(k) + 1e-12
    with pytest.raises(ValueError):
        kl.best_of_k_analytic(0)


def test_plugin_estimate_from_base_utilities():
    rng = np.random.default_rng(4)
    k = 4
    cont = kl.best_of_k_kl_plugin(rng.normal(size=(20, 2000)), k)
    assert cont.mean <= kl.best_of_k_analytic(k)
    assert cont.mean == pytest.approx(kl.best_of_k_analytic(k), abs=0.01)
    tied = kl.best_of_k_kl_plugin(rng.integers(0, 3, (20, 2000)).astype(float), k)
    assert tied.mean < cont.mean - 0.05
    valid = np.ones((2, 5), bool)
    valid[0, 3:] = False
    e = kl.best_of_k_kl_plugin(np.arange(10.0).reshape(2, 5), 2, valid=valid)
    three = kl.best_of_k_kl_exact(np.full(3, 1 / 3), np.arange(3.0), 2)
    five = kl.best_of_k_kl_exact(np.full(5, 1 / 5), np.arange(5.0), 2)
    assert e.mean == pytest.approx((three + five) / 2)
    with pytest.raises(ValueError, match="shape"):
        kl.best_of_k_kl_plugin(np.zeros(5), 2)
