"""Does a model trained with occluders (issue 26 §4) beat the default where it matters?

Packs the candidate run as the default is packed (the default card's test-time augmentation and
temperature), then measures both the same way: FER+ validation and ``wild_dev``'s choice people
(what a choice may look at), FER+ test and ``wild_dev``'s report people (reported once), and the
occlusion probes on a seeded sample of ``wild_dev`` faces (the same faces for both). Writes one
JSON file; decides nothing by itself::

    python analyses/occlusion_candidate.py --candidate runs/ferplus_occlusion --ferplus ferplus_basic7 \\
        --wild wild_dev_like_ferplus --work work/occlusion_candidate --out docs/bench/occlusion_candidate.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ferwild.audit.occlusion import occlusion_probe
from ferwild.evaluate import evaluate_run
from ferwild.files import save_json_atomic
from ferwild.metrics import jsonable
from ferwild.runs import pack_run
from ferwild.shipped import model_card

DEFAULT = "ferwild:ferplus_vgg"
#: (name, data argument, split): the choice sets first, then the report sets.
MEASURES = (("ferplus_val", "ferplus", "val"), ("wild_choice", "wild", "train+val"),
            ("ferplus_test", "ferplus", "test"), ("wild_report", "wild", "test"))
PROBES = ("eyes", "mouth", "hand", "half", "patch_1")


def measure(run: str, data: dict[str, Path], work: Path, occlusion_faces: int) -> dict:
    """Accuracy and macro-F1 on every set of :data:`MEASURES`, and the occlusion drops."""
    out = {}
    for name, which, split in MEASURES:
        summary = evaluate_run(run, data[which], split, work / name)
        out[name] = {"n": summary["n"], "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"]}
        print(f"  {name}: {100 * summary['accuracy']:.2f}% / {100 * summary['macro_f1']:.2f}")
    probe = occlusion_probe(run, data["wild"], max_faces=occlusion_faces, detectors=(), n_bootstrap=500)
    out["occlusion"] = {p: probe["probes"][p]["accuracy"]["drop"] for p in PROBES}
    out["occlusion_clean_accuracy"] = probe["clean"]["accuracy"]
    print("  occlusion drops: " + ", ".join(f"{p} {100 * v['value']:.1f}" for p, v in out["occlusion"].items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", type=Path, required=True, help="a ferwild train run")
    parser.add_argument("--ferplus", type=Path, required=True)
    parser.add_argument("--wild", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--occlusion-faces", type=int, default=1000)
    args = parser.parse_args()
    card = model_card(DEFAULT)
    packed = pack_run(args.candidate, args.work / "candidate", card={"source": str(args.candidate)},
                      tta=card["tta"], temperature=card["temperature"])
    data = {"ferplus": args.ferplus, "wild": args.wild}
    result = {"candidate": str(args.candidate), "packed_like_the_default": {"tta": card["tta"],
                                                                         "temperature": card["temperature"]},
              "occlusion_faces": args.occlusion_faces}
    for name, run in (("default", DEFAULT), ("candidate", str(packed))):
        print(name)
        result[name] = measure(run, data, args.work / name, args.occlusion_faces)
    save_json_atomic(args.out, jsonable(result, digits=6, nan_to_none=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
