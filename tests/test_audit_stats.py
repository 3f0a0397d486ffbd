"""Tests of the audit's statistical core: shift tests (MMD, domain classifier), prior estimation.

Bounds on random outcomes are derived from the null distribution (stated in comments), not
tuned to the observed values; every random draw is seeded, so the suite is deterministic.
"""

import json
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import pdist

from ferwild.audit.stats import (
    bbse_priors,
    domain_classifier_test,
    em_priors,
    mmd_test,
    permutation_mmd_naive,
    prior_shift_test,
    reduce_dims,
)

ALPHA = 0.05
R_NULL = 40  # null repetitions per test


def _assert_json_ready(obj, path="result"):
    """Only plain python types (no numpy scalars, no NaN/inf) anywhere in ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert type(key) is str, f"{path} key {key!r}"
            _assert_json_ready(value, f"{path}[{key!r}]")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _assert_json_ready(value, f"{path}[{i}]")
    else:
        assert type(obj) in (float, int, bool, str, type(None)), f"{path}: {type(obj)}"
    json.dumps(obj, allow_nan=False)


def _null_pairs(n=150, d=16):
    """R_NULL pairs of samples drawn from the same 16-dim standard Gaussian."""
    for r in range(R_NULL):
        rng = np.random.default_rng(1000 + r)
        yield r, rng.standard_normal((n, d)), rng.standard_normal((n, d))


def _shifted_pair(seed=0, n=200, d=16):
    """Mean shift of 0.5 sd in 3 of 16 dims (Mahalanobis distance 0.87)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d))
    y[:, :3] += 0.5
    return x, y


# Under H0 a valid test rejects at alpha=0.05 with probability <= 0.05, so the number of
# rejections in 40 independent repetitions is (at most) Binomial(40, 0.05): mean 2,
# P(X >= 8) = binom.sf(7, 40, 0.05) = 7.1e-4. A count above 7 means a miscalibrated test.
MAX_NULL_REJECTIONS = 7
# Under H0 (continuous statistic) p-values are ~Uniform(0, 1): the mean of 40 has sd
# sqrt(1/12/40) = 0.046, so [0.3, 0.7] is more than +-4 sd around 0.5 (two-sided ~1e-5).
# Permutation p-values are discrete (multiples of 1/201) and the classifier test is slightly
# conservative, neither moves the mean anywhere near these bounds.
MEAN_P_BOUNDS = (0.3, 0.7)


def test_null_tail_bound_is_what_the_comment_says():
    tail = sps.binom.sf(MAX_NULL_REJECTIONS, R_NULL, ALPHA)
    assert tail < 1e-3
    assert np.sqrt(1 / 12 / R_NULL) == pytest.approx(0.0456, abs=1e-3)


# --------------------------------------------------------------------------------------------
# MMD


def test_mmd_null_calibration():
    pvals = np.array(
        [mmd_test(x, y, n_permutations=200, seed=r)["p_value"] for r, x, y in _null_pairs()]
    )
    rejections = int((pvals < ALPHA).sum())
    assert rejections <= MAX_NULL_REJECTIONS, (rejections, pvals)
    assert MEAN_P_BOUNDS[0] < pvals.mean() < MEAN_P_BOUNDS[1], pvals.mean()


def test_mmd_detects_mean_shift():
    x, y = _shifted_pair()
    res = mmd_test(x, y, n_permutations=500)
    assert res["p_value"] < 0.01
    assert res["statistic"] > 0
    assert res["subsampled"] is False and res["n_x"] == 200 and res["n_x_total"] == 200
    _assert_json_ready(res)


def test_mmd_matches_naive_loop():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 8))
    y = rng.standard_normal((50, 8)) + 0.3
    fast = mmd_test(x, y, n_permutations=300, seed=3)
    slow = permutation_mmd_naive(x, y, n_permutations=300, seed=3)
    assert fast["statistic"] == pytest.approx(slow["statistic"], rel=1e-6)
    assert fast["bandwidth"] == pytest.approx(slow["bandwidth"], rel=1e-12)
    # Median heuristic = median distance over distinct pairs of the pooled sample.
    assert fast["bandwidth"] == pytest.approx(np.median(pdist(np.r_[x, y])), rel=1e-9)
    # Same permutation stream: the p-values can differ only through a permutation whose
    # statistic sits within rounding of the observed one, i.e. by at most one count.
    assert abs(fast["p_value"] - slow["p_value"]) <= 1 / 301 + 1e-12
    # And the statistic is the textbook biased MMD^2 with the reported bandwidth.
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * fast["bandwidth"] ** 2))

    textbook = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert fast["statistic"] == pytest.approx(textbook, rel=1e-9)


def test_mmd_exact_p_value_with_tiny_samples():
    # 3 vs 3, far apart: of the 20 ways to split 6 points into two triples, only the true
    # split and its mirror image reach the observed statistic, so p -> 2/20 = 0.1 as the
    # number of permutations grows (a biased or mislabelled permutation scheme would not give
    # 0.1). With 4000 permutations the sd of the estimate is ~0.005.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    y = rng.standard_normal((3, 4)) + 10.0
    res = mmd_test(x, y, n_permutations=4000)
    assert res["p_value"] == pytest.approx(0.1, abs=0.02)


def test_mmd_subsamples_large_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10_000, 32)).astype(np.float32)
    y = rng.standard_normal((10_000, 32)).astype(np.float32)
    start = time.perf_counter()
    res = mmd_test(x, y, max_samples=2000)
    print(f"mmd_test 10k vs 10k x 32 (2000-row subsample, 1000 perms): "
          f"{time.perf_counter() - start:.2f} s")
    assert res["n_x"] == 2000 and res["n_y"] == 2000
    assert res["n_x_total"] == 10_000 and res["n_y_total"] == 10_000
    assert res["subsampled"] is True
    assert res["n_permutations"] == 1000
    assert 0 < res["p_value"] <= 1
    _assert_json_ready(res)


def test_mmd_is_deterministic_and_fixed_bandwidth_is_used():
    x, y = _shifted_pair(seed=1, n=80)
    a = mmd_test(x, y, n_permutations=100, seed=5)
    b = mmd_test(x, y, n_permutations=100, seed=5)
    assert a == b
    fixed = mmd_test(x, y, n_permutations=100, bandwidth=2.5)
    assert fixed["bandwidth"] == 2.5
    assert fixed["statistic"] != pytest.approx(a["statistic"], rel=1e-3)


# --------------------------------------------------------------------------------------------
# domain classifier


def test_domain_classifier_null_calibration():
    pvals = np.array([domain_classifier_test(x, y, seed=r)["p_value"] for r, x, y in _null_pairs()])
    rejections = int((pvals < ALPHA).sum())
    assert rejections <= MAX_NULL_REJECTIONS, (rejections, pvals)
    assert MEAN_P_BOUNDS[0] < pvals.mean() < MEAN_P_BOUNDS[1], pvals.mean()


def test_domain_classifier_detects_mean_shift():
    x, y = _shifted_pair()
    res = domain_classifier_test(x, y)
    assert res["p_value"] < 0.01
    assert res["auc"] > 0.6
    lo, hi = res["auc_ci"]
    assert lo < res["auc"] < hi and lo > 0.5
    assert res["scores_x"].shape == (200,) and res["scores_y"].shape == (200,)
    assert res["folds"] == 5 and res["n_x"] == 200 and res["n_y"] == 200
    # The AUC is that of the returned scores (production as the positive class).
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(200), np.ones(200)]
    assert res["auc"] == pytest.approx(
        roc_auc_score(labels, np.r_[res["scores_x"], res["scores_y"]]), abs=1e-12
    )
    _assert_json_ready({k: v for k, v in res.items() if k not in ("scores_x", "scores_y")})


def test_domain_classifier_ranks_planted_outliers_highest():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 8))
    y = rng.standard_normal((300, 8))
    planted = rng.choice(300, size=20, replace=False)
    y[planted] += 5.0
    res = domain_classifier_test(x, y)
    top = np.argsort(res["scores_y"])[-20:]
    assert set(top.tolist()) == set(planted.tolist())


def test_domain_classifier_subsample_scores_every_row():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 6))
    y = rng.standard_normal((400, 6))
    res = domain_classifier_test(x, y, max_samples=150, seed=4)
    assert res["subsampled"] is True
    assert res["n_x_fit"] == 150 and res["n_y_fit"] == 150
    assert res["scores_x"].shape == (500,) and res["scores_y"].shape == (400,)
    for scores in (res["scores_x"], res["scores_y"]):
        assert np.all((scores > 0) & (scores < 1))
    again = domain_classifier_test(x, y, max_samples=150, seed=4)
    np.testing.assert_array_equal(res["scores_y"], again["scores_y"])


def test_domain_classifier_large_input_runtime():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10_000, 32))
    y = rng.standard_normal((10_000, 32))
    start = time.perf_counter()
    res = domain_classifier_test(x, y)
    print(f"domain_classifier_test 10k vs 10k x 32: {time.perf_counter() - start:.2f} s")
    assert res["subsampled"] is False
    assert res["scores_x"].shape == (10_000,)


def test_domain_classifier_tiny_samples_reduce_folds():
    rng = np.random.default_rng(0)
    res = domain_classifier_test(rng.standard_normal((3, 2)), rng.standard_normal((4, 2)))
    assert res["folds"] == 3
    res = domain_classifier_test(rng.standard_normal((2, 2)), rng.standard_normal((9, 2)))
    assert res["folds"] == 2
    with pytest.raises(ValueError, match="at least 2"):
        domain_classifier_test(rng.standard_normal((1, 2)), rng.standard_normal((9, 2)))


# --------------------------------------------------------------------------------------------
# reduce_dims


def test_reduce_dims_fits_on_reference_only():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 64)) * rng.uniform(0.5, 5, size=64)
    other = rng.standard_normal((50, 64))
    out = reduce_dims(ref, other, ref, dim=8)
    assert [a.shape for a in out] == [(200, 8), (50, 8), (200, 8)]
    assert all(a.dtype == np.float32 for a in out)
    np.testing.assert_array_equal(out[0], out[2])  # others go through the same transform
    np.testing.assert_allclose(out[0].mean(axis=0), 0, atol=1e-4)
    # Components ordered by explained variance of the reference.
    var = out[0].var(axis=0)
    assert np.all(np.diff(var) <= 1e-4)
    # Capped by n_ref and n_features.
    assert reduce_dims(ref[:5], dim=32)[0].shape == (5, 5)
    assert reduce_dims(ref[:, :3], dim=32)[0].shape == (200, 3)
    # A constant feature does not produce NaN (std floor).
    const = ref.copy()
    const[:, 0] = 1.0
    assert np.all(np.isfinite(reduce_dims(const, other)[1]))


# --------------------------------------------------------------------------------------------
# label shift

TRUE_TARGET = np.array([0.55, 0.25, 0.15, 0.05])
SEPARATION = 1.6  # class means SEPARATION * e_k in 4-d, unit noise: accuracy ~0.73


def _draw(rng, priors, n):
    """Labels, and the Bayes posterior under uniform source priors (a calibrated model)."""
    y = rng.choice(4, size=n, p=priors)
    x = rng.standard_normal((n, 4)) + SEPARATION * np.eye(4)[y]
    logits = SEPARATION * x  # log N(x; s e_k, I) up to a class-independent constant
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return y, probs / probs.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def label_shift_data():
    rng = np.random.default_rng(42)
    y_val, p_val = _draw(rng, [0.25] * 4, 4000)
    _, p_tgt = _draw(rng, TRUE_TARGET, 4000)
    _, p_same = _draw(rng, [0.25] * 4, 4000)
    accuracy = float((p_val.argmax(1) == y_val).mean())
    return y_val, p_val, p_tgt, p_same, accuracy


def _check_estimate(res):
    q = np.array(res["estimated_priors"])
    assert q.sum() == pytest.approx(1.0)
    np.testing.assert_array_less(np.abs(q - TRUE_TARGET), 0.05)
    inside = (np.array(res["ci_low"]) <= TRUE_TARGET) & (TRUE_TARGET <= np.array(res["ci_high"]))
    # Each 95% interval misses with probability ~0.05; P(2 or more of 4 miss) ~ 0.014.
    assert inside.sum() >= 3, res
    _assert_json_ready(res)


def test_bbse_recovers_shifted_priors(label_shift_data):
    y_val, p_val, p_tgt, _, accuracy = label_shift_data
    assert 0.65 < accuracy < 0.8  # the simulated classifier is as weak as intended
    res = bbse_priors(y_val, p_val.argmax(1), p_tgt.argmax(1), 4)
    assert res["method"] == "bbse" and res["n_val"] == 4000 and res["n_target"] == 4000
    _check_estimate(res)
    assert res["singular"] is False and 1 <= res["condition_number"] < 10
    np.testing.assert_allclose(
        np.array(res["weights"]) * res["source_priors"], res["estimated_priors"], atol=1e-12
    )
    summary = prior_shift_test(res)
    assert summary["shift_detected"] is True
    assert summary["changed_classes"][0]["class"] == 0  # 0.25 -> 0.55, the largest move
    assert summary["largest_increase"]["class"] == 0
    assert summary["largest_decrease"]["class"] == 3
    _assert_json_ready(summary)


def test_em_recovers_shifted_priors(label_shift_data):
    _, _, p_tgt, _, _ = label_shift_data
    res = em_priors(p_tgt, np.full(4, 0.25))
    assert res["method"] == "em" and res["converged"] is True and res["n_target"] == 4000
    assert 1 <= res["iterations"] < 200
    _check_estimate(res)
    assert prior_shift_test(res)["tv_distance"] > 0.2  # true TV distance is 0.30


def test_no_shift_gives_small_tv_distance(label_shift_data):
    y_val, p_val, _, p_same, _ = label_shift_data
    bbse = bbse_priors(y_val, p_val.argmax(1), p_same.argmax(1), 4, n_bootstrap=100)
    em = em_priors(p_same, np.full(4, 0.25), n_bootstrap=50)
    assert prior_shift_test(bbse)["tv_distance"] < 0.05
    assert prior_shift_test(em)["tv_distance"] < 0.05


def test_bbse_flags_singular_confusion():
    # Class 2 is never predicted: C has a zero row, so its prior is not identifiable.
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 3, 600)
    pred = np.where(y_val == 2, 1, y_val)
    res = bbse_priors(y_val, pred, rng.integers(0, 2, 300), 3, n_bootstrap=20)
    assert res["singular"] is True and res["condition_number"] == 1e16
    assert sum(res["estimated_priors"]) == pytest.approx(1.0)
    _assert_json_ready(res)


def test_prior_shift_test_with_explicit_source():
    est = {
        "estimated_priors": [0.5, 0.35, 0.15],
        "ci_low": [0.45, 0.33, 0.1],
        "ci_high": [0.55, 0.37, 0.3],
        "source_priors": [0.2, 0.3, 0.5],
    }
    out = prior_shift_test(est, np.array([0.4, 0.4, 0.2]))
    assert out["tv_distance"] == pytest.approx(0.1)
    # Class 2's interval [0.1, 0.3] holds its source prior 0.2; classes 0 and 1 move.
    assert [c["class"] for c in out["changed_classes"]] == [0, 1]
    assert out["changed_classes"][0] == {
        "class": 0, "source": 0.4, "estimated": 0.5, "ci": [0.45, 0.55]
    }
    default = prior_shift_test(est)  # against est["source_priors"]
    assert default["tv_distance"] == pytest.approx(0.35)
    assert [c["class"] for c in default["changed_classes"]] == [2, 0, 1]  # by |q - p|
    assert default["largest_decrease"] == {"class": 2, "delta": pytest.approx(-0.35)}


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("func", [mmd_test, domain_classifier_test, permutation_mmd_naive])
def test_two_sample_bad_input(func):
    ok = np.zeros((5, 3))
    with pytest.raises(ValueError, match="empty"):
        func(np.zeros((0, 3)), ok)
    nan = np.ones((5, 3))
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        func(ok, nan)
    with pytest.raises(ValueError, match="dimension mismatch"):
        func(ok, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="2-D"):
        func(np.zeros(5), ok)


def test_reduce_dims_bad_input():
    ref = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(ValueError, match="dimension mismatch"):
        reduce_dims(ref, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        reduce_dims(ref, np.full((3, 4), np.inf))
    with pytest.raises(ValueError, match="empty"):
        reduce_dims(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="dim"):
        reduce_dims(ref, dim=0)


def test_prior_estimators_bad_input():
    y = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="num_classes"):
        bbse_priors(y, y, y, 1)
    with pytest.raises(ValueError, match="outside"):
        bbse_priors(y, y, np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="empty"):
        bbse_priors(y, y, np.array([], dtype=int), 2)
    with pytest.raises(ValueError, match="has 4 labels"):
        bbse_priors(y, y[:3], y, 2)
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(ValueError, match="classes"):
        em_priors(probs, [0.3, 0.3, 0.4])
    with pytest.raises(ValueError, match="positive"):
        em_priors(probs, [1.0, 0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        em_priors(probs * 3, [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        em_priors(np.array([[np.nan, 1.0]]), [0.5, 0.5])
    with pytest.raises(ValueError, match="ci_low"):
        prior_shift_test({"estimated_priors": [0.5, 0.5], "source_priors": [0.5, 0.5]})


def test_unreliable_prior_estimates_are_named_and_bbse_gives_way_to_em(label_shift_data):
    from ferwild.audit.core import AuditConfig, label_shift, prior_estimate_problems
    from ferwild.audit.model_outputs import ModelOutputs

    y_val, p_val, p_tgt, _, _ = label_shift_data
    good = bbse_priors(y_val, p_val.argmax(1), p_tgt.argmax(1), 4, n_bootstrap=50)
    assert prior_estimate_problems(good) == []
    # a nearly uninformative classifier: its confusion matrix is ill-conditioned
    rng = np.random.default_rng(1)
    noisy_val = np.where(rng.random(y_val.size) < 0.9, rng.integers(0, 4, y_val.size), y_val)
    weak = bbse_priors(y_val[:400], noisy_val[:400], p_tgt.argmax(1)[:400], 4, n_bootstrap=50)
    problems = prior_estimate_problems(weak)
    assert any("ill-conditioned" in p or "wide" in p for p in problems), weak["condition_number"]
    singular = {"singular": True, "condition_number": 1e16, "ci_low": [0, 0], "ci_high": [0.1, 0.1]}
    assert "singular" in prior_estimate_problems(singular)[0]
    assert "did not converge" in prior_estimate_problems(
        {"converged": False, "iterations": 50, "ci_low": [0.4], "ci_high": [0.5]})[0]

    # in the audit: the weak BBSE gives way to EM on the (informative) probabilities
    names = [f"c{i}" for i in range(4)]
    rows = pd.DataFrame({"path": [f"{i}.png" for i in range(400)]})
    onehot = np.eye(4)[noisy_val[:400]] * 0.9 + 0.025
    val = ModelOutputs(rows, np.zeros((400, 2), np.float32), onehot.astype(np.float32), y_val[:400], names)
    prod = ModelOutputs(rows, np.zeros((400, 2), np.float32), p_tgt[:400].astype(np.float32),
                        np.full(400, -1), names)
    out = label_shift(val, prod, AuditConfig())
    assert prior_estimate_problems(out["bbse"]) and not prior_estimate_problems(out["em"]), out["em"]
    assert out["method"] == "em" and out["reliable"] is True and "BBSE is unreliable" in out["note"]
    assert out["estimated_priors"] == out["em"]["estimated_priors"]
    # with the same weak classifier's probabilities, EM is no better: the estimate says so
    vague = ModelOutputs(rows, np.zeros((400, 2), np.float32), np.full((400, 4), 0.25, np.float32),
                         np.full(400, -1), names)
    out = label_shift(val, vague, AuditConfig())
    assert out["reliable"] is False and out["problems"]


def test_label_shift_estimates_are_caveated_by_covariate_shift_and_by_the_truth():
    from ferwild.audit.core import MAX_PRIOR_ERROR_TV, caveat_label_shift

    clean = {"problems": [], "reliable": True, "estimation_error_tv": MAX_PRIOR_ERROR_TV / 2}
    assert caveat_label_shift(dict(clean), {"detected": False})["reliable"] is True
    moved = caveat_label_shift(dict(clean), {"detected": True})
    assert moved["reliable"] is False and "covariate shift" in moved["problems"][0]
    off = caveat_label_shift({**clean, "estimation_error_tv": 0.51}, {"detected": False})
    assert off["reliable"] is False and "off by 51 points" in off["problems"][0]
