"""Rebalance a prepared split over attribute x class cells (the study's remedy for subgroup bias).

The study's training data was mostly male-presenting except in the "happiness" class, while
production was mostly female-presenting with more occlusions: a model trained on it learns
gender as a shortcut for the expression. ``rebalance`` tops up every (attribute values...,
class) cell of the training split to a common target with augmented copies of the cell's own
rows, so that no attribute value predicts the class any more.

The output is a new, complete prepared dataset (``ferwild train --data OUT`` uses it as is)::

    OUT/manifest.parquet     every original row of every split, unchanged, + the new rows
    OUT/summary.json         the source's summary, counts updated, + a ``rebalance`` section
    OUT/shards/*.npy         the source's shards as symlinks (hardlinks/copies as a fallback)
                             + rebalanced-<key>-<block>.npy with the augmented pixels
    OUT/rebalance_cells.png  cell counts before/after (heatmaps: attribute values x class)
    OUT/class_counts.png     class counts of the split, before/after (the study's Figure 1)
    OUT/rebalance_plan.json  what the run is (source, settings, plan key): lets a rerun resume

Augmented blocks are written with ``ferwild.data.prepare.augment_block`` (the same batched
``augment_uint8`` as prepare's class balancing), one shard per block of 2048 rows, seeded from
the plan's digest; a block whose shard exists is not redone, so a killed run resumes, and the
rerun's manifest and pixels are identical. Real rows are never removed: cells above the target
keep all their rows. Attribute values become groups through
``ferwild.audit.groups.attribute_groups`` (missing -> "unknown", numeric attributes with many
values -> quantile bins), as in the subgroup audit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.groups import UNKNOWN, attribute_groups, group_order
from ferwild.config import ConfigError, Settings, check_count_or_choice, check_int
from ferwild.data.prepared import ATTR_PREFIX, COL, MANIFEST, SHARDS, SUMMARY, USABLE_STATUSES, PreparedDataset
from ferwild.files import save_json_atomic, save_parquet_atomic
from ferwild.system import available_cpus

TARGETS = ("max", "median")
BLOCK = 2048
SHARD_PREFIX = "rebalanced"
MARKER = "rebalance_plan.json"
FIGURE = "rebalance_cells.png"
CLASS_FIGURE = "class_counts.png"
_AUG_SUFFIX = re.compile(r"#aug(\d+)$")



@dataclass
class RebalanceConfig(Settings):
    """Settings of a ``rebalance`` run. Validated (and attribute names normalised) on construction.

    Attributes:
        attributes: the attribute columns whose values, crossed with the class, make the cells;
            ``"gender"`` means ``"attr_gender"``. A single string is one attribute.
        target: per-cell count to reach: ``"max"`` (the largest cell), ``"median"`` (the median
            cell, rounded up) or a count. Cells above it are left as they are.
        split: the split to rebalance; the other splits are copied unchanged.
        drop_original_augmented: start from the split's original rows (prepare's
            class-balancing copies are removed); otherwise they stay and count in their cells.
        max_copies_per_row: the most augmented copies one source row may have (a cell of a few
            rows cannot be inflated without limit; it is reported as capped).
        min_cell: cells with fewer original rows than this are reported unfillable, not inflated.
        seed: which rows are copied first, and the augmentation's randomness.
        workers: processes that write augmented blocks; 0 = one per CPU, as in prepare.
    """

    attributes: tuple[str, ...]
    target: str | int = "max"
    split: str = "train"
    drop_original_augmented: bool = True
    max_copies_per_row: int = 20
    min_cell: int = 1
    seed: int = 0
    workers: int = 0

    def __post_init__(self):
        attrs = (self.attributes,) if isinstance(self.attributes, str) else tuple(self.attributes or ())
        if not attrs:
            raise ConfigError("rebalance needs at least one attribute (e.g. attributes=('gender',))")
        names: list[str] = []
        for attr in attrs:
            text = str(attr).strip()
            name = text if text.startswith(ATTR_PREFIX) else ATTR_PREFIX + text
            if name == ATTR_PREFIX:
                raise ConfigError(f"empty attribute name in {attrs!r}")
            if name in names:
                raise ConfigError(f"attribute {name} is given twice")
            names.append(name)
        self.attributes = tuple(names)
        self.target = check_count_or_choice(self.target, "target", TARGETS)
        if not isinstance(self.split, str) or not self.split.strip() or "+" in self.split:
            raise ConfigError(f"split must be one split name such as 'train', not {self.split!r}")
        self.split = self.split.strip()
        self.drop_original_augmented = bool(self.drop_original_augmented)
        self.max_copies_per_row = check_int(self.max_copies_per_row, "max_copies_per_row", 1)
        self.min_cell = check_int(self.min_cell, "min_cell", 1)
        self.seed = check_int(self.seed, "seed", 0)
        self.workers = check_int(self.workers, "workers (0 = automatic)", 0)


# --------------------------------------------------------------------------------------------
# the plan


@dataclass
class _Plan:
    goal: int
    positions: list[int]          # into the split's original rows
    copies: list[int]             # copy number k of each planned row (path "<source>#aug<k>")
    cells: list[dict[str, Any]]
    capped: list[dict[str, Any]]
    unfillable: list[dict[str, Any]]
    above: list[dict[str, Any]]
    binned: dict[str, list[str]]


def _goal(counts: list[int], target: str | int) -> int:
    if target == "max":
        return int(max(counts))
    if target == "median":
        return math.ceil(float(np.median(counts)))
    return int(target)


def _make_plan(originals: pd.DataFrame, existing: pd.DataFrame, config: RebalanceConfig) -> _Plan:
    """Which original rows get which copy numbers so that every cell reaches the target."""
    attrs = list(config.attributes)
    groups = {a: attribute_groups(originals[a]) for a in attrs}
    binned = {a: group_order(g) for a, g in groups.items()
              if not set(g).issubset({str(v).strip() for v in originals[a]} | {UNKNOWN})}
    keys = list(zip(*(groups[a].tolist() for a in attrs), originals[COL.label].astype(str).tolist()))
    members: dict[tuple, list[int]] = {}
    for pos, key in enumerate(keys):
        members.setdefault(key, []).append(pos)
    n_existing, last_copy = _existing_copies(originals, existing)

    orders = [group_order(groups[a]) for a in attrs]
    cells_sorted = sorted(members, key=lambda k: ([o.index(v) for o, v in zip(orders, k[:-1])], k[-1]))
    before = {key: len(members[key]) + int(n_existing[members[key]].sum()) for key in cells_sorted}
    goal = _goal(list(before.values()), config.target)
    cap = config.max_copies_per_row
    positions: list[int] = []
    copies: list[int] = []
    cells, capped, unfillable, above = [], [], [], []
    for index, key in enumerate(cells_sorted):
        rows = np.asarray(members[key], dtype=np.int64)
        name = {**dict(zip(attrs, key[:-1])), "label": key[-1]}
        added = 0
        if len(rows) < config.min_cell:
            unfillable.append({**name, "rows": len(rows),
                               "reason": f"{len(rows)} row(s), fewer than min_cell={config.min_cell}"})
        elif before[key] < goal:
            order = np.random.default_rng([config.seed, index]).permutation(rows)
            new_positions, new_copies = _round_robin(order, cap - n_existing[order], last_copy, goal - before[key])
            positions += new_positions
            copies += new_copies
            added = len(new_positions)
        elif before[key] > goal:
            above.append({**name, "rows": before[key]})
        cell = {**name, "before": before[key], "after": before[key] + added, "added": added,
                "reached_target": before[key] + added >= goal}
        cells.append(cell)
        if not cell["reached_target"] and len(rows) >= config.min_cell:
            capped.append({**name, "rows": len(rows), "after": cell["after"],
                           "reason": f"{len(rows)} row(s) with at most max_copies_per_row={cap} copies "
                                     f"each reach {cell['after']} of {goal}"})
    unfillable += _empty_combinations(attrs, orders, sorted(set(originals[COL.label].astype(str))), members)
    return _Plan(goal, positions, copies, cells, capped, unfillable, above, binned)


def _existing_copies(originals: pd.DataFrame, existing: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per original row, the copies already present and the highest copy number among them.

    Copies already present (drop_original_augmented=False) count in their source's cell and
    against its cap, and new copy numbers continue after them.
    """
    path_pos = {p: i for i, p in enumerate(originals[COL.path].tolist())}
    n_existing = np.zeros(len(originals), dtype=np.int64)
    last_copy = np.zeros(len(originals), dtype=np.int64)
    for path, source in zip(existing[COL.path].astype(str), existing[COL.augmented_from].astype(str)):
        pos = path_pos.get(source)
        if pos is None:
            continue
        n_existing[pos] += 1
        match = _AUG_SUFFIX.search(path)
        last_copy[pos] = max(last_copy[pos], int(match.group(1)) if match else n_existing[pos])
    return n_existing, last_copy


def _round_robin(order: np.ndarray, room: np.ndarray, last_copy: np.ndarray, need: int) -> tuple[list[int], list[int]]:
    """Up to ``need`` copies of ``order``'s rows, round after round in that (seeded) order: every
    row is copied about equally often, and never more than its ``room``. Returns the rows'
    positions and their new copy numbers (after ``last_copy``)."""
    positions: list[int] = []
    copies: list[int] = []
    round_ = 0
    while len(positions) < need and (room > round_).any():
        take = order[np.flatnonzero(room > round_)][: need - len(positions)]
        positions += [int(p) for p in take]
        copies += [int(c) for c in last_copy[take] + round_ + 1]
        round_ += 1
    return positions, copies


def _empty_combinations(attrs: list[str], orders: list[list[str]], labels: list[str],
                        members: dict[tuple, list[int]]) -> list[dict]:
    """Attribute x class combinations with no row at all: augmentation cannot fill them."""
    return [{**dict(zip(attrs, combo[:-1])), "label": combo[-1], "rows": 0,
             "reason": "no row of this combination in the split"}
            for combo in _product(orders + [labels]) if tuple(combo) not in members]


def _product(lists: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for values in lists:
        out = [prefix + [v] for prefix in out for v in values]
    return out


def _plan_key(config: RebalanceConfig, cache_shape: Any, sources: pd.DataFrame, copies: list[int]) -> str:
    digest = hashlib.sha256(json.dumps(["rebalance", config.seed, list(cache_shape or [])]).encode())
    for path, shard, index, k in zip(sources[COL.path], sources[COL.shard], sources[COL.shard_index], copies):
        digest.update(f"{path}\0{shard}\0{int(index)}\0{k}\n".encode())
    return digest.hexdigest()[:10]


def _block_seed(key: str, block: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}-{block}".encode()).digest()[:7], "big")


# --------------------------------------------------------------------------------------------
# the output folder


def _is_nonempty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _clear(out: Path) -> None:
    """Remove what a rebalance (or prepare) output holds: our files and everything in shards/.
    Other files are left alone (out_dir may be a folder the user keeps other things in)."""
    for name in (MANIFEST, SUMMARY, FIGURE, CLASS_FIGURE, MARKER, "plan.json",
                 "rejects.csv", "duplicates.csv", "contact_sheet.png"):
        (out / name).unlink(missing_ok=True)
    shards = out / SHARDS
    if shards.is_symlink():
        shards.unlink()
    elif shards.is_dir():
        for entry in shards.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _link(source: Path, dest: Path) -> str:
    """Make ``dest`` show ``source``'s bytes: a symlink, else a hardlink, else a copy (atomic)."""
    if not source.is_file():
        raise FileNotFoundError(f"shard {source} is missing: the prepared dataset is incomplete")
    try:
        if os.path.samefile(source, dest):  # a resumed run: already linked
            if dest.is_symlink():
                return "symlink"
            return "hardlink" if os.stat(dest).st_nlink > 1 else "copy"
    except OSError:
        pass
    target = os.path.realpath(source)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    for method in ("symlink", "hardlink", "copy"):
        tmp.unlink(missing_ok=True)
        try:
            if method == "symlink":
                os.symlink(target, tmp)
            elif method == "hardlink":
                os.link(target, tmp)
            else:
                shutil.copyfile(target, tmp)
            os.replace(tmp, dest)
            return method
        except OSError:
            if method == "copy":
                tmp.unlink(missing_ok=True)
                raise
    raise AssertionError("unreachable")


def _class_counts(manifest: pd.DataFrame, split: str) -> dict[str, int]:
    rows = manifest[(manifest[COL.split] == split) & manifest[COL.status].isin(USABLE_STATUSES)]
    return {c: int(n) for c, n in sorted(Counter(rows[COL.label].astype(str)).items())}


def _new_rows(sources: pd.DataFrame, copies: list[int], names: list[str], split: str,
              first_row_id: int) -> pd.DataFrame:
    """Manifest rows of the augmented copies: the source's label, attributes, subject... with a
    new path, pointers to the new shards and no per-file facts (hashes, boxes, sizes)."""
    frame = sources.reset_index(drop=True).copy()
    n = len(frame)
    frame[COL.path] = [f"{p}#aug{k}" for p, k in zip(frame[COL.path].astype(str), copies)]
    frame[COL.augmented_from] = sources[COL.path].astype(str).to_numpy()
    frame[COL.split] = split
    frame[COL.shard] = names
    frame[COL.shard_index] = np.arange(n, dtype=np.int64) % BLOCK
    frame[COL.row_id] = np.arange(first_row_id, first_row_id + n, dtype=np.int64)
    blank = {"reason": "", "notes": "", "orig_mode": "", "content_hash": "", "other_boxes": "[]",
             "exact_dup_of": "", "near_dup_of": ""}
    zero = {"orig_width": 0, "orig_height": 0, "n_faces": 0}
    for col, value in blank.items():
        if col in frame:
            frame[col] = value
    for col, value in zero.items():
        if col in frame:
            frame[col] = np.zeros(n, dtype=frame[col].dtype if frame[col].dtype.kind in "iu" else np.int64)
    if COL.phash in frame:
        frame[COL.phash] = np.zeros(n, dtype=np.uint64)
    for col in (COL.confidence, COL.sharpness, COL.brightness, COL.contrast):
        if col in frame:
            frame[col] = np.nan
    for col in (COL.box, COL.landmarks):
        if col in frame:
            frame[col] = pd.Series([None] * n, dtype=object)
    return frame


def _concat_like(base: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    if extra.empty:
        return base.reset_index(drop=True)
    merged = pd.concat([base, extra[base.columns]], ignore_index=True)
    for col in base.columns:
        if merged[col].dtype != base[col].dtype:
            try:
                merged[col] = merged[col].astype(base[col].dtype)
            except (TypeError, ValueError):
                pass
    return merged


# --------------------------------------------------------------------------------------------
# the figure


def cell_figure(cells: list[dict[str, Any]], attributes: list[str], goal: int, path: str | os.PathLike,
                title: str = "Rebalancing: rows per attribute x class cell") -> None:
    """Two annotated heatmaps (attribute values x class), before and after; cells below the
    target after rebalancing are starred, combinations without rows are blank."""
    import matplotlib

    from ferwild.plotting import save_figure, subplots

    orders = [group_order(c[a] for c in cells) for a in attributes]
    row_keys = sorted({tuple(c[a] for a in attributes) for c in cells},
                      key=lambda k: [order.index(v) for order, v in zip(orders, k)])
    labels = sorted({c["label"] for c in cells})
    grids = {k: np.full((len(row_keys), len(labels)), np.nan) for k in ("before", "after")}
    short = np.zeros((len(row_keys), len(labels)), dtype=bool)
    for c in cells:
        i, j = row_keys.index(tuple(c[a] for a in attributes)), labels.index(c["label"])
        grids["before"][i, j], grids["after"][i, j] = c["before"], c["after"]
        short[i, j] = not c["reached_target"]
    vmax = max(1.0, float(np.nanmax(grids["after"])) if cells else 1.0)
    width = max(4.0, 0.9 * len(labels) + 1.5)
    fig, axes = subplots(1, 2, figsize=(2 * width + 1.5, max(3.0, 0.45 * len(row_keys) + 2.2)), dpi=100,
                         sharey=True)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#eeeeee")
    names = [" / ".join(k) for k in row_keys]
    for ax, which in zip(axes, ("before", "after")):
        grid = grids[which]
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isnan(grid[i, j]):
                    continue
                text = f"{int(grid[i, j])}" + ("*" if which == "after" and short[i, j] else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] > 0.6 * vmax else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"{which}" + (f" (target {goal})" if which == "after" else ""))
    axes[0].set_ylabel(" / ".join(a.removeprefix(ATTR_PREFIX) for a in attributes))
    fig.suptitle(title)
    fig.text(0.5, 0.01, "* below the target (capped by max_copies_per_row or min_cell); "
             "grey: no rows of that combination", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------------------------
# the run


def _claim_out_dir(out: Path, src: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` ours: empty or absent, a resumable run of the same call, or ``overwrite``.

    Writes the marker (``identity``) and ``shards/``; raises ``FileExistsError`` otherwise.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} exists and is not a folder")
    if _is_nonempty(out):
        try:
            previous = json.loads((out / MARKER).read_text())
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            if not overwrite:
                raise FileExistsError(f"{out} is not empty and holds no rebalance of {src} with these "
                                      "settings; choose another out_dir or pass overwrite=True")
            _clear(out)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    save_json_atomic(out / MARKER, identity)


def _rebalance_section(src: Path, config: RebalanceConfig, plan: _Plan, key: str, dropped: int,
                       methods: Counter, names: list[str]) -> dict[str, Any]:
    """The ``rebalance`` section of the new ``summary.json``: the plan, its cells and notes."""
    notes = []
    if plan.above:
        notes.append(f"{len(plan.above)} cell(s) hold more than the target {plan.goal} and were left "
                     "as they are (rebalancing never removes real rows)")
    if plan.capped:
        notes.append(f"{len(plan.capped)} cell(s) could not reach the target: "
                     f"max_copies_per_row={config.max_copies_per_row}")
    if plan.binned:
        notes.append("numeric attributes binned into quantiles: " + ", ".join(plan.binned))
    section = {
        "source": str(src.resolve()),
        "config": config.to_dict(),
        "split": config.split,
        "attributes": list(config.attributes),
        "binned": plan.binned,
        "target": plan.goal,
        "key": key,
        "rows_before": int(sum(c["before"] for c in plan.cells)),
        "rows_after": int(sum(c["after"] for c in plan.cells)),
        "added_rows": len(plan.positions),
        "dropped_augmented_rows": dropped,
        "cells": plan.cells,
        "capped_cells": plan.capped,
        "unfillable_cells": plan.unfillable,
        "above_target_cells": plan.above,
        "shard_links": dict(sorted(methods.items())),
        "new_shards": sorted(set(names)),
        "notes": notes,
        "figure": FIGURE,
    }
    return section


def rebalance(prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, config: RebalanceConfig, *,
              progress: Callable[[str, int, int], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write a copy of a prepared dataset whose ``config.split`` is balanced over attribute x
    class cells (see the module docstring).

    Args:
        prepared_dir: a folder written by ``ferwild prepare`` (or by an earlier rebalance).
        out_dir: the new prepared dataset's folder. It must be empty or absent, hold an
            interrupted (or finished) rebalance of the same source and settings, which is
            resumed, or ``overwrite`` must be given.
        config: the settings.
        progress: optional ``callback(stage, done, total)``, as in prepare.
        overwrite: replace what a non-empty out_dir holds (our files and ``shards/``).

    Returns:
        The ``rebalance`` section of the new ``summary.json``.

    Raises:
        ValueError: out_dir is prepared_dir, an attribute column is missing, the split is empty.
        FileExistsError: out_dir holds something else and overwrite is False.
        FileNotFoundError: prepared_dir is not a prepared dataset.
    """
    from ferwild.data.balance import class_count_figure

    if not isinstance(config, RebalanceConfig):
        raise TypeError(f"config must be a RebalanceConfig, not {type(config).__name__}")
    src, out = Path(prepared_dir), Path(out_dir)
    prepared = _checked_source(src, out, config)
    manifest = prepared.manifest

    augmented = manifest[COL.augmented_from].fillna("").astype(str) != ""
    in_split = (manifest[COL.split].astype(str) == config.split).to_numpy()
    usable = (manifest[COL.shard].fillna("").astype(str) != "").to_numpy()
    originals = manifest[in_split & usable & ~augmented.to_numpy()]
    if originals.empty:
        splits = sorted(s for s in manifest[COL.split].astype(str).unique() if s)
        raise ValueError(f"split {config.split!r} of {src} has no usable rows; splits: {', '.join(splits)}")
    drop = in_split & augmented.to_numpy() if config.drop_original_augmented else np.zeros(len(manifest), bool)
    kept = manifest[~drop]
    existing = manifest[in_split & usable & augmented.to_numpy() & ~drop]

    plan = _make_plan(originals, existing, config)
    sources = originals.iloc[plan.positions]
    cache_shape = prepared.summary.get("cache_shape")
    key = _plan_key(config, cache_shape, sources, plan.copies)
    # What makes a rerun "the same call" (resumable without overwrite); workers change nothing.
    identity = {"source": str(src.resolve()), "key": key,
                "config": {k: v for k, v in config.to_dict().items() if k != "workers"}}

    _claim_out_dir(out, src, identity, overwrite)
    shards = out / SHARDS

    # the source's shards, shown without copying their bytes
    needed = sorted(set(kept.loc[kept[COL.shard].fillna("").astype(str) != "", COL.shard].astype(str)))
    methods = Counter(_link(src / SHARDS / f"{name}.npy", shards / f"{name}.npy") for name in needed)

    names = _write_augmented_blocks(out, sources, key, needed, config.workers, progress)

    # manifest
    first_id = int(kept[COL.row_id].max()) + 1 if len(kept) else 0
    new = _new_rows(sources, plan.copies, names, config.split, first_id)
    result = _concat_like(kept, new)
    if result[COL.path].duplicated().any():
        dup = result.loc[result[COL.path].duplicated(), COL.path].iloc[0]
        raise RuntimeError(f"rebalance would write the path {dup!r} twice")
    save_parquet_atomic(result, out / MANIFEST)

    # summary and figures
    summary = copy.deepcopy(prepared.summary)
    after_counts = _class_counts(result, config.split)
    summary.setdefault("counts_after_balance", {})[config.split] = after_counts
    summary["augmented_rows"] = int((result[COL.augmented_from].fillna("").astype(str) != "").sum())
    section = _rebalance_section(src, config, plan, key, int(drop.sum()), methods, names)
    summary["rebalance"] = section
    cell_figure(plan.cells, list(config.attributes), plan.goal, out / FIGURE)
    class_count_figure(summary.get("counts", {}).get(config.split, {}), after_counts, out / CLASS_FIGURE,
                       title=f"{config.split} data per class, before balancing and after rebalancing")
    save_json_atomic(out / SUMMARY, summary)  # last: a complete summary marks a finished run
    return section


def _checked_source(src: Path, out: Path, config: RebalanceConfig) -> PreparedDataset:
    """The prepared dataset at ``src``, after checking that ``out`` lies apart from it and that
    it has the attribute columns ``config`` names."""
    if out.resolve() == src.resolve():
        raise ValueError(f"out_dir must differ from the prepared dataset {src}: rebalance writes a new "
                         "dataset and never modifies its source")
    if out.resolve().is_relative_to((src / SHARDS).resolve()):
        raise ValueError(f"out_dir {out} must not lie inside {src / SHARDS}")
    prepared = PreparedDataset(src)
    columns = prepared.manifest.columns
    missing = [a for a in config.attributes if a not in columns]
    if missing:
        available = sorted(c for c in columns if c.startswith(ATTR_PREFIX))
        raise ValueError(f"{src} has no attribute column {', '.join(missing)}; available: "
                         f"{', '.join(available) or 'none (the source listed no attr_* columns)'}")
    return prepared


def _write_augmented_blocks(out: Path, sources: pd.DataFrame, key: str, linked: list[str], workers: int,
                            progress: Callable[[str, int, int], None] | None) -> list[str]:
    """Write the augmented copies of ``sources`` in blocks of ``BLOCK`` rows; returns each copy's
    shard name. Blocks whose shard exists are skipped (a rerun resumes); shards of an earlier,
    different plan are removed (``linked`` are the source's shards, kept)."""
    from ferwild.data.prepare import augment_block
    from ferwild.parallel import run_jobs

    shards = out / SHARDS
    names: list[str] = []
    jobs = []
    for b, start in enumerate(range(0, len(sources), BLOCK)):
        name = f"{SHARD_PREFIX}-{key}-{b:05d}"
        part = sources.iloc[start:start + BLOCK]
        names.extend([name] * len(part))
        if (shards / f"{name}.npy").exists():
            continue
        jobs.append({"name": name, "out_dir": str(out), "seed": _block_seed(key, b),
                     "sources": [(str(s), int(i)) for s, i in zip(part[COL.shard], part[COL.shard_index])]})
    run_jobs(augment_block, jobs, workers or available_cpus(),
             (lambda d, t: progress("rebalance", d, t)) if progress else None)
    for old in shards.glob(f"{SHARD_PREFIX}-*.npy"):
        if not old.name.startswith(f"{SHARD_PREFIX}-{key}-") and old.stem not in linked:
            old.unlink()  # pixels of an earlier, different plan
    return names
