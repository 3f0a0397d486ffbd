"""Source readers: turn a labelled face collection into manifest rows.

Three kinds of source are understood:

* an **image-folder tree**, one folder per class, optionally under split folders
  (``root/train/happy/x.jpg``, ``root/test/angry/PublicTest_1.jpg``; FER2013 is one);
* a **CSV / Parquet manifest** with a ``path`` column (relative to the manifest's folder or
  absolute), ``label``, and optionally ``split``, ``subject``, ``video``, ``landmarks``, any
  ``attr_*`` columns and a ``labeller`` (or ``annotator``/``rater``) column, kept as
  ``attr_labeller``;
* the original **FER2013 ``fer2013.csv``** (``emotion``, ``pixels``, ``Usage`` columns), whose
  images live inside the CSV as 48x48 grey pixel strings;
* **FER+** as Microsoft's FERPlus scripts lay it out (``FER2013Train|Valid|Test/`` with PNGs and
  a headerless ``label.csv`` of ten vote counts per face): the folders are the train/val/test
  splits and the votes become ``votes_*`` columns (``ferwild.data.votes``). A CSV/Parquet
  manifest may carry ``votes_<class>`` columns too, with or without a ``label``.

Every reader returns the same frame: ``path`` (absolute for files; ``file.csv#row`` for pixel
rows), ``label_raw``, ``source_split`` ("" when the source has none), ``subject``, ``video``,
``landmarks`` (a (5, 2) array or None), ``pixels`` (FER2013 pixel string or None) and the
``attr_*`` and ``votes_*`` columns. Labels are normalised later (``ferwild.labels``; from the
votes by ``ferwild.data.votes``) so that unknown or excluded labels can be counted, not lost. A
reader that finds a row it cannot use (votes that do not parse, a name listed twice) says why
in an optional ``source_problem`` column; ``prepare`` rejects that row with that reason.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.data.split import source_split_from_names
from ferwild.data.votes import VOTE_CLASSES, VOTE_COLUMNS, parse_vote_columns, vote_class, vote_columns

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

SOURCE_COLUMNS = ["path", "label_raw", "source_split", "subject", "video", "landmarks", "pixels"]
#: A reader's per-row complaint ("" when the row is fine); prepare rejects such rows with it.
SOURCE_PROBLEM = "source_problem"

#: FERPlus's folders (``generate_training_data.py``) and the FER2013 split each one holds.
FERPLUS_FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
FERPLUS_LABEL_FILE = "label.csv"
FERPLUS_FULL_FILE = "fer2013new.csv"

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
    votes = vote_columns(table)
    missing = {"path"} | ({"label"} if not votes else set())
    missing -= set(table.columns)
    if missing:
        raise SourceError(f"{path}: manifest lacks column(s) {sorted(missing)}; "
                          "expected at least 'path' and 'label' (or votes_<class> columns)")
    for column in votes:
        try:
            vote_class(column)
        except ValueError:
            raise SourceError(f"{path}: column {column!r} counts no known class (votes_<expression>, "
                              "votes_unknown or votes_nf)") from None
    base = path.parent.absolute()
    paths = [str(p) if os.path.isabs(str(p)) else str(base / str(p)) for p in table["path"]]
    n = len(table)
    labels = table["label"] if "label" in table.columns else pd.Series([""] * n)
    frame = pd.DataFrame({
        "path": paths,
        "label_raw": ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in labels],
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
    # who labelled each face is an attribute to audit by (per-labeller figures)
    for col in ("labeller", "labeler", "annotator", "rater"):
        if col in table.columns and "attr_labeller" not in frame.columns:
            frame["attr_labeller"] = table[col].astype(str).tolist()
    if votes:
        counts, problems = parse_vote_columns(table, votes)
        for j, column in enumerate(votes):
            frame[column] = counts[:, j]
        frame[SOURCE_PROBLEM] = problems
    return frame


def is_ferplus(root: Path) -> bool:
    """True for a folder laid out as FERPlus's scripts write it (a split folder with label.csv)."""
    return root.is_dir() and any((root / name / FERPLUS_LABEL_FILE).is_file() for name in FERPLUS_FOLDERS)


def ferplus_listed_twice(root: Path) -> set[str]:
    """Image names that ``fer2013new.csv`` lists twice: their PNG holds the later row's pixels
    while ``label.csv`` keeps the first row's votes, so votes and pixels may not match."""
    full = root / FERPLUS_FULL_FILE
    if not full.is_file():
        return set()
    try:
        names = pd.read_csv(full, usecols=["Image name"], dtype=str, keep_default_na=False)["Image name"]
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        # silently skipping it would let rows whose votes belong to other pixels through
        raise SourceError(f"cannot read {full} (needed to find the names it lists twice): {exc}; "
                          f"repair it or move it out of {root}") from None
    names = names[names.str.strip() != ""]
    return set(names[names.duplicated(keep=False)])


def read_ferplus(root: Path) -> pd.DataFrame:
    """Read FER+ (see the module docstring): one row per ``label.csv`` line, votes as columns.

    A line without ten vote counts, or with a count that is not a number >= 0, becomes a row
    with a ``source_problem``; so does a name ``fer2013new.csv`` lists twice. A listed PNG that
    is missing is rejected later, when ``prepare`` cannot open it.
    """
    twice = ferplus_listed_twice(root)
    paths, splits, problems, counts = [], [], [], []
    for folder, split in FERPLUS_FOLDERS.items():
        label_file = root / folder / FERPLUS_LABEL_FILE
        if not label_file.is_file():
            continue
        with open(label_file, newline="", encoding="utf-8") as handle:
            for line_no, fields in enumerate(csv.reader(handle), start=1):
                if not fields or not "".join(fields).strip():
                    continue
                name = fields[0].strip()
                paths.append(str((root / folder / name).absolute()))
                splits.append(split)
                row, problem = _ferplus_votes(fields[2:])
                if not problem and name in twice:
                    problem = (f"name listed twice in {FERPLUS_FULL_FILE} (its PNG holds the later row's "
                               "pixels, label.csv the first row's votes)")
                if problem:  # where last: the summary groups reasons by their head
                    problem = f"{problem} [{folder}/{FERPLUS_LABEL_FILE} line {line_no}]"
                problems.append(problem)
                counts.append(row)
    if not paths:
        raise SourceError(f"{root}: no FERPlus {FERPLUS_LABEL_FILE} with rows under {', '.join(FERPLUS_FOLDERS)}")
    frame = pd.DataFrame({"path": paths, "label_raw": [""] * len(paths), "source_split": splits})
    for key, values in _empty_columns(len(paths)).items():
        frame[key] = values
    frame = frame[SOURCE_COLUMNS]
    matrix = np.asarray(counts, dtype=np.float64).reshape(len(paths), len(VOTE_COLUMNS))
    for j, column in enumerate(VOTE_COLUMNS):
        frame[column] = matrix[:, j]
    frame[SOURCE_PROBLEM] = problems
    return frame


def _ferplus_votes(cells: list[str]) -> tuple[list[float], str]:
    """The ten counts of one label.csv line, or NaNs and what is wrong with them."""
    nan = [float("nan")] * len(VOTE_CLASSES)
    if len(cells) != len(VOTE_CLASSES):
        return nan, f"expected {len(VOTE_CLASSES)} vote counts, found {len(cells)}"
    values = []
    for name, cell in zip(VOTE_CLASSES, cells):
        try:
            value = float(cell)
        except ValueError:
            return nan, f"bad votes: votes_{name}={cell.strip()!r} is not a number"
        if not np.isfinite(value) or value < 0:
            return nan, f"bad votes: votes_{name}={cell.strip()!r} (vote counts must be >= 0)"
        values.append(value)
    return values, ""


def read_source(source: str | os.PathLike) -> pd.DataFrame:
    """Read any supported source into the common frame (see the module docstring)."""
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_dir():
        return read_ferplus(path) if is_ferplus(path) else read_image_folder(path)
    if path.suffix.lower() in {".csv", ".parquet"}:
        return read_manifest(path)
    raise SourceError(f"unsupported source {path}: give an image folder, a FERPlus folder, a "
                      ".csv/.parquet manifest, or fer2013.csv")


def default_label_set(source: str | os.PathLike) -> str:
    """The label set ``prepare`` uses when none is given: FER2013's 7 classes (``basic7``) for a
    FERPlus folder, whose benchmark protocol is 7 (or 8) classes; the study's ``basic6`` otherwise."""
    return "basic7" if is_ferplus(Path(source)) else "basic6"


def decode_fer2013_pixels(pixels: str) -> np.ndarray:
    """Decode a FER2013 pixel string (2304 space-separated values) to a (48, 48, 1) uint8 array."""
    values = np.array(pixels.split(), dtype=np.int64) if pixels else np.array([], dtype=np.int64)
    side = int(round(np.sqrt(values.size)))
    if values.size == 0 or side * side != values.size:
        raise ValueError(f"pixel string has {values.size} values, not a square image")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("pixel values outside 0..255")
    return values.astype(np.uint8).reshape(side, side, 1)
