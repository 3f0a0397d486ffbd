"""The analyses behind docs/real-study.md: the small computations their kept JSON states."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "analyses" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_label_shares_counts_pairs_and_people():
    leakage = _load("leakage_wild_dev")
    manifest = pd.DataFrame({
        # person a: 3 photos, 2 happy (1 same-label pair of 3); person b: 2 neutral (1 of 1);
        # person c: one photo (no pair); a dropped photo (no split) is left out
        "subject": ["a", "a", "a", "b", "b", "c", "d"],
        "label": ["happiness", "happiness", "neutral", "neutral", "neutral", "happiness", "anger"],
        "split": ["train", "train", "test", "val", "train", "test", ""],
    })
    shares = leakage.same_label_shares(manifest)
    assert shares["photos"] == 6 and shares["people_with_two_or_more"] == 2
    assert shares["same_person_pairs"] == 4
    assert shares["same_person_same_label_over_pairs"] == pytest.approx(2 / 4)
    assert shares["same_person_same_label_per_person"] == pytest.approx((1 / 3 + 1) / 2)
    assert shares["random_pair_same_label"] == pytest.approx(0.5 ** 2 + 0.5 ** 2)


def test_spread_and_copies_over_seeds():
    analysis = _load("real_study_analysis")
    spread = analysis._spread([0.3, 0.5, 0.4])
    assert spread["mean"] == pytest.approx(0.4) and spread["std"] == pytest.approx(0.1)
    assert (spread["min"], spread["max"], spread["per_seed"]) == (0.3, 0.5, [0.3, 0.5, 0.4])
    one = {"test_faces": 10, "with_a_train_copy": 2, "copies_with_the_same_label": 1, "accuracy_on_copies": 1.0,
           "accuracy_on_the_rest": 0.5, "accuracy_difference": 0.1, "accuracy_difference_ci95": [0.0, 0.2],
           "macro_f1_difference": 0.1,
           "macro_f1_all": 0.4, "macro_f1_without_copies": 0.3}
    over = analysis.copies_over_seeds({"main-s0": one, "main-s1": {**one, "accuracy_on_copies": 0.5}})
    assert over["accuracy_on_copies"]["mean"] == pytest.approx(0.75)
    assert over["accuracy_on_copies"]["per_seed"] == [1.0, 0.5]
    assert over["with_a_train_copy"] == 2
    assert over["accuracy_difference_ci95_per_seed"] == [[0.0, 0.2], [0.0, 0.2]]
