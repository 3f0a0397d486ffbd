"""Tests for ferwild.data.dedup: hashing, Hamming search, duplicate report, drop mask."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import shared_data_dir
from PIL import Image

from ferwild.data.dedup import (
    DuplicateReport,
    content_hash,
    cross_split_drop_mask,
    find_duplicates,
    hamming_pairs,
    perceptual_hash,
    perceptual_hashes,
)
from ferwild.data.split import source_split_from_names

SHARED = shared_data_dir()
FER2013 = SHARED / "fer2013"


def _popcount64(x: int) -> int:
    return bin(int(x)).count("1")


def _brute_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """O(n^2) reference in plain Python ints (independent of the numpy bit tricks)."""
    hs = [int(h) for h in hashes]
    rows = [
        [i, j, _popcount64(hs[i] ^ hs[j])]
        for i in range(len(hs))
        for j in range(i + 1, len(hs))
        if _popcount64(hs[i] ^ hs[j]) <= threshold
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _planted_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes with planted near copies (0..9 flipped bits) and repeated values."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2)
    hs = [int(x) + int(b) for x, b in zip(raw, rng.integers(0, 2, n))]
    for k in range(n // 3):
        src = hs[int(rng.integers(0, n))]
        for bit in rng.choice(64, size=int(rng.integers(0, 10)), replace=False):
            src ^= 1 << int(bit)
        hs[int(rng.integers(0, n))] = src
    hs[:6] = [hs[0]] * 6  # a small bucket of identical hashes
    hs[6] = (1 << 64) - 1  # all bits set: exercises the top bit of uint64
    hs[7] = hs[6] ^ 0b101
    return np.array(hs, dtype=np.uint64)


# ---------------------------------------------------------------------------------------------
# hamming_pairs


@pytest.mark.parametrize("threshold", range(0, 9))
def test_hamming_pairs_matches_brute_force(threshold):
    hashes = _planted_hashes(400, seed=threshold)
    got = hamming_pairs(hashes, threshold)
    want = _brute_pairs(hashes, threshold)
    assert got.dtype == np.int64 and got.shape[1] == 3
    assert len(want) > 6  # the planted pairs make the comparison meaningful
    np.testing.assert_array_equal(got, want)


def test_hamming_pairs_huge_bucket_still_correct():
    rng = np.random.default_rng(1)
    n = 300
    # 120 blank images share one hash; 150 more share their top 48 bits (one block bucket
    # holds them all at every threshold); the rest are random.
    blank = np.full(120, 0x0123456789ABCDEF, dtype=np.uint64)
    shared_top = (np.uint64(0xFEDCBA9876540000) | rng.integers(0, 2**16, 150).astype(np.uint64))
    rest = rng.integers(0, 2**63, n - 270, dtype=np.uint64)
    hashes = np.concatenate([blank, shared_top, rest])
    rng.shuffle(hashes)
    for threshold in (0, 3, 6):
        np.testing.assert_array_equal(
            hamming_pairs(hashes, threshold), _brute_pairs(hashes, threshold)
        )
    assert (hamming_pairs(hashes, 0)[:, 2] == 0).all()
    assert len(hamming_pairs(hashes, 0)) >= 120 * 119 // 2


def test_hamming_pairs_edge_cases():
    assert hamming_pairs(np.array([], dtype=np.uint64), 4).shape == (0, 3)
    assert hamming_pairs(np.array([5], dtype=np.uint64), 4).shape == (0, 3)
    np.testing.assert_array_equal(
        hamming_pairs(np.array([0b1011, 0b0011, 0b1011], dtype=np.uint64), 1),
        [[0, 1, 1], [0, 2, 0], [1, 2, 1]],
    )
    # Signed input is read as the same 64 bits.
    np.testing.assert_array_equal(
        hamming_pairs(np.array([-1, -2], dtype=np.int64), 1), [[0, 1, 1]]
    )
    # A threshold of 64 or more pairs everything.
    small = _planted_hashes(30, seed=9)
    assert len(hamming_pairs(small, 64)) == 30 * 29 // 2
    with pytest.raises(ValueError):
        hamming_pairs(small, -1)


# ---------------------------------------------------------------------------------------------
# hashing images


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A random but photo-like (smooth) grayscale image: pHash is meant for such content."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    img = Image.fromarray(coarse, mode="L").resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 3, size=(size, size))
    return np.clip(np.asarray(img, dtype=float) + noise, 0, 255).astype(np.uint8)


def _brighten_jpeg(a: np.ndarray, delta: int = 12, quality: int = 70) -> np.ndarray:
    bright = np.clip(a.astype(int) + delta, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(bright, mode="L").save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def test_content_hash_is_pixel_identity():
    a = _smooth_image(0)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) == content_hash(np.asfortranarray(a))  # memory layout irrelevant
    b = a.copy()
    b[3, 4] ^= 1
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) != content_hash(a.reshape(32, 128))  # same bytes, other shape
    assert len(content_hash(a)) == 40 and int(content_hash(a), 16) >= 0


def test_perceptual_hash_shapes_and_range():
    a = _smooth_image(1)
    h = perceptual_hash(a)
    assert isinstance(h, int) and 0 <= h < 2**64
    assert perceptual_hash(a[:, :, None]) == h
    assert perceptual_hash(np.repeat(a[:, :, None], 3, axis=2)) == h
    hs = perceptual_hashes([a, a[:, :, None], _smooth_image(2)])
    assert hs.dtype == np.uint64 and hs.shape == (3,)
    assert int(hs[0]) == h and int(hs[1]) == h and int(hs[2]) != h
    with pytest.raises(ValueError):
        perceptual_hash(np.zeros((4, 4, 2), dtype=np.uint8))


def test_find_duplicates_exact_near_none_on_images():
    original = _smooth_image(10)
    exact = original.copy()
    near = _brighten_jpeg(original)
    unrelated = _smooth_image(11)
    images = [original, exact, near, unrelated]
    assert not np.array_equal(near, original)  # really a different image

    ch = [content_hash(a) for a in images]
    ph = perceptual_hashes(images)
    report = find_duplicates(ch, ph, ["train", "train", "test", "val"], threshold=4)
    table = report.pairs.set_index(["i", "j"])
    assert set(table.index) == {(0, 1), (0, 2), (1, 2)}
    assert table.loc[(0, 1), "kind"] == "exact" and table.loc[(0, 1), "distance"] == 0
    assert table.loc[(0, 2), "kind"] == "near" and table.loc[(1, 2), "kind"] == "near"
    assert 0 <= table.loc[(0, 2), "distance"] <= 4
    # The unrelated image is far from everything.
    assert all(bin(int(ph[3]) ^ int(ph[k])).count("1") > 4 for k in range(3))
    assert (report.exact_pairs, report.near_pairs) == (1, 2)
    assert (report.cross_split_exact, report.cross_split_near) == (0, 2)
    assert report.rows_in_exact_groups == 2
    assert list(report.pairs.columns) == [
        "i", "j", "kind", "distance", "split_i", "split_j", "cross_split",
    ]


def _synthetic_report_inputs():
    # rows: 0 train, 1 val (exact of 0), 2 test (near of 0), 3 test (exact of 1 & 0),
    #       4 val, 5 test (near of 4), 6 train, 7 train (exact of 6: same split),
    #       8 "" (exact of 6: excluded row), 9 val alone
    ch = ["A", "A", "B", "A", "C", "D", "E", "E", "E", "F"]
    base = [0x0F0F0F0F0F0F0F0F, 0x3333333333333333, 0x5555555555555555, 0xFFFF0000FFFF0000]
    ph = np.array(
        [
            base[0], base[0], base[0] ^ 0b111, base[0],
            base[1], base[1] ^ 0b11, base[2], base[2], base[2], base[3],
        ],
        dtype=np.uint64,
    )
    splits = ["train", "val", "test", "test", "val", "test", "train", "train", "", "val"]
    return ch, ph, splits


def test_find_duplicates_counts_and_cross_split():
    ch, ph, splits = _synthetic_report_inputs()
    report = find_duplicates(ch, ph, splits, threshold=4)
    pairs = report.pairs
    exact = {(int(i), int(j)) for i, j in pairs.loc[pairs.kind == "exact", ["i", "j"]].values}
    near = {(int(i), int(j)) for i, j in pairs.loc[pairs.kind == "near", ["i", "j"]].values}
    assert exact == {(0, 1), (0, 3), (1, 3), (6, 7), (6, 8), (7, 8)}
    assert near == {(0, 2), (1, 2), (2, 3), (4, 5)}
    assert report.exact_pairs == 6 and report.near_pairs == 4
    # cross exact: 0-1 train/val, 0-3 train/test, 1-3 val/test, 6-8 and 7-8 train/""
    assert report.cross_split_exact == 5
    # cross near: 0-2 train/test, 1-2 val/test, 4-5 val/test (2-3 are both test)
    assert report.cross_split_near == 3
    assert report.rows_in_exact_groups == 6
    assert report.to_dict() == {
        "exact_pairs": 6, "near_pairs": 4, "cross_split_exact": 5, "cross_split_near": 3,
        "rows_in_exact_groups": 6,
    }
    assert (pairs.i < pairs.j).all()
    assert pairs.equals(pairs.sort_values(["i", "j"]).reset_index(drop=True))

    # A mask restricts the audit to usable rows, and positions stay those of the full input.
    usable = np.array(splits) != ""
    masked = find_duplicates(ch, ph, splits, threshold=4, mask=usable)
    assert 8 not in set(masked.pairs.i) | set(masked.pairs.j)
    assert masked.exact_pairs == 4 and masked.cross_split_exact == 3
    assert masked.rows_in_exact_groups == 5
    # A threshold of 0 keeps only identical pHashes as near.
    assert find_duplicates(ch, ph, splits, threshold=0).near_pairs == 0


def test_find_duplicates_rejects_length_mismatch():
    with pytest.raises(ValueError):
        find_duplicates(["a", "b"], np.array([1], dtype=np.uint64), ["train", "val"])


def test_cross_split_drop_mask_semantics():
    ch, ph, splits = _synthetic_report_inputs()
    report = find_duplicates(ch, ph, splits, threshold=4)
    drop = cross_split_drop_mask(report, splits)
    assert drop.dtype == bool and len(drop) == len(splits)
    # 1: val twin of train row 0; 2: test near-twin of train; 3: test twin of train and val;
    # 5: test near-twin of val row 4. Train rows, same-split twins and the "" row stay.
    assert np.flatnonzero(drop).tolist() == [1, 2, 3, 5]
    assert not drop[np.array(splits) == "train"].any()

    exact_only = cross_split_drop_mask(report, splits, kinds=("exact",))
    assert np.flatnonzero(exact_only).tolist() == [1, 3]
    near_only = cross_split_drop_mask(report, splits, kinds=("near",))
    assert np.flatnonzero(near_only).tolist() == [2, 5]

    # The priorities come from the splits passed in: swap val and test and the losers change.
    swapped = ["val" if s == "test" else "test" if s == "val" else s for s in splits]
    assert np.flatnonzero(cross_split_drop_mask(report, swapped)).tolist() == [1, 2, 3, 4]

    empty = DuplicateReport(
        pairs=report.pairs.iloc[:0], exact_pairs=0, near_pairs=0, cross_split_exact=0,
        cross_split_near=0, rows_in_exact_groups=0,
    )
    assert not cross_split_drop_mask(empty, splits).any()


def test_drop_mask_removes_all_cross_split_leaks():
    """After dropping, no remaining val/test row has a twin in a higher-priority split."""
    rng = np.random.default_rng(3)
    n = 2000
    ph = rng.integers(0, 2**12, size=n).astype(np.uint64)  # few distinct values: many pairs
    ch = [f"c{int(x) % 700}" for x in rng.integers(0, 10**6, size=n)]
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.25, 0.15]).tolist()
    report = find_duplicates(ch, ph, splits, threshold=2)
    assert report.cross_split_exact > 0 and report.cross_split_near > 0
    drop = cross_split_drop_mask(report, splits)
    keep = ~drop
    again = find_duplicates(ch, ph, splits, threshold=2, mask=keep)
    assert again.cross_split_exact == 0 and again.cross_split_near == 0
    # And nothing more was dropped than needed: each dropped row has a higher-priority twin.
    prio = {"train": 0, "val": 1, "test": 2}
    justified = set()
    for i, j in report.pairs[["i", "j"]].itertuples(index=False):
        if prio[splits[i]] < prio[splits[j]]:
            justified.add(j)
        elif prio[splits[j]] < prio[splits[i]]:
            justified.add(i)
    assert set(np.flatnonzero(drop).tolist()) == justified


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.shared_data
def test_fer2013_disgust_subset_report_is_consistent():
    if not FER2013.is_dir():
        pytest.skip("../shared/data not present")
    paths = sorted(
        str(p)
        for split in ("train", "test")
        for p in (FER2013 / split / "disgust").glob("*.jpg")
    )
    assert len(paths) > 500
    arrays = [np.asarray(Image.open(p)) for p in paths]
    assert all(a.shape == (48, 48) and a.dtype == np.uint8 for a in arrays)
    splits = source_split_from_names(paths)
    assert set(splits) == {"train", "val", "test"}  # Training_/PublicTest_/PrivateTest_
    ch = [content_hash(a) for a in arrays]
    ph = perceptual_hashes(arrays)
    report = find_duplicates(ch, ph, splits, threshold=4)
    pairs = report.pairs

    assert report.exact_pairs == int((pairs.kind == "exact").sum())
    assert report.near_pairs == int((pairs.kind == "near").sum())
    assert report.exact_pairs + report.near_pairs == len(pairs)
    cross = pairs.split_i != pairs.split_j
    assert (pairs.cross_split == cross).all()
    assert report.cross_split_exact == int((cross & (pairs.kind == "exact")).sum())
    assert report.cross_split_near == int((cross & (pairs.kind == "near")).sum())
    ex = pairs[pairs.kind == "exact"]
    assert report.rows_in_exact_groups == len(set(ex.i) | set(ex.j))
    # Exact pairs really are identical pixels; near ones really differ and are within 4 bits.
    for i, j in ex[["i", "j"]].values[:50]:
        assert np.array_equal(arrays[i], arrays[j])
    for i, j, d in pairs.loc[pairs.kind == "near", ["i", "j", "distance"]].values[:50]:
        assert not np.array_equal(arrays[i], arrays[j])
        assert d == bin(int(ph[i]) ^ int(ph[j])).count("1") <= 4
    # The pair search agrees with brute force on real hashes.
    np.testing.assert_array_equal(hamming_pairs(ph, 4), _brute_pairs(ph, 4))
    # The drop mask never touches train and removes every cross-split leak.
    drop = cross_split_drop_mask(report, splits)
    assert not drop[splits == "train"].any()
    again = find_duplicates(ch, ph, splits, threshold=4, mask=~drop)
    assert again.cross_split_exact == 0 and again.cross_split_near == 0


def test_pixel_correlation_separates_a_brightened_copy_from_another_image():
    from ferwild.data.dedup import pixel_correlation

    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (2, 24, 24, 1), dtype=np.uint8)
    brighter = (a.astype(int) + 40).astype(np.uint8)
    corr = pixel_correlation(a, np.stack([brighter[0], a[1][::-1]]))
    assert corr[0] > 0.999 and abs(corr[1]) < 0.3
    with pytest.raises(ValueError):
        pixel_correlation(a, a[:, :10])


def test_keep_pairs_recounts():
    from ferwild.data.dedup import keep_pairs

    hashes = np.array([0, 0, 1, 3], dtype=np.uint64)
    report = find_duplicates(["a", "a", "b", "c"], hashes, ["train", "test", "train", "val"], threshold=2)
    assert report.exact_pairs == 1 and report.near_pairs == 5
    near = (report.pairs["kind"] == "near").to_numpy()
    kept = keep_pairs(report, ~near)
    assert (kept.exact_pairs, kept.near_pairs, kept.cross_split_exact, kept.cross_split_near) == (1, 0, 1, 0)
    assert kept.rows_in_exact_groups == 2
