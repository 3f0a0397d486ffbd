"""Statistical core of the production-data audit: covariate shift and label shift.

Two questions are asked of production data, each with an estimate *and* its uncertainty:

**Did the inputs move?** (covariate shift, tested on model embeddings)

* :func:`reduce_dims` brings 512-768-dim embeddings down first: standardise with the
  reference's mean / std and project on a PCA fitted on the reference only, so the production
  sample cannot influence the space it is tested in.
* :func:`mmd_test`: kernel two-sample test (Gretton et al., 2012, "A Kernel Two-Sample
  Test"). Statistic: the *biased* (V-statistic) squared MMD with a Gaussian RBF kernel,
  ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, ``sigma`` = median pairwise distance of the
  pooled sample (median heuristic). The pooled sample is invariant to relabelling, so the
  bandwidth is the same for every permutation and the permutation test stays exact. The
  p-value comes from a vectorised permutation test: the pooled kernel matrix ``K`` is built
  once and the statistic of a permutation is the quadratic form ``w K w^T`` of a weight row
  ``w`` (``+1/n_x`` for x-members, ``-1/n_y`` for y-members), evaluated for a whole chunk of
  permutations as ``((W @ K) * W).sum(1)``. Large sides are subsampled to ``max_samples`` rows
  (the cost is ``O(n_permutations * n^2)``).
* :func:`domain_classifier_test`: classifier two-sample test (Lopez-Paz & Oquab, 2017):
  logistic regression told to separate reference (0) from production (1), scored out of
  fold. AUC 0.5 means indistinguishable; the one-sided p-value for AUC > 0.5 is the
  Mann-Whitney U normal approximation on the out-of-fold scores, the 95% AUC interval is
  DeLong's. The per-row scores rank the production samples least like the reference.
* :func:`permutation_mmd_naive`: a deliberately plain loop version of the MMD permutation
  test, kept only as the benchmark baseline and as a test oracle.

**Did the class mix move?** (label shift: ``p(x|y)`` fixed, ``p(y)`` changed)

* :func:`bbse_priors`: black-box shift estimation (Lipton et al., 2018). Needs only hard
  predictions: with the joint confusion ``C[i, j] = P(yhat=i, y=j)`` on labelled validation
  data and the target's predicted-class distribution ``mu``, the importance weights
  ``w = q / p`` solve ``C w = mu``. Works with miscalibrated models; unreliable when ``C`` is
  ill-conditioned (reported).
* :func:`em_priors`: EM prior adjustment (Saerens, Latinne & Decaestecker, 2002). Uses the
  model's probabilities; accurate when they are calibrated on the source distribution,
  biased otherwise (calibrate first, e.g. with temperature scaling).
* :func:`prior_shift_test`: turns either estimate into a verdict (total variation distance,
  which classes' 95% intervals exclude their source prior).

Both prior estimators give 95% percentile-bootstrap intervals, resampling validation and
target rows independently. Every function is deterministic given ``seed`` and returns plain
JSON-ready dicts (python floats / ints / lists), except the two score arrays of
:func:`domain_classifier_test`. Bad input raises :class:`ValueError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ferwild.metrics import as_class_ids

__all__ = [
    "bbse_priors",
    "domain_classifier_test",
    "em_priors",
    "mmd_test",
    "permutation_mmd_naive",
    "prior_shift_test",
    "reduce_dims",
]

# Floor on the reference's per-feature std in reduce_dims: constant embedding dimensions
# (dead units) would otherwise divide by zero.
_STD_FLOOR = 1e-6
# Rows of permutation weights evaluated per matrix product in mmd_test: 256 x 4000 float64 is
# 8 MB, small next to the n x n kernel, and large enough for BLAS to run at full speed.
_PERM_CHUNK = 256
# Permutation statistics within this relative distance of the observed one count as ties
# (exceedances). Permutations that only reorder rows within a side give the observed value
# up to summation-order rounding; counting them keeps the p-value exact (conservative).
_TIE_RTOL = 1e-9
_TIE_ATOL = 1e-12
# Tolerance on |row sum - 1| of probabilities given to em_priors (float16 softmax passes).
_PROB_SUM_ATOL = 1e-2
# Reported condition number of a singular confusion matrix (about 1 / machine epsilon).
_COND_CAP = 1e16
# Cap on elements of the (bootstrap, rows, classes) posterior block em_priors iterates at once.
_EM_BLOCK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------
# validation helpers


def _as_features(a: Any, name: str, min_rows: int = 1) -> np.ndarray:
    """``a`` as a finite float64 ``(n, d)`` matrix with at least ``min_rows`` rows."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_samples, n_features) array, got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least {min_rows} rows")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows; need at least {min_rows}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_same_dims(x: np.ndarray, y: np.ndarray, xname: str = "x", yname: str = "y") -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"feature dimension mismatch: {xname} has {x.shape[1]} features, "
            f"{yname} has {y.shape[1]}"
        )


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_prior(p: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name} must be a 1-D array of >= 2 class priors, got shape {arr.shape}")
    if num_classes is not None and arr.size != num_classes:
        raise ValueError(f"{name} has {arr.size} classes, expected {num_classes}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return arr / arr.sum()


def _percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[list[float], list[float]]:
    """Percentile interval (95% by default) per column of a ``(B, K)`` bootstrap sample."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
    return [float(v) for v in lo], [float(v) for v in hi]


def _simultaneous(samples: np.ndarray) -> dict[str, list[float]]:
    """Bonferroni intervals (each class at 1 - 0.05 / K): all K cover at once with >= 95%,
    so "some class moved" can be read off them without the K-fold false-alarm rate."""
    lo, hi = _percentile_ci(samples, 1 - 0.05 / samples.shape[1])
    return {"simultaneous_ci_low": lo, "simultaneous_ci_high": hi}


# --------------------------------------------------------------------------------------------
# dimensionality reduction


def reduce_dims(
    reference: np.ndarray, *others: np.ndarray, dim: int = 32, seed: int = 0
) -> list[np.ndarray]:
    """Standardise and PCA-project embeddings, fitted on the reference only.

    Args:
        reference: ``(n_ref, d)`` reference embeddings (n_ref >= 2); defines the mean / std
            (std floored at 1e-6) and the PCA basis.
        others: any number of ``(n_i, d)`` arrays projected into the same space.
        dim: at most this many components (also capped at ``d`` and ``n_ref``).
        seed: random state of the (possibly randomised) PCA solver.

    Returns:
        ``[reference_reduced, *others_reduced]``, float32 arrays with the same row counts.
    """
    dim = _positive_int(dim, "dim")
    ref = _as_features(reference, "reference", min_rows=2)
    rest = [_as_features(o, f"others[{i}]") for i, o in enumerate(others)]
    for i, o in enumerate(rest):
        _check_same_dims(ref, o, "reference", f"others[{i}]")
    mean = ref.mean(axis=0)
    std = np.maximum(ref.std(axis=0), _STD_FLOOR)
    n_components = min(dim, ref.shape[1], ref.shape[0])
    pca = PCA(n_components=n_components, random_state=seed)
    pca.fit((ref - mean) / std)
    return [pca.transform((a - mean) / std).astype(np.float32) for a in [ref, *rest]]


# --------------------------------------------------------------------------------------------
# kernel MMD


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (subsampling, permutation) generators for one seed.

    Separate streams make the permutations independent of whether subsampling happened, so
    :func:`mmd_test` and :func:`permutation_mmd_naive` draw identical permutations.
    """
    sub, perm = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(sub), np.random.default_rng(perm)


def _permutation_chunks(
    n: int, n_permutations: int, rng: np.random.Generator, chunk: int
) -> Iterator[np.ndarray]:
    """Yield ``(c, n)`` blocks of random permutations of ``range(n)``, ``n_permutations`` in all.

    Each row is the argsort of ``n`` uniform doubles; doubles are consumed from the stream in
    order, so the permutations do not depend on ``chunk`` (the naive loop uses ``chunk=1``).
    """
    done = 0
    while done < n_permutations:
        c = min(chunk, n_permutations - done)
        yield np.argsort(rng.random((c, n)), axis=1, kind="stable")
        done += c


def _sq_distances(z: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of the rows of ``z`` (exact zeros on the diagonal)."""
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)  # the Gram trick can round slightly below zero
    np.fill_diagonal(d2, 0.0)
    return d2


def _median_bandwidth(d2: np.ndarray) -> float:
    """Median of the distinct-pair distances ``i < j`` (the median heuristic).

    Works on squared distances (sqrt is monotone) with a partial sort of the upper triangle:
    about 5x faster than ``np.median`` over all ``n^2`` square roots at n = 4000.
    """
    n = d2.shape[0]
    vals = d2[np.triu(np.ones((n, n), dtype=bool), k=1)]
    m = vals.size
    mid = [m // 2] if m % 2 else [m // 2 - 1, m // 2]
    part = np.partition(vals, mid)
    med = float(np.mean(np.sqrt(part[mid])))
    if med > 0:
        return med
    # Half the pairs or more are duplicates: fall back to the mean positive distance,
    # and to 1 when every row is identical (then any bandwidth gives MMD 0).
    positive = vals[vals > 0]
    return float(np.sqrt(positive).mean()) if positive.size else 1.0


def _pooled_kernel(
    x: np.ndarray, y: np.ndarray, bandwidth: float | None
) -> tuple[np.ndarray, float]:
    z = np.concatenate([x, y], axis=0)
    d2 = _sq_distances(z)
    if bandwidth is None:
        sigma = _median_bandwidth(d2)
    else:
        sigma = float(bandwidth)
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    d2 *= -1.0 / (2.0 * sigma * sigma)
    return np.exp(d2, out=d2), sigma


def _mmd_weights(n_x: int, n_y: int) -> np.ndarray:
    """Weights with ``w K w^T`` = biased MMD^2 = mean Kxx + mean Kyy - 2 mean Kxy."""
    return np.concatenate([np.full(n_x, 1.0 / n_x), np.full(n_y, -1.0 / n_y)])


def _is_tie_or_more(stats: np.ndarray, observed: float) -> np.ndarray:
    return stats >= observed - (_TIE_RTOL * abs(observed) + _TIE_ATOL)


def _prepare_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = _as_features(x, "x", min_rows=2)
    y = _as_features(y, "y", min_rows=2)
    _check_same_dims(x, y)
    return x, y


def _subsample(a: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a seeded subsample without replacement (sorted; all rows if few)."""
    if a.shape[0] <= max_samples:
        return np.arange(a.shape[0])
    return np.sort(rng.choice(a.shape[0], size=max_samples, replace=False))


def _cluster_codes(groups_x: Any, groups_y: Any, n_x: int, n_y: int) -> np.ndarray | None:
    """Integer cluster ids for the pooled rows (``None`` when no groups are given).

    Clusters never span the two sides (the observed split must be one of the permutations);
    rows without an id (``None``/``""``/NaN) are clusters of their own.
    """
    if groups_x is None and groups_y is None:
        return None
    keys = []
    for side, groups, n in (("x", groups_x, n_x), ("y", groups_y, n_y)):
        values = [None] * n if groups is None else list(groups)
        if len(values) != n:
            raise ValueError(f"groups_{side} has {len(values)} entries for {n} rows")
        for i, v in enumerate(values):
            empty = v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == ""
            keys.append(f"{side}\0row{i}" if empty else f"{side}\0{v}")
    return np.unique(np.asarray(keys, dtype=object), return_inverse=True)[1].astype(np.int64)


def _cluster_permutation_weights(codes: np.ndarray, n_x: int, n_perm: int,
                                 rng: np.random.Generator) -> np.ndarray:
    """``(n_perm, n)`` MMD weights for random reassignments of whole clusters to the sides,
    keeping the observed number of clusters per side (sizes may differ per permutation)."""
    n_clusters = int(codes.max()) + 1
    x_clusters = np.unique(codes[:n_x]).size
    order = np.argsort(rng.random((n_perm, n_clusters)), axis=1, kind="stable")
    in_x = np.zeros((n_perm, n_clusters), dtype=bool)
    np.put_along_axis(in_x, order[:, :x_clusters], True, axis=1)
    rows_x = in_x[:, codes]
    nx = rows_x.sum(1, keepdims=True).astype(np.float64)
    ny = codes.size - nx
    return np.where(rows_x, 1.0 / np.maximum(nx, 1), -1.0 / np.maximum(ny, 1))


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 1000,
    max_samples: int = 2000,
    bandwidth: float | None = None,
    seed: int = 0,
    groups_x: Any = None,
    groups_y: Any = None,
) -> dict:
    """Kernel two-sample test (Gaussian RBF MMD) with a vectorised permutation p-value.

    Args:
        x: ``(n_x, d)`` reference sample (>= 2 rows).
        y: ``(n_y, d)`` production sample (>= 2 rows), same ``d``.
        n_permutations: random relabellings of the pooled sample.
        max_samples: a side with more rows is replaced by a seeded random subsample of this
            size (the test is then about the subsamples; cost grows as ``n^2``).
        bandwidth: RBF ``sigma``; ``None`` = median pairwise distance of the pooled sample.
        seed: seeds subsampling and permutations.
        groups_x, groups_y: optional cluster ids per row (subject, video). Images of one
            person are not independent draws: with ids, whole clusters are permuted, which
            keeps the test exact when the *people* are exchangeable (otherwise new people
            alone would look like a shift).

    Returns:
        ``statistic`` (biased MMD^2), ``p_value`` = ``(1 + #{perm >= observed}) /
        (1 + n_permutations)``, ``bandwidth``, ``n_x`` / ``n_y`` (rows used), ``n_x_total`` /
        ``n_y_total``, ``n_permutations``, ``subsampled``, ``method``.
    """
    x, y = _prepare_pair(x, y)
    n_permutations = _positive_int(n_permutations, "n_permutations")
    max_samples = _positive_int(max_samples, "max_samples", minimum=2)
    codes_all = _cluster_codes(groups_x, groups_y, x.shape[0], y.shape[0])
    sub_rng, perm_rng = _streams(seed)
    ix, iy = _subsample(x, max_samples, sub_rng), _subsample(y, max_samples, sub_rng)
    xs, ys = x[ix], y[iy]
    n_x, n_y = xs.shape[0], ys.shape[0]
    subsampled = n_x < x.shape[0] or n_y < y.shape[0]

    k, sigma = _pooled_kernel(xs, ys, bandwidth)
    w = _mmd_weights(n_x, n_y)
    observed = float(w @ k @ w)
    exceed = 0
    if codes_all is None:
        for perms in _permutation_chunks(n_x + n_y, n_permutations, perm_rng, _PERM_CHUNK):
            # Row r of W is w relabelled by permutation r: sample i weighs w[perm[r, i]].
            wp = w[perms]
            perm_stats = np.einsum("ij,ij->i", wp @ k, wp)
            exceed += int(np.count_nonzero(_is_tie_or_more(perm_stats, observed)))
    else:
        codes = np.unique(np.concatenate([codes_all[ix], codes_all[x.shape[0] + iy]]),
                          return_inverse=True)[1]
        done = 0
        while done < n_permutations:
            c = min(_PERM_CHUNK, n_permutations - done)
            wp = _cluster_permutation_weights(codes, n_x, c, perm_rng)
            perm_stats = np.einsum("ij,ij->i", wp @ k, wp)
            exceed += int(np.count_nonzero(_is_tie_or_more(perm_stats, observed)))
            done += c

    method = "RBF-kernel MMD^2 (biased V-statistic), median-heuristic bandwidth, permutation test"
    if bandwidth is not None:
        method = "RBF-kernel MMD^2 (biased V-statistic), fixed bandwidth, permutation test"
    if subsampled:
        method += f"; sides subsampled to at most {max_samples} rows"
    if codes_all is not None:
        method += "; whole clusters (subjects) permuted"
    return {
        "statistic": observed,
        "p_value": (1 + exceed) / (1 + n_permutations),
        "bandwidth": sigma,
        "n_x": int(n_x),
        "n_y": int(n_y),
        "n_x_total": int(x.shape[0]),
        "n_y_total": int(y.shape[0]),
        "n_permutations": n_permutations,
        "subsampled": bool(subsampled),
        "clusters": None if codes_all is None else int(np.unique(codes_all).size),
        "method": method,
    }


def permutation_mmd_naive(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 100,
    bandwidth: float | None = None,
    seed: int = 0,
) -> dict:
    """Reference MMD permutation test: a plain Python loop, one permutation at a time.

    Only for the benchmark baseline and as a test oracle for :func:`mmd_test`: same kernel,
    bandwidth, statistic (from block means of the pooled kernel) and, through the shared
    permutation stream, the same permutations; no subsampling. Do not use it on real data.

    Returns:
        ``statistic``, ``p_value``, ``bandwidth``, ``n_x``, ``n_y``, ``n_permutations``.
    """
    x, y = _prepare_pair(x, y)
    n_permutations = _positive_int(n_permutations, "n_permutations")
    _, perm_rng = _streams(seed)
    n_x, n_y = x.shape[0], y.shape[0]
    k, sigma = _pooled_kernel(x, y, bandwidth)

    def stat(ix: np.ndarray, iy: np.ndarray) -> float:
        kxx, kyy, kxy = k[np.ix_(ix, ix)], k[np.ix_(iy, iy)], k[np.ix_(ix, iy)]
        return float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean())

    observed = stat(np.arange(n_x), np.arange(n_x, n_x + n_y))
    exceed = 0
    for perms in _permutation_chunks(n_x + n_y, n_permutations, perm_rng, chunk=1):
        is_x = perms[0] < n_x  # same labelling as mmd_test: sample i gets w[perm[i]]
        s = stat(np.flatnonzero(is_x), np.flatnonzero(~is_x))
        exceed += int(_is_tie_or_more(np.array([s]), observed)[0])
    return {
        "statistic": observed,
        "p_value": (1 + exceed) / (1 + n_permutations),
        "bandwidth": sigma,
        "n_x": int(n_x),
        "n_y": int(n_y),
        "n_permutations": n_permutations,
    }


# --------------------------------------------------------------------------------------------
# classifier two-sample test


def _auc_delong(neg: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    """ROC AUC of ``pos`` over ``neg`` (ties count 1/2) and its DeLong standard error.

    Uses midranks (Sun & Xu, 2014): a positive's placement value is the fraction of negatives
    below it, a negative's the fraction of positives above it.
    """
    n0, n1 = neg.size, pos.size
    ranks = sps.rankdata(np.concatenate([neg, pos]))
    r_neg, r_pos = sps.rankdata(neg), sps.rankdata(pos)
    auc = float((ranks[n0:].sum() - n1 * (n1 + 1) / 2.0) / (n0 * n1))
    v10 = (ranks[n0:] - r_pos) / n0
    v01 = 1.0 - (ranks[:n0] - r_neg) / n1
    var = v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0
    return auc, float(np.sqrt(max(var, 0.0)))


def _classifier() -> Any:
    return make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)
    )


def domain_classifier_test(
    x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, max_samples: int = 20000,
    groups_x: Any = None, groups_y: Any = None,
) -> dict:
    """Classifier two-sample test: can logistic regression tell production from reference?

    x is labelled 0 (reference), y 1 (production); a standardised, class-balanced logistic
    regression is cross-validated with stratified k-fold and every row gets an out-of-fold
    P(production). A side with more than ``max_samples`` rows is fitted on a seeded subsample
    of that size; its other rows are scored by the average of the fold models (they were
    seen by none, so those scores are out of sample too). ``folds`` drops to the smaller side's
    row count when a side is tiny (never below 2).

    With cluster ids (``groups_x``/``groups_y``: subject or video), folds never split a
    cluster (a classifier could otherwise recognise *people* it saw in training), and the
    p-value and interval are computed on cluster-mean scores, one independent unit per
    person; ``auc`` stays the row-level AUC.

    Returns:
        ``auc`` (ROC AUC of all held-out scores, production as positive), ``auc_ci`` (DeLong
        95%, clipped to [0, 1]), ``p_value`` (one-sided, AUC > 0.5: Mann-Whitney U normal
        approximation with tie and continuity correction), ``scores_x`` / ``scores_y``
        (float64 numpy arrays in input order, full length), ``n_x``, ``n_y`` (input rows),
        ``n_x_fit``, ``n_y_fit`` (rows used to fit), ``subsampled``, ``folds`` (used),
        ``method``.
    """
    x, y = _prepare_pair(x, y)
    folds = _positive_int(folds, "folds", minimum=2)
    max_samples = _positive_int(max_samples, "max_samples", minimum=2)
    n_x, n_y = x.shape[0], y.shape[0]
    codes_all = _cluster_codes(groups_x, groups_y, n_x, n_y)
    rng = np.random.default_rng(seed)
    fx, fy = _subsample(x, max_samples, rng), _subsample(y, max_samples, rng)
    k = max(2, min(folds, fx.size, fy.size))

    features = np.concatenate([x[fx], y[fy]], axis=0)
    labels = np.concatenate([np.zeros(fx.size, np.int64), np.ones(fy.size, np.int64)])
    oof = np.empty(labels.size)
    models = []
    if codes_all is not None:
        fit_codes = np.concatenate([codes_all[fx], codes_all[n_x + fy]])
        k = max(2, min(k, np.unique(codes_all[fx]).size, np.unique(codes_all[n_x + fy]).size))
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            features, labels, fit_codes)
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(features, labels)
    for train, test in splits:
        model = _classifier().fit(features[train], labels[train])
        oof[test] = model.predict_proba(features[test])[:, 1]
        models.append(model)

    def score_all(a: np.ndarray, fitted: np.ndarray, oof_part: np.ndarray) -> np.ndarray:
        scores = np.empty(a.shape[0])
        scores[fitted] = oof_part
        rest = np.setdiff1d(np.arange(a.shape[0]), fitted, assume_unique=True)
        if rest.size:
            scores[rest] = np.mean([m.predict_proba(a[rest])[:, 1] for m in models], axis=0)
        return scores

    scores_x = score_all(x, fx, oof[: fx.size])
    scores_y = score_all(y, fy, oof[fx.size :])

    auc, se = _auc_delong(scores_x, scores_y)
    unit_x, unit_y = scores_x, scores_y
    if codes_all is not None:
        # one unit per cluster: its mean out-of-fold score
        pooled = np.concatenate([scores_x, scores_y])
        sums = np.bincount(codes_all, weights=pooled)
        means = sums / np.bincount(codes_all)
        unit_x, unit_y = means[np.unique(codes_all[:n_x])], means[np.unique(codes_all[n_x:])]
        cluster_auc, se = _auc_delong(unit_x, unit_y) if min(unit_x.size, unit_y.size) >= 2 else (auc, np.inf)
    if np.ptp(np.concatenate([unit_x, unit_y])) == 0 or min(unit_x.size, unit_y.size) < 2:
        p_value = 1.0  # all scores tied (or one unit a side): no evidence, and U has no variance
    else:
        p_value = float(
            sps.mannwhitneyu(
                unit_y, unit_x, alternative="greater", method="asymptotic"
            ).pvalue
        )
    centre = auc if codes_all is None else cluster_auc
    return {
        "auc": auc,
        "auc_ci": [float(max(0.0, centre - 1.959964 * se)), float(min(1.0, centre + 1.959964 * se))],
        "p_value": p_value,
        "clusters": None if codes_all is None else [int(unit_x.size), int(unit_y.size)],
        "cluster_auc": None if codes_all is None else float(cluster_auc),
        "scores_x": scores_x,
        "scores_y": scores_y,
        "n_x": int(n_x),
        "n_y": int(n_y),
        "n_x_fit": int(fx.size),
        "n_y_fit": int(fy.size),
        "subsampled": bool(fx.size < n_x or fy.size < n_y),
        "folds": int(k),
        "method": "standardised class-balanced logistic regression, stratified "
        f"{'group ' if codes_all is not None else ''}{k}-fold out-of-fold scores; DeLong AUC CI; "
        "one-sided Mann-Whitney p-value" + (" on cluster-mean scores" if codes_all is not None else ""),
    }


# --------------------------------------------------------------------------------------------
# label shift


def _priors_from_weights(w: np.ndarray, p_src: np.ndarray) -> np.ndarray:
    """Target priors ``q = max(w, 0) * p``, renormalised (rows of a batch independently).

    A degenerate all-zero solution falls back to the source priors (no evidence of shift).
    """
    q = np.clip(w, 0.0, None) * p_src
    total = q.sum(axis=-1, keepdims=True)
    return np.where(total > 0, q / np.where(total > 0, total, 1.0), p_src)


def _condition_number(c: np.ndarray) -> tuple[float, bool]:
    """2-norm condition number of ``c``, capped at 1e16, and whether ``c`` is singular.

    A singular C (a class never predicted, or absent from validation) has no finite condition
    number; the cap (~1/machine epsilon, "singular to working precision") keeps the result
    valid JSON and comparable with thresholds.
    """
    s = np.linalg.svd(c, compute_uv=False)
    singular = bool(s[-1] <= s[0] * np.finfo(float).eps * max(c.shape))
    cond = _COND_CAP if singular else min(float(s[0] / s[-1]), _COND_CAP)
    return cond, singular


def bbse_priors(
    val_true: np.ndarray,
    val_pred: np.ndarray,
    target_pred: np.ndarray,
    num_classes: int,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """Black-box shift estimation of the target's class priors (Lipton et al., 2018).

    Args:
        val_true: ``(n_val,)`` true class ids of labelled validation data (source domain).
        val_pred: ``(n_val,)`` the model's predicted class ids on the same rows.
        target_pred: ``(n_target,)`` predicted class ids on (unlabelled) target data.
        num_classes: ``K >= 2``.
        n_bootstrap: bootstrap replicates for the intervals.
        seed: seeds the bootstrap.

    ``C[i, j] = P(yhat=i, y=j)`` (validation), ``mu[i] = P_target(yhat=i)``; the importance
    weights solve ``C w = mu`` in the least-squares sense (pseudo-inverse, minimum norm when
    ``C`` is singular), are clipped at 0, and ``q = w * p_val`` is renormalised. A class absent
    from validation gets prior 0 (it cannot be estimated). Bootstrap: rows of the validation
    set and of the target are resampled independently; a row bootstrap of a categorical
    sample is a multinomial draw of its cell counts, which is how it is drawn here (exact
    and O(B K^2) instead of O(B n)).

    Returns:
        ``method`` ("bbse"), ``estimated_priors``, ``ci_low``, ``ci_high`` (95% percentile),
        ``weights`` (``q / p_val`` after renormalisation, 0 for classes absent from
        validation), ``source_priors`` (validation priors), ``condition_number`` of ``C``
        (large = unreliable; capped at 1e16), ``singular`` (``C`` is rank-deficient: some
        classes' priors are not identifiable), ``n_val``, ``n_target``.
    """
    k = _positive_int(num_classes, "num_classes", minimum=2)
    n_bootstrap = _positive_int(n_bootstrap, "n_bootstrap")
    val_true = as_class_ids(val_true, "val_true", k)
    val_pred = as_class_ids(val_pred, "val_pred", k)
    target_pred = as_class_ids(target_pred, "target_pred", k)
    if val_true.size != val_pred.size:
        raise ValueError(
            f"val_true has {val_true.size} labels but val_pred has {val_pred.size}"
        )
    n_val, n_t = val_true.size, target_pred.size

    joint_counts = np.bincount(val_pred * k + val_true, minlength=k * k).astype(np.float64)
    joint = joint_counts.reshape(k, k) / n_val  # rows: predicted class, columns: true class
    p_val = joint.sum(axis=0)
    mu = np.bincount(target_pred, minlength=k) / n_t
    w = np.linalg.pinv(joint) @ mu
    q = _priors_from_weights(w, p_val)

    rng = np.random.default_rng(seed)
    joint_b = rng.multinomial(n_val, joint_counts / n_val, size=n_bootstrap).reshape(-1, k, k)
    joint_b = joint_b / n_val
    mu_b = rng.multinomial(n_t, mu, size=n_bootstrap) / n_t
    w_b = (np.linalg.pinv(joint_b) @ mu_b[:, :, None])[:, :, 0]
    q_b = _priors_from_weights(w_b, joint_b.sum(axis=1))
    ci_low, ci_high = _percentile_ci(q_b)
    simultaneous = _simultaneous(q_b)

    weights = np.divide(q, p_val, out=np.zeros(k), where=p_val > 0)
    cond, singular = _condition_number(joint)
    return {
        "method": "bbse",
        "estimated_priors": [float(v) for v in q],
        "ci_low": ci_low,
        "ci_high": ci_high,
        **simultaneous,
        "weights": [float(v) for v in weights],
        "source_priors": [float(v) for v in p_val],
        "condition_number": cond,
        "singular": singular,
        "n_val": int(n_val),
        "n_target": int(n_t),
    }


def _as_target_probs(probs: Any, num_classes: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"target_probs must be a 2-D (n, K) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("target_probs is empty: need at least 1 row")
    if arr.shape[1] != num_classes:
        raise ValueError(
            f"target_probs has {arr.shape[1]} classes but source_priors has {num_classes}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("target_probs contains NaN or infinite values")
    if arr.min() < 0:
        raise ValueError("target_probs must be non-negative probabilities (softmax first)")
    sums = arr.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _PROB_SUM_ATOL):
        raise ValueError("target_probs rows must sum to 1 (apply softmax to logits first)")
    return arr / sums[:, None]


def _em_batch(
    probs: np.ndarray,
    row_weights: np.ndarray,
    p_src: np.ndarray,
    q0: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, int, bool]:
    """Saerens EM for a batch of row weightings at once.

    ``row_weights`` is ``(b, n)`` (each row sums to 1: a bootstrap resample as multiplicities),
    ``q0`` the ``(b, K)`` start. Returns the ``(b, K)`` priors, iterations run, and whether every
    member moved less than ``tol`` (max abs) in the last iteration.
    """
    q = q0.copy()
    for it in range(1, max_iter + 1):
        # p(y|x) under the new priors: reweight the source posterior by q / p_src, renormalise.
        post = probs[None, :, :] * (q / p_src)[:, None, :]
        post /= np.maximum(post.sum(axis=2, keepdims=True), np.finfo(float).tiny)
        q_new = np.einsum("bn,bnk->bk", row_weights, post)
        delta = float(np.abs(q_new - q).max())
        q = q_new
        if delta < tol:
            return q, it, True
    return q, max_iter, False


def em_priors(
    target_probs: np.ndarray,
    source_priors: np.ndarray,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
    n_bootstrap: int = 200,
    seed: int = 0,
    bootstrap_max_iter: int | None = None,
) -> dict:
    """EM re-estimation of the target's class priors (Saerens et al., 2002).

    Args:
        target_probs: ``(n, K)`` model probabilities on target data (softmax; trustworthy only
            if calibrated on the source distribution).
        source_priors: ``(K,)`` class priors the model's probabilities reflect (its training
            / validation mix); every entry must be positive.
        max_iter, tol: EM stops when no prior moves more than ``tol`` in one iteration.
        n_bootstrap: bootstrap replicates (target rows resampled) for the 95% intervals; they
            are run together as one batched EM, warm-started at the point estimate.
        bootstrap_max_iter: iteration cap of the replicates (default ``max_iter``): started at
            the point estimate they need few, and on 10k rows the batched EM costs
            ``n_bootstrap x n x K`` per iteration.
        seed: seeds the bootstrap.

    Returns:
        ``method`` ("em"), ``estimated_priors``, ``ci_low``, ``ci_high``, ``source_priors``,
        ``iterations``, ``converged`` (of the point estimate), ``n_target``.
    """
    p_src = _as_prior(source_priors, "source_priors")
    if p_src.min() <= 0:
        raise ValueError("source_priors must be positive for every class (EM divides by them)")
    k = p_src.size
    probs = _as_target_probs(target_probs, k)
    max_iter = _positive_int(max_iter, "max_iter")
    n_bootstrap = _positive_int(n_bootstrap, "n_bootstrap")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    n = probs.shape[0]

    uniform = np.full((1, n), 1.0 / n)
    q_hat, iterations, converged = _em_batch(probs, uniform, p_src, p_src[None], max_iter, tol)

    rng = np.random.default_rng(seed)
    block = max(1, _EM_BLOCK_ELEMENTS // (n * k))
    boot = []
    for start in range(0, n_bootstrap, block):
        b = min(block, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        # Bootstrap resample as row multiplicities: one bincount over offset indices.
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
        row_weights = counts.reshape(b, n) / n
        q_b, _, _ = _em_batch(probs, row_weights, p_src, np.repeat(q_hat, b, 0),
                              bootstrap_max_iter or max_iter, tol)
        boot.append(q_b)
    boot_all = np.concatenate(boot, axis=0)
    ci_low, ci_high = _percentile_ci(boot_all)
    simultaneous = _simultaneous(boot_all)
    return {
        "method": "em",
        "estimated_priors": [float(v) for v in q_hat[0]],
        "ci_low": ci_low,
        "ci_high": ci_high,
        **simultaneous,
        "source_priors": [float(v) for v in p_src],
        "iterations": int(iterations),
        "converged": bool(converged),
        "n_target": int(n),
    }


def prior_shift_test(estimated: dict, source_priors: np.ndarray | None = None) -> dict:
    """Summarise whether the class priors moved, given a bbse_priors / em_priors result.

    Args:
        estimated: a dict with ``estimated_priors``, ``ci_low``, ``ci_high`` (and
            ``source_priors`` unless given).
        source_priors: the priors to compare against; default ``estimated["source_priors"]``.

    Returns:
        ``method`` (of the estimate), ``tv_distance`` (total variation, ``0.5 * sum |q - p|``),
        ``shift_detected`` (some class's 95% interval excludes its source prior),
        ``changed_classes`` (those classes as ``{"class", "source", "estimated", "ci"}``,
        largest ``|q - p|`` first), ``largest_increase`` / ``largest_decrease``
        (``{"class", "delta"}``).

    When ``estimated`` carries Bonferroni ``simultaneous_ci_low/high`` (bbse_priors and
    em_priors do), ``shift_detected`` and ``changed_classes`` use them: with K per-class 95%
    intervals and no shift, some interval misses its source prior far more often than 5% of
    the time (about 25% for K=4 in simulation). ``changed_classes[*]["ci"]`` is then the
    simultaneous interval.
    """
    missing = [key for key in ("estimated_priors", "ci_low", "ci_high") if key not in estimated]
    if missing:
        raise ValueError(f"estimated lacks {', '.join(missing)} (pass a bbse/em result)")
    q = _as_prior(estimated["estimated_priors"], "estimated_priors")
    k = q.size
    if source_priors is None:
        if "source_priors" not in estimated:
            raise ValueError("no source_priors given and none in estimated")
        source_priors = estimated["source_priors"]
    p = _as_prior(source_priors, "source_priors", k)
    lo = np.asarray(estimated.get("simultaneous_ci_low", estimated["ci_low"]), dtype=np.float64)
    hi = np.asarray(estimated.get("simultaneous_ci_high", estimated["ci_high"]), dtype=np.float64)
    if lo.shape != (k,) or hi.shape != (k,):
        raise ValueError(f"ci_low / ci_high must have {k} entries like estimated_priors")

    delta = q - p
    outside = np.flatnonzero((p < lo) | (p > hi))
    order = outside[np.argsort(-np.abs(delta[outside]), kind="stable")]
    changed = [
        {
            "class": int(c),
            "source": float(p[c]),
            "estimated": float(q[c]),
            "ci": [float(lo[c]), float(hi[c])],
        }
        for c in order
    ]
    up, down = int(np.argmax(delta)), int(np.argmin(delta))
    return {
        "method": estimated.get("method"),
        "tv_distance": float(0.5 * np.abs(delta).sum()),
        "shift_detected": bool(changed),
        "changed_classes": changed,
        "largest_increase": {"class": up, "delta": float(delta[up])},
        "largest_decrease": {"class": down, "delta": float(delta[down])},
    }
