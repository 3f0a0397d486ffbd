"""Duplicate and leakage audit: exact twins (same pixels) and near twins (close pHash).

A face that sits in train and again in test (the same crop, or a re-encoded / brightened copy)
inflates test accuracy. This module finds such pairs and says which rows to drop:

* :func:`content_hash` - exact identity of decoded pixels.
* :func:`perceptual_hash` / :func:`perceptual_hashes` - 64-bit pHash per image.
* :func:`hamming_pairs` - all pairs of hashes within a Hamming distance, fast (multi-index
  hashing) rather than O(n^2).
* :func:`find_duplicates` - the pair table with split information, as a :class:`DuplicateReport`.
* :func:`cross_split_drop_mask` - val/test rows to drop so no evaluation row has a twin in a
  split that ranks above it (train > val > test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

__all__ = [
    "DuplicateReport",
    "content_hash",
    "cross_split_drop_mask",
    "find_duplicates",
    "hamming_pairs",
    "perceptual_hash",
    "perceptual_hashes",
]

_SPLIT_PRIORITY = {"train": 0, "val": 1, "test": 2}
_PAIR_COLUMNS = ["i", "j", "kind", "distance", "split_i", "split_j", "cross_split"]
# Most candidate pairs held in memory at once while verifying; bounds memory on huge buckets.
_CHUNK_PAIRS = 4_000_000


# --------------------------------------------------------------------------------------------
# hashing


def content_hash(array: np.ndarray) -> str:
    """SHA-1 hex digest of an array's pixels, shape and dtype.

    Two images get the same digest exactly when they decode to the same pixels: the file bytes
    (JPEG settings, metadata) do not matter. Shape and dtype are hashed too, so that the same
    bytes read as a different image (48x48 vs 24x96, uint8 vs int8) do not collide.
    """
    a = np.ascontiguousarray(array)
    h = hashlib.sha1()
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _to_pil(array: np.ndarray) -> Image.Image:
    """PIL image of an (H,W), (H,W,1), (H,W,3) or (H,W,4) array."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        # Float images in [0, 1] are scaled; anything else is clipped to the uint8 range.
        if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(a, mode="L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(a), mode="RGB" if a.shape[2] == 3 else "RGBA")
    raise ValueError(f"expected an (H,W), (H,W,1), (H,W,3) or (H,W,4) image; got shape {a.shape}")


def perceptual_hash(array: np.ndarray) -> int:
    """64-bit pHash (``imagehash.phash``) of an image array, as an unsigned int.

    Colour images are converted to grayscale inside (imagehash does it), so an (H,W,3) image and
    its (H,W) luminance hash alike. Bit order is that of the hash's hex string (first DCT
    coefficient = most significant bit).
    """
    return int(str(imagehash.phash(_to_pil(array))), 16)


def perceptual_hashes(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """pHash of every array, as a ``uint64`` array."""
    return np.fromiter((perceptual_hash(a) for a in arrays), dtype=np.uint64)


# --------------------------------------------------------------------------------------------
# Hamming search

if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x).astype(np.int64)

else:  # pragma: no cover - numpy 1.x fallback: byte lookup table
    _BYTE_BITS = np.array([bin(b).count("1") for b in range(256)], dtype=np.int64)

    def _popcount(x: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(x, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
        return _BYTE_BITS[b].sum(axis=1)


def _within_run_pairs(order: np.ndarray, keys_sorted: np.ndarray) -> Iterable[tuple]:
    """Yield chunks ``(a, b)`` of all pairs of ``order`` entries sharing a key.

    ``keys_sorted`` are the keys in ``order``'s order (sorted, so equal keys form runs). Every
    pair inside a run is produced once, fully vectorised: the element at sorted position k pairs
    with positions k+1 .. end_of_run-1. Chunks hold at most about ``_CHUNK_PAIRS`` pairs (one
    element has fewer partners than there are rows), so a huge bucket - thousands of blank
    images - costs time proportional to its pairs but bounded memory.
    """
    n = len(order)
    if n < 2:
        return
    boundary = np.flatnonzero(keys_sorted[1:] != keys_sorted[:-1]) + 1
    ends = np.concatenate([boundary, [n]])
    run_end = np.repeat(ends, np.diff(np.concatenate([[0], ends])))
    partners = run_end - np.arange(n) - 1  # pairs started by each sorted position
    has = np.flatnonzero(partners > 0)
    if len(has) == 0:
        return
    cum = np.cumsum(partners[has])
    start = 0
    while start < len(has):
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + _CHUNK_PAIRS, side="right"))
        stop = max(stop, start + 1)
        pos = has[start:stop]
        cnt = partners[pos]
        first = np.repeat(pos, cnt)
        offset = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
        yield order[first], order[first + offset]
        start = stop


def _blocks(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of ``threshold + 1`` near-equal bit blocks covering 64 bits."""
    m = threshold + 1
    widths = [64 // m + (1 if k < 64 % m else 0) for k in range(m)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def _block_values(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return (h >> np.uint64(shift)) & mask


def _unique_pairs(u: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b) of *distinct* hashes ``u`` within ``threshold``: multi-index hashing.

    Split the 64 bits into ``threshold + 1`` blocks. Two hashes within ``threshold`` differ in at
    most ``threshold`` bits, so by pigeonhole at least one block is identical: bucketing by each
    block in turn and verifying candidates finds every pair. A candidate is kept only from the
    first block on which it matches, so each pair comes out once without a global dedupe.
    """
    n = len(u)
    empty = np.empty(0, dtype=np.int64)
    if n < 2:
        return empty, empty, empty
    if threshold >= 64:  # every pair qualifies; one "block" of width 0 buckets everything
        blocks = [(0, 0)]
    else:
        blocks = _blocks(threshold)
    out_a, out_b, out_d = [], [], []
    for k, (shift, width) in enumerate(blocks):
        vals = _block_values(u, shift, width) if width else np.zeros(n, dtype=np.uint64)
        order = np.argsort(vals, kind="stable")
        for a, b in _within_run_pairs(order, vals[order]):
            x = u[a] ^ u[b]
            d = _popcount(x)
            ok = d <= threshold
            a, b, x, d = a[ok], b[ok], x[ok], d[ok]
            # Drop pairs already found on an earlier block (their XOR is zero there too);
            # checked after the distance filter, which leaves few survivors.
            for s, w in blocks[:k]:
                keep = _block_values(x, s, w) != 0
                a, b, x, d = a[keep], b[keep], x[keep], d[keep]
            out_a.append(a)
            out_b.append(b)
            out_d.append(d)
    if not out_a:
        return empty, empty, empty
    a = np.concatenate(out_a).astype(np.int64)
    b = np.concatenate(out_b).astype(np.int64)
    return np.minimum(a, b), np.maximum(a, b), np.concatenate(out_d).astype(np.int64)


def _expand(members: np.ndarray, starts: np.ndarray, counts: np.ndarray, a, b):
    """Row pairs for pairs of unique values: every member of ``a`` x every member of ``b``."""
    ca, cb = counts[a], counts[b]
    total = ca * cb
    idx = np.repeat(np.arange(len(a)), total)
    within = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)
    cb_rep = cb[idx]
    ra = members[starts[a][idx] + within // cb_rep]
    rb = members[starts[b][idx] + within % cb_rep]
    return ra, rb, idx


def hamming_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """All pairs ``i < j`` whose 64-bit hashes differ in at most ``threshold`` bits.

    Identical hashes are collapsed first (their rows pair at distance 0 directly), so many
    images sharing one hash - blank frames - do not blow up the candidate search; the distinct
    hashes are searched by multi-index hashing (see :func:`_unique_pairs`), which touches only
    candidates that agree exactly on one of ``threshold + 1`` bit blocks. 50k hashes at
    threshold 4 take well under a second.

    Args:
        hashes: 1-D array of hashes (any integer dtype; read as uint64 bits).
        threshold: largest Hamming distance reported (>= 0).

    Returns:
        ``(n_pairs, 3)`` int64 array of ``[i, j, distance]`` rows, sorted by ``i`` then ``j``.
    """
    threshold = int(threshold)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0; got {threshold}")
    h = np.asarray(hashes)
    if np.issubdtype(h.dtype, np.signedinteger):
        h = h.astype(np.int64).view(np.uint64)  # same 64 bits, read unsigned
    elif h.dtype != np.uint64:
        h = h.astype(np.uint64)
    h = h.reshape(-1)

    uniq, inverse = np.unique(h, return_inverse=True)
    inverse = inverse.reshape(-1)
    members = np.argsort(inverse, kind="stable")  # rows grouped by unique hash, in row order
    counts = np.bincount(inverse, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    parts_i, parts_j, parts_d = [], [], []
    # Rows sharing a hash: distance 0.
    for a, b in _within_run_pairs(members, inverse[members]):
        parts_i.append(a)
        parts_j.append(b)
        parts_d.append(np.zeros(len(a), dtype=np.int64))
    if threshold > 0 and len(uniq) > 1:
        ua, ub, ud = _unique_pairs(uniq, threshold)
        # Expand unique-hash pairs to row pairs in bounded chunks.
        step = max(1, _CHUNK_PAIRS // max(1, int(counts.max())) ** 2)
        for s in range(0, len(ua), step):
            ra, rb, idx = _expand(members, starts, counts, ua[s : s + step], ub[s : s + step])
            parts_i.append(ra)
            parts_j.append(rb)
            parts_d.append(ud[s : s + step][idx])
    if not parts_i:
        return np.empty((0, 3), dtype=np.int64)
    i = np.concatenate(parts_i).astype(np.int64)
    j = np.concatenate(parts_j).astype(np.int64)
    d = np.concatenate(parts_d).astype(np.int64)
    i, j = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((j, i))
    return np.stack([i[order], j[order], d[order]], axis=1)


# --------------------------------------------------------------------------------------------
# duplicate report


@dataclass
class DuplicateReport:
    """Exact and near duplicate pairs and how many cross splits.

    Attributes:
        pairs: one row per pair, columns ``i, j`` (row positions, ``i < j``), ``kind``
            (``"exact"`` | ``"near"``), ``distance`` (pHash Hamming distance), ``split_i``,
            ``split_j``, ``cross_split`` (the two rows are in different splits).
        exact_pairs: pairs with identical decoded pixels.
        near_pairs: pairs within the pHash threshold that are not exact.
        cross_split_exact: exact pairs whose rows lie in different splits.
        cross_split_near: near pairs whose rows lie in different splits.
        rows_in_exact_groups: rows with at least one exact twin.
    """

    pairs: pd.DataFrame
    exact_pairs: int
    near_pairs: int
    cross_split_exact: int
    cross_split_near: int
    rows_in_exact_groups: int

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame) -> "DuplicateReport":
        """A report whose counts are computed from a pair table."""
        is_exact = (pairs["kind"] == "exact").to_numpy()
        cross = pairs["cross_split"].to_numpy(dtype=bool)
        exact_rows = np.concatenate([pairs["i"].to_numpy()[is_exact], pairs["j"].to_numpy()[is_exact]])
        return cls(
            pairs=pairs,
            exact_pairs=int(is_exact.sum()),
            near_pairs=int((~is_exact).sum()),
            cross_split_exact=int((is_exact & cross).sum()),
            cross_split_near=int((~is_exact & cross).sum()),
            rows_in_exact_groups=int(len(np.unique(exact_rows))),
        )

    def to_dict(self) -> dict:
        """The counts as plain ints (the pair table is left out: it can be large)."""
        return {
            "exact_pairs": int(self.exact_pairs),
            "near_pairs": int(self.near_pairs),
            "cross_split_exact": int(self.cross_split_exact),
            "cross_split_near": int(self.cross_split_near),
            "rows_in_exact_groups": int(self.rows_in_exact_groups),
        }


def find_duplicates(
    content_hashes: Sequence[str],
    phashes: np.ndarray,
    splits: Sequence[str],
    threshold: int = 4,
    *,
    mask: np.ndarray | None = None,
) -> DuplicateReport:
    """Find exact and near duplicate pairs among the rows selected by ``mask``.

    Exact: same content hash. Near: pHash Hamming distance <= ``threshold`` and not exact.

    Args:
        content_hashes: :func:`content_hash` per row.
        phashes: :func:`perceptual_hash` per row (uint64).
        splits: split name per row (``""`` for rows excluded upstream).
        threshold: largest pHash distance that counts as a near duplicate.
        mask: rows to consider (default all). Pass ``splits != ""`` to ignore rejected rows;
            the caller decides, since an excluded row may still matter for another audit.

    Returns:
        A :class:`DuplicateReport`; ``i``/``j`` are positions in the full (unmasked) input.
    """
    ch = np.asarray(content_hashes, dtype=object).reshape(-1)
    ph = np.asarray(phashes).reshape(-1)
    sp = np.asarray(splits, dtype=object).reshape(-1)
    n = len(ch)
    if len(ph) != n or len(sp) != n:
        raise ValueError(
            f"content_hashes, phashes and splits differ in length: {n}, {len(ph)}, {len(sp)}"
        )
    m = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if len(m) != n:
        raise ValueError(f"mask has {len(m)} entries for {n} rows")
    rows = np.flatnonzero(m)
    sub_ph = ph[rows]
    if sub_ph.dtype != np.uint64:
        sub_ph = sub_ph.astype(np.uint64)
    codes = pd.factorize(pd.Series(ch[rows], dtype=object))[0].astype(np.int64)

    # Exact: every pair within a content-hash group.
    order = np.argsort(codes, kind="stable")
    ex_i, ex_j = [], []
    for a, b in _within_run_pairs(order, codes[order]):
        ex_i.append(a)
        ex_j.append(b)
    ei = np.concatenate(ex_i) if ex_i else np.empty(0, dtype=np.int64)
    ej = np.concatenate(ex_j) if ex_j else np.empty(0, dtype=np.int64)
    ed = _popcount(sub_ph[ei] ^ sub_ph[ej]) if len(ei) else np.empty(0, dtype=np.int64)

    # Near: pHash close, content different.
    hp = hamming_pairs(sub_ph, threshold)
    near = codes[hp[:, 0]] != codes[hp[:, 1]]
    ni, nj, nd = hp[near, 0], hp[near, 1], hp[near, 2]

    i = rows[np.concatenate([ei, ni]).astype(np.int64)]
    j = rows[np.concatenate([ej, nj]).astype(np.int64)]
    i, j = np.minimum(i, j), np.maximum(i, j)
    kind = np.array(["exact"] * len(ei) + ["near"] * len(ni), dtype=object)
    dist = np.concatenate([ed, nd]).astype(np.int64)
    order = np.lexsort((j, i))
    i, j, kind, dist = i[order], j[order], kind[order], dist[order]
    split_i, split_j = sp[i], sp[j]
    cross = np.asarray(split_i != split_j, dtype=bool)
    pairs = pd.DataFrame(
        {
            "i": i.astype(np.int64),
            "j": j.astype(np.int64),
            "kind": kind,
            "distance": dist,
            "split_i": split_i,
            "split_j": split_j,
            "cross_split": cross,
        },
        columns=_PAIR_COLUMNS,
    )
    return DuplicateReport.from_pairs(pairs)


def cross_split_drop_mask(
    report: DuplicateReport, splits: Sequence[str], kinds: Sequence[str] = ("exact", "near")
) -> np.ndarray:
    """Rows to drop so no evaluation row duplicates a row in a higher-priority split.

    Priority is train > val > test. For every pair of the given ``kinds`` whose rows lie in two
    different known splits, the row in the lower-priority split is marked: val rows that
    duplicate train, test rows that duplicate train or val. Train rows are never marked (the
    training data stays whole; it is the evaluation that must not see its twins). A test row
    that duplicates a val row is marked even if that val row is itself dropped: near-duplicate
    chains are not transitive, and marking is the safe side. Pairs that touch a row with an
    unknown split (``""``) are ignored.

    Returns:
        Bool array, one entry per row of ``splits``.
    """
    sp = np.asarray(splits, dtype=object).reshape(-1)
    drop = np.zeros(len(sp), dtype=bool)
    pairs = report.pairs
    if len(pairs) == 0:
        return drop
    sel = pairs[pairs["kind"].isin(list(kinds))]
    i = sel["i"].to_numpy(dtype=np.int64)
    j = sel["j"].to_numpy(dtype=np.int64)
    # Priority from the splits given here (the caller may have re-split since the report).
    prio = np.array([_SPLIT_PRIORITY.get(s, -1) for s in sp], dtype=np.int64)
    pi, pj = prio[i], prio[j]
    known = (pi >= 0) & (pj >= 0) & (pi != pj)
    loser = np.where(pi > pj, i, j)[known]
    drop[loser] = True
    return drop


def pixel_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of grey pixels for batches of image pairs.

    ``a`` and ``b`` are (N, H, W, C) uint8 arrays of the same shape; returns N correlations in
    [-1, 1]. Used to verify pHash candidates: a perceptual hash keeps only coarse structure,
    so aligned faces of different people (or a face and a heavily blurred other face) can
    share one; a true near-duplicate also matches pixel for pixel up to brightness/contrast.
    """
    def zscore(x: np.ndarray) -> np.ndarray:
        grey = x.astype(np.float32).mean(axis=-1).reshape(len(x), -1)
        grey -= grey.mean(axis=1, keepdims=True)
        return grey / (np.linalg.norm(grey, axis=1, keepdims=True) + 1e-6)

    if a.shape != b.shape:
        raise ValueError(f"pair batches differ in shape: {a.shape} vs {b.shape}")
    if len(a) == 0:
        return np.empty(0, dtype=np.float32)
    return np.einsum("ij,ij->i", zscore(a), zscore(b))


def keep_pairs(report: DuplicateReport, keep: np.ndarray) -> DuplicateReport:
    """A report restricted to the pairs where ``keep`` is True, with its counts recomputed."""
    return DuplicateReport.from_pairs(report.pairs[np.asarray(keep, dtype=bool)].reset_index(drop=True))
