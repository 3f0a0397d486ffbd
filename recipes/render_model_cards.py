"""Render every model card page from its ``card.json``.

    python recipes/render_model_cards.py      # rewrites MODEL_CARD.md and docs/model_card_<name>.md

MODEL_CARD.md (the default ``ferplus_vgg``) and docs/model_card_fer2013_vgg.md are rendered by
their shipping recipes' ``render_card`` (``recipes/ship_ferplus.py``, ``recipes/ship_fer2013.py``);
the pages of ``ferwild:ferplus_ensemble`` and ``ferwild:ferplus_live`` here.

A card is the shipped model's (``ferwild/weights/<name>/card.json``) or, for a model measured
and kept out of the package (``"shipped": false``), ``docs/experiments/<name>.card.json``.

Every figure on these pages comes from the model's ``card.json``, written by
``recipes/ship_ferplus_models.py`` when it measured the packed model; this script only
formats them, so a page can be re-rendered without measuring again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

from ship_fer2013 import pct, reproduce_section  # noqa: E402 - after the path insert

RENDERED = ("ferplus_ensemble", "ferplus_live")
TITLES = {
    "ferplus_ensemble": ("the accurate model", "several fer_vgg read together. "
                         "Use it where accuracy matters more than speed (`ferwild predict photos/ --run "
                         "ferwild:ferplus_ensemble`)."),
    "ferplus_live": ("the live model", "the model of ferwild's live paths (`ferwild live`, the web page's Live mode, "
                     "`ferwild predict --detector fast`): a narrower network distilled from "
                     "an ensemble of three fer_vgg ([its card](model_card_ferplus_ensemble.md)), for many faces per "
                     "frame on a CPU."),
}
ROWS = (("ferplus_test", "FER+ test, majority, 7 classes"), ("fer2013_privatetest", "FER2013 PrivateTest, its own labels"),
        ("wild_report", "wild_dev report people (no choice saw them)"), ("wild_all", "wild_dev all photos"))


def _ci(figures: dict, metric: str) -> str:
    low, high = figures.get(f"{metric}_ci") or (None, None)
    return pct(figures[metric]) + (f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else "")


def _glance(card: dict) -> list[str]:
    r = card["results"]
    fast = card["speed"][card["name"]]
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
        "five at a time (ONNX Runtime, one thread; see Speed) |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min (the machine also ran other work) |",
        "",
    ]


def _side_by_side(card: dict) -> list[str]:
    r, b = card["results"], card["baseline_results"]
    lines = ["## Side by side with the default", "",
             "Accuracy / macro-F1 with 95% bootstrap intervals, measured once on faces no choice saw. wild_dev: real "
             "photos, the largest face MTCNN finds, cut like the training crops; *report* is the quarter of its "
             "people no choice saw, *all* every photo with a face (including the choice people, on which the "
             "test-time augmentation was chosen).", "",
             f"| data | `{card['name']}` | `{card['baseline'].split(':')[-1]}` (the default) |", "|---|---|---|"]
    for key, title in ROWS:
        for metric, what in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            lines.append(f"| {title}: {what} | {_ci(r[key], metric)} | {_ci(b[key], metric)} |")
    return lines + [""]


def _neutral(card: dict) -> list[str]:
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


def _per_class(card: dict) -> list[str]:
    r, b = card["results"], card["baseline_results"]
    lines = ["## Per class", "", "Recall with 95% Wilson intervals (support).", "",
             "| class | FER+ test | FER+ test, default | wild_dev all | wild_dev all, default |", "|---|---|---|---|---|"]
    for name in card["labels"]:
        cells = []
        for figures in (r["ferplus_test"], b["ferplus_test"], r["wild_all"], b["wild_all"]):
            m = figures["per_class"][name]
            ci = m.get("recall_ci")
            cells.append(pct(m["recall"]) + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")
                         + f" ({m['support']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _speed(card: dict) -> list[str]:
    lines = ["## Speed", "",
             f"The classifier alone (no detection), ONNX Runtime with one thread, on {card['hardware'].split(';')[0]}, "
             "all measured in one run; FER+ test accuracy beside it (accuracy per unit of CPU is the trade).", "",
             "| model | faces/s, one at a time | faces/s, five at a time | vs the default | FER+ test accuracy |",
             "|---|---|---|---|---|"]
    base = card["speed"]["ferplus_vgg"]["faces_per_s_batch1"]
    acc = {card["name"]: card["results"]["ferplus_test"]["accuracy"],
           "ferplus_vgg": card["baseline_results"]["ferplus_test"]["accuracy"]}
    if card.get("int8"):
        acc[f"{card['name']} int8"] = card["int8"]["ferplus_test"]["accuracy"]
    for name, s in card["speed"].items():
        lines.append(f"| `{name}` | {s['faces_per_s_batch1']:.0f} | {s['faces_per_s_batch5']:.0f} | "
                     f"{s['faces_per_s_batch1'] / base:.2f}x | {pct(acc.get(name))} |")
    return lines + [""]


def _members(card: dict) -> list[str]:
    lines = ["## Members", "", "Each member's best checkpoint (validation macro-F1) and its FER+ validation figures.", "",
             "| member | epoch | val accuracy | val macro-F1 |", "|---|---|---|---|"]
    for m in card["members"]:
        lines.append(f"| `{Path(m['run']).name if not m['run'].startswith('ferwild:') else m['run']}` | {m['epoch']} | "
                     f"{pct(m['val_acc'])} | {pct(m['val_macro_f1'])} |")
    if card["excluded"]:
        lines += ["", "Left out: " + "; ".join(f"`{Path(e['run']).name}`: {e['problem']}" for e in card["excluded"])]
    else:
        lines += ["", "No member was left out (none diverged, stopped early or fell behind)."]
    by = card["by_tta"]
    lines += ["", "Test-time augmentation, chosen on wild_dev's choice people (accuracy / macro-F1): "
              + ", ".join(f"{t}: {pct(v['wild_choice']['accuracy'])} / {pct(v['wild_choice']['macro_f1'])}"
                          for t, v in by.items()) + "."]
    return lines + [""]


def _int8(card: dict) -> list[str]:
    q = card["int8"]
    return ["## int8", "",
            "`model.int8.onnx` beside the weights is the fp32 export (`model.onnx`) quantised to int8 by ONNX Runtime "
            "(static, per-channel weights, calibrated on 512 FER+ training crops). Against its fp32 twin on the "
            "cached crops (no detection):", "",
            "| data | fp32 accuracy | int8 accuracy | same label as fp32 | largest probability difference |",
            "|---|---|---|---|---|",
            f"| FER+ test ({q['ferplus_test']['n']:,} faces) | {pct(q['ferplus_test_fp32']['accuracy'])} | "
            f"{pct(q['ferplus_test']['accuracy'])} | {pct(q['ferplus_test']['same_label'])} | "
            f"{q['ferplus_test']['max_abs_prob_diff']:.3f} |",
            f"| wild_dev report people ({q['wild_report']['n']:,} photos) | "
            f"{pct(q['wild_report_fp32']['accuracy']) if 'wild_report_fp32' in q else ''} | {pct(q['wild_report']['accuracy'])} | "
            f"{pct(q['wild_report']['same_label'])} | {q['wild_report']['max_abs_prob_diff']:.3f} |", ""]


def _abstain(card: dict, doc: Path) -> list[str]:
    lines = ["## Abstaining: risk and coverage on wild_dev", "",
             "What `--abstain-below T` keeps on wild_dev (all photos; calibrated probabilities):", "",
             "| T | answered | accuracy of the answered [95%] | macro-F1 of the answered |", "|---|---|---|---|"]
    for row in card["risk_coverage_wild_dev"]:
        lo, hi = row["accuracy_ci"]
        lines.append(f"| {row['threshold']:.1f} | {100 * row['coverage']:.1f}% ({row['n_answered']}) | "
                     f"{pct(row['accuracy'])} [{100 * lo:.1f}, {100 * hi:.1f}] | {pct(row['macro_f1'])} |")
    figure = os.path.relpath(REPO / card["risk_coverage_figure"], doc.parent)
    return lines + ["", f"![risk-coverage on wild_dev]({figure})", ""]


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
            "(`docs/experiments/ferplus_ensemble.card.json`) as the teacher of `ferwild:ferplus_live`; "
            "`make model-ferplus-ensemble` rebuilds it.")


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
            "files (`model.onnx`, `model.int8.onnx`) with `--onnx`.")


def render_extra_card(card: dict, doc: Path) -> str:
    """The Markdown page of ``card`` (a ``card.json`` of ``ferplus_ensemble`` or ``ferplus_live``)."""
    what, intro = TITLES[card["name"]]
    if card.get("shipped") is False:
        what, intro = what + ", not shipped", _not_shipped(card)
    elif card.get("live_default") is False:
        what, intro = "a fast model", _not_live_default(card)
    lines = [f"# Model card: `ferwild:{card['name']}` ({what})", "", intro,
             "Figures below were measured by `recipes/ship_ferplus_models.py` on the packed model and are rendered "
             "from its `card.json`; the default's card is [MODEL_CARD.md](" + os.path.relpath(REPO / "MODEL_CARD.md", doc.parent)
             + ").", ""]
    lines += _glance(card) + _side_by_side(card) + _speed(card)
    lines += _members(card) if card.get("members") else _int8(card)
    lines += _neutral(card) + _per_class(card) + _abstain(card, doc) + reproduce_section(card)
    lines += ["## Known limits", "",
              "- The data's limits are the default's (see its card): FER2013's web faces and FER+'s crowd, few "
              "disgust and fear faces, wild_dev's one labeller per photo and mostly neutral and happy news photos.",
              "- Seven categories are not a person's feelings; do not use the model to make decisions about people.",
              "- Terms: the pixels are FER2013's (research use); FER+'s labels are MIT. Use the weights for research.", ""]
    return "\n".join(lines)


def card_file(name: str) -> Path:
    """The ``card.json`` of model ``name``: the package's, or docs/experiments' for one kept out."""
    shipped = REPO / "src" / "ferwild" / "weights" / name / "card.json"
    return shipped if shipped.is_file() else REPO / "docs" / "experiments" / f"{name}.card.json"


def rendered_pages() -> dict[Path, str]:
    """Each model card page and its text as rendered from its ``card.json`` (cards that exist)."""
    import ship_fer2013
    import ship_ferplus

    pages = {}
    for name, doc, render in (("ferplus_vgg", REPO / "MODEL_CARD.md", ship_ferplus.render_card),
                              ("fer2013_vgg", REPO / "docs" / "model_card_fer2013_vgg.md", ship_fer2013.render_card)):
        if card_file(name).is_file():
            pages[doc] = render(json.loads(card_file(name).read_text(encoding="utf-8")))
    for name in RENDERED:
        if card_file(name).is_file():
            doc = REPO / "docs" / f"model_card_{name}.md"
            pages[doc] = render_extra_card(json.loads(card_file(name).read_text(encoding="utf-8")), doc)
    return pages


def main() -> None:
    for doc, text in rendered_pages().items():
        doc.write_text(text)
        print(f"wrote {doc.relative_to(REPO)}")


if __name__ == "__main__":
    main()
