"""Training: the study's recipe as a visible loop.

``fit`` reads like the torchvision references: build data, model, optimizer; then for each
epoch ``train_one_epoch`` and ``evaluate``; log a row to ``metrics.csv``; apply the learning-
rate rule; checkpoint. Everything a resumed run needs is in the checkpoint (a plain dict of
state, loadable with ``weights_only=True``, beside safetensors weights), so ``--resume`` after
``kill -9`` ends with the same metrics as an uninterrupted run (same seed, CPU).

Run directory::

    RUN_DIR/config.yaml            resolved configuration
    RUN_DIR/metrics.csv            one row per epoch (+ curves.png, metrics.md)
    RUN_DIR/checkpoints/LAST       name of the newest complete checkpoint folder
    RUN_DIR/checkpoints/BEST       name of the best (validation macro-F1) checkpoint folder
    RUN_DIR/checkpoints/<name>/    model.safetensors + state.pt

Under ``torchrun --nproc_per_node=N`` the same ``fit`` trains with DistributedDataParallel:
each rank reads its shard of every epoch's permutation, gradients are averaged by DDP, and
metrics are computed from confusion matrices summed across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn as nn

from ferwild.config import ConfigError, RunConfig
from ferwild.data.faces import FaceAlignment
from ferwild.data.loader import BatchTransform, CachedFaceDataset, EpochBatchSampler, make_loader
from ferwild.data.prepared import COL, PreparedDataset
from ferwild.data.votes import has_votes, soft_targets
from ferwild.files import save_text_atomic, set_default_mode
from ferwild.formatting import first_line
from ferwild.metrics import curves_figure, history_markdown
from ferwild.runs import (
    RunError,
    autocast_dtype,
    checkpoint_dir,
    load_checkpoint_state,
    load_weights,
    resolve_device,
    unwrap_model,
)

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc",
                  "val_macro_f1", "lr"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written and the run can be resumed."""


# --------------------------------------------------------------------------------------------
# small pieces


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Cross-entropy class weights from the training distribution.

    ``balanced``: w_c = n / (C * n_c) (scikit-learn's formula), computed over the rows the
    model trains on - including the balancing rows ``prepare`` added, so a fully balanced
    training split gets weights of 1 and a partly balanced one keeps a correction. ``sqrt``:
    the square root of those weights, a halfway correction that costs rare classes less
    accuracy on the common ones (FER2013's disgust is 1.5% of the faces).

    Raises:
        RunError: when a class has no training rows (its weight would be infinite).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if mode == "none":
        return torch.ones(num_classes)
    if (counts == 0).any():
        raise RunError(f"class id(s) {np.flatnonzero(counts == 0).tolist()} have no training rows")
    weights = counts.sum() / (num_classes * counts)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return torch.tensor(weights, dtype=torch.float32)


def build_optimizer(params, name: str, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """Adam (the study's), AdamW, SGD (momentum, optionally Nesterov) or RMSprop (momentum)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}")


class F1DropScheduler:
    """The study's rule: after an epoch, if validation macro-F1 fell by more than ``threshold``
    (relative) against the previous epoch, multiply the learning rate by ``factor``."""

    def __init__(self, optimizer: torch.optim.Optimizer, threshold: float = 0.10, factor: float = 0.8):
        self.optimizer, self.threshold, self.factor = optimizer, threshold, factor
        self.previous: float | None = None

    def step(self, val_macro_f1: float) -> bool:
        """Record this epoch's validation macro-F1; returns True when the rate was decayed."""
        decayed = self.previous is not None and val_macro_f1 < self.previous * (1 - self.threshold)
        if decayed:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor
        self.previous = val_macro_f1
        return decayed

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = state["previous"]


class EpochScheduler:
    """Cosine (to 0 over the run) or constant learning rate, set once per epoch, after an
    optional linear warm-up: epoch k (0-based) of E trains at ``base * (k + 1) / W`` while
    k < W, then at ``base * 0.5 * (1 + cos(pi * (k - W) / (E - W)))`` (cosine) or ``base``."""

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, epochs: int, warmup_epochs: int = 0):
        self.optimizer, self.kind, self.epochs = optimizer, kind, epochs
        self.warmup = min(int(warmup_epochs), max(epochs - 1, 0))
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.done = 0
        self._apply()

    def scale(self, epoch: int) -> float:
        """The learning-rate multiplier of (0-based) ``epoch``."""
        if epoch < self.warmup:
            return (epoch + 1) / self.warmup
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(epoch - self.warmup, span) / span))
        return 1.0

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * self.scale(self.done)

    def step(self, val_macro_f1: float | None = None) -> bool:
        self.done += 1
        self._apply()
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done, self.base = state["done"], list(state["base"])
        self._apply()


def confusion_matrix_torch(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = true class (cheap, reducible across ranks)."""
    flat = y_true.to(torch.int64) * num_classes + y_pred.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(confusion: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1) from a confusion matrix; classes absent from both sides count 0."""
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return 0.0, 0.0
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return float(tp.sum() / total), float(f1.mean())


# --------------------------------------------------------------------------------------------
# distributed helpers (no-ops on one process)


@dataclass
class Dist:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor across ranks (in place) and return it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), enabled=True)


# --------------------------------------------------------------------------------------------
# one epoch of training, one pass of evaluation


@dataclass
class EpochState:
    """Running sums of a (possibly interrupted) training epoch."""

    steps: int = 0
    loss_sum: float = 0.0
    count: int = 0
    confusion: torch.Tensor | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "loss_sum": self.loss_sum, "count": self.count,
                "confusion": self.confusion, "seconds": self.seconds}


def train_one_epoch(model: nn.Module, loader, transform: BatchTransform, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, *, num_classes: int, accum_steps: int = 1,
                    amp_dtype: torch.dtype | None = None, state: EpochState | None = None,
                    should_stop: Callable[[], bool] = lambda: False,
                    on_interrupt: Callable[[EpochState], None] | None = None,
                    batch_seed: Callable[[int], int] | None = None) -> EpochState:
    """Train over the loader's batches; one optimizer step every ``accum_steps`` micro-batches.

    Batches are ``(images, labels)`` or ``(images, labels, votes)``; with votes the loss is taken
    against the vote distributions (``nn.CrossEntropyLoss`` accepts class probabilities, with
    its class weights and label smoothing), while the confusion counts use the hard labels.

    ``batch_seed(i)`` (i = the micro-batch's index in the epoch) re-seeds the augmentation
    generator per batch, so a resumed epoch augments its remaining batches exactly as an
    uninterrupted one would, on any rank, with no generator state to carry.

    Raises:
        TrainingDiverged: on a NaN/inf loss (before the optimizer step, so weights stay finite).
        TrainingInterrupted: when ``should_stop()`` turns true at a step boundary (after
            ``on_interrupt(state)`` has checkpointed).
    """
    model.train()
    state = state or EpochState()
    if state.confusion is None:
        state.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    micro = 0
    first_index = state.steps * accum_steps  # micro-batches already done (a resumed epoch)
    for images, labels, *votes in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        # the loss fits the crowd's vote distribution when the loader carries one, else the label
        target = votes[0].to(device, non_blocking=True) if votes else labels
        if batch_seed is not None and transform.generator is not None:
            transform.generator.manual_seed(batch_seed(first_index + micro))
        inputs = transform(images)
        last_micro = (micro + 1) % accum_steps == 0
        sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(inputs)
                loss = loss_fn(logits.float(), target)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at step {state.steps + 1}")
            (loss / accum_steps).backward()
        micro += 1
        state.loss_sum += float(loss.detach()) * len(labels)
        state.count += len(labels)
        state.confusion += confusion_matrix_torch(labels.cpu(), logits.detach().argmax(1).cpu(), num_classes)
        if last_micro:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.steps += 1
            if should_stop():
                state.seconds += time.perf_counter() - t0
                if on_interrupt:
                    on_interrupt(state)
                raise TrainingInterrupted(f"stopped after step {state.steps}")
    if micro % accum_steps:
        # a last partial accumulation (epoch size not a multiple of the batch) still counts
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.steps += 1
    state.seconds += time.perf_counter() - t0
    return state


@torch.no_grad()
def evaluate(model: nn.Module, loader, transform: BatchTransform, loss_fn: nn.Module | None,
             device: torch.device, *, num_classes: int, amp_dtype: torch.dtype | None = None,
             keep_outputs: bool = False) -> dict[str, Any]:
    """Loss, confusion matrix and (optionally) per-sample probabilities over a loader.

    With ``(images, labels, votes)`` batches it also sums the cross-entropy to the vote
    distributions (``vote_ce_sum``) and the share of the crowd that voted for the predicted
    class (``vote_agreement_sum``), and keeps the votes with the outputs.
    """
    model.eval()
    loss_sum, count, vote_ce_sum, agreement_sum, saw_votes = 0.0, 0, 0.0, 0.0, False
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    probs, labels_out, votes_out = [], [], []
    for images, labels, *votes in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(transform(images)).float()
        if loss_fn is not None:
            loss_sum += float(loss_fn(logits, labels)) * len(labels)
        count += len(labels)
        predicted = logits.argmax(1)
        confusion += confusion_matrix_torch(labels.cpu(), predicted.cpu(), num_classes)
        if votes:
            saw_votes = True
            crowd = votes[0].to(device)
            vote_ce_sum += float(-(crowd * torch.log_softmax(logits, 1)).sum())
            agreement_sum += float(crowd.gather(1, predicted[:, None]).sum())
        if keep_outputs:
            probs.append(torch.softmax(logits, 1).cpu())
            labels_out.append(labels.cpu())
            if votes:
                votes_out.append(votes[0].cpu())
    out = {"loss_sum": loss_sum, "count": count, "confusion": confusion}
    if saw_votes:
        out.update(vote_ce_sum=vote_ce_sum, vote_agreement_sum=agreement_sum)
    if keep_outputs:
        out["probs"] = torch.cat(probs).numpy() if probs else np.zeros((0, num_classes), np.float32)
        out["labels"] = torch.cat(labels_out).numpy() if labels_out else np.zeros(0, np.int64)
        if votes_out:
            out["votes"] = torch.cat(votes_out).numpy()
    return out


# --------------------------------------------------------------------------------------------
# checkpoints


def _torch_rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(run_dir: Path, name: str, model: nn.Module, state: dict[str, Any],
                    *, pointers: tuple[str, ...] = ("LAST",)) -> Path:
    """Write ``checkpoints/<name>/`` (weights + state) then atomically point ``pointers`` at it."""
    from safetensors.torch import save_file

    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in unwrap_model(model).state_dict().items()}
    save_file(weights, tmp / "model.safetensors", metadata={"format": "pt", "ferwild": "1"})
    set_default_mode(tmp / "model.safetensors")
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for pointer in pointers:
        save_text_atomic(ckpt_root / pointer, name + "\n")
    # keep only what a pointer names
    live = {(ckpt_root / p).read_text().strip() for p in ("LAST", "BEST") if (ckpt_root / p).exists()}
    for child in ckpt_root.iterdir():
        if child.is_dir() and child.name not in live and not child.name.startswith("."):
            shutil.rmtree(child, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# the run


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next step boundary and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def prepare_run_dir(config: RunConfig, out_dir: Path, resume: bool) -> tuple[RunConfig, Path | None]:
    """Create/validate the run directory; returns the config to use and the checkpoint to resume."""
    saved = out_dir / "config.yaml"
    ckpt = None
    if (out_dir / "checkpoints" / "LAST").exists():
        if not resume:
            raise RunError(f"{out_dir} already holds a run; add --resume to continue it or choose another --out")
        previous = RunConfig.load(saved)
        # The same command must describe the same run; only the epoch budget may grow.
        mine, theirs = config.to_dict(), previous.to_dict()
        mine["train"]["epochs"] = theirs["train"]["epochs"] = 0
        if mine != theirs:
            diff = [f"{s}.{k}" for s in mine for k in mine[s] if mine[s][k] != theirs[s][k]]
            raise RunError(f"--resume with a different configuration than {saved} ({', '.join(diff)})")
        ckpt = checkpoint_dir(out_dir, "last")
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.yaml")
    return config, ckpt


@dataclass
class _TrainingData:
    """The prepared dataset's splits as the loop reads them."""

    label_names: list[str]
    face_alignment: dict[str, Any]   # travels with every checkpoint: inference cuts faces this way
    train_set: CachedFaceDataset
    val_set: CachedFaceDataset


def stratified_subset(rows: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """A fixed share of ``rows`` per class (at least one row of each), in manifest order.

    Drawn with its own seed, not the run's: every run of a study trains on the same faces, so
    seeds vary the training and nothing else.
    """
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(rows), dtype=bool)
    labels = rows[COL.label].astype(str).to_numpy()
    for label in sorted(set(labels)):
        where = np.flatnonzero(labels == label)
        keep[rng.choice(where, size=max(1, round(fraction * len(where))), replace=False)] = True
    return rows[keep]


def teacher_targets(teacher: str | os.PathLike, rows: pd.DataFrame, label_names: list[str],
                    weight: float) -> np.ndarray:
    """Distillation targets for ``rows``: ``weight`` x the teacher's probabilities + (1 - ``weight``)
    x the crowd's vote distribution (the one-hot label where a row has no votes).

    ``teacher`` is the ``predictions.parquet`` that ``ferwild evaluate TEACHER --split train``
    writes (``row_id`` and ``prob_<label>`` columns), so the teacher is any model ferwild can
    evaluate (an ensemble too) with its own TTA. Raises :class:`RunError` when the file is
    missing, has other labels, or lacks a training row.
    """
    path = Path(teacher)
    if not path.is_file():
        raise RunError(f"optim.teacher: no file {path} (write it with `ferwild evaluate TEACHER --data DATA "
                       "--split train --out DIR`: DIR/predictions.parquet)")
    frame = pd.read_parquet(path)
    columns = [f"prob_{n}" for n in label_names]
    missing = [c for c in [COL.row_id, *columns] if c not in frame.columns]
    if missing:
        raise RunError(f"optim.teacher {path} lacks columns {missing} (a predictions.parquet of a model with the "
                       f"labels {label_names}?)")
    probs = frame.set_index(COL.row_id)[columns].reindex(rows[COL.row_id].to_numpy())
    absent = int(probs.isna().any(axis=1).sum())
    if absent:
        raise RunError(f"optim.teacher {path} has no prediction for {absent} of the {len(rows)} training rows "
                       "(evaluated on another split or dataset? augmented rows have none: data.use_augmented_rows=false)")
    teacher_p = probs.to_numpy(np.float64, copy=True)
    teacher_p /= teacher_p.sum(1, keepdims=True)
    crowd = soft_targets(rows, label_names).astype(np.float64)
    return (weight * teacher_p + (1 - weight) * crowd).astype(np.float32)


def _load_training_data(config: RunConfig) -> _TrainingData:
    """Open the prepared dataset and its train/val splits, or fail with a one-line error."""
    if not config.data.path:
        raise ConfigError("no prepared dataset given (--data PREPARED_DIR or data.path)")
    try:
        prepared = PreparedDataset(config.data.path)
    except FileNotFoundError as exc:
        raise RunError(str(exc)) from None
    train_rows = prepared.rows(config.data.train_split, include_augmented=config.data.use_augmented_rows)
    if config.data.train_fraction < 1.0:
        train_rows = stratified_subset(train_rows, config.data.train_fraction)
    val_rows = prepared.rows(config.data.val_split)
    for split, rows in ((config.data.train_split, train_rows), (config.data.val_split, val_rows)):
        if rows.empty:
            raise RunError(f"split {split!r} of {config.data.path} is empty")
    fit_votes = config.optim.targets == "votes"
    if fit_votes and not has_votes(train_rows):
        raise RunError(f"optim.targets is votes but {config.data.path}'s split {config.data.train_split!r} has no "
                       "crowd votes (votes_* columns, e.g. FER+ prepared by `ferwild prepare`); use optim.targets=hard")
    targets = (teacher_targets(config.optim.teacher, train_rows, prepared.label_names, config.optim.teacher_weight)
               if config.optim.targets == "teacher" else None)
    try:
        train_set = CachedFaceDataset(prepared.root, train_rows, prepared.label_names, votes=fit_votes,
                                      targets=targets)
        # validation reports the crowd figures whenever the split has votes
        val_set = CachedFaceDataset(prepared.root, val_rows, prepared.label_names, votes=has_votes(val_rows))
    except ValueError as exc:
        raise RunError(f"{config.data.path}: {exc}") from None
    return _TrainingData(prepared.label_names, prepared.face_alignment().to_dict(), train_set, val_set)


def _batch_geometry(config: RunConfig, world_size: int, train_rows: int) -> tuple[int, int]:
    """``(micro_batch, accumulation_steps)``: global batch = micro x ranks x accumulation."""
    micro = config.train.micro_batch_size or max(1, config.train.batch_size // world_size)
    if config.train.batch_size % (micro * world_size):
        raise ConfigError(f"train.batch_size {config.train.batch_size} is not a multiple of "
                          f"micro-batch {micro} x {world_size} process(es)")
    if config.train.batch_size > train_rows:
        raise ConfigError(f"train.batch_size {config.train.batch_size} is larger than the training split "
                          f"({train_rows} rows); lower --batch-size")
    return micro, config.train.batch_size // (micro * world_size)


@dataclass
class _Trainer:
    """The model and everything that updates it, built from the config."""

    model: nn.Module
    loss_fn: nn.Module
    eval_loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any                   # F1DropScheduler | EpochScheduler
    train_tf: BatchTransform
    eval_tf: BatchTransform
    amp: torch.dtype | None


def load_pretrained_head(model: nn.Module, path: str | os.PathLike, label_names: list[str]) -> None:
    """Put the classification head of the ferwild checkpoint ``path`` (its ``model.safetensors``,
    ``state.json``/``state.pt`` beside it) into ``model`` (``model.pretrained_head``).

    Raises:
        ConfigError: not a ferwild checkpoint, no head in it, another label set or order, or
            another shape.
    """
    from safetensors.torch import load_file

    file = Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        raise ConfigError(f"model.pretrained_head needs model.pretrained to be a ferwild checkpoint's "
                          f"model.safetensors, not {str(path)!r}")
    head = {k[len("head."):]: v.float() for k, v in load_file(str(file)).items() if k.startswith("head.")}
    if not head:
        raise ConfigError(f"model.pretrained_head: {file} holds no head.* tensors")
    try:
        names = load_checkpoint_state(file.parent).get("label_names")
    except RunError:
        names = None
    if names is None:
        raise ConfigError(f"model.pretrained_head: nothing beside {file} says which class each output of its head "
                          "is (no state.json or state.pt)")
    if list(names) != list(label_names):
        raise ConfigError(f"model.pretrained_head: {file}'s head reads {list(names)}, this data's labels are "
                          f"{list(label_names)}")
    try:
        model.head.load_state_dict(head)
    except RuntimeError as exc:
        raise ConfigError(f"model.pretrained_head: {file}'s head does not fit {model.name}: {first_line(exc)}") from None


def _build_trainer(config: RunConfig, data: _TrainingData, device: torch.device) -> _Trainer:
    """Model (seeded), class-weighted loss, optimizer, learning-rate rule and batch transforms."""
    from ferwild.models import create_model

    num_classes = len(data.label_names)
    torch.manual_seed(config.train.seed)
    try:
        model = create_model(config.model.name, num_classes, pretrained=config.model.pretrained,
                             image_size=config.model.image_size, id2label=dict(enumerate(data.label_names)))
    except ValueError as exc:  # e.g. an image size a ViT's patch size does not divide
        raise ConfigError(str(exc)) from None
    if config.model.pretrained_head:
        load_pretrained_head(model, config.model.pretrained, data.label_names)
    if config.model.freeze_backbone:
        model.freeze_backbone(True)
    model.to(device)
    pre = model.preprocessing
    weights = class_weights(data.train_set.labels.numpy(), num_classes, config.optim.class_weights).to(device)
    if config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.optim.optimizer,
                                config.optim.lr, config.optim.momentum, config.optim.weight_decay,
                                nesterov=config.optim.nesterov)
    scheduler = (F1DropScheduler(optimizer, config.optim.f1_drop_threshold, config.optim.f1_drop_factor)
                 if config.optim.scheduler == "f1_drop"
                 else EpochScheduler(optimizer, config.optim.scheduler, config.train.epochs,
                                     config.optim.warmup_epochs))
    augment_gen = torch.Generator(device=device)  # re-seeded per batch (see train_one_epoch)
    layout = torch.channels_last if config.train.channels_last else None
    augment = config.data.augment_config() if config.data.augment else None
    if augment is not None and augment.occlude_p > 0 and augment.occlude_points is None:
        # face-shaped occluders go where this dataset's crops put the landmarks
        alignment = FaceAlignment.from_dict(data.face_alignment)
        augment = dataclasses.replace(augment, occlude_points=tuple(map(tuple, alignment.points(1).tolist())))
    train_tf = BatchTransform(pre.input_size, pre.mean, pre.std, train=config.data.augment, augment=augment,
                              generator=augment_gen, memory_format=layout)
    return _Trainer(model, nn.CrossEntropyLoss(weight=weights, label_smoothing=config.optim.label_smoothing),
                    nn.CrossEntropyLoss(), optimizer, scheduler, train_tf,
                    BatchTransform(pre.input_size, pre.mean, pre.std, memory_format=layout),
                    autocast_dtype(config.train.precision, device))


def _resume_from(ckpt: Path, trainer: _Trainer) -> tuple[int, list[dict[str, Any]], float, dict | None]:
    """Load a checkpoint into the trainer; returns ``(start_epoch, history, best_val_f1, partial_epoch)``."""
    state = load_checkpoint_state(ckpt)
    load_weights(trainer.model, ckpt)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["epoch"], list(state["history"]), state["best_val_macro_f1"], state.get("partial_epoch")


def _validate(model: nn.Module, val_set, t: _Trainer, config: RunConfig, ddp, device: torch.device,
              num_classes: int) -> tuple[float, float, float, int, dict[str, float]]:
    """Validation loss, accuracy, macro-F1, row count and (with votes) the crowd figures
    (cross-entropy to the votes, share of the crowd agreeing), summed over every rank.

    Each rank evaluates a disjoint slice of the validation rows (no padding), so the metrics
    are exact whatever the number of ranks.
    """
    if ddp.enabled:
        sampler = _ShardedEvalSampler(len(val_set), config.train.eval_batch_size, ddp.rank, ddp.world_size)
    else:
        sampler = EpochBatchSampler(len(val_set), config.train.eval_batch_size, shuffle=False)
    val = evaluate(model, make_loader(val_set, sampler), t.eval_tf, t.eval_loss_fn, device,
                   num_classes=num_classes, amp_dtype=t.amp)
    sums = ddp.all_reduce(torch.tensor([val["loss_sum"], val["count"], val.get("vote_ce_sum", 0.0),
                                        val.get("vote_agreement_sum", 0.0)], dtype=torch.float64))
    accuracy, macro_f1 = metrics_from_confusion(ddp.all_reduce(val["confusion"].clone()))
    n = max(float(sums[1]), 1.0)
    crowd = ({"val_vote_ce": float(sums[2]) / n, "val_vote_agreement": float(sums[3]) / n}
             if val_set.votes is not None else {})
    return float(sums[0]) / n, accuracy, macro_f1, int(sums[1]), crowd


def _open_run_dir(config: RunConfig, out: Path, resume: bool, ddp: Dist) -> tuple[RunConfig, Path | None]:
    """The main rank writes (or checks, on ``resume``) the run folder; every rank gets the
    checkpoint to resume from, if any."""
    ckpt = None
    if ddp.is_main:
        config, ckpt = prepare_run_dir(config, out, resume)
    ddp.barrier()
    if not ddp.is_main:
        ckpt = checkpoint_dir(out, "last") if (out / "checkpoints" / "LAST").exists() and resume else None
    return config, ckpt


def _epoch_loader(train_set, config: RunConfig, ddp: Dist, device: torch.device, *, micro: int, epoch: int,
                  skip: int):
    """This rank's shuffled micro-batches of ``epoch`` (the first ``skip`` left out)."""
    sampler = EpochBatchSampler(len(train_set), micro, seed=config.train.seed, epoch=epoch,
                                rank=ddp.rank, world_size=ddp.world_size, skip_batches=skip,
                                max_batches=config.train.max_train_batches)
    return make_loader(train_set, sampler, config.data.num_workers, pin_memory=device.type == "cuda")


def _checkpoint_state(epoch: int, partial: EpochState | None, *, history: list[dict[str, Any]], best_f1: float,
                      t: _Trainer, model: nn.Module, data: _TrainingData, config: RunConfig) -> dict[str, Any]:
    """What a checkpoint holds besides the weights: enough to resume exactly (optimizer, rule,
    RNG, a partial epoch) and to run inference (model config, labels, face alignment)."""
    return {"epoch": epoch, "history": history, "best_val_macro_f1": best_f1,
            "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
            "rng": _torch_rng_state(),
            "partial_epoch": partial.to_dict() if partial else None,
            "model_config": unwrap_model(model).config(), "label_names": data.label_names,
            "face_alignment": data.face_alignment, "config": config.to_dict()}


def _train_figures(epoch_state: EpochState, ddp: Dist) -> dict[str, float]:
    """The epoch's training loss, accuracy, macro-F1 and images/s, summed over every rank."""
    sums = ddp.all_reduce(torch.tensor([epoch_state.loss_sum, epoch_state.count], dtype=torch.float64))
    train_acc, train_f1 = metrics_from_confusion(ddp.all_reduce(epoch_state.confusion.clone()))
    return {"train_loss": float(sums[0] / max(sums[1], 1)), "train_acc": train_acc, "train_macro_f1": train_f1,
            "train_img_per_s": float(sums[1]) / max(epoch_state.seconds, 1e-9) if epoch_state.seconds else 0.0}


def _epoch_line(row: dict[str, Any], epochs: int, decayed: bool) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.3f} F1 {row['train_macro_f1']:.3f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.3f} F1 {row['val_macro_f1']:.3f} | lr {row['lr']:.2e}"
            f"{' -> decayed' if decayed else ''} | {row['train_img_per_s']:.0f} img/s")


def fit(config: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (see the module docstring); returns the final summary.

    Setup (data, batch geometry, model and optimizer, run folder, resume), validation and the
    checkpoint's contents are in the helpers above; the epoch loop stays here, whole, so that one
    read shows what an epoch does (train, reduce across ranks, validate, step the learning-rate
    rule, checkpoint, log).

    Raises:
        RunError / ConfigError: user mistakes (missing data, mismatched labels, ...).
        TrainingDiverged: NaN/inf loss. TrainingInterrupted: SIGINT/SIGTERM (checkpointed).
    """
    out = Path(out_dir)
    device = resolve_device(config.train.device)
    # nothing is written before the data, model and optimizer are checked: a failed start leaves no run folder
    data = _load_training_data(config)
    ddp = init_distributed(device)
    train_set, val_set, num_classes = data.train_set, data.val_set, len(data.label_names)
    micro, accum_steps = _batch_geometry(config, ddp.world_size, len(train_set))
    t = _build_trainer(config, data, device)
    config, ckpt = _open_run_dir(config, out, resume, ddp)
    start_epoch, history, best_f1, partial = _resume_from(ckpt, t) if ckpt is not None else (0, [], -1.0, None)
    if ddp.is_main and ckpt is not None:
        log(f"resuming {out} from epoch {start_epoch}" + (f", step {partial['steps']}" if partial else ""))
    model = t.model
    if ddp.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint_state(epoch: int, partial_state: EpochState | None) -> dict[str, Any]:
        return _checkpoint_state(epoch, partial_state, history=history, best_f1=best_f1, t=t, model=model,
                                 data=data, config=config)

    if ddp.is_main:
        log(f"training {config.model.name} on {len(train_set)} rows ({len(val_set)} val), "
            f"{num_classes} classes, batch {config.train.batch_size} = {micro} x {ddp.world_size} rank(s) "
            f"x {accum_steps} accumulation, device {device}")

    with _StopFlag() as stop:
        for epoch in range(start_epoch, config.train.epochs):
            # a resumed run finishes its interrupted epoch first, skipping the batches it has seen
            epoch_state = EpochState(**partial) if partial is not None else None
            skip = epoch_state.steps * accum_steps if epoch_state is not None else 0
            partial = None
            loader = _epoch_loader(train_set, config, ddp, device, micro=micro, epoch=epoch, skip=skip)

            def on_interrupt(s: EpochState, epoch=epoch) -> None:
                if ddp.is_main:
                    save_checkpoint(out, f"epoch-{epoch:03d}-step-{s.steps:06d}", model, checkpoint_state(epoch, s))
                    log(f"interrupted: checkpoint written at epoch {epoch + 1}, step {s.steps}; rerun with --resume")

            epoch_state = train_one_epoch(model, loader, t.train_tf, t.optimizer, t.loss_fn, device,
                                          num_classes=num_classes, accum_steps=accum_steps, amp_dtype=t.amp,
                                          state=epoch_state, should_stop=lambda: stop.requested,
                                          on_interrupt=on_interrupt,
                                          batch_seed=lambda i, e=epoch: _batch_seed(config.train.seed, e, ddp.rank, i))
            train = _train_figures(epoch_state, ddp)  # summed over every rank
            val_loss, val_acc, val_f1, val_count, val_crowd = _validate(model, val_set, t, config, ddp, device,
                                                                        num_classes)
            row = {"epoch": epoch + 1, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
                   "train_macro_f1": train["train_macro_f1"], "val_loss": val_loss, "val_acc": val_acc,
                   "val_macro_f1": val_f1, "lr": t.optimizer.param_groups[0]["lr"], "val_count": val_count,
                   **val_crowd, "train_img_per_s": train["train_img_per_s"]}
            history.append(row)
            decayed = t.scheduler.step(val_f1)
            improved = val_f1 > best_f1
            best_f1 = max(best_f1, val_f1)
            if ddp.is_main:
                save_checkpoint(out, f"epoch-{epoch + 1:03d}", model, checkpoint_state(epoch + 1, None),
                                pointers=("LAST", "BEST") if improved else ("LAST",))
                write_history(out, history)
                log(_epoch_line(row, config.train.epochs, decayed))
            ddp.barrier()
    return _finish(out, history, best_f1, data, ddp)


def _finish(out: Path, history: list[dict[str, Any]], best_f1: float, data: _TrainingData, ddp: Dist) -> dict[str, Any]:
    """The run's summary (``train_summary.json``, written by the main rank); leaves the process group."""
    summary = {"epochs": len(history), "best_val_macro_f1": best_f1, "history": history,
               "train_rows": len(data.train_set), "val_rows": len(data.val_set),
               "run_dir": str(out), "label_names": data.label_names}
    if ddp.is_main:
        save_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    if ddp.enabled:
        # leave together: a rank that tears gloo down while the other is still writing its files
        # was seen to abort ("terminate called without an active exception") on a loaded machine
        ddp.barrier()
        dist.destroy_process_group()
    return summary


def _batch_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, index]).generate_state(1)[0])


class _ShardedEvalSampler(EpochBatchSampler):
    """Disjoint, unpadded slices of an evaluation set per rank."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int):
        super().__init__(n, batch_size, shuffle=False)
        self.shard, self.n_shards = rank, world_size

    def _indices(self) -> np.ndarray:
        return np.arange(self.n)[self.shard::self.n_shards]


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv (the contract's columns first), its Markdown twin, and the curves figure."""
    frame = pd.DataFrame(history)
    columns = METRIC_COLUMNS + [c for c in frame.columns if c not in METRIC_COLUMNS]
    frame = frame[columns]
    save_text_atomic(run_dir / "metrics.csv", frame.to_csv(index=False))
    save_text_atomic(run_dir / "metrics.md", history_markdown(frame) + "\n")
    curves_figure(frame, run_dir / "curves.png", title=f"{run_dir.name}: training curves")
