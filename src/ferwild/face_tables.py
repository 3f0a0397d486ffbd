"""The per-face CSV tables: one row builder, one column list per file.

Three files have one row per face (docs/cli.md lists their columns):

* ``predictions.csv`` (``ferwild predict``): :func:`prediction_columns`, every image and frame,
  one row without a face for an image with no face or an error;
* ``timelines/<video>.csv`` (``ferwild predict``): :func:`timeline_columns`, the faces of a
  video's frames only;
* ``frames.csv`` (``ferwild live``): :func:`frames_columns`, every frame, one row without a face
  for a frame with none; numbers written with fixed decimals (:func:`frames_csv_row`).

:func:`face_rows` builds the rows of one image or frame with every column any of them has; a
file keeps its own columns. A record is :meth:`ferwild.recognizer.ImageResult.to_dict`'s form (a
journal line of ``ferwild predict``) or ``vars(result)`` with ``vars(face)`` faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["face_rows", "frames_columns", "frames_csv_row", "prediction_columns", "timeline_columns"]

_BOX = ["x1", "y1", "x2", "y2"]


def prediction_columns(label_names: Sequence[str]) -> list[str]:
    """The columns of ``predictions.csv``."""
    return (["source", "frame", "time_s", "face", "track", "n_faces", *_BOX, "detection_confidence", "label",
             "confidence"] + [f"prob_{n}" for n in label_names] + ["error", "smoothed_label"])


def timeline_columns(label_names: Sequence[str]) -> list[str]:
    """The columns of ``timelines/<video>.csv``."""
    return (["frame", "time_s", "track", "label", "smoothed_label"] + [f"prob_{n}" for n in label_names]
            + [f"smoothed_{n}" for n in label_names])


def frames_columns(label_names: Sequence[str]) -> list[str]:
    """The columns of ``ferwild live``'s ``frames.csv``."""
    return (["frame", "time_s", "face", "track", *_BOX, "detection_confidence", "label", "confidence",
             "smoothed_label"] + [f"prob_{n}" for n in label_names] + [f"smoothed_{n}" for n in label_names])


def face_rows(record: Mapping[str, Any], label_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per face of an image or frame, or a single row with ``face`` None when it has none
    (its ``error``, if any, in ``error``). Every row has every column of the three tables; values
    a row does not have are None."""
    base = {"source": record.get("source"), "frame": record.get("frame"), "time_s": record.get("time_s"),
            "n_faces": record.get("n_faces", 0)}
    faces = record.get("faces") or []
    if not faces:
        return [{**base, "face": None, "track": None, **dict.fromkeys(_BOX), "detection_confidence": None,
                 "label": None, "confidence": None, "smoothed_label": None,
                 **{f"prob_{n}": None for n in label_names}, **{f"smoothed_{n}": None for n in label_names},
                 "error": record.get("error") or ""}]
    rows = []
    for k, face in enumerate(faces):
        smoothed = face.get("smoothed") or {}
        rows.append({**base, "face": k, "track": face.get("track"), **dict(zip(_BOX, face["box"])),
                     "detection_confidence": face.get("detection_confidence"), "label": face["label"],
                     "confidence": face["confidence"], "smoothed_label": face.get("smoothed_label"),
                     **{f"prob_{n}": face["probabilities"].get(n) for n in label_names},
                     **{f"smoothed_{n}": smoothed.get(n) for n in label_names}, "error": ""})
    return rows


# decimals of frames.csv's numbers (the others are written as they are)
_FRAMES_DECIMALS = {"time_s": 4, **dict.fromkeys(_BOX, 1), "detection_confidence": 4, "confidence": 4}


def frames_csv_row(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    """A :func:`face_rows` row as ``frames.csv`` writes it: ``columns`` in order, fixed decimals
    (probabilities 4), empty where a value is missing."""
    out: list[Any] = []
    for column in columns:
        value = row.get(column)
        digits = 4 if column.startswith(("prob_", "smoothed_")) and column != "smoothed_label" else \
            _FRAMES_DECIMALS.get(column)
        out.append("" if value is None else f"{value:.{digits}f}" if digits is not None else value)
    return out
