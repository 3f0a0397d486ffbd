"""ferwild.audit.fairness on data where the answer is known: a pure class-mix difference must
vanish under standardisation, a planted within-class bias must survive it and be found as the
prediction-bias cell; people, not photos, are the resampling units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferwild.audit.fairness import attribute_comparison, standardise_confusion

NAMES = ["happiness", "neutral", "sadness"]


def _read(true: np.ndarray, confusion_rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Predictions drawn from per-true-class rates (rows of ``confusion_rates``)."""
    return np.array([rng.choice(len(NAMES), p=confusion_rates[t]) for t in true])


def _frame(groups: dict[str, tuple[list[float], np.ndarray]], n: int = 1500, per_person: int = 3,
           seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for g, (mix, rates) in groups.items():
        true = rng.choice(len(NAMES), size=n, p=mix)
        parts.append(pd.DataFrame({"label_id": true, "pred_id": _read(true, rates, rng), "attr_gender": g,
                                   "subject": [f"{g}{i // per_person}" for i in range(n)]}))
    return pd.concat(parts, ignore_index=True)


SAME_READER = np.array([[0.95, 0.04, 0.01], [0.25, 0.60, 0.15], [0.10, 0.40, 0.50]])


def test_standardising_keeps_recall_and_reweights_accuracy():
    cm = np.array([[90, 10, 0], [20, 60, 20], [0, 5, 5]])
    mix = np.array([0.2, 0.5, 0.3])
    std = standardise_confusion(cm, mix)
    recall = np.diag(cm) / cm.sum(1)
    np.testing.assert_allclose(np.diag(std) / std.sum(1), recall)
    np.testing.assert_allclose(std.sum(1), mix)
    assert np.trace(std) == pytest.approx(float((mix * recall).sum()))


def test_a_pure_class_mix_difference_vanishes_under_standardisation():
    frame = _frame({"female": ([0.7, 0.2, 0.1], SAME_READER), "male": ([0.2, 0.7, 0.1], SAME_READER)})
    out = attribute_comparison(frame, NAMES, "attr_gender", clusters=frame["subject"].to_numpy(),
                               n_bootstrap=400, n_permutations=400)
    gaps = out["gaps"]
    assert out["compared"] == ["female", "male"]
    assert gaps["accuracy"]["value"] > 0.1 and gaps["accuracy"]["excludes_zero"]
    assert not gaps["accuracy_standardised"]["excludes_zero"]
    assert abs(gaps["accuracy_standardised"]["value"]) < 0.03
    assert "explained by the class mix" in out["summary"]


def test_a_planted_within_class_bias_survives_and_is_found():
    biased = SAME_READER.copy()
    biased[1] = [0.55, 0.35, 0.10]  # 'male' neutral faces read as happiness far more often
    frame = _frame({"female": ([0.4, 0.4, 0.2], SAME_READER), "male": ([0.4, 0.4, 0.2], biased)})
    out = attribute_comparison(frame, NAMES, "attr_gender", clusters=frame["subject"].to_numpy(),
                               n_bootstrap=400, n_permutations=400)
    gaps = out["gaps"]
    assert gaps["accuracy_standardised"]["excludes_zero"] and gaps["accuracy_standardised"]["value"] > 0.05
    assert gaps["per_class_recall"]["neutral"]["excludes_zero"]
    assert not gaps["per_class_recall"]["happiness"]["excludes_zero"]
    top = out["prediction_bias"]["largest"]
    assert (top["true"], top["pred"]) == ("neutral", "happiness")
    assert top["rate_b"] > top["rate_a"] and out["prediction_bias"]["family_p_value"] < 0.05
    assert "gap survives standardisation" in out["summary"]


def test_people_are_the_resampling_units():
    # every person's ten photos are all read right or all wrong: ten times fewer independent units
    rng = np.random.default_rng(1)
    rows = []
    for g in ("female", "male"):
        for person in range(60):
            t = int(rng.integers(3))
            right = rng.random() < 0.7
            for _ in range(10):
                rows.append({"label_id": t, "pred_id": t if right else (t + 1) % 3, "attr_gender": g,
                             "subject": f"{g}{person}"})
    frame = pd.DataFrame(rows)
    by_people = attribute_comparison(frame, NAMES, "attr_gender", clusters=frame["subject"].to_numpy(),
                                     n_bootstrap=500, n_permutations=50)
    by_photo = attribute_comparison(frame, NAMES, "attr_gender", n_bootstrap=500, n_permutations=50)

    def width(out):
        acc = out["groups"]["female"]["accuracy"]
        return acc["ci_high"] - acc["ci_low"]

    assert by_people["groups"]["female"]["people"] == 60 and by_photo["groups"]["female"]["people"] == 600
    assert width(by_people) > 2 * width(by_photo)


def test_not_recorded_is_counted_not_compared_and_thin_input_gets_notes():
    frame = _frame({"female": ([0.5, 0.3, 0.2], SAME_READER), "male": ([0.5, 0.3, 0.2], SAME_READER),
                    "unknown": ([0.1, 0.1, 0.8], SAME_READER)}, n=300)
    out = attribute_comparison(frame, NAMES, "attr_gender", clusters=frame["subject"].to_numpy(),
                               n_bootstrap=100, n_permutations=50)
    assert "unknown" not in out["groups"] and out["not_recorded"] == {"n": 300, "people": 100}
    assert sorted(out["compared"]) == ["female", "male"]

    one_value = frame[frame["attr_gender"] == "female"]
    out = attribute_comparison(one_value, NAMES, "attr_gender", n_bootstrap=50, n_permutations=10)
    assert out["gaps"] is None and "1 recorded value" in out["summary"]

    tiny = pd.concat([frame[frame["attr_gender"] == "female"], frame[frame["attr_gender"] == "male"].head(6)])
    out = attribute_comparison(tiny, NAMES, "attr_gender", clusters=tiny["subject"].to_numpy(),
                               n_bootstrap=50, n_permutations=10)
    assert out["gaps"] is None and any("too few to compare" in n for n in out["notes"])


def test_calibration_by_group_finds_the_overconfident_group():
    frame = _frame({"female": ([0.4, 0.4, 0.2], SAME_READER), "male": ([0.4, 0.4, 0.2], SAME_READER)}, n=1200)
    right = (frame["label_id"] == frame["pred_id"]).to_numpy()
    female = (frame["attr_gender"] == "female").to_numpy()
    # 'female': every face at the group's own accuracy (calibrated); 'male': 0.99 on every face
    conf = np.where(female, right[female].mean(), 0.99)
    probs = np.full((len(frame), 3), 0.0)
    probs[np.arange(len(frame)), frame["pred_id"]] = conf
    out = attribute_comparison(frame, NAMES, "attr_gender", probs=probs, clusters=frame["subject"].to_numpy(),
                               n_bootstrap=200, n_permutations=20)
    g = out["groups"]
    assert g["female"]["ece"]["value"] < 0.02 and g["male"]["ece"]["value"] > 0.2
    assert out["gaps"]["ece"]["excludes_zero"]
    assert sum(b["count"] for b in g["male"]["reliability"]) == g["male"]["n"]
