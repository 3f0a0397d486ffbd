"""Occlusion probes on real faces: what sunglasses, a mask, a hand or a patch do to a model.

The study blamed part of its production drop on occlusion (glasses, hands) without testing it.
FER robustness papers test it with controlled occluders placed by facial landmarks on real
photos; :func:`occlusion_probe` does that on any prepared set:

* Each usable face is taken from its original photo with the five landmarks ``prepare`` found
  (pre-aligned sets such as FER+ carry none: their crops are used with the set's learned landmark
  template), an occluder is drawn *on the photo*, and the face is cut exactly as ``prepare`` cut
  it (same landmarks, template, margin and crop side), so the only change the model sees is the
  occluder. A paired design: every face is read with and without each occluder.
* Occluders (:data:`OCCLUDERS`), placed in the face's own frame (eye line = x axis, units of the
  eye distance, so they follow roll and scale): the eye band (sunglasses), mouth and chin (a
  mask), one half of the face, a skin-toned hand-sized patch over the lower face, and random
  grey squares of growing side. ``outside`` is the control: the mask occluder copied into the
  photo's corners, where they miss the region the crop is cut from; it must change nothing
  (photos whose crop covers them whole, tight film stills, have no such place and are left out
  of the control).
* Per occluder: accuracy and macro-F1 and their drop, with intervals from a people bootstrap
  (paired: the same people resampled for both readings), per-class recall drop, the share of
  faces whose label flips and which classes flip to which. Unlabelled sets get the flip figures
  only. A sample of occluded photos also goes through the detectors (MTCNN, the fast one): does
  the face get found at all?

Notes, not crashes: rows without landmarks and without a template, unreadable photos, and
groups too small to support an interval are counted and reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.groups import bootstrap_interval
from ferwild.data.faces import align_face, resize_image, to_channels
from ferwild.data.occluders import (CONTROL, OCCLUDERS, FacePoints, occlude, occluder_fill, occluder_polygon,
                                    polygon_mask, probe_names)
from ferwild.data.prepared import COL, PreparedDataset
from ferwild.detectors import create_detector

__all__ = ["occlusion_probe", "write_occlusion_report"]

CONFIDENCE = 0.95


def _crop_footprint(face: FacePoints, alignment: Any, shape: tuple[int, int], aligned: bool) -> np.ndarray:
    """Where the crop comes from, as a mask of the photo (the whole photo for resized crops),
    grown by a few photo pixels: the warp's interpolation and anti-aliasing read a little beyond
    the crop's edge."""
    if not aligned:
        return np.ones(shape, dtype=bool)
    from ferwild.data.faces import similarity_transform

    side = alignment.crop_size
    m = similarity_transform(face.points, alignment.points(side))  # photo -> crop, (2, 3)
    a, t = m[:, :2], m[:, 2]
    photo_per_crop_pixel = 1.0 / math.sqrt(abs(np.linalg.det(a)))
    grow = max(4.0, 3.0 * photo_per_crop_pixel)
    lo, hi = -grow / photo_per_crop_pixel, side + grow / photo_per_crop_pixel  # crop pixels
    corners = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
    return polygon_mask(shape, (corners - t) @ np.linalg.inv(a).T)


def _outside_mask(face: FacePoints, footprint: np.ndarray) -> np.ndarray | None:
    """The mask occluder copied into the photo's four corners, wherever it misses the crop's
    footprint (None when no pixel of the photo is both)."""
    poly = occluder_polygon(CONTROL, face)
    h, w = footprint.shape
    lo, size = poly.min(0), poly.max(0) - poly.min(0)
    painted = np.zeros((h, w), dtype=bool)
    for corner in ((0, 0), (w - size[0], 0), (0, h - size[1]), (w - size[0], h - size[1])):
        painted |= polygon_mask((h, w), poly - lo + np.asarray(corner, dtype=np.float64))
    painted &= ~footprint
    return painted if painted.any() else None


# --------------------------------------------------------------------------------------------
# per-face sources


@dataclass
class _Source:
    image: np.ndarray        # uint8 photo (RGB) or pre-aligned crop
    face: FacePoints
    aligned: bool            # True: cut with the landmarks; False: resized whole (pre-aligned)


def _source_of(row: pd.Series, alignment: Any) -> _Source | str:
    """The photo and landmarks of a manifest row, or the reason it cannot be probed."""
    from ferwild.data.images import load_image

    try:
        image = load_image(str(row[COL.path])).array
    except Exception as exc:  # noqa: BLE001 - a moved or broken original is counted, not fatal
        return f"unreadable ({str(exc).splitlines()[0][:80]})"
    method = str(row.get(COL.align_method, ""))
    marks = row.get("landmarks")
    if method in ("mtcnn", "landmarks") and marks is not None and len(marks) == 10:
        return _Source(image, FacePoints(np.asarray(marks, dtype=np.float64).reshape(5, 2)), True)
    if alignment.template is None:
        return "no landmarks and no landmark template"
    side = alignment.crop_size
    image = resize_image(image, side)
    return _Source(image, FacePoints(np.asarray(alignment.template, dtype=np.float64) * side), False)


def _cut(src: _Source, image: np.ndarray, alignment: Any) -> np.ndarray:
    if src.aligned:
        return align_face(image, src.face.points, alignment.crop_size, alignment.margin,
                          template=None if alignment.template is None else np.asarray(alignment.template))
    return image


def _load_sources(rows: pd.DataFrame, alignment: Any) -> tuple[list[_Source], pd.DataFrame, dict[str, int]]:
    """The probe-able faces of ``rows``, their manifest rows, and the count of each skip reason."""
    sources, kept, skipped = [], [], {}
    for _, row in rows.iterrows():
        src = _source_of(row, alignment)
        if isinstance(src, str):
            skipped[src] = skipped.get(src, 0) + 1
            continue
        sources.append(src)
        kept.append(row)
    return sources, pd.DataFrame(kept), skipped


def _occluded(probe: str, sources: list[_Source], alignment: Any,
              rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Every source photo with ``probe`` drawn on it, and which of them the probe applies to
    (the control needs room outside the crop)."""
    images, use = [], np.ones(len(sources), dtype=bool)
    for i, src in enumerate(sources):
        if probe != CONTROL:
            polygon = occluder_polygon(probe, src.face, rng)
            images.append(occlude(src.image, polygon, occluder_fill(probe, src.image, src.face)))
            continue
        outside = _outside_mask(src.face, _crop_footprint(src.face, alignment, src.image.shape[:2], src.aligned))
        use[i] = outside is not None
        image = src.image.copy()
        if outside is not None:
            fill = np.asarray(occluder_fill(probe, src.image, src.face), dtype=np.uint8)
            image[outside] = fill[: image.shape[2]] if image.ndim == 3 else fill[0]
        images.append(image)
    return images, use


class _CropClassifier:
    """A run's predicted class ids for aligned crops (as the evaluation reads crops: the crop's
    channels, then the model's own preprocessing)."""

    def __init__(self, run: str | os.PathLike, device: str, channels: int, batch_size: int):
        from ferwild.backends import TorchClassifier
        from ferwild.runs import load_run, resolve_device

        dev = resolve_device(device)
        model, state = load_run(run, "best", dev)
        self.classifier, self.preprocessing = TorchClassifier(model, dev), model.preprocessing
        self.label_names, self.channels, self.batch_size = list(state["label_names"]), channels, batch_size

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack([to_channels(c, self.channels) for c in crops[start:start + self.batch_size]])
            out.append(np.asarray(self.classifier(self.preprocessing.pixel_values(batch))).argmax(1))
        return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# statistics


def _scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """accuracy, macro-F1 (classes present), per-class recall of (a stack of) confusion matrices."""
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        present = support > 0
        macro = np.where(present, f1, 0.0).sum(-1) / present.sum(-1)
        acc = tp.sum(-1) / support.sum(-1)
    return acc, macro, recall


def _paired_effect(true: np.ndarray | None, clean: np.ndarray, occluded: np.ndarray, people: np.ndarray,
                   names: list[str], n_bootstrap: int, rng: np.random.Generator) -> dict[str, Any]:
    """Drop (clean - occluded) of accuracy, macro-F1 and per-class recall, flips; people bootstrap."""
    k = len(names)
    codes, uniq = pd.factorize(pd.Series(people, dtype=object))
    weights = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_bootstrap)
    flipped = (clean != occluded).astype(np.float64)
    per_person_flips = np.bincount(codes, weights=flipped, minlength=len(uniq))
    per_person_n = np.bincount(codes, minlength=len(uniq)).astype(np.float64)
    flip_draws = (weights @ per_person_flips) / np.maximum(weights @ per_person_n, 1)
    transitions = pd.crosstab(pd.Series(clean, name="from"), pd.Series(occluded, name="to"))
    moves = [{"from": names[a], "to": names[b], "faces": int(transitions.loc[a, b])}
             for a in transitions.index for b in transitions.columns if a != b and transitions.loc[a, b] > 0]
    moves.sort(key=lambda m: -m["faces"])
    out: dict[str, Any] = {"faces": int(len(clean)), "people": int(len(uniq)),
                           "flip_rate": bootstrap_interval(flipped.mean(), flip_draws, CONFIDENCE),
                           "top_flips": moves[:5]}
    if true is None:
        return out
    counts = {}
    for tag, pred in (("clean", clean), ("occluded", occluded)):
        c = np.zeros((len(uniq), k * k))
        np.add.at(c, (codes, true * k + pred), 1.0)
        counts[tag] = c
    point = {t: _scores(c.sum(0).reshape(k, k)) for t, c in counts.items()}
    boot = {t: _scores((weights @ c).reshape(n_bootstrap, k, k)) for t, c in counts.items()}
    for i, metric in enumerate(("accuracy", "macro_f1")):
        out[metric] = {"clean": float(point["clean"][i]), "occluded": float(point["occluded"][i]),
                       "drop": bootstrap_interval(point["clean"][i] - point["occluded"][i],
                                                  boot["clean"][i] - boot["occluded"][i], CONFIDENCE)}
    out["recall_drop"] = {names[c]: {**bootstrap_interval(point["clean"][2][c] - point["occluded"][2][c],
                                           boot["clean"][2][:, c] - boot["occluded"][2][:, c], CONFIDENCE),
                                     "clean": None if np.isnan(point["clean"][2][c]) else float(point["clean"][2][c]),
                                     "support": int(counts["clean"].sum(0).reshape(k, k)[c].sum())}
                          for c in range(k)}
    return out


# --------------------------------------------------------------------------------------------
# the probe


def _detector_check(sources: list[_Source], detectors: Sequence[str], probes: list[str],
                    rng: np.random.Generator) -> dict[str, Any]:
    """Share of occluded photos in which each detector still finds a face near the true one."""
    out: dict[str, Any] = {}
    photos = [s for s in sources if s.aligned]
    if not photos:
        return {"note": "pre-aligned crops: no photos to run a detector on"}
    for name in detectors:
        try:
            detector = create_detector(name)
        except Exception as exc:  # noqa: BLE001 - a detector that cannot load is reported
            out[name] = {"error": str(exc).splitlines()[0]}
            continue
        found = {}
        for probe in ["none"] + [p for p in probes if p != CONTROL]:
            images = []
            for s in photos:
                if probe == "none":
                    images.append(s.image)
                else:
                    polygon = occluder_polygon(probe, s.face, rng)
                    images.append(occlude(s.image, polygon, occluder_fill(probe, s.image, s.face)))
            results = detector.detect(images)
            hits = 0
            for s, dets in zip(photos, results):
                if isinstance(dets, Exception):
                    continue
                centre = s.face.points.mean(0)
                hits += any(d.box[0] <= centre[0] <= d.box[2] and d.box[1] <= centre[1] <= d.box[3] for d in dets)
            found[probe] = {"photos": len(photos), "found": hits, "rate": hits / len(photos)}
        out[name] = found
    return out


def occlusion_probe(run: str | os.PathLike, data: str | os.PathLike, *, split: str | None = None,
                    max_faces: int | None = None, detectors: Sequence[str] = ("mtcnn", "fast"),
                    detector_photos: int = 100, n_bootstrap: int = 1000, batch_size: int = 256, seed: int = 0,
                    device: str = "auto", progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run every occluder of :func:`probe_names` over a prepared set's faces and measure the effect.

    Args:
        run: a run folder or a shipped model (``ferwild:ferplus_vgg``).
        data: a prepared dataset (labelled or ``--unlabelled``).
        split: only this split's rows (default: every usable row).
        max_faces: a seeded sample of at most this many faces (default: all).
        detectors: detectors run on ``detector_photos`` occluded photos (``()`` to skip).
        n_bootstrap, seed: people bootstrap size and seed (also the random patches' positions).

    Returns:
        ``{"run", "data", "split", "labelled", "faces", "people", "skipped": {reason: count},
        "probes": {name: {"description", "faces", "people", "flip_rate", "top_flips",
        ["accuracy", "macro_f1", "recall_drop"]}}, "clean": {...}, "detectors": {...}, "notes"}``;
        drops are clean minus occluded with 95% people-bootstrap intervals.
    """

    say = progress or (lambda _m: None)
    prepared = PreparedDataset(data)
    alignment = prepared.face_alignment()
    names = prepared.label_names
    m = prepared.manifest
    rows = m[(m[COL.status].astype(str) == "aligned") & (m[COL.augmented_from].astype(str) == "")]
    if split is not None:
        rows = rows[rows[COL.split].astype(str) == split]
    if rows.empty:
        raise ValueError(f"{data}: no usable faces{'' if split is None else f' in split {split!r}'}")
    if max_faces is not None and len(rows) > max_faces:
        rows = rows.sample(n=max_faces, random_state=seed)
    classify = _CropClassifier(run, device, alignment.channels, batch_size)
    if list(classify.label_names) != list(names):
        raise ValueError(f"the model reads {classify.label_names}, the data is labelled {names}: "
                         "prepare the data like the model's training set (--like)")
    say(f"loading {len(rows)} faces")
    sources, kept, skipped = _load_sources(rows, alignment)
    if not sources:
        raise ValueError(f"{data}: no face could be probed ({skipped})")
    labelled = COL.label_id in kept and (kept[COL.label_id] >= 0).all()
    true = kept[COL.label_id].to_numpy(dtype=np.int64) if labelled else None
    people = (kept[COL.subject].astype(str).to_numpy(dtype=object)
              if COL.subject in kept and (kept[COL.subject].astype(str) != "").all()
              else np.arange(len(kept)).astype(str).astype(object))

    def read(images: list[np.ndarray]) -> np.ndarray:
        return classify([_cut(s, img, alignment) for s, img in zip(sources, images)])

    say("clean faces")
    clean = read([s.image for s in sources])
    notes: list[str] = []
    if skipped:
        notes.append("skipped: " + ", ".join(f"{n} {reason}" for reason, n in skipped.items()))
    if not all(s.aligned for s in sources):
        notes.append("pre-aligned crops: occluders placed by the set's landmark template, not per face")
    probes: dict[str, Any] = {}
    for probe in probe_names():
        say(f"occluder {probe}")
        images, use = _occluded(probe, sources, alignment, np.random.default_rng([seed, sum(map(ord, probe))]))
        if not use.any():
            notes.append(f"{probe}: no photo had room outside the crop for the control occluder")
            continue
        pred = read(images)
        effect = _paired_effect(None if true is None else true[use], clean[use], pred[use], people[use], names,
                                n_bootstrap, np.random.default_rng([seed, 1]))
        description = OCCLUDERS.get(probe) or ("the mask occluder outside the cropped region (control: must change "
                                               "nothing)" if probe == CONTROL else
                                               f"a grey square {probe.removeprefix('patch_')} eye distances wide at a "
                                               "random place on the face")
        probes[probe] = {"description": description, **effect}
    result: dict[str, Any] = {
        "run": str(run), "data": str(data), "split": split, "labelled": bool(labelled),
        "faces": len(sources), "people": int(pd.Series(people).nunique()), "skipped": skipped,
        "label_names": names, "probes": probes, "notes": notes,
        "geometry": "units of the eye distance in the face's frame; see ferwild.audit.occlusion.occluder_polygon",
    }
    if labelled:
        acc, macro, recall = _scores(np.bincount(true * len(names) + clean, minlength=len(names) ** 2)
                                     .reshape(len(names), len(names)))
        result["clean"] = {"accuracy": float(acc), "macro_f1": float(macro),
                           "recall": {n: None if np.isnan(r) else float(r) for n, r in zip(names, recall)}}
    if detectors and detector_photos:
        say("detectors on occluded photos")
        order = np.random.default_rng(seed).permutation(len(sources))[:detector_photos]
        result["detectors"] = _detector_check([sources[i] for i in order], detectors, probe_names(),
                                              np.random.default_rng([seed, 2]))
    return result


def write_occlusion_report(result: dict[str, Any], out: str | os.PathLike) -> Path:
    """``occlusion.json``, ``occlusion.md`` and ``occlusion.png`` (drop by occluder) under ``out``."""
    from ferwild.files import save_json_atomic, save_text_atomic
    from ferwild.metrics import jsonable
    from ferwild.plotting import save_figure, subplots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json_atomic(out / "occlusion.json", jsonable(result, digits=6, nan_to_none=True))
    probes = result["probes"]
    key = "accuracy" if result["labelled"] else None
    lines = [f"# Occlusion probes: `{result['run']}` on `{result['data']}`", "",
             f"{result['faces']} faces of {result['people']} people; every face read with and without each "
             "occluder (paired); intervals: 95%, people resampled.", ""]
    if key:
        lines += [f"Clean: accuracy {100 * result['clean']['accuracy']:.1f}%, macro-F1 "
                  f"{100 * result['clean']['macro_f1']:.1f}%.", "",
                  "| occluder | accuracy drop (points) | macro-F1 drop (points) | labels flipped | most common flip |",
                  "|---|---|---|---|---|"]
    else:
        lines += ["| occluder | labels flipped | most common flip |", "|---|---|---|"]

    def ci(c: dict) -> str:
        if c["value"] is None:
            return "-"
        if c["ci_low"] is None:
            return f"{100 * c['value']:.1f}"
        return f"{100 * c['value']:.1f} [{100 * c['ci_low']:.1f}, {100 * c['ci_high']:.1f}]"

    for name, p in probes.items():
        flip = p["top_flips"][0] if p["top_flips"] else None
        flip_text = f"{flip['from']} -> {flip['to']} ({flip['faces']})" if flip else "-"
        cells = [f"{name}: {p['description']}"]
        if key:
            cells += [ci(p["accuracy"]["drop"]), ci(p["macro_f1"]["drop"])]
        cells += [f"{ci(p['flip_rate'])}%", flip_text]
        lines.append("| " + " | ".join(cells) + " |")
    if key:
        names = result["label_names"]
        lines += ["", "Recall drop by class (points):", "",
                  "| occluder | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for name, p in probes.items():
            lines.append(f"| {name} | " + " | ".join(ci(p["recall_drop"][n]) for n in names) + " |")
    det = result.get("detectors") or {}
    if det and "note" not in det:
        lines += ["", "Faces still found by the detectors (share of occluded photos):", ""]
        for dname, found in det.items():
            if "error" in found:
                lines.append(f"- {dname}: {found['error']}")
                continue
            lines.append(f"- {dname}: " + ", ".join(f"{p} {100 * f['rate']:.0f}%" for p, f in found.items()))
    if result.get("notes"):
        lines += ["", "Notes: " + "; ".join(result["notes"]) + "."]
    save_text_atomic(out / "occlusion.md", "\n".join(lines) + "\n")
    fig, ax = subplots(1, 1, figsize=(8, 0.45 * len(probes) + 1.2), layout="constrained")
    labels = list(probes)
    metric = "accuracy" if key else None
    for y, name in enumerate(reversed(labels)):
        c = probes[name][metric]["drop"] if metric else probes[name]["flip_rate"]
        if c["value"] is None:
            continue
        lo = c["value"] - (c["ci_low"] if c["ci_low"] is not None else c["value"])
        hi = (c["ci_high"] if c["ci_high"] is not None else c["value"]) - c["value"]
        ax.errorbar(100 * c["value"], y, xerr=[[100 * lo], [100 * hi]], fmt="o", capsize=3,
                    color="tab:grey" if name == CONTROL else "tab:red")
    ax.set_yticks(range(len(labels)), list(reversed(labels)))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(("accuracy drop" if metric else "labels flipped") + " (points, 95% people bootstrap)")
    save_figure(fig, out / "occlusion.png")
    return out
