"""Class-balancing augmentation of the training split (the study's Figure 1).

The training split is topped up per class to the largest class (or a target count) with
augmented copies of its own rows: flip, small rotation/scale, colour/brightness jitter, blur,
and random erasing patches that imitate occlusion. Each augmented image is produced from a
seed derived from (seed, new-row index), so a rerun writes the same pixels. Validation and
test are never augmented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np


def parse_balance(value: str | int | None) -> str | int | None:
    """``"none"``/None -> None (no balancing), ``"max"`` -> largest class, an int -> target count."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in {"none", "off", "no", "false", "0"}:
        return None
    if text == "max":
        return "max"
    try:
        target = int(text)
    except ValueError:
        raise ValueError(f"--balance must be 'max', 'none' or a count, not {value!r}") from None
    if target < 1:
        raise ValueError("--balance count must be positive")
    return target


def balance_plan(labels: Sequence[str], target: str | int, seed: int = 0) -> list[tuple[int, int]]:
    """Plan the augmented rows that bring every class up to ``target``.

    Args:
        labels: the label of each training row (positions index this sequence).
        target: ``"max"`` (the largest class's count) or a count. Classes already at or above
            the target get no new rows (balancing never removes data).
        seed: shuffles which source rows are reused first.

    Returns:
        ``[(source_position, copy_number), ...]``: sources are cycled through in a seeded
        random order so every source row is used about equally often.
    """
    labels = np.asarray(labels, dtype=object)
    classes, counts = np.unique(labels, return_counts=True)
    goal = int(counts.max()) if target == "max" else int(target)
    rng = np.random.default_rng(seed)
    plan: list[tuple[int, int]] = []
    for cls, count in zip(classes, counts):
        need = goal - int(count)
        if need <= 0:
            continue
        members = np.flatnonzero(labels == cls)
        order = rng.permutation(members)
        for k in range(need):
            plan.append((int(order[k % len(order)]), k // len(order) + 1))
    return plan


def make_augmenter():
    """The augmentation used for balancing (torchvision v2, on uint8 CHW tensors)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomAffine(degrees=10, scale=(0.9, 1.1), translate=(0.05, 0.05)),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.2))], p=0.3),
        # Erasing works on float images; occlusion patches imitate hands/objects on faces.
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomErasing(p=0.3, scale=(0.02, 0.12), ratio=(0.5, 2.0), value=0.0),
        v2.ToDtype(torch.uint8, scale=True),
    ])


def augment_images(images: Sequence[np.ndarray], seeds: Sequence[int], augmenter=None) -> np.ndarray:
    """Augment each (H, W, C) uint8 image with its own seed; returns an (N, H, W, C) uint8 array."""
    import torch

    augmenter = augmenter or make_augmenter()
    out = []
    for image, seed in zip(images, seeds):
        torch.manual_seed(int(seed))
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
        if tensor.shape[0] == 1:
            # ColorJitter's saturation needs 3 channels; grey images stay grey.
            tensor = augmenter(tensor.expand(3, -1, -1).contiguous())[:1]
        else:
            tensor = augmenter(tensor)
        out.append(tensor.permute(1, 2, 0).numpy())
    return np.stack(out) if out else np.zeros((0,) + tuple(images[0].shape), np.uint8)


def class_count_figure(before: Mapping[str, int], after: Mapping[str, int], path: str | os.PathLike,
                       title: str = "Training data per class, before and after balancing") -> None:
    """Bar chart of training class counts before/after augmentation (the study's Figure 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(after) or list(before)
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(classes)), 4))
    b = [before.get(c, 0) for c in classes]
    a = [after.get(c, 0) for c in classes]
    ax.bar(x - 0.2, b, 0.4, label="original", color="#4c72b0")
    ax.bar(x + 0.2, a, 0.4, label="after augmentation", color="#dd8452")
    for xi, (bi, ai) in enumerate(zip(b, a)):
        ax.text(xi - 0.2, bi, str(bi), ha="center", va="bottom", fontsize=7)
        ax.text(xi + 0.2, ai, str(ai), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, classes, rotation=20)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
