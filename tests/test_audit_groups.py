"""Tests for ferwild.audit.groups: bootstrap CIs, subgroup bias, data-health comparisons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.metrics import accuracy_score, f1_score, recall_score

from ferwild.audit.groups import (
    alignment_failure,
    attribute_groups,
    attribute_shift,
    bootstrap_metrics,
    compare_statistics,
    image_statistics,
    proportion_test,
    subgroup_audit,
    subgroup_gap_figure,
)

NAMES = ["anger", "happiness", "neutral", "sadness"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def noisy_predictions(rng, y_true, accuracy, k):
    """Predictions right with probability ``accuracy``, else a uniformly drawn wrong class."""
    wrong = rng.random(len(y_true)) >= accuracy
    shift = rng.integers(1, k, len(y_true))
    return np.where(wrong, (y_true + shift) % k, y_true)


def biased_frame(n=1500, seed=0, small=None):
    """Planted bias: female 50% accurate with errors mostly -> happiness, male 90% accurate."""
    rng = np.random.default_rng(seed)
    k = len(NAMES)
    gender = rng.choice(["female", "male"], n)
    y = rng.integers(0, k, n)
    pred = noisy_predictions(rng, y, 0.9, k)
    female = gender == "female"
    pred[female] = noisy_predictions(rng, y[female], 0.5, k)
    to_happy = female & (pred != y) & (y != 1) & (rng.random(n) < 0.8)
    pred[to_happy] = 1
    frame = pd.DataFrame({"label_id": y, "pred_id": pred, "attr_gender": gender,
                          "attr_other": rng.choice(["a", "b", "c"], n)})
    if small is not None:
        frame["attr_gender"] = frame["attr_gender"].astype(object)
        frame.loc[frame.index[:small[0]], "attr_gender"] = small[1]
    return frame


# --------------------------------------------------------------------------------------------
# bootstrap_metrics


def test_bootstrap_point_values_match_sklearn_and_cis_shrink():
    rng = np.random.default_rng(3)
    k = 5
    y = rng.integers(0, 4, 2000)  # class 4 never true: macro-F1 must ignore it
    p = noisy_predictions(rng, y, 0.7, k)
    widths = []
    for n in (200, 2000):
        res = bootstrap_metrics(y[:n], p[:n], k, n_bootstrap=500, seed=1)
        present = sorted(set(y[:n].tolist()))
        assert res["n"] == n
        assert res["accuracy"]["value"] == pytest.approx(accuracy_score(y[:n], p[:n]))
        assert res["macro_f1"]["value"] == pytest.approx(
            f1_score(y[:n], p[:n], labels=present, average="macro"))
        recalls = recall_score(y[:n], p[:n], labels=list(range(k)), average=None, zero_division=0)
        f1s = f1_score(y[:n], p[:n], labels=list(range(k)), average=None, zero_division=0)
        for c in present:
            assert res["per_class"][str(c)]["recall"]["value"] == pytest.approx(recalls[c])
            assert res["per_class"][str(c)]["f1"]["value"] == pytest.approx(f1s[c])
            assert res["per_class"][str(c)]["support"] == int((y[:n] == c).sum())
        # never-true class: recall undefined -> None; F1 0 because it is predicted (fp > 0)
        assert res["per_class"]["4"]["recall"]["value"] is None
        assert res["per_class"]["4"]["f1"]["value"] == 0.0
        for m in (res["accuracy"], res["macro_f1"], res["per_class"]["0"]["recall"]):
            assert m["ci_low"] <= m["value"] <= m["ci_high"]
        widths.append(res["accuracy"]["ci_high"] - res["accuracy"]["ci_low"])
        json.dumps(res, allow_nan=False)
    # width ~ 1/sqrt(n): 10x the data should give roughly a third of the width
    assert widths[1] < 0.5 * widths[0]


def test_bootstrap_is_deterministic_and_validates():
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2, 0])
    assert bootstrap_metrics(y, p, 3, seed=5) == bootstrap_metrics(y, p, 3, seed=5)
    assert bootstrap_metrics(y, p, 3, seed=5) != bootstrap_metrics(y, p, 3, seed=6)
    with pytest.raises(ValueError, match="outside"):
        bootstrap_metrics(y, p, 2)
    with pytest.raises(ValueError, match="samples"):
        bootstrap_metrics(y, p[:-1], 3)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_metrics(np.array([], int), np.array([], int), 3)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(y, p, 3, confidence=95)


def test_bootstrap_ci_coverage():
    # If the true coverage is 0.95, the number of covering CIs out of 100 is Binomial(100, 0.95)
    # and P(X <= 87) = binom.cdf(87, 100, 0.95) ~ 0.0015, so ">= 88" fails a correct
    # implementation about once in 700 seeds (the seed is fixed, so it is deterministic anyway);
    # a CI that is too narrow by a third (coverage ~0.82) fails it almost surely.
    assert binom.cdf(87, 100, 0.95) < 0.002
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(100):
        y = rng.integers(0, 3, 300)
        p = noisy_predictions(rng, y, 0.7, 3)
        acc = bootstrap_metrics(y, p, 3, n_bootstrap=1000, seed=i)["accuracy"]
        covered += acc["ci_low"] <= 0.7 <= acc["ci_high"]
    assert covered >= 88


# --------------------------------------------------------------------------------------------
# attribute_groups


def test_attribute_groups_bins_numbers_keeps_text_and_unknowns():
    roll = pd.Series([str(v) for v in range(-20, 31)] + ["", None, np.nan], name="attr_roll")
    groups = attribute_groups(roll, bins=3)
    assert groups.name == "attr_roll" and groups.index.equals(roll.index)
    assert groups.iloc[-3:].tolist() == ["unknown"] * 3
    binned = groups.iloc[:-3]
    assert binned.nunique() == 3
    assert binned.iloc[0].startswith("[-20, ") and binned.iloc[-2].endswith(", 30]")
    # left-closed bins: each bin's lower edge belongs to it
    for label in binned.unique():
        low = float(label[1:].split(",")[0])
        assert binned[roll.iloc[:-3].astype(float) == low].iloc[0] == label
    # text stays text; few distinct numbers stay categorical
    occ = pd.Series(["none", "hand", "", "text", None])
    assert attribute_groups(occ).tolist() == ["none", "hand", "unknown", "text", "unknown"]
    assert attribute_groups(pd.Series(["0", "1", "1", "0"])).tolist() == ["0", "1", "1", "0"]
    with pytest.raises(ValueError):
        attribute_groups(occ, bins=0)


# --------------------------------------------------------------------------------------------
# subgroup_audit


def test_subgroup_audit_finds_planted_bias():
    frame = biased_frame()
    audit = subgroup_audit(frame, NAMES, n_bootstrap=1000, seed=0)
    json.dumps(audit, allow_nan=False)
    assert audit["ranking"][0] == "attr_gender"
    gender = audit["attributes"]["attr_gender"]
    assert gender["gap"]["significant"] and gender["gap"]["worst"] == "female"
    assert gender["gap"]["best"] == "male" and gender["gap"]["macro_f1_gap"] > 0.25
    female = gender["groups"]["female"]
    acc = female["accuracy"]
    assert acc["ci_low"] < acc["value"] < acc["ci_high"]
    assert female["accuracy"]["ci_high"] < gender["groups"]["male"]["accuracy"]["ci_low"]
    assert set(female["per_class_recall"]) == set(NAMES)
    top = female["error_absorption"][0]
    assert top["class"] == "happiness" and top["excess"] > 0.2
    assert top["share"] == pytest.approx(top["share_other_groups"] + top["excess"])
    assert not audit["attributes"]["attr_other"]["gap"]["significant"]
    # deterministic given the seed
    assert subgroup_audit(frame, NAMES, n_bootstrap=200, seed=4) == \
        subgroup_audit(frame, NAMES, n_bootstrap=200, seed=4)


def test_subgroup_audit_too_small_groups_are_not_ranked():
    frame = biased_frame(n=600, seed=1, small=(10, "other"))
    # make the small group perfect and add a second, hopeless small group
    frame.loc[frame.index[:10], "pred_id"] = frame.loc[frame.index[:10], "label_id"]
    frame.loc[frame.index[10:22], "attr_gender"] = "rare"
    frame.loc[frame.index[10:22], "pred_id"] = (frame.loc[frame.index[10:22], "label_id"] + 1) % 4
    audit = subgroup_audit(frame, NAMES, min_group_size=30, n_bootstrap=200)
    groups = audit["attributes"]["attr_gender"]["groups"]
    assert groups["other"]["too_small"] and groups["rare"]["too_small"]
    assert groups["other"]["macro_f1"]["value"] == 1.0
    assert groups["rare"]["accuracy"]["value"] == 0.0
    assert not groups["female"]["too_small"]
    gap = audit["attributes"]["attr_gender"]["gap"]
    assert (gap["best"], gap["worst"]) == ("male", "female")
    # one rankable group left -> no gap, attribute not ranked
    solo = subgroup_audit(frame, NAMES, attributes=["attr_gender"], min_group_size=320,
                          n_bootstrap=50)
    assert solo["attributes"]["attr_gender"]["gap"] is None and solo["ranking"] == []


def test_subgroup_audit_rejects_bad_input():
    frame = biased_frame(n=100)
    with pytest.raises(ValueError, match="pred_id"):
        subgroup_audit(frame.drop(columns="pred_id"), NAMES)
    with pytest.raises(ValueError, match="not in frame"):
        subgroup_audit(frame, NAMES, attributes=["attr_missing"])
    with pytest.raises(ValueError, match="outside"):
        subgroup_audit(frame, NAMES[:2])


# --------------------------------------------------------------------------------------------
# label-free comparisons


def test_attribute_shift_ranks_planted_change():
    rng = np.random.default_rng(7)

    def sample(n, p_hand):
        return pd.DataFrame({
            "attr_occlusion": rng.choice(["none", "hand"], n, p=[1 - p_hand, p_hand]),
            "attr_gender": rng.choice(["female", "male"], n),
            "attr_roll": rng.integers(-20, 31, n).astype(str),
        })

    result = attribute_shift(sample(2000, 0.05), sample(1000, 0.30))
    json.dumps(result, allow_nan=False)
    first = result[0]
    assert first["attribute"] == "attr_occlusion" and first["p_value"] < 1e-6
    assert first["largest_change"]["group"] in ("hand", "none")
    assert first["production"]["hand"] == pytest.approx(0.30, abs=0.04)
    assert first["tv_distance"] == pytest.approx(0.25, abs=0.04)
    others = {r["attribute"]: r for r in result[1:]}
    assert others["attr_gender"]["p_value"] > 0.001
    # numeric attribute binned on the pooled values: same groups on both sides
    assert set(others["attr_roll"]["reference"]) == set(others["attr_roll"]["production"])
    with pytest.raises(ValueError, match="missing"):
        attribute_shift(sample(10, 0.1), sample(10, 0.1), attributes=["attr_nope"])


def test_proportion_test_chooses_test_and_handles_zero():
    small = proportion_test(3, 100, 5, 100)
    assert small["test"] == "fisher" and small["p_value"] > 0.05
    assert small["difference"] == pytest.approx(0.02)
    large = proportion_test(30, 1000, 80, 1000)
    assert large["test"] == "z" and large["p_value"] < 1e-4
    assert (large["rate_1"], large["rate_2"]) == (0.03, 0.08)
    empty = proportion_test(0, 0, 5, 100)
    assert empty["rate_1"] is None and empty["p_value"] is None
    with pytest.raises(ValueError):
        proportion_test(5, 3, 1, 10)


def manifest_rows(rows):
    cols = ["label", "status", "align_method", "augmented_from"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_alignment_failure_counts_attempts():
    aligned = manifest_rows([
        ("happy", "aligned", "mtcnn", ""),
        ("happy", "aligned", "landmarks", ""),
        ("happy", "unaligned", "center", ""),
        ("sad", "dropped", "", ""),
        ("sad", "aligned", "mtcnn", ""),
        ("sad", "rejected", "", ""),          # never decoded: ignored
        ("sad", "aligned", "mtcnn", "x.jpg"),  # augmented copy: ignored
    ])
    res = alignment_failure(aligned)
    assert (res["attempted"], res["failed"]) == (5, 2) and res["rate"] == pytest.approx(0.4)
    assert res["per_class"]["happy"] == {"attempted": 3, "failed": 1, "rate": pytest.approx(1 / 3)}
    assert res["per_class"]["sad"]["rate"] == 0.5 and not res["prealigned"]
    pre = alignment_failure(manifest_rows([("happy", "aligned", "none", ""),
                                           ("sad", "aligned", "resize", "")]))
    assert pre["attempted"] == 0 and pre["rate"] is None and pre["prealigned"]
    with pytest.raises(ValueError, match="align_method"):
        alignment_failure(aligned.drop(columns="align_method"))


def test_image_statistics_geometry():
    manifest = pd.DataFrame({
        "status": ["aligned", "aligned", "unaligned", "rejected"],
        "augmented_from": ["", "", "", ""],
        "box": [[0, 0, 50, 50], np.array([10.0, 10, 110, 60]), None, None],
        "landmarks": [[10, 10, 20, 20, 15, 20, 0, 0, 0, 0],    # eyes on a 45-degree line
                      [40, 30, 80, 30, 60, 50, 0, 0, 0, 0],    # level eyes, nose centred
                      None, None],
        "orig_width": [100, 200, 100, 100], "orig_height": [200, 100, 100, 100],
        "confidence": [0.99, 0.9, np.nan, np.nan],
        "brightness": [0.5, 0.4, 0.3, 0.2], "contrast": [0.1, 0.2, 0.3, 0.4],
        "sharpness": [10.0, 20.0, 30.0, 40.0],
    }, index=[5, 6, 7, 8])
    stats = image_statistics(manifest)
    assert list(stats.index) == [5, 6, 7]
    # image coordinates (y down): second eye lower than the first -> positive roll
    assert stats.loc[5, "roll_deg"] == pytest.approx(45.0)
    assert stats.loc[6, "roll_deg"] == pytest.approx(0.0)
    assert stats.loc[6, "yaw_proxy"] == pytest.approx(0.0)
    # yaw is measured along the eye line (roll undone): the nose's offset (0, 5) from the eye
    # midpoint (15, 15) projects onto the eye direction (10, 10) as 50 / |d|^2 = 0.25 IOD
    assert stats.loc[5, "yaw_proxy"] == pytest.approx(0.25)
    assert stats.loc[5, "face_size"] == pytest.approx(0.5)
    assert stats.loc[6, "face_size"] == pytest.approx(np.sqrt(100 * 50) / 100)
    assert stats.loc[6, "eye_distance_rel"] == pytest.approx(0.4)
    assert np.isnan(stats.loc[7, ["face_size", "roll_deg", "yaw_proxy"]].astype(float)).all()
    assert stats.loc[5, "detector_confidence"] == 0.99 and stats.loc[7, "brightness"] == 0.3


def test_compare_statistics_ranks_planted_shift():
    rng = np.random.default_rng(11)
    ref = pd.DataFrame({"brightness": rng.normal(0.5, 0.1, 400),
                        "contrast": rng.normal(0.2, 0.05, 400),
                        "face_size": rng.normal(0.4, 0.1, 400),
                        "sparse": [np.nan] * 397 + [1.0, 2.0, 3.0]})
    prod = pd.DataFrame({"brightness": rng.normal(0.65, 0.1, 300),
                         "contrast": rng.normal(0.2, 0.05, 300),
                         "face_size": rng.normal(0.41, 0.1, 300),
                         "sparse": rng.normal(size=300)})
    result = compare_statistics(ref, prod)
    json.dumps(result, allow_nan=False)
    assert result[0]["statistic"] == "brightness"
    assert "sparse" not in {r["statistic"] for r in result}
    top = result[0]
    assert top["cohens_d"] == pytest.approx(1.5, abs=0.25) and top["ks_p_value"] < 1e-10
    assert top["wasserstein_sd"] == pytest.approx(1.5, abs=0.25)
    assert {r["statistic"]: r for r in result}["contrast"]["ks_p_value"] > 0.001
    const = compare_statistics(pd.DataFrame({"x": [1.0] * 6}), pd.DataFrame({"x": [1.0] * 6}))
    assert const[0]["cohens_d"] == 0.0 and const[0]["constant_side"] == "both"


def test_compare_statistics_sees_a_spread_change_that_cohens_d_misses():
    """Roll is exactly 0 in a frontal reference and varies around 0 in production: the mean stays
    (d ~ 0), the distribution does not (Wasserstein, KS); it must rank first and say why."""
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"roll_deg": np.zeros(300), "brightness": rng.normal(0.5, 0.1, 300)})
    prod = pd.DataFrame({"roll_deg": rng.normal(0, 8, 300), "brightness": rng.normal(0.52, 0.1, 300)})
    result = {r["statistic"]: r for r in compare_statistics(ref, prod)}
    roll = result["roll_deg"]
    assert abs(roll["cohens_d"]) < 0.2 and roll["ks_p_value"] < 1e-10
    assert roll["constant_side"] == "reference" and roll["sd_ratio"] is None
    assert roll["production_sd"] == pytest.approx(8, rel=0.15)
    assert compare_statistics(ref, prod)[0]["statistic"] == "roll_deg"
    assert result["brightness"]["constant_side"] is None
    assert result["brightness"]["sd_ratio"] == pytest.approx(1, abs=0.2)


def test_subgroup_gap_figure_writes_png(tmp_path):
    frame = biased_frame(n=400, seed=2, small=(12, "other"))
    audit = subgroup_audit(frame, NAMES, n_bootstrap=100)
    out = tmp_path / "figs" / "gaps.png"
    subgroup_gap_figure(audit, out, top=2)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
