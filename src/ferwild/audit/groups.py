"""Subgroup bias with bootstrap CIs, and "data health" comparisons between two datasets.

Two questions about a model in production:

* **Who does it fail?** :func:`subgroup_audit` splits an evaluated frame (true ``label_id``,
  predicted ``pred_id``, ``attr_*`` columns) by each attribute, gives every group its accuracy,
  macro-F1 and per-class recall with percentile-bootstrap CIs (:func:`bootstrap_metrics`), the
  classes its errors drift to (``error_absorption``: "female faces are misread as happiness")
  and, per attribute, the largest macro-F1 gap with a bootstrap test of the difference.
  :func:`subgroup_gap_figure` draws it.
* **Does production data look like the reference data?** (no labels needed)
  :func:`attribute_shift` compares attribute distributions (chi-square, Cramer's V, total
  variation), :func:`alignment_failure` + :func:`proportion_test` compare face-alignment failure
  rates, :func:`image_statistics` + :func:`compare_statistics` compare image and face-geometry
  statistics (brightness, face size, roll, yaw...).

Attribute values become groups through :func:`attribute_groups`: text stays text, numeric text
with many distinct values is cut into quantile bins, missing values are ``"unknown"``.

Conventions: class ids index ``label_names``; metrics are fractions in [0, 1]; every dict is
JSON-ready (python scalars, NaN -> ``None``). Bootstraps are percentile bootstraps drawn as
multinomial counts over the confusion-matrix cells, which is the same distribution as resampling
rows with replacement (the metrics depend on the rows only through the confusion matrix) but
costs ``O(B * K^2)`` instead of ``O(B * n)``. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ferwild.config import check_int
from ferwild.data.prepared import ATTR_PREFIX, COL, FAILED_ALIGNMENT, USABLE_STATUSES
from ferwild.metrics import as_class_ids

__all__ = [
    "alignment_failure",
    "attribute_groups",
    "bootstrap_interval",
    "finite_or_none",
    "attribute_shift",
    "bootstrap_metrics",
    "compare_statistics",
    "image_statistics",
    "proportion_test",
    "subgroup_audit",
    "subgroup_gap_figure",
]

UNKNOWN = "unknown"
# Manifest statuses of rows that exist in the dataset (``rejected``/``excluded`` never reached
# alignment, so they say nothing about alignment or image statistics).
_ALIGN_STATUSES = USABLE_STATUSES + ("dropped",)
# ``align_method`` values that mean "no alignment was tried": the brief's ``"none"``, and
# ``"resize"``, which is what ``ferwild.data.faces`` records for pre-aligned input (mode none).
_NO_ALIGN = ("none", "resize", "")
_PREALIGNED = ("none", "resize")
# Level of every CI in subgroup_audit (its signature has no ``confidence``).
_AUDIT_CONFIDENCE = 0.95
# Fisher's exact test below this cell count (observed or expected): the normal approximation
# behind the z test is poor there.
_MIN_CELL_FOR_Z = 5
_MIN_STAT_VALUES = 5


# --------------------------------------------------------------------------------------------
# small helpers


def finite_or_none(x: Any) -> float | None:
    """Python float, or None for NaN/inf/None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_interval(value: Any, draws: np.ndarray, confidence: float) -> dict:
    """``{"value", "ci_low", "ci_high"}`` from a point value and bootstrap draws (NaNs ignored)."""
    value = finite_or_none(value)
    draws = np.asarray(draws, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    if value is None or finite.size == 0:
        return {"value": value, "ci_low": None, "ci_high": None}
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator for one (attribute, group): independent streams that stay the same when other
    attributes or groups are added (crc32 is stable across runs, unlike ``hash``)."""
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


# --------------------------------------------------------------------------------------------
# bootstrap


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _resampled_confusions(confusion: np.ndarray, n_bootstrap: int,
                          rng: np.random.Generator) -> np.ndarray:
    """``(B, K, K)`` confusion matrices of B row resamples, drawn as multinomial cell counts."""
    k = confusion.shape[0]
    n = int(confusion.sum())
    counts = rng.multinomial(n, confusion.ravel() / n, size=n_bootstrap)
    return counts.reshape(n_bootstrap, k, k)


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, per-class recall/F1 and macro-F1 for a stack of confusion matrices ``(..., K, K)``.

    Undefined values (recall of a class with no true rows, F1 of a class neither present nor
    predicted) are NaN. Macro-F1 averages F1 over the classes present in that matrix's true
    labels: sklearn's ``f1_score(average="macro", labels=<present classes>)``.
    """
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    n = support.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted  # = 2tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
        present = support > 0
        macro = np.where(present, np.nan_to_num(f1), 0.0).sum(axis=-1) / present.sum(axis=-1)
        accuracy = tp.sum(axis=-1) / n
    return {"accuracy": accuracy, "recall": recall, "f1": f1, "macro_f1": macro,
            "support": support}


def _bootstrap(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, n_bootstrap: int,
               rng: np.random.Generator, confidence: float) -> tuple[dict, np.ndarray]:
    """bootstrap_metrics' result plus the ``(B,)`` macro-F1 draws (for bootstrapping gaps)."""
    cm = _confusion(y_true, y_pred, num_classes)
    point = _scores(cm)
    boot = _scores(_resampled_confusions(cm, n_bootstrap, rng))
    per_class = {}
    for c in range(num_classes):
        support = int(point["support"][c])
        per_class[str(c)] = {
            "recall": bootstrap_interval(point["recall"][c], boot["recall"][:, c], confidence),
            "f1": bootstrap_interval(point["f1"][c], boot["f1"][:, c], confidence),
            "support": support,
        }
    result = {
        "n": len(y_true),
        "accuracy": bootstrap_interval(point["accuracy"], boot["accuracy"], confidence),
        "macro_f1": bootstrap_interval(point["macro_f1"], boot["macro_f1"], confidence),
        "per_class": per_class,
    }
    return result, boot["macro_f1"]


def bootstrap_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, *,
                      n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Accuracy, macro-F1 and per-class recall/F1 with percentile-bootstrap CIs.

    Args:
        y_true, y_pred: ``(N,)`` integer class ids in ``0..num_classes-1``.
        num_classes: number of classes ``K``.
        n_bootstrap: resamples ``B`` (rows drawn with replacement, as multinomial cell counts).
        seed: seed of the resampling; same inputs and seed give the same CIs.
        confidence: CI level, e.g. 0.95 for the 2.5th-97.5th percentiles.

    Returns:
        ``{"n", "accuracy": {"value", "ci_low", "ci_high"}, "macro_f1": {...}, "per_class":
        {"<class id>": {"recall": {...}, "f1": {...}, "support"}}}`` for every class ``0..K-1``.
        Macro-F1 is the mean F1 over the classes present in ``y_true`` (in each resample: present
        in that resample), i.e. sklearn's ``f1_score(average="macro", labels=present)``; a class
        absent from the true labels does not drag it down. Undefined values (recall of a class
        with support 0, F1 of a class neither present nor predicted) are ``None``.

    Raises:
        ValueError: empty or mismatched inputs, ids out of range, bad ``n_bootstrap`` /
            ``confidence``.
    """
    num_classes = check_int(num_classes, "num_classes", 1)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", 1)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    yt = as_class_ids(y_true, "y_true", num_classes)
    yp = as_class_ids(y_pred, "y_pred", num_classes)
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} samples but y_pred has {len(yp)}")
    result, _ = _bootstrap(yt, yp, num_classes, n_bootstrap, np.random.default_rng(seed),
                           confidence)
    return result


# --------------------------------------------------------------------------------------------
# groups


def _fmt_edges(edges: np.ndarray) -> list[str]:
    """Compact text for bin edges, with just enough digits to keep distinct edges distinct."""
    for precision in range(3, 18):
        text = [np.format_float_positional(float(e), precision=precision, unique=True,
                                           fractional=False, trim="-") for e in edges]
        if len(set(text)) == len(text):
            return text
    return [repr(float(e)) for e in edges]


def attribute_groups(values: pd.Series, *, max_levels: int = 8, bins: int = 3) -> pd.Series:
    """Group names for one attribute column.

    Text values are kept as they are (stripped); ``""``, ``None`` and NaN become ``"unknown"``.
    A column whose non-empty values all parse as numbers and that has more than ``max_levels``
    distinct values is cut into ``bins`` quantile bins labelled ``"[-20, -4)"``, ``"[-4, 5)"``,
    ``"[5, 31]"`` (left-closed, the last one closed). Bin edges are data values (nearest-rank
    quantiles), so every bin is non-empty; tied quantiles merge, giving fewer bins. Numeric text
    with few distinct values (e.g. ``"0"``/``"1"``) stays categorical.

    Returns:
        A string Series with the same index and name as ``values``.
    """
    max_levels = check_int(max_levels, "max_levels", 1)
    bins = check_int(bins, "bins", 1)
    if not isinstance(values, pd.Series):
        values = pd.Series(values)
    text = values.map(lambda v: UNKNOWN if v is None or (isinstance(v, float) and math.isnan(v))
                      else str(v).strip())
    text = text.where(text != "", UNKNOWN)
    # A literal "unknown" in the data is treated like a missing value: same meaning, same group.
    known = text != UNKNOWN
    out = text.astype(object)
    if not known.any():
        return out.rename(values.name)
    numbers = pd.to_numeric(text[known], errors="coerce")
    if numbers.isna().any() or not np.all(np.isfinite(numbers.to_numpy(dtype=np.float64))):
        return out.rename(values.name)
    x = numbers.to_numpy(dtype=np.float64)
    if len(np.unique(x)) <= max_levels:
        return out.rename(values.name)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1), method="nearest"))
    names = _fmt_edges(edges)
    labels = [f"[{names[i]}, {names[i + 1]})" for i in range(len(edges) - 2)]
    labels.append(f"[{names[-2]}, {names[-1]}]")
    # side="right": a value equal to an inner edge opens the next bin, matching "[a, b)".
    index = np.searchsorted(edges[1:-1], x, side="right")
    out.loc[known] = np.asarray(labels, dtype=object)[index]
    return out.rename(values.name)


_BIN = re.compile(r"^\[([^,]+), ")


def group_order(groups: Sequence[str]) -> list[str]:
    """Bins by their lower edge, then other names alphabetically, ``"unknown"`` last."""
    def key(g: str):
        if g == UNKNOWN:
            return (2, 0.0, g)
        m = _BIN.match(g)
        if m:
            try:
                return (0, float(m.group(1)), g)
            except ValueError:
                pass
        return (1, 0.0, g)
    return sorted(set(groups), key=key)


# --------------------------------------------------------------------------------------------
# subgroup audit


def _error_absorption(true: np.ndarray, pred: np.ndarray, in_group: np.ndarray,
                      names: list[str], top: int = 3) -> list[dict]:
    """Share of a group's errors predicted as each class vs the same share in the other groups."""
    k = len(names)
    wrong = true != pred
    mine = np.bincount(pred[wrong & in_group], minlength=k).astype(np.float64)
    other = np.bincount(pred[wrong & ~in_group], minlength=k).astype(np.float64)
    if mine.sum() == 0:
        return []
    share = mine / mine.sum()
    share_other = other / other.sum() if other.sum() > 0 else None
    rows = []
    for c in range(k):
        t = None if share_other is None else float(share_other[c])
        rows.append({"class": names[c], "share": float(share[c]), "share_other_groups": t,
                     "excess": None if t is None else float(share[c] - t)})
    # With no errors elsewhere there is nothing to compare with: rank by the group's own share.
    rows.sort(key=lambda r: -(r["excess"] if r["excess"] is not None else r["share"]))
    return rows[:top]


def subgroup_audit(frame: pd.DataFrame, label_names: list[str], *,
                   attributes: list[str] | None = None, min_group_size: int = 30,
                   n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per-attribute, per-group metrics with bootstrap CIs, error absorption and the largest gap.

    Args:
        frame: one row per evaluated image with ``label_id`` (true class id), ``pred_id``
            (predicted class id) and the attribute columns.
        label_names: class names in class-id order.
        attributes: columns to audit; default all ``attr_*`` columns (``source``/``split`` and
            other columns only when named here).
        min_group_size: groups with fewer rows get their metrics but are flagged ``too_small``
            and never chosen as best/worst; nor is ``"unknown"`` (the value was not recorded).
        n_bootstrap, seed: bootstrap resamples and seed (each (attribute, group) draws from its
            own stream derived from ``seed``, so results do not depend on column order).

    Returns:
        ``{"attributes": {attr: {"groups": {group: {"n", "n_errors", "accuracy", "macro_f1",
        "per_class_recall", "too_small", "error_absorption"}}, "gap"}}, "ranking", "min_group_size",
        "n_bootstrap", "confidence"}``. ``accuracy``/``macro_f1`` are ``{"value", "ci_low",
        "ci_high"}``; ``per_class_recall[class] = {"value", "ci_low", "ci_high", "support"}``;
        ``error_absorption`` is the top 3 of ``{"class", "share", "share_other_groups",
        "excess"}`` by excess: of this group's errors, the share predicted as ``class`` minus
        the same share among the errors of all other rows. ``gap`` is ``None`` with fewer than
        two rankable groups, else ``{"best", "worst", "macro_f1_gap", "ci_low", "ci_high",
        "confidence", "significant"}``: the best-minus-worst macro-F1 with a percentile CI of
        the bootstrapped difference (groups resampled independently). Because best and worst
        are picked from ``g`` groups, the CI level is Bonferroni-adjusted over the
        ``g(g-1)/2`` pairs (exactly 95% for two groups); ``significant`` means it excludes 0.
        ``ranking`` lists the attributes that have a gap, largest gap first.

    Raises:
        ValueError: missing columns, empty frame, ids out of range, bad parameters.
    """
    names = [str(x) for x in label_names]
    if not names:
        raise ValueError("label_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names has duplicates: {names}")
    min_group_size = check_int(min_group_size, "min_group_size", 1)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", 1)
    missing = [c for c in (COL.label_id, "pred_id") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}: need label_id and pred_id")
    if len(frame) == 0:
        raise ValueError("frame is empty: nothing to audit")
    k = len(names)
    true = as_class_ids(frame[COL.label_id].to_numpy(), COL.label_id, k)
    pred = as_class_ids(frame["pred_id"].to_numpy(), "pred_id", k)
    if attributes is None:
        attributes = [c for c in frame.columns if str(c).startswith(ATTR_PREFIX)]
    else:
        attributes = list(attributes)
        absent = [a for a in attributes if a not in frame.columns]
        if absent:
            raise ValueError(f"attribute column(s) {absent} not in frame")

    out: dict[str, Any] = {}
    for attr in attributes:
        groups = attribute_groups(frame[attr]).to_numpy()
        per_group: dict[str, dict] = {}
        draws: dict[str, np.ndarray] = {}
        for group in group_order(groups):
            mask = groups == group
            res, macro_draws = _bootstrap(true[mask], pred[mask], k, n_bootstrap,
                                          _rng(seed, attr, group), _AUDIT_CONFIDENCE)
            draws[group] = macro_draws
            per_group[group] = {
                "n": res["n"],
                "n_errors": int((true[mask] != pred[mask]).sum()),
                "accuracy": res["accuracy"],
                "macro_f1": res["macro_f1"],
                "per_class_recall": {names[c]: {**res["per_class"][str(c)]["recall"],
                                                "support": res["per_class"][str(c)]["support"]}
                                     for c in range(k)},
                "too_small": res["n"] < min_group_size,
                "error_absorption": _error_absorption(true, pred, mask, names),
            }
        out[attr] = {"groups": per_group, "gap": _gap(per_group, draws)}

    ranking = sorted((a for a in out if out[a]["gap"] is not None),
                     key=lambda a: -out[a]["gap"]["macro_f1_gap"])
    return {"attributes": out, "ranking": ranking, "min_group_size": min_group_size,
            "n_bootstrap": n_bootstrap, "confidence": _AUDIT_CONFIDENCE}


def _gap(per_group: dict[str, dict], draws: dict[str, np.ndarray]) -> dict | None:
    # "unknown" means "not recorded": reported with its size, never ranked as a group
    rankable = [g for g, m in per_group.items()
                if g != UNKNOWN and not m["too_small"] and m["macro_f1"]["value"] is not None]
    if len(rankable) < 2:
        return None
    best = max(rankable, key=lambda g: per_group[g]["macro_f1"]["value"])
    worst = min(rankable, key=lambda g: per_group[g]["macro_f1"]["value"])
    if best == worst:  # all tied: any two distinct groups
        worst = next(g for g in rankable if g != best)
    pairs = len(rankable) * (len(rankable) - 1) // 2
    confidence = 1 - (1 - _AUDIT_CONFIDENCE) / pairs
    diff = draws[best] - draws[worst]
    value = per_group[best]["macro_f1"]["value"] - per_group[worst]["macro_f1"]["value"]
    ci = bootstrap_interval(value, diff, confidence)
    significant = ci["ci_low"] is not None and (ci["ci_low"] > 0 or ci["ci_high"] < 0)
    return {"best": best, "worst": worst, "macro_f1_gap": float(value),
            "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "confidence": float(confidence),
            "significant": bool(significant)}


# --------------------------------------------------------------------------------------------
# label-free shift


def attribute_shift(reference: pd.DataFrame, production: pd.DataFrame, *,
                    attributes: list[str] | None = None) -> list[dict]:
    """Compare each attribute's group distribution between a reference and a production set.

    Groups come from :func:`attribute_groups` on the pooled values, so numeric bins are the
    same on both sides; ``"unknown"`` is a group (more missing attributes is itself a shift).

    Returns:
        One dict per attribute, sorted by Cramer's V (largest first): ``{"attribute",
        "p_value"`` (chi-square test of homogeneity, ``scipy.stats.chi2_contingency`` with its
        default Yates correction on 2x2 tables), ``"chi2", "cramers_v"`` (uncorrected),
        ``"tv_distance"`` (half the L1 distance between the share vectors), ``"n_reference",
        "n_production", "reference": {group: share}, "production": {group: share},
        "largest_change": {"group", "reference", "production", "change"}}``. An attribute with a
        single group has ``p_value`` ``None`` and V 0. Default attributes: the ``attr_*``
        columns present in both frames.

    Raises:
        ValueError: an empty frame, or a named attribute missing from either frame.
    """
    from scipy.stats import chi2_contingency
    from scipy.stats.contingency import association

    if len(reference) == 0 or len(production) == 0:
        raise ValueError(f"need rows on both sides, got reference={len(reference)}, "
                         f"production={len(production)}")
    if attributes is None:
        attributes = [c for c in reference.columns
                      if str(c).startswith(ATTR_PREFIX) and c in production.columns]
    else:
        attributes = list(attributes)
        absent = [a for a in attributes
                  if a not in reference.columns or a not in production.columns]
        if absent:
            raise ValueError(f"attribute column(s) {absent} missing from reference or production")

    rows = []
    for attr in attributes:
        pooled = attribute_groups(pd.concat([reference[attr], production[attr]],
                                            ignore_index=True)).to_numpy()
        side = np.r_[np.zeros(len(reference), bool), np.ones(len(production), bool)]
        order = group_order(pooled)
        table = np.array([[np.sum((pooled == g) & (side == s)) for g in order]
                          for s in (False, True)], dtype=np.int64)
        shares = table / table.sum(axis=1, keepdims=True)
        if len(order) >= 2:
            chi2, p, _, _ = chi2_contingency(table)
            v = float(association(table, method="cramer"))
        else:
            chi2, p, v = 0.0, None, 0.0
        change = shares[1] - shares[0]
        j = int(np.argmax(np.abs(change)))
        rows.append({
            "attribute": attr,
            "p_value": finite_or_none(p),
            "chi2": finite_or_none(chi2),
            "cramers_v": finite_or_none(v),
            "tv_distance": float(0.5 * np.abs(change).sum()),
            "n_reference": len(reference),
            "n_production": len(production),
            "reference": {g: float(s) for g, s in zip(order, shares[0])},
            "production": {g: float(s) for g, s in zip(order, shares[1])},
            "largest_change": {"group": order[j], "reference": float(shares[0, j]),
                               "production": float(shares[1, j]), "change": float(change[j])},
        })
    rows.sort(key=lambda r: -(r["cramers_v"] or 0.0))
    return rows


def proportion_test(k1: int, n1: int, k2: int, n2: int) -> dict:
    """Compare two failure rates ``k1/n1`` (e.g. reference) and ``k2/n2`` (e.g. production).

    Uses Fisher's exact test (two-sided, ``scipy.stats.fisher_exact``) when any observed or
    expected cell of the 2x2 table is below 5, where the normal approximation is poor, else the
    pooled two-proportion z test (two-sided).

    Returns:
        ``{"rate_1", "rate_2", "difference"`` (rate_2 - rate_1), ``"p_value", "test"``
        (``"fisher"`` | ``"z"``)``, "n_1", "n_2"}``. If ``n1`` or ``n2`` is 0 every rate, the
        difference, the p-value and the test are ``None``.

    Raises:
        ValueError: negative counts or ``k > n``.
    """
    from scipy.stats import fisher_exact, norm

    for name, v in (("k1", k1), ("n1", n1), ("k2", k2), ("n2", n2)):
        check_int(v, name, 0)
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    if k1 > n1 or k2 > n2:
        raise ValueError(f"failures exceed trials: {k1}/{n1}, {k2}/{n2}")
    if n1 == 0 or n2 == 0:
        return {"rate_1": None, "rate_2": None, "difference": None, "p_value": None,
                "test": None, "n_1": n1, "n_2": n2}
    r1, r2 = k1 / n1, k2 / n2
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]], dtype=np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if table.min() < _MIN_CELL_FOR_Z or expected.min() < _MIN_CELL_FOR_Z:
        test, p = "fisher", float(fisher_exact(table.astype(np.int64))[1])
    else:
        pooled = (k1 + k2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        test, p = "z", float(2 * norm.sf(abs(r2 - r1) / se))
    return {"rate_1": r1, "rate_2": r2, "difference": r2 - r1, "p_value": p, "test": test,
            "n_1": n1, "n_2": n2}


def _originals(manifest: pd.DataFrame) -> pd.DataFrame:
    if COL.augmented_from not in manifest.columns:
        return manifest
    return manifest[manifest[COL.augmented_from].fillna("").astype(str) == ""]


def alignment_failure(manifest: pd.DataFrame) -> dict:
    """Face-alignment failure rate of a prepared dataset, overall and per class.

    Only original rows (``augmented_from == ""``) with status aligned/unaligned/dropped count.
    Attempted: ``align_method`` other than ``"none"``/``"resize"``/``""`` (pre-aligned crops,
    which ``ferwild.data.faces`` records as ``"resize"``), or status unaligned/dropped. Failed:
    status unaligned or dropped.

    Returns:
        ``{"attempted", "failed", "rate", "per_class": {label: {"attempted", "failed", "rate"}},
        "prealigned"}``; ``rate`` is ``None`` when nothing was attempted; ``prealigned`` is True
        when every usable row (aligned/unaligned) was a pre-aligned crop. Feed two of these to
        :func:`proportion_test` to compare reference and production.

    Raises:
        ValueError: a missing ``status``, ``align_method`` or ``label`` column.
    """
    missing = [c for c in (COL.status, COL.align_method, COL.label) if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    rows = _originals(manifest)
    rows = rows[rows[COL.status].isin(_ALIGN_STATUSES)]
    method = rows[COL.align_method].fillna("").astype(str)
    attempted = ~method.isin(_NO_ALIGN) | rows[COL.status].isin(FAILED_ALIGNMENT)
    failed = attempted & rows[COL.status].isin(FAILED_ALIGNMENT)
    usable = rows[COL.status].isin(USABLE_STATUSES)

    def summary(a: pd.Series, f: pd.Series) -> dict:
        na, nf = int(a.sum()), int(f.sum())
        return {"attempted": na, "failed": nf, "rate": nf / na if na else None}

    labels = rows[COL.label].fillna("").astype(str)
    per_class = {lab: summary(attempted[labels == lab], failed[labels == lab])
                 for lab in sorted(labels.unique())}
    return {**summary(attempted, failed), "per_class": per_class,
            "prealigned": bool(usable.any() and method[usable].isin(_PREALIGNED).all())}


def _points(values: pd.Series, size: int) -> np.ndarray:
    """``(N, size)`` float array from an object column of lists/arrays; NaN rows where invalid."""
    out = np.full((len(values), size), np.nan)
    for i, v in enumerate(values.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        try:
            arr = np.asarray(v, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            continue
        if arr.size == size:
            out[i] = arr
    return out


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)


def image_statistics(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per-image quality and face-geometry statistics of the usable original rows.

    Columns: ``brightness``, ``contrast``, ``sharpness``, ``detector_confidence`` (copied from
    ``confidence``); ``face_size`` = sqrt(box area) / min(orig_width, orig_height);
    ``eye_distance_rel`` = inter-ocular distance / min(orig_width, orig_height); ``roll_deg`` =
    angle of the line from the first (left-in-image) to the second eye landmark, in image
    coordinates (y down): positive when the second eye is lower, i.e. the face is turned
    clockwise on screen; eyes at (10, 10) and (20, 20) give +45. ``yaw_proxy`` = offset of the
    nose from the eye midpoint along the eye line, divided by the inter-ocular distance (0 for a
    frontal face; positive towards the second eye). Measuring along the eye line undoes roll, so
    a tilted frontal face is not read as turned; for level eyes it is the plain horizontal
    offset. Missing or invalid inputs give NaN.

    Returns:
        A DataFrame indexed like the input's usable original rows (status aligned/unaligned,
        ``augmented_from == ""``).
    """
    if COL.status in manifest.columns:
        rows = _originals(manifest)
        rows = rows[rows[COL.status].isin(USABLE_STATUSES)]
    else:
        rows = _originals(manifest)
    n = len(rows)
    side = np.fmin(_column(rows, "orig_width"), _column(rows, "orig_height"))
    side = np.where(side > 0, side, np.nan)
    box = _points(rows[COL.box], 4) if COL.box in rows.columns else np.full((n, 4), np.nan)
    marks = (_points(rows[COL.landmarks], 10) if COL.landmarks in rows.columns
             else np.full((n, 10), np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
        face_size = np.sqrt(area) / side
        eye_l, eye_r, nose = marks[:, 0:2], marks[:, 2:4], marks[:, 4:6]
        d = eye_r - eye_l
        iod = np.hypot(d[:, 0], d[:, 1])
        iod = np.where(iod > 0, iod, np.nan)
        roll = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
        roll = np.where(np.isfinite(iod), roll, np.nan)
        offset = nose - (eye_l + eye_r) / 2
        yaw = (offset * d).sum(axis=1) / iod**2
    return pd.DataFrame({
        "brightness": _column(rows, COL.brightness),
        "contrast": _column(rows, COL.contrast),
        "sharpness": _column(rows, COL.sharpness),
        "face_size": face_size,
        "roll_deg": roll,
        "yaw_proxy": yaw,
        "eye_distance_rel": iod / side,
        "detector_confidence": _column(rows, COL.confidence),
    }, index=rows.index)


def compare_statistics(reference: pd.DataFrame, production: pd.DataFrame) -> list[dict]:
    """Compare every numeric column shared by two frames (e.g. two :func:`image_statistics`).

    Columns with fewer than 5 finite values on either side are skipped. Cohen's d is
    (production mean - reference mean) / pooled sd, 0 when the pooled sd is 0 (both sides
    constant): it sees a moved mean only. The Wasserstein distance
    (``scipy.stats.wasserstein_distance``), raw and in pooled-sd units (0 when the sd is 0),
    and ``ks_p_value`` (``scipy.stats.ks_2samp``) also see a changed spread or shape, so a
    statistic whose mean stays but whose spread changes (say roll, constant in a frontal
    reference and varied in production) shows d near 0 with a large Wasserstein distance:
    ``sd_ratio`` (production sd / reference sd) and ``constant_side`` (``"reference"``,
    ``"production"``, ``"both"`` or None when a side has a single value) say so.

    Returns:
        A list sorted by ``wasserstein_sd`` (the largest difference of any kind first) of
        ``{"statistic", "reference_median", "production_median", "reference_mean",
        "production_mean", "reference_sd", "production_sd", "sd_ratio", "constant_side",
        "cohens_d", "ks_p_value", "wasserstein", "wasserstein_sd", "n_reference",
        "n_production"}``.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    out = []
    for col in reference.columns:
        if col not in production.columns:
            continue
        if not (pd.api.types.is_numeric_dtype(reference[col])
                and pd.api.types.is_numeric_dtype(production[col])):
            continue
        if (pd.api.types.is_bool_dtype(reference[col])
                or pd.api.types.is_bool_dtype(production[col])):
            continue
        a = reference[col].to_numpy(dtype=np.float64)
        b = production[col].to_numpy(dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) < _MIN_STAT_VALUES or len(b) < _MIN_STAT_VALUES:
            continue
        pooled_var = (((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                      / (len(a) + len(b) - 2))
        sd = math.sqrt(max(pooled_var, 0.0))
        w = float(wasserstein_distance(a, b))
        sd_a, sd_b = float(a.std(ddof=1)), float(b.std(ddof=1))
        constant = [side for side, v in (("reference", a), ("production", b)) if np.ptp(v) == 0]
        out.append({
            "statistic": str(col),
            "reference_median": float(np.median(a)),
            "production_median": float(np.median(b)),
            "reference_mean": float(a.mean()),
            "production_mean": float(b.mean()),
            "reference_sd": sd_a,
            "production_sd": sd_b,
            "sd_ratio": sd_b / sd_a if sd_a > 0 else None,
            "constant_side": "both" if len(constant) == 2 else (constant[0] if constant else None),
            "cohens_d": float((b.mean() - a.mean()) / sd) if sd > 0 else 0.0,
            "ks_p_value": float(ks_2samp(a, b).pvalue),
            "wasserstein": w,
            "wasserstein_sd": w / sd if sd > 0 else 0.0,
            "n_reference": len(a),
            "n_production": len(b),
        })
    out.sort(key=lambda r: (-r["wasserstein_sd"], -abs(r["cohens_d"])))
    return out


# --------------------------------------------------------------------------------------------
# figure


def subgroup_gap_figure(audit: dict, path, *, top: int = 4) -> None:
    """Write a PNG of per-group macro-F1 with CI bars for the ``top`` ranked attributes.

    One panel per attribute (two columns when there are several); groups on the y axis labelled
    with their size; rankable groups in blue with the worst one in red, groups below
    ``min_group_size`` (marked ``n<min``) and ``"unknown"`` (not recorded) hollow grey. Panel titles carry the gap and ``*``
    when it is significant. Drawn on matplotlib's Agg canvas (no pyplot).

    Raises:
        ValueError: ``audit`` is not a :func:`subgroup_audit` result, or ``top < 1``.
    """
    from ferwild.plotting import new_figure, save_figure

    top = check_int(top, "top", 1)
    if not isinstance(audit, dict) or "attributes" not in audit:
        raise ValueError("audit must be the dict returned by subgroup_audit")
    attrs = [a for a in audit.get("ranking", []) if a in audit["attributes"]][:top]
    if not attrs:  # nothing rankable: show whatever attributes there are
        attrs = list(audit["attributes"])[:top]
    min_n = audit.get("min_group_size", 0)

    ncols = 1 if len(attrs) <= 1 else 2
    nrows = max(1, math.ceil(len(attrs) / ncols))
    sizes = [len(audit["attributes"][a]["groups"]) for a in attrs] or [1]
    row_h = [max(1.0, max(sizes[r * ncols:(r + 1) * ncols])) for r in range(nrows)]
    fig = new_figure((6.2 * ncols, sum(0.32 * h + 1.3 for h in row_h)), dpi=110, layout="constrained")
    if not attrs:
        fig.text(0.5, 0.5, "no attributes to show", ha="center", va="center")
    else:
        axes = fig.subplots(nrows, ncols, squeeze=False,
                            gridspec_kw={"height_ratios": [0.32 * h + 0.6 for h in row_h]})
        for ax in axes.ravel()[len(attrs):]:
            ax.set_visible(False)
        for ax, attr in zip(axes.ravel(), attrs):
            _gap_panel(ax, attr, audit["attributes"][attr], min_n)
        fig.suptitle("Macro-F1 by subgroup (95% bootstrap CI)", fontsize=11)
        fig.supxlabel(f"red: worst group; hollow grey: n < {min_n} or not recorded, not ranked; "
                      "*: the gap's bootstrap CI excludes 0", fontsize=8)
    save_figure(fig, path)


def _gap_panel(ax, attr: str, info: dict, min_n: int) -> None:
    groups = list(info["groups"].items())
    gap = info.get("gap")
    worst = gap["worst"] if gap else None
    labels = []
    for y, (name, m) in enumerate(groups):
        short = name if len(name) <= 24 else name[:23] + "…"
        unranked = m["too_small"] or name == UNKNOWN  # "unknown": not recorded, never ranked
        note = ", n<" + str(min_n) if m["too_small"] else (", not recorded" if name == UNKNOWN else "")
        labels.append(f"{short} (n={m['n']:,}{note})")
        mf = m["macro_f1"]
        if mf["value"] is None:
            continue
        lo = mf["ci_low"] if mf["ci_low"] is not None else mf["value"]
        hi = mf["ci_high"] if mf["ci_high"] is not None else mf["value"]
        err = [[mf["value"] - lo], [hi - mf["value"]]]
        if unranked:
            ax.errorbar(mf["value"], y, xerr=err, fmt="o", color="0.6", mfc="white", capsize=3)
        else:
            colour = "tab:red" if name == worst else "tab:blue"
            ax.errorbar(mf["value"], y, xerr=err, fmt="o", color=colour, capsize=3)
    ax.set_yticks(range(len(groups)), labels, fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("macro-F1", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    title = attr
    if gap:
        title += f": gap {gap['macro_f1_gap']:.3f}{' *' if gap['significant'] else ''}"
    ax.set_title(title, fontsize=9)
