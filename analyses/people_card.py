"""Write the default model card's "Who it works for" figures from the files that measured them.

Reads the production audit's ``audit.json`` (gender with the class mix taken out, image
properties) and ``ferwild occlusion``'s ``occlusion.json`` files (kept under ``docs/bench/``),
stores the figures the card shows in ``card.json["who_it_works_for"]`` of the shipped default,
and re-renders MODEL_CARD.md. Nothing is measured here::

    python analyses/people_card.py --audit docs/bench/audit_wild_dev.json \\
        --occlusion docs/bench/occlusion_wild_dev.json --detectors docs/bench/occlusion_wild_dev_detectors.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferwild.files import save_text_atomic
from ferwild.model_cards import rendered_pages

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "src" / "ferwild" / "weights" / "ferplus_vgg" / "card.json"
GROUP_KEYS = ("n", "people", "accuracy", "accuracy_standardised", "macro_f1", "macro_f1_standardised", "ece")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", type=Path, required=True)
    parser.add_argument("--occlusion", type=Path, required=True)
    parser.add_argument("--detectors", type=Path, required=True, help="an occlusion.json with the detector check")
    args = parser.parse_args()
    audit = json.loads(args.audit.read_text(encoding="utf-8"))
    occlusion = json.loads(args.occlusion.read_text(encoding="utf-8"))
    detectors = json.loads(args.detectors.read_text(encoding="utf-8")).get("detectors", {}).get("mtcnn", {})
    gender = audit["attribute_gaps"]["attr_gender"]
    props = audit["image_properties"]["properties"]
    rel = lambda p: str(p.resolve().relative_to(REPO)) if p.resolve().is_relative_to(REPO) else str(p)  # noqa: E731
    who = {
        "sources": [rel(args.audit), rel(args.occlusion), rel(args.detectors)],
        "measured_on": (f"Measured on `wild_dev`'s {audit['rows']['production']:,} real photos with a face (all of "
                        "its people: the choice people included), people as the units of every interval "
                        "(95%, people resampled). The gender labels are the published ones of these photos' "
                        "people; `unknown` is counted, not compared. Details and the commands: "
                        "[docs/real-audit.md](docs/real-audit.md)."),
        "gender": {"groups": {g: {k: v[k] for k in GROUP_KEYS} for g, v in gender["groups"].items()},
                   "summary": gender["summary"]},
        "occlusion": {name: {"description": p["description"], "accuracy_drop": p["accuracy"]["drop"],
                             "happiness_recall_drop": p["recall_drop"]["happiness"],
                             "mtcnn_found": (detectors.get(name) or {}).get("rate")}
                      for name, p in occlusion["probes"].items()},
        "image_properties": {name: {g: {"n": v["n"], "accuracy": v["accuracy"],
                                        "accuracy_standardised": v["accuracy_standardised"]}
                                    for g, v in props[name]["comparison"]["groups"].items()}
                             for name in ("face_fill", "sharpness", "brightness")
                             if (props.get(name) or {}).get("comparison")},
        "notes": ("Image properties in terciles: `face_fill` is the face box's side over the photo's shorter "
                  "side (1 or more: the face fills the photo), `sharpness` and `brightness` are `prepare`'s "
                  "statistics. Every `wild_dev` photo but one labeller's is 350 px grey, so size and colour "
                  "cannot be told apart from that labeller here (docs/real-audit.md)."),
    }
    card = json.loads(CARD.read_text(encoding="utf-8"))
    card["who_it_works_for"] = who
    save_text_atomic(CARD, json.dumps(card, indent=2) + "\n")
    for doc, text in rendered_pages(REPO).items():
        save_text_atomic(doc, text)
    print(f"wrote {CARD.relative_to(REPO)} and re-rendered the model card pages")


if __name__ == "__main__":
    main()
