"""A prepared dataset on disk: uint8 image shards (``.npy``, memory-mappable) + a Parquet manifest.

Layout of a prepared directory::

    DIR/manifest.parquet   one row per input file (+ augmented rows); columns in ``ferwild.data.manifest``
    DIR/summary.json       counts, statuses, duplicates, alignment-failure rates
    DIR/shards/*.npy       (N, H, W, C) uint8 arrays; a row points at (shard, shard_index)

Every file is written atomically (``ferwild.files``), so a ``prepare`` killed at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST = "manifest.parquet"
SUMMARY = "summary.json"
SHARDS = "shards"


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
        mask = m["shard"].astype(str) != ""
        if split is not None:
            mask &= m["split"].isin(split.split("+"))
        if not include_augmented:
            mask &= m["augmented_from"].astype(str) == ""
        return m[mask]

    def shard(self, name: str) -> np.ndarray:
        """The memory-mapped array of one shard."""
        if name not in self._shards:
            self._shards[name] = np.load(self.root / SHARDS / f"{name}.npy", mmap_mode="r")
        return self._shards[name]

    def images(self, rows: pd.DataFrame) -> np.ndarray:
        """Pixels of the given manifest rows as an (N, H, W, C) uint8 array, in row order."""
        out = None
        for pos, (shard, index) in enumerate(zip(rows["shard"], rows["shard_index"])):
            image = self.shard(str(shard))[int(index)]
            if out is None:
                out = np.empty((len(rows),) + image.shape, dtype=np.uint8)
            out[pos] = image
        if out is None:
            shape = tuple(self.summary.get("cache_shape", (0, 0, 0)))
            return np.empty((0,) + shape, dtype=np.uint8)
        return out
