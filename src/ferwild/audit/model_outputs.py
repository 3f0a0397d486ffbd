"""A run's outputs on a prepared dataset: penultimate embeddings, class probabilities, labels.

Every audit statistic is computed from these arrays, so they are computed once per
(checkpoint, dataset rows) and cached in ``RUN_DIR/audit-cache/<key>.npz``. The key hashes the
checkpoint's weights, its model config and the identity of the rows (path, shard position,
content hash), so a retrained run, a re-prepared dataset or another split never reuses stale
arrays, while rerunning an audit, or monitoring a batch again, costs no forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ferwild.data.loader import eval_loader
from ferwild.data.prepared import COL, PreparedDataset
from ferwild.files import save_npz_atomic
from ferwild.runs import RunError, autocast_dtype, checkpoint_dir, resolve_device
from ferwild.shipped import cache_dir

CACHE_DIR = "audit-cache"
CACHE_VERSION = 2  # 2: probabilities with the model's TTA and temperature
CHUNK_ROWS = 4096


@dataclass
class ModelOutputs:
    """Per-row outputs of one model on some rows of a prepared dataset (rows in order)."""

    rows: pd.DataFrame          # the manifest rows (index reset)
    features: np.ndarray        # (N, D) float32 penultimate embeddings
    probs: np.ndarray           # (N, K) float32 softmax probabilities
    labels: np.ndarray          # (N,) int64 true class ids, -1 where unlabelled
    label_names: list[str]
    cached: bool = False        # True when read back from the cache

    @property
    def preds(self) -> np.ndarray:
        """Predicted class ids (argmax of ``probs``)."""
        return self.probs.argmax(1).astype(np.int64)

    @property
    def labelled(self) -> bool:
        """Whether every row has a true label."""
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def concat(parts: list["ModelOutputs"]) -> "ModelOutputs":
        """Rows of several outputs of the same run, in order (e.g. val then test)."""
        return ModelOutputs(pd.concat([p.rows for p in parts], ignore_index=True),
                            np.concatenate([p.features for p in parts]), np.concatenate([p.probs for p in parts]),
                            np.concatenate([p.labels for p in parts]), parts[0].label_names,
                            all(p.cached for p in parts))

    def subset(self, mask: np.ndarray) -> "ModelOutputs":
        """The outputs of the rows selected by a boolean mask or an index array."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return ModelOutputs(self.rows.iloc[idx].reset_index(drop=True), self.features[idx],
                            self.probs[idx], self.labels[idx], self.label_names, self.cached)


def audit_rows(prepared: PreparedDataset, split: str | None) -> pd.DataFrame:
    """The rows an audit looks at: usable, original (never augmented) rows of ``split``
    (``None``: every split, e.g. a whole production batch)."""
    rows = prepared.rows(split, include_augmented=False)
    if split is None:
        rows = rows[rows[COL.split].astype(str) != ""]
    return rows.reset_index(drop=True)


def _weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(checkpoint: Path, model_config: dict, rows: pd.DataFrame, root: Path) -> str:
    """The cache key of (checkpoint weights, model config, dataset rows)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    digest.update(_weights_digest(checkpoint / "model.safetensors").encode())
    digest.update(json.dumps(model_config, sort_keys=True, default=str).encode())
    digest.update(str(Path(root).resolve()).encode())
    ident = rows[[COL.path, COL.shard, COL.shard_index]].astype(str).agg("\0".join, axis=1)
    if COL.content_hash in rows:
        ident = ident + "\0" + rows[COL.content_hash].astype(str)
    digest.update("\n".join(ident).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def forward_outputs(model, prepared: PreparedDataset, rows: pd.DataFrame, *, batch_size: int = 256,
                    device: torch.device | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and probabilities of ``model`` on ``rows`` (no caching)."""
    device = device or torch.device("cpu")
    names = prepared.label_names
    # The loader needs a label per row; unlabelled rows borrow the first class (never read).
    loader_rows = rows.assign(label=rows[COL.label].where(rows[COL.label].isin(names), names[0]))
    loader, transform = eval_loader(prepared.root, loader_rows, names, model.preprocessing, batch_size)
    amp = autocast_dtype("auto", device)
    feats, probs = [], []
    done = 0
    model.eval()
    for images, _ in loader:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            # the deployed model's probabilities (its TTA and temperature), and its embeddings
            f, logits = model.forward_with_features(transform(images.to(device)))
        feats.append(f.float().cpu())
        probs.append(torch.softmax(logits.float(), 1).cpu())
        done += len(images)
        if progress:
            progress(done, len(rows))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def _chunked_forward(model, prepared: PreparedDataset, rows: pd.DataFrame, cache_dir: Path, key: str,
                     batch_size: int, chunk_rows: int, use_cache: bool, progress) -> tuple[np.ndarray, np.ndarray]:
    """``forward_outputs`` chunk by chunk, reusing chunks saved by an interrupted run."""
    device = next(model.parameters()).device
    feats, probs = [], []
    total = len(rows)
    for number, start in enumerate(range(0, total, chunk_rows)):
        part = rows.iloc[start:start + chunk_rows]
        path = cache_dir / f"{key}.part-{number:05d}-{len(part)}.npz"
        if use_cache and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    feats.append(data["features"]), probs.append(data["probs"])
                if progress:
                    progress(start + len(part), total)
                continue
            except (OSError, ValueError, KeyError):
                pass  # a damaged part is recomputed
        f, pr = forward_outputs(model, prepared, part, batch_size=batch_size, device=device,
                                progress=(lambda d, _t, s=start: progress(s + d, total)) if progress else None)
        feats.append(f), probs.append(pr)
        if use_cache:
            try:
                save_npz_atomic(path, features=f.astype(np.float32), probs=pr.astype(np.float32))
            except OSError:
                use_cache = False  # read-only run folder
    return np.concatenate(feats), np.concatenate(probs)


def compute_outputs(run_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str | None, *,
                    which: str = "best", batch_size: int = 256, device: str = "auto",
                    use_cache: bool = True, model_and_state=None, progress=None,
                    chunk_rows: int = CHUNK_ROWS) -> ModelOutputs:
    """The run's outputs on the audit rows of ``split`` of ``data_dir`` (cached per run x rows).

    The forward pass runs in chunks of ``chunk_rows`` rows, each saved as it finishes, so a
    killed run (a ViT over 10k faces on a CPU takes half an hour) resumes at the first missing
    chunk; ``progress(done, total)`` is called after every batch.

    Args:
        run_dir: a ``ferwild train`` run folder.
        data_dir: a prepared dataset (labelled, or prepared with ``--unlabelled``).
        split: ``"test"``, ``"val"``, ``"train+val"``..., or ``None`` for every split.
        model_and_state: an already loaded ``(model, state)`` (saves reloading per dataset).

    Raises:
        RunError: no such run/dataset, label sets that differ, or no rows.
    """
    from ferwild.runs import load_run, resolve_run_dir

    run_dir = resolve_run_dir(run_dir)
    try:
        prepared = PreparedDataset(data_dir)
    except FileNotFoundError as exc:
        raise RunError(str(exc)) from None
    ckpt = checkpoint_dir(run_dir, which)
    dev = resolve_device(device)
    if model_and_state is None:
        model_and_state = load_run(run_dir, which, dev)
    model, state = model_and_state
    names = list(state["label_names"])
    if prepared.label_names and prepared.label_names != names:
        raise RunError(f"label sets differ: the run predicts {names}, {data_dir} is labelled "
                       f"{prepared.label_names}")
    rows = audit_rows(prepared, split)
    if rows.empty:
        raise RunError(f"{data_dir} has no usable rows in split {split or 'any'!r}")
    labels = rows[COL.label].map({n: i for i, n in enumerate(names)}).fillna(-1).to_numpy(np.int64)
    key = cache_key(ckpt, state["model_config"], rows, prepared.root)
    cache_root = cache_dir(run_dir, CACHE_DIR)
    path = cache_root / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                feats, probs = data["features"], data["probs"]
            if len(feats) == len(rows):
                return ModelOutputs(rows, feats, probs, labels, names, cached=True)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed
    feats, probs = _chunked_forward(model, prepared, rows, cache_root, key, batch_size,
                                    chunk_rows, use_cache, progress)
    if not np.isfinite(feats).all() or not np.isfinite(probs).all():
        raise RunError(f"the model produced non-finite outputs on {data_dir}")
    if use_cache:
        try:
            save_npz_atomic(path, features=feats.astype(np.float32), probs=probs.astype(np.float32))
            for part in path.parent.glob(f"{key}.part-*.npz"):
                part.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only run folder: audit without caching
    return ModelOutputs(rows, feats.astype(np.float32), probs.astype(np.float32), labels, names)
