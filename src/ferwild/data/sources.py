"""Source readers: turn a labelled face collection into manifest rows.

Three kinds of source are understood:

* an **image-folder tree**, one folder per class, optionally under split folders
  (``root/train/happy/x.jpg``, ``root/test/angry/PublicTest_1.jpg``; FER2013 is one);
* a **CSV / Parquet manifest** with a ``path`` column (relative to the manifest's folder or
  absolute), ``label``, and optionally ``split``, ``subject``, ``video``, ``landmarks`` and any
  ``attr_*`` columns;
* the original **FER2013 ``fer2013.csv``** (``emotion``, ``pixels``, ``Usage`` columns), whose
  images live inside the CSV as 48x48 grey pixel strings.

Every reader returns the same frame: ``path`` (absolute for files; ``file.csv#row`` for pixel
rows), ``label_raw``, ``source_split`` ("" when the source has none), ``subject``, ``video``,
``landmarks`` (a (5, 2) array or None), ``pixels`` (FER2013 pixel string or None) and the
``attr_*`` columns. Labels are normalised later (``ferwild.labels``) so that unknown or
excluded labels can be counted, not lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.data.split import source_split_from_names

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

SOURCE_COLUMNS = ["path", "label_raw", "source_split", "subject", "video", "landmarks", "pixels"]

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "publictest": "val",
    "test": "test", "testing": "test", "privatetest": "test",
    "": "",
}


class SourceError(ValueError):
    """A source that cannot be read at all (missing, unknown format, required column absent)."""


def normalize_split(value: object) -> str:
    """Map a split name from a source (``Training``, ``PublicTest``, ``valid``) to train/val/test/""."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    key = str(value).strip().lower().replace("_", "").replace("-", "")
    if key not in _SPLIT_ALIASES:
        raise SourceError(f"unknown split name {value!r} (use train/val/test)")
    return _SPLIT_ALIASES[key]


def parse_landmarks(value: object) -> np.ndarray | None:
    """Parse 5 landmarks given as ``"x1 y1 ... x5 y5"``, a JSON list, or a sequence of 10 numbers.

    Returns a (5, 2) float array, or None when the value is empty or not 10 finite numbers.
    """
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            numbers = json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
            arr = np.asarray(numbers, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):
            return None
    else:
        try:
            arr = np.asarray(value, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError):
            return None
    if arr.size != 10 or not np.all(np.isfinite(arr)):
        return None
    return arr.reshape(5, 2)


def _empty_columns(n: int) -> dict[str, list]:
    return {"subject": [""] * n, "video": [""] * n, "landmarks": [None] * n, "pixels": [None] * n}


def read_image_folder(root: Path) -> pd.DataFrame:
    """Read a class-per-folder tree; split folders and FER2013 file prefixes give ``source_split``.

    The label is the name of each image's parent folder. Files with non-image extensions are
    not rows (they are not faces); an image with a bad payload is a row that gets rejected later.
    """
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()  # deterministic walk order
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(Path(dirpath, name).absolute()))
    if not paths:
        raise SourceError(f"no image files found under {root}")
    labels = [Path(p).parent.name if Path(p).parent != root.absolute() else "" for p in paths]
    relative = [os.path.relpath(p, root) for p in paths]
    splits = source_split_from_names(relative)
    frame = pd.DataFrame({"path": paths, "label_raw": labels, "source_split": list(splits)})
    for key, values in _empty_columns(len(paths)).items():
        frame[key] = values
    return frame[SOURCE_COLUMNS]


def read_fer2013_csv(path: Path, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read the original ``fer2013.csv``: emotion code, 2304 grey pixel values, Usage."""
    from ferwild.labels import FER2013_CODES

    table = pd.read_csv(path) if table is None else table
    missing = {"emotion", "pixels"} - set(table.columns)
    if missing:
        raise SourceError(f"{path}: not a FER2013 csv (missing {sorted(missing)})")
    n = len(table)
    labels = [FER2013_CODES.get(int(c), str(c)) if str(c).strip().lstrip("-").isdigit() else str(c)
              for c in table["emotion"]]
    usage = table["Usage"] if "Usage" in table.columns else [""] * n
    frame = pd.DataFrame({
        "path": [f"{path.absolute()}#{i}" for i in range(n)],
        "label_raw": labels,
        "source_split": [normalize_split(u) for u in usage],
    })
    cols = _empty_columns(n)
    cols["pixels"] = list(table["pixels"].astype(str))
    for key, values in cols.items():
        frame[key] = values
    return frame[SOURCE_COLUMNS]


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a CSV/Parquet manifest (``path``, ``label``, optional ``split``/``subject``/``video``/
    ``landmarks``/``attr_*``). Relative paths are resolved against the manifest's folder."""
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(
            path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for malformed files
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    if {"emotion", "pixels"} <= set(table.columns):
        return read_fer2013_csv(path, table)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise SourceError(f"{path}: manifest lacks column(s) {sorted(missing)}; "
                          "expected at least 'path' and 'label'")
    base = path.parent.absolute()
    paths = [str(p) if os.path.isabs(str(p)) else str(base / str(p)) for p in table["path"]]
    n = len(table)
    frame = pd.DataFrame({
        "path": paths,
        "label_raw": table["label"].astype(str).tolist(),
        "source_split": [normalize_split(s) for s in table["split"]] if "split" in table else [""] * n,
    })
    cols = _empty_columns(n)
    for key in ("subject", "video"):
        if key in table.columns:
            cols[key] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                         for v in table[key]]
    if "landmarks" in table.columns:
        cols["landmarks"] = [parse_landmarks(v) for v in table["landmarks"]]
    for key, values in cols.items():
        frame[key] = values
    frame = frame[SOURCE_COLUMNS]
    for col in table.columns:
        if col.startswith("attr_"):
            frame[col] = table[col].tolist()
    return frame


def read_source(source: str | os.PathLike) -> pd.DataFrame:
    """Read any supported source into the common frame (see the module docstring)."""
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_dir():
        return read_image_folder(path)
    if path.suffix.lower() in {".csv", ".parquet"}:
        return read_manifest(path)
    raise SourceError(f"unsupported source {path}: give an image folder, a .csv/.parquet "
                      "manifest, or fer2013.csv")


def decode_fer2013_pixels(pixels: str) -> np.ndarray:
    """Decode a FER2013 pixel string (2304 space-separated values) to a (48, 48, 1) uint8 array."""
    values = np.array(pixels.split(), dtype=np.int64) if pixels else np.array([], dtype=np.int64)
    side = int(round(np.sqrt(values.size)))
    if values.size == 0 or side * side != values.size:
        raise ValueError(f"pixel string has {values.size} values, not a square image")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("pixel values outside 0..255")
    return values.astype(np.uint8).reshape(side, side, 1)
