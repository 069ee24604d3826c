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


# --------------------------------------------------------------------------- bracketed reading

V4 = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 40.0], [2.0, 30.0]])  # values of 4 snapshots


def _read(kl, grid, path, max_gap, values=V4):
    return trajectory.read_at_kl(kl, values[:len(kl)], grid, path=path, max_gap=max_gap)


def test_non_monotone_path_under_each_reading():
    kl = [0.0, 2.82, 11.16, 5.99]
    # first: segment 1 (2.82 -> 11.16), 8.34 nats wide.
    got, ok = _read(kl, [6.0], "first", 9.0)
    t = 3.18 / 8.34
    np.testing.assert_allclose(got[0], [1.0 + 2.0 * t, 20.0 + 20.0 * t], rtol=1e-12)
    assert ok.tolist() == [True]
    got, ok = _read(kl, [6.0], "first", 6.0)
    assert np.isnan(got).all() and ok.tolist() == [False]  # no fall-back to segment 2
    # last: segment 2 (11.16 -> 5.99), 5.17 nats wide, weight (6 - 11.16) / (5.99 - 11.16).
    got, ok = _read(kl, [6.0], "last", 6.0)
    t = 5.16 / 5.17
    np.testing.assert_allclose(got[0], [3.0 - t, 40.0 - 10.0 * t], rtol=1e-12)
    assert ok.tolist() == [True]
    # isotonic: 11.16 and 5.99 pool to 8.575; segment 1 is 2.82 -> 8.575 (5.755 nats).
    got, ok = _read(kl, [6.0], "isotonic", 6.0)
    t = 3.18 / 5.755
    np.testing.assert_allclose(got[0], [1.0 + 2.0 * t, 20.0 + 20.0 * t], rtol=1e-12)
    assert ok.tolist() == [True]
    got, ok = _read(kl, [6.0], "isotonic", 5.0)
    assert np.isnan(got).all() and ok.tolist() == [False]


@pytest.mark.parametrize("path", trajectory.PATHS)
def test_a_point_below_the_first_snapshot_needs_a_narrow_gap(path):
    kl = [0.0, 3.0, 5.0]
    got, ok = _read(kl, [1.0, 6.0], path, 2.0)
    assert np.isnan(got).all() and ok.tolist() == [False, False]
    got, ok = _read(kl, [1.0, 6.0], path, 3.0)  # a gap equal to max_gap brackets
    np.testing.assert_allclose(got[0], [1.0 / 3.0, 10.0 + 10.0 / 3.0], rtol=1e-12)
    assert np.isnan(got[1]).all() and ok.tolist() == [True, False]  # 6: beyond the trajectory


def test_exact_hits_read_the_snapshot_whatever_the_gap():
    kl = [0.0, 3.0, 5.0, 3.0]
    for path in trajectory.PATHS:
        got, ok = _read(kl[:3], [0.0, 3.0, 5.0], path, 0.5)
        np.testing.assert_array_equal(got, V4[:3])
        assert ok.all()
    assert _read(kl, [3.0], "first", 0.5)[0].tolist() == [V4[1].tolist()]
    assert _read(kl, [3.0], "last", 0.5)[0].tolist() == [V4[3].tolist()]
    # isotonic: [0, 3, 4, 4]; 4 is a flat fitted run: its first snapshot is read.
    got, ok = _read(kl, [3.0, 4.0], "isotonic", 0.5)
    np.testing.assert_array_equal(got, V4[[1, 2]])
    assert ok.all()


def test_decreasing_segments():
    kl = [0.0, 1.0, 4.0, 2.0]
    v1, v2, v3 = V4[1], V4[2], V4[3]
    first, _ = _read(kl, [3.0, 2.5], "first", 10.0)
    np.testing.assert_allclose(first, [v1 + (2 / 3) * (v2 - v1), v1 + 0.5 * (v2 - v1)])
    last, _ = _read(kl, [3.0, 2.5], "last", 10.0)
    np.testing.assert_allclose(last, [0.5 * v2 + 0.5 * v3, 0.25 * v2 + 0.75 * v3])
    iso, _ = _read(kl, [3.0, 2.5], "isotonic", 10.0)  # fitted [0, 1, 3, 3]
    np.testing.assert_allclose(iso, [v2, v1 + 0.75 * (v2 - v1)])
    # The decreasing segment is 2 nats wide, the first crossing's 3: only "last" brackets.
    assert _read(kl, [3.0], "first", 2.5)[1].tolist() == [False]
    assert _read(kl, [3.0], "last", 2.5)[1].tolist() == [True]


def test_isotonic_fit_by_hand():
    # 3 > 2: pool to 2.5; then 2 < 2.5: pool (3, 2, 2) to 7/3; 5 > 0: pool to 2.5 >= 7/3.
    np.testing.assert_allclose(trajectory.isotonic_kl([1.0, 3.0, 2.0, 2.0, 5.0, 0.0]),
                               [1.0, 7 / 3, 7 / 3, 7 / 3, 2.5, 2.5], rtol=1e-12)
    np.testing.assert_array_equal(trajectory.isotonic_kl([0.0, 1.0, 1.0, 4.0]),
                                  [0.0, 1.0, 1.0, 4.0])
    np.testing.assert_allclose(trajectory.isotonic_kl([3.0, 2.0, 1.0]), [2.0, 2.0, 2.0])


def test_read_at_kl_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown path"):
        _read([0.0, 1.0], [0.5], "middle", 1.0)
    with pytest.raises(ValueError, match="max_gap"):
        _read([0.0, 1.0], [0.5], "first", -1.0)
    with pytest.raises(ValueError, match="shape"):
        trajectory.read_at_kl([0.0, 1.0], np.zeros((3, 2)), [0.5], path="first", max_gap=1.0)


def test_paired_readings_use_points_bracketed_everywhere():
    rng = np.random.default_rng(0)
    p = 5
    kl_a = [np.array([0.0, 2.0, 4.0, 8.0]), np.array([0.0, 2.0, 5.0, 7.0])]
    kl_b = [np.array([0.0, 3.0, 7.0]), np.array([0.0, 1.0, 3.0, 6.5])]
    va = [rng.random((4, p)) for _ in kl_a]
    vb = [rng.random((len(k), p)) for k in kl_b]
    out = trajectory.paired_readings(kl_a, va, kl_b, vb, [1.0, 6.0, 7.5], path="first",
                                     max_gap=3.5)
    # 1: bracketed everywhere; 6: A and B seed 0 read 4 -> 8 and 3 -> 7 (4 nats); 7.5: beyond
    # B seed 0.
    np.testing.assert_array_equal(out["used"], [True, False, False])
    np.testing.assert_array_equal(out["bracketed_a"], [[True, False, False], [True, True, False]])
    np.testing.assert_array_equal(out["bracketed_b"], [[True, False, False], [True, True, False]])
    a_at_1 = [va[0][0] + 0.5 * (va[0][1] - va[0][0]), va[1][0] + 0.5 * (va[1][1] - va[1][0])]
    b_at_1 = [vb[0][0] + (vb[0][1] - vb[0][0]) / 3.0, vb[1][1]]
    np.testing.assert_allclose(out["diffs"], np.stack(a_at_1) - np.stack(b_at_1), rtol=1e-12)
    # Seed 1 of B reads 6 on its segment 3 -> 6.5, 3 / 3.5 of the way.
    np.testing.assert_allclose(out["curves_b"][1, 1],
                               (vb[1][2] + (3.0 / 3.5) * (vb[1][3] - vb[1][2])).mean())
    assert np.isnan(out["curves_a"][0, 1]) and np.isnan(out["curves_b"][0, 1:]).all()
    none = trajectory.paired_readings(kl_a, va, kl_b, vb, [9.0], path="last", max_gap=3.5)
    assert none["diffs"].shape == (2, 0) and not none["used"].any()


def test_paired_readings_per_seed_use_the_points_both_of_a_seeds_trajectories_bracket():
    rng = np.random.default_rng(1)
    p = 5
    # Seed 0: A jumps 4 -> 8, B 3 -> 7 (over 3.5 nats): both bracket 1 only. Seed 1: A brackets
    # 1 and 6, B 1 and 6. Seed 2: A jumps from pi0 to 9 nats: nothing.
    kl_a = [np.array([0.0, 2.0, 4.0, 8.0]), np.array([0.0, 2.0, 5.0, 7.0]), np.array([0.0, 9.0])]
    kl_b = [np.array([0.0, 3.0, 7.0]), np.array([0.0, 1.0, 3.0, 6.5]), np.array([0.0, 1.0])]
    va = [rng.random((len(k), p)) for k in kl_a]
    vb = [rng.random((len(k), p)) for k in kl_b]
    grid = [1.0, 6.0, 7.5]
    out = trajectory.paired_readings(kl_a, va, kl_b, vb, grid, path="first", max_gap=3.5,
                                     points="per_seed")
    np.testing.assert_array_equal(out["used_by_seed"], [[True, False, False],
                                                        [True, True, False],
                                                        [False, False, False]])
    np.testing.assert_array_equal(out["used"], [True, True, False])

    def interp(kl, v, x):  # numpy's reading of each prompt's line at x
        return np.array([np.interp(x, kl, v[:, j]) for j in range(v.shape[1])])

    want0 = interp(kl_a[0], va[0], 1.0) - interp(kl_b[0], vb[0], 1.0)
    want1 = np.mean([interp(kl_a[1], va[1], x) - interp(kl_b[1], vb[1], x) for x in (1.0, 6.0)],
                    axis=0)
    np.testing.assert_allclose(out["diffs"][0], want0, rtol=1e-12)
    np.testing.assert_allclose(out["diffs"][1], want1, rtol=1e-12)
    assert np.isnan(out["diffs"][2]).all()
    # The common points: 1 is not bracketed in seed 2, so none.
    common = trajectory.paired_readings(kl_a, va, kl_b, vb, grid, path="first", max_gap=3.5)
    assert not common["used"].any() and common["diffs"].shape == (3, 0)
    with pytest.raises(ValueError, match="points"):
        trajectory.paired_readings(kl_a, va, kl_b, vb, grid, path="first", max_gap=3.5,
                                   points="any")
