"""The input pipeline: batches straight from the uint8 cache, transformed on the device.

No JPEG is decoded and no face is detected during training: ``prepare`` did that once. A
batch is one gather from memory-mapped shards (``CachedFaceDataset``), moved to the device as
uint8 (4x less traffic than float), then ``BatchTransform`` converts, augments (per-sample
random parameters, one call per batch), resizes to the model's input and normalises with the
model's own mean/std - all as tensor ops, on the GPU when there is one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ferwild.config import AugmentConfig
from ferwild.data.augment import augment_batch
from ferwild.data.prepared import COL, SHARDS
from ferwild.data.votes import soft_targets


class CachedFaceDataset(torch.utils.data.Dataset):
    """Manifest rows of a prepared dataset, indexed by whole batches.

    ``dataset[[i, j, k]]`` returns ``(images, labels)``: a (N, C, H, W) uint8 tensor and a (N,)
    int64 tensor; with ``votes=True`` also the (N, num_classes) float vote distributions
    (``ferwild.data.votes.soft_targets``: the crowd's votes, or the one-hot label where a row has
    none), ``(images, labels, votes)``; ``targets`` (N, num_classes) gives those distributions
    instead (a teacher's, for distillation). Use it with ``batch_size=None`` and a batch sampler (see
    ``make_loader``). Shards are opened memory-mapped lazily in each process, so worker processes
    share pages.
    """

    def __init__(self, root: str | Path, rows: pd.DataFrame, label_names: Sequence[str], *, votes: bool = False,
                 targets: np.ndarray | None = None):
        if len(rows) == 0:
            raise ValueError("no rows to load (empty split?)")
        self.root = Path(root)
        self.label_names = list(label_names)
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted(set(rows[COL.label]) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not in the label set {self.label_names}")
        self.labels = torch.from_numpy(rows[COL.label].map(index).to_numpy(np.int64).copy())
        self.votes = torch.from_numpy(soft_targets(rows, self.label_names)) if votes else None
        if targets is not None:  # given target distributions (distillation) take the votes' place
            if targets.shape != (len(rows), len(self.label_names)):
                raise ValueError(f"targets of shape {targets.shape} for {len(rows)} rows and {len(self.label_names)} classes")
            self.votes = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        codes, self.shard_names = pd.factorize(rows[COL.shard].astype(str))
        self.shard_codes = codes.astype(np.int64)
        self.shard_index = rows[COL.shard_index].to_numpy(np.int64)
        self._shards: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_shards"] = {}  # memory maps are reopened in the receiving process
        return state

    def _shard(self, code: int) -> np.ndarray:
        if code not in self._shards:
            self._shards[code] = np.load(self.root / SHARDS / f"{self.shard_names[code]}.npy", mmap_mode="r")
        return self._shards[code]

    def __getitem__(self, indices) -> tuple[torch.Tensor, ...]:
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        codes, positions = self.shard_codes[idx], self.shard_index[idx]
        first = self._shard(int(codes[0]))
        out = np.empty((len(idx),) + first.shape[1:], dtype=np.uint8)
        for code in np.unique(codes):
            sel = codes == code
            # one sorted fancy-index gather per shard (sequential reads of the memory map)
            pos = positions[sel]
            order = np.argsort(pos, kind="stable")
            gathered = self._shard(int(code))[pos[order]]
            target = np.flatnonzero(sel)[order]
            out[target] = gathered
        images = torch.from_numpy(out).permute(0, 3, 1, 2)
        rows = torch.from_numpy(idx)
        if self.votes is not None:
            return images, self.labels[rows], self.votes[rows]
        return images, self.labels[rows]


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of indices for one epoch: seeded shuffle, sharded across ranks, resumable.

    The permutation depends only on (seed, epoch), so every rank agrees on it and a resumed
    run replays the same order; ``skip_batches`` drops the batches already done.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 rank: int = 0, world_size: int = 1, skip_batches: int = 0, max_batches: int | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.skip_batches, self.max_batches = skip_batches, max_batches

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.world_size > 1:
            # Pad by wrapping so every rank gets the same number of samples (as DistributedSampler).
            per_rank = math.ceil(self.n / self.world_size)
            order = np.resize(order, per_rank * self.world_size)[self.rank::self.world_size]
        return order

    def __len__(self) -> int:
        total = math.ceil(len(self._indices()) / self.batch_size)
        if self.max_batches is not None:
            total = min(total, self.max_batches)
        return max(0, total - self.skip_batches)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self._indices()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.max_batches is not None:
            batches = batches[:self.max_batches]
        yield from batches[self.skip_batches:]


def make_loader(dataset: CachedFaceDataset, sampler: EpochBatchSampler, num_workers: int = 0,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader yielding whole uint8 batches (the dataset gathers a batch at once)."""
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       pin_memory=pin_memory, persistent_workers=False)


class BatchTransform:
    """uint8 (N, C, H, W) batch -> normalised float (N, 3, S, S) at the model's input size.

    Training batches are augmented (``ferwild.data.augment``) at the cached resolution before
    the resize, which is cheaper when the cache is smaller than the model input (FER2013 48 px
    for a 224 px ViT).
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float], *, train: bool = False,
                 augment: AugmentConfig | None = None, generator: torch.Generator | None = None,
                 memory_format: torch.memory_format | None = None):
        self.input_size = int(input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.train = train
        self.augment = augment if augment is not None else (AugmentConfig() if train else None)
        self.generator = generator
        self.memory_format = memory_format  # e.g. torch.channels_last for a channels-last model

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 (N, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255)
        if self.train and self.augment is not None:
            generator = self.generator or torch.Generator(device=x.device)
            x = augment_batch(x, generator, self.augment)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # Normalise before resizing: bilinear weights sum to 1, so the two commute, and the
        # per-channel affine then runs on the small cached image instead of the model input.
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return x


def eval_loader(root: str | Path, rows: pd.DataFrame, label_names: Sequence[str], preprocessing,
                batch_size: int = 256, *, votes: bool = False) -> tuple[torch.utils.data.DataLoader, BatchTransform]:
    """``rows`` of a prepared dataset in their order, and the model's (non-augmenting) transform;
    ``votes``: batches carry the vote distributions too (see :class:`CachedFaceDataset`).

    What ``evaluate_run`` and the audit iterate; ``preprocessing`` is the model's
    :class:`~ferwild.preprocessing.Preprocessing` (input size, mean, std). Training's validation
    loader is built in ``fit`` instead: under DDP each rank reads its own slice.
    """
    dataset = CachedFaceDataset(root, rows, label_names, votes=votes)
    loader = make_loader(dataset, EpochBatchSampler(len(dataset), batch_size, shuffle=False))
    pre = preprocessing
    return loader, BatchTransform(pre.input_size, pre.mean, pre.std)
