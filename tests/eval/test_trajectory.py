"""Matched-KL interpolation along trajectories and seed-paired intervals, against direct
computations."""

import numpy as np
import pytest

from lsc.eval import decision, trajectory


def test_interpolation_at_the_first_crossing():
    kl = [0.0, 1.0, 3.0, 2.0, 5.0]
    v = np.array([[0.5, 0.4], [0.6, 0.5], [0.8, 0.9], [0.7, 0.6], [1.0, 1.0]])
    got = trajectory.at_kl(kl, v, [0.0, 0.5, 2.0, 2.5, 4.0, 5.0, 6.0])
    # 0.5: halfway along segment 0; 2.0 and 2.5: first reached on segment 1 (1 -> 3), not on the
    # later dip (3 -> 2); 4.0: segment 3 (2 -> 5), a third of the way; 6.0: never.
    want = [v[0], 0.5 * v[0] + 0.5 * v[1], 0.5 * v[1] + 0.5 * v[2], 0.25 * v[1] + 0.75 * v[2],
            (1 / 3) * v[3] + (2 / 3) * v[4], v[4]]
    np.testing.assert_allclose(got[:6], np.array(want), rtol=1e-12)
    assert np.isnan(got[6]).all()
    assert trajectory.crossing(kl, 3.0) == (1, 1.0) and trajectory.crossing(kl, 0.0) == (0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        trajectory.at_kl([0.0, 1.0], np.zeros((3, 2)), [0.5])


def test_paired_differences_against_a_direct_loop():
    rng = np.random.default_rng(0)
    s, p = 3, 7
    grid = [0.5, 1.0, 2.0, 4.0]
    kl_a = [np.array([0.0, 0.8, 1.7, 2.6]) + 0.1 * i for i in range(s)]
    kl_b = [np.array([0.0, 1.1, 2.2, 3.1, 4.5]) for _ in range(s)]
    va = [rng.random((4, p)) for _ in range(s)]
    vb = [rng.random((5, p)) for _ in range(s)]
    out = trajectory.paired_differences(kl_a, va, kl_b, vb, grid)
    # 4.0 is beyond every A trajectory: the points used are 0.5, 1 and 2.
    np.testing.assert_array_equal(out["used"], [True, True, True, False])

    def direct(kl, v, x):
        for i in range(len(kl) - 1):
            if kl[i] <= x <= kl[i + 1]:
                t = (x - kl[i]) / (kl[i + 1] - kl[i])
                return (1 - t) * v[i] + t * v[i + 1]
        raise AssertionError

    for seed in range(s):
        want = np.mean([direct(kl_a[seed], va[seed], x) - direct(kl_b[seed], vb[seed], x)
                        for x in grid[:3]], axis=0)
        np.testing.assert_allclose(out["diffs"][seed], want, rtol=1e-12)
        np.testing.assert_allclose(out["curves_b"][seed, 3],
                                   direct(kl_b[seed], vb[seed], 4.0).mean())
    assert np.isnan(out["curves_a"][:, 3]).all()
    none = trajectory.paired_differences(kl_a, va, kl_b, vb, [9.0])
    assert none["diffs"].shape == (s, 0) and not none["used"].any()


def test_seed_paired_interval_against_the_exact_seed_distribution():
    """Per-prompt differences constant within a seed: each seed's interval is that constant,
    and the pooled interval is the one of the mean of three seeds drawn with replacement from
    {0, 1, 2}: each extreme has probability 1/27 > 2.5%, so the 95% interval is [0, 2]."""
    diffs = np.repeat(np.array([[0.0], [1.0], [2.0]]), 50, axis=1)
    iv = decision.replicated_intervals(diffs, num_resamples=4000, seed=3)
    for r, value in enumerate((0.0, 1.0, 2.0)):
        assert iv["replicates"][r] == {"value": value, "ci_low": value, "ci_high": value}
    assert iv["pooled"]["value"] == 1.0
    assert iv["pooled"]["ci_low"] == 0.0 and iv["pooled"]["ci_high"] == 2.0
    # Seeds that agree give a pooled interval no wider than the prompt bootstrap's.
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.0, 200)
    same = decision.replicated_intervals(np.stack([noise] * 3), num_resamples=2000, seed=0)
    assert same["pooled"]["ci_low"] == pytest.approx(same["replicates"][0]["ci_low"], abs=0.05)


def test_gold_drop_reads_the_peak_and_the_end_on_the_grid():
    kl = [0.0, 1.0, 2.0, 3.0, 4.0]
    gold = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 2.0], [1.0, 0.0], [0.5, 0.5]])
    out = trajectory.gold_drop(kl, gold, [1.0, 2.0, 3.0, 4.0, 5.0], end=4.0)
    assert out["peak_kl"] == 2.0 and out["peak_gold"] == 2.0 and out["end_gold"] == 0.5
    assert out["drop"] == 1.5
    np.testing.assert_allclose(out["per_prompt"], [1.5, 1.5])
    with pytest.raises(ValueError, match="must be a point of the grid"):
        trajectory.gold_drop(kl, gold, [1.0, 2.0], end=1.5)
    with pytest.raises(ValueError, match="does not reach KL 5"):
        trajectory.gold_drop(kl, gold, [1.0, 5.0], end=5.0)
