import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ferwild.metrics import (
    classification_metrics,
    confusion_figure,
    curves_figure,
    expected_calibration_error,
    history_markdown,
    markdown_table,
    reliability_bins,
    reliability_figure,
    summary_markdown,
    train_metrics,
    write_evaluation,
)

NAMES3 = ["anger", "fear", "happiness"]
NAMES6 = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_hot_probs(y_pred, num_classes, top=0.8):
    """Probabilities with ``top`` on the predicted class and the rest spread evenly."""
    y_pred = np.asarray(y_pred)
    probs = np.full((len(y_pred), num_classes), (1 - top) / (num_classes - 1))
    probs[np.arange(len(y_pred)), y_pred] = top
    return probs


def random_case(n=500, c=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def history(epochs):
    e = np.arange(1, epochs + 1)
    return pd.DataFrame({
        "epoch": e,
        "train_loss": 1.0 / e, "val_loss": 0.9 / e + 0.05,
        "train_acc": 1 - 0.3 / e, "val_acc": 1 - 0.35 / e,
        "train_macro_f1": 1 - 0.32 / e, "val_macro_f1": 1 - 0.36 / e,
        "lr": 1e-3 * 0.8 ** (e - 1),
    })


def assert_png(path, min_kb=10):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_kb * 1024, f"{path.name} is only {len(data)} bytes"


# ------------------------------------------------------------------ classification_metrics


def test_classification_metrics_hand_computed():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, one_hot_probs(y_pred, 3, top=0.8), NAMES3)

    # confusion (rows true, cols predicted): [[1,1,0],[0,2,0],[1,0,1]]
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert np.allclose(m["confusion_normalized"], [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])
    # anger: TP1 FP1 FN1; fear: TP2 FP1 FN0; happiness: TP1 FP0 FN1
    expected = {
        "anger": (0.5, 0.5, 0.5),
        "fear": (2 / 3, 1.0, 0.8),
        "happiness": (1.0, 0.5, 2 / 3),
    }
    for name, (p, r, f) in expected.items():
        got = m["per_class"][name]
        assert got["precision"] == pytest.approx(p)
        assert got["recall"] == pytest.approx(r)
        assert got["f1"] == pytest.approx(f)
        assert got["support"] == 2
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    assert m["mean_confidence"] == pytest.approx(0.8)
    assert m["mean_entropy"] == pytest.approx(-(0.8 * np.log(0.8) + 2 * 0.1 * np.log(0.1)))
    # all confidences 0.8 fall in one bin whose accuracy is 2/3
    assert m["ece"] == pytest.approx(0.8 - 4 / 6)
    assert m["label_names"] == NAMES3
    json.dumps(m)  # JSON-able as is


def test_classification_metrics_equals_sklearn_on_random_data():
    y, probs = random_case(n=400, c=6, seed=3)
    pred = probs.argmax(axis=1)
    m = classification_metrics(y, probs, NAMES6)
    labels = list(range(6))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, labels=labels, average="weighted"))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(NAMES6):
        assert m["per_class"][name]["precision"] == pytest.approx(p[i])
        assert m["per_class"][name]["recall"] == pytest.approx(r[i])
        assert m["per_class"][name]["f1"] == pytest.approx(f[i])
        assert m["per_class"][name]["support"] == s[i]
    assert np.array_equal(m["confusion"], confusion_matrix(y, pred, labels=labels))
    assert 0 < m["accuracy"] < 1


def test_absent_class_has_support_zero_and_normalised_rows():
    y_true = np.array([0, 1, 1, 2, 0, 2])
    y_pred = np.array([0, 1, 2, 2, 1, 2])  # class 3 never true, never predicted
    m = classification_metrics(y_true, one_hot_probs(y_pred, 4, top=0.7),
                               NAMES3 + ["surprise"])
    assert m["per_class"]["surprise"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                          "support": 0, "recall_ci": None}
    assert len(m["confusion"]) == 4 and all(len(row) == 4 for row in m["confusion"])
    sums = np.asarray(m["confusion_normalized"]).sum(axis=1)
    assert np.allclose(sums, [1, 1, 1, 0])
    # macro-F1 averages over all four classes (the absent one counts as 0)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))


def test_normalised_confusion_rows_sum_to_one_on_random_data():
    y, probs = random_case(n=300, c=6, seed=1)
    norm = np.asarray(classification_metrics(y, probs, NAMES6)["confusion_normalized"])
    assert np.allclose(norm.sum(axis=1), 1.0)
    assert ((norm >= 0) & (norm <= 1)).all()


@pytest.mark.parametrize("y_true, probs, match", [
    (np.array([], dtype=int), np.zeros((0, 3)), "empty"),
    (np.array([0, 1]), np.full((3, 3), 1 / 3), "rows"),           # N mismatch
    (np.array([0, 1]), np.full((2, 4), 1 / 4), "columns"),        # C != len(label_names)
    (np.array([0, 1]), np.full(2, 0.5), "2-D"),                   # 1-D probs
    (np.array([[0], [1]]), np.full((2, 3), 1 / 3), "1-D"),        # 2-D y_true
    (np.array([0, 3]), np.full((2, 3), 1 / 3), "outside"),        # id too large
    (np.array([-1, 0]), np.full((2, 3), 1 / 3), "outside"),       # negative id
    (np.array([0, 1]), np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]), "softmax"),  # logits
    (np.array([0, 1]), np.full((2, 3), 0.5), "sum to 1"),          # unnormalised scores
    (np.array([0.5, 1]), np.full((2, 3), 1 / 3), "integer"),
])
def test_classification_metrics_rejects_bad_input(y_true, probs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y_true, probs, NAMES3)


def test_train_metrics():
    m = train_metrics(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 3)
    # F1: class 0 = 1, class 1 = 0, class 2 = 0.8
    assert m == {"accuracy": pytest.approx(0.75), "macro_f1": pytest.approx(0.6)}
    with pytest.raises(ValueError):
        train_metrics(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError):
        train_metrics(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError):
        train_metrics(np.array([], dtype=int), np.array([], dtype=int), 3)


# ------------------------------------------------------------------ calibration


def test_ece_perfectly_calibrated_is_small():
    rng = np.random.default_rng(0)
    n, c = 60_000, 4
    conf = rng.uniform(0.3, 1.0, n)
    pred = rng.integers(0, c, n)
    probs = np.repeat(((1 - conf) / (c - 1))[:, None], c, axis=1)
    probs[np.arange(n), pred] = conf
    correct = rng.random(n) < conf
    wrong = (pred + rng.integers(1, c, n)) % c
    y = np.where(correct, pred, wrong)
    assert expected_calibration_error(probs, y) < 0.02


def test_ece_over_confident_model():
    n = 1000
    pred = np.zeros(n, dtype=int)
    probs = np.tile([0.99, 0.005, 0.005], (n, 1))
    y = np.where(np.arange(n) % 2 == 0, 0, 1)        # half correct
    assert expected_calibration_error(probs, y) == pytest.approx(0.49, abs=1e-9)
    assert expected_calibration_error(probs, pred) == pytest.approx(0.01, abs=1e-9)


def test_ece_weights_bins_by_count():
    # three samples at 0.9, all right (gap 0.1); one at 0.6, wrong (gap 0.6)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.75 * 0.1 + 0.25 * 0.6)


def test_reliability_bins_counts_and_edges():
    y, probs = random_case(n=777, c=6, seed=2)
    bins = reliability_bins(probs, y, n_bins=10)
    assert list(bins.columns) == ["bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
    assert len(bins) == 10 and bins["count"].sum() == 777
    assert bins["bin_lower"].iloc[0] == 0 and bins["bin_upper"].iloc[-1] == 1
    filled = bins[bins["count"] > 0]
    assert ((filled["mean_confidence"] > filled["bin_lower"])
            & (filled["mean_confidence"] <= filled["bin_upper"])).all()
    assert bins.loc[bins["count"] == 0, "accuracy"].isna().all()
    # bins are (lower, upper]: confidence exactly 0.5 is in the 2nd of 4 bins, 1.0 in the last
    edge = reliability_bins(np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]]),
                            np.array([0, 0, 1]), n_bins=4)
    assert edge["count"].tolist() == [0, 1, 1, 1]
    assert edge["accuracy"].tolist()[1:] == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        reliability_bins(probs, y, n_bins=0)


# ------------------------------------------------------------------ Markdown


def parse_markdown_table(text):
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    split = [re.split(r"(?<!\\)\|", line.strip())[1:-1] for line in lines]
    return [[c.strip() for c in row] for row in split]


def test_markdown_table_parses():
    frame = pd.DataFrame({"name": ["a|b", "c", "d"], "x": [0.12345, np.nan, 2.0],
                          "k": [1, 2, 3]})
    text = markdown_table(frame, floatfmt=".2f")
    rows = parse_markdown_table(text)
    assert rows[0] == ["name", "x", "k"]
    assert all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1])
    assert rows[1][1].endswith(":") and not rows[1][0].endswith(":")  # numbers right-aligned
    assert len(rows) == 2 + 3 and all(len(r) == 3 for r in rows)
    assert rows[2] == ["a\\|b", "0.12", "1"] and rows[3][1] == ""
    # a non-default index becomes the first column
    indexed = parse_markdown_table(markdown_table(frame.set_index("name")))
    assert indexed[0] == ["name", "x", "k"] and indexed[2][1] == "0.123"


def test_history_markdown_is_table_2():
    text = history_markdown(history(3))
    rows = parse_markdown_table(text)
    assert len(rows) == 2 + 3
    assert rows[0][0] == "epoch" and "val macro-F1 (%)" in rows[0]
    assert rows[2][rows[0].index("train acc (%)")] == "70.00"      # 1 - 0.3 as a percentage
    assert rows[4][rows[0].index("lr")] == "6.40e-04"


def test_summary_markdown_sections():
    y, probs = random_case(n=120, c=6, seed=4)
    summary = classification_metrics(y, probs, NAMES6)
    summary["model"] = "vit_b16"
    text = summary_markdown(summary, title="Test set")
    assert text.startswith("# Test set")
    for needle in ("## Overall", "## Per class", "## Confusion matrix", "vit_b16",
                   f"{100 * summary['accuracy']:.2f}", f"{100 * summary['macro_f1']:.2f}"):
        assert needle in text
    confusion_rows = [r for r in parse_markdown_table(text.split("## Confusion matrix")[1]
                                                      .split("## Details")[0])]
    assert confusion_rows[0][1:] == NAMES6 + ["total"]
    assert [int(r[-1]) for r in confusion_rows[2:]] == np.bincount(y, minlength=6).tolist()


# ------------------------------------------------------------------ figures and files


def test_figures_are_written(tmp_path):
    y, probs = random_case(n=500, c=6, seed=5)
    cm = np.asarray(classification_metrics(y, probs, NAMES6)["confusion"])
    confusion_figure(cm, NAMES6, tmp_path / "cm.png", title="test")
    reliability_figure(probs, y, tmp_path / "rel.png", n_bins=10)
    curves_figure(history(1), tmp_path / "curves1.png")
    curves_figure(history(5), tmp_path / "curves5.png", title="five epochs")
    partial = history(3).drop(columns=["val_loss", "lr"])
    curves_figure(partial, tmp_path / "curves_partial.png")
    for name in ("cm.png", "rel.png", "curves1.png", "curves5.png", "curves_partial.png"):
        assert_png(tmp_path / name)
    with pytest.raises(ValueError):
        confusion_figure(cm[:5], NAMES6, tmp_path / "bad.png")
    with pytest.raises(ValueError):
        curves_figure(history(2).drop(columns=["epoch"]), tmp_path / "bad.png")


def test_write_evaluation(tmp_path):
    y, probs = random_case(n=240, c=6, seed=6)
    rows = pd.DataFrame({
        "path": [f"img_{i}.png" for i in range(240)],
        "split": "test",
        "attr_gender": np.where(np.arange(240) % 3 == 0, "f", "m"),
        "label": "stale",                      # replaced by the generated column
    }, index=np.arange(1000, 1240))            # a non-default index is not carried
    out = tmp_path / "eval"
    summary = write_evaluation(out, y, probs, NAMES6, rows, extra={"model": "resnet50",
                                                                   "epochs": np.int64(3)})
    for name in ("summary.json", "summary.md", "confusion_matrix.png", "reliability.png",
                 "predictions.parquet"):
        assert (out / name).is_file(), name
    assert_png(out / "confusion_matrix.png")
    assert_png(out / "reliability.png")

    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["model"] == "resnet50" and summary["epochs"] == 3 and summary["n"] == 240

    md = (out / "summary.md").read_text()
    assert all(name in md for name in NAMES6)

    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == 240
    prob_cols = [f"prob_{n}" for n in NAMES6]
    assert list(pred.columns) == (["path", "split", "attr_gender", "y_true", "label", "y_pred",
                                   "pred_label", "confidence", "correct"] + prob_cols)
    assert np.allclose(pred[prob_cols].sum(axis=1), 1.0)
    assert pred["path"].tolist() == rows["path"].tolist()
    assert (pred["label"] == np.asarray(NAMES6)[y]).all()
    assert (pred["y_pred"] == probs.argmax(axis=1)).all()
    assert np.allclose(pred["confidence"], probs.max(axis=1))
    assert pred["correct"].mean() == pytest.approx(summary["accuracy"])


def test_write_evaluation_rejects_bad_rows_and_clashing_extra(tmp_path):
    y, probs = random_case(n=20, c=6, seed=7)
    with pytest.raises(ValueError, match="rows"):
        write_evaluation(tmp_path / "a", y, probs, NAMES6, pd.DataFrame({"path": ["x"] * 19}))
    with pytest.raises(ValueError, match="overwrite"):
        write_evaluation(tmp_path / "b", y, probs, NAMES6, extra={"accuracy": 1.0})
    # without rows, predictions start at y_true
    write_evaluation(tmp_path / "c", y, probs, NAMES6)
    assert pd.read_parquet(tmp_path / "c" / "predictions.parquet").columns[0] == "y_true"


def test_chance_level_separates_informative_from_shuffled_predictions():
    from sklearn.metrics import f1_score

    from ferwild.metrics import chance_level

    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    informative = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))
    noise = rng.integers(0, 6, 300)
    good, bad = chance_level(y, informative, 6), chance_level(y, noise, 6)
    # balanced classes and predictions: chance is about 1/6 in both cases
    assert abs(good["macro_f1"] - 1 / 6) < 0.03 and abs(bad["macro_f1"] - 1 / 6) < 0.03
    assert good["p_value"] < 0.01 < bad["p_value"]
    assert good["macro_f1_p99"] > good["macro_f1"]
    # the observed macro-F1 the test compares with is sklearn's, over all classes
    f1 = f1_score(y, informative, labels=list(range(6)), average="macro", zero_division=0)
    assert f1 > good["macro_f1_p99"]
    # a constant answer keeps its bias under shuffling: its chance level is its own score
    constant = np.zeros(300, dtype=int)
    flat = chance_level(y, constant, 6)
    assert flat["p_value"] == 1.0
    assert flat["macro_f1"] == pytest.approx(f1_score(y, constant, labels=list(range(6)), average="macro",
                                                      zero_division=0))
    with pytest.raises(ValueError, match="outside"):
        chance_level(y, np.full(300, 7), 6)


def test_figures_leave_pyplot_alone(tmp_path):
    # a library must not switch its caller's matplotlib backend or leave figures open in pyplot
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import numpy as np; "
            "from ferwild.metrics import confusion_figure; from ferwild.data.balance import class_count_figure; "
            f"confusion_figure(np.eye(3, dtype=int) * 5, ['a', 'b', 'c'], r'{tmp_path / 'c.png'}'); "
            f"class_count_figure({{'a': 3}}, {{'a': 5}}, r'{tmp_path / 'b.png'}'); "
            "import sys; print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "b.png").stat().st_size > 0


def test_formatting_is_one_convention():
    from ferwild.formatting import DASH, first_line, number, p_text, p_value, pct

    assert pct(0.12345) == "12.35" and pct(0.12345, 1) == "12.3"
    assert pct(None) == pct(float("nan")) == DASH and pct(None, missing="n/a") == "n/a"
    assert p_value(0.0004) == "< 0.001" and p_value(0.0123) == "0.012" and p_value(None) == DASH
    assert p_text(0.0004) == "p < 0.001" and p_text(0.0123) == "p = 0.012" and p_text(None, missing="p n/a") == "p n/a"
    assert number(1234.5, ",.0f") == "1,234" and number(float("nan")) == DASH
    assert first_line(ValueError("bad thing\ndetails")) == "ValueError: bad thing"
    assert first_line(KeyError()) == "KeyError" and first_line("  two\nlines") == "two"


def test_risk_coverage_by_hand(tmp_path):
    from ferwild.metrics import risk_coverage, risk_coverage_figure

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.45, 0.55], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 1, 1, 0, 0])   # right, wrong, right, wrong, right
    table = risk_coverage(probs, y, thresholds=(0.0, 0.6, 0.75, 0.95)).set_index("threshold")
    assert table.loc[0.0, "coverage"] == 1.0 and table.loc[0.0, "accuracy"] == pytest.approx(3 / 5)
    # >= 0.6 keeps rows 0, 1, 3, 4 (confidences 0.9, 0.8, 0.7, 0.6)
    assert table.loc[0.6, "n_answered"] == 4 and table.loc[0.6, "accuracy"] == pytest.approx(2 / 4)
    assert table.loc[0.75, "n_answered"] == 2 and table.loc[0.75, "accuracy"] == pytest.approx(1 / 2)
    assert table.loc[0.95, "n_answered"] == 0 and np.isnan(table.loc[0.95, "accuracy"])
    low, high = table.loc[0.0, "accuracy_ci"]
    assert low < 0.6 < high
    risk_coverage_figure({"model": (probs, y)}, tmp_path / "rc.png", title="t")
    assert (tmp_path / "rc.png").stat().st_size > 1000


def test_per_class_recall_has_a_wilson_interval():
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    summary = classification_metrics(np.array([0, 1, 1, 2, 2, 2]), probs, ["a", "b", "c"])
    low, high = summary["per_class"]["b"]["recall_ci"]   # 1 of 2
    assert low < 0.5 < high and 0 <= low and high <= 1
    assert summary["per_class"]["c"]["recall_ci"][1] == 1.0
