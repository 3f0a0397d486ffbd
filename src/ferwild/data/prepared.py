"""A prepared dataset on disk: uint8 image shards (``.npy``, memory-mappable) + a Parquet manifest.

Layout of a prepared directory::

    DIR/manifest.parquet   one row per input file (+ augmented rows); columns: ``COL``
    DIR/summary.json       counts, statuses, duplicates, alignment-failure rates
    DIR/shards/*.npy       (N, H, W, C) uint8 arrays; a row points at (shard, shard_index)

Every file is written atomically (``ferwild.files``), so a ``prepare`` killed at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST = "manifest.parquet"
SUMMARY = "summary.json"
SHARDS = "shards"


@dataclass(frozen=True)
class ManifestColumns:
    """The manifest's columns: code writes ``COL.split``, never the string, so this is the one
    place that names them (a typo is an ``AttributeError``, not a silently empty column)."""

    row_id: str = "row_id"              # stable id of an input row; augmented rows get new ones
    path: str = "path"                  # the input file (``FILE#i``: row i of a CSV of pixels;
                                        # ``...#augK``: an augmented copy)
    label_raw: str = "label_raw"        # the label as the source spelt it
    label: str = "label"                # the class name in the label set ("" when unlabelled)
    label_id: str = "label_id"          # its position in the label set (the logit index)
    source_split: str = "source_split"  # the source's own split, if it had one
    split: str = "split"                # train | val | test | "" (not used)
    subject: str = "subject"            # person id: splits keep a person on one side
    video: str = "video"                # clip id: splits keep a clip on one side
    status: str = "status"              # one of STATUSES
    reason: str = "reason"              # why a row was rejected, excluded or dropped
    notes: str = "notes"                # what was done to the image on the way (EXIF, colour)
    orig_mode: str = "orig_mode"        # the file's PIL mode, e.g. RGB, L, CMYK
    orig_width: str = "orig_width"      # the photo's size before alignment
    orig_height: str = "orig_height"
    align_method: str = "align_method"  # landmarks | mtcnn | none | resize | center
    confidence: str = "confidence"      # the detector's score of the chosen face
    n_faces: str = "n_faces"            # faces the detector found in the photo
    box: str = "box"                    # the chosen face's box [x1, y1, x2, y2] in the photo
    landmarks: str = "landmarks"        # its 5 landmarks, flattened (given or detected)
    other_boxes: str = "other_boxes"    # JSON list of the other faces' boxes
    shard: str = "shard"                # the shard holding the cached pixels ("": none)
    shard_index: str = "shard_index"    # the row's position in that shard
    content_hash: str = "content_hash"  # SHA-1 of the cached pixels (exact duplicates)
    phash: str = "phash"                # 64-bit perceptual hash (near duplicates)
    sharpness: str = "sharpness"        # mean |4-neighbour Laplacian| of the grey crop
    brightness: str = "brightness"      # mean grey level of the crop
    contrast: str = "contrast"          # standard deviation of the grey levels
    augmented_from: str = "augmented_from"  # the original row's path ("" for originals)
    exact_dup_of: str = "exact_dup_of"  # path of the row this one duplicates exactly
    near_dup_of: str = "near_dup_of"    # path of the row this one nearly duplicates


COL = ManifestColumns()
ATTR_PREFIX = "attr_"                   # attribute columns: attr_gender, attr_age, ...

# A row's status, from reading to caching.
STATUSES = ("aligned", "unaligned", "dropped", "rejected", "excluded")
USABLE_STATUSES = ("aligned", "unaligned")       # rows with cached pixels
FAILED_ALIGNMENT = ("unaligned", "dropped")      # alignment attempted and not achieved


class PreparedDataset:
    """Read access to a prepared directory: the manifest and the cached pixels.

    Shards are opened memory-mapped on first use, so reading a batch costs a copy of just
    those images, and worker processes share the page cache.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.root} is not a prepared dataset (no {MANIFEST}); "
                                    "run `ferwild prepare SOURCE --out DIR` first")
        self.manifest = pd.read_parquet(manifest_path)
        summary_path = self.root / SUMMARY
        self.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        self._shards: dict[str, np.ndarray] = {}

    @property
    def label_names(self) -> list[str]:
        """The ordered class names of the dataset's label set (ids are positions)."""
        return list(self.summary.get("label_names", []))

    def face_alignment(self):
        """The :class:`~ferwild.data.faces.FaceAlignment` its crops were cut with (margin, crop
        side, colour, detector threshold), for cutting new faces the same way at inference."""
        from ferwild.data.faces import FaceAlignment

        config = self.summary.get("config", {})
        side = int(config.get("size", 224))
        shape = self.summary.get("cache_shape") or [side, side, 3]
        return FaceAlignment(align_mode=self.summary.get("align_mode", config.get("align", "auto")),
                             margin=float(config.get("margin", FaceAlignment.margin)),
                             crop_size=int(shape[0]), channels=int(shape[2]) if len(shape) > 2 else 1,
                             min_confidence=float(config.get("min_confidence", FaceAlignment.min_confidence)),
                             template=(self.summary.get("face_template") or {}).get("points")
                             or config.get("template"))

    def rows(self, split: str | None = None, include_augmented: bool = True) -> pd.DataFrame:
        """Usable rows (with cached pixels), optionally of one split (``"train+val"`` joins
        splits), optionally without the augmented rows."""
        m = self.manifest
        mask = m[COL.shard].astype(str) != ""
        if split is not None:
            mask &= m[COL.split].isin(split.split("+"))
        if not include_augmented:
            mask &= m[COL.augmented_from].astype(str) == ""
        return m[mask]

    def shard(self, name: str) -> np.ndarray:
        """The memory-mapped array of one shard."""
        if name not in self._shards:
            self._shards[name] = np.load(self.root / SHARDS / f"{name}.npy", mmap_mode="r")
        return self._shards[name]

    def images(self, rows: pd.DataFrame) -> np.ndarray:
        """Pixels of the given manifest rows as an (N, H, W, C) uint8 array, in row order."""
        out = None
        for pos, (shard, index) in enumerate(zip(rows[COL.shard], rows[COL.shard_index])):
            image = self.shard(str(shard))[int(index)]
            if out is None:
                out = np.empty((len(rows),) + image.shape, dtype=np.uint8)
            out[pos] = image
        if out is None:
            shape = tuple(self.summary.get("cache_shape", (0, 0, 0)))
            return np.empty((0,) + shape, dtype=np.uint8)
        return out
