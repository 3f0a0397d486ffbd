"""Train/val/test splitting: stratified by class, optionally grouped (no group crosses splits).

Two strategies:

* :func:`stratified_split` cuts every class separately at its rounded cumulative ratio
  boundaries, so each split holds each class's target share to within one row.
* :func:`group_split` keeps every group (a subject, a video, a source photo) inside one split,
  which is what stops identity leakage between train and test; class shares are then kept
  close to target by a greedy assignment.

:func:`assign_splits` runs either and returns a :class:`SplitReport` saying how close the result
came to the target. :func:`source_split_from_names` recovers the split a dataset's authors chose
(FER2013's ``Training_``/``PublicTest_``/``PrivateTest_`` files or ``train/``/``test/`` folders).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")

__all__ = [
    "SPLITS",
    "SplitReport",
    "assign_splits",
    "group_split",
    "parse_ratios",
    "source_split_from_names",
    "stratified_split",
]


# --------------------------------------------------------------------------------------------
# ratios


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``"train,val,test"`` ratios into a normalised ``(train, val, test)`` tuple.

    Accepts fractions (``"0.7,0.2,0.1"``) or any other scale (``"70,20,10"``): the three values
    are divided by their sum. A zero ratio for val or test is allowed (that split stays empty);
    train must get a positive share, because a model needs something to learn from.

    Raises:
        ValueError: on anything but three finite, non-negative numbers with a positive sum and a
            positive train share.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or any(p == "" for p in parts):
        raise ValueError(
            f"split ratios must be three comma-separated numbers train,val,test "
            f"(e.g. '0.7,0.2,0.1' or '70,20,10'); got {text!r}"
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"split ratios must be numbers; got {text!r}") from None
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"split ratios must be finite numbers; got {text!r}")
    if any(v < 0 for v in values):
        raise ValueError(f"split ratios must not be negative; got {text!r}")
    total = sum(values)
    if total <= 0:
        raise ValueError(f"split ratios must not all be zero; got {text!r}")
    if values[0] <= 0:
        raise ValueError(f"the train ratio must be positive; got {text!r}")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _normalise_ratios(ratios: Sequence[float]) -> np.ndarray:
    """Validate a ratio triple given as numbers (not text) and scale it to sum to 1."""
    r = np.asarray(ratios, dtype=float).reshape(-1)
    if r.shape != (3,):
        raise ValueError(f"ratios must be three numbers (train, val, test); got {ratios!r}")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"ratios must be finite and non-negative; got {ratios!r}")
    if r.sum() <= 0:
        raise ValueError(f"ratios must not all be zero; got {ratios!r}")
    if r[0] <= 0:
        raise ValueError(f"the train ratio must be positive; got {ratios!r}")
    return r / r.sum()


def _encode_labels(labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Return (class names sorted, class code per row).

    Labels are compared as strings so that mixed inputs (ints, numpy scalars, str) sort the same
    way every run: the sorted order fixes the order in which the shared RNG is consumed.
    """
    arr = np.asarray(labels, dtype=object).reshape(-1).astype(str)
    classes, codes = np.unique(arr, return_inverse=True)
    return classes, codes.reshape(-1)


# --------------------------------------------------------------------------------------------
# stratified (no groups)


def _cut_counts(n: int, ratios: np.ndarray) -> np.ndarray:
    """Rows per split for a class of ``n`` rows: rounded cumulative boundaries.

    Rounding the cumulative boundaries (not each split separately) makes the counts add up to
    ``n`` and keeps every split within one row of ``ratio * n``. Round-half-up rather than
    numpy's round-half-even, so the result does not flip between odd and even class sizes.
    """
    bounds = np.floor(np.cumsum(ratios) * n + 0.5).astype(np.int64)
    bounds = np.minimum(bounds, n)
    bounds[-1] = n  # the float sum of the ratios can land a hair under 1
    # A class with a member always puts one in train: a class the model never sees in training
    # is useless to evaluate, and for n >= 1 this keeps train within one row of its target.
    if n >= 1 and bounds[0] < 1:
        bounds = np.maximum(bounds, 1)
    return np.diff(np.concatenate([[0], bounds]))


def stratified_split(
    labels: Sequence[str], ratios: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 0
) -> np.ndarray:
    """Assign each row to ``"train"``/``"val"``/``"test"`` so every class follows the ratios.

    Each class (in sorted order, drawing from a single ``np.random.default_rng(seed)``, so the
    result is a pure function of labels and seed) is permuted and cut at its rounded cumulative
    boundaries: every split gets each class's target count to within one row. Classes of one or
    two rows still work (their single row goes to train).

    Returns:
        An object array of split names, one per row.
    """
    r = _normalise_ratios(ratios)
    classes, codes = _encode_labels(labels)
    out = np.empty(len(codes), dtype=object)
    rng = np.random.default_rng(seed)
    # Stable sort groups each class's row indices together, in row order, in one pass.
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(classes) + 1))
    for c in range(len(classes)):
        rows = order[starts[c] : starts[c + 1]]
        rows = rows[rng.permutation(len(rows))]
        counts = _cut_counts(len(rows), r)
        out[rows] = np.repeat(np.array(SPLITS, dtype=object), counts)
    return out


# --------------------------------------------------------------------------------------------
# grouped


def _encode_groups(groups: Sequence, n: int) -> np.ndarray:
    """Group code per row; a missing group (None/NaN) makes the row a group of its own.

    Rows without a known group (no subject id, say) cannot leak through a group we do not know,
    so treating each as a singleton is the only assumption that does not invent a link.
    """
    g = np.asarray(groups, dtype=object).reshape(-1)
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries but labels has {n}")
    codes, uniques = pd.factorize(pd.Series(g, dtype=object), use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64)
    missing = codes < 0
    if missing.any():
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes


def group_split(
    labels: Sequence[str],
    groups: Sequence,
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Assign whole groups to splits so no group crosses splits and class shares stay on target.

    Groups are shuffled with ``np.random.default_rng(seed)`` and then taken largest first (a
    stable sort, so equal-sized groups keep the shuffled order): big groups are placed while
    there is still room for them, small ones fine-tune the balance at the end. Each group goes
    to the split whose per-class counts then sit closest to the target counts
    ``target[s, c] = ratio[s] * total[c]``, measured as the increase in the squared error
    ``sum_c ((count[s, c] - target[s, c]) / total[c]) ** 2``. Scaling by the class total makes
    the error a difference of class *shares*, so a small class counts as much as a big one
    (otherwise the largest class would dominate the cost and the rarest drift furthest).
    Ties go to the split most below its overall row target. A split with ratio 0 gets nothing.

    Rows whose group is None/NaN are each their own group. The loop runs once per group with
    vector arithmetic over the (split x class) table only, so 100k rows in 10k groups take well
    under a second.

    Returns:
        An object array of split names, one per row.
    """
    r = _normalise_ratios(ratios)
    classes, ccodes = _encode_labels(labels)
    n = len(ccodes)
    gcodes = _encode_groups(groups, n)
    if n == 0:
        return np.empty(0, dtype=object)
    n_groups = int(gcodes.max()) + 1
    n_classes = len(classes)

    # Group x class count table, built in one bincount.
    table = np.bincount(gcodes * n_classes + ccodes, minlength=n_groups * n_classes)
    table = table.reshape(n_groups, n_classes).astype(float)
    sizes = table.sum(axis=1)
    class_totals = table.sum(axis=0)

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n_groups)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]

    target = r[:, None] * class_totals[None, :]  # split x class
    weight = 1.0 / np.maximum(class_totals, 1.0) ** 2  # per class: count error -> share error
    row_target = r * n
    allowed = r > 0
    counts = np.zeros_like(target)
    row_counts = np.zeros(len(SPLITS))
    group_split_id = np.empty(n_groups, dtype=np.int64)
    # Costs this close count as a tie (floating noise, not a real preference).
    tie_eps = 1e-12

    for g in order:
        v = table[g]
        # Increase in weighted squared error if this group joins split s:
        #   sum_c w_c * ((C + v - T)^2 - (C - T)^2) = sum_c w_c * v * (2 (C - T) + v)
        delta = ((2.0 * (counts - target) + v) * v * weight).sum(axis=1)
        delta[~allowed] = np.inf
        best = delta.min()
        tied = np.flatnonzero(delta <= best + tie_eps * max(1.0, abs(best)))
        if len(tied) > 1:
            s = tied[np.argmax(row_target[tied] - row_counts[tied])]
        else:
            s = tied[0]
        counts[s] += v
        row_counts[s] += sizes[g]
        group_split_id[g] = s

    return np.array(SPLITS, dtype=object)[group_split_id[gcodes]]


# --------------------------------------------------------------------------------------------
# report


@dataclass
class SplitReport:
    """How close a split came to its target class proportions.

    Attributes:
        target: split -> ratio.
        counts: split -> class -> rows.
        proportion_deviation: split -> class -> (share of that class's rows in the split) minus
            the split's target ratio.
        max_abs_deviation: largest absolute value in ``proportion_deviation``.
        grouped_by: the column the groups came from, or None for a plain stratified split.
        n_groups: number of groups (rows without a group count one each), or None.
    """

    target: dict[str, float]
    counts: dict[str, dict[str, int]]
    proportion_deviation: dict[str, dict[str, float]]
    max_abs_deviation: float
    grouped_by: str | None
    n_groups: int | None

    def to_dict(self) -> dict:
        """Plain, JSON-serialisable dict of every field."""
        return asdict(self)


def _build_report(
    labels: Sequence,
    splits: np.ndarray,
    ratios: np.ndarray,
    grouped_by: str | None,
    n_groups: int | None,
) -> SplitReport:
    classes, codes = _encode_labels(labels)
    split_codes = pd.Categorical(np.asarray(splits, dtype=object), categories=SPLITS).codes
    table = np.zeros((len(SPLITS), len(classes)), dtype=np.int64)
    known = split_codes >= 0
    np.add.at(table, (split_codes[known], codes[known]), 1)
    totals = table.sum(axis=0)
    share = table / np.maximum(totals, 1)[None, :]
    dev = share - ratios[:, None]
    counts = {
        s: {str(c): int(table[i, k]) for k, c in enumerate(classes)} for i, s in enumerate(SPLITS)
    }
    deviation = {
        s: {str(c): float(dev[i, k]) for k, c in enumerate(classes)} for i, s in enumerate(SPLITS)
    }
    return SplitReport(
        target={s: float(ratios[i]) for i, s in enumerate(SPLITS)},
        counts=counts,
        proportion_deviation=deviation,
        max_abs_deviation=float(np.abs(dev).max()) if dev.size else 0.0,
        grouped_by=grouped_by,
        n_groups=n_groups,
    )


def assign_splits(
    labels: Sequence[str],
    ratios: Sequence[float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    groups: Sequence | None = None,
    group_name: str | None = None,
) -> tuple[np.ndarray, SplitReport]:
    """Split rows (grouped when ``groups`` is given, else stratified) and report the balance.

    Args:
        labels: class per row.
        ratios: train/val/test ratios (normalised by their sum).
        seed: RNG seed; the split is a pure function of the inputs and the seed.
        groups: optional group per row (subject, video, ...); None/NaN rows are singletons.
        group_name: name of the column ``groups`` came from, recorded in the report
            (``"group"`` when groups are given without a name).

    Returns:
        (split name per row, :class:`SplitReport`).
    """
    r = _normalise_ratios(ratios)
    if groups is None:
        splits = stratified_split(labels, r, seed)
        return splits, _build_report(labels, splits, r, None, None)
    splits = group_split(labels, groups, r, seed)
    n_groups = int(_encode_groups(groups, len(splits)).max() + 1) if len(splits) else 0
    return splits, _build_report(labels, splits, r, group_name or "group", n_groups)


# --------------------------------------------------------------------------------------------
# splits encoded in file names / folders

_PREFIXES = (("training_", "train"), ("publictest_", "val"), ("privatetest_", "test"))
_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_SEP = re.compile(r"[\\/]+")


def _source_split(path: str) -> str:
    parts = [p for p in _SEP.split(str(path)) if p]
    if not parts:
        return ""
    name = parts[-1].lower()
    # FER2013 file prefixes win: its test/ folder holds both PublicTest (val) and PrivateTest.
    for prefix, split in _PREFIXES:
        if name.startswith(prefix):
            return split
    # The folder nearest the file wins, so a split folder beats an unrelated "dev"/"test"
    # higher up (e.g. /home/dev/data/train/x.jpg is train).
    for folder in reversed(parts[:-1]):
        split = _FOLDERS.get(folder.lower())
        if split is not None:
            return split
    return ""


def source_split_from_names(paths: Sequence[str]) -> np.ndarray:
    """Recover the split a dataset's layout encodes, per path (``""`` when it encodes none).

    File-name prefixes (FER2013): ``Training_`` -> train, ``PublicTest_`` -> val,
    ``PrivateTest_`` -> test. Otherwise the nearest parent folder named ``train``/``training``
    -> train, ``val``/``valid``/``validation``/``dev`` -> val, ``test``/``testing`` -> test.
    Prefixes win over folders, so ``test/PublicTest_1.jpg`` is val. Matching ignores case and
    accepts both ``/`` and ``\\`` separators.

    Returns:
        An object array of ``"train"``/``"val"``/``"test"``/``""``, one per path.
    """
    return np.array([_source_split(p) for p in paths], dtype=object)
