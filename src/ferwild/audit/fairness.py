"""Attribute gaps that a class mix cannot fake: raw vs standardised, prediction bias, calibration.

A raw per-group accuracy mostly measures the group's class mix when the classes are not equally
hard and the groups do not share one mix: on wild_dev 61% of the women's photos are happy (an
easy class) and 57% of the men's are neutral, so "women are read better" can be true of the raw
figure and false of every single expression. :func:`attribute_comparison` answers the questions
a user of a recogniser asks about a recorded attribute such as ``attr_gender``:

* **Raw and standardised gaps.** Per group: accuracy and macro-F1 as measured, and the same
  figures with the group's confusion matrix reweighted to one reference class mix (the pooled
  true-label distribution of the recorded groups: each row ``t`` of the group's matrix is
  scaled so that class ``t`` carries the pooled share), i.e. direct standardisation as in
  epidemiology. A gap that survives standardisation is a difference in how each expression is
  read; one that vanishes was the class mix.
* **Per-class recall and precision by group**, each with its gap.
* **Prediction bias**: for the same true label, is one group read as happier, sadder or
  angrier? Every off-diagonal cell ``P(pred = p | true = t, group)`` is compared between the two
  groups; the largest difference is reported with its interval, a per-cell p-value and a
  family-wise p-value (max-statistic permutation over all cells).
* **Calibration by group**: top-label ECE with its interval, and the reliability bins.

People, not photos, are the units: intervals come from a cluster bootstrap that resamples
people (``clusters``, e.g. the ``subject`` column) within each group, and the permutation test
shuffles the group labels of people, not of photos. Values meaning "not recorded" (``unknown``,
empty) are counted and reported, never ranked as a group.

Everything is deterministic given ``seed``; every dict is JSON-ready (NaN -> ``None``).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.groups import UNKNOWN, attribute_groups, bootstrap_interval, finite_or_none, group_order
from ferwild.config import check_int
from ferwild.metrics import as_class_ids

__all__ = ["attribute_comparison", "attribute_gap_figure", "standardise_confusion", "comparison_summary", "ECE_BINS"]

#: Equal-width confidence bins of the per-group ECE (as ``ferwild.metrics.expected_calibration_error``).
ECE_BINS = 15
CONFIDENCE = 0.95
#: A true class enters the prediction-bias comparison only when both groups hold at least this
#: many faces of it: a rate over a handful of faces swings by tens of points by chance.
MIN_CLASS_SUPPORT = 10
#: A group with fewer people than this gets its figures but no interval-based verdict: a people
#: bootstrap over a few people has almost no distinct resamples.
MIN_PEOPLE = 5


def _excludes_zero(ci: dict) -> bool:
    return ci["ci_low"] is not None and (ci["ci_low"] > 0 or ci["ci_high"] < 0)


# --------------------------------------------------------------------------------------------
# confusion-matrix arithmetic (works on one matrix (K, K) or a stack (..., K, K))


def standardise_confusion(confusion: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Rows of ``confusion`` rescaled so that true class ``t`` carries share ``mix[t]``.

    The result (entries sum to 1 over the classes present) is the confusion matrix the same
    reader would produce on faces with class mix ``mix``: per-class recall is unchanged,
    accuracy becomes ``sum_t mix[t] * recall[t]`` and precision is what it would be under that
    mix. Rows of classes the group does not hold become NaN (no recall to carry over).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    support = cm.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(support > 0, cm / support, np.nan)
    return rates * np.asarray(mix, dtype=np.float64)[:, None]


def _metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1, per-class recall and precision of (a stack of) confusion matrices.

    Classes whose row is empty or NaN count as absent (macro-F1 averages over present classes).
    """
    cm = np.asarray(cm, dtype=np.float64)
    present = np.isfinite(cm).all(axis=-1) & (np.nan_to_num(cm).sum(axis=-1) > 0)
    cm = np.nan_to_num(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
        macro = np.where(present, np.nan_to_num(f1), 0.0).sum(axis=-1) / present.sum(axis=-1)
        accuracy = tp.sum(axis=-1) / support.sum(axis=-1)
    return {"accuracy": accuracy, "macro_f1": macro, "recall": recall, "precision": precision}


# --------------------------------------------------------------------------------------------
# people-level resampling


class _Group:
    """One group's rows summarised per person: confusion counts and calibration-bin sums."""

    def __init__(self, true: np.ndarray, pred: np.ndarray, conf: np.ndarray | None, people: np.ndarray, k: int):
        codes, self.people = pd.factorize(pd.Series(people, dtype=object), sort=True)
        n_people = len(self.people)
        self.n, self.k, self.n_people = len(true), k, n_people
        self.counts = np.zeros((n_people, k * k))
        np.add.at(self.counts, (codes, true * k + pred), 1.0)
        self.bins = None
        if conf is not None:  # per person and bin: faces, sum of confidence, sum of correct
            idx = np.clip(np.ceil(conf * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
            self.bins = np.zeros((n_people, ECE_BINS, 3))
            np.add.at(self.bins, (codes, idx, 0), 1.0)
            np.add.at(self.bins, (codes, idx, 1), conf)
            np.add.at(self.bins, (codes, idx, 2), (true == pred).astype(np.float64))

    def confusion(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The confusion matrix, or ``(B, K, K)`` matrices for people weights ``(B, people)``."""
        if weights is None:
            return self.counts.sum(0).reshape(self.k, self.k)
        return (weights @ self.counts).reshape(len(weights), self.k, self.k)

    def ece(self, weights: np.ndarray | None = None) -> np.ndarray:
        sums = self.bins.sum(0)[None] if weights is None else np.einsum("bp,pkc->bkc", weights, self.bins)
        n, conf, correct = sums[..., 0], sums[..., 1], sums[..., 2]
        ece = np.abs(correct - conf).sum(-1) / np.maximum(n.sum(-1), 1)
        return ece[0] if weights is None else ece

    def reliability(self) -> list[dict]:
        sums = self.bins.sum(0)
        return [{"bin_lower": b / ECE_BINS, "bin_upper": (b + 1) / ECE_BINS, "count": int(sums[b, 0]),
                 "mean_confidence": finite_or_none(sums[b, 1] / sums[b, 0]) if sums[b, 0] else None,
                 "accuracy": finite_or_none(sums[b, 2] / sums[b, 0]) if sums[b, 0] else None}
                for b in range(ECE_BINS)]

    def resample(self, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
        """``(B, people)`` multiplicities of a people bootstrap (people drawn with replacement)."""
        return rng.multinomial(self.n_people, np.full(self.n_people, 1.0 / self.n_people), size=n_bootstrap)


# --------------------------------------------------------------------------------------------
# the comparison


def _group_figures(group: _Group, weights: np.ndarray, mix: np.ndarray, names: list[str]) -> tuple[dict, dict]:
    """A group's figures with intervals, and its bootstrap draws (for the gaps)."""
    cm, cm_b = group.confusion(), group.confusion(weights)
    raw, raw_b = _metrics(cm), _metrics(cm_b)
    std, std_b = _metrics(standardise_confusion(cm, mix)), _metrics(standardise_confusion(cm_b, mix))
    support = cm.sum(1)
    figures = {
        "n": group.n, "people": group.n_people,
        "class_mix": {names[c]: float(support[c] / max(1, support.sum())) for c in range(len(names))},
        "accuracy": bootstrap_interval(raw["accuracy"], raw_b["accuracy"], CONFIDENCE),
        "macro_f1": bootstrap_interval(raw["macro_f1"], raw_b["macro_f1"], CONFIDENCE),
        "accuracy_standardised": bootstrap_interval(std["accuracy"], std_b["accuracy"], CONFIDENCE),
        "macro_f1_standardised": bootstrap_interval(std["macro_f1"], std_b["macro_f1"], CONFIDENCE),
        "per_class": {names[c]: {"support": int(support[c]),
                                 "recall": bootstrap_interval(raw["recall"][c], raw_b["recall"][:, c],
                                                              CONFIDENCE),
                                 "precision": bootstrap_interval(raw["precision"][c], raw_b["precision"][:, c],
                                                                 CONFIDENCE)}
                      for c in range(len(names))},
    }
    draws = {"accuracy": raw_b["accuracy"], "macro_f1": raw_b["macro_f1"],
             "accuracy_standardised": std_b["accuracy"], "macro_f1_standardised": std_b["macro_f1"],
             "recall": raw_b["recall"], "precision": raw_b["precision"]}
    if group.bins is not None:
        ece_b = group.ece(weights)
        figures["ece"] = bootstrap_interval(group.ece(), ece_b, CONFIDENCE)
        figures["reliability"] = group.reliability()
        draws["ece"] = ece_b
    return figures, draws


def _gaps(a: dict, b: dict, da: dict, db: dict, names: list[str]) -> dict:
    """``a - b`` for every figure, with the interval of the difference of independent draws."""
    out = {}
    for key in ("accuracy", "macro_f1", "accuracy_standardised", "macro_f1_standardised", "ece"):
        if key in a and key in b and a[key]["value"] is not None and b[key]["value"] is not None:
            ci = bootstrap_interval(a[key]["value"] - b[key]["value"], da[key] - db[key], CONFIDENCE)
            out[key] = {**ci, "excludes_zero": _excludes_zero(ci)}
    for kind in ("recall", "precision"):
        per = {}
        for c, name in enumerate(names):
            va, vb = a["per_class"][name][kind]["value"], b["per_class"][name][kind]["value"]
            if va is None or vb is None:
                continue
            ci = bootstrap_interval(va - vb, da[kind][:, c] - db[kind][:, c], CONFIDENCE)
            per[name] = {**ci, "excludes_zero": _excludes_zero(ci)}
        out[f"per_class_{kind}"] = per
    return out


def _rates(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(support > 0, cm / support, np.nan)


def _prediction_bias(a: _Group, b: _Group, wa: np.ndarray, wb: np.ndarray, names: list[str],
                     n_permutations: int, rng: np.random.Generator) -> dict:
    """Off-diagonal ``P(pred | true, group)`` compared cell by cell, people as the units."""
    k = len(names)
    cm_a, cm_b = a.confusion(), b.confusion()
    eligible = (cm_a.sum(1) >= MIN_CLASS_SUPPORT) & (cm_b.sum(1) >= MIN_CLASS_SUPPORT)
    cells = [(t, p) for t in range(k) for p in range(k) if t != p and eligible[t]]
    if not cells:
        return {"cells": [], "largest": None, "family_p_value": None,
                "note": f"no class has {MIN_CLASS_SUPPORT}+ faces in both groups"}
    ts, ps = np.array([c[0] for c in cells]), np.array([c[1] for c in cells])
    diff = (_rates(cm_a) - _rates(cm_b))[ts, ps]
    boot = (_rates(a.confusion(wa)) - _rates(b.confusion(wb)))[:, ts, ps]
    # permutation: people keep their faces, the group labels are shuffled among people
    pooled = np.concatenate([a.counts, b.counts])
    n_a = a.n_people
    null = np.empty((n_permutations, len(cells)))
    for i in range(n_permutations):
        order = rng.permutation(len(pooled))
        pa = pooled[order[:n_a]].sum(0).reshape(k, k)
        pb = pooled[order[n_a:]].sum(0).reshape(k, k)
        null[i] = (_rates(pa) - _rates(pb))[ts, ps]
    null = np.nan_to_num(np.abs(null))
    p_cell = (1 + (null >= np.abs(diff) - 1e-12).sum(0)) / (1 + n_permutations)
    p_family = (1 + (null.max(1) >= np.abs(diff).max() - 1e-12).sum()) / (1 + n_permutations)
    rows = []
    for j, (t, p) in enumerate(cells):
        ci = bootstrap_interval(diff[j], boot[:, j], CONFIDENCE)
        rows.append({"true": names[t], "pred": names[p], "rate_a": finite_or_none(_rates(cm_a)[t, p]),
                     "rate_b": finite_or_none(_rates(cm_b)[t, p]), "difference": ci, "p_value": float(p_cell[j]),
                     "support_a": int(cm_a[t].sum()), "support_b": int(cm_b[t].sum())})
    rows.sort(key=lambda r: -abs(r["difference"]["value"] or 0.0))
    return {"cells": rows, "largest": rows[0], "family_p_value": float(p_family),
            "n_permutations": n_permutations, "min_class_support": MIN_CLASS_SUPPORT}


def _choose_pair(figures: dict[str, dict], min_group_size: int) -> tuple[str, str] | None:
    """The two recorded groups to compare: best and worst raw accuracy among the groups with
    enough faces and people (the only two when there are two)."""
    rankable = [g for g, f in figures.items()
                if f["n"] >= min_group_size and f["people"] >= MIN_PEOPLE and f["accuracy"]["value"] is not None]
    if len(rankable) < 2:
        return None
    best = max(rankable, key=lambda g: figures[g]["accuracy"]["value"])
    worst = min((g for g in rankable if g != best), key=lambda g: figures[g]["accuracy"]["value"])
    return best, worst


def attribute_comparison(frame: pd.DataFrame, label_names: list[str], attribute: str, *,
                         probs: np.ndarray | None = None, clusters: np.ndarray | None = None,
                         min_group_size: int = 30, n_bootstrap: int = 1000, n_permutations: int = 1000,
                         seed: int = 0, not_recorded: tuple[str, ...] = (UNKNOWN,)) -> dict[str, Any]:
    """Compare the groups of one attribute column with the class mix taken out.

    Args:
        frame: one row per face with ``label_id`` (true class id), ``pred_id`` and ``attribute``.
        label_names: class names in class-id order.
        attribute: the column to compare (e.g. ``attr_gender``).
        probs: ``(N, K)`` class probabilities, for calibration by group (optional).
        clusters: per-row person ids (e.g. ``subject``); default: every row its own person.
        min_group_size: a group with fewer faces (or fewer than :data:`MIN_PEOPLE` people) is
            reported but not compared.
        n_bootstrap, n_permutations, seed: resampling sizes and seed.
        not_recorded: group values that mean "not recorded" (``attribute_groups`` maps empty
            values to ``unknown``): counted in ``not_recorded``, never compared.

    Returns:
        ``{"attribute", "reference_mix", "groups": {g: {...}}, "not_recorded": {"n", "people"},
        "compared": [a, b] | None, "gaps": {...} | None, "prediction_bias": {...} | None,
        "summary": str, "notes": [str]}``. Group figures are ``{"value", "ci_low", "ci_high"}``
        (95% people bootstrap); gaps are ``a - b`` with ``excludes_zero``.

    Raises:
        ValueError: missing columns, an empty frame, class ids out of range.
    """
    names = [str(x) for x in label_names]
    k = len(names)
    for col in ("label_id", "pred_id", attribute):
        if col not in frame.columns:
            raise ValueError(f"frame lacks column {col!r}")
    if len(frame) == 0:
        raise ValueError("frame is empty: nothing to compare")
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", 1)
    n_permutations = check_int(n_permutations, "n_permutations", 1)
    true = as_class_ids(frame["label_id"].to_numpy(), "label_id", k)
    pred = as_class_ids(frame["pred_id"].to_numpy(), "pred_id", k)
    people = (np.asarray(clusters, dtype=object) if clusters is not None
              else np.arange(len(frame)).astype(str).astype(object))
    conf = None if probs is None else np.asarray(probs, dtype=np.float64).max(1)
    groups = attribute_groups(frame[attribute]).to_numpy()
    missing = np.isin(groups, list(not_recorded))
    notes: list[str] = []
    out: dict[str, Any] = {"attribute": attribute,
                           "not_recorded": {"n": int(missing.sum()),
                                            "people": int(pd.Series(people[missing]).nunique())},
                           "groups": {}, "compared": None, "gaps": None, "prediction_bias": None, "notes": notes}
    recorded = group_order(groups[~missing])
    counts = np.bincount(true[~missing], minlength=k).astype(np.float64)
    mix = counts / max(1.0, counts.sum())
    out["reference_mix"] = {names[c]: float(mix[c]) for c in range(k)}
    if len(recorded) < 2:
        notes.append(f"`{attribute}` has {len(recorded)} recorded value(s): no groups to compare")
        out["summary"] = notes[-1]
        return out
    members, draws = {}, {}
    for g in recorded:
        mask = (groups == g) & ~missing
        grp = _Group(true[mask], pred[mask], None if conf is None else conf[mask], people[mask], k)
        # one stream per (attribute, group): a group's intervals do not move when others are added
        rng = np.random.default_rng([int(seed), zlib.crc32(attribute.encode()), zlib.crc32(g.encode())])
        weights = grp.resample(n_bootstrap, rng)
        members[g] = (grp, weights)
        out["groups"][g], draws[g] = _group_figures(grp, weights, mix, names)
        absent = [names[c] for c in range(k) if mix[c] > 0 and grp.confusion().sum(1)[c] == 0]
        if absent:
            notes.append(f"'{g}' holds no {', '.join(absent)} faces: its standardised figures average "
                         "over the classes it holds")
        if grp.n < min_group_size or grp.n_people < MIN_PEOPLE:
            notes.append(f"'{g}' has {grp.n} faces of {grp.n_people} people: reported, too few to compare "
                         f"(needs {min_group_size} faces and {MIN_PEOPLE} people)")
    pair = _choose_pair(out["groups"], min_group_size)
    if pair is None:
        out["summary"] = f"`{attribute}`: fewer than two groups large enough to compare"
        return out
    a, b = pair
    out["compared"] = [a, b]
    out["gaps"] = _gaps(out["groups"][a], out["groups"][b], draws[a], draws[b], names)
    out["prediction_bias"] = _prediction_bias(members[a][0], members[b][0], members[a][1], members[b][1], names,
                                              n_permutations, np.random.default_rng([int(seed), 7919]))
    out["summary"] = comparison_summary(out)
    return out


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _interval(ci: dict) -> str:
    if ci.get("ci_low") is None:
        return ""
    return f" [{100 * ci['ci_low']:+.1f}, {100 * ci['ci_high']:+.1f}]"


def comparison_summary(result: dict[str, Any]) -> str:
    """One paragraph in words: the raw gaps, what is left of them with the class mix taken out,
    the per-class recall gaps and the largest prediction bias (points are percentage points,
    intervals 95%, people resampled)."""
    attr, gaps = result["attribute"], result.get("gaps")
    if not gaps or "accuracy" not in gaps:
        return result.get("summary", f"`{attr}`: nothing compared")
    a, b = result["compared"]
    parts, explained, survives = [], [], []
    for metric, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        raw = gaps.get(metric)
        std = gaps.get(f"{metric}_standardised")
        if raw is None:
            continue
        std = std or {"value": None, "ci_low": None, "excludes_zero": False}
        parts.append(f"{label} {_pts(raw['value'])}{_interval(raw)} as measured, "
                     f"{_pts(std['value'])}{_interval(std)} at the pooled class mix")
        if raw["excludes_zero"] and not std["excludes_zero"]:
            explained.append(label)
        if std["excludes_zero"]:
            survives.append(label)
    text = f"`{attr}`, '{a}' minus '{b}': " + "; ".join(parts) + "."
    if survives:
        text += (f" The {' and '.join(survives)} gap survives standardisation: the groups' faces of the same "
                 "expression are read differently.")
    elif explained:
        text += (f" The raw {' and '.join(explained)} gap is explained by the class mix: no gap survives "
                 "standardisation.")
    else:
        text += " No gap is distinguishable from zero, raw or standardised."
    classes = [f"{c} {_pts(v['value'])}{_interval(v)}" for c, v in gaps["per_class_recall"].items()
               if v["excludes_zero"]]
    if classes:
        text += f" Per-class recall gaps whose interval excludes zero: {'; '.join(classes)}."
    bias = result.get("prediction_bias") or {}
    top = bias.get("largest")
    if top:
        verdict = ("significant" if bias["family_p_value"] < 0.05 else "not significant")
        text += (f" Largest prediction bias: true {top['true']} read as {top['pred']} "
                 f"{100 * (top['rate_a'] or 0):.1f}% for '{a}' vs {100 * (top['rate_b'] or 0):.1f}% for '{b}' "
                 f"({_pts(top['difference']['value'])}{_interval(top['difference'])} points, cell p = "
                 f"{top['p_value']:.3f}; over all cells p = {bias['family_p_value']:.3f}, {verdict}).")
    if "ece" in gaps:
        text += f" ECE gap {_pts(gaps['ece']['value'])}{_interval(gaps['ece'])} points."
    return text


# --------------------------------------------------------------------------------------------
# figure


def attribute_gap_figure(result: dict[str, Any], path) -> None:
    """Two panels: a forest plot of the gaps (raw and standardised accuracy / macro-F1, then
    per-class recall) with 95% intervals, and per-class recall by group with intervals.

    Raises:
        ValueError: the result compared no groups (nothing to draw).
    """
    from ferwild.plotting import save_figure, subplots

    gaps = result.get("gaps")
    if not gaps:
        raise ValueError(f"{result.get('attribute')}: no groups were compared")
    a, b = result["compared"]
    rows = [(label, gaps[key]) for key, label in (("accuracy", "accuracy, raw"),
                                                  ("accuracy_standardised", "accuracy, standardised"),
                                                  ("macro_f1", "macro-F1, raw"),
                                                  ("macro_f1_standardised", "macro-F1, standardised"))
            if key in gaps]
    rows += [(f"recall: {c}", v) for c, v in gaps["per_class_recall"].items()]
    fig, (left, right) = subplots(1, 2, figsize=(12, 0.38 * len(rows) + 1.6), layout="constrained")
    for y, (label, ci) in enumerate(reversed(rows)):
        colour = "tab:red" if ci["excludes_zero"] else "tab:grey"
        value = 100 * ci["value"]
        low = value - 100 * (ci["ci_low"] if ci["ci_low"] is not None else ci["value"])
        high = 100 * (ci["ci_high"] if ci["ci_high"] is not None else ci["value"]) - value
        left.errorbar(value, y, xerr=[[low], [high]], fmt="o", color=colour, capsize=3)
    left.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)])
    left.axvline(0, color="black", lw=0.8)
    left.set_xlabel(f"'{a}' minus '{b}' (points, 95% people bootstrap)")
    left.set_title(f"{result['attribute']}: gaps (red: interval excludes 0)")
    classes = list(result["groups"][a]["per_class"])
    x = np.arange(len(classes))
    for i, g in enumerate((a, b)):
        rec = [result["groups"][g]["per_class"][c]["recall"] for c in classes]
        vals = np.array([np.nan if r["value"] is None else 100 * r["value"] for r in rec])
        lows = np.array([0 if r["ci_low"] is None else 100 * r["ci_low"] for r in rec])
        highs = np.array([0 if r["ci_high"] is None else 100 * r["ci_high"] for r in rec])
        right.errorbar(x + (i - 0.5) * 0.25, vals, yerr=[np.nan_to_num(vals - lows), np.nan_to_num(highs - vals)],
                       fmt="o", capsize=3, label=f"{g} (n={result['groups'][g]['n']})")
    right.set_xticks(x, classes, rotation=30, ha="right")
    right.set_ylabel("recall (%)")
    right.set_ylim(0, 100)
    right.legend()
    right.set_title("per-class recall by group")
    save_figure(fig, path)
