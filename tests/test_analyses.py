"""The analyses behind docs/real-study.md: the small computations their kept JSON states."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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


def test_neutral_held_offset_brings_the_neutral_rate_down_to_the_defaults(tmp_path):
    levers = _load("accurate_model_levers")
    names = ["happiness", "neutral"]

    def write(path: Path, y_true, probs):
        path.mkdir(parents=True)
        probs = np.asarray(probs, dtype=float)
        pd.DataFrame({"y_true": y_true, "y_pred": probs.argmax(1), "prob_happiness": probs[:, 0],
                      "prob_neutral": probs[:, 1]}).to_parquet(path / "predictions.parquet")

    # the default answers neutral for 1 face of 4 on val; the ensemble for 2, one of them barely
    write(tmp_path / "default_val", [0, 0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    ensemble = [[0.9, 0.1], [0.45, 0.55], [0.3, 0.7], [0.6, 0.4]]
    for name in ("ferplus_val", "ferplus_test", "wild_report"):
        write(tmp_path / "ens" / "ours" / name, [0, 0, 1, 1], ensemble)
    held = levers.neutral_held(tmp_path / "ens", tmp_path / "default_val", names)
    assert held["default_val_neutral_answer_share"] == 0.25
    # log(0.55) - offset must fall below log(0.45): the smallest 0.05 step past log(0.55/0.45) = 0.20
    assert held["offset"] == pytest.approx(0.25)
    test = held["sets"]["ferplus_test"]
    assert test["ensemble"]["neutral_answer_share"] == 0.5
    assert test["ensemble_neutral_held"]["neutral_answer_share"] == 0.25
    assert test["ensemble_neutral_held"]["accuracy"] == 0.75 and test["ensemble"]["accuracy"] == 0.5
    assert "default" not in test                      # no default predictions written for this set


def test_live_model_candidates_reads_present_runs_and_keeps_the_rest(tmp_path):
    candidates = _load("live_model_candidates")
    run = tmp_path / "student_ens"
    run.mkdir()
    # the best epoch by validation macro-F1 is epoch 2, though epoch 3 has the higher accuracy
    pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.70, 0.75, 0.78],
                  "val_macro_f1": [0.60, 0.66, 0.65]}).to_csv(run / "metrics.csv", index=False)
    (run / "config.yaml").write_text(
        "optim: {lr: 0.003, teacher_weight: 0.5, teacher: t/teacher_ensemble/predictions.parquet}\n"
        "data: {augment_options: {occlude_p: 0.25}}\nmodel: {pretrained_head: true}\n")
    (tmp_path / "student_ens_pbn_val").mkdir()
    (tmp_path / "student_ens_pbn_val" / "summary.json").write_text('{"accuracy": 0.74, "macro_f1": 0.64}')
    kept = {"default_one_view": {"val_accuracy": 0.8},
            "distilled": {"ferplus_live3": {"val_accuracy": 0.79}, "student_ens": {"val_accuracy": 0.1}}}
    out = candidates.candidates(tmp_path, kept)
    ens = out["distilled"]["student_ens"]
    assert (ens["epoch"], ens["val_accuracy"], ens["last_val_accuracy"]) == (2, 0.75, 0.78)
    assert (ens["teacher"], ens["precise_bn_val_accuracy"]) == ("teacher_ensemble", 0.74)
    assert out["distilled"]["ferplus_live3"] == {"val_accuracy": 0.79}   # no run folder: kept
    assert "ferplus_live4" not in out["distilled"]                       # neither run nor kept entry
    assert out["default_one_view"] == {"val_accuracy": 0.8}
    assert out["best_distilled_val_accuracy"] == pytest.approx(0.79)
