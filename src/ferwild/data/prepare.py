"""``prepare``: raw labelled faces -> a clean, split, de-duplicated, balanced, cached dataset.

The steps, in order (each in its own module):

1. **read** the source into rows (``sources``), normalise labels (``ferwild.labels``; from crowd
   votes by ``votes``' rule), reject unknown labels, bad votes and duplicate paths, exclude labels
   outside the chosen set and faces the votes give no label;
2. **decide the alignment** for the dataset: ``auto`` treats small, equal-size crops (FER2013's
   48x48) as pre-aligned (``none``), otherwise aligns per image (given landmarks, else MTCNN,
   else the fallback policy);
3. **cache**: worker processes load each image (``images``), align it (``faces``), hash it and
   write it into a uint8 shard, one chunk of rows at a time. A chunk is committed by renaming
   its Parquet file into place, so a killed run resumes at the first uncommitted chunk;
4. **split** (``split``): the source's own split, or stratified ratios, group-aware when a
   ``subject``/``video`` column exists;
5. **audit duplicates** (``dedup``): exact and near duplicates within and across splits,
   optionally dropping cross-split twins from val/test;
6. **balance** the training split with augmentation (``balance``);
7. write ``manifest.parquet``, ``summary.json``, ``rejects.csv``, ``duplicates.csv`` and figures.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.config import ConfigError, Settings, check_choice, check_int, check_number
from ferwild.data.balance import balance_plan, class_count_figure, parse_balance
from ferwild.data.dedup import cross_split_drop_mask, find_duplicates, keep_pairs, pixel_correlation
from ferwild.data.faces import DEFAULT_MARGIN, to_channels
from ferwild.data.prepared import (
    ATTR_PREFIX,
    COL,
    FAILED_ALIGNMENT,
    MANIFEST,
    SHARDS,
    STATUSES,
    SUMMARY,
    USABLE_STATUSES,
    PreparedDataset,
)
from ferwild.data.sources import SOURCE_PROBLEM, decode_fer2013_pixels, read_source
from ferwild.data.split import assign_splits
from ferwild.data.votes import VOTE_RULES, hard_label, vote_class, vote_columns
from ferwild.files import save_json_atomic, save_npy_atomic, save_parquet_atomic, save_text_atomic
from ferwild.labels import UnknownLabelError, get_label_set, normalize_label
from ferwild.parallel import in_worker, ray_session, run_jobs
from ferwild.system import available_cpus

ALIGN_MODES = ("auto", "mtcnn", "landmarks", "none")
FALLBACKS = ("keep", "drop")
SPLIT_MODES = ("auto", "source", "ratios")
PLAN = "plan.json"
# Pre-aligned crops are small and all the same size (FER2013 48x48, RAF-DB aligned 100x100).
PREALIGNED_MAX_SIDE = 128
PROBE_ROWS = 64


@dataclass
class PrepareConfig(Settings):
    """Settings of a ``prepare`` run. Validated on construction."""

    labels: str = "basic6"
    align: str = "auto"
    fallback: str = "keep"
    size: int = 224
    margin: float = DEFAULT_MARGIN
    min_confidence: float = 0.9
    split: str = "auto"
    split_ratios: tuple[float, float, float] = (0.7, 0.2, 0.1)
    seed: int = 0
    balance: str | int | None = "max"
    near_dup_threshold: int = 4
    near_dup_min_corr: float = 0.95
    drop_cross_split_dups: bool = False
    max_pixels: int = 89_478_485
    workers: int = 0
    chunk_size: int = 0
    # Production batches often come without labels: keep every row (label ""), put them all in
    # the "test" split, and do not balance. A class folder's name is kept as ``attr_folder``.
    unlabelled: bool = False
    # Cut faces like another dataset (``like()``): its landmark template (pre-aligned data such
    # as FER2013) instead of the margin template, and its cache channels (1: grey) when set.
    template: tuple[tuple[float, float], ...] | None = None
    channels: int | None = None
    # Crowd votes (votes_* columns, FER+): the rule that turns them into a hard label
    # (ferwild.data.votes): majority (ties, unknown and not-a-face majorities excluded) | strict.
    vote_rule: str = "majority"

    def __post_init__(self):
        get_label_set(self.labels)
        check_choice(self.vote_rule, "vote_rule", VOTE_RULES)
        check_choice(self.align, "align", ALIGN_MODES)
        check_choice(self.fallback, "fallback", FALLBACKS)
        check_choice(self.split, "split", SPLIT_MODES)
        self.size = check_int(self.size, "size", 16)
        if self.size > 1024:
            raise ConfigError(f"size must be between 16 and 1024, not {self.size}")
        self.margin = check_number(self.margin, "margin", low=0, high=2)
        self.min_confidence = check_number(self.min_confidence, "min_confidence", low=0, high=1)
        self.near_dup_threshold = check_int(self.near_dup_threshold, "near_dup_threshold (bits)", 0)
        if self.near_dup_threshold > 32:
            raise ConfigError(f"near_dup_threshold must be between 0 and 32 bits, not {self.near_dup_threshold}")
        self.near_dup_min_corr = check_number(self.near_dup_min_corr, "near_dup_min_corr", low=-1, high=1)
        self.seed = check_int(self.seed, "seed", 0)
        self.max_pixels = check_int(self.max_pixels, "max_pixels", 1)
        ratios = tuple(check_number(r, "split_ratios", low=0) for r in self.split_ratios)
        if len(ratios) != 3 or sum(ratios) <= 0 or ratios[0] == 0:
            raise ConfigError(f"split_ratios must be 3 non-negative numbers with train > 0: {ratios}")
        # normalised once: dividing ratios that already sum to 1 again would drift in the last bit
        self.split_ratios = ratios if abs(sum(ratios) - 1) < 1e-9 else tuple(r / sum(ratios) for r in ratios)
        self.balance = parse_balance(self.balance)
        self.workers = check_int(self.workers, "workers (0 = automatic)", 0)
        self.chunk_size = check_int(self.chunk_size, "chunk_size (0 = automatic)", 0)
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1, 3 or None (automatic), not {self.channels}")
        if self.template is not None:
            from ferwild.data.faces import FaceAlignment

            self.template = FaceAlignment(template=self.template).template  # validated, tuples

    @classmethod
    def like(cls, prepared_dir: str | os.PathLike, **overrides: Any) -> "PrepareConfig":
        """Settings that cut new faces the way ``prepared_dir``'s were cut (its crop side, margin,
        landmark template, channels and detector threshold), e.g. production photos for an
        audit of a model trained on FER2013. ``overrides`` set any other field."""
        alignment = PreparedDataset(prepared_dir).face_alignment()
        settings = {"size": alignment.crop_size, "margin": alignment.margin, "template": alignment.template,
                    "channels": alignment.channels, "min_confidence": alignment.min_confidence,
                    "labels": PreparedDataset(prepared_dir).summary.get("label_set", "basic6")}
        return cls(**{**settings, **overrides})

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change cached pixels: changing them invalidates the shards."""
        keys = ("labels", "align", "fallback", "size", "margin", "min_confidence", "max_pixels",
                "unlabelled")
        fields = {k: getattr(self, k) for k in keys}
        if self.vote_rule != "majority":  # only when set: caches from before votes stay valid
            fields["vote_rule"] = self.vote_rule
        # only when set, so that caches prepared before these options existed stay valid
        if self.template is not None:
            fields["template"] = [list(p) for p in self.template]
        if self.channels is not None:
            fields["channels"] = self.channels
        return fields


@dataclass
class PrepareResult:
    """What ``prepare`` produced: the output folder, the manifest and the summary."""

    out_dir: Path
    manifest: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


class PrepareError(RuntimeError):
    """A prepare run that cannot proceed (nothing usable, incompatible existing output, ...)."""


# --------------------------------------------------------------------------------------------
# 1. rows and labels


def _label_rows(rows: pd.DataFrame, label_set: str, unlabelled: bool = False,
                vote_rule: str = "majority") -> pd.DataFrame:
    """Normalise labels; pre-assign ``rejected``/``excluded`` status to rows that need no decode.

    A row with crowd votes and no label of its own takes the label ``vote_rule`` gives
    (``ferwild.data.votes``); a face the rule gives none (a tie, an unknown or not-a-face
    majority) is ``excluded`` with the rule's reason. A reader's ``source_problem`` (votes that
    do not parse, a name listed twice) rejects its row with that reason.
    ``unlabelled``: every row is kept with label ""; any folder/label text becomes ``attr_folder``.
    """
    problems = rows.pop(SOURCE_PROBLEM).fillna("").astype(str).tolist() if SOURCE_PROBLEM in rows else None
    if unlabelled:
        rows = rows.copy()
        raw = rows[COL.label_raw].fillna("").astype(str)
        if (raw != "").any() and ATTR_PREFIX + "folder" not in rows:
            rows[ATTR_PREFIX + "folder"] = raw
        rows[COL.label], rows[COL.status], rows[COL.reason] = "", "", ""
        return rows
    names = set(get_label_set(label_set))
    labels, status, reason = [], [], []
    rows, vote_reasons = _labels_from_votes(rows, vote_rule)
    for i, raw in enumerate(rows[COL.label_raw]):
        if problems and problems[i]:
            labels.append(""), status.append("rejected"), reason.append(problems[i])
            continue
        if vote_reasons[i]:
            labels.append(""), status.append("excluded"), reason.append(f"votes: {vote_reasons[i]}")
            continue
        if str(raw).strip() == "":
            labels.append(""), status.append("rejected"), reason.append("no label")
            continue
        try:
            label = normalize_label(raw)
        except UnknownLabelError as exc:
            labels.append(""), status.append("rejected"), reason.append(str(exc))
            continue
        labels.append(label)
        if label in names:
            status.append(""), reason.append("")
        else:
            status.append("excluded"), reason.append(f"label {label!r} not in {label_set}")
    rows = rows.copy()
    rows[COL.label], rows[COL.status], rows[COL.reason] = labels, status, reason
    return rows


def _labels_from_votes(rows: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, list[str]]:
    """Fill ``label_raw`` from the votes of rows that have votes and no label of their own.

    Returns the rows and, per row, why the rule gave it no label ("" otherwise)."""
    reasons = [""] * len(rows)
    columns = vote_columns(rows)
    if not columns:
        return rows, reasons
    classes = [vote_class(c) for c in columns]
    counts = rows[columns].to_numpy(dtype=np.float64)
    raw = rows[COL.label_raw].fillna("").astype(str).to_numpy(dtype=object)
    for i in np.flatnonzero((raw == "") & np.isfinite(counts).all(axis=1)):
        raw[i], reasons[i] = hard_label(counts[i], classes, rule)
    rows = rows.copy()
    rows[COL.label_raw] = raw
    return rows, reasons


def _reject_duplicate_paths(rows: pd.DataFrame) -> None:
    """The same file listed twice is one input: later listings are rejected, pointing at the first."""
    seen: dict[str, str] = {}
    for i, path in enumerate(rows[COL.path]):
        key = os.path.realpath(path) if "#" not in path else path
        if key in seen:
            if rows.at[i, COL.status] in ("", "excluded"):
                rows.at[i, COL.status] = "rejected"
                rows.at[i, COL.reason] = f"duplicate path (same file as {seen[key]})"
        else:
            seen[key] = path


# --------------------------------------------------------------------------------------------
# 2. loading one input, and deciding the dataset's alignment


def _load_row(path: str, pixels: str | None, max_pixels: int):
    """Load one input as (H, W, 3) uint8 RGB plus metadata; raises ImageRejected."""
    from ferwild.data.images import ImageRejected, load_image

    if pixels is not None:
        try:
            grey = decode_fer2013_pixels(pixels)
        except ValueError as exc:
            raise ImageRejected(f"bad FER2013 pixel string: {exc}") from None
        return np.repeat(grey, 3, axis=2), {"orig_mode": "L", "orig_size": grey.shape[1::-1],
                                            "notes": ""}
    loaded = load_image(path, max_pixels=max_pixels)
    return loaded.array, {"orig_mode": loaded.orig_mode, "orig_size": loaded.orig_size,
                          "notes": "; ".join(loaded.notes)}


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def resolve_layout(rows: pd.DataFrame, config: PrepareConfig) -> dict[str, Any]:
    """Decide the dataset's alignment mode and cache shape from a probe of its first images.

    ``auto`` means: rows with given landmarks use them; small equal-size square crops with no
    landmarks (FER2013) are pre-aligned and only resized (stored at native size and channels);
    anything else is aligned per image with MTCNN, falling back per the policy.
    """
    pending = rows[rows[COL.status] == ""]
    probe_sizes, probe_grey = [], []
    for path, pixels in zip(pending[COL.path][:PROBE_ROWS], pending["pixels"][:PROBE_ROWS]):
        try:
            image, _ = _load_row(path, pixels, config.max_pixels)
        except Exception:  # noqa: BLE001 - a bad probe image is judged later, per row
            continue
        probe_sizes.append(image.shape[:2])
        probe_grey.append(_is_grey(image))
    has_landmarks = bool(pending[COL.landmarks].map(lambda v: v is not None).any())
    same_square = (len(set(probe_sizes)) == 1 and probe_sizes[0][0] == probe_sizes[0][1])
    prealigned = (same_square and probe_sizes[0][0] <= PREALIGNED_MAX_SIDE and not has_landmarks)
    mode = config.align
    if mode == "auto" and prealigned:
        mode = "none"
    if mode == "none" and same_square and probe_sizes[0][0] <= config.size:
        side = probe_sizes[0][0]  # keep native size: 48x48 FER2013 stays 48x48
    else:
        side = config.size
    channels = 1 if (mode == "none" and probe_grey and all(probe_grey)) else 3
    if config.channels is not None:
        channels = config.channels
    return {"align_mode": mode, "cache_shape": [side, side, channels],
            "probe": {"images": len(probe_sizes), "prealigned": prealigned,
                      "has_landmarks": has_landmarks}}


# --------------------------------------------------------------------------------------------
# 3. the cache: chunks processed by worker processes

_DETECTOR = None
def _detector(min_confidence: float):
    """One MTCNN per process, built on first use (workers that never detect never load torch)."""
    global _DETECTOR
    if _DETECTOR is None:
        import torch

        from ferwild.data.faces import FaceDetector

        if in_worker():
            # Each worker is one core's worth of work; torch's own threads would oversubscribe.
            torch.set_num_threads(1)
        _DETECTOR = FaceDetector(min_confidence=min_confidence)
    return _DETECTOR


def image_quality(crop: np.ndarray) -> dict[str, float]:
    """Cheap per-image statistics for the split audit: sharpness (mean |4-neighbour Laplacian|
    of the grey crop), brightness (mean grey level) and contrast (its standard deviation)."""
    g = crop.astype(np.float32).mean(axis=-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return {"sharpness": round(float(np.abs(lap).mean()), 3), "brightness": round(float(g.mean()), 2),
            "contrast": round(float(g.std()), 2)}


def quality_by_split(manifest: pd.DataFrame, ratio: float = 2.0, min_rows: int = 20) -> tuple[dict, list[str]]:
    """Median image statistics per split, and warnings where splits differ by more than ``ratio``.

    A split that is much blurrier (or flatter) than another is a shift the model will pay for:
    trained on one, it is evaluated on images of another kind.
    """
    used = manifest[manifest[COL.status].isin(USABLE_STATUSES) & (manifest[COL.split] != "")]
    if "sharpness" not in used:
        return {}, []
    medians = {s: {k: round(float(g[k].median()), 3) for k in (COL.sharpness, COL.brightness, COL.contrast)}
               | {"n": int(len(g))} for s, g in used.groupby("split")}
    warnings = []
    splits = [s for s in ("train", "val", "test") if s in medians and medians[s]["n"] >= min_rows]
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            for key in (COL.sharpness, COL.contrast):
                lo, hi = sorted((medians[a][key], medians[b][key]))
                if lo > 0 and hi / lo > ratio:
                    sharper = a if medians[a][key] > medians[b][key] else b
                    other = b if sharper == a else a
                    warnings.append(f"{sharper} images have {hi / lo:.1f}x the {key} of {other} images "
                                    f"(median {hi:.1f} vs {lo:.1f}): the splits differ in image quality, "
                                    f"so scores across them measure that shift too")
    return medians, warnings


_CHUNK_DEFAULTS: dict[str, Any] = {
    COL.align_method: "", COL.confidence: None, COL.n_faces: 0, COL.box: None, COL.landmarks: None,
    COL.other_boxes: "[]", COL.shard_index: -1, COL.content_hash: "", COL.phash: 0,
    COL.sharpness: None, COL.brightness: None, COL.contrast: None,
}


def process_chunk(job: dict[str, Any]) -> dict[str, Any]:
    """Load, align, hash and cache one chunk of rows; commit it by renaming its Parquet file.

    ``job`` holds plain data (so it pickles to a worker): chunk name, output folder, the rows
    (``row_id``, ``path``, ``pixels``, ``landmarks``), the resolved mode and cache shape, and the
    config's cache fields. Returns counts by status.
    """
    from ferwild.data.dedup import content_hash, perceptual_hash
    from ferwild.data.faces import align_faces
    from ferwild.data.images import ImageRejected

    cfg = job["config"]
    side, _, channels = job["cache_shape"]
    records, images, image_landmarks, image_slots = [], [], [], []
    for row in job["rows"]:
        rec = {COL.row_id: row[COL.row_id], COL.status: "", COL.reason: "", COL.notes: "", COL.orig_mode: "",
               COL.orig_width: 0, COL.orig_height: 0}
        try:
            image, meta = _load_row(row[COL.path], row["pixels"], cfg["max_pixels"])
        except ImageRejected as exc:
            rec[COL.status], rec[COL.reason] = "rejected", exc.reason
        except Exception as exc:  # noqa: BLE001 - never let one file abort the run
            rec[COL.status], rec[COL.reason] = "rejected", f"unreadable: {type(exc).__name__}: {exc}"
        else:
            rec[COL.orig_mode], rec[COL.notes] = meta[COL.orig_mode], meta[COL.notes]
            rec[COL.orig_width], rec[COL.orig_height] = int(meta["orig_size"][0]), int(meta["orig_size"][1])
            image_slots.append(len(records))
            images.append(image)
            image_landmarks.append(row[COL.landmarks])
        records.append(rec)

    mode = job["align_mode"]
    detector = _detector(cfg["min_confidence"]) if mode in ("mtcnn", "auto") and images else None
    template = None if cfg.get("template") is None else np.asarray(cfg["template"], dtype=np.float64)
    results = align_faces(images, mode, size=side, margin=cfg["margin"], fallback=cfg["fallback"],
                          detector=detector, landmarks=image_landmarks, template=template) if images else []

    crops = []
    for slot, result in zip(image_slots, results):
        rec = records[slot]
        rec.update(status=result.status, reason=result.reason, align_method=result.method,
                   confidence=None if result.confidence is None else float(result.confidence),
                   n_faces=int(result.n_faces),
                   box=None if result.box is None else [float(v) for v in result.box],
                   landmarks=None if result.landmarks is None
                   else [float(v) for v in np.asarray(result.landmarks).reshape(-1)],
                   other_boxes=json.dumps([[round(float(v), 1) for v in b] for b in result.other_boxes]))
        if result.crop is not None:
            crop = to_channels(np.ascontiguousarray(result.crop), channels)
            rec[COL.shard_index] = len(crops)
            rec[COL.content_hash] = content_hash(crop)
            rec[COL.phash] = int(perceptual_hash(crop))
            rec.update(image_quality(crop))
            crops.append(crop)

    out = Path(job["out_dir"])
    name = job["chunk"]
    array = np.stack(crops) if crops else np.zeros((0, side, side, channels), np.uint8)
    save_npy_atomic(out / SHARDS / f"{name}.npy", array)
    frame = pd.DataFrame.from_records(records)
    for col, default in _CHUNK_DEFAULTS.items():
        if col not in frame:
            frame[col] = [default] * len(frame)
    frame[COL.shard] = np.where(frame[COL.shard_index].fillna(-1).astype(int) >= 0, name, "")
    frame[COL.shard_index] = frame[COL.shard_index].fillna(-1).astype("int64")
    frame[COL.phash] = frame[COL.phash].fillna(0).astype("uint64")
    frame[COL.n_faces] = frame[COL.n_faces].fillna(0).astype("int64")
    frame[COL.content_hash] = frame[COL.content_hash].fillna("")
    frame[COL.align_method] = frame[COL.align_method].fillna("")
    frame[COL.other_boxes] = frame[COL.other_boxes].fillna("[]")
    # The Parquet rename is the commit point: a chunk without it is redone on resume.
    save_parquet_atomic(frame, out / SHARDS / f"{name}.parquet")
    return {"chunk": name, **Counter(frame[COL.status])}


def _fingerprint(rows: pd.DataFrame, fields: dict[str, Any], layout: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"fields": fields, "mode": layout["align_mode"],
                              "shape": layout["cache_shape"]}, sort_keys=True).encode())
    for path, status in zip(rows[COL.path], rows[COL.status]):
        digest.update(f"{path}\0{status}\n".encode())
    return digest.hexdigest()


def augment_block(job: dict[str, Any]) -> str:
    """Augment one block of planned rows from the cache and write it as one shard (atomic)."""
    import torch

    from ferwild.data.augment import augment_uint8

    if in_worker():
        torch.set_num_threads(1)
    reader = _ShardReader(Path(job["out_dir"]))
    images = np.stack([reader.image(shard, index) for shard, index in job["sources"]])
    save_npy_atomic(Path(job["out_dir"]) / SHARDS / f"{job['name']}.npy",
                          augment_uint8(images, job["seed"]))
    return job["name"]


# --------------------------------------------------------------------------------------------
# the whole run


def prepare(source: str | os.PathLike, out_dir: str | os.PathLike, config: PrepareConfig | None = None,
            *, overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None,
            ray_address: str | None = None) -> PrepareResult:
    """Prepare ``source`` into ``out_dir`` (see the module docstring). Resumable: rerunning the
    same command after an interruption finishes the job without redoing committed chunks.

    Args:
        source: an image folder, a CSV/Parquet manifest, or fer2013.csv.
        out_dir: the prepared dataset's folder.
        config: settings; defaults to ``PrepareConfig()``.
        overwrite: discard an existing output made with different cache settings.
        progress: optional ``callback(stage, done, total)`` for progress bars.
        ray_address: run the chunks (decode, detect, align, cache) and the balancing blocks as
            Ray tasks (``ferwild.parallel.ray_session``); ``out_dir`` must then be on storage
            every node sees. The result is the same as a local run's.

    Raises:
        PrepareError: when nothing usable came out, or out_dir holds an incompatible run.
        RayUnavailable: ``ray_address`` given but Ray is not installed or not reachable.
    """
    config = config or PrepareConfig()
    if ray_address:
        # one Ray session for every stage; the stages' run_jobs calls join it
        with ray_session(ray_address, num_cpus=config.workers or available_cpus()):
            return _prepare(source, Path(out_dir), config, overwrite, progress, ray_address)
    return _prepare(source, Path(out_dir), config, overwrite, progress, None)


def _prepare(source: str | os.PathLike, out: Path, config: PrepareConfig, overwrite: bool,
             progress: Callable[[str, int, int], None] | None, ray_address: str | None) -> PrepareResult:
    """:func:`prepare`'s steps, in order (the module docstring's numbering)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    rows = read_source(source).sort_values(COL.path, kind="stable").reset_index(drop=True)
    rows = _label_rows(rows, config.labels, config.unlabelled, config.vote_rule)
    _reject_duplicate_paths(rows)
    rows.insert(0, COL.row_id, np.arange(len(rows), dtype=np.int64))
    timings["read"] = time.perf_counter() - t0

    layout = resolve_layout(rows, config)
    fields = config.cache_fields()
    pending = rows[rows[COL.status] == ""]
    workers = config.workers or available_cpus()
    chunk_size = _claim_out_dir(out, source, _fingerprint(rows, fields, layout), fields, layout, overwrite,
                                # ~4 chunks per worker balances the load; 2048 rows bound a chunk's memory
                                config.chunk_size or max(4, min(2048, math.ceil(len(pending) / (workers * 4)))))
    jobs = _cache_jobs(pending, out, layout, fields, chunk_size)
    t1 = time.perf_counter()
    run_jobs(process_chunk, jobs, workers, (lambda d, t: progress("cache", d, t)) if progress else None,
             ray_address=ray_address)
    timings["cache"] = time.perf_counter() - t1
    timings["cache_images"] = int(sum(len(j["rows"]) for j in jobs))

    manifest = _assemble(rows, out, len(pending), chunk_size)
    usable = manifest[COL.status].isin(USABLE_STATUSES).to_numpy()
    if not usable.any():
        rejects = manifest[manifest[COL.status] != ""][[COL.path, COL.label_raw, COL.status, COL.reason]]
        save_text_atomic(out / "rejects.csv", rejects.to_csv(index=False))
        raise PrepareError(f"nothing usable came out of {source}: "
                           f"{dict(Counter(manifest[COL.status]))}; reasons in {out / 'rejects.csv'}")

    # 4. split
    t2 = time.perf_counter()
    split_mode, split_report = _split(manifest, usable, config)
    timings["split"] = time.perf_counter() - t2

    # 5. duplicates
    t3 = time.perf_counter()
    candidates, dups, dropped_dups = _audit_duplicates(manifest, usable, out, config)
    timings["duplicates"] = time.perf_counter() - t3

    # 6. balance
    t4 = time.perf_counter()
    counts_before = _split_class_counts(manifest)
    augmented = _balance(manifest, out, config, workers, progress, ray_address)
    manifest = pd.concat([manifest, augmented], ignore_index=True) if len(augmented) else manifest
    timings["balance"] = time.perf_counter() - t4

    # 7. pre-aligned crops: learn their framing, so new photos can be cut the same way later
    template = None
    if layout["align_mode"] == "none":
        t5 = time.perf_counter()
        template = _probe_face_template(out, manifest, config.seed)
        timings["face_template"] = time.perf_counter() - t5

    summary = _summary(source, config, layout, manifest, counts_before, split_mode, split_report,
                       dups, dropped_dups, timings, time.perf_counter() - t0)
    summary["duplicates"]["near_candidates"] = candidates.near_pairs
    summary["face_template"] = template
    manifest = _write_outputs(out, manifest, dups, summary, counts_before)
    return PrepareResult(out_dir=out, manifest=manifest, summary=summary)


def _claim_out_dir(out: Path, source: Any, key: str, fields: dict[str, Any], layout: dict[str, Any],
                   overwrite: bool, chunk_size: int) -> int:
    """Make ``out`` ours and record the plan; returns the chunk size to use.

    A folder holding a run of another source or other cache settings is refused unless
    ``overwrite``; a folder holding this run keeps its chunk size, so resumed chunks line up.
    """
    plan_path = out / PLAN
    if plan_path.exists():
        previous = json.loads(plan_path.read_text())
        if previous.get("cache_key") != key:
            if not overwrite:
                raise PrepareError(
                    f"{out} holds a prepare run of a different source or cache settings "
                    f"({previous.get('cache_fields')}); use another --out or pass --overwrite")
            shutil.rmtree(out)
        else:
            chunk_size = previous["chunk_size"]
    out.mkdir(parents=True, exist_ok=True)
    save_json_atomic(plan_path, {"cache_key": key, "cache_fields": fields, "layout": layout,
                                 "chunk_size": chunk_size, "source": str(source)})
    return chunk_size


def _cache_jobs(pending: pd.DataFrame, out: Path, layout: dict[str, Any], fields: dict[str, Any],
                chunk_size: int) -> list[dict[str, Any]]:
    """One :func:`process_chunk` job per chunk of ``pending`` rows not yet committed."""
    jobs = []
    for start in range(0, len(pending), chunk_size):
        name = f"chunk-{start // chunk_size:05d}"
        if (out / SHARDS / f"{name}.parquet").exists():
            continue  # committed by an earlier (interrupted) run
        part = pending.iloc[start:start + chunk_size]
        jobs.append({
            "chunk": name, "out_dir": str(out), "align_mode": layout["align_mode"],
            "cache_shape": layout["cache_shape"], "config": fields,
            "rows": [{COL.row_id: int(r), COL.path: p, "pixels": px, COL.landmarks: lm}
                     for r, p, px, lm in zip(part[COL.row_id], part[COL.path], part["pixels"], part[COL.landmarks])],
        })
    return jobs


def _audit_duplicates(manifest: pd.DataFrame, usable: np.ndarray, out: Path, config: PrepareConfig):
    """Find exact and near duplicates (near pairs confirmed on pixels), mark them in
    ``manifest`` and, with ``drop_cross_split_dups``, exclude cross-split twins from val/test.

    Returns ``(candidates, duplicates, number dropped)``.
    """
    splits = manifest[COL.split].to_numpy(dtype=object)
    candidates = find_duplicates(manifest[COL.content_hash].tolist(), manifest[COL.phash].to_numpy(np.uint64),
                                 splits.tolist(), threshold=config.near_dup_threshold, mask=usable)
    dups = _verify_near_pairs(candidates, manifest, out, config.near_dup_min_corr)
    _mark_duplicates(manifest, dups)
    if not config.drop_cross_split_dups:
        return candidates, dups, 0
    drop = cross_split_drop_mask(dups, splits.tolist())
    manifest.loc[drop, COL.reason] = "cross-split duplicate of " + manifest.loc[drop, COL.exact_dup_of].where(
        manifest.loc[drop, COL.exact_dup_of] != "", manifest.loc[drop, COL.near_dup_of])
    manifest.loc[drop, COL.status] = "excluded"
    manifest.loc[drop, COL.split] = ""
    return candidates, dups, int(drop.sum())


#: Pre-aligned crops probed with MTCNN for their landmark template (~1 s for 48 px crops).
TEMPLATE_PROBE = 256


def _probe_face_template(out: Path, manifest: pd.DataFrame, seed: int) -> dict | None:
    """:func:`~ferwild.data.faces.estimate_template` on a seeded sample of the cached crops."""
    from ferwild.data.faces import estimate_template

    rows = manifest[(manifest[COL.shard] != "") & (manifest[COL.augmented_from].astype(str) == "")]
    if rows.empty:
        return None
    rows = rows.sample(min(TEMPLATE_PROBE, len(rows)), random_state=seed)
    crops = []
    for shard, group in rows.groupby(COL.shard, sort=True):
        pixels = np.load(out / SHARDS / f"{shard}.npy", mmap_mode="r")
        crops.extend(np.asarray(pixels[int(i)]) for i in group[COL.shard_index])
    try:
        return estimate_template(crops)
    except Exception:  # noqa: BLE001 - an optional extra: the dataset is usable without it
        return None


def _assemble(rows: pd.DataFrame, out: Path, n_pending: int, chunk_size: int) -> pd.DataFrame:
    """Join the committed chunk tables onto the rows: the manifest before split/dedup/balance."""
    n_chunks = math.ceil(n_pending / chunk_size) if n_pending else 0
    parts = [pd.read_parquet(out / SHARDS / f"chunk-{i:05d}.parquet") for i in range(n_chunks)]
    processed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"row_id": pd.Series([], dtype="int64")})
    base = rows.drop(columns=["pixels", COL.landmarks])
    manifest = base.merge(processed, on=COL.row_id, how="left", suffixes=("_pre", ""))
    if "status_pre" in manifest:
        # Rows judged before decoding keep their status; decoded rows take the worker's.
        manifest[COL.status] = manifest[COL.status].where(manifest["status_pre"] == "", manifest["status_pre"])
        manifest[COL.reason] = manifest[COL.reason].where(manifest["status_pre"] == "", manifest["reason_pre"])
        manifest = manifest.drop(columns=["status_pre", "reason_pre"])
    for col, default in {**_CHUNK_DEFAULTS, COL.notes: "", COL.orig_mode: "", COL.shard: "",
                         COL.orig_width: 0, COL.orig_height: 0}.items():
        if col not in manifest:
            manifest[col] = default
        elif default is not None:
            manifest[col] = manifest[col].fillna(default)
    for col in (COL.shard_index, COL.n_faces, COL.orig_width, COL.orig_height):
        manifest[col] = manifest[col].astype("int64")
    manifest[COL.phash] = manifest[COL.phash].astype("uint64")
    for col in (COL.status, COL.reason, COL.notes, COL.orig_mode, COL.shard, COL.content_hash, COL.align_method):
        manifest[col] = manifest[col].fillna("").astype(str)
    manifest[COL.split] = ""
    manifest[COL.augmented_from] = ""
    return manifest


def _split(manifest: pd.DataFrame, usable: np.ndarray, config: PrepareConfig) -> tuple[str, dict]:
    """Assign train/val/test to usable rows: the source's split, or (group-aware) ratios.

    Groups come from ``subject`` when present, else ``video`` (videos nest in subjects).
    """
    if config.unlabelled:
        # Nothing to train on: an unlabelled batch is scored/audited as one held-out set.
        manifest.loc[usable, COL.split] = "test"
        return "unlabelled", {"target": None, "counts": {"test": {"": int(usable.sum())}}}
    source_splits = manifest.loc[usable, COL.source_split]
    use_source = config.split == "source" or (config.split == "auto" and (source_splits != "").all())
    if config.split == "source" and (source_splits == "").any():
        raise PrepareError(f"--split source: {(source_splits == '').sum()} usable rows have no split "
                           "in the source; use --split ratios")
    labels = manifest.loc[usable, COL.label].to_numpy(dtype=object)
    if use_source:
        assigned = source_splits.to_numpy(dtype=object)
        mode, report = "source", _source_split_report(labels, assigned)
    else:
        group_col = next((c for c in (COL.subject, COL.video) if (manifest.loc[usable, c] != "").any()), None)
        groups = None
        if group_col:
            values = manifest.loc[usable, group_col].to_numpy(dtype=object)
            # Rows without a group id are their own group.
            groups = np.where(values == "", [f"\0row{i}" for i in range(len(values))], values)
        assigned, report = assign_splits(labels, config.split_ratios, config.seed,
                                         groups=groups, group_name=group_col)
        mode, report = ("group" if group_col else "stratified"), report.to_dict()
    manifest.loc[usable, COL.split] = assigned
    return mode, report


def _source_split_report(labels: np.ndarray, splits: np.ndarray) -> dict[str, Any]:
    counts = pd.crosstab(pd.Series(splits, name="split"), pd.Series(labels, name="label"))
    return {"target": None, "counts": {s: {c: int(v) for c, v in row.items()}
                                       for s, row in counts.iterrows()}}


def _verify_near_pairs(report, manifest: pd.DataFrame, out: Path, min_corr: float, block: int = 1024):
    """Keep exact pairs, and near (pHash) candidates whose pixels correlate >= ``min_corr``.

    A 64-bit pHash keeps only coarse structure: aligned faces of different people, or a sharp
    face and a heavily blurred other one, can share it. Verifying on the cached pixels turns
    candidates into duplicates one can act on.
    """
    pairs = report.pairs
    corr = np.ones(len(pairs), dtype=np.float32)
    near = np.flatnonzero((pairs["kind"] == "near").to_numpy())
    reader = _ShardReader(out)
    shard, index = manifest[COL.shard].to_numpy(dtype=object), manifest[COL.shard_index].to_numpy()

    def fetch(rows):
        return np.stack([reader.image(shard[r], index[r]) for r in rows])

    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    for start in range(0, len(near), block):
        sel = near[start:start + block]
        corr[sel] = pixel_correlation(fetch(i[sel]), fetch(j[sel]))
    report.pairs["correlation"] = np.round(corr, 4)
    return keep_pairs(report, corr >= min_corr)


def _mark_duplicates(manifest: pd.DataFrame, dups) -> None:
    """Give each duplicated row the path of its lowest-numbered twin, for exact and near pairs."""
    paths = manifest[COL.path].to_numpy(dtype=object)
    for kind in ("exact", "near"):
        col = np.full(len(manifest), "", dtype=object)
        pairs = dups.pairs[dups.pairs["kind"] == kind]
        if len(pairs):
            i, j = pairs["i"].to_numpy(dtype=np.int64), pairs["j"].to_numpy(dtype=np.int64)
            both = pd.DataFrame({"row": np.concatenate([i, j]), "twin": np.concatenate([j, i])})
            first = both.groupby("row")["twin"].min()
            col[first.index.to_numpy()] = paths[first.to_numpy()]
        manifest[f"{kind}_dup_of"] = col


def _split_class_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    used = manifest[manifest[COL.status].isin(USABLE_STATUSES) & (manifest[COL.split] != "")]
    return {s: {c: int(n) for c, n in sorted(Counter(g[COL.label]).items())}
            for s, g in used.groupby(COL.split, sort=False)}


def _balance(manifest: pd.DataFrame, out: Path, config: PrepareConfig, workers: int,
             progress: Callable[[str, int, int], None] | None, ray_address: str | None) -> pd.DataFrame:
    """Write augmented copies of training rows so classes reach the target; returns their rows.

    Blocks of augmented images are independent jobs (parallel, and skipped on resume when their
    shard exists). Shard names carry a digest of the plan, so a changed split or balance setting
    never reuses stale pixels.
    """
    train = manifest[(manifest[COL.split] == "train") & manifest[COL.status].isin(USABLE_STATUSES)]
    plan = balance_plan(train[COL.label].tolist(), config.balance, seed=config.seed) \
        if config.balance is not None and len(train) and not config.unlabelled else []
    sources = train.iloc[[p for p, _ in plan]] if plan else train.iloc[:0]
    digest = hashlib.sha256(json.dumps([config.seed, [int(c) for _, c in plan]]).encode())
    for path in sources[COL.path]:
        digest.update(path.encode())
    key = digest.hexdigest()[:10]
    block = 2048
    jobs, names = [], []
    for b, start in enumerate(range(0, len(plan), block)):
        name = f"augmented-{key}-{b:05d}"
        names.extend([name] * len(plan[start:start + block]))
        if (out / SHARDS / f"{name}.npy").exists():
            continue
        part = sources.iloc[start:start + block]
        jobs.append({"name": name, "out_dir": str(out), "seed": config.seed * 1_000_003 + b,
                     "sources": [(str(s), int(i)) for s, i in zip(part[COL.shard], part[COL.shard_index])]})
    run_jobs(augment_block, jobs, workers, (lambda d, t: progress("balance", d, t)) if progress else None,
             ray_address=ray_address)
    for old in (out / SHARDS).glob("augmented-*.npy"):
        if not old.name.startswith(f"augmented-{key}-"):
            old.unlink()  # pixels of an earlier, different balance plan
    if not plan:
        return pd.DataFrame()
    # augmented copies keep their original's attributes and crowd votes
    attrs = [c for c in manifest.columns if c.startswith(ATTR_PREFIX)] + vote_columns(manifest)
    frame = pd.DataFrame({
        COL.path: [f"{p}#aug{c}" for p, (_, c) in zip(sources[COL.path], plan)],
        COL.label: sources[COL.label].to_numpy(), COL.split: "train", COL.status: sources[COL.status].to_numpy(),
        COL.reason: "", COL.source_split: sources[COL.source_split].to_numpy(),
        COL.subject: sources[COL.subject].to_numpy(), COL.video: sources[COL.video].to_numpy(),
        COL.augmented_from: sources[COL.path].to_numpy(), COL.shard: names,
        COL.shard_index: np.arange(len(plan)) % block, COL.align_method: sources[COL.align_method].to_numpy(),
        COL.content_hash: "", COL.phash: np.zeros(len(plan), np.uint64), COL.n_faces: 0,
        COL.orig_width: 0, COL.orig_height: 0, COL.other_boxes: "[]",
        **{c: sources[c].to_numpy() for c in attrs},
    })
    frame[COL.row_id] = np.arange(len(manifest), len(manifest) + len(frame), dtype=np.int64)
    return frame


class _ShardReader:
    def __init__(self, root: Path):
        self.root, self.shards = root, {}

    def image(self, shard: str, index: int) -> np.ndarray:
        if shard not in self.shards:
            self.shards[shard] = np.load(self.root / SHARDS / f"{shard}.npy", mmap_mode="r")
        return np.asarray(self.shards[shard][int(index)])


def _reason_kind(reason: str) -> str:
    # "unknown label 'banana'" and "truncated ...: detail" group by their stable head;
    # "votes: vote tie (neutral, sadness)" by the rule's outcome ("votes: vote tie").
    if reason.startswith("votes: "):
        return "votes: " + _reason_kind(reason[len("votes: "):])
    head = reason.split(":")[0].split(" (")[0].split(" [")[0]
    return head.split(" '")[0] if head.startswith("unknown label") else head


def _summary(source, config, layout, manifest, counts_before, split_mode, split_report, dups,
             dropped_dups, timings, elapsed) -> dict[str, Any]:
    originals = manifest[manifest[COL.augmented_from] == ""]
    statuses = Counter(originals[COL.status])
    attempted = originals[originals[COL.align_method].isin(["mtcnn", "landmarks", "center"])
                          | (originals[COL.status] == "dropped")]
    failed = attempted[COL.status].isin(FAILED_ALIGNMENT)
    per_class = {c: round(float(f.mean()), 4) for c, f in failed.groupby(attempted[COL.label])} if len(attempted) else {}
    counts_after = _split_class_counts(manifest)
    quality = quality_by_split(originals)
    return {
        "source": str(source),
        "label_set": config.labels,
        "label_names": list(get_label_set(config.labels)),
        "config": config.to_dict(),
        "align_mode": layout["align_mode"],
        "cache_shape": layout["cache_shape"],
        "inputs": int(len(originals)),
        "usable": int(originals[COL.status].isin(USABLE_STATUSES).sum()),
        "status_counts": {s: int(statuses.get(s, 0)) for s in STATUSES},
        "rejected_reasons": dict(Counter(_reason_kind(r) for r in originals.loc[originals[COL.status] == "rejected", COL.reason])),
        "excluded_reasons": dict(Counter(_reason_kind(r) for r in originals.loc[originals[COL.status] == "excluded", COL.reason])),
        "split_mode": split_mode,
        "split_report": split_report,
        "counts": counts_before,
        "counts_after_balance": counts_after,
        "augmented_rows": int((manifest[COL.augmented_from] != "").sum()),
        "image_quality": quality[0],
        "quality_warnings": quality[1],
        "votes": _votes_summary(originals, config.vote_rule),
        "duplicates": {**dups.to_dict(), "threshold": config.near_dup_threshold,
                       "min_correlation": config.near_dup_min_corr,
                       "dropped_from_val_test": dropped_dups},
        "alignment_failure": {"overall": round(float(failed.mean()), 4) if len(attempted) else 0.0,
                              "attempted": int(len(attempted)), "failed": int(failed.sum()),
                              "per_class": per_class},
        "timings_s": {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
        "elapsed_s": round(elapsed, 3),
    }


def _votes_summary(originals: pd.DataFrame, rule: str) -> dict[str, Any] | None:
    """What the crowd votes did: the rule, the rows that had votes, the labels they gave, and
    the faces they gave none (ties, unknown / not-a-face majorities, bad votes). None without votes."""
    columns = vote_columns(originals)
    if not columns:
        return None
    with_votes = originals[columns].notna().all(axis=1)
    reasons = originals[COL.reason].astype(str)
    return {
        "rule": rule,
        "columns": columns,
        "rows_with_votes": int(with_votes.sum()),
        "labelled": int((with_votes & (originals[COL.label] != "")).sum()),
        "excluded": dict(Counter(_reason_kind(r) for r in reasons[reasons.str.startswith("votes: ")])),
        "bad_votes": int(reasons.str.startswith("bad votes").sum()),
        "listed_twice": sorted(originals.loc[reasons.str.startswith("name listed twice"), COL.path]
                               .map(lambda p: Path(p).name)),
        "total_votes_per_class": {c[len("votes_"):]: float(originals.loc[with_votes, c].sum()) for c in columns},
    }


def _write_outputs(out: Path, manifest: pd.DataFrame, dups, summary: dict[str, Any],
                   counts_before: dict[str, dict[str, int]]) -> pd.DataFrame:
    """Write the manifest, rejects, duplicates, figures and (last) the summary; returns the
    manifest as written, so ``prepare()``'s result and the file have the same columns."""
    manifest = manifest.copy()
    for col in manifest.columns:
        # text columns (object, or pandas' str dtype): augmented rows leave NaN in some of them
        if (manifest[col].dtype == object or pd.api.types.is_string_dtype(manifest[col])) \
                and col not in (COL.box, COL.landmarks, COL.confidence):
            manifest[col] = manifest[col].fillna("").astype(str)
    manifest[COL.confidence] = pd.to_numeric(manifest[COL.confidence], errors="coerce")
    manifest[COL.label_id] = manifest[COL.label].map(
        {n: i for i, n in enumerate(summary["label_names"])}).fillna(-1).astype("int64")
    save_parquet_atomic(manifest, out / MANIFEST)
    rejects = manifest[manifest[COL.status].isin(["rejected", "dropped"])][[COL.path, COL.label, COL.status, COL.reason]]
    save_text_atomic(out / "rejects.csv", rejects.to_csv(index=False))
    pairs = dups.pairs.copy()
    paths = manifest[COL.path].to_numpy(dtype=object)
    pairs.insert(0, "path_j", paths[pairs["j"].to_numpy(dtype=int)] if len(pairs) else [])
    pairs.insert(0, "path_i", paths[pairs["i"].to_numpy(dtype=int)] if len(pairs) else [])
    save_text_atomic(out / "duplicates.csv", pairs.to_csv(index=False))
    class_count_figure(counts_before.get("train", {}), summary["counts_after_balance"].get("train", {}),
                       out / "class_counts.png")
    _contact_sheet(out, manifest)
    save_json_atomic(out / SUMMARY, summary)
    return manifest


def _contact_sheet(out: Path, manifest: pd.DataFrame, n: int = 48) -> None:
    """A grid of cached crops (aligned first, then fallbacks) for a visual check."""
    from ferwild.data.faces import contact_sheet

    originals = manifest[(manifest[COL.shard] != "") & (manifest[COL.augmented_from] == "")]
    pick = pd.concat([originals[originals[COL.status] == "aligned"].head(n - n // 4),
                      originals[originals[COL.status] == "unaligned"].head(n // 4)])
    if pick.empty:
        return
    reader = _ShardReader(out)
    crops = [reader.image(s, i) for s, i in zip(pick[COL.shard], pick[COL.shard_index])]
    crops = [np.repeat(c, 3, axis=2) if c.shape[2] == 1 else c for c in crops]
    captions = [f"{lab} {st}" for lab, st in zip(pick[COL.label], pick[COL.status])]  # wrapped to two lines
    contact_sheet(crops, captions, out / "contact_sheet.png", title="ferwild prepare: cached crops")
