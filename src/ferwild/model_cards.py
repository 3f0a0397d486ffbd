"""The Markdown model cards, rendered from a model's ``card.json``.

Every figure on a card comes from the ``card.json`` that a ship script in ``recipes/`` wrote when
it measured the packed model; these functions only format them, so a page can be re-rendered
without measuring again (``python recipes/render_model_cards.py``):

- :func:`render_default_card`: ``MODEL_CARD.md``, the default model's (``ferplus_vgg``);
- :func:`render_fer2013_card`: ``docs/model_card_fer2013_vgg.md``;
- :func:`render_extra_card`: ``docs/model_card_<name>.md`` of ``ferplus_ensemble`` and ``ferplus_live``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferwild import formatting

__all__ = ["pct", "reproduce_section", "render_default_card", "render_fer2013_card", "render_extra_card"]

#: The wild_dev and FER+ rows of the default's and the extra models' side-by-side tables.
SIDE_BY_SIDE_ROWS = (("ferplus_test", "FER+ test, majority, 7 classes"),
                     ("fer2013_privatetest", "FER2013 PrivateTest, its own labels"))
EXTRA_TITLES = {
    "ferplus_ensemble": ("the accurate model", "several fer_vgg read together. "
                         "Use it where accuracy matters more than speed (`ferwild predict photos/ --run "
                         "ferwild:ferplus_ensemble`)."),
    "ferplus_live": ("the live model", "the model of ferwild's live paths (`ferwild live`, the web page's Live mode, "
                     "`ferwild predict --detector fast`), for many faces per frame on a CPU: {summary_text}. "
                     "The live paths run its `{live_onnx}`."),
}


# ----------------------------------------------------------------------------- shared cells


def pct(x) -> str:
    """A fraction as the card writes it: ``"69.52%"``."""
    return formatting.pct(x, 2, missing="-") + ("%" if x is not None else "")


def reproduce_section(card: dict) -> list[str]:
    """A card's "How it was trained" lines: the commands, then the recipe in words."""
    return ["## How it was trained (reproduce)", "", "```bash", *card["commands"], "```", "",
            f"Recipe `{card['recipe']}`: {card['recipe_text'].rstrip('.')}.", ""]


def _ci(figures: dict, metric: str) -> str:
    """``"83.31% [82.1, 84.5]"``: a figure and its 95% interval, when the card has one."""
    low, high = figures.get(f"{metric}_ci") or (None, None)
    return pct(figures[metric]) + (f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")


def _recall_cell(m: dict) -> str:
    """A per-class table cell: recall, its Wilson interval when there is one, and the support."""
    ci = m.get("recall_ci")
    return pct(m["recall"]) + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "") + f" ({m['support']})"


def _side_by_side_rows(ours: dict, base: dict, rows) -> list[str]:
    """Accuracy and macro-F1 rows, ours beside the baseline's, with their intervals."""
    return [f"| {title}: {what} | {_ci(ours[key], metric)} | {_ci(base[key], metric)} |"
            for key, title in rows for metric, what in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))]


def _risk_rows(card: dict) -> list[str]:
    """The risk-coverage table on wild_dev: what each abstention threshold keeps."""
    lines = ["| T | answered | accuracy of the answered [95%] | macro-F1 of the answered |", "|---|---|---|---|"]
    for row in card["risk_coverage_wild_dev"]:
        lo, hi = row["accuracy_ci"]
        lines.append(f"| {row['threshold']:.1f} | {100 * row['coverage']:.1f}% ({row['n_answered']}) | "
                     f"{pct(row['accuracy'])} [{100 * lo:.1f}, {100 * hi:.1f}] | {pct(row['macro_f1'])} |")
    return lines


def _by_tta_text(by_tta: dict) -> str:
    """``"none: 70.00% / 60.00%, flip: ..."``: accuracy / macro-F1 on wild_dev's choice people."""
    return ", ".join(f"{t}: {pct(v['wild_choice']['accuracy'])} / {pct(v['wild_choice']['macro_f1'])}"
                     for t, v in by_tta.items())


# ----------------------------------------------------------------------------- the default (MODEL_CARD.md)


def render_default_card(card: dict) -> str:
    """MODEL_CARD.md: the default model's card (the FER2013 model's stays in docs/)."""
    lines = _default_intro(card) + _default_glance(card) + _default_side_by_side(card)
    lines += _default_per_class(card) + _default_abstain(card) + _who_it_works_for(card)
    lines += reproduce_section(card) + _default_limits()
    return "\n".join(lines)


def _drop_ci(ci: dict) -> str:
    """A drop in points with its interval: ``15.7 [13.8, 17.6]``."""
    text = f"{100 * ci['value']:.1f}"
    return text if ci.get("ci_low") is None else text + f" [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"


def _share_ci(ci: dict) -> str:
    text = f"{100 * ci['value']:.1f}%"
    return text if ci.get("ci_low") is None else text + f" [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"


def _who_it_works_for(card: dict) -> list[str]:
    """Per gender, per occluder and per image property, from ``card["who_it_works_for"]``
    (written by ``analyses/people_card.py`` from the audit's and the occlusion probe's files)."""
    who = card.get("who_it_works_for")
    if not who:
        return []
    lines = ["## Who it works for", "", who["measured_on"], "",
             "| gender | faces | people | accuracy | at the pooled class mix | macro-F1 | at the pooled class mix | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for group, g in who["gender"]["groups"].items():
        lines.append(f"| {group} | {g['n']:,} | {g['people']:,} | {_share_ci(g['accuracy'])} | "
                     f"{_share_ci(g['accuracy_standardised'])} | {_share_ci(g['macro_f1'])} | "
                     f"{_share_ci(g['macro_f1_standardised'])} | {_share_ci(g['ece'])} |")
    lines += ["", who["gender"]["summary"], "",
              "| occluder (drawn on the photo by its landmarks) | accuracy drop (points) | happiness recall drop | "
              "MTCNN still finds the face |", "|---|---|---|---|"]
    for name, o in who["occlusion"].items():
        found = "-" if o.get("mtcnn_found") is None else f"{100 * o['mtcnn_found']:.0f}%"
        lines.append(f"| {name}: {o['description']} | {_drop_ci(o['accuracy_drop'])} | "
                     f"{_drop_ci(o['happiness_recall_drop'])} | {found} |")
    lines += ["", "| image property | group | faces | accuracy | at the pooled class mix |", "|---|---|---|---|---|"]
    for name, groups in who["image_properties"].items():
        for group, g in groups.items():
            lines.append(f"| {name} | {group} | {g['n']:,} | {_share_ci(g['accuracy'])} | "
                         f"{_share_ci(g['accuracy_standardised'])} |")
    lines += ["", who["notes"], ""]
    return lines


def _default_intro(card: dict) -> list[str]:
    return [
        f"# Model card: `ferwild:{card['name']}` (the default)",
        "",
        "The expression model that `ferwild predict`, `ferwild serve` and `Recognizer.default()` use when no "
        "other model is given. It was trained by ferwild's own commands on FER+'s crowd votes, chosen and "
        "calibrated on FER+'s validation faces and on real photos (`wild_dev`), and measured once on "
        "FER+'s test split, FER2013's PrivateTest and people of `wild_dev` that no choice saw. "
        "`ferwild:fer2013_vgg`, trained on FER2013's single labels, stays available "
        "([its card](docs/model_card_fer2013_vgg.md)).",
        "",
    ]


def _default_glance(card: dict) -> list[str]:
    r, by_scale = card["results"], card["framing"]["by_scale"]
    zooms = ", ".join(f"x{k}: {pct(v['macro_f1'])} [{100 * v['gain_ci'][0]:+.1f}, {100 * v['gain_ci'][1]:+.1f}]"
                      for k, v in by_scale.items() if float(k) != 1.0)
    return [
        "## At a glance",
        "",
        "| | |",
        "|---|---|",
        f"| task | 7 facial expressions: {', '.join(card['labels'])} |",
        f"| architecture | `{card['architecture']}`: {card['architecture_text']} ({card['params'] / 1e6:.2f}M "
        "parameters) |",
        "| input | one face, grey, 48x48 px, framed like FER2013's crops (MTCNN landmarks -> the learned template) |",
        f"| weights | float16 safetensors, {card['size_bytes'] / 1e6:.1f} MB, inside the package (nothing downloaded) |",
        f"| trained on | {card['data']} |",
        f"| selected on | FER+ validation macro-F1, {_selected_text(card)} |",
        f"| test-time augmentation | {card['tta']} (chosen on wild_dev's choice people: "
        + _by_tta_text(card["by_tta"]) + " accuracy / macro-F1) |",
        "| framing | the landmark template learned from the FER+ crops, unzoomed: no zoom tried on wild_dev's choice "
        "people beat it by more than chance (macro-F1, and the paired-bootstrap interval of its gain, 95% for the "
        "four zooms together: " + zooms + f"; the template itself: {pct(by_scale['1.0']['macro_f1'])}) |",
        f"| calibration | temperature {card['temperature']:.3f}, fitted on FER+ validation (ECE there "
        f"{100 * r['ferplus_val']['ece']:.1f}%; FER+ test {100 * r['ferplus_test']['ece']:.1f}%) |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min ({_epochs_text(card)} at a median "
        f"{card['train_img_per_s']:.0f} training images/s; the machine also ran other work) |",
        "",
    ]


def _selected_text(card: dict) -> str:
    stages = card.get("stages") or [card]
    if len(stages) == 1:
        return f"best of {card['epochs']} epochs: epoch {card['selected_epoch']}"
    base, tune = stages[0], stages[-1]
    return (f"the base model's best of {base['epochs']} epochs (epoch {base['selected_epoch']}), then the "
            f"fine-tune's best of {tune['epochs']} (epoch {tune['selected_epoch']})")


def _epochs_text(card: dict) -> str:
    stages = card.get("stages") or [card]
    if len(stages) == 1:
        return f"{card['epochs']} epochs"
    return " + ".join(str(st["epochs"]) for st in stages) + " epochs (base + fine-tune)"


def _default_side_by_side(card: dict) -> list[str]:
    r, b, dis = card["results"], card["baseline_results"], card["fer2013_vs_ferplus_labels"]
    rows = SIDE_BY_SIDE_ROWS + (("wild_report", "wild_dev report people"), ("wild_all", "wild_dev all photos"))
    lines = [
        "## Side by side",
        "",
        "Accuracy / macro-F1 with 95% bootstrap intervals. FER+ test: the 7-class majority label. wild_dev: "
        "real photos, the largest face MTCNN finds, cut like the training crops; *report* is the quarter of "
        "its people no choice saw, *all* every photo with a face.",
        "",
        "| data | ferwild `" + card["name"] + "` | `" + card["baseline"].split(":")[-1] + "` (FER2013 labels) |",
        "|---|---|---|",
        *_side_by_side_rows(r, b, rows),
        "",
    ]
    peer = card.get("peer_wild_dev")
    if peer:
        lines += [
            f"fer {peer.get('fer_version', '')} on the same {peer.get('n_photos', '')} wild_dev photos, measured "
            f"the same way (the largest face MTCNN finds, `bench/bench_wild_peers.py --mtcnn`): accuracy "
            f"{_peer(peer, 'accuracy')}, macro-F1 {_peer(peer, 'macro_f1')} on the "
            f"{peer.get('n_with_face', '')} photos where it found a face.",
            "",
        ]
    return lines + [
        "On FER2013's PrivateTest, published figures on the same faces: "
        + "; ".join(f"{n} {pct(a)}" + (f" / {pct(f)}" if f else "") for n, a, f in card["fer2013_anchors"]) + ".",
        "",
        f"FER2013's own label and the FER+ majority disagree on {100 * dis['disagree_rate']:.1f}% of the "
        f"{dis['paired_with_majority_label']:,} PrivateTest faces that have a majority label (faces paired by "
        f"pixels: {dis['paired']:,} of {dis['privatetest_faces']:,}). A model that reads faces like the crowd "
        "is marked wrong on those by FER2013's labels; `ferwild:fer2013_vgg` remains the FER2013 benchmark model.",
        "",
    ]


def _peer(peer: dict, metric: str) -> str:
    figures = peer.get("on_faces", peer)     # bench_wild_peers.py: figures on the photos with a face
    value, ci = figures.get(metric), figures.get(f"{metric}_ci")
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _default_per_class(card: dict) -> list[str]:
    r, b = card["results"], card["baseline_results"]
    lines = [
        "## Per class",
        "",
        "Recall with 95% Wilson intervals (support).",
        "",
        "| class | FER+ test | wild_dev all | wild_dev all, `" + card["baseline"].split(":")[-1] + "` |",
        "|---|---|---|---|",
    ]
    for name in card["labels"]:
        cells = [_recall_cell(figures["per_class"][name]) for figures in (r["ferplus_test"], r["wild_all"], b["wild_all"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    crowd = r["ferplus_test"].get("crowd")
    if crowd:
        agreement = crowd["crowd_agreement"]
        lines += [
            "",
            "Against the crowd (FER+ test): crowd agreement (the share of the ten labellers who chose the "
            f"predicted class) {100 * agreement['value']:.1f}% "
            f"[{100 * agreement['ci_low']:.1f}, {100 * agreement['ci_high']:.1f}]; "
            f"cross-entropy to the votes {crowd['vote_cross_entropy']['value']:.3f} nats.",
        ]
    return lines + [""]


def _default_abstain(card: dict) -> list[str]:
    return [
        "## Abstaining: risk and coverage on wild_dev",
        "",
        "`ferwild predict --abstain-below T` (and `serve`, `Recognizer(abstain_below=T)`) labels a face "
        "`uncertain` when its top probability is under T; its probabilities are still written. What each T "
        "keeps on wild_dev (all photos; calibrated probabilities):",
        "",
        *_risk_rows(card),
        "",
        f"![risk-coverage on wild_dev]({card['risk_coverage_figure']})",
        "",
    ]


def _default_limits() -> list[str]:
    return [
        "## Known limits",
        "",
        "- **FER2013's faces, FER+'s crowd.** Web images found by emotion keywords; who is in them (age, skin "
        "tone, culture) was neither recorded nor balanced. Ten crowd workers per face are steadier than one "
        "label, but they read posed and spontaneous expressions alike. Disgust and fear are rare in FER+ "
        "(under 3% of the faces each): their figures are the least certain.",
        "- **wild_dev** labels are one student's reading per photo, and the set is mostly neutral and happy "
        "news photos of public figures: per-class figures for fear, disgust and sadness rest on a few dozen "
        "photos (see the intervals).",
        "- **Grey 48 px input.** Colour and fine detail are discarded; small, blurred, strongly turned or "
        "occluded faces are read less well. A face MTCNN does not find is not classified.",
        "- **Seven categories** are not a person's feelings; do not use the model to make decisions about people.",
        "- **Terms.** The pixels are FER2013's (research use); FER+'s labels are MIT. Use the weights for research.",
        "",
    ]


# ----------------------------------------------------------------------------- fer2013_vgg (docs/)


def render_fer2013_card(card: dict) -> str:
    """docs/model_card_fer2013_vgg.md: the FER2013 benchmark model's card."""
    lines = _fer2013_glance(card) + _fer2013_side_by_side(card) + _fer2013_per_class(card)
    d = card["test_without_train_duplicates"]
    lines += [
        "",
        f"FER2013 has duplicates across its splits (exact and near copies of training faces in "
        f"PrivateTest). On the {d['n']} PrivateTest faces with no such copy in the training split the "
        f"model scores {pct(d['accuracy'])} accuracy and {pct(d['macro_f1'])} macro-F1.",
        "",
        *reproduce_section(card),
        "Selection used PublicTest only; PrivateTest was evaluated once, on the packed float16 weights. "
        f"{card['tta_text']}",
        "",
        "## Checked on real photos",
        "",
        card["photos_text"],
        "",
    ]
    return "\n".join(lines + _fer2013_limits())


def _fer2013_glance(card: dict) -> list[str]:
    t, v = card["test"], card["val"]
    return [
        "# Model card: `ferwild:fer2013_vgg`",
        "",
        "ferwild's FER2013 benchmark model, shipped inside the package (`--run ferwild:fer2013_vgg`). It was "
        "the default model until `ferwild:ferplus_vgg` ([card](../MODEL_CARD.md)), which reads real photos far "
        "better; it stays the model to compare on FER2013's own labels. It was trained by ferwild's own commands "
        "on FER2013 and is measured here once, on FER2013's PrivateTest.",
        "",
        "## At a glance",
        "",
        "| | |",
        "|---|---|",
        f"| task | 7 facial expressions: {', '.join(card['labels'])} |",
        f"| architecture | `{card['architecture']}`: {card['architecture_text']} ({card['params'] / 1e6:.2f}M parameters) |",
        "| input | one face, grey, 48x48 px, framed like FER2013's crops (MTCNN landmarks -> the FER2013 template) |",
        f"| weights | float16 safetensors, {card['size_bytes'] / 1e6:.1f} MB, inside the package (nothing downloaded) |",
        f"| trained on | {card['data']} |",
        f"| selected on | PublicTest (val) macro-F1, best of {card['epochs']} epochs: epoch {card['selected_epoch']} |",
        f"| **PrivateTest accuracy** | **{pct(t['accuracy'])}** |",
        f"| **PrivateTest macro-F1** | **{pct(t['macro_f1'])}** |",
        f"| PrivateTest ECE (15 bins) | {t['ece']:.3f} |",
        f"| PublicTest (val) accuracy / macro-F1 | {pct(v['accuracy'])} / {pct(v['macro_f1'])} |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min ({card['epochs']} epochs at a median "
        f"{card['train_img_per_s']:.0f} training images/s; the machine also ran other work) |",
        "",
    ]


def _fer2013_side_by_side(card: dict) -> list[str]:
    t = card["test"]
    lines = [
        "## Side by side (the same 3,589 PrivateTest faces)",
        "",
        "| model | accuracy | macro-F1 |",
        "|---|---|---|",
        f"| **ferwild `fer2013_vgg`** | **{pct(t['accuracy'])}** | **{pct(t['macro_f1'])}** |",
    ]
    lines += [f"| {name} | {pct(acc)} | {pct(f1)} |" for name, acc, f1 in card["anchors"]]
    return lines + ["", "`python bench/bench_peers.py` re-measures the ferwild row and prints it next to these.", ""]


def _fer2013_per_class(card: dict) -> list[str]:
    t, names = card["test"], card["labels"]
    lines = ["## Per class (PrivateTest)", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in names:
        m = t["per_class"][name]
        lines.append(f"| {name} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['f1'])} | {m['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |" for name, row in zip(names, t["confusion"])]
    return lines


def _fer2013_limits() -> list[str]:
    return [
        "## Known limits",
        "",
        "- **FER2013's faces and labels.** Web images found by emotion keywords; who is in them (age, skin "
        "tone, culture) was neither recorded nor balanced, and each face has one label, posed and spontaneous "
        "expressions mixed; the set's authors put human accuracy on it at about 65% (Goodfellow et al. 2013). "
        "Disgust has 436 training faces (1.5%): its figures are the least certain. The model inherits all "
        "of this: measure it on your own faces (`ferwild audit --run ferwild:fer2013_vgg ...`) before "
        "relying on it.",
        "- **Grey 48 px input.** Colour and fine detail are discarded; small, blurred, strongly turned or "
        "occluded faces are read less well than FER2013's frontal crops.",
        "- **Framing.** Photos are cut with MTCNN's landmarks to FER2013's tight framing; a face that MTCNN "
        "does not find is not classified.",
        "- **Seven posed categories** are not a person's feelings; do not use the model to make decisions "
        "about people.",
        "- **Terms.** FER2013 was released for research (a Kaggle competition). The weights are trained on "
        "it: use them for research only.",
        "",
    ]


# ----------------------------------------------------------------------------- ferplus_ensemble, ferplus_live (docs/)


def render_extra_card(card: dict, doc: Path, repo: Path) -> str:
    """The Markdown page of ``card`` (a ``card.json`` of ``ferplus_ensemble`` or ``ferplus_live``), to be
    written at ``doc`` in the repository checkout ``repo`` (its links are relative to ``doc``)."""
    what, intro = EXTRA_TITLES[card["name"]]
    intro = intro.format(summary_text=card.get("summary_text") or "a narrower network distilled from an ensemble "
                         "of three fer_vgg ([its card](model_card_ferplus_ensemble.md))",
                         live_onnx=card.get("live_onnx", "model.onnx"))
    if card.get("shipped") is False:
        what, intro = what + ", not shipped", _not_shipped(card)
    elif card["name"] == "ferplus_ensemble":
        intro = _accurate_intro(card)
    elif card.get("live_default") is False:
        what, intro = "a fast model", _not_live_default(card)
    lines = [f"# Model card: `ferwild:{card['name']}` ({what})", "", intro[:1].upper() + intro[1:],
             "Figures below were measured by `recipes/ship_ferplus_models.py` on the packed model and are rendered "
             "from its `card.json`; the default's card is [MODEL_CARD.md](" + os.path.relpath(repo / "MODEL_CARD.md", doc.parent)
             + ")." + (f" {card['default_then']}" if card.get("default_then") else ""), ""]
    lines += _extra_glance(card) + _extra_side_by_side(card) + _extra_speed(card)
    lines += _extra_members(card) if card.get("members") else _extra_int8(card)
    lines += _extra_neutral(card) + _extra_per_class(card) + _extra_abstain(card, doc, repo) + reproduce_section(card)
    lines += ["## Known limits", "",
              "- The data's limits are the default's (see its card): FER2013's web faces and FER+'s crowd, few "
              "disgust and fear faces, wild_dev's one labeller per photo and mostly neutral and happy news photos.",
              "- Seven categories are not a person's feelings; do not use the model to make decisions about people.",
              "- Terms: the pixels are FER2013's (research use); FER+'s labels are MIT. Use the weights for research.", ""]
    return "\n".join(lines)


def _extra_glance(card: dict) -> list[str]:
    r = card["results"]
    # the file the live paths run (the int8 twin when the card says so)
    fast = card["speed"][card["name"] + ("_int8" if card.get("live_onnx", "").endswith(".int8.onnx") else "")]
    return [
        "## At a glance", "", "| | |", "|---|---|",
        f"| task | 7 facial expressions: {', '.join(card['labels'])} |",
        f"| architecture | `{card['architecture']}`: {card['architecture_text']} ({card['params'] / 1e6:.2f}M parameters) |",
        "| input | one face, grey, 48x48 px, framed like the default's (MTCNN or BlazeFace landmarks -> the learned "
        "FER+ template) |",
        f"| files | {card['size_bytes'] / 1e6:.1f} MB inside the package (nothing downloaded) |",
        f"| trained on | {card['data']} |",
        f"| test-time augmentation | {card['tta']} |",
        f"| calibration | temperature {card['temperature']:.3f}, fitted on FER+ validation (ECE there "
        f"{100 * r['ferplus_val']['ece']:.1f}%; FER+ test {100 * r['ferplus_test']['ece']:.1f}%) |",
        f"| classifier speed | {fast['faces_per_s_batch1']:.0f} faces/s one at a time, {fast['faces_per_s_batch5']:.0f} "
        "five at a time (ONNX Runtime, one thread" + (f", `{card['live_onnx']}`" if card.get("live_onnx") else "")
        + "; see Speed) |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min (the machine also ran other work) |",
        "",
    ]


def _extra_side_by_side(card: dict) -> list[str]:
    rows = SIDE_BY_SIDE_ROWS + (("wild_report", "wild_dev report people (no choice saw them)"),
                                ("wild_all", "wild_dev all photos"))
    return ["## Side by side with the default", "",
            "Accuracy / macro-F1 with 95% bootstrap intervals, measured once on faces no choice saw. wild_dev: real "
            "photos, the largest face MTCNN finds, cut like the training crops; *report* is the quarter of its "
            "people no choice saw, *all* every photo with a face (including the choice people, on which the "
            "test-time augmentation was chosen).", "",
            f"| data | `{card['name']}` | `{card['baseline'].split(':')[-1]}` (the default) |", "|---|---|---|",
            *_side_by_side_rows(card["results"], card["baseline_results"], rows), ""]


def _extra_neutral(card: dict) -> list[str]:
    ours, base = card["neutral"]["ours"], card["neutral"]["baseline"]
    lines = ["## Neutral: does it buy accuracy by answering neutral?", "",
             "A model trained on crowd labels tends to read weak expressions as neutral. On FER+ test:", "",
             f"| | `{card['name']}` | default |", "|---|---|---|",
             f"| neutral precision | {pct(ours['neutral_precision'])} | {pct(base['neutral_precision'])} |",
             f"| neutral recall | {pct(ours['neutral_recall'])} | {pct(base['neutral_recall'])} |",
             f"| share of all answers that are neutral | {pct(ours['neutral_answer_share'])} | "
             f"{pct(base['neutral_answer_share'])} |"]
    for name, share in ours["read_as_neutral"].items():
        lines.append(f"| {name} faces read as neutral | {pct(share)} | {pct(base['read_as_neutral'][name])} |")
    return lines + [""]


def _extra_per_class(card: dict) -> list[str]:
    r, b = card["results"], card["baseline_results"]
    lines = ["## Per class", "", "Recall with 95% Wilson intervals (support).", "",
             "| class | FER+ test | FER+ test, default | wild_dev all | wild_dev all, default |", "|---|---|---|---|---|"]
    for name in card["labels"]:
        cells = [_recall_cell(figures["per_class"][name])
                 for figures in (r["ferplus_test"], b["ferplus_test"], r["wild_all"], b["wild_all"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _extra_speed(card: dict) -> list[str]:
    lines = ["## Speed", "",
             f"The classifier alone (no detection), ONNX Runtime with one thread, on {card['hardware'].split(';')[0]}, "
             "all measured in one run; FER+ test accuracy beside it (accuracy per unit of CPU is the trade).", "",
             "| model | faces/s, one at a time | faces/s, five at a time | vs the default | FER+ test accuracy |",
             "|---|---|---|---|---|"]
    base = card["speed"]["ferplus_vgg"]["faces_per_s_batch1"]
    acc = {card["name"]: card["results"]["ferplus_test"]["accuracy"],
           "ferplus_vgg": card["baseline_results"]["ferplus_test"]["accuracy"]}
    if card.get("int8"):
        acc[f"{card['name']}_int8"] = card["int8"]["ferplus_test"]["accuracy"]
    for name, s in card["speed"].items():
        lines.append(f"| `{name}` | {s['faces_per_s_batch1']:.0f} | {s['faces_per_s_batch5']:.0f} | "
                     f"{s['faces_per_s_batch1'] / base:.2f}x | {pct(acc.get(name))} |")
    return lines + [""]


def _extra_members(card: dict) -> list[str]:
    lines = ["## Members", "", "Each member's best checkpoint (validation macro-F1) and its FER+ validation figures.", "",
             "| member | epoch | val accuracy | val macro-F1 |", "|---|---|---|---|"]
    for m in card["members"]:
        lines.append(f"| `{Path(m['run']).name if not m['run'].startswith('ferwild:') else m['run']}` | {m['epoch']} | "
                     f"{pct(m['val_acc'])} | {pct(m['val_macro_f1'])} |")
    if card["excluded"]:
        lines += ["", "Left out: " + "; ".join(f"`{Path(e['run']).name}`: {e['problem']}" for e in card["excluded"])]
    else:
        lines += ["", "No member was left out (none diverged, stopped early or fell behind)."]
    lines += ["", "Test-time augmentation, chosen on wild_dev's choice people (accuracy / macro-F1): "
              + _by_tta_text(card["by_tta"]) + "."]
    return lines + [""]


def _extra_int8(card: dict) -> list[str]:
    q = card["int8"]
    return ["## int8", "",
            "`model.int8.onnx` beside the weights is their fp32 export (what `ferwild export` writes) quantised to int8 "
            "by ONNX Runtime (static, per-channel weights, calibrated on 512 FER+ training crops)"
            + (", and the file the live paths run" if card.get("live_onnx") == "model.int8.onnx" else "")
            + ". Against its fp32 twin on the cached crops (no detection):", "",
            "| data | fp32 accuracy | int8 accuracy | same label as fp32 | largest probability difference |",
            "|---|---|---|---|---|",
            f"| FER+ test ({q['ferplus_test']['n']:,} faces) | {pct(q['ferplus_test_fp32']['accuracy'])} | "
            f"{pct(q['ferplus_test']['accuracy'])} | {pct(q['ferplus_test']['same_label'])} | "
            f"{q['ferplus_test']['max_abs_prob_diff']:.3f} |",
            f"| wild_dev report people ({q['wild_report']['n']:,} photos) | "
            f"{pct(q['wild_report_fp32']['accuracy']) if 'wild_report_fp32' in q else ''} | {pct(q['wild_report']['accuracy'])} | "
            f"{pct(q['wild_report']['same_label'])} | {q['wild_report']['max_abs_prob_diff']:.3f} |", ""]


def _extra_abstain(card: dict, doc: Path, repo: Path) -> list[str]:
    figure = os.path.relpath(repo / card["risk_coverage_figure"], doc.parent)
    return ["## Abstaining: risk and coverage on wild_dev", "",
            "What `--abstain-below T` keeps on wild_dev (all photos; calibrated probabilities):", "",
            *_risk_rows(card), "", f"![risk-coverage on wild_dev]({figure})", ""]


def _not_shipped(card: dict) -> str:
    """Why a measured model stays out of the package, in its own figures against the default's."""
    ours, base = card["results"], card["baseline_results"]
    fig = lambda r, k: f"{pct(r[k]['accuracy'])} / {pct(r[k]['macro_f1'])}"  # noqa: E731
    speeds = card["speed"]
    ratio = speeds["ferplus_vgg"]["faces_per_s_batch1"] / speeds[card["name"]]["faces_per_s_batch1"]
    return (f"**Not shipped.** Chosen on FER+ validation and wild_dev's choice people, it then read the faces no "
            f"choice saw no better than the default: FER+ test {fig(ours, 'ferplus_test')} (accuracy / macro-F1) "
            f"against {fig(base, 'ferplus_test')}, wild_dev report people {fig(ours, 'wild_report')} against "
            f"{fig(base, 'wild_report')}, at {ratio:.1f}x the default's CPU time per face. Its members restart from "
            "the default's backbone, so their errors are too alike for averaging to pay. The figures stay here "
            "(`docs/experiments/ferplus_ensemble_restarted.card.json`); it taught the first, half-width live model "
            "(`docs/experiments/ferplus_live_half_width.card.json`); `make model-ferplus-ensemble` rebuilds it.")


def _accurate_intro(card: dict) -> str:
    """The shipped ensemble: what it reads better than the default, at what cost, and how much of
    the gain is neutral faces (a crowd-label model can buy accuracy by answering neutral)."""
    ours, base = card["results"], card["baseline_results"]
    fig = lambda r, k: f"{pct(r[k]['accuracy'])} / {pct(r[k]['macro_f1'])}"  # noqa: E731
    speeds = card["speed"]
    cost = speeds["ferplus_vgg"]["faces_per_s_batch1"] / speeds[card["name"]]["faces_per_s_batch1"]
    test, base_test = ours["ferplus_test"], base["ferplus_test"]
    names = card["labels"]
    support = {k: test["per_class"][k]["support"] for k in names}
    gained = round((test["accuracy"] - base_test["accuracy"]) * test["n"])
    neutral_gained = round((test["per_class"]["neutral"]["recall"] - base_test["per_class"]["neutral"]["recall"])
                           * support["neutral"])
    n_ours, n_base = card["neutral"]["ours"], card["neutral"]["baseline"]
    expressive = [k for k in names if k != "neutral"]
    more_neutral = round(sum((n_ours["read_as_neutral"][k] - n_base["read_as_neutral"][k]) * support[k]
                             for k in expressive))
    return (f"The most accurate model ferwild ships: {card['architecture_text'].split(':')[0]}, "
            f"{card['summary_text']}. "
            f"It reads FER+ test {fig(ours, 'ferplus_test')} (accuracy / macro-F1) against the default's "
            f"{fig(base, 'ferplus_test')}, wild_dev's report people {fig(ours, 'wild_report')} against "
            f"{fig(base, 'wild_report')}, at {cost:.1f}x the default's CPU time per face; the default stays the "
            "default (`--run ferwild:ferplus_ensemble` chooses this one). **Neutral**: of its "
            f"{gained:+d} FER+ test faces read right, {neutral_gained:+d} are neutral faces (neutral recall "
            f"{pct(n_base['neutral_recall'])} -> {pct(n_ours['neutral_recall'])}); it calls {more_neutral:+d} of the "
            f"{sum(support[k] for k in expressive):,} expressive faces neutral against the default, and answers neutral "
            f"for {pct(n_ours['neutral_answer_share'])} of faces (the default {pct(n_base['neutral_answer_share'])}; "
            f"neutral is {pct(support['neutral'] / test['n'])} of them): most of what it gains is neutral.")


def _not_live_default(card: dict) -> str:
    """A distilled model that missed the live paths' bar: what it is, and what it costs."""
    from ferwild.shipped import LIVE_BAR

    gap = card["live_gap_points"]
    speeds = card["speed"]
    ratio = speeds[card["name"]]["faces_per_s_batch1"] / speeds["ferplus_vgg"]["faces_per_s_batch1"]
    return (f"A narrower network distilled from an ensemble of three fer_vgg ([its card](model_card_ferplus_ensemble.md)) "
            f"for many faces per frame on a CPU: its classifier reads {ratio:.1f}x the default's faces per second. "
            f"**It is not the live paths' default**: it reads FER+ test {gap['ferplus_test']:.1f} points and wild_dev's "
            f"report people {gap['wild_report']:.1f} points below the default, and the live paths switch to a faster "
            f"model only within {100 * LIVE_BAR:.1f} points. Choose it where speed matters more: "
            "`ferwild live --run ferwild:ferplus_live`, `ferwild predict --run ferwild:ferplus_live`, or its ONNX "
            f"file (`{card.get('live_onnx', 'model.onnx')}`) with `--onnx`.")


# --------------------------------------------------------------------------------------------
# every card page


#: The measured models whose pages docs/model_card_<name>.md render_extra_card writes.
EXTRA_CARDS = ("ferplus_ensemble", "ferplus_live")


def card_file(name: str, repo: Path) -> Path:
    """The ``card.json`` of model ``name``: the package's, or ``docs/experiments``' for a model
    measured and kept out of the package."""
    shipped = repo / "src" / "ferwild" / "weights" / name / "card.json"
    return shipped if shipped.is_file() else repo / "docs" / "experiments" / f"{name}.card.json"


def rendered_pages(repo: Path) -> dict[Path, str]:
    """Each model card page of the repository at ``repo`` and its text as rendered from its
    ``card.json`` (for the cards that exist): MODEL_CARD.md (``ferplus_vgg``) and
    docs/model_card_<name>.md."""
    import json

    pages = {}
    for name, doc, render in (("ferplus_vgg", repo / "MODEL_CARD.md", render_default_card),
                              ("fer2013_vgg", repo / "docs" / "model_card_fer2013_vgg.md", render_fer2013_card)):
        if card_file(name, repo).is_file():
            pages[doc] = render(json.loads(card_file(name, repo).read_text(encoding="utf-8")))
    for name in EXTRA_CARDS:
        if card_file(name, repo).is_file():
            doc = repo / "docs" / f"model_card_{name}.md"
            pages[doc] = render_extra_card(json.loads(card_file(name, repo).read_text(encoding="utf-8")), doc, repo)
    return pages
