"""Which image properties carry a model's errors: size, crop tightness, colour, sharpness, light.

On wild_dev one labeller's photos lose 43 macro-F1 points, and that labeller's photos also look
different (small, tight colour crops from film stills). :func:`image_property_errors` separates
what the image is from who labelled it: each property is cut into groups (terciles of a number,
or its categories), and

* with labels, the groups are compared as :func:`ferwild.audit.fairness.attribute_comparison`
  compares people's attributes: raw and class-mix-standardised accuracy and macro-F1 with
  people-bootstrap intervals, so an easy class being common in big photos cannot pass for a
  size effect; ``exclude`` drops rows (e.g. one labeller) to say how much is left without them;
* without labels, each group's mean top-class probability and its share of uncertain readings
  (top-class probability under ``uncertain_below``) say where the model is least sure, with
  people-bootstrap intervals: what a production set without labels can still tell.

Properties come from the manifest ``prepare`` wrote (nothing is reloaded): ``image_side`` (the
shorter side of the original, px), ``face_fill`` (sqrt of the face box area over the shorter side:
1 or more is a crop the face fills), ``colour`` (stored grey or colour), ``sharpness`` and
``brightness`` (``prepare``'s quality statistics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.fairness import attribute_comparison
from ferwild.audit.groups import attribute_groups, group_order, image_statistics

__all__ = ["PROPERTIES", "property_groups", "image_property_errors"]

#: name -> what it measures.
PROPERTIES = {
    "image_side": "the original photo's shorter side (px)",
    "face_fill": "face box side over the photo's shorter side (>= 1: the face fills the photo)",
    "colour": "stored as grey or as colour",
    "sharpness": "prepare's sharpness statistic (variance of the Laplacian)",
    "brightness": "prepare's mean brightness (0-255)",
}
_GREY_MODES = ("L", "LA", "1", "I", "I;16", "F")
UNCERTAIN_BELOW = 0.5
CONFIDENCE = 0.95


def property_groups(rows: pd.DataFrame, *, bins: int = 3) -> pd.DataFrame:
    """One group label per row and property (columns ``prop_<name>``), numbers cut into
    ``bins`` quantile bins by :func:`ferwild.audit.groups.attribute_groups`; a row missing a
    value is ``unknown``."""
    stats = image_statistics(rows).reindex(rows.index)  # rows it does not describe read as unknown
    width = pd.to_numeric(rows.get("orig_width"), errors="coerce")
    height = pd.to_numeric(rows.get("orig_height"), errors="coerce")
    values = {
        "image_side": np.fmin(width, height),
        "face_fill": stats["face_size"],
        "colour": rows.get("orig_mode", pd.Series("", index=rows.index)).astype(str).map(
            lambda m: "" if m in ("", "nan", "None") else ("grey" if m in _GREY_MODES else "colour")),
        "sharpness": stats["sharpness"],
        "brightness": stats["brightness"],
    }
    out = pd.DataFrame(index=rows.index)
    for name, v in values.items():
        series = pd.Series(v, index=rows.index)
        if name != "colour":
            series = series.round(3)
        out[f"prop_{name}"] = attribute_groups(series, max_levels=2, bins=bins).to_numpy()
    return out


def _label_free(groups: np.ndarray, probs: np.ndarray, people: np.ndarray, n_bootstrap: int,
                rng: np.random.Generator, uncertain_below: float) -> dict[str, Any]:
    top = probs.max(1)
    out = {}
    for g in group_order(groups):
        mask = groups == g
        codes, uniq = pd.factorize(pd.Series(people[mask], dtype=object))
        n_people = len(uniq)
        w = rng.multinomial(n_people, np.full(n_people, 1 / n_people), size=n_bootstrap)
        n = np.bincount(codes, minlength=n_people).astype(float)
        conf = np.bincount(codes, weights=top[mask], minlength=n_people)
        unsure = np.bincount(codes, weights=(top[mask] < uncertain_below).astype(float), minlength=n_people)
        denom = np.maximum(w @ n, 1)
        row = {"faces": int(mask.sum()), "people": n_people}
        for key, sums in (("mean_confidence", conf), ("uncertain_share", unsure)):
            draws = (w @ sums) / denom
            lo, hi = np.quantile(draws, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
            row[key] = {"value": float(sums.sum() / n.sum()), "ci_low": float(lo), "ci_high": float(hi)}
        out[g] = row
    return out


def image_property_errors(rows: pd.DataFrame, probs: np.ndarray, label_names: list[str], *,
                          labels: np.ndarray | None = None, clusters: np.ndarray | None = None,
                          exclude: np.ndarray | None = None, min_group_size: int = 30, n_bootstrap: int = 1000,
                          n_permutations: int = 200, seed: int = 0,
                          uncertain_below: float = UNCERTAIN_BELOW) -> dict[str, Any]:
    """Per image property, where the errors (with labels) or the doubts (without) sit.

    Args:
        rows: manifest rows of the scored faces, in the order of ``probs``.
        probs: ``(N, K)`` class probabilities.
        labels: true class ids (``None`` or any ``-1``: the label-free figures only).
        clusters: person ids (``subject``); default every row its own person.
        exclude: boolean mask of rows to leave out (e.g. one labeller's photos).

    Returns:
        ``{"properties": {name: {"description", "label_free": {group: {...}},
        "comparison": attribute_comparison(...) | None}}, "faces", "excluded", "labelled"}``.
    """
    rows = rows.reset_index(drop=True)
    probs = np.asarray(probs, dtype=np.float64)
    keep = np.ones(len(rows), dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    people = (np.asarray(clusters, dtype=object) if clusters is not None
              else np.arange(len(rows)).astype(str).astype(object))
    labelled = labels is not None and bool((np.asarray(labels) >= 0).all())
    groups = property_groups(rows)
    out: dict[str, Any] = {"faces": int(keep.sum()), "excluded": int((~keep).sum()), "labelled": labelled,
                           "uncertain_below": uncertain_below, "properties": {}}
    frame = groups[keep].copy()
    frame["label_id"] = np.asarray(labels)[keep] if labelled else 0
    frame["pred_id"] = probs[keep].argmax(1)
    rng = np.random.default_rng(seed)
    for name, description in PROPERTIES.items():
        col = f"prop_{name}"
        entry: dict[str, Any] = {"description": description,
                                 "label_free": _label_free(frame[col].to_numpy(), probs[keep], people[keep],
                                                           n_bootstrap, rng, uncertain_below),
                                 "comparison": None}
        if labelled:
            entry["comparison"] = attribute_comparison(frame, label_names, col, probs=probs[keep],
                                                       clusters=people[keep], min_group_size=min_group_size,
                                                       n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                                                       seed=seed)
        out["properties"][name] = entry
    return out
