"""``ferwild audit``: what changed between the reference data a run was trained on and new
production data, and what it costs.

The audit answers the study's Task 4 with measurements instead of guesses:

* **data health** -- alignment-failure rates (with a test of the difference, per class where
  labels exist) and image statistics (brightness, contrast, sharpness, face size, pose
  proxies from landmarks, detector confidence), largest differences first;
* **performance** (when production is labelled) -- accuracy and macro-F1 overall and per
  class on both sides with bootstrap CIs, and the drop;
* **covariate shift** (no labels needed) -- an MMD permutation test and a domain classifier
  on the model's penultimate embeddings (reference *test* split vs production: the reference
  side must be held out, or memorised training embeddings would look like a shift), per-sample
  "unlike the reference" scores, and which recorded attributes changed;
* **label shift** (no labels needed) -- production class priors by black-box shift
  estimation (the validation confusion matrix) and by EM prior adjustment, with bootstrap
  intervals, compared to the truth when labels exist;
* **confidence and calibration drift** -- mean max-probability, entropy, ECE;
* **subgroup bias** -- per-group metrics with CIs for every attribute column, the largest
  gaps, and which classes absorb a group's errors;
* **verdict and advice** -- a short list, each line carrying its evidence.

Every number comes from one pass of the model per dataset, cached (``ferwild.audit.model_outputs``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.model_outputs import ModelOutputs, compute_outputs
from ferwild.config import Settings, check_choice, check_int, check_number
from ferwild.data.prepared import ATTR_PREFIX, COL, PreparedDataset
from ferwild.data.votes import has_votes, soft_targets
from ferwild.files import save_json_atomic
from ferwild.formatting import p_text, pct
from ferwild.metrics import apply_temperature, crowd_metrics, fit_temperature, jsonable, wilson_interval
from ferwild.runs import RunError

AUDIT_JSON = "audit.json"
SCORES = "production_scores.parquet"


@dataclass
class AuditConfig(Settings):
    """Settings of an audit. Validated on construction."""

    alpha: float = 0.05               # significance level of every test the verdict uses
    reference_split: str = "test"     # reference rows whose metrics production is compared with
    # Held-out reference rows for the shift tests: never trained on, and as many as possible,
    # since people (not photos) are the units when subject ids exist.
    shift_split: str = "val+test"
    calibration_split: str = "val"    # labelled rows for the label-shift confusion matrix
    production_split: str | None = None  # None: every usable row of the production set
    n_permutations: int = 1000
    max_samples: int = 2000           # per side, for the MMD kernel matrix
    pca_dim: int = 32
    n_bootstrap: int = 1000
    min_group_size: int = 30          # smaller groups are reported, never ranked
    attributes: tuple[str, ...] | None = None  # None: every attr_* column
    top_k: int = 24                   # production samples shown as "most unlike the reference"
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    which: str = "best"
    # Photos aligned with the manifest's landmarks never met a detector in `prepare`; this many
    # of them per side are run through MTCNN as the deployed recogniser runs it (0: skip).
    detector_check_images: int = 200

    def __post_init__(self):
        self.alpha = check_number(self.alpha, "alpha", low=0, high=1, low_open=True, high_open=True)
        for name in ("n_permutations", "max_samples", "pca_dim", "n_bootstrap", "min_group_size",
                     "batch_size"):
            setattr(self, name, check_int(getattr(self, name), name, 1))
        for name in ("detector_check_images", "top_k", "seed"):
            setattr(self, name, check_int(getattr(self, name), name, 0))
        check_choice(self.which, "which", ("best", "last"))
        if self.attributes is not None:
            self.attributes = tuple(a if a.startswith(ATTR_PREFIX) or a in ("source", COL.split) else ATTR_PREFIX + a
                                    for a in self.attributes)


# --------------------------------------------------------------------------------------------
# small helpers


def _f(value: Any, digits: int = 6) -> float | None:
    """JSON-safe rounded float (NaN/inf -> None)."""
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(1)


def _class_shares(ids: np.ndarray, k: int) -> list[float]:
    ids = ids[ids >= 0]
    counts = np.bincount(ids, minlength=k).astype(float)
    return [_f(c / max(1, counts.sum())) for c in counts]


def cluster_ids(rows: pd.DataFrame) -> np.ndarray | None:
    """Per-row cluster ids for the shift tests: ``subject``, else ``video``, else ``None``.

    Images of one person are not independent draws; the tests then treat people as the units.
    """
    for col in (COL.subject, COL.video):
        if col in rows and (rows[col].astype(str) != "").any():
            return rows[col].astype(str).to_numpy(dtype=object)
    return None


def _attribute_shift_by_unit(base: pd.DataFrame, prod: pd.DataFrame, attrs: list[str]) -> list[dict]:
    """``attribute_shift`` with one row per person for identity attributes (constant within
    every subject: gender, hair...), so the chi-square counts people, not their photos."""
    from ferwild.audit.groups import attribute_shift

    out = []
    for attr in attrs:
        frames = []
        for frame in (base, prod):
            ids = cluster_ids(frame)
            if ids is not None:
                keyed = frame.assign(_unit=np.where(ids == "", frame.index.astype(str), ids))
                if (keyed.groupby("_unit")[attr].nunique() <= 1).all():
                    frame = keyed.drop_duplicates("_unit")
            frames.append(frame)
        out += attribute_shift(frames[0], frames[1], attributes=[attr])
    return sorted(out, key=lambda d: -(d.get("cramers_v") or 0))


def _attribute_columns(config: AuditConfig, *frames: pd.DataFrame) -> list[str]:
    if config.attributes is not None:
        missing = [a for a in config.attributes if not all(a in f for f in frames)]
        if missing:
            avail = sorted(set.intersection(*(set(c for c in f if c.startswith(ATTR_PREFIX)) for f in frames)))
            raise RunError(f"attribute(s) {missing} not in every dataset; available: {avail or 'none'}")
        return list(config.attributes)
    cols = [c for c in frames[0].columns if c.startswith(ATTR_PREFIX) and all(c in f for f in frames[1:])]
    # a column that is empty everywhere says nothing
    return [c for c in cols if any((f[c].astype(str) != "").any() for f in frames)]


# --------------------------------------------------------------------------------------------
# the sections


def detector_check(prepared: PreparedDataset, *, min_confidence: float, max_images: int = 200,
                   seed: int = 0) -> dict[str, Any] | None:
    """What the deployed detector sees on photos that ``prepare`` aligned with given landmarks.

    When a manifest supplies landmarks, ``prepare`` aligns with them and never runs a detector,
    so its alignment-failure rate says nothing about deployment, where the recogniser must find
    each face with MTCNN. This runs MTCNN (threshold ``min_confidence``, as the recogniser does)
    on up to ``max_images`` of those rows' original files (a seeded sample) and counts the
    photos in which it finds no face.

    Returns:
        None when no row was aligned with given landmarks; else ``{"landmark_rows", "checked",
        "unreadable", "no_face", "rate", "ci" (Wilson 95%), "min_confidence"}``.
    """
    from ferwild.data.faces import FaceDetector
    from ferwild.data.images import load_image

    m = prepared.manifest
    rows = m[(m[COL.augmented_from].astype(str) == "") & (m[COL.align_method].astype(str) == "landmarks")
             & (m[COL.status].astype(str) == "aligned")]
    if rows.empty or max_images == 0:
        return None
    sample = rows.sample(n=min(max_images, len(rows)), random_state=seed) if len(rows) > max_images else rows
    detector = FaceDetector(min_confidence=min_confidence)
    images, unreadable = [], 0
    for path in sample[COL.path].astype(str):
        try:
            images.append(load_image(path).array)
        except Exception:  # noqa: BLE001 - a moved or broken original is counted, not fatal
            unreadable += 1
    found = detector.detect(images) if images else []
    no_face = sum(1 for r in found if isinstance(r, Exception) or not r)
    checked = len(images)
    return {"landmark_rows": int(len(rows)), "checked": checked, "unreadable": unreadable, "no_face": no_face,
            "rate": no_face / checked if checked else None,
            "ci": list(wilson_interval(no_face, checked)) if checked else None, "min_confidence": float(min_confidence)}


def data_health(reference: PreparedDataset, production: PreparedDataset,
                config: AuditConfig | None = None) -> dict[str, Any]:
    """Alignment failures (with a test), what the deployed detector finds where landmarks were
    given (:func:`detector_check`), and image statistics, reference vs production."""
    from ferwild.audit.groups import alignment_failure, compare_statistics, image_statistics, proportion_test

    ref_fail, prod_fail = alignment_failure(reference.manifest), alignment_failure(production.manifest)
    test = proportion_test(ref_fail["failed"], ref_fail["attempted"], prod_fail["failed"], prod_fail["attempted"])
    per_class = {}
    for name in sorted(set(ref_fail["per_class"]) & set(prod_fail["per_class"])):
        a, b = ref_fail["per_class"][name], prod_fail["per_class"][name]
        if name == "":
            continue
        per_class[name] = {"reference": a["rate"], "production": b["rate"],
                           **{k: v for k, v in proportion_test(a["failed"], a["attempted"], b["failed"],
                                                               b["attempted"]).items() if k in ("p_value", "test")}}

    def stats(prepared: PreparedDataset) -> pd.DataFrame:
        m = prepared.manifest
        originals = m[(m[COL.augmented_from].astype(str) == "") & (m[COL.shard].astype(str) != "")]
        return image_statistics(originals)

    comparison = compare_statistics(stats(reference), stats(production))
    config = config or AuditConfig()
    threshold = reference.face_alignment().min_confidence
    detector = {side: detector_check(prepared, min_confidence=threshold, max_images=config.detector_check_images,
                                     seed=config.seed)
                for side, prepared in (("reference", reference), ("production", production))}
    return {
        "alignment_failure": {"reference": ref_fail["rate"], "production": prod_fail["rate"],
                              "reference_detail": ref_fail, "production_detail": prod_fail,
                              "test": test, "per_class": per_class,
                              # what became of a photo without a face: a centre crop, or nothing
                              "production_fallback": (production.summary.get("config") or {}).get("fallback", "keep")},
        "detector_check": detector,
        "image_statistics": comparison,
    }


def performance(ref: ModelOutputs, prod: ModelOutputs, config: AuditConfig) -> dict[str, Any] | None:
    """Accuracy / macro-F1 / per-class metrics with bootstrap CIs on both sides, and the drop;
    a side with crowd votes (FER+) also gets ``crowd`` (:func:`ferwild.metrics.crowd_metrics`)."""
    from ferwild.audit.groups import bootstrap_metrics
    from ferwild.metrics import classification_metrics

    if not ref.labelled or not prod.labelled:
        return None
    k = len(ref.label_names)
    out: dict[str, Any] = {}
    for side, o in (("reference", ref), ("production", prod)):
        boot = bootstrap_metrics(o.labels, o.preds, k, n_bootstrap=config.n_bootstrap, seed=config.seed)
        full = classification_metrics(o.labels, o.probs, o.label_names)
        out[side] = {
            "n": int(len(o)),
            "accuracy": boot["accuracy"]["value"], "macro_f1": boot["macro_f1"]["value"],
            "accuracy_ci": [boot["accuracy"]["ci_low"], boot["accuracy"]["ci_high"]],
            "macro_f1_ci": [boot["macro_f1"]["ci_low"], boot["macro_f1"]["ci_high"]],
            "per_class": {name: {**full["per_class"][name],
                                 "recall_ci": [boot["per_class"].get(str(i), {}).get("recall", {}).get("ci_low"),
                                               boot["per_class"].get(str(i), {}).get("recall", {}).get("ci_high")]}
                          for i, name in enumerate(o.label_names)},
            "confusion": full["confusion"],
            "ece": full["ece"],
        }
        if has_votes(o.rows):  # crowd labels (FER+): the figures against the votes too
            out[side]["crowd"] = crowd_metrics(o.probs, soft_targets(o.rows, o.label_names), o.labels,
                                               o.label_names, n_bootstrap=config.n_bootstrap, seed=config.seed)
    drop = {}
    for metric in ("accuracy", "macro_f1"):
        a, b = out["reference"], out["production"]
        diff = b[metric] - a[metric]
        # independent samples: combine the two bootstrap half-widths (normal approximation)
        half = math.sqrt(sum(((s[f"{metric}_ci"][1] - s[f"{metric}_ci"][0]) / 2) ** 2 for s in (a, b)))
        drop[metric] = {"difference": _f(diff), "ci": [_f(diff - half), _f(diff + half)],
                        "significant": bool(abs(diff) > half)}
    drop["per_class_f1"] = {name: _f(out["production"]["per_class"][name]["f1"]
                                     - out["reference"]["per_class"][name]["f1"]) for name in ref.label_names}
    out["drop"] = drop
    return out


CLASSIFIER_MAX_DIM = 256


def shift_tests(ref: ModelOutputs, prod: ModelOutputs, *, n_permutations: int = 1000, max_samples: int = 2000,
                pca_dim: int = 32, seed: int = 0) -> tuple[dict, dict]:
    """The two label-free two-sample tests on penultimate embeddings, people as units when
    ``subject``/``video`` ids exist (``cluster_ids``).

    * MMD on the embeddings standardised and projected on the first ``pca_dim`` principal
      components of the *pooled* sample (a reference-only PCA drops exactly the directions in
      which production differs, e.g. occlusion that is rare in the reference; the map is a
      symmetric function of the pooled rows, so the permutation test stays exact);
    * a logistic-regression domain classifier on all standardised dimensions (PCA only above
      ``CLASSIFIER_MAX_DIM``): a shift along a few low-variance directions is invisible after
      a small PCA but plain to a linear classifier.
    """
    from ferwild.audit.stats import domain_classifier_test, mmd_test, reduce_dims

    pooled = np.vstack([ref.features, prod.features])
    _, x, y = reduce_dims(pooled, ref.features, prod.features, dim=pca_dim, seed=seed)
    dim = min(CLASSIFIER_MAX_DIM, ref.features.shape[1])
    _, xf, yf = reduce_dims(pooled, ref.features, prod.features, dim=dim, seed=seed)
    gx, gy = cluster_ids(ref.rows), cluster_ids(prod.rows)
    groups = {} if gx is None and gy is None else {"groups_x": gx, "groups_y": gy}
    mmd = mmd_test(x, y, n_permutations=n_permutations, max_samples=max_samples, seed=seed, **groups)
    domain = domain_classifier_test(xf, yf, seed=seed, **groups)
    mmd["_dim"], domain["_dim"] = int(x.shape[1]), int(xf.shape[1])
    return mmd, domain


def covariate_shift(ref: ModelOutputs, prod: ModelOutputs, config: AuditConfig,
                    reference_rows: pd.DataFrame | None = None) -> dict[str, Any]:
    """Two-sample tests on the embeddings, per-sample scores, and which attributes changed.

    Attribute distributions need no model, so they compare ``reference_rows`` (every original
    reference row, when given) with production: a small held-out split drawn from a few
    subjects would make identity attributes (hair, skin tone) look shifted by chance.
    """
    mmd, domain = shift_tests(ref, prod, n_permutations=config.n_permutations, max_samples=config.max_samples,
                              pca_dim=config.pca_dim, seed=config.seed)
    x_dim = mmd.pop("_dim")
    scores_y = np.asarray(domain.pop("scores_y"), dtype=float)
    scores_x = np.asarray(domain.pop("scores_x"), dtype=float)
    base = ref.rows if reference_rows is None else reference_rows
    attrs = _attribute_columns(config, base, prod.rows)
    changed = _attribute_shift_by_unit(base, prod.rows, attrs) if attrs else []
    # Two tests, one decision: Bonferroni over the two p-values keeps the false-alarm rate at
    # alpha while using the more powerful of the two on each data set (the kernel test for
    # diffuse changes, the linear classifier for a shift along a few directions).
    combined = min(1.0, 2 * min(mmd["p_value"], domain["p_value"]))
    pooled_attrs = [a for a in _attribute_columns(config, ref.rows, prod.rows)] if attrs else []
    return {
        "mmd_p_value": _f(mmd["p_value"]), "mmd_statistic": _f(mmd["statistic"], 8),
        "domain_auc": _f(domain["auc"]), "domain_auc_ci": domain.get("auc_ci"),
        "domain_p_value": _f(domain.get("p_value"), 12),
        "p_value": _f(combined, 12),
        "detected": bool(combined < config.alpha),
        "alpha": config.alpha,
        "mmd": mmd, "domain_classifier": {k: v for k, v in domain.items() if not k.startswith("_")},
        "embedding": {"dim": int(ref.features.shape[1]), "pca_dim": x_dim,
                      "classifier_dim": int(domain.get("_dim", ref.features.shape[1])),
                      "reference_rows": int(len(ref)), "production_rows": int(len(prod))},
        "attribute_shift": changed,
        "shift_attribution": shift_attribution(ref.rows, prod.rows, scores_x, scores_y, pooled_attrs,
                                               config.min_group_size),
        "_scores": (scores_x, scores_y),
    }


def shift_attribution(ref_rows: pd.DataFrame, prod_rows: pd.DataFrame, scores_x: np.ndarray,
                      scores_y: np.ndarray, attributes: list[str], min_group_size: int = 30) -> list[dict]:
    """Which attribute carries the shift the *model* sees.

    The gap between the mean out-of-fold domain score of production and of the held-out
    reference splits (Oaxaca-Blinder) into a composition part, ``sum_g (p_prod(g) - p_ref(g))
    * s(g)`` with ``s(g)`` the group's pooled mean score, and a within-group rest. An attribute
    whose mix changed *and* whose groups the embeddings tell apart explains much of the gap
    (``explained_share``); one whose mix changed but which the embeddings ignore (a recorded
    hair colour, say), or one the embeddings see but whose mix did not change, explains
    little. ``eta_squared`` (share of the pooled score variance between groups) is kept for
    reference. Sorted by ``explained_share``, largest first.
    """
    from ferwild.audit.groups import attribute_groups

    scores = np.concatenate([scores_x, scores_y])
    is_prod = np.r_[np.zeros(len(scores_x), bool), np.ones(len(scores_y), bool)]
    gap = float(scores_y.mean() - scores_x.mean())
    total = float(((scores - scores.mean()) ** 2).sum())
    out = []
    for attr in attributes:
        groups = attribute_groups(pd.concat([ref_rows[attr], prod_rows[attr]], ignore_index=True))
        frame = pd.DataFrame({"g": groups.to_numpy(), "s": scores, "prod": is_prod})
        stats = frame.groupby("g", sort=True).agg(n=("s", "size"), score=("s", "mean"))
        if len(stats) < 2 or total <= 0:
            continue
        share_ref = frame[~frame["prod"]]["g"].value_counts(normalize=True).reindex(stats.index, fill_value=0)
        share_prod = frame[frame["prod"]]["g"].value_counts(normalize=True).reindex(stats.index, fill_value=0)
        composition = float(((share_prod - share_ref) * stats["score"]).sum())
        between = float((stats["n"] * (stats["score"] - scores.mean()) ** 2).sum())
        rankable = stats[stats["n"] >= min_group_size]
        top = rankable["score"].idxmax() if len(rankable) else stats["score"].idxmax()
        out.append({"attribute": attr,
                    "explained_share": _f(composition / gap) if abs(gap) > 1e-12 else None,
                    "composition_effect": _f(composition), "score_gap": _f(gap),
                    "eta_squared": _f(between / total), "highest_scoring_group": str(top),
                    "groups": {str(g): {"n": int(r.n), "mean_domain_score": _f(r.score),
                                        "reference_share": _f(share_ref[g]), "production_share": _f(share_prod[g])}
                               for g, r in stats.iterrows()}})
    return sorted(out, key=lambda d: -(d["explained_share"] or 0))


#: A prior estimate is called unreliable above these (see :func:`prior_estimate_problems`).
MAX_CONDITION_NUMBER = 30.0
MAX_PRIOR_CI_WIDTH = 0.30


def prior_estimate_problems(estimate: dict[str, Any]) -> list[str]:
    """Why a BBSE / EM prior estimate should not be trusted (empty: no reason found).

    BBSE inverts the validation confusion matrix: when that matrix is singular or
    ill-conditioned (condition number above :data:`MAX_CONDITION_NUMBER`), small counting
    noise becomes large prior errors. Either method is also unreliable when its 95% bootstrap
    interval of some class is wider than :data:`MAX_PRIOR_CI_WIDTH`, or (EM) when it did not
    converge.
    """
    problems = []
    if estimate.get("singular"):
        problems.append("the validation confusion matrix is singular (a class is never predicted)")
    elif (estimate.get("condition_number") or 0) > MAX_CONDITION_NUMBER:
        problems.append(f"the validation confusion matrix is ill-conditioned (condition number "
                        f"{estimate['condition_number']:.0f} > {MAX_CONDITION_NUMBER:.0f})")
    widths = np.asarray(estimate["ci_high"], dtype=float) - np.asarray(estimate["ci_low"], dtype=float)
    if widths.size and np.nanmax(widths) > MAX_PRIOR_CI_WIDTH:
        problems.append(f"95% intervals up to {100 * np.nanmax(widths):.0f} points wide")
    if estimate.get("converged") is False:
        problems.append(f"EM did not converge in {estimate.get('iterations')} iterations")
    return problems


def label_shift(val: ModelOutputs | None, prod: ModelOutputs, config: AuditConfig) -> dict[str, Any]:
    """Production class priors from predictions (BBSE, and EM), with intervals and the truth.

    BBSE is the estimate of record when validation labels exist, unless
    :func:`prior_estimate_problems` finds it unreliable and EM is not: then EM is used. The
    chosen estimate's problems are in ``problems`` (``reliable`` is False when there are any).
    """
    from ferwild.audit.stats import bbse_priors, em_priors, prior_shift_test

    k = len(prod.label_names)
    out: dict[str, Any] = {"label_names": prod.label_names,
                           "predicted_shares": _class_shares(prod.preds, k)}
    if val is not None and val.labelled and len(val):
        bbse = bbse_priors(val.labels, val.preds, prod.preds, k, n_bootstrap=200, seed=config.seed)
        source = np.asarray(bbse["source_priors"], dtype=float)
        out["bbse"] = bbse
        out["method"] = "bbse"
        out["estimated_priors"] = bbse["estimated_priors"]
        out["ci_low"], out["ci_high"] = bbse["ci_low"], bbse["ci_high"]
        # EM needs calibrated posteriors (Alexandari et al. 2020): temperature-scale on the
        # labelled validation rows first; the source priors are then the scaled mean prediction.
        temperature = fit_temperature(val.probs, val.labels)
        # The point estimate may take many iterations (cheap); the 100 warm-started resamples
        # get at most 50 each (they dominated a 10k-row audit otherwise).
        em = em_priors(apply_temperature(prod.probs, temperature),
                       apply_temperature(val.probs, temperature).mean(0), n_bootstrap=100, tol=1e-6,
                       max_iter=2000, bootstrap_max_iter=50, seed=config.seed)
        em["temperature"] = _f(temperature)
        out["em"] = em
        out["source_priors"] = [_f(v) for v in source]
        bbse_problems, em_problems = prior_estimate_problems(bbse), prior_estimate_problems(em)
        chosen, out["problems"] = bbse, bbse_problems
        if bbse_problems and not em_problems:
            chosen, out["problems"] = em, []
            out.update(method="em", estimated_priors=em["estimated_priors"], ci_low=em["ci_low"],
                       ci_high=em["ci_high"],
                       note="BBSE is unreliable here (" + "; ".join(bbse_problems) + "): EM is used")
        out["test"] = prior_shift_test(chosen, source)
    else:
        em = em_priors(prod.probs, np.full(k, 1.0 / k), n_bootstrap=100, tol=1e-6, max_iter=2000,
                       bootstrap_max_iter=50, seed=config.seed)
        out.update(method="em", estimated_priors=em["estimated_priors"], ci_low=em["ci_low"],
                   ci_high=em["ci_high"], em=em, source_priors=None,
                   note=f"no labelled {config.calibration_split!r} split: EM with uniform source priors")
        out["test"] = prior_shift_test(em, None)
        out["problems"] = prior_estimate_problems(em)
    out["reliable"] = not out["problems"]
    if prod.labelled:
        truth = np.asarray(_class_shares(prod.labels, k), dtype=float)
        est = np.asarray(out["estimated_priors"], dtype=float)
        out["true_priors"] = [_f(v) for v in truth]
        out["estimation_error_tv"] = _f(0.5 * np.abs(est - truth).sum())
        out["truth_inside_ci"] = int(sum(lo - 1e-9 <= t <= hi + 1e-9 for t, lo, hi
                                         in zip(truth, out["ci_low"], out["ci_high"])))
    return out


#: A label-shift estimate whose total-variation error against production's own labels is above
#: this is called off, whatever its intervals say.
MAX_PRIOR_ERROR_TV = 0.15


def caveat_label_shift(estimate: dict[str, Any], covariate: dict[str, Any]) -> dict[str, Any]:
    """Add the problems a label-shift estimate cannot see in itself; returns ``estimate``.

    BBSE and EM both assume that only the class mix changed, i.e. that each class's faces look
    alike in both sets (``p(x|y)`` fixed). When the covariate-shift test finds the embeddings
    moved, that assumption is broken and the estimates can be far off with narrow intervals
    (the demo's production set: 0.51 total-variation error, EM's intervals under 30 points).
    When production is labelled, the measured error says so directly.
    """
    problems = list(estimate.get("problems") or [])
    if covariate.get("detected"):
        problems.append("the embeddings shifted as well (covariate shift), which breaks both estimators' "
                        "assumption that each class's faces look alike in both sets")
    error = estimate.get("estimation_error_tv")
    if error is not None and error > MAX_PRIOR_ERROR_TV:
        problems.append(f"against production's own labels it is off by {100 * error:.0f} points (total variation)")
    estimate["problems"] = problems
    estimate["reliable"] = not problems
    return estimate


def confidence_drift(ref: ModelOutputs, prod: ModelOutputs) -> dict[str, Any]:
    """Mean max-probability, entropy and (with labels) ECE on each side, with a KS test."""
    from scipy.stats import ks_2samp

    from ferwild.metrics import expected_calibration_error

    out: dict[str, Any] = {}
    for side, o in (("reference", ref), ("production", prod)):
        conf = o.probs.max(1)
        out[side] = {"mean_max_prob": _f(conf.mean()), "mean_entropy": _f(_entropy(o.probs).mean()),
                     "ece": _f(expected_calibration_error(o.probs, o.labels)) if o.labelled else None}
    ks = ks_2samp(ref.probs.max(1), prod.probs.max(1))
    out["max_prob_ks_p_value"] = _f(ks.pvalue, 10)
    out["mean_max_prob_change"] = _f(out["production"]["mean_max_prob"] - out["reference"]["mean_max_prob"])
    return out


def subgroups(outputs: ModelOutputs, config: AuditConfig, attrs: list[str]) -> dict[str, Any]:
    """Per-group metrics with CIs (``ferwild.audit.groups.subgroup_audit``) on labelled rows."""
    from ferwild.audit.groups import subgroup_audit

    frame = outputs.rows[attrs].copy()
    frame[COL.label_id], frame["pred_id"] = outputs.labels, outputs.preds
    return subgroup_audit(frame, outputs.label_names, attributes=attrs, min_group_size=config.min_group_size,
                          n_bootstrap=config.n_bootstrap, seed=config.seed)


def attribute_gaps(outputs: ModelOutputs, config: AuditConfig, attrs: list[str]) -> dict[str, Any]:
    """Per attribute, the raw gap next to the class-mix-standardised one, per-class gaps,
    prediction bias and calibration by group, people as the units
    (``ferwild.audit.fairness.attribute_comparison``)."""
    from ferwild.audit.fairness import attribute_comparison

    frame = outputs.rows[attrs].copy()
    frame[COL.label_id], frame["pred_id"] = outputs.labels, outputs.preds
    clusters = cluster_ids(outputs.rows)
    return {a: attribute_comparison(frame, outputs.label_names, a, probs=outputs.probs, clusters=clusters,
                                    min_group_size=config.min_group_size, n_bootstrap=config.n_bootstrap,
                                    n_permutations=config.n_permutations, seed=config.seed)
            for a in attrs}


def image_properties(outputs: ModelOutputs, config: AuditConfig) -> dict[str, Any]:
    """Where production's errors (labelled) or doubts (unlabelled) sit by image size, crop
    tightness, colour, sharpness and brightness (``ferwild.audit.image_properties``)."""
    from ferwild.audit.image_properties import image_property_errors

    return image_property_errors(outputs.rows, outputs.probs, outputs.label_names,
                                 labels=outputs.labels if outputs.labelled else None,
                                 clusters=cluster_ids(outputs.rows), min_group_size=config.min_group_size,
                                 n_bootstrap=config.n_bootstrap, n_permutations=min(200, config.n_permutations),
                                 seed=config.seed)


def _image_property_findings(audit: dict[str, Any], findings: list[str]) -> None:
    """Image properties whose worst group is read worse even at the pooled class mix."""
    for name, entry in ((audit.get("image_properties") or {}).get("properties") or {}).items():
        comparison = entry.get("comparison") or {}
        std = (comparison.get("gaps") or {}).get("accuracy_standardised")
        if std and std["excludes_zero"]:
            best, worst = comparison["compared"]
            findings.append(f"Image property `{name}`: faces in '{worst}' are read worse than in '{best}', also with "
                            f"the class mix taken out (accuracy {_pts(std['value'])} points "
                            f"[{_pts(std['ci_low'])}, {_pts(std['ci_high'])}] at the pooled mix).")


# --------------------------------------------------------------------------------------------
# verdict


def _pts(x: float | None) -> str:
    """A percentage in a verdict line (one decimal; "n/a" when missing)."""
    return pct(x, 1, missing="n/a")


def _p(p: float | None) -> str:
    """A p-value in a verdict line."""
    return p_text(p, missing="p n/a")


def verdict(audit: dict[str, Any], config: AuditConfig) -> dict[str, list[str]]:
    """Findings and advice, each line carrying its evidence.

    In reading order: the covariate shift and which attributes moved, data health (alignment,
    the deployed detector, image statistics), performance, label shift, confidence, subgroup
    gaps; then the advice those findings call for.
    """
    findings: list[str] = []
    advice: list[str] = []
    cov = audit["covariate_shift"]
    moved = _shift_findings(cov, config, findings)
    _data_health_findings(audit["data_health"], config, findings, advice)
    _model_findings(audit, config, findings, advice)
    gaps = audit.get("subgroup_gaps") or {}
    rebalance_on = [a for a in _subgroup_findings(audit, findings) if a in gaps.get("in_reference", [])]
    _image_property_findings(audit, findings)
    if cov["detected"] or rebalance_on:
        # what the model sees moving first, then where it fails, then what merely changed
        carrier = [c["attribute"] for c in (cov.get("shift_attribution") or [])[:1]
                   if cov["detected"] and (c["explained_share"] or 0) >= 0.1]
        shifted = [a["attribute"] for a in moved[:2]]
        target = list(dict.fromkeys(carrier + rebalance_on + shifted))[:2]
        if target:
            advice.append("Retrain with attribute x class rebalancing: `ferwild rebalance --data REFERENCE "
                          f"--attributes {','.join(a.removeprefix(ATTR_PREFIX) for a in target)} --out BALANCED`, "
                          "adding labelled production faces of the under-represented cells.")
        else:
            advice.append("Retrain on data that includes labelled production faces; the shift is not explained "
                          "by a recorded attribute (look at the most-unlike samples).")
    if cov["detected"]:
        advice.append("Watch new batches with `ferwild monitor` and retrain when the shift statistic crosses its "
                      "threshold.")
    if not advice:
        advice.append("No action needed on this evidence; keep monitoring new batches.")
    return {"findings": findings, "advice": advice}


def _shift_findings(cov: dict[str, Any], config: AuditConfig, findings: list[str]) -> list[dict[str, Any]]:
    """The covariate-shift verdict, its carrier and the attributes whose mix moved (returned)."""
    tests = (f"MMD {_p(cov['mmd_p_value'])}; domain classifier AUC {cov['domain_auc']:.2f}, "
             f"{_p(cov['domain_p_value'])}")
    if cov["detected"]:
        findings.append(f"Covariate shift detected in the model's embeddings ({tests}).")
        carrier = (cov.get("shift_attribution") or [None])[0]
        if carrier and (carrier["explained_share"] or 0) >= 0.1:
            g = carrier["groups"][carrier["highest_scoring_group"]]
            findings.append(f"The shift is carried most by `{carrier['attribute']}`: its changed mix accounts for "
                            f"{_pts(carrier['explained_share'])}% of the gap in domain scores; "
                            f"'{carrier['highest_scoring_group']}' faces score {g['mean_domain_score']:.2f} "
                            "(higher = less like the reference).")
    else:
        findings.append(f"No covariate shift detected at alpha = {config.alpha} ({tests}).")
    moved = [a for a in cov.get("attribute_shift", []) if a["p_value"] is not None and a["p_value"] < config.alpha]
    for a in moved[:3]:
        ch = a["largest_change"]
        findings.append(f"`{a['attribute']}` changed: '{ch['group']}' {_pts(ch['reference'])}% of reference "
                        f"-> {_pts(ch['production'])}% of production (Cramér's V {a['cramers_v']:.2f}, "
                        f"{_p(a['p_value'])}).")
    return moved


def _data_health_findings(health: dict[str, Any], config: AuditConfig, findings: list[str],
                          advice: list[str]) -> None:
    """Alignment failures, faces the deployed detector misses, and image statistics that moved."""
    af = health["alignment_failure"]
    dropped = af.get("production_fallback") == "drop"
    if af["test"].get("p_value") is not None and af["test"]["p_value"] < config.alpha:
        findings.append(f"Alignment failures differ: {_pts(af['reference'])}% reference vs "
                        f"{_pts(af['production'])}% production ({_p(af['test']['p_value'])}).")
        advice.append("Check the face detector on production images (resolution, pose, occlusion) before "
                      "trusting any metric on them; " + ("faces it misses are not scored."
                                                          if dropped else "faces it misses are scored from a centre crop."))
    elif af["reference"] is None and af["production"]:
        detail = af["production_detail"]
        findings.append(f"{_pts(af['production'])}% of production images ({detail['failed']} of {detail['attempted']}) "
                        f"had no detectable face ({'dropped, not scored' if dropped else 'kept as centre crops'}); "
                        "the reference is pre-aligned, so there is no rate to compare with.")
    det = (health.get("detector_check") or {}).get("production")
    if det and det["rate"] is not None and det["rate"] > 0.05:
        ref_det = (health.get("detector_check") or {}).get("reference")
        versus = (f" vs {_pts(ref_det['rate'])}% of reference photos" if ref_det and ref_det["rate"] is not None
                  else "")
        findings.append(f"The deployed detector (MTCNN at {det['min_confidence']:.2f}) finds no face in "
                        f"{_pts(det['rate'])}% of production photos ({det['no_face']} of {det['checked']} checked; "
                        f"95% CI {_pts(det['ci'][0])}-{_pts(det['ci'][1])}%){versus}: they were aligned with the "
                        "manifest's landmarks, so the alignment-failure rate does not show it.")
        advice.append("In deployment the recogniser skips faces MTCNN misses: check those photos (size, pose, "
                      "style) or lower the detector threshold (`--min-confidence`).")
    big = [s for s in health["image_statistics"] if s["cohens_d"] is not None and abs(s["cohens_d"]) >= 0.5
           and s["ks_p_value"] is not None and s["ks_p_value"] < config.alpha]
    if big:
        findings.append("Image statistics moved most: " + "; ".join(
            f"{s['statistic']} (d = {s['cohens_d']:+.2f})" for s in big[:3]) + ".")


def _model_findings(audit: dict[str, Any], config: AuditConfig, findings: list[str], advice: list[str]) -> None:
    """What changed in the model's results: performance, the class mix (label shift), confidence."""
    perf = audit.get("performance")
    if perf:
        d = perf["drop"]["macro_f1"]
        findings.append(f"Macro-F1 {_pts(perf['reference']['macro_f1'])}% on the reference test split -> "
                        f"{_pts(perf['production']['macro_f1'])}% on production "
                        f"({'+' if d['difference'] >= 0 else ''}{_pts(d['difference'])} points, "
                        f"95% CI {_pts(d['ci'][0])} to {_pts(d['ci'][1])}).")
        worst = sorted(perf["drop"]["per_class_f1"].items(), key=lambda kv: kv[1] if kv[1] is not None else 0)
        if worst and worst[0][1] is not None and worst[0][1] < 0:
            findings.append(f"Largest per-class F1 drop: {worst[0][0]} ({_pts(worst[0][1])} points).")
    ls = audit["label_shift"]
    if ls.get("test", {}).get("shift_detected") and not ls.get("reliable", True):
        findings.append(f"The label-shift estimate ({ls['method'].upper()}) is unreliable ("
                        + "; ".join(ls["problems"]) + "): its apparent change of class mix is not acted on.")
    elif ls.get("test", {}).get("shift_detected"):
        names = ls["label_names"]
        parts = [f"{names[c['class']]} {_pts(c['source'])}% -> {_pts(c['estimated'])}%"
                 for c in ls["test"]["changed_classes"][:3]]
        findings.append(f"Label shift estimated ({ls['method'].upper()}): " + "; ".join(parts) + ".")
        advice.append("Class priors moved: re-weight the decision (EM-adjusted priors) or the training "
                      "classes to the new mix, and monitor the predicted-class mix.")
    conf = audit["confidence"]
    if conf["max_prob_ks_p_value"] is not None and conf["max_prob_ks_p_value"] < config.alpha:
        findings.append(f"Confidence drifted: mean max-probability {conf['reference']['mean_max_prob']:.2f} -> "
                        f"{conf['production']['mean_max_prob']:.2f} ({_p(conf['max_prob_ks_p_value'])}, KS).")


def _subgroup_findings(audit: dict[str, Any], findings: list[str]) -> list[str]:
    """Significant subgroup gaps (top 3 attributes) and where their errors go; returns the
    attributes worth rebalancing on."""
    sub, gaps = audit.get("subgroups") or {}, audit.get("subgroup_gaps") or {}
    side = gaps.get("side", "production")
    rebalance_on = []
    for attr in (gaps.get("ranking") or [])[:3]:
        gap = gaps["gaps"][attr]
        if not gap or not gap.get("significant"):
            continue
        worst = sub[attr][gap["worst"]]
        line = (f"On {side} data, `{attr}` = '{gap['worst']}' faces lose {_pts(gap['macro_f1_gap'])} macro-F1 points "
                f"against '{gap['best']}' ({_pts(worst['macro_f1']['value'])}% vs "
                f"{_pts(sub[attr][gap['best']]['macro_f1']['value'])}%).")
        absorb = [e for e in worst.get("error_absorption", []) if e["excess"] > 0]
        if absorb:
            line += (f" Their errors go to {absorb[0]['class']} ({_pts(absorb[0]['share'])}% of errors vs "
                     f"{_pts(absorb[0]['share_other_groups'])}% for other groups).")
        comparison = (audit.get("attribute_gaps") or {}).get(attr) or {}
        standardised = (comparison.get("gaps") or {}).get("accuracy_standardised")
        if standardised is not None:
            others = [g for g in (gap["best"], gap["worst"]) if g not in comparison["compared"]]
            if others:  # the raw ranking's group cannot be compared people by people
                why = [n for n in comparison["notes"] if f"'{others[0]}'" in n and "too few" in n]
                line += (f" ('{others[0]}' is not compared people by people"
                         + (f": {why[0]}" if why else "") + ".)")
            line += " People by people, " + comparison["summary"]
        findings.append(line)
        # a gap the class mix explains is not fixed by rebalancing the attribute
        if standardised is None or standardised["excludes_zero"]:
            rebalance_on.append(attr)
    reported = set(gaps.get("ranking") or [])
    for attr, comparison in (audit.get("attribute_gaps") or {}).items():
        # a class mix can also hide a gap: a standardised gap is news even when the raw one is not
        standardised = (comparison.get("gaps") or {}).get("accuracy_standardised")
        if standardised and standardised["excludes_zero"] and (attr not in reported or attr not in rebalance_on):
            findings.append(f"On {side} data, with the class mix taken out: {comparison['summary']}")
    return rebalance_on


# --------------------------------------------------------------------------------------------
# the whole audit


class _Stopwatch:
    """Times the audit's named steps (``audit.json["timings_s"]``) and announces each one."""

    def __init__(self, say: Callable[[str], Any]):
        self.say, self.timings = say, {}

    @contextmanager
    def step(self, name: str, announce: str | None = None):
        if announce:
            self.say(announce)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - start


def _subgroup_sections(ref: ModelOutputs, prod: ModelOutputs, config: AuditConfig) -> dict[str, Any]:
    """``subgroups``, ``subgroup_gaps`` (and ``subgroups_reference``) of the audit dict.

    Bias is measured where labels exist: on production when it is labelled, else on the
    reference test split (and said so).
    """
    side_outputs, side = (prod, "production") if prod.labelled else (ref, "reference test")
    attrs = _attribute_columns(config, side_outputs.rows) if side_outputs.labelled else []
    raw = subgroups(side_outputs, config, attrs) if attrs else None
    out = {"subgroups": {a: v["groups"] for a, v in raw["attributes"].items()} if raw else {},
           "subgroup_gaps": {"side": side, "ranking": raw["ranking"] if raw else [],
                             "gaps": {a: v["gap"] for a, v in raw["attributes"].items()} if raw else {},
                             "min_group_size": config.min_group_size,
                             # rebalancing draws on the reference: only its attributes can be rebalanced
                             "in_reference": [a for a in attrs if a in ref.rows.columns
                                              and (ref.rows[a].astype(str) != "").any()]}}
    out["attribute_gaps"] = attribute_gaps(side_outputs, config, attrs) if attrs else {}
    if prod.labelled and ref.labelled and attrs:
        ref_raw = subgroups(ref, config, _attribute_columns(config, ref.rows))
        out["subgroups_reference"] = {a: v["groups"] for a, v in ref_raw["attributes"].items()}
    return out


def _production_scores(prod: ModelOutputs, domain_scores: np.ndarray) -> pd.DataFrame:
    """Per production row, most unlike the reference first: domain score, prediction, confidence,
    entropy, the label when known and the ``attr_*`` columns (for triage and the report)."""
    scores = prod.rows[[COL.path]].copy()
    scores["domain_score"] = domain_scores
    scores["pred"] = [prod.label_names[i] for i in prod.preds]
    scores["max_prob"] = prod.probs.max(1)
    scores["entropy"] = _entropy(prod.probs)
    if prod.labelled:
        scores["label"] = prod.rows[COL.label].to_numpy()
    for c in [c for c in prod.rows if c.startswith(ATTR_PREFIX)]:
        scores[c] = prod.rows[c].to_numpy()
    return scores.sort_values("domain_score", ascending=False, kind="stable")


def run_audit(run_dir: str | os.PathLike, reference_dir: str | os.PathLike,
              production_dir: str | os.PathLike, out_dir: str | os.PathLike,
              config: AuditConfig | None = None, *, progress=None, batch_progress=None) -> dict[str, Any]:
    """Audit ``production_dir`` against ``reference_dir`` with ``run_dir``'s model.

    Writes ``OUT_DIR/audit.json``, ``report.html``, ``report.md``, ``figures/`` and
    ``production_scores.parquet`` (per production row: domain score, prediction, confidence);
    returns the audit dict (what ``audit.json`` holds). ``progress(message)`` is told each
    step; ``batch_progress(what, done, total)`` follows the forward passes.

    Raises:
        RunError: a missing run/dataset, label sets that differ, or an empty split.
    """
    from ferwild.audit.model_outputs import audit_rows
    from ferwild.audit.report import write_audit_report
    from ferwild.runs import load_run, resolve_device

    config = config or AuditConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say = progress or (lambda *_: None)
    clock = _Stopwatch(say)
    try:
        reference, production = PreparedDataset(reference_dir), PreparedDataset(production_dir)
    except FileNotFoundError as exc:
        raise RunError(str(exc)) from None
    loaded = load_run(run_dir, config.which, resolve_device(config.device))

    def outputs(data: Path, split: str | None, what: str) -> ModelOutputs:
        say(f"model outputs: {what}")
        return compute_outputs(run_dir, data, split, which=config.which, batch_size=config.batch_size,
                               model_and_state=loaded,
                               progress=(lambda d, t: batch_progress(what, d, t)) if batch_progress else None)

    with clock.step("model_outputs"):
        ref = outputs(reference_dir, config.reference_split, f"reference {config.reference_split}")
        try:
            val = outputs(reference_dir, config.calibration_split, f"reference {config.calibration_split}")
        except RunError:
            val = None
        # the shift tests' held-out rows: reuse the splits already computed (val+test by default)
        computed = {config.reference_split: ref, **({config.calibration_split: val} if val is not None else {})}
        wanted = config.shift_split.split("+")
        held_out = (ModelOutputs.concat([computed[s] for s in wanted]) if all(s in computed for s in wanted)
                    else outputs(reference_dir, config.shift_split, f"reference {config.shift_split}"))
        prod = outputs(production_dir, config.production_split, "production")

    audit: dict[str, Any] = {
        "run": str(run_dir), "reference": str(reference_dir), "production": str(production_dir),
        "config": config.to_dict(),
        "label_names": ref.label_names,
        "rows": {"reference": int(len(ref)), "shift_reference": int(len(held_out)),
                 "calibration": 0 if val is None else int(len(val)),
                 "production": int(len(prod)), "production_labelled": bool(prod.labelled)},
    }
    with clock.step("data_health", "data health"):
        health = audit["data_health"] = data_health(reference, production, config)
        audit["alignment_failure"] = {"reference": health["alignment_failure"]["reference"],
                                      "production": health["alignment_failure"]["production"],
                                      "p_value": health["alignment_failure"]["test"].get("p_value")}
    with clock.step("performance", "performance"):
        audit["performance"] = performance(ref, prod, config)
    with clock.step("covariate_shift", "covariate shift"):
        cov = covariate_shift(held_out, prod, config, reference_rows=audit_rows(reference, None))
        scores_x, scores_y = cov.pop("_scores")
        audit["covariate_shift"] = cov
    with clock.step("label_shift", "label shift"):
        audit["label_shift"] = caveat_label_shift(label_shift(val, prod, config), cov)
    audit["confidence"] = confidence_drift(ref, prod)
    with clock.step("subgroups", "subgroups"):
        audit.update(_subgroup_sections(ref, prod, config))
    with clock.step("image_properties", "image properties"):
        audit["image_properties"] = image_properties(prod, config)
    audit["verdict"] = verdict(audit, config)

    scores = _production_scores(prod, scores_y)
    scores.to_parquet(out / SCORES, index=False)
    top = scores.head(config.top_k)
    audit["most_unlike_reference"] = [{"path": p, "domain_score": _f(s), "pred": pr}
                                      for p, s, pr in zip(top[COL.path], top["domain_score"], top["pred"])]
    clock.timings["total_before_report"] = time.perf_counter() - t0
    audit["cached_outputs"] = {"reference": ref.cached, "calibration": None if val is None else val.cached,
                               "production": prod.cached}
    audit["timings_s"] = {k: round(v, 3) for k, v in clock.timings.items()}
    with clock.step("report", "report"):
        write_audit_report(audit, out, ref=ref, prod=prod, reference=reference,
                           production=production, scores=scores, scores_reference=scores_x, config=config)
    audit["timings_s"]["report"] = round(clock.timings["report"], 3)
    audit["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    save_json_atomic(out / AUDIT_JSON, jsonable(audit, digits=8, nan_to_none=True))
    return audit
