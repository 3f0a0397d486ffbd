"""Evaluation metrics, calibration, figures and Markdown tables.

The study's Tables 2-7 and Figures 3-7 come from here.

Everything here works on plain arrays: ``y_true`` is an ``(N,)`` array of integer class ids
and ``probs`` an ``(N, C)`` array of class probabilities (softmax output, rows summing to 1).
Class ids index ``label_names``. The study's per-class "accuracy" (Tables 4, 7, 11) is the
class's *recall*; it is reported as such here.

* :func:`classification_metrics`: accuracy, macro/weighted F1, per-class precision / recall /
  F1 / support, confusion counts and row-normalised confusion, ECE, mean confidence and
  entropy, as a JSON-able dict (the "summary").
* :func:`train_metrics`: the cheap per-epoch pair (accuracy, macro-F1) from predictions.
* :func:`expected_calibration_error`, :func:`reliability_bins`: top-label calibration with
  equal-width confidence bins ``(lower, upper]`` (the first bin also holds 0).
* :func:`confusion_figure`, :func:`reliability_figure`, :func:`curves_figure`: PNG figures,
  drawn on matplotlib's Agg canvas directly (no pyplot, so the global backend is untouched).
* :func:`markdown_table`, :func:`summary_markdown`, :func:`history_markdown`: the Markdown
  twins of the figures.
* :func:`write_evaluation`: everything above for one evaluated split, written to a folder.

Accuracy and F1 are fractions in [0, 1] everywhere in data (dicts, JSON, history frames);
the Markdown tables show them as percentages, like the study.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.formatting import pct
from ferwild.plotting import new_figure, save_figure

__all__ = [
    "classification_metrics",
    "train_metrics",
    "expected_calibration_error",
    "reliability_bins",
    "confusion_figure",
    "reliability_figure",
    "curves_figure",
    "markdown_table",
    "summary_markdown",
    "history_markdown",
    "write_evaluation",
]

# Tolerance on |sum(row) - 1| before probs are rejected (float16 softmax stays well inside it;
# logits or unnormalised scores almost never do).
_PROB_SUM_ATOL = 1e-2


# --------------------------------------------------------------------------------------------
# validation helpers


def as_class_ids(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """``y`` as a 1-D int64 array of class ids, or a one-line ``ValueError`` (not 1-D, empty,
    not integer-valued, or, with ``num_classes``, outside ``0..num_classes-1``)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: cannot compute metrics on 0 samples")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class ids, got NaN or non-integer values")
    arr = arr.astype(np.int64)
    if num_classes is not None:
        _check_range(arr, num_classes, name)
    return arr


_as_labels = as_class_ids


def _check_range(y: np.ndarray, num_classes: int, name: str) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} has class id {bad} outside 0..{num_classes - 1} ({num_classes} classes)"
        )


def _as_probs(probs: Any, n: int | None = None, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probs must be a 2-D (N, C) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("probs is empty: cannot compute metrics on 0 samples")
    if arr.shape[1] == 0:
        raise ValueError("probs has 0 classes (shape (N, 0))")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"probs has {arr.shape[0]} rows but y_true has {n} samples")
    if num_classes is not None and arr.shape[1] != num_classes:
        raise ValueError(
            f"probs has {arr.shape[1]} columns but there are {num_classes} label names"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("probs contains NaN or infinite values")
    if arr.min() < -_PROB_SUM_ATOL or arr.max() > 1 + _PROB_SUM_ATOL:
        raise ValueError(
            "probs must be probabilities in [0, 1] (apply softmax to logits first)"
        )
    sums = arr.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _PROB_SUM_ATOL:
        raise ValueError(
            f"probs rows must sum to 1 (row {worst} sums to {sums[worst]:.4f}); "
            "apply softmax to logits first"
        )
    return np.clip(arr, 0.0, 1.0)


def _check_n_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _row_normalize(confusion: np.ndarray) -> np.ndarray:
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(totals > 0, confusion / np.where(totals > 0, totals, 1), 0.0)
    return out


# --------------------------------------------------------------------------------------------
# metrics


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, label_names: Sequence[str]
) -> dict:
    """All test metrics of one evaluated split, as a JSON-able dict.

    Args:
        y_true: ``(N,)`` integer class ids in ``0..C-1``.
        probs: ``(N, C)`` class probabilities (rows sum to 1); the prediction is the argmax.
        label_names: the ``C`` class names, in class-id order.

    Returns:
        ``{"n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class", "confusion",
        "confusion_normalized", "label_names", "mean_confidence", "mean_entropy", "chance"}`` where
        ``per_class[label] = {"precision", "recall", "f1", "support"}`` for every class (a class
        absent from ``y_true`` has support 0 and, with ``zero_division=0``, recall 0),
        ``confusion`` has rows = true class and columns = predicted class, and
        ``confusion_normalized`` divides each row by its total (empty rows stay 0). Macro-F1
        averages over all ``C`` classes. ``mean_entropy`` is in nats. ``chance`` is
        :func:`chance_level` of the predictions: the macro-F1 of predictions shuffled against
        the labels, and the permutation p-value of the real one.

    Raises:
        ValueError: empty input, shape mismatches, class ids out of range, or probs that are
            not probabilities.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    names = [str(x) for x in label_names]
    if not names:
        raise ValueError("label_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names has duplicates: {names}")
    y = _as_labels(y_true, "y_true")
    p = _as_probs(probs, n=len(y), num_classes=len(names))
    num_classes = len(names)
    _check_range(y, num_classes, "y_true")

    labels = list(range(num_classes))
    y_pred = p.argmax(axis=1)
    confidence = p.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=labels, zero_division=0
    )
    confusion = confusion_matrix(y, y_pred, labels=labels)
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, y_pred)),
        "macro_f1": float(f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(y, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "ece": float(expected_calibration_error(p, y)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "recall_ci": list(wilson_interval(int(confusion[i, i]), int(support[i]))) if support[i] else None,
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion": confusion.astype(int).tolist(),
        "confusion_normalized": _row_normalize(confusion).tolist(),
        "label_names": names,
        "mean_confidence": float(confidence.mean()),
        "mean_entropy": float(entropy.mean()),
        "chance": chance_level(y, y_pred, num_classes),
    }


def _macro_f1_from_counts(confusions: np.ndarray) -> np.ndarray:
    """Macro-F1 over all C classes of a ``(..., C, C)`` stack of confusion matrices (0 where undefined)."""
    tp = np.diagonal(confusions, axis1=-2, axis2=-1).astype(np.float64)
    denominator = confusions.sum(axis=-1) + confusions.sum(axis=-2)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=-1)


def chance_level(y_true: Any, y_pred: Any, num_classes: int, *, n_permutations: int = 2000,
                 seed: int = 0) -> dict:
    """How a model's macro-F1 compares with chance: a permutation test.

    The null hypothesis is "the predictions carry no information about the labels": shuffling
    the predictions against the labels keeps both class mixes (a model that always answers
    "happiness" keeps its bias) and destroys only the link between them. The chance level is
    the mean macro-F1 over ``n_permutations`` shuffles (about 1/C for balanced classes and
    predictions); the p-value is the share of shuffles at least as good as the real one
    (with the usual +1 correction, so never 0).

    Returns:
        ``{"macro_f1": chance level, "macro_f1_p99": the shuffles' 99th percentile,
        "p_value", "n_permutations"}``.
    """
    y = _as_labels(y_true, "y_true")
    yp = _as_labels(y_pred, "y_pred")
    if len(y) != len(yp) or not len(y):
        raise ValueError(f"y_true and y_pred need the same non-zero length, got {len(y)} and {len(yp)}")
    _check_range(y, num_classes, "y_true")
    _check_range(yp, num_classes, "y_pred")
    observed = _macro_f1_from_counts(np.bincount(y * num_classes + yp, minlength=num_classes ** 2)
                                     .reshape(num_classes, num_classes))
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    step = max(1, 2_000_000 // len(y))  # shuffles per batch: bounded memory on large splits
    offsets = None
    for start in range(0, n_permutations, step):
        k = min(step, n_permutations - start)
        shuffled = rng.permuted(np.broadcast_to(yp, (k, len(yp))), axis=1)
        if offsets is None or len(offsets) != k:
            offsets = (np.arange(k) * num_classes ** 2)[:, None]
        counts = np.bincount((offsets + y[None, :] * num_classes + shuffled).ravel(),
                             minlength=k * num_classes ** 2).reshape(k, num_classes, num_classes)
        null[start:start + k] = _macro_f1_from_counts(counts)
    return {
        "macro_f1": float(null.mean()),
        "macro_f1_p99": float(np.quantile(null, 0.99)),
        "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations)),
        "n_permutations": int(n_permutations),
    }


def train_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro-F1 (over all ``num_classes`` classes) from predicted class ids.

    The cheap pair logged every epoch (the study's Table 2 columns). Raises ``ValueError`` on
    empty input, length mismatch or ids out of range.
    """
    from sklearn.metrics import f1_score

    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    y = _as_labels(y_true, "y_true")
    yp = _as_labels(y_pred, "y_pred")
    if len(y) != len(yp):
        raise ValueError(f"y_true has {len(y)} samples but y_pred has {len(yp)}")
    _check_range(y, num_classes, "y_true")
    _check_range(yp, num_classes, "y_pred")
    return {
        "accuracy": float(np.mean(y == yp)),
        "macro_f1": float(
            f1_score(y, yp, labels=list(range(num_classes)), average="macro", zero_division=0)
        ),
    }


# --------------------------------------------------------------------------------------------
# calibration


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Top-label confidence vs accuracy in ``n_bins`` equal-width bins over [0, 1].

    A sample falls in bin ``k`` when ``k/n < confidence <= (k+1)/n`` (confidence 0 goes to the
    first bin). Returns one row per bin, empty bins included, with columns ``bin_lower``,
    ``bin_upper``, ``count``, ``mean_confidence`` and ``accuracy`` (the last two NaN for an
    empty bin).
    """
    n_bins = _check_n_bins(n_bins)
    y = _as_labels(y_true, "y_true")
    p = _as_probs(probs, n=len(y))
    _check_range(y, p.shape[1], "y_true")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        accuracy = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count.astype(np.int64),
            "mean_confidence": mean_conf,
            "accuracy": accuracy,
        }
    )


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al., 2017) with equal-width bins.

    ``ECE = sum_k (n_k / N) * |accuracy_k - mean_confidence_k|`` over the bins of
    :func:`reliability_bins`. 0 is perfect calibration; the value is a fraction in [0, 1].
    """
    bins = reliability_bins(probs, y_true, n_bins=n_bins)
    filled = bins[bins["count"] > 0]
    n = int(bins["count"].sum())
    gaps = (filled["accuracy"] - filled["mean_confidence"]).abs()
    return float((gaps * filled["count"]).sum() / n)


# --------------------------------------------------------------------------------------------
# figures


def _draw_matrix(ax, values: np.ndarray, text: list[list[str]], names: list[str], *,
                 vmax: float, cmap: str, fontsize: float, row_names: list[str]) -> Any:
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax if vmax > 0 else 1.0,
                      interpolation="nearest", aspect="equal")
    c = len(names)
    threshold = (vmax if vmax > 0 else 1.0) * 0.55
    for i in range(c):
        for j in range(c):
            colour = "white" if values[i, j] > threshold else "black"
            ax.text(j, i, text[i][j], ha="center", va="center", color=colour,
                    fontsize=fontsize, fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(names, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(row_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    style_cell_grid(ax, c, c)
    return image


def style_cell_grid(ax, n_rows: int, n_cols: int, linewidth: float = 1.0) -> None:
    """Thin white lines between the cells of a heatmap, no frame (confusion matrices, Figure 8)."""
    ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=linewidth)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def confusion_figure(confusion: np.ndarray, label_names: Sequence[str], path, *,
                     title: str = "") -> None:
    """Write a PNG with two confusion-matrix panels: counts, and row-normalised percentages.

    Rows are the true classes (each labelled with its support), columns the predicted ones;
    every cell is annotated, the diagonal in bold.
    """
    cm = np.asarray(confusion)
    names = [str(x) for x in label_names]
    c = len(names)
    if cm.ndim != 2 or cm.shape != (c, c):
        raise ValueError(f"confusion must be ({c}, {c}) for {c} labels, got shape {cm.shape}")
    cm = cm.astype(np.float64)
    norm = _row_normalize(cm)
    support = cm.sum(axis=1).astype(np.int64)
    row_names = [f"{name}\n(n={n:,})" for name, n in zip(names, support)]

    cell = max(0.55, min(0.95, 6.0 / max(c, 1)))       # inches per cell
    side = max(3.2, cell * c)
    fontsize = 10 if c <= 6 else (8.5 if c <= 10 else 7)
    fig = new_figure((2 * side + 3.6, side + 1.6), layout="constrained")
    axes = fig.subplots(1, 2)

    counts_text = [[f"{int(v):,}" for v in row] for row in cm]
    im0 = _draw_matrix(axes[0], cm, counts_text, names, vmax=float(cm.max()), cmap="Blues",
                       fontsize=fontsize, row_names=row_names)
    axes[0].set_title("Counts")
    fig.colorbar(im0, ax=axes[0], fraction=0.046, pad=0.04)

    norm_text = [[f"{100 * v:.1f}" if v > 0 else "0" for v in row] for row in norm]
    im1 = _draw_matrix(axes[1], norm, norm_text, names, vmax=1.0, cmap="Blues",
                       fontsize=fontsize, row_names=row_names)
    axes[1].set_title("Row-normalised (% of true class = recall on the diagonal)")
    cbar = fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
    cbar.set_ticks([0, 0.25, 0.5, 0.75, 1.0])
    cbar.set_ticklabels(["0%", "25%", "50%", "75%", "100%"])

    total = int(cm.sum())
    acc = float(np.trace(cm) / total) if total else float("nan")
    heading = title or "Confusion matrix"
    fig.suptitle(f"{heading}\n(n={total:,}, accuracy={100 * acc:.1f}%)", fontsize=12)
    save_figure(fig, path)


def reliability_figure(probs: np.ndarray, y_true: np.ndarray, path, *, n_bins: int = 15,
                       title: str = "") -> None:
    """Write a reliability diagram (accuracy vs confidence per bin) over a confidence histogram.

    Bars show each bin's accuracy, the red hatched box its gap to the bin's mean confidence; the
    dashed diagonal is perfect calibration. The title carries the ECE.
    """
    bins = reliability_bins(probs, y_true, n_bins=n_bins)
    ece = expected_calibration_error(probs, y_true, n_bins=n_bins)
    n = int(bins["count"].sum())
    width = 1.0 / len(bins)
    centers = (bins["bin_lower"] + bins["bin_upper"]).to_numpy() / 2
    filled = bins["count"].to_numpy() > 0
    acc = np.nan_to_num(bins["accuracy"].to_numpy())
    conf = np.nan_to_num(bins["mean_confidence"].to_numpy())

    fig = new_figure((6.4, 7.2))
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.2), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)

    ax.bar(centers[filled], acc[filled], width=width * 0.95, color="#4C72B0",
           edgecolor="#2B4C7E", label="accuracy")
    gap_bottom = np.minimum(acc, conf)[filled]
    gap_height = np.abs(conf - acc)[filled]
    ax.bar(centers[filled], gap_height, bottom=gap_bottom, width=width * 0.95,
           facecolor=(0.87, 0.52, 0.32, 0.25), edgecolor="#C44E52", hatch="///", linewidth=1.0,
           label="gap: accuracy vs mean confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.3", linewidth=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    ax.tick_params(labelbottom=False)
    heading = title or "Reliability diagram"
    ax.set_title(f"{heading}\nECE = {100 * ece:.2f}% ({len(bins)} bins, n={n:,})", fontsize=11)

    counts = bins["count"].to_numpy()
    hist.bar(centers, counts, width=width * 0.95, color="0.55", edgecolor="0.35")
    all_conf = float((conf * counts).sum() / n)
    all_acc = float((acc * counts).sum() / n)
    hist.axvline(all_conf, color="#C44E52", linestyle="-", linewidth=1.5,
                 label=f"mean confidence {100 * all_conf:.1f}%")
    hist.axvline(all_acc, color="#4C72B0", linestyle="--", linewidth=1.5,
                 label=f"accuracy {100 * all_acc:.1f}%")
    hist.set_xlabel("Confidence (top-class probability)")
    hist.set_ylabel("Samples")
    hist.legend(loc="upper left", fontsize=8)
    hist.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(left=0.13, right=0.96, top=0.9, bottom=0.09)
    save_figure(fig, path)


_CURVE_PANELS = (
    ("Loss", (("train_loss", "train"), ("val_loss", "validation")), False),
    ("Accuracy", (("train_acc", "train"), ("val_acc", "validation")), True),
    ("Macro-F1", (("train_macro_f1", "train"), ("val_macro_f1", "validation")), True),
)
_CURVE_STYLE = {"train": dict(color="#4C72B0", marker="o"),
                "validation": dict(color="#DD8452", marker="s")}


def curves_figure(history: pd.DataFrame, path, *, title: str = "") -> None:
    """Per-epoch training curves (the study's Figures 3 and 6), as a 2x2 PNG.

    Panels: loss (``train_loss``, ``val_loss``), accuracy (``train_acc``, ``val_acc``),
    macro-F1 (``train_macro_f1``, ``val_macro_f1``) and the learning rate (``lr``), all
    against ``epoch``. Missing or all-NaN columns are left out (a panel with none says so);
    one epoch draws single markers.
    """
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if "epoch" not in history.columns:
        raise ValueError("history needs an 'epoch' column")
    if len(history) == 0:
        raise ValueError("history is empty")
    hist = history.sort_values("epoch")
    epochs = pd.to_numeric(hist["epoch"]).to_numpy(dtype=np.float64)

    def column(name: str) -> np.ndarray | None:
        if name not in hist.columns:
            return None
        values = pd.to_numeric(hist[name], errors="coerce").to_numpy(dtype=np.float64)
        return None if np.all(np.isnan(values)) else values

    fig = new_figure((11.0, 7.6))
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, series, as_percent) in zip(axes, _CURVE_PANELS):
        drawn = 0
        for col, who in series:
            values = column(col)
            if values is None:
                continue
            last = values[~np.isnan(values)][-1]
            shown = f"{100 * last:.1f}%" if as_percent else f"{last:.3f}"
            ax.plot(epochs, values, linewidth=1.8, markersize=6,
                    label=f"{who} (last {shown})", **_CURVE_STYLE[who])
            drawn += 1
        ax.set_title(name)
        if drawn:
            ax.legend(fontsize=9, loc="best")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
        if as_percent:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0 if drawn else None))

    lr_ax = axes[3]
    lr = column("lr")
    if lr is not None:
        lr_ax.plot(epochs, lr, color="#55A868", marker="D", linewidth=1.8, markersize=6,
                   label=f"lr (last {lr[~np.isnan(lr)][-1]:.2e})")
        positive = lr[~np.isnan(lr)]
        if np.all(positive > 0) and positive.max() / positive.min() > 10:
            lr_ax.set_yscale("log")
        else:
            lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        lr_ax.legend(fontsize=9, loc="best")
    else:
        lr_ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                   transform=lr_ax.transAxes, color="0.5")
    lr_ax.set_title("Learning rate")

    lo, hi = float(np.nanmin(epochs)), float(np.nanmax(epochs))
    pad = 0.5 if hi == lo else 0.05 * (hi - lo)
    distinct = np.unique(epochs[~np.isnan(epochs)])
    integral = bool(np.all(distinct == np.round(distinct)))
    for ax in axes:
        ax.set_xlim(lo - pad, hi + pad)
        if integral and len(distinct) <= 15:
            ax.set_xticks(distinct)
            ax.set_xticklabels([str(int(e)) for e in distinct])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=integral, nbins=10, min_n_ticks=1))
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Training curves", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Markdown


def _md_cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(float(value)):
            return ""
        return format(float(value), floatfmt)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value is pd.NA or value is pd.NaT:
        return ""
    text = str(value).replace("\r\n", " ").replace("\n", " ").replace("|", "\\|")
    return text


def _looks_numeric(column: pd.Series, cells: list[str]) -> bool:
    """Right-align numeric columns, and text columns whose every cell reads as a number."""
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    filled = [c for c in cells if c]
    if not filled:
        return False
    try:
        for c in filled:
            float(c.replace(",", "").rstrip("%"))
    except ValueError:
        return False
    return True


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """Render ``frame`` as a GitHub-flavoured Markdown table (no ``tabulate`` needed).

    The index is written as the first column unless it is the default ``RangeIndex``. Floats
    use ``floatfmt``, NaN/None become empty cells, ``|`` is escaped, numeric columns are
    right-aligned. Columns are padded so the raw text lines up too.
    """
    df = frame
    if not (isinstance(df.index, pd.RangeIndex) and df.index.name is None
            and df.index.start == 0 and df.index.step == 1):
        df = df.reset_index()
    headers = [_md_cell(c, floatfmt) for c in df.columns]
    body = [[_md_cell(v, floatfmt) for v in row]
            for row in df.itertuples(index=False, name=None)]
    numeric = [_looks_numeric(df.iloc[:, j], [r[j] for r in body])
               for j in range(len(df.columns))]
    widths = [max([4, len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [cell.rjust(w) if num else cell.ljust(w)
                  for cell, w, num in zip(cells, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w
                            for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(headers), sep] + [line(r) for r in body]) + "\n"


_SUMMARY_KEYS = {
    "n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class", "confusion",
    "confusion_normalized", "label_names", "mean_confidence", "mean_entropy", "crowd",
}


def summary_markdown(summary: Mapping[str, Any], title: str = "Evaluation") -> str:
    """The Markdown twin of the evaluation figures (the study's Tables 3-4 and Figure 4).

    Sections: overall metrics (accuracy, macro-F1, weighted-F1, ECE, mean confidence, mean
    entropy, n), per class (precision, recall = the study's per-class "accuracy", F1,
    support), the confusion counts (rows = true, columns = predicted), and any extra scalar
    entries of ``summary`` (e.g. model, split). Percentages are out of 100.
    """
    names = list(summary.get("label_names") or list(summary.get("per_class", {})))
    parts = [f"# {title}", ""]

    overall = [
        ("accuracy (%)", pct(summary.get("accuracy"), missing="")),
        ("macro-F1 (%)", pct(summary.get("macro_f1"), missing="")),
        ("weighted-F1 (%)", pct(summary.get("weighted_f1"), missing="")),
        ("ECE (%)", pct(summary.get("ece"), missing="")),
        ("mean confidence (%)", pct(summary.get("mean_confidence"), missing="")),
        ("mean entropy (nats)", f"{float(summary['mean_entropy']):.3f}"
         if summary.get("mean_entropy") is not None else ""),
        ("n", f"{int(summary['n']):,}" if summary.get("n") is not None else ""),
    ]
    overall_frame = pd.DataFrame(overall, columns=["metric", "value"])
    parts += ["## Overall", "", markdown_table(overall_frame)]

    per_class = summary.get("per_class") or {}
    if per_class:
        rows = []
        for name in names:
            m = per_class.get(name, {})
            rows.append({
                "class": name,
                "precision (%)": pct(m.get("precision"), missing=""),
                "recall = accuracy (%)": pct(m.get("recall"), missing=""),
                "recall 95% CI": (f"{pct(m['recall_ci'][0])}-{pct(m['recall_ci'][1])}"
                                  if m.get("recall_ci") else ""),
                "F1 (%)": pct(m.get("f1"), missing=""),
                "support": int(m.get("support", 0)),
            })
        parts += ["## Per class", "",
                  "Recall is the study's per-class \"accuracy\" (Tables 4, 7, 11).", "",
                  markdown_table(pd.DataFrame(rows))]

    confusion = summary.get("confusion")
    if confusion is not None and names:
        cm = np.asarray(confusion, dtype=np.int64)
        frame = pd.DataFrame(cm, columns=names)
        frame.insert(0, "true \\ predicted", names)
        frame["total"] = cm.sum(axis=1)
        parts += ["## Confusion matrix", "",
                  "Rows are the true class, columns the predicted class.", "",
                  markdown_table(frame)]

    extras = [(k, v) for k, v in summary.items()
              if k not in _SUMMARY_KEYS and (v is None or isinstance(v, (str, int, float, bool)))]
    if extras:
        frame = pd.DataFrame({"key": [k for k, _ in extras],
                              "value": [_md_cell(v, ".4g") for _, v in extras]})
        parts += ["## Details", "", markdown_table(frame)]
    return "\n".join(parts).rstrip("\n") + "\n"


_HISTORY_COLUMNS = (
    ("epoch", "epoch", "int"),
    ("train_loss", "train loss", "loss"),
    ("train_acc", "train acc (%)", "pct"),
    ("train_macro_f1", "train macro-F1 (%)", "pct"),
    ("val_loss", "val loss", "loss"),
    ("val_acc", "val acc (%)", "pct"),
    ("val_macro_f1", "val macro-F1 (%)", "pct"),
    ("lr", "lr", "sci"),
    ("val_count", "val n", "int"),
    ("train_img_per_s", "img/s", "rate"),
)


def history_markdown(history: pd.DataFrame) -> str:
    """Per-epoch Markdown table (the study's Tables 2 and 5), the twin of :func:`curves_figure`.

    Known columns come first in the study's order (epoch, train loss / accuracy / macro-F1,
    validation loss / accuracy / macro-F1, lr), accuracy and F1 as percentages; any other
    columns follow as they are.
    """
    if "epoch" in history.columns:
        history = history.sort_values("epoch")
    out: dict[str, list[str]] = {}
    known = set()
    for col, header, kind in _HISTORY_COLUMNS:
        if col not in history.columns:
            continue
        known.add(col)
        values = history[col].tolist()
        if kind == "int":
            cells = [_md_cell(int(v) if float(v).is_integer() else v, ".3g")
                     if v is not None and not pd.isna(v) else "" for v in values]
        elif kind == "pct":
            cells = [pct(v, missing="") if v is not None and not pd.isna(v) else "" for v in values]
        elif kind == "sci":
            cells = [_md_cell(v, ".2e") for v in values]
        elif kind == "rate":
            cells = [f"{float(v):,.0f}" if v is not None and not pd.isna(v) else "" for v in values]
        else:
            cells = [_md_cell(v, ".4f") for v in values]
        out[header] = cells
    frame = pd.DataFrame(out)
    for col in history.columns:
        if col not in known:
            frame[str(col)] = [_md_cell(v, ".3f") for v in history[col].tolist()]
    return markdown_table(frame)


# --------------------------------------------------------------------------------------------
# one evaluated split -> files


def jsonable(value: Any, *, digits: int | None = None, nan_to_none: bool = False) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into plain JSON types;
    floats optionally rounded to ``digits``, and NaN/inf optionally turned into ``None``
    (strict JSON has no NaN)."""
    def walk(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, np.ndarray):
            return walk(v.tolist())
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            if nan_to_none and not math.isfinite(f):
                return None
            return round(f, digits) if digits is not None and math.isfinite(f) else f
        if isinstance(v, Path):
            return str(v)
        return v

    return walk(value)


_jsonable = jsonable


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(log p / T)`` on
    labelled rows (Guo et al. 2017); 1.0 means the probabilities were already calibrated."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[rows, labels] - np.log(np.exp(z).sum(1))).mean())

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(math.exp(res.x))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities re-scaled by a temperature (``softmax(log p / T)``)."""
    z = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def risk_coverage(probs: np.ndarray, y_true: np.ndarray,
                  thresholds: Sequence[float] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> pd.DataFrame:
    """What abstaining below a confidence buys: one row per threshold ``t`` (a face is answered
    when its top probability is >= t), with ``coverage`` (share answered), ``accuracy`` and
    ``macro_f1`` on the answered faces, ``accuracy_ci`` (Wilson) and ``n_answered``.
    """
    from sklearn.metrics import f1_score

    y = _as_labels(y_true, "y_true")
    p = _as_probs(probs, n=len(y))
    confidence, pred = p.max(1), p.argmax(1)
    rows = []
    for t in thresholds:
        kept = confidence >= t
        n = int(kept.sum())
        correct = int((pred[kept] == y[kept]).sum())
        rows.append({"threshold": float(t), "coverage": n / len(y), "n_answered": n,
                     "accuracy": correct / n if n else float("nan"),
                     "accuracy_ci": list(wilson_interval(correct, n)),
                     "macro_f1": float(f1_score(y[kept], pred[kept], labels=list(range(p.shape[1])),
                                                average="macro", zero_division=0)) if n else float("nan")})
    return pd.DataFrame(rows)


def risk_coverage_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path, *, title: str = "") -> None:
    """Accuracy of the answered faces against the share answered (sorted by confidence), one
    line per ``name -> (probs, y_true)``: the selective-classification (risk-coverage) curve."""
    from ferwild.plotting import save_figure, subplots

    fig, ax = subplots(figsize=(6.4, 4.4), layout="constrained")
    for name, (probs, y_true) in curves.items():
        p, y = np.asarray(probs), np.asarray(y_true)
        order = np.argsort(-p.max(1), kind="stable")
        correct = (p.argmax(1) == y)[order]
        answered = np.arange(1, len(y) + 1)
        ax.plot(answered / len(y), 100 * np.cumsum(correct) / answered, label=name, linewidth=1.8)
    ax.set_xlabel("coverage (share of faces answered, most confident first)")
    ax.set_ylabel("accuracy of the answered faces (%)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    save_figure(fig, path)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% for z = 1.96); ``(nan, nan)`` when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_ci(values: np.ndarray, boot_index: np.ndarray, confidence: float) -> dict[str, float]:
    """A mean with its percentile-bootstrap interval over the rows drawn in ``boot_index``."""
    draws = values[boot_index].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {"value": float(values.mean()), "ci_low": float(np.quantile(draws, alpha)),
            "ci_high": float(np.quantile(draws, 1 - alpha))}


def crowd_metrics(probs: np.ndarray, votes: np.ndarray, y_true: np.ndarray, label_names: Sequence[str], *,
                  n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """How a model reads faces against a crowd's votes (FER+), with bootstrap intervals.

    Args:
        probs: ``(N, C)`` predicted probabilities.
        votes: ``(N, C)`` vote distributions over the same classes (rows sum to 1;
            :func:`ferwild.data.votes.soft_targets`).
        y_true: ``(N,)`` the hard (majority) labels, which group the per-class figures.

    Returns:
        ``{"n", "vote_cross_entropy", "crowd_agreement", "plurality_agreement",
        "majority_accuracy", "per_class"}``, each figure ``{"value", "ci_low", "ci_high"}``:

        * ``vote_cross_entropy``: mean ``-sum_c votes_c log p_c`` (nats; the soft-label loss);
        * ``crowd_agreement``: mean share of the crowd that voted for the predicted class (the
          accuracy against one labeller drawn at random from the crowd);
        * ``plurality_agreement``: share of faces whose prediction is one of the most-voted
          classes (ties count as agreement);
        * ``majority_accuracy``: accuracy against ``y_true`` (Wilson interval);
        * ``per_class[name]``: for the faces of that majority class, ``recall`` (Wilson) and
          ``crowd_agreement`` (bootstrap), with ``support``.
    """
    names = [str(x) for x in label_names]
    y = _as_labels(y_true, "y_true")
    p = _as_probs(probs, n=len(y), num_classes=len(names))
    v = np.asarray(votes, dtype=np.float64)
    if v.shape != p.shape:
        raise ValueError(f"votes have shape {v.shape}, probabilities {p.shape}")
    if not np.isfinite(v).all() or (v < 0).any() or not np.allclose(v.sum(1), 1, atol=1e-4):
        raise ValueError("votes must be finite, non-negative distributions (rows summing to 1)")
    pred = p.argmax(1)
    rows = np.arange(len(y))
    ce = -(v * np.log(np.clip(p, 1e-12, None))).sum(1)
    agreement = v[rows, pred]
    plurality = (v[rows, pred] >= v.max(1) - 1e-9).astype(np.float64)
    correct = (pred == y).astype(np.float64)
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
    per_class = {}
    for c, name in enumerate(names):
        members = np.flatnonzero(y == c)
        if len(members) == 0:
            per_class[name] = {"support": 0, "recall": None, "crowd_agreement": None}
            continue
        low, high = wilson_interval(int(correct[members].sum()), len(members))
        inner = rng.integers(0, len(members), size=(n_bootstrap, len(members)))
        per_class[name] = {
            "support": int(len(members)),
            "recall": {"value": float(correct[members].mean()), "ci_low": low, "ci_high": high},
            "crowd_agreement": _mean_ci(agreement[members], inner, confidence),
        }
    low, high = wilson_interval(int(correct.sum()), len(y))
    return {
        "n": int(len(y)),
        "vote_cross_entropy": _mean_ci(ce, boot, confidence),
        "crowd_agreement": _mean_ci(agreement, boot, confidence),
        "plurality_agreement": _mean_ci(plurality, boot, confidence),
        "majority_accuracy": {"value": float(correct.mean()), "ci_low": low, "ci_high": high},
        "per_class": per_class,
    }


def crowd_markdown(crowd: Mapping[str, Any]) -> str:
    """The Markdown section of :func:`crowd_metrics`: overall figures, then per class."""
    def ci(m, scale=100.0, digits=1):
        if not m:
            return ""
        return (f"{m['value'] * scale:.{digits}f} [{m['ci_low'] * scale:.{digits}f}, "
                f"{m['ci_high'] * scale:.{digits}f}]")
    overall = pd.DataFrame([
        ("majority-label accuracy (%)", ci(crowd["majority_accuracy"])),
        ("plurality agreement (%)", ci(crowd["plurality_agreement"])),
        ("crowd agreement (%)", ci(crowd["crowd_agreement"])),
        ("cross-entropy to the votes (nats)", ci(crowd["vote_cross_entropy"], 1.0, 3)),
        ("n", f"{int(crowd['n']):,}"),
    ], columns=["figure [95% interval]", "value"])
    rows = [{"class": name, "recall (%)": ci(m["recall"]), "crowd agreement (%)": ci(m["crowd_agreement"]),
             "support": m["support"]} for name, m in crowd["per_class"].items()]
    return "\n".join([
        "## Against the crowd's votes", "",
        "Crowd agreement is the share of the crowd that voted for the predicted class (accuracy "
        "against one labeller drawn at random); plurality agreement counts a prediction that is one "
        "of the most-voted classes. Intervals: Wilson for proportions, bootstrap over faces otherwise.", "",
        markdown_table(overall), "", "Per majority class:", "", markdown_table(pd.DataFrame(rows)), ""])


def write_evaluation(out_dir, y_true: np.ndarray, probs: np.ndarray,
                     label_names: Sequence[str], rows: pd.DataFrame | None = None, *,
                     extra: dict | None = None, votes: np.ndarray | None = None) -> dict:
    """Evaluate one split and write its files into ``out_dir`` (created if needed).

    With ``votes`` (``(N, C)`` vote distributions, FER+) the summary also holds ``crowd``
    (:func:`crowd_metrics`) and summary.md its section.

    Files: ``summary.json`` (:func:`classification_metrics` plus ``extra``), ``summary.md``
    (:func:`summary_markdown`), ``confusion_matrix.png``, ``reliability.png`` and
    ``predictions.parquet`` with one row per sample: the columns of ``rows`` (if given, in
    sample order; a column named like a generated one is replaced by it), then ``y_true``,
    ``label``, ``y_pred``, ``pred_label``, ``confidence``, ``correct`` and ``prob_<label>``
    per class.

    Returns:
        The summary dict, as written to ``summary.json``.

    Raises:
        ValueError: bad inputs (see :func:`classification_metrics`), ``rows`` of the wrong
            length, or an ``extra`` key that would overwrite a metric.
    """
    names = [str(x) for x in label_names]
    summary = classification_metrics(y_true, probs, names)
    if votes is not None:
        summary["crowd"] = crowd_metrics(probs, votes, y_true, names)
    if extra:
        clash = sorted(set(map(str, extra)) & set(summary))
        if clash:
            raise ValueError(f"extra keys would overwrite metrics: {clash}")
        summary.update(_jsonable(dict(extra)))
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if rows is not None and len(rows) != len(y):
        raise ValueError(f"rows has {len(rows)} rows but y_true has {len(y)} samples")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _jsonable(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    markdown = summary_markdown(summary)
    if "crowd" in summary:
        markdown += "\n" + crowd_markdown(summary["crowd"])
    (out / "summary.md").write_text(markdown, encoding="utf-8")

    heading = " ".join(str(summary[k]) for k in ("model", "split") if k in summary)
    confusion_figure(np.asarray(summary["confusion"]), names, out / "confusion_matrix.png",
                     title=f"Confusion matrix{': ' + heading if heading else ''}")
    reliability_figure(p, y, out / "reliability.png",
                       title=f"Reliability{': ' + heading if heading else ''}")

    y_pred = p.argmax(axis=1)
    name_arr = np.asarray(names, dtype=object)
    generated = pd.DataFrame({
        "y_true": y,
        "label": name_arr[y],
        "y_pred": y_pred.astype(np.int64),
        "pred_label": name_arr[y_pred],
        "confidence": p.max(axis=1),
        "correct": y_pred == y,
    })
    prob_cols = pd.DataFrame(p, columns=[f"prob_{n}" for n in names])
    generated = pd.concat([generated, prob_cols], axis=1)
    if rows is not None:
        carried = rows.reset_index(drop=True)
        carried = carried.drop(columns=[c for c in carried.columns if c in generated.columns])
        predictions = pd.concat([carried, generated], axis=1)
    else:
        predictions = generated
    predictions.to_parquet(out / "predictions.parquet", index=False)
    return summary
