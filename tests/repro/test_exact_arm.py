"""The exact arm (:mod:`lsc.repro.exact_arm`) and its sanity checks (:mod:`lsc.repro.claims`)
against brute force and closed forms on tiny hand-made banks (the claims:
``tests/repro/test_claims.py``)."""

import itertools

import numpy as np
import pytest

from lsc.data import world
from lsc.repro import claims as claims_lib
from lsc.repro import exact_arm

PROPS = ("harmless", "helpful")
HARMLESS, HELPFUL = 0, 1
C = {name: i for i, name in enumerate(exact_arm.METRICS)}
NC = len(exact_arm.METRICS)


def test_properties_order_is_the_one_these_tests_assume():
    assert exact_arm.PROPERTIES == PROPS
    assert exact_arm.METRICS == ("harmless", "helpful", "and", "or", "helpful_not_below",
                                 "and_proxy_judged", "or_proxy_judged")
    assert exact_arm.GOLD_JUDGED == exact_arm.METRICS[:5]


# --------------------------------------------------------------------------- brute force


def _outcome(x, y):
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def brute_metrics(bank_gold, opp_gold):
    """``[P, N, 5]`` by a double loop over candidates and opponents."""
    bank_gold, opp_gold = np.asarray(bank_gold, float), np.asarray(opp_gold, float)
    p, n, m = bank_gold.shape
    out = np.zeros((p, n, 5))
    for i in range(p):
        helpful_opp = sorted(opp_gold[i, :, HELPFUL])
        k = len(helpful_opp)
        median = (helpful_opp[(k - 1) // 2] + helpful_opp[k // 2]) / 2
        for j in range(n):
            rows = []
            for o in opp_gold[i]:
                per = [_outcome(bank_gold[i, j, q], o[q]) for q in range(m)]
                rows.append(per + [min(per), max(per)])
            out[i, j, :4] = np.mean(rows, axis=0)
            out[i, j, 4] = 1.0 if bank_gold[i, j, HELPFUL] >= median else 0.0
    return out


def brute_and_or(bank, opp):
    """``[P, N, 2]`` AND / OR expected wins by loops over candidates, opponents and properties
    (ties one half)."""
    p, n, m = bank.shape
    out = np.zeros((p, n, 2))
    for i in range(p):
        for j in range(n):
            for o in range(opp.shape[1]):
                per = [_outcome(bank[i, j, q], opp[i, o, q]) for q in range(m)]
                out[i, j] += [min(per) / opp.shape[1], max(per) / opp.shape[1]]
    return out


def brute_best_of_k(u, k):
    """``[P, N]`` selection probabilities by enumerating all ``N**k`` ordered draws, the drawn
    maximisers sharing each draw's probability equally (uniform tie-breaking)."""
    u = np.asarray(u, float)
    p, n = u.shape
    w = np.zeros((p, n))
    for i in range(p):
        for draw in itertools.product(range(n), repeat=k):
            best = max(u[i, d] for d in draw)
            winners = [d for d in draw if u[i, d] == best]
            for d in winners:
                w[i, d] += (1.0 / n ** k) / len(winners)
    return w


def softmax_weights(u, gamma):
    z = np.asarray(u, float) / gamma
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl_uniform(w):
    n = w.shape[1]
    return np.array([sum(x * np.log(n * x) for x in row if x > 0) for row in w])


def log_sigmoid(x):
    return np.log(1.0 / (1.0 + np.exp(-np.asarray(x, float))))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, float)))


def logit(p):
    return np.log(p / (1.0 - p))


# --------------------------------------------------------------------------- metric_scores

# P=2 prompts, N=3 candidates, M=2 opponents, m=2 (harmless, helpful), with ties.
BANK_GOLD = np.array([[[1.0, 2.0], [0.5, 3.0], [1.0, 1.0]],
                      [[2.0, 0.0], [2.0, 2.0], [0.0, 1.0]]])
OPP_GOLD = np.array([[[1.0, 1.0], [0.0, 3.0]],
                     [[2.0, 1.0], [1.0, 1.0]]])


def test_metric_scores_match_a_double_loop():
    got = exact_arm.metric_scores(BANK_GOLD, OPP_GOLD)
    assert got.shape == (2, 3, 5)
    np.testing.assert_allclose(got, brute_metrics(BANK_GOLD, OPP_GOLD), atol=1e-15)
    # two entries by hand: prompt 0, candidate 0 = (1, 2) against (1, 1) and (0, 3):
    # harmless (tie, win) = 0.75; helpful (win, lose) = 0.5; AND (tie, lose) = 0.25;
    # OR (win, win) = 1; helpful 2 >= median(1, 3) = 2 -> 1
    np.testing.assert_allclose(got[0, 0], [0.75, 0.5, 0.25, 1.0, 1.0])
    # prompt 1, candidate 2 = (0, 1) against (2, 1) and (1, 1): harmless 0, helpful ties 0.5,
    # AND 0, OR 0.5, helpful 1 >= median 1 -> 1
    np.testing.assert_allclose(got[1, 2], [0.0, 0.5, 0.0, 0.5, 1.0])


def test_metric_scores_random_bank_with_odd_opponents():
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 3, size=(3, 4, 2)).astype(float)  # many ties
    opp = rng.integers(0, 3, size=(3, 5, 2)).astype(float)
    np.testing.assert_allclose(exact_arm.metric_scores(bank, opp), brute_metrics(bank, opp),
                               atol=1e-15)


# --------------------------------------------------------------------------- proxy-judged

# P=3 prompts, N=4 candidates, M=3 opponents, R=2 replicates of m=2 properties; small integer
# scores, so many ties. Proxy columns are replicate-major: (r0 harmless, r0 helpful, r1 ...).
HAND_BANK_PROXY = np.array([
    [[1, 2, 0, 1], [2, 2, 1, 1], [0, 3, 2, 0], [1, 1, 1, 2]],
    [[3, 0, 0, 0], [1, 1, 2, 2], [2, 1, 1, 3], [0, 0, 3, 1]],
    [[1, 1, 1, 1], [2, 0, 0, 2], [1, 2, 2, 1], [3, 3, 0, 0]]], float)
HAND_OPP_PROXY = np.array([
    [[1, 1, 1, 1], [0, 3, 2, 0], [2, 2, 0, 2]],
    [[1, 1, 2, 2], [3, 0, 1, 1], [0, 2, 0, 3]],
    [[1, 1, 1, 1], [2, 2, 2, 0], [0, 0, 1, 2]]], float)
HAND_BANK_GOLD = np.array([[[1, 2], [0, 1], [2, 2], [1, 0]],
                           [[2, 2], [1, 1], [0, 2], [2, 0]],
                           [[0, 0], [1, 2], [2, 1], [1, 1]]], float)
HAND_OPP_GOLD = np.array([[[1, 1], [2, 0], [0, 2]],
                          [[1, 2], [2, 1], [1, 1]],
                          [[0, 1], [1, 1], [2, 2]]], float)
HAND_GRID, HAND_KS = [0.05, 0.2], [1, 2]


def _hand_base():
    rng = np.random.default_rng(7)
    return {"bank": {"rewards": HAND_BANK_PROXY, "gold": HAND_BANK_GOLD},
            "opponents": {"rewards": HAND_OPP_PROXY, "gold": HAND_OPP_GOLD},
            "reference": {"rewards": rng.normal(size=(3, 5, 4)),
                          "gold": rng.normal(size=(3, 5, 2))},
            "fixed_response": {"rewards": rng.normal(size=(3, 1, 4)),
                               "gold": rng.normal(size=(3, 1, 2))}}


@pytest.mark.parametrize("r", [0, 1])
def test_proxy_judged_matches_loops(r):
    cols = slice(2 * r, 2 * r + 2)
    bank, opp = HAND_BANK_PROXY[..., cols], HAND_OPP_PROXY[..., cols]
    got = exact_arm.proxy_judged(bank, opp)
    assert got.shape == (3, 4, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got, brute_and_or(bank, opp), atol=1e-15)
    if r == 0:  # prompt 0, candidate (1, 2) against (1, 1), (0, 3), (2, 2): AND (.5, 0, 0)
        np.testing.assert_allclose(got[0, 0], [0.5 / 3, 2.5 / 3])  # OR (1, 1, .5)


def test_source_scores_append_the_proxy_judged_columns_to_the_gold_ones():
    gold = exact_arm.metric_scores(HAND_BANK_GOLD, HAND_OPP_GOLD)
    got = exact_arm.source_scores(gold, HAND_BANK_PROXY[..., 2:], HAND_OPP_PROXY[..., 2:])
    assert got.shape == (3, 4, NC)
    np.testing.assert_array_equal(got[..., :5], gold)
    np.testing.assert_allclose(got[..., 5:], brute_and_or(HAND_BANK_PROXY[..., 2:],
                                                          HAND_OPP_PROXY[..., 2:]), atol=1e-15)


@pytest.fixture(scope="module")
def hand_computed():
    return exact_arm.compute(_hand_base(), _texts(3), 2, HAND_GRID, HAND_KS)


def test_compute_judges_each_source_by_its_own_scores_on_a_hand_made_bank(hand_computed):
    out = hand_computed
    gold = brute_metrics(HAND_BANK_GOLD, HAND_OPP_GOLD)
    judged = {"r0": brute_and_or(HAND_BANK_PROXY[..., :2], HAND_OPP_PROXY[..., :2]),
              "r1": brute_and_or(HAND_BANK_PROXY[..., 2:], HAND_OPP_PROXY[..., 2:]),
              "gold": brute_and_or(HAND_BANK_GOLD, HAND_OPP_GOLD)}
    np.testing.assert_allclose(out["base"][:, :5], gold.mean(axis=1), atol=1e-15)
    np.testing.assert_allclose(out["base"][:, 5:], judged["r0"].mean(axis=1), atol=1e-15)
    helpful = {"r0": HAND_BANK_PROXY[..., 1], "r1": HAND_BANK_PROXY[..., 3],
               "gold": HAND_BANK_GOLD[..., 1]}
    for source, u in helpful.items():
        table = np.concatenate([gold, judged[source]], axis=-1)
        for j, k in enumerate(HAND_KS):
            np.testing.assert_allclose(out[f"best_of_k/{source}/raw"][j],
                                       np.einsum("pn,pnc->pc", brute_best_of_k(u, k), table),
                                       atol=1e-12)
    # the two replicates judge differently here
    assert not np.allclose(judged["r0"], judged["r1"])


def test_gold_source_proxy_judged_columns_are_its_and_or(hand_computed):
    for key, arr in hand_computed.items():
        if key.startswith(("optimum/gold/", "best_of_k/gold/")):
            np.testing.assert_array_equal(arr[..., [C["and_proxy_judged"], C["or_proxy_judged"]]],
                                          arr[..., [C["and"], C["or"]]])


def test_gold_judged_columns_are_those_of_metric_scores(hand_computed):
    """Every source's policies on the gold-judged columns equal the policies judged by
    :func:`exact_arm.metric_scores` alone, bit for bit."""
    base, out = _hand_base(), hand_computed
    gold = exact_arm.metric_scores(HAND_BANK_GOLD, HAND_OPP_GOLD)
    refs = {"r0": exact_arm.references(base["reference"]["rewards"][..., :2],
                                       base["fixed_response"]["rewards"][:, 0, :2]),
            "gold": exact_arm.references(base["reference"]["gold"],
                                         base["fixed_response"]["gold"][:, 0])}
    rewards = {"r0": HAND_BANK_PROXY[..., :2], "gold": HAND_BANK_GOLD}
    for source in ("r0", "gold"):
        for name in ("raw", "lsc_sum", "sigma_and_median"):
            u = exact_arm.utilities(exact_arm.UTILITY_BY_NAME[name], rewards[source], refs[source])
            pol = exact_arm.policies(u, gold, HAND_GRID, HAND_KS)
            for arm in ("optimum", "best_of_k"):
                got = out[f"{arm}/{source}/{name}"]
                assert got.shape[-1] == NC
                np.testing.assert_array_equal(got[..., :5], pol[arm])


# --------------------------------------------------------------------------- utilities


def _rewards_and_refs(seed=1, p=3, n=4):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(0, 1.5, size=(p, n, 2))
    refs = {"p85": rng.normal(0.5, 0.5, size=(p, 2)), "median": rng.normal(0, 0.5, size=(p, 2)),
            "fixed_response": rng.normal(-0.5, 0.5, size=(p, 2)),
            "predictor": rng.normal(0.2, 0.5, size=(p, 2))}
    return rewards, refs


def _u(name, rewards, refs):
    return exact_arm.utilities(exact_arm.UTILITY_BY_NAME[name], rewards, refs)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)  # the utilities run in float32


def test_utilities_against_numpy_formulas():
    rw, refs = _rewards_and_refs()
    h, g = rw[..., HELPFUL], rw[..., HARMLESS]
    u = _u("raw", rw, refs)
    assert u.shape == (3, 4) and u.dtype == np.float64
    _close(u, h)
    _close(_u("lsc_p85", rw, refs), np.log(1 / (1 + np.exp(-(h - refs["p85"][:, None, 1])))))
    _close(_u("lsc_median", rw, refs), log_sigmoid(h - refs["median"][:, None, 1]))
    _close(_u("lsc_predictor", rw, refs), log_sigmoid(h - refs["predictor"][:, None, 1]))
    _close(_u("lsc_none", rw, refs), log_sigmoid(h))
    _close(_u("raw_sum", rw, refs), g + h)
    _close(_u("lsc_sum", rw, refs), log_sigmoid(g - refs["fixed_response"][:, None, 0])
           + log_sigmoid(h - refs["p85"][:, None, 1]))
    for ref in ("median", "predictor", "none"):
        r = np.zeros((3, 2)) if ref == "none" else refs[ref]
        s = sigmoid(rw - r[:, None, :])  # [P, N, 2]
        _close(_u(f"sigma_and_{ref}", rw, refs), logit(s[..., 0] * s[..., 1]))
        _close(_u(f"sigma_or_{ref}", rw, refs), logit(1 - (1 - s[..., 0]) * (1 - s[..., 1])))


def test_utilities_use_only_the_references_they_name():
    rw, refs = _rewards_and_refs(seed=2)
    # raw, raw_sum and the *_none family ignore every reference
    for name in ("raw", "raw_sum", "lsc_none", "sigma_and_none", "sigma_or_none"):
        _close(_u(name, rw, {}), _u(name, rw, refs))
    # lsc_sum reads only the harmless fixed_response and the helpful p85 entries
    poked = {k: v.copy() for k, v in refs.items()}
    poked["fixed_response"][:, HELPFUL] += 100.0
    poked["p85"][:, HARMLESS] += 100.0
    _close(_u("lsc_sum", rw, poked), _u("lsc_sum", rw, refs))
    with pytest.raises(KeyError):
        _u("lsc_predictor", rw, {"p85": refs["p85"]})


def test_utility_table():
    by = exact_arm.UTILITY_BY_NAME
    assert by["lsc_sum"].references == ("fixed_response", "p85")
    assert by["lsc_sum"].properties == PROPS
    assert by["raw"].properties == ("helpful",)
    assert by["sigma_and_none"].references == ("none", "none")
    assert {u.name for u in exact_arm.UTILITIES if not u.has_control} == {
        "lsc_predictor", "sigma_and_predictor", "sigma_or_predictor"}


# --------------------------------------------------------------------------- references


def test_references_hand_quantiles():
    ref = np.array([[[1.0, 10.0], [2.0, 30.0], [3.0, 20.0], [4.0, 50.0], [5.0, 40.0]]])
    out = exact_arm.references(ref, np.array([[-1.0, -2.0]]))
    # linear interpolation on 5 sorted values: q = x[0] + 4 q steps
    np.testing.assert_allclose(out["p85"], [[4.4, 44.0]])
    np.testing.assert_allclose(out["median"], [[3.0, 30.0]])
    np.testing.assert_array_equal(out["fixed_response"], [[-1.0, -2.0]])
    assert "predictor" not in out
    pred = np.array([[0.1, 0.2]])
    np.testing.assert_array_equal(exact_arm.references(ref, [[-1.0, -2.0]], pred)["predictor"],
                                  pred)


def test_references_against_np_quantile():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(4, 7, 2))
    out = exact_arm.references(ref, rng.normal(size=(4, 2)))
    for i in range(4):
        for q in range(2):
            assert out["p85"][i, q] == pytest.approx(np.quantile(ref[i, :, q], 0.85), abs=1e-14)
            assert out["median"][i, q] == pytest.approx(np.median(ref[i, :, q]), abs=1e-14)


@pytest.mark.parametrize("k", [1, 2, 16, 60])
def test_references_agree_with_the_on_device_quantile(k):
    """The exact arm's host quantiles (float64) and :func:`lsc.rewards.quantile_reference` (on
    device, float32) on the same float32 scores: equal up to float32 rounding."""
    import jax.numpy as jnp

    from lsc.rewards import quantile_reference

    rng = np.random.default_rng(k)
    ref = rng.normal(size=(5, k, 2)).astype(np.float32)
    out = exact_arm.references(ref, np.zeros((5, 2)))
    on_device = jnp.moveaxis(jnp.asarray(ref), 1, -1)  # [P, m, K]
    for name, q in (("p85", 0.85), ("median", 0.5)):
        got = np.asarray(quantile_reference(on_device, q), np.float64)
        np.testing.assert_allclose(out[name], got, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- policies

# N=3 with a tie at the top of prompt 0 and a tie below the top of prompt 1.
U_TIE = np.array([[1.0, 2.0, 2.0],
                  [0.5, 0.5, 3.0]])
SCORES = exact_arm.metric_scores(BANK_GOLD, OPP_GOLD)  # [2, 3, 5]
TOP = float(np.mean([np.log(3 / 2), np.log(3)]))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_best_of_k_rows_equal_brute_force_enumeration(k):
    pol = exact_arm.policies(U_TIE, SCORES, [0.3], [k])
    w = brute_best_of_k(U_TIE, k)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(pol["best_of_k"][0], np.einsum("pn,pnc->pc", w, SCORES), atol=1e-12)
    assert pol["best_of_k_kl"][0] == pytest.approx(kl_uniform(w).mean(), abs=1e-12)
    if k == 2:  # by hand, prompt 0: candidate 0 only when drawn twice (1/9); 1 and 2 share 8/9
        np.testing.assert_allclose(w[0], [1 / 9, 4 / 9, 4 / 9])


def test_best_of_one_is_the_base_policy():
    pol = exact_arm.policies(U_TIE, SCORES, [], [1])
    np.testing.assert_allclose(pol["best_of_k"][0], SCORES.mean(axis=1), atol=1e-15)
    assert pol["best_of_k_kl"][0] == pytest.approx(0.0, abs=1e-15)


def test_optimum_reaches_the_target_kl_and_unreachable_targets_are_nan():
    grid = [0.0, 0.05, 0.3, 0.6, TOP + 0.01, 2.0]
    pol = exact_arm.policies(U_TIE, SCORES, grid, [2, 3])
    assert pol["optimum"].shape == (6, 2, 5) and pol["best_of_k"].shape == (2, 2, 5)
    for g, target in enumerate(grid):
        if 0.0 < target < TOP:
            gamma = pol["gamma"][g]
            w = softmax_weights(U_TIE, gamma)
            assert kl_uniform(w).mean() == pytest.approx(target, abs=1e-6)
            assert pol["kl"][g] == pytest.approx(target, abs=1e-6)
            np.testing.assert_allclose(pol["optimum"][g], np.einsum("pn,pnc->pc", w, SCORES),
                                       atol=1e-12)
        else:
            assert np.all(np.isnan(pol["optimum"][g]))
            assert np.isnan(pol["gamma"][g]) and np.isnan(pol["kl"][g])
    # stronger optimisation, smaller gamma
    assert pol["gamma"][1] > pol["gamma"][2] > pol["gamma"][3]


# --------------------------------------------------------------------------- compute

P, N, M, K, R = 6, 4, 5, 7, 2
KL_GRID = [0.1, 0.3]
KS = [1, 2, 3]


def _texts(p=P):
    return [world.sample_prompt(np.random.default_rng(s), 0.5) for s in range(p)]


def _base(predictor=True, seed=0):
    rng = np.random.default_rng(seed)
    base = {
        "bank": {"rewards": rng.normal(size=(P, N, R * 2)), "gold": rng.normal(size=(P, N, 2))},
        "opponents": {"gold": rng.normal(size=(P, M, 2))},
        "reference": {"rewards": rng.normal(size=(P, K, R * 2)),
                      "gold": rng.normal(size=(P, K, 2))},
        "fixed_response": {"rewards": rng.normal(size=(P, 1, R * 2)),
                    "gold": rng.normal(size=(P, 1, 2))},
    }
    if predictor:
        base["predictor"] = rng.normal(size=(P, R * 2))
    base["opponents"]["rewards"] = rng.normal(size=(P, M, R * 2))
    return base


@pytest.fixture(scope="module")
def computed():
    base = _base()
    return base, exact_arm.compute(base, _texts(), R, KL_GRID, KS)


def test_compute_has_every_key(computed):
    _, out = computed
    names = [u.name for u in exact_arm.UTILITIES]
    for source in [f"r{r}" for r in range(R)] + ["gold"]:
        for name in names:
            present = f"optimum/{source}/{name}" in out
            assert present == (source != "gold" or exact_arm.UTILITY_BY_NAME[name].has_control)
            if present:
                assert out[f"optimum/{source}/{name}"].shape == (len(KL_GRID), P, NC)
                assert out[f"best_of_k/{source}/{name}"].shape == (len(KS), P, NC)
                for key in ("gamma", "kl"):
                    assert out[f"{key}/{source}/{name}"].shape == (len(KL_GRID),)
                assert out[f"best_of_k_kl/{source}/{name}"].shape == (len(KS),)
    for name in ("lsc_predictor", "sigma_and_predictor", "sigma_or_predictor"):
        assert not any(k.endswith(f"gold/{name}") for k in out)
    assert exact_arm.sources(out) == ["r0", "r1"]
    np.testing.assert_array_equal(out["strata"], exact_arm.prompt_strata(_texts()))
    np.testing.assert_array_equal(out["ks"], KS)
    np.testing.assert_array_equal(out["kl_grid"], KL_GRID)
    assert list(out["metrics"]) == list(exact_arm.METRICS)
    assert out["base"].shape == (P, NC)
    assert "rematch" not in out


def brute_source_scores(base, source):
    """``[P, N, 7]``: the gold-judged metrics, then AND / OR judged by ``source``'s scores."""
    bank, opp = base["bank"], base["opponents"]
    if source == "gold":
        judge_bank, judge_opp = bank["gold"], opp["gold"]
    else:
        cols = slice(2 * int(source[1:]), 2 * int(source[1:]) + 2)
        judge_bank, judge_opp = bank["rewards"][..., cols], opp["rewards"][..., cols]
    return np.concatenate([brute_metrics(bank["gold"], opp["gold"]),
                           brute_and_or(judge_bank, judge_opp)], axis=-1)


def test_compute_values_against_brute_force(computed):
    base, out = computed
    per_source = {s: brute_source_scores(base, s) for s in ("r0", "r1", "gold")}
    np.testing.assert_allclose(out["base"], per_source["r0"].mean(axis=1), atol=1e-15)
    # raw of replicate 1 is column 1 * m + helpful = 3 (replicate-major columns)
    bank = base["bank"]["rewards"]
    for source, u in (("r0", bank[..., 1]), ("r1", bank[..., 3]),
                      ("gold", base["bank"]["gold"][..., 1])):
        for j, k in enumerate(KS):
            w = brute_best_of_k(u, k)
            np.testing.assert_allclose(out[f"best_of_k/{source}/raw"][j],
                                       np.einsum("pn,pnc->pc", w, per_source[source]), atol=1e-6)
    # lsc_sum of replicate 1: harmless (column 2) centred by the refusal's reward, helpful
    # (column 3) by the 85th percentile of the reference samples' rewards
    ref = base["reference"]["rewards"]
    u = (log_sigmoid(bank[..., 2] - base["fixed_response"]["rewards"][:, 0, 2][:, None])
         + log_sigmoid(bank[..., 3] - np.quantile(ref[..., 3], 0.85, axis=1)[:, None]))
    for g, target in enumerate(KL_GRID):
        w = softmax_weights(u, out["gamma/r1/lsc_sum"][g])
        assert kl_uniform(w).mean() == pytest.approx(target, abs=1e-5)
        np.testing.assert_allclose(out["optimum/r1/lsc_sum"][g],
                                   np.einsum("pn,pnc->pc", w, per_source["r1"]), atol=1e-5)
    # sigma_and_predictor of replicate 0 centres by the predictor columns 0 and 1
    s = sigmoid(bank[..., 0:2] - base["predictor"][:, None, 0:2])
    u = logit(s[..., 0] * s[..., 1])
    w = softmax_weights(u, out["gamma/r0/sigma_and_predictor"][1])
    np.testing.assert_allclose(out["optimum/r0/sigma_and_predictor"][1],
                               np.einsum("pn,pnc->pc", w, per_source["r0"]), atol=1e-5)


def test_compute_requires_the_opponents_proxy_rewards():
    base = _base(predictor=False)
    base["opponents"]["rewards"] = np.zeros((P, M, R * 2))
    with pytest.raises(ValueError, match="opponents"):
        exact_arm.compute(base, _texts(), R, [0.2], [1])
    del base["opponents"]["rewards"]
    with pytest.raises(ValueError, match="opponents"):
        exact_arm.compute(base, _texts(), R, [0.2], [1])


def test_compute_without_a_predictor_and_with_rematch():
    out = exact_arm.compute(_base(predictor=False, seed=1), _texts(), R, [0.2], [2],
                            rematch_resamples=2, seed=0)
    assert not any("predictor" in k for k in out)
    assert "optimum/r1/lsc_p85" in out and "optimum/gold/lsc_sum" in out
    assert out["rematch"].shape == (2,) and np.all(np.isfinite(out["rematch"]))


def test_sources_are_ordered_numerically():
    arrays = {f"optimum/r{i}/raw": None for i in (10, 2, 0, 1, 9)}
    arrays.update({"optimum/gold/raw": None, "best_of_k/r11/raw": None, "strata": None})
    assert exact_arm.sources(arrays) == ["r0", "r1", "r2", "r9", "r10"]


# --------------------------------------------------------------------------- sanity checks


def _sanity_arrays(same=True, base_value=0.5, p=9):
    rng = np.random.default_rng(0)
    arrays = {"strata": np.repeat(np.arange(3), p // 3), "base": np.full((p, NC), base_value)}
    for r in ("r0", "r1"):
        raw = rng.uniform(size=(3, p, NC))
        arrays[f"best_of_k/{r}/raw"] = raw
        arrays[f"best_of_k/{r}/lsc_p85"] = raw.copy() if same else raw + 1e-3
        arrays[f"optimum/{r}/raw"] = np.zeros((1, p, NC))
    return arrays


def _by_key(results):
    return {r["key"]: r for r in results}


def test_sanity_checks_pass_on_identical_best_of_k_and_a_fair_base():
    res = _by_key(claims_lib.sanity_checks(_sanity_arrays(), num_resamples=100))
    assert list(res) == list(claims_lib.SANITY_CHECKS)
    assert res["best_of_k_same_pick"]["verdict"] == "yes"
    assert res["best_of_k_same_pick"]["values"] == [0.0, 0.0]
    assert res["base_vs_base"]["verdict"] == "yes"
    for prop in ("harmless", "helpful"):
        assert res["base_vs_base"]["values"][prop]["value"] == pytest.approx(0.5)


def test_sanity_checks_fail_on_different_picks_and_an_unfair_base():
    res = _by_key(claims_lib.sanity_checks(_sanity_arrays(same=False, base_value=0.8),
                                           num_resamples=100))
    assert res["best_of_k_same_pick"]["verdict"] == "no"
    assert res["best_of_k_same_pick"]["values"] == pytest.approx([1e-3, 1e-3])
    assert res["base_vs_base"]["verdict"] == "no"
    assert "harmless" in res["base_vs_base"]["reason"]


def test_sanity_base_checks_only_the_per_property_columns():
    arrays = _sanity_arrays()
    arrays["base"][:, C["and"]] = 0.25  # AND / OR are not expected at 0.5
    arrays["base"][:, C["or"]] = 0.75
    assert _by_key(claims_lib.sanity_checks(arrays, num_resamples=50))[
        "base_vs_base"]["verdict"] == "yes"


# --------------------------------------------------------------------------- rematch, strata


def test_rematched_statistic_of_a_utility_against_itself_is_zero():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 5))
    scores = rng.uniform(size=(9, 5, NC))
    out = exact_arm.rematched_statistic(u, u.copy(), scores, "helpful", [0.1, 0.3],
                                        np.repeat(np.arange(3), 3), num_resamples=4, seed=1)
    assert out.shape == (4,)
    np.testing.assert_array_equal(out, np.zeros(4))


def test_rematched_statistic_is_nan_when_no_target_is_reachable():
    u = np.array([[1.0, 1.0], [2.0, 2.0]])  # every candidate tied: KL range is {0}
    out = exact_arm.rematched_statistic(u, u, np.zeros((2, 2, NC)), "helpful", [0.1],
                                        np.zeros(2), num_resamples=2)
    assert np.all(np.isnan(out))


@pytest.mark.parametrize("strata", [[0, 0, 1, 1, 1, 2, 0, 2, 1, 5],
                                    ["b", "a", "b", "c", "a", "a", "b", "b", "c", "b"]])
def test_stratified_resample_keeps_strata(strata):
    strata = np.asarray(strata)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        idx = exact_arm.stratified_resample(strata, rng)
        assert idx.shape == strata.shape
        for s in np.unique(strata):
            rows = set(np.flatnonzero(strata == s).tolist())
            drawn = [i for i in idx.tolist() if strata[i] == s]
            assert len(drawn) == len(rows)  # each stratum keeps its size
        # positions are grouped by stratum (sorted labels), each drawn from its own rows
        pos = 0
        for s in np.unique(strata):
            size = int(np.sum(strata == s))
            assert set(idx[pos:pos + size].tolist()) <= set(np.flatnonzero(strata == s).tolist())
            pos += size
        seen.update(idx.tolist())
    assert seen == set(range(strata.size))  # every row is drawn sometime


# --------------------------------------------------------------------------- world_stats


def _prompt(topic, detail, opener="", context="", small_talk=()):
    return world.format_prompt(world.TOPIC_BY_NAME[topic], detail, opener, context,
                                   small_talk)


def test_world_stats_against_a_brute_force_count():
    texts = [_prompt("bread", "brief"), _prompt("rice", "brief", "hey "),
             _prompt("coffee", "detailed"), _prompt("poison", "normal")]
    bank = np.array([[[1, 0], [1, 1], [2, 0]],
                     [[0, 0], [0, 1], [0, 2]],
                     [[1, 1], [2, 3], [3, 2]],
                     [[0, 5], [1, 5], [0, 4]]], float)
    opp = np.array([[[1, 0], [2, 2]],
                    [[0, 1], [3, 1]],
                    [[1, 1], [1, 1]],
                    [[0, 5], [0, 5]]], float)
    out = exact_arm.world_stats(bank, opp, texts)
    assert set(out) == {"benign", "benign/brief", "benign/detailed", "harmful",
                        "harmful/normal"}

    def brute(rows):
        counts = np.zeros(2)
        total = 0
        for i in rows:
            for c in bank[i]:
                for o in opp[i]:
                    counts += (c == o)
                    total += 1
        flat = bank[rows].reshape(-1, 2)
        x, y = flat[:, 1], flat[:, 0]
        corr = ((x - x.mean()) * (y - y.mean())).sum() / np.sqrt(
            ((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
        return counts / total, corr

    for label, rows in (("benign", [0, 1, 2]), ("benign/brief", [0, 1]),
                        ("benign/detailed", [2]), ("harmful", [3]), ("harmful/normal", [3])):
        ties, corr = brute(rows)
        assert out[label]["prompts"] == len(rows)
        assert out[label]["harmless_tie"] == pytest.approx(ties[HARMLESS], abs=1e-12)
        assert out[label]["helpful_tie"] == pytest.approx(ties[HELPFUL], abs=1e-12)
        assert out[label]["corr"] == pytest.approx(corr, abs=1e-12)
    # by hand, benign/brief harmless ties: prompt 0 ([1, 1, 2] vs [1, 2]) -> 3, prompt 1
    # ([0, 0, 0] vs [0, 3]) -> 3, of 2 * 3 * 2 pairs
    assert out["benign/brief"]["harmless_tie"] == pytest.approx(6 / 12)


def test_prompt_strata_topic_times_detail():
    same = [_prompt("bread", "brief"), _prompt("bread", "brief", "hey ", " on a budget"),
            _prompt("bread", "brief", "please tell me ", "", world.SMALL_TALK[2])]
    others = [_prompt("bread", "normal"), _prompt("bread", "detailed", "hi "),
              _prompt("rice", "brief"), _prompt("poison", "brief"), _prompt("car", "normal")]
    s = exact_arm.prompt_strata(same + others)
    assert s.dtype == np.int64
    assert s[0] == s[1] == s[2]
    assert len(set(s[2:].tolist())) == len(others) + 1
    # random world prompts: equal strata exactly when topic and detail are equal
    texts = _texts(40)
    specs = [world.parse_prompt(t) for t in texts]
    st = exact_arm.prompt_strata(texts)
    for i in range(40):
        for j in range(40):
            key_i = (specs[i].topic.name, specs[i].detail)
            key_j = (specs[j].topic.name, specs[j].detail)
            assert (st[i] == st[j]) == (key_i == key_j)
