"""A new train/val/test split of a prepared dataset, without detecting or cutting faces again.

``ferwild prepare`` splits once, grouped by ``subject`` (or ``video``) when the data has them.
To measure what a split protocol does (the study split by class only, so one person's photos
landed in train and test), the same faces are needed under other splits: :func:`resplit`
writes a prepared dataset that shares the original's pixel cache (a symlink to its ``shards/``)
and differs only in the ``split`` column, the summary's split report and the cross-split flags
of ``duplicates.csv``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.data.prepared import COL, MANIFEST, SHARDS, SUMMARY
from ferwild.data.split import assign_splits
from ferwild.files import save_json_atomic

GROUPS_AUTO = "auto"      # subject, else video, else none: what prepare does
GROUPS_NONE = "none"      # stratified by class only: the study's split


class ResplitError(ValueError):
    """A resplit that cannot be done (one clear line)."""


def resplit(prepared: str | os.PathLike, out: str | os.PathLike, *, group_by: str = GROUPS_AUTO,
            ratios: tuple[float, float, float] = (0.7, 0.2, 0.1), seed: int = 0,
            overwrite: bool = False) -> dict[str, Any]:
    """Split ``prepared``'s usable faces again into ``out``; returns the new split report.

    Args:
        prepared: a folder written by ``ferwild prepare``.
        out: the new prepared folder (its ``shards`` is a symlink to ``prepared``'s).
        group_by: ``auto`` (``subject``, else ``video``, as prepare does), ``none`` (stratified
            by class only: the same person can be in train and test), or a manifest column
            (``subject``, ``video``, ``attr_<name>``...).
        ratios: train, val, test shares.
        seed: the split's seed.
        overwrite: replace an existing ``out``.

    Augmented (balancing) rows of the old training split are dropped: they were copies of
    faces that may now sit in val or test. Balance again with ``prepare`` if needed.
    """
    src, dst = Path(prepared).absolute(), Path(out)
    for name in (MANIFEST, SUMMARY, SHARDS):
        if not (src / name).exists():
            raise ResplitError(f"{src} is not a prepared dataset (no {name}; run `ferwild prepare` first)")
    if dst.absolute() == src:
        raise ResplitError("--out must be a new folder, not the prepared dataset itself")
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise ResplitError(f"{dst} exists and is not empty (use --overwrite)")
        shutil.rmtree(dst)
    manifest = pd.read_parquet(src / MANIFEST)
    summary = json.loads((src / SUMMARY).read_text())
    if summary.get("split_mode") == "unlabelled":
        raise ResplitError(f"{src} is an unlabelled batch: nothing to split")

    manifest = manifest[manifest[COL.augmented_from].astype(str) == ""].reset_index(drop=True)
    usable = (manifest[COL.shard].astype(str) != "").to_numpy()
    group_col = _group_column(manifest, usable, group_by)
    labels = manifest.loc[usable, COL.label].to_numpy(dtype=object)
    groups = None
    if group_col:
        values = manifest.loc[usable, group_col].fillna("").astype(str).to_numpy(dtype=object)
        groups = np.where(values == "", [f"\0row{i}" for i in range(len(values))], values)
    assigned, report = assign_splits(labels, ratios, seed, groups=groups, group_name=group_col)
    manifest[COL.split] = ""
    manifest.loc[usable, COL.split] = assigned

    dst.mkdir(parents=True, exist_ok=True)
    (dst / SHARDS).symlink_to(src / SHARDS, target_is_directory=True)
    manifest.to_parquet(dst / MANIFEST, index=False)
    split_counts = report.to_dict()
    summary.update({
        "split_mode": "group" if group_col else "stratified",
        "split_report": split_counts,
        "counts": split_counts["counts"],
        "counts_after_balance": split_counts["counts"],
        "augmented_rows": 0,
        "resplit": {"from": str(src), "group_by": group_col or GROUPS_NONE, "ratios": list(ratios), "seed": seed},
    })
    if (src / "duplicates.csv").exists():
        summary["duplicates"] = {**summary.get("duplicates", {}), **_resplit_duplicates(src, dst, manifest)}
    save_json_atomic(dst / SUMMARY, summary)
    return summary["resplit"] | {"counts": split_counts["counts"], "people_in_two_splits": _shared_groups(manifest)}


def _group_column(manifest: pd.DataFrame, usable: np.ndarray, group_by: str) -> str | None:
    if group_by == GROUPS_NONE:
        return None
    if group_by == GROUPS_AUTO:
        return next((c for c in (COL.subject, COL.video)
                     if c in manifest and (manifest.loc[usable, c].fillna("").astype(str) != "").any()), None)
    if group_by not in manifest.columns:
        known = [c for c in (COL.subject, COL.video) if c in manifest] + \
            [c for c in manifest.columns if c.startswith("attr_")]
        raise ResplitError(f"no column {group_by!r} to group by; use auto, none or one of {known}")
    return group_by


def _shared_groups(manifest: pd.DataFrame) -> int:
    """How many subjects have photos in more than one split (0 for a grouped split)."""
    if COL.subject not in manifest:
        return 0
    rows = manifest[(manifest[COL.split] != "") & (manifest[COL.subject].fillna("").astype(str) != "")]
    return int((rows.groupby(COL.subject)[COL.split].nunique() > 1).sum())


def _resplit_duplicates(src: Path, dst: Path, manifest: pd.DataFrame) -> dict[str, int]:
    """Copy duplicates.csv with split columns for the new split (pairs found by ``path``)."""
    pairs = pd.read_csv(src / "duplicates.csv")
    split_of = dict(zip(manifest[COL.path].astype(str), manifest[COL.split].astype(str)))
    if len(pairs):
        pairs["split_i"] = pairs["path_i"].astype(str).map(split_of).fillna("")
        pairs["split_j"] = pairs["path_j"].astype(str).map(split_of).fillna("")
        pairs["cross_split"] = (pairs["split_i"] != pairs["split_j"]) & (pairs["split_i"] != "") & \
            (pairs["split_j"] != "")
        # positions i, j refer to the manifest; dropped augmented rows shift them
        position = {p: i for i, p in enumerate(manifest[COL.path].astype(str))}
        pairs["i"] = pairs["path_i"].astype(str).map(position).fillna(-1).astype(int)
        pairs["j"] = pairs["path_j"].astype(str).map(position).fillna(-1).astype(int)
    pairs.to_csv(dst / "duplicates.csv", index=False)
    cross = pairs[pairs["cross_split"].astype(bool)] if len(pairs) else pairs
    return {"cross_split_exact": int((cross["kind"] == "exact").sum()) if len(cross) else 0,
            "cross_split_near": int((cross["kind"] == "near").sum()) if len(cross) else 0}


__all__ = ["resplit", "ResplitError", "GROUPS_AUTO", "GROUPS_NONE"]
