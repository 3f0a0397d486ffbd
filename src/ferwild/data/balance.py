"""Class-balancing augmentation of the training split (the study's Figure 1).

The training split is topped up per class to the largest class (or a target count) with
augmented copies of its own rows (``ferwild.data.augment``: flip, small rotation/scale,
colour/brightness jitter, blur, and occlusion patches). Blocks of augmented rows are seeded
from (seed, block number), so a rerun writes the same pixels. Validation and test are never
augmented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ferwild.config import check_count_or_choice


def parse_balance(value: str | int | None) -> str | int | None:
    """``"none"``/None -> None (no balancing), ``"max"`` -> largest class, an int -> target count."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in {"none", "off", "no", "false", "0"}:
        return None
    return check_count_or_choice(value, "balance ('none' turns it off)", ("max",))


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


def class_count_figure(before: Mapping[str, int], after: Mapping[str, int], path: str | os.PathLike,
                       title: str = "Training data per class, before and after balancing") -> None:
    """Bar chart of training class counts before/after augmentation (the study's Figure 1)."""
    from ferwild.plotting import save_figure, subplots

    classes = list(after) or list(before)
    x = np.arange(len(classes))
    fig, ax = subplots(figsize=(max(6, 1.1 * len(classes)), 4), dpi=100)
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
    ax.set_ylim(0, 1.25 * max(b + a + [1]))  # headroom so the legend never hides a bar
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
