"""ferwild.audit.image_properties: a planted size effect is found, with labels and without, and
excluding the rows that carry it removes it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ferwild.audit.image_properties import PROPERTIES, image_property_errors, property_groups

NAMES = ["happiness", "neutral", "sadness"]


def _rows(n: int = 1200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = rng.choice([48, 120, 250], size=n)
    labels = rng.integers(0, 3, size=n)
    small = side == 48
    # small photos are read right half the time and with less confidence; the rest 90%
    right = rng.random(n) < np.where(small, 0.5, 0.9)
    preds = np.where(right, labels, (labels + 1) % 3)
    top = np.where(small, 0.45, 0.85)
    probs = np.repeat(((1 - top) / 2)[:, None], 3, axis=1)
    probs[np.arange(n), preds] = top
    rows = pd.DataFrame({
        "status": "aligned", "augmented_from": "", "orig_width": side, "orig_height": side,
        "orig_mode": rng.choice(["L", "RGB"], size=n), "box": [np.array([0, 0, s * 0.6, s * 0.6]) for s in side],
        "landmarks": [np.zeros(10)] * n, "sharpness": rng.normal(50, 10, n), "brightness": rng.normal(120, 20, n),
        "contrast": 40.0, "confidence": 0.99, "subject": [f"p{i // 2}" for i in range(n)],
    })
    return rows, probs, labels, small


def test_property_groups_cut_numbers_and_keep_categories():
    rows, *_ = _rows(300)
    groups = property_groups(rows)
    assert list(groups.columns) == [f"prop_{p}" for p in PROPERTIES]
    assert set(groups["prop_colour"]) == {"grey", "colour"}
    # three photo sizes: tied terciles merge into two bins, small photos alone in the first
    assert sorted(set(groups["prop_image_side"])) == ["[120, 250]", "[48, 120)"]


def test_a_planted_size_effect_is_found_with_and_without_labels_and_goes_with_the_rows():
    rows, probs, labels, small = _rows()
    out = image_property_errors(rows, probs, NAMES, labels=labels, clusters=rows["subject"].to_numpy(),
                                n_bootstrap=300, n_permutations=50)
    size = out["properties"]["image_side"]
    cmp = size["comparison"]
    assert cmp["compared"][1] == "[48, 120)"  # the worst group is the small photos
    assert cmp["gaps"]["accuracy_standardised"]["excludes_zero"] and cmp["gaps"]["accuracy"]["value"] > 0.3
    colour = out["properties"]["colour"]["comparison"]
    assert not colour["gaps"]["accuracy_standardised"]["excludes_zero"]  # colour was drawn independently
    free = size["label_free"]
    assert free["[48, 120)"]["uncertain_share"]["value"] == 1.0
    assert free["[120, 250]"]["uncertain_share"]["value"] == 0.0

    without = image_property_errors(rows, probs, NAMES, labels=labels, clusters=rows["subject"].to_numpy(),
                                    exclude=small, n_bootstrap=200, n_permutations=20)
    assert without["excluded"] == int(small.sum())
    # the bins are cut on every row; without the small photos one size group is left to compare
    assert without["properties"]["image_side"]["comparison"]["compared"] is None

    unlabelled = image_property_errors(rows, probs, NAMES, n_bootstrap=100)
    assert not unlabelled["labelled"] and unlabelled["properties"]["image_side"]["comparison"] is None
