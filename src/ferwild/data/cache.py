"""The prepared-dataset cache: uint8 image shards (``.npy``, memory-mappable) + a Parquet manifest.

Layout of a prepared directory::

    DIR/manifest.parquet   one row per input file (+ augmented rows), see ferwild.data.prepare
    DIR/summary.json       counts, statuses, duplicates, alignment-failure rates
    DIR/shards/*.npy       (N, H, W, C) uint8 arrays; a row points at (shard, shard_index)

Every file is written to a temporary name and renamed into place, so a run killed at any
moment (even ``kill -9``) leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MANIFEST = "manifest.parquet"
SUMMARY = "summary.json"
SHARDS = "shards"


def _umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_default_mode(path: str | os.PathLike) -> None:
    """Give a file written by a library that creates it private (``mkstemp``, safetensors) the
    permissions a plain ``open(path, "w")`` would have given it: 0666 less the umask."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_target(path: str | os.PathLike) -> Path:
    """A new empty temporary file beside ``path``, to be written and then ``os.replace``d onto it.

    It gets the permissions a plain ``open(path, "w")`` would give (0666 less the umask), not
    ``mkstemp``'s private 0600, so atomically written outputs are as readable as any other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as ``.npy`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write named arrays as one ``.npz`` atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_parquet_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame as Parquet atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    save_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


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
