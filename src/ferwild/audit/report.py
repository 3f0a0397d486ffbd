"""The audit report: ``report.html`` (self-contained) and ``report.md``, plus ``figures/``.

Sections follow :mod:`ferwild.audit.core`: verdict and advice first, then data health,
performance (the study's Tables 12-13 and Figure 9, with confidence intervals), covariate
shift, label shift, confidence drift, subgroup bias and the method notes. Each section has
its own writer (``_section_*``), fed the audit dict and the model outputs it draws from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.groups import subgroup_gap_figure
from ferwild.data.prepared import COL
from ferwild.files import save_text_atomic
from ferwild.formatting import DASH, number, p_text, p_value, pct
from ferwild.htmldoc import Document
from ferwild.metrics import confusion_figure
from ferwild.plotting import save_figure, subplots

FIGURES = "figures"


def _ci(value: Any, lo: Any, hi: Any) -> str:
    if value is None:
        return DASH
    if lo is None or hi is None:
        return pct(value, 1)
    return f"{pct(value, 1)} [{pct(lo, 1)}, {pct(hi, 1)}]"


def _cache_text(audit: dict) -> str:
    parts = [f"{k} {'cached' if v else 'computed'}" for k, v in audit.get("cached_outputs", {}).items()
             if v is not None]
    return ", ".join(parts) or DASH




# --------------------------------------------------------------------------------------------
# figures


def class_distribution_figure(audit: dict, path: Path, reference_train: dict[str, int]) -> None:
    """Figure 9: class shares of reference training data, production truth (when labelled),
    production predictions and the estimated production priors with their intervals."""
    names = audit["label_names"]
    ls = audit["label_shift"]
    series: list[tuple[str, list[float], Any]] = []
    total = sum(reference_train.values())
    if total:
        series.append(("reference train", [reference_train.get(n, 0) / total for n in names], None))
    if ls.get("true_priors"):
        series.append(("production (true)", ls["true_priors"], None))
    series.append(("production (predicted)", ls["predicted_shares"], None))
    est = np.asarray(ls["estimated_priors"], dtype=float)
    err = np.vstack([est - np.asarray(ls["ci_low"], float), np.asarray(ls["ci_high"], float) - est])
    series.append((f"production (estimated, {ls['method'].upper()}"
                   f"{'' if ls.get('reliable', True) else ', UNRELIABLE'})", list(est), np.clip(err, 0, None)))
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig, ax = subplots(figsize=(max(7, 1.3 * len(names)), 4.2), dpi=110, layout="constrained")
    colours = ["#9aa5b1", "#2f6f9f", "#e8a200", "#c0392b"]
    for i, (label, values, yerr) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [100 * v for v in values], width, label=label,
               color=colours[i % len(colours)], yerr=None if yerr is None else 100 * yerr, capsize=2,
               error_kw={"elinewidth": 0.8, "ecolor": "#52606d"})
    ax.set_xticks(x, names)
    ax.set_ylabel("share of images (%)")
    ax.set_title("Class distribution: reference training data vs production (Figure 9)")
    ax.legend(fontsize=8, frameon=False, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def score_histogram(scores_reference: np.ndarray, scores_production: np.ndarray, path: Path, auc: float) -> None:
    """Out-of-fold domain-classifier scores of reference and production rows."""
    fig, ax = subplots(figsize=(7, 3.4), dpi=110, layout="constrained")
    bins = np.linspace(0, 1, 31)
    ax.hist(scores_reference, bins=bins, alpha=0.6, density=True, label="reference (held out)", color="#2f6f9f")
    ax.hist(scores_production, bins=bins, alpha=0.6, density=True, label="production", color="#e8a200")
    ax.set_xlabel("P(production | embedding), out of fold")
    ax.set_ylabel("density")
    ax.set_title(f"Domain classifier scores (AUC {auc:.2f}; 0.5 = indistinguishable)")
    ax.legend(frameon=False)
    save_figure(fig, path)


def confidence_histogram(ref_probs: np.ndarray, prod_probs: np.ndarray, path: Path) -> None:
    """Max-probability distributions of the two sides."""
    fig, ax = subplots(figsize=(7, 3.2), dpi=110, layout="constrained")
    bins = np.linspace(1.0 / ref_probs.shape[1], 1, 26)
    ax.hist(ref_probs.max(1), bins=bins, alpha=0.6, density=True, label="reference test", color="#2f6f9f")
    ax.hist(prod_probs.max(1), bins=bins, alpha=0.6, density=True, label="production", color="#e8a200")
    ax.set_xlabel("max class probability")
    ax.set_ylabel("density")
    ax.set_title("Confidence on each side")
    ax.legend(frameon=False)
    save_figure(fig, path)


def attribute_shift_figure(changes: list[dict], path: Path, top: int = 4) -> bool:
    """Group shares of the attributes that changed most (reference vs production)."""
    changes = [c for c in changes if c.get("reference")][:top]
    if not changes:
        return False
    fig, axes = subplots(1, len(changes), figsize=(3.4 * len(changes) + 0.6, 3.4), dpi=110,
                         layout="constrained", squeeze=False)
    for ax, c in zip(axes[0], changes):
        groups = sorted(set(c["reference"]) | set(c["production"]))
        x = np.arange(len(groups))
        ax.bar(x - 0.2, [100 * c["reference"].get(g, 0) for g in groups], 0.4, label="reference", color="#2f6f9f")
        ax.bar(x + 0.2, [100 * c["production"].get(g, 0) for g in groups], 0.4, label="production", color="#e8a200")
        ax.set_xticks(x, [str(g)[:12] for g in groups], rotation=30 if len(groups) > 3 else 0, ha="right"
                      if len(groups) > 3 else "center", fontsize=8)
        ax.set_title(f"{c['attribute']} (V = {c['cramers_v']:.2f})", fontsize=9)
        ax.set_ylabel("share (%)", fontsize=8)
    axes[0][0].legend(fontsize=8, frameon=False)
    save_figure(fig, path)
    return True


def most_unlike_sheet(production, scores: pd.DataFrame, path: Path, k: int) -> bool:
    """Contact sheet of the ``k`` production crops the domain classifier finds least like the
    reference, captioned with score and prediction."""
    from ferwild.data.faces import contact_sheet

    if k <= 0 or scores.empty:
        return False
    top = scores.head(k)
    rows = production.manifest.set_index(COL.path).loc[top[COL.path]]
    crops = production.images(rows.reset_index())
    crops = [np.repeat(c, 3, axis=2) if c.shape[2] == 1 else c for c in crops]
    captions = [f"{s:.2f} {p[:7]}" for s, p in zip(top["domain_score"], top["pred"])]
    contact_sheet(crops, captions, path, cols=8,
                  title="Production faces least like the reference (domain score, prediction)")
    return True


# --------------------------------------------------------------------------------------------
# the document


def write_audit_report(audit: dict, out: Path, *, ref, prod, reference, production, scores: pd.DataFrame,
                       scores_reference: np.ndarray, config) -> None:
    """Write ``report.html``, ``report.md`` and ``figures/`` for an audit dict."""
    figures = out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    doc = Document(out)
    ctx = _ReportInputs(figures=figures, names=audit["label_names"], config=config, ref=ref, prod=prod,
                        reference=reference, production=production, scores=scores,
                        scores_reference=scores_reference)
    _section_verdict(doc, audit, ctx)
    _section_data_health(doc, audit, ctx)
    _section_performance(doc, audit, ctx)
    _section_covariate_shift(doc, audit, ctx)
    _section_label_shift(doc, audit, ctx)
    _section_confidence(doc, audit, ctx)
    _section_subgroups(doc, audit, ctx)
    _section_method(doc, audit, ctx)
    title = "ferwild audit: production vs reference"
    subtitle = f"{Path(audit['production']).name} vs {Path(audit['reference']).name} · run {Path(audit['run']).name}"
    save_text_atomic(out / "report.md", f"# {title}\n\n{subtitle}\n\n" + doc.markdown())
    save_text_atomic(out / "report.html", doc.page(title, subtitle))


@dataclass
class _ReportInputs:
    """What the sections need besides the audit dict: where to write, and the model outputs."""

    figures: Path
    names: list
    config: Any
    ref: Any
    prod: Any
    reference: Any
    production: Any
    scores: pd.DataFrame
    scores_reference: np.ndarray


def _section_verdict(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "Verdict"."""
    config = ctx.config
    doc.heading(2, "Verdict")
    doc.box("warn" if audit["covariate_shift"]["detected"] else "note", "Findings", audit["verdict"]["findings"])
    doc.box("note", "Advice", audit["verdict"]["advice"])
    rows = audit["rows"]
    doc.para(f"Reference: `{audit['reference']}` ({rows['reference']} `{config.reference_split}` rows for metrics, "
             f"{rows.get('shift_reference', rows['reference'])} held-out `{config.shift_split}` rows for the shift tests, "
             f"{rows['calibration']} `{config.calibration_split}` rows for the label-shift confusion matrix). "
             f"Production: `{audit['production']}` ({rows['production']} rows, "
             f"{'labelled' if rows['production_labelled'] else 'unlabelled'}). Run: `{audit['run']}`.")


def _section_data_health(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "1. data health"."""
    doc.heading(2, "1. Data health")
    af = audit["data_health"]["alignment_failure"]
    detail = [("reference", af["reference_detail"]), ("production", af["production_detail"])]
    doc.table(pd.DataFrame([{"data": side, "alignment attempted": d["attempted"], "failed": d["failed"],
                             "failure rate (%)": pct(d["rate"], 2),
                             "pre-aligned": "yes" if d.get("prealigned") else "no"} for side, d in detail]),
              heading="Alignment failures",
              note=(f"Difference tested with {af['test']['test']}: {p_text(af['test'].get('p_value'))}. "
                    if af["test"].get("test") else "No rate to compare on one side. ")
                   + "A pre-aligned dataset (tight crops such as FER2013) attempts no alignment.")
    if af["per_class"]:
        doc.table(pd.DataFrame([{"class": c, "reference (%)": pct(v["reference"], 2),
                                 "production (%)": pct(v["production"], 2), "p": p_value(v.get("p_value"))}
                                for c, v in af["per_class"].items()]), heading="Alignment failures per class",
                  small=True)
    checks = audit["data_health"].get("detector_check") or {}
    if any(checks.values()):
        doc.table(pd.DataFrame([{"data": side, "aligned with given landmarks": c["landmark_rows"],
                                 "photos checked": c["checked"], "MTCNN finds no face": c["no_face"],
                                 "rate (%)": _ci(c["rate"], *c["ci"]) if c["ci"] else DASH}
                                for side, c in checks.items() if c]),
                  heading="What the deployed detector sees",
                  note="These photos came with landmarks, so `prepare` aligned them without a detector (the "
                       "alignment failures above count none). In deployment the recogniser must find each face "
                       f"with MTCNN: here it ran on a sample at threshold "
                       f"{next(c for c in checks.values() if c)['min_confidence']:.2f}, as `ferwild predict` does.")
    stats = audit["data_health"]["image_statistics"]
    if stats:
        shown = {s["statistic"] for s in stats}
        explain = {"face_size": "face_size and eye_distance_rel are relative to the original image's shorter side",
                   "roll_deg": "roll_deg and yaw_proxy come from the five landmarks",
                   "detector_confidence": "detector_confidence is MTCNN's"}
        notes = [text for key, text in explain.items()
                 if key in shown or (key == "face_size" and "eye_distance_rel" in shown)
                 or (key == "roll_deg" and "yaw_proxy" in shown)]
        notes.append("Cohen's d sees a moved mean only; the Wasserstein distance and KS also see a changed "
                     "spread (sd ratio = production sd / reference sd)")
        constant = [f"{s['statistic']} ({s['constant_side']})" for s in stats if s.get("constant_side")]
        if constant:
            notes.append("constant on one side, so any variation on the other is a difference: " + ", ".join(constant))
        doc.table(pd.DataFrame([{"statistic": s["statistic"], "reference median": number(s["reference_median"]),
                                 "production median": number(s["production_median"]),
                                 "sd ratio": number(s.get("sd_ratio"), ".2f"),
                                 "Cohen's d": number(s["cohens_d"], "+.2f"), "Wasserstein (sd)": number(s["wasserstein_sd"], ".2f"),
                                 "KS p": p_value(s["ks_p_value"])} for s in stats]),
                  heading="Image statistics, largest differences first",
                  note="; ".join(notes) + ".")


def _triple(figure: dict) -> tuple[float, float, float]:
    """``(value, low, high)`` of a ``{"value", "ci_low", "ci_high"}`` figure."""
    return figure["value"], figure["ci_low"], figure["ci_high"]


def _section_performance(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "2. performance"."""
    figures, names, ref, prod, reference = ctx.figures, ctx.names, ctx.ref, ctx.prod, ctx.reference
    perf = audit.get("performance")
    doc.heading(2, "2. Performance on production (Tables 12-13, Figure 9)")
    train_counts = (reference.summary.get("counts") or {}).get("train", {})
    fig9 = figures / "class_distribution.png"
    class_distribution_figure(audit, fig9, train_counts)
    if perf:
        r, p = perf["reference"], perf["production"]
        d = perf["drop"]
        doc.table(pd.DataFrame([
            {"data": "reference test", "n": r["n"], "accuracy (%)": _ci(r["accuracy"], *r["accuracy_ci"]),
             "macro-F1 (%)": _ci(r["macro_f1"], *r["macro_f1_ci"]), "ECE (%)": pct(r["ece"], 2)},
            {"data": "production", "n": p["n"], "accuracy (%)": _ci(p["accuracy"], *p["accuracy_ci"]),
             "macro-F1 (%)": _ci(p["macro_f1"], *p["macro_f1_ci"]), "ECE (%)": pct(p["ece"], 2)},
            {"data": "change (points)", "n": "", "accuracy (%)": _ci(d["accuracy"]["difference"], *d["accuracy"]["ci"]),
             "macro-F1 (%)": _ci(d["macro_f1"]["difference"], *d["macro_f1"]["ci"]), "ECE (%)": ""},
        ]), heading="Table 12: overall, with 95% bootstrap intervals")
        doc.table(pd.DataFrame([{
            "class": n, "ref support": r["per_class"][n]["support"], "prod support": p["per_class"][n]["support"],
            "ref F1 (%)": pct(r["per_class"][n]["f1"], 1), "prod F1 (%)": pct(p["per_class"][n]["f1"], 1),
            "F1 change": pct(d["per_class_f1"][n], 1),
            "prod recall (%)": _ci(p["per_class"][n]["recall"], *p["per_class"][n]["recall_ci"]),
        } for n in names]), heading="Table 13: per class")
        crowd_rows = [{"data": side, "n": perf[key]["crowd"]["n"],
                       "plurality agreement (%)": _ci(*_triple(perf[key]["crowd"]["plurality_agreement"])),
                       "crowd agreement (%)": _ci(*_triple(perf[key]["crowd"]["crowd_agreement"])),
                       "cross-entropy to the votes (nats)": number(perf[key]["crowd"]["vote_cross_entropy"]["value"], ".3f")}
                      for side, key in (("reference test", "reference"), ("production", "production"))
                      if perf[key].get("crowd")]
        if crowd_rows:
            doc.table(pd.DataFrame(crowd_rows), heading="Against the crowd's votes (95% intervals)",
                      note="Crowd agreement: the share of the crowd that voted for the predicted class (accuracy "
                           "against one labeller drawn at random); plurality agreement: the prediction is one of "
                           "the most-voted classes.")
        # one above the other: each figure holds two panels (counts, row-normalised), and four
        # panels side by side were illegible at 1280 px
        for side, o in (("reference test", ref), ("production", prod)):
            path = figures / f"confusion_{side.split()[0]}.png"
            confusion_figure(np.asarray(audit["performance"][side.split()[0]]["confusion"]), names, path,
                             title=f"Confusion matrix: {side}")
            doc.figure(path, f"Confusion matrix, {side}", max_width=900)
    else:
        doc.para("Production is unlabelled: no accuracy can be measured. The label-free sections below "
                 "(covariate shift, label shift, confidence) still apply.")
    doc.figure(fig9, "Figure 9: class distribution of reference training data and production "
                     "(true when labelled, predicted, and estimated priors with 95% intervals)")


def _section_covariate_shift(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "3. covariate shift"."""
    figures, config, production = ctx.figures, ctx.config, ctx.production
    scores, scores_reference = ctx.scores, ctx.scores_reference
    cov = audit["covariate_shift"]
    doc.heading(2, "3. Covariate shift (no labels needed)")
    doc.table(pd.DataFrame([
        {"test": "MMD, Gaussian kernel, permutation p-value", "statistic": number(cov["mmd_statistic"], ".4g"),
         "p": p_value(cov["mmd_p_value"]),
         "detail": f"{cov['mmd']['n_permutations']} permutations; {cov['mmd']['n_x']} vs {cov['mmd']['n_y']} rows"
                   + (" (subsampled)" if cov["mmd"].get("subsampled") else "")},
        {"test": "domain classifier (logistic regression, out-of-fold)", "statistic": f"AUC {cov['domain_auc']:.3f}",
         "p": p_value(cov.get("domain_p_value")),
         "detail": (f"per person (subject means) AUC {cov['domain_classifier']['cluster_auc']:.3f}, "
                    if cov["domain_classifier"].get("cluster_auc") is not None else "")
                   + "95% CI " + (f"{cov['domain_auc_ci'][0]:.3f}-{cov['domain_auc_ci'][1]:.3f}"
                                  if cov.get("domain_auc_ci") else DASH)},
    ]), heading="Two-sample tests on the model's penultimate embeddings",
        note=f"Embeddings ({cov['embedding']['dim']} dims) standardised; the MMD works on the first "
             f"{cov['embedding']['pca_dim']} principal components of the pooled sample, the classifier on "
             f"{cov['embedding'].get('classifier_dim', cov['embedding']['dim'])} dims. "
             + ("People are the units (subject ids): whole subjects are permuted and folds never split one. "
                if cov["mmd"].get("clusters") else "")
             + f"Shift is declared when the Bonferroni-combined p-value (here {p_value(cov['p_value'])}) is below "
               f"{cov['alpha']}.")
    hist = figures / "domain_scores.png"
    score_histogram(np.asarray(scores_reference), scores["domain_score"].to_numpy(), hist, cov["domain_auc"])
    doc.figure(hist, "Domain-classifier scores: the further apart, the easier production is told from the reference")
    if cov["attribute_shift"]:
        doc.table(pd.DataFrame([{
            "attribute": a["attribute"], "Cramér's V": number(a["cramers_v"], ".2f"), "TV distance": number(a["tv_distance"], ".2f"),
            "p (chi-square)": p_value(a["p_value"]),
            "largest change": f"{a['largest_change']['group']}: {pct(a['largest_change']['reference'], 1)}% -> "
                              f"{pct(a['largest_change']['production'], 1)}%"} for a in cov["attribute_shift"]]),
            heading="Which recorded attributes changed", small=True)
        fig = figures / "attribute_shift.png"
        if attribute_shift_figure(cov["attribute_shift"], fig):
            doc.figure(fig, "Group shares of the attributes that changed most")
    sheet = figures / "most_unlike_reference.png"
    if most_unlike_sheet(production, scores, sheet, config.top_k):
        doc.figure(sheet, f"The {min(config.top_k, len(scores))} production faces least like the reference "
                          "(all per-sample scores: production_scores.parquet)", max_width=900)


def _section_label_shift(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "4. label shift"."""
    names = ctx.names
    ls = audit["label_shift"]
    doc.heading(2, "4. Label shift (no labels needed)")
    em = ls.get("em") or {}
    rows_ls = []
    for i, n in enumerate(names):
        row = {"class": n,
               "source prior (%)": pct(ls["source_priors"][i], 1) if ls.get("source_priors") else DASH,
               "predicted share (%)": pct(ls["predicted_shares"][i], 1),
               f"{ls['method'].upper()} estimate (%)": _ci(ls["estimated_priors"][i], ls["ci_low"][i], ls["ci_high"][i])}
        if ls["method"] != "em" and em:
            row["EM estimate (%)"] = _ci(em["estimated_priors"][i], em["ci_low"][i], em["ci_high"][i])
        if ls.get("true_priors"):
            row["true (%)"] = pct(ls["true_priors"][i], 1)
        rows_ls.append(row)
    note = ("BBSE (Lipton et al. 2018) inverts the validation confusion matrix; EM (Saerens et al. 2002) "
            "re-weights the model's posteriors. Intervals: 95% bootstrap.")
    if ls.get("bbse"):
        note += (" The validation confusion matrix is singular (a class never predicted): BBSE cannot identify "
                 "the priors." if ls["bbse"].get("singular") else
                 f" Confusion-matrix condition number {ls['bbse']['condition_number']:.1f} (large = unreliable).")
    if em and not em.get("converged", True):
        note += f" EM did not converge in {em.get('iterations')} iterations: read its column with care."
    if ls.get("note"):
        note += f" {ls['note']}."
    if not ls.get("reliable", True):
        note += (f" **The {ls['method'].upper()} estimate is unreliable: " + "; ".join(ls["problems"])
                 + ".** Do not read a change of class mix into it.")
    if ls.get("true_priors"):
        note += (f" Estimation error (total variation) {ls['estimation_error_tv']:.3f}; the true share lies "
                 f"inside {ls['truth_inside_ci']} of {len(names)} intervals.")
    doc.table(pd.DataFrame(rows_ls), heading="Estimated production class priors", note=note)


def _section_confidence(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "5. confidence"."""
    figures, ref, prod = ctx.figures, ctx.ref, ctx.prod
    conf = audit["confidence"]
    doc.heading(2, "5. Confidence and calibration drift")
    doc.table(pd.DataFrame([{"data": side, "mean max-probability": number(conf[side]["mean_max_prob"], ".3f"),
                             "mean entropy (nats)": number(conf[side]["mean_entropy"], ".3f"),
                             "ECE (%)": pct(conf[side]["ece"], 2)} for side in ("reference", "production")]),
              note=f"Max-probability distributions compared with a KS test: {p_text(conf['max_prob_ks_p_value'])}.")
    chist = figures / "confidence.png"
    confidence_histogram(ref.probs, prod.probs, chist)
    doc.figure(chist, "Max class probability, reference test vs production")


def _section_subgroups(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "6. subgroups"."""
    figures = ctx.figures
    sub, gaps = audit.get("subgroups") or {}, audit.get("subgroup_gaps") or {}
    doc.heading(2, "6. Subgroup bias")
    if not sub:
        doc.para("No attribute columns with labels to audit (add `attr_*` columns to the source manifest: "
                 "gender, age, occlusion, source, ...).")
    else:
        doc.para(f"Measured on **{gaps['side']}** rows. Groups smaller than {gaps['min_group_size']} are shown "
                 "but never ranked; a gap is significant when the bootstrap interval of the difference excludes 0.")
        ranking = gaps.get("ranking") or []
        doc.table(pd.DataFrame([{
            "attribute": a, "best group": gaps["gaps"][a]["best"], "worst group": gaps["gaps"][a]["worst"],
            "macro-F1 gap (points)": pct(gaps["gaps"][a]["macro_f1_gap"], 1),
            "significant": "yes" if gaps["gaps"][a].get("significant") else "no"} for a in ranking]),
            heading="Largest gaps by attribute")
        raw = {"attributes": {a: {"groups": g, "gap": gaps["gaps"].get(a)} for a, g in sub.items()},
               "ranking": ranking, "min_group_size": gaps["min_group_size"]}
        fig = figures / "subgroup_gaps.png"
        try:
            subgroup_gap_figure(raw, fig)
            doc.figure(fig, "Macro-F1 per group with 95% intervals (top attributes)")
        except ValueError:
            pass
        for a in (ranking[:4] or list(sub)[:2]):
            table = []
            for g, m in sub[a].items():
                absorb = [e for e in m.get("error_absorption", []) if e["excess"] > 0][:1]
                table.append({"group": g, "n": m["n"],
                              "accuracy (%)": _ci(m["accuracy"]["value"], m["accuracy"]["ci_low"], m["accuracy"]["ci_high"]),
                              "macro-F1 (%)": _ci(m["macro_f1"]["value"], m["macro_f1"]["ci_low"], m["macro_f1"]["ci_high"]),
                              "errors absorbed by": (f"{absorb[0]['class']} ({pct(absorb[0]['share'], 1)}% vs "
                                                     f"{pct(absorb[0]['share_other_groups'], 1)}%)") if absorb else DASH,
                              "note": "too small to judge" if m.get("too_small") else ""})
            doc.table(pd.DataFrame(table), heading=f"`{a}`", small=True)
    for attr, comparison in (audit.get("attribute_gaps") or {}).items():
        _attribute_gap_block(doc, attr, comparison, figures)
    _image_property_block(doc, audit.get("image_properties") or {})


def _image_property_block(doc: Document, props: dict) -> None:
    """Production's errors (or doubts, unlabelled) by image property, raw and at the pooled mix."""
    if not props.get("properties"):
        return
    doc.heading(3, "Image properties: where the errors sit")
    rows = []
    for name, entry in props["properties"].items():
        groups = ((entry.get("comparison") or {}).get("groups")) or {}
        for g, free in entry["label_free"].items():
            m = groups.get(g)
            row = {"property": name, "group": g, "faces": free["faces"], "people": free["people"],
                   "mean confidence (%)": _ci(free["mean_confidence"]["value"], free["mean_confidence"]["ci_low"],
                                              free["mean_confidence"]["ci_high"]),
                   f"uncertain (< {props['uncertain_below']:g}) (%)": _ci(
                       free["uncertain_share"]["value"], free["uncertain_share"]["ci_low"],
                       free["uncertain_share"]["ci_high"])}
            if props.get("labelled"):
                row["accuracy (%)"] = (_ci(m["accuracy"]["value"], m["accuracy"]["ci_low"], m["accuracy"]["ci_high"])
                                       if m else DASH)
                row["accuracy at pooled mix (%)"] = (_ci(m["accuracy_standardised"]["value"],
                                                         m["accuracy_standardised"]["ci_low"],
                                                         m["accuracy_standardised"]["ci_high"]) if m else DASH)
            rows.append(row)
    doc.table(pd.DataFrame(rows), heading="Per image property (terciles of a number; 95% intervals, people "
                                          "resampled)", small=True)
    notes = [f"`{n}`: {e['description']}" for n, e in props["properties"].items()]
    doc.para("Properties: " + "; ".join(notes) + ".")


def _attribute_gap_block(doc: Document, attr: str, comparison: dict, figures: Path) -> None:
    """One attribute's raw vs class-mix-standardised gaps, per-class gaps and calibration."""
    from ferwild.audit.fairness import attribute_gap_figure

    doc.heading(3, f"`{attr}` with the class mix taken out")
    missing = comparison.get("not_recorded") or {}
    lines = [comparison.get("summary", "")]
    if missing.get("n"):
        lines.append(f"{missing['n']} faces ({missing['people']} people) have no recorded value: counted, "
                     "not compared.")
    lines += [n.rstrip(".") + "." for n in comparison.get("notes") or []]
    doc.para(" ".join(x for x in lines if x))
    groups = comparison.get("groups") or {}
    if not groups:
        return
    doc.table(pd.DataFrame([{
        "group": g, "faces": m["n"], "people": m["people"],
        "accuracy (%)": _ci(m["accuracy"]["value"], m["accuracy"]["ci_low"], m["accuracy"]["ci_high"]),
        "accuracy at pooled mix (%)": _ci(m["accuracy_standardised"]["value"], m["accuracy_standardised"]["ci_low"],
                                          m["accuracy_standardised"]["ci_high"]),
        "macro-F1 (%)": _ci(m["macro_f1"]["value"], m["macro_f1"]["ci_low"], m["macro_f1"]["ci_high"]),
        "macro-F1 at pooled mix (%)": _ci(m["macro_f1_standardised"]["value"], m["macro_f1_standardised"]["ci_low"],
                                          m["macro_f1_standardised"]["ci_high"]),
        "ECE (%)": _ci(m["ece"]["value"], m["ece"]["ci_low"], m["ece"]["ci_high"]) if "ece" in m else DASH,
    } for g, m in groups.items()]), heading="Per group (95% intervals, people resampled)", small=True)
    if not comparison.get("gaps"):
        return
    fig = figures / f"attribute_gaps_{attr}.png"
    attribute_gap_figure(comparison, fig)
    doc.figure(fig, f"`{attr}`: gaps with 95% intervals, and per-class recall by group")
    a, b = comparison["compared"]
    per_class = []
    for c in groups[a]["per_class"]:
        row = {"class": c}
        for g in (a, b):
            m = groups[g]["per_class"][c]
            row[f"{g}: faces"] = m["support"]
            row[f"{g}: recall (%)"] = _ci(m["recall"]["value"], m["recall"]["ci_low"], m["recall"]["ci_high"])
            row[f"{g}: precision (%)"] = _ci(m["precision"]["value"], m["precision"]["ci_low"], m["precision"]["ci_high"])
        per_class.append(row)
    doc.table(pd.DataFrame(per_class), heading="Per class and group", small=True)
    cells = (comparison.get("prediction_bias") or {}).get("cells") or []
    if cells:
        doc.table(pd.DataFrame([{
            "true": r["true"], "read as": r["pred"], f"{a} (%)": pct(r["rate_a"], 1), f"{b} (%)": pct(r["rate_b"], 1),
            "difference (points)": _ci(r["difference"]["value"], r["difference"]["ci_low"], r["difference"]["ci_high"]),
            "p (people permuted)": p_value(r["p_value"])} for r in cells[:6]]),
            heading="Prediction bias: the same true label read differently (largest first)", small=True)


def _section_method(doc: Document, audit: dict, ctx: _ReportInputs) -> None:
    """The report's section "7. method"."""
    config = ctx.config
    doc.heading(2, "7. Method")
    t = audit.get("timings_s", {})
    doc.bullets([
        "Tables 12-13 and Figure 9 are numbered as in the original study's production audit (Task 4; "
        "ferwild's `docs/study.md`).",
        f"One forward pass per dataset; embeddings and probabilities cached in `RUN/audit-cache/` "
        f"(this run: {_cache_text(audit)}).",
        f"Covariate shift compares the held-out reference rows (`{config.shift_split}`) with production: "
        "training embeddings are memorised and would make any new data look shifted.",
        f"MMD: Gaussian kernel, median-heuristic bandwidth on the pooled sample, {config.n_permutations} "
        "permutations evaluated as one matrix product; up to "
        f"{config.max_samples} rows per side.",
        "Bootstrap intervals: percentile, "
        f"{config.n_bootstrap} resamples; the change in a metric combines the two sides' intervals "
        "(independent samples, normal approximation).",
        "Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ".",
    ])
