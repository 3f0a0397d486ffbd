"""Tests for ferwild.data.split: ratio parsing, stratified and grouped splits, source splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferwild.data.split import (
    SPLITS,
    SplitReport,
    assign_splits,
    group_split,
    parse_ratios,
    source_split_from_names,
    stratified_split,
)

CLASSES = np.array(["anger", "disgust", "fear", "happiness", "sadness", "surprise"])


def _imbalanced_labels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return CLASSES[rng.choice(len(CLASSES), size=n, p=[0.35, 0.02, 0.13, 0.3, 0.15, 0.05])]


def _grouped_set(n_rows: int, n_groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic faces: groups (subjects) of very different sizes, each with its own class mix.

    Group sizes are geometric (many small, a few large), and each group draws its labels from
    its own Dirichlet mix around imbalanced global shares, so classes cluster within groups as
    they do in real per-subject data - the case where a naive group split drifts off target.
    """
    rng = np.random.default_rng(seed)
    base = np.array([0.35, 0.02, 0.13, 0.3, 0.15, 0.05])
    weights = rng.geometric(1.0 / (n_rows / n_groups), size=n_groups).astype(float)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n_rows)).astype(int)
    sizes[np.argmax(sizes)] += n_rows - sizes.sum()  # exact total
    assert sizes.min() >= 1 and sizes.sum() == n_rows
    groups = np.repeat(np.arange(n_groups), sizes)
    mixes = rng.dirichlet(base * 8, size=n_groups)
    cum = mixes.cumsum(axis=1)[groups]
    labels_idx = (rng.random(n_rows)[:, None] > cum).sum(axis=1).clip(0, len(CLASSES) - 1)
    return CLASSES[labels_idx], groups


# ---------------------------------------------------------------------------------------------
# parse_ratios


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.7,0.2,0.1", (0.7, 0.2, 0.1)),
        ("70,20,10", (0.7, 0.2, 0.1)),
        (" 8 , 1 , 1 ", (0.8, 0.1, 0.1)),
        ("0.8,0.2,0", (0.8, 0.2, 0.0)),
        ("1,0,0", (1.0, 0.0, 0.0)),
    ],
)
def test_parse_ratios_good(text, expected):
    got = parse_ratios(text)
    assert len(got) == 3
    assert got == pytest.approx(expected)
    assert sum(got) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.7,0.3", "three"),
        ("0.5,0.2,0.2,0.1", "three"),
        ("0.7,,0.3", "three"),
        ("0.7,-0.1,0.4", "negative"),
        ("0,0,0", "zero"),
        ("a,b,c", "numbers"),
        ("0.7,nan,0.1", "finite"),
        ("0,0.5,0.5", "train"),
    ],
)
def test_parse_ratios_bad(text, message):
    with pytest.raises(ValueError, match=message):
        parse_ratios(text)


# ---------------------------------------------------------------------------------------------
# stratified_split


@pytest.mark.parametrize("ratios", [(0.7, 0.2, 0.1), (0.8, 0.1, 0.1), (0.6, 0.4, 0.0)])
def test_stratified_proportions_within_one_row(ratios):
    labels = _imbalanced_labels(3001, seed=3)
    splits = stratified_split(labels, ratios, seed=1)
    assert set(splits) <= set(SPLITS)
    for cls in np.unique(labels):
        n = int((labels == cls).sum())
        for s, r in zip(SPLITS, ratios):
            got = int(((labels == cls) & (splits == s)).sum())
            assert abs(got - r * n) <= 1.0, (cls, s, got, r * n)


def test_stratified_zero_ratio_split_is_empty():
    labels = _imbalanced_labels(500)
    splits = stratified_split(labels, (0.8, 0.2, 0.0), seed=0)
    assert not (splits == "test").any()
    assert (splits == "val").any() and (splits == "train").any()


def test_stratified_deterministic_by_seed():
    labels = _imbalanced_labels(2000, seed=5)
    a = stratified_split(labels, seed=7)
    b = stratified_split(list(labels), seed=7)
    c = stratified_split(labels, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stratified_tiny_classes():
    labels = ["solo"] + ["pair"] * 2 + ["trio"] * 3 + ["big"] * 20
    splits = stratified_split(labels, (0.7, 0.2, 0.1), seed=0)
    labels = np.array(labels)
    assert len(splits) == len(labels)
    # Every class keeps at least one training row, and nothing is lost.
    for cls in ("solo", "pair", "trio", "big"):
        assert (splits[labels == cls] == "train").sum() >= 1
    assert splits[labels == "solo"].tolist() == ["train"]
    pair = sorted(splits[labels == "pair"].tolist())
    assert pair in (["train", "val"], ["train", "train"])
    # Train share small enough that plain rounding would give it no row: still one.
    one = stratified_split(["x"], (0.3, 0.4, 0.3), seed=0)
    assert one.tolist() == ["train"]
    assert stratified_split([], seed=0).tolist() == []


# ---------------------------------------------------------------------------------------------
# group_split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_no_leak_and_balanced(seed):
    labels, groups = _grouped_set(5000, 300, seed=seed)
    sizes = np.bincount(groups)
    assert sizes.max() >= 5 * max(1, int(np.median(sizes)))  # group sizes really vary
    splits = group_split(labels, groups, (0.7, 0.2, 0.1), seed=seed)
    members = {s: set(groups[splits == s].tolist()) for s in SPLITS}
    assert not members["train"] & members["val"]
    assert not members["train"] & members["test"]
    assert not members["val"] & members["test"]
    assert sum(len(m) for m in members.values()) == 300
    for cls in CLASSES:
        in_cls = labels == cls
        for s, r in zip(SPLITS, (0.7, 0.2, 0.1)):
            share = (splits[in_cls] == s).mean()
            assert abs(share - r) < 0.05, (cls, s, share)


def test_group_split_deterministic_and_seed_dependent():
    labels, groups = _grouped_set(3000, 200, seed=4)
    a = group_split(labels, groups, seed=3)
    assert np.array_equal(a, group_split(labels, groups, seed=3))
    assert not np.array_equal(a, group_split(labels, groups, seed=4))


def test_group_split_missing_groups_are_singletons_and_zero_ratio_is_empty():
    labels = np.array(["a", "b"] * 50)
    groups = np.array([None if k % 5 == 0 else f"g{k // 10}" for k in range(100)], dtype=object)
    groups[7] = float("nan")
    splits = group_split(labels, groups, (0.75, 0.25, 0.0), seed=0)
    assert not (splits == "test").any()
    known = np.array([g is not None and g == g for g in groups])
    for g in set(groups[known].tolist()):
        assert len(set(splits[groups == g].tolist())) == 1
    # Had the 21 missing-group rows been lumped into one group they would share one split.
    assert len(set(splits[~known].tolist())) > 1
    _, report = assign_splits(labels, (0.75, 0.25, 0.0), groups=groups, group_name="subject")
    assert report.grouped_by == "subject"
    assert report.n_groups == len(set(groups[known].tolist())) + int((~known).sum())


def test_group_split_rejects_length_mismatch():
    with pytest.raises(ValueError, match="groups"):
        group_split(["a", "b", "c"], [1, 2])


@pytest.mark.slow
def test_group_split_100k_rows_10k_groups_runs():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 10_000, size=100_000)
    labels = _imbalanced_labels(100_000, seed=1)
    splits, report = assign_splits(labels, seed=0, groups=groups)
    assert len(splits) == 100_000
    assert report.n_groups == len(np.unique(groups))
    # Disjointness on a real set intersection, not on the algorithm's own bookkeeping.
    train, val = set(groups[splits == "train"]), set(groups[splits == "val"])
    assert not train & val
    assert report.max_abs_deviation < 0.02


# ---------------------------------------------------------------------------------------------
# assign_splits / SplitReport


def test_assign_splits_report_matches_splits():
    labels = _imbalanced_labels(1000, seed=2)
    splits, report = assign_splits(labels, (0.7, 0.2, 0.1), seed=0)
    assert isinstance(report, SplitReport)
    assert report.grouped_by is None and report.n_groups is None
    assert report.target == pytest.approx({"train": 0.7, "val": 0.2, "test": 0.1})
    for s in SPLITS:
        for cls in np.unique(labels):
            expected = int(((splits == s) & (labels == cls)).sum())
            assert report.counts[s][cls] == expected
            share = expected / (labels == cls).sum()
            assert report.proportion_deviation[s][cls] == pytest.approx(share - report.target[s])
    devs = [abs(v) for d in report.proportion_deviation.values() for v in d.values()]
    assert report.max_abs_deviation == pytest.approx(max(devs))
    assert report.max_abs_deviation < 0.05
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["counts"]["train"][labels[0]] == report.counts["train"][labels[0]]


def test_assign_splits_grouped_defaults_group_name():
    labels, groups = _grouped_set(800, 60, seed=1)
    splits, report = assign_splits(labels, seed=0, groups=groups)
    assert report.grouped_by == "group"
    assert report.n_groups == 60
    assert np.array_equal(splits, group_split(labels, groups, seed=0))


# ---------------------------------------------------------------------------------------------
# source_split_from_names


def test_source_split_from_fer2013_names():
    paths = [
        "fer2013/train/angry/Training_10118481.jpg",
        "fer2013/test/angry/PublicTest_1234.jpg",  # prefix beats the test/ folder
        "fer2013/test/happy/PrivateTest_98765.jpg",
        "Training_1.jpg",
        "data/train/happy/im1.png",
        "data/training/happy/im1.png",
        "data/valid/happy/im1.png",
        "data/validation/sad/x.png",
        "data/dev/sad/x.png",
        "data/val/sad/x.png",
        "data/test/sad/x.png",
        "C:\\data\\Test\\sad\\x.png",  # Windows separators, any case
        "/home/dev/data/train/x.jpg",  # nearest split folder wins over a 'dev' home folder
        "data/faces/sad/x.png",  # nothing says
        "data/test_images/x.png",  # 'test_images' is not a split folder
        "",
    ]
    got = source_split_from_names(paths).tolist()
    assert got == [
        "train", "val", "test", "train", "train", "train", "val", "val", "val", "val",
        "test", "test", "train", "", "", "",
    ]
