"""Who labelled the photo, or what the photo is? wild_dev's labeller gap taken apart.

The production audit finds one labeller's photos (``attr_labeller`` = ``jhamski``) read ~40
macro-F1 points worse than the others'. Those photos differ in every other way too: two people
(two actresses), small colour frames from films (88 px against 350 px grey for every other
labeller) in which the face fills the frame. This analysis measures what can be told apart:

* **Within the same classes**: the default model's recall on that labeller's photos against
  the other labellers' photos of the same class (a class mix cannot fake it), with intervals
  (people bootstrap for the others; for two people, photos are the only units there are, so the
  labeller's own interval is a photo bootstrap and says so).
* **Where its errors go**: the model's reading of that labeller's photos by label.
* **Crop coverage**: the share of the aligned crop that falls outside the photo (filled with
  padding) when the face fills the frame, computed from each photo's landmarks and the crop
  template; the other labellers' accuracy by coverage says whether tight framing alone costs
  accuracy where the labels are the usual ones.

Reproduce (the audit's forward pass is cached, so a few seconds after ``ferwild audit``)::

    python analyses/labeller_and_image.py --data model_work/wild_dev_like_ferplus \\
        --out docs/bench/labeller_and_image.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.audit.model_outputs import compute_outputs
from ferwild.data.faces import similarity_transform
from ferwild.data.prepared import PreparedDataset
from ferwild.files import save_json_atomic
from ferwild.metrics import jsonable

LABELLER = "jhamski"
MIN_CLASS = 10
CONFIDENCE = 0.95


def crop_outside_share(row: pd.Series, alignment) -> float:
    """Share of the aligned crop's pixels whose source lies outside the photo (padding)."""
    marks = row.get("landmarks")
    if marks is None or len(marks) != 10 or str(row.get("align_method")) not in ("mtcnn", "landmarks"):
        return float("nan")
    side = alignment.crop_size
    m = similarity_transform(np.asarray(marks, dtype=np.float64).reshape(5, 2), alignment.points(side))
    a, t = m[:, :2], m[:, 2]
    grid = (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) + 0.5)
    src = (grid - t) @ np.linalg.inv(a).T
    w, h = float(row["orig_width"]), float(row["orig_height"])
    inside = (src[:, 0] >= 0) & (src[:, 0] < w) & (src[:, 1] >= 0) & (src[:, 1] < h)
    return float(1.0 - inside.mean())


def _bootstrap_share(hits: np.ndarray, units: np.ndarray, rng: np.random.Generator, n: int = 1000) -> dict:
    codes, uniq = pd.factorize(pd.Series(units, dtype=object))
    k = np.bincount(codes, weights=hits.astype(float), minlength=len(uniq))
    c = np.bincount(codes, minlength=len(uniq)).astype(float)
    w = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n)
    draws = (w @ k) / np.maximum(w @ c, 1)
    lo, hi = np.quantile(draws, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return {"value": float(hits.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(hits)),
            "units": int(len(uniq))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="ferwild:ferplus_vgg")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prepared = PreparedDataset(args.data)
    outputs = compute_outputs(args.run, args.data, None)
    rows, names = outputs.rows, outputs.label_names
    pred, true = outputs.preds, outputs.labels
    right = pred == true
    theirs = rows["attr_labeller"].astype(str).to_numpy() == LABELLER
    rng = np.random.default_rng(args.seed)
    people = rows["subject"].astype(str).to_numpy(dtype=object)
    photos = np.arange(len(rows)).astype(str).astype(object)

    within = {}
    for c, name in enumerate(names):
        mine, other = theirs & (true == c), ~theirs & (true == c)
        if mine.sum() < MIN_CLASS or other.sum() < MIN_CLASS:
            continue
        within[name] = {LABELLER: _bootstrap_share(right[mine], photos[mine], rng),
                        "other_labellers": _bootstrap_share(right[other], people[other], rng)}
        mine_r, other_r = within[name][LABELLER]["value"], within[name]["other_labellers"]["value"]
        within[name]["gap"] = other_r - mine_r

    readings = pd.crosstab(pd.Series([names[t] for t in true[theirs]], name="label"),
                           pd.Series([names[p] for p in pred[theirs]], name="read as"))

    alignment = prepared.face_alignment()
    outside = np.array([crop_outside_share(r, alignment) for _, r in rows.iterrows()])
    bins = [0.0, 0.001, 0.05, 0.15, 0.3, 1.01]
    coverage = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = ~theirs & (outside >= lo) & (outside < hi)
        entry = {"outside_share": [lo, min(hi, 1.0)], "faces_other_labellers": int(sel.sum()),
                 "faces_labeller": int((theirs & (outside >= lo) & (outside < hi)).sum())}
        if sel.sum() >= 30:
            entry["accuracy_other_labellers"] = _bootstrap_share(right[sel], people[sel], rng)
        coverage.append(entry)

    result = {
        "command": f"python analyses/labeller_and_image.py --data {args.data} --out {args.out}",
        "run": args.run, "labeller": LABELLER,
        "labeller_photos": int(theirs.sum()), "labeller_people": int(pd.Series(people[theirs]).nunique()),
        "labeller_median_side": float(np.median(rows.loc[theirs, "orig_width"].astype(float))),
        "others_median_side": float(np.median(rows.loc[~theirs, "orig_width"].astype(float))),
        "labeller_accuracy": _bootstrap_share(right[theirs], photos[theirs], rng),
        "others_accuracy": _bootstrap_share(right[~theirs], people[~theirs], rng),
        "within_class_recall": within,
        "labeller_readings": {lab: {k: int(v) for k, v in row.items()} for lab, row in readings.iterrows()},
        "crop_outside_share": {
            "labeller_median": float(np.nanmedian(outside[theirs])),
            "others_median": float(np.nanmedian(outside[~theirs])),
            "others_share_over_5pct": float(np.nanmean(outside[~theirs] > 0.05)),
            "labeller_share_over_5pct": float(np.nanmean(outside[theirs] > 0.05)),
            "by_bin": coverage,
        },
        "units": "labeller's intervals: photos resampled (two people); others': people resampled",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_json_atomic(args.out, jsonable(result, digits=6, nan_to_none=True))
    print(f"wrote {args.out}")
    for name, w in within.items():
        print(f"{name}: {LABELLER} {100 * w[LABELLER]['value']:.1f}% (n={w[LABELLER]['n']}) vs others "
              f"{100 * w['other_labellers']['value']:.1f}% (n={w['other_labellers']['n']})")
    print(readings)
    print({k: v for k, v in result["crop_outside_share"].items() if k != "by_bin"})
    for b in coverage:
        print(b)


if __name__ == "__main__":
    main()
