"""Benchmark: does cutting new photos like the training data help a FER2013 model?

FER2013's faces fill their 48 px crops; the default ArcFace-style template (margin 0.3) frames
a face much more loosely. ``prepare`` learns a pre-aligned dataset's landmark template, and
every checkpoint carries it, so ``Recognizer`` cuts photos the FER2013 way. This benchmark
measures what that buys on real photos, against the default framing as the baseline, in the
same run:

1. take a run trained on FER2013: the shipped model (``ferwild:fer2013_vgg``) unless ``--run``
   names another;
2. find the faces in ``face_photos`` with MTCNN and classify them twice: framed with the
   learned template (the default) and with the margin template;
3. score how well ``p(happiness)`` separates the faces hand-labelled below as clearly smiling
   from those clearly not (ROC AUC), and how many of each are called happiness. Ambiguous
   faces, false detections and near-duplicate framings are simply not listed. The labels are
   one person's reading of the photos, and few: a sanity check, not a FER benchmark.

Usage: python bench/bench_framing.py [--run RUN_DIR] [--json]

With ``--json`` the last line is one JSON object: per framing (``learned``, ``margin``) its
``auc``, ``smiling_called_happiness``, ``not_smiling_called_happiness``,
``mean_p_happiness_smiling``, ``mean_p_happiness_not_smiling`` and ``seconds``; and
``ratio_auc_learned_vs_margin``, ``smiling_faces``, ``not_smiling_faces``, ``photos``, ``run``,
``command``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# (photo under face_photos/, face rank by box area as Recognizer orders them)
SMILING = [
    ("face_recognition/alex-lacamoire.png", 0), ("face_recognition/alex_lacamoire1.jpg", 0),
    ("face_recognition/biden2.jpg", 0), ("face_recognition/kit_with_rose.jpg", 1),
    ("face_recognition/obama-1080p.jpg", 0), ("face_recognition/obama-240p.jpg", 0),
    ("face_recognition/obama-480p.jpg", 0), ("face_recognition/obama-720p.jpg", 0),
    ("face_recognition/obama.jpg", 0), ("face_recognition/obama_and_biden.jpg", 0),
    ("face_recognition/obama_and_biden.jpg", 1), ("face_recognition/obama_partial_face.jpg", 0),
    ("face_recognition/obama_partial_face2.jpg", 0), ("face_recognition/obama_small.jpg", 0),
    ("face_recognition/two_people.jpg", 0), ("face_recognition/two_people.jpg", 1),
    ("pyfeat/0-f15-hao-ph.jpg", 0), ("pyfeat/Image_with_alpha.png", 0), ("pyfeat/multi_face.jpg", 0),
    ("pyfeat/multi_face.jpg", 1), ("pyfeat/multi_face.jpg", 2), ("pyfeat/multi_face.jpg", 3),
    ("pyfeat/single_face.jpg", 0),
]
NOT_SMILING = [
    ("face_recognition/32bit.png", 0), ("face_recognition/img1.jpg", 0), ("face_recognition/john1.jpeg", 0),
    ("face_recognition/john2.jpeg", 0), ("face_recognition/johnsnow_test1.jpg", 0),
    ("face_recognition/lin-manuel-miranda.png", 0), ("face_recognition/obama1.jpg", 0),
    ("face_recognition/obama2.jpg", 0), ("face_recognition/obama_and_biden.jpg", 2),
    ("pyfeat/0-f1-su-ph.jpg", 0), ("pyfeat/15-f13-anc-ph.jpg", 0), ("pyfeat/45-m7-di-ph.jpg", 0),
]


def score(rec, photos: list[Path], root: Path) -> dict:
    """Read ``photos`` with ``rec``; how p(happiness) separates SMILING from NOT_SMILING."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    results = {Path(r.source): r for r in rec.analyze(photos)}
    seconds = time.perf_counter() - t0

    def p_happy(item):
        faces = results[root / item[0]].faces
        return faces[item[1]].probabilities["happiness"] if item[1] < len(faces) else 0.0

    def called_happy(item):
        faces = results[root / item[0]].faces
        return item[1] < len(faces) and faces[item[1]].label == "happiness"

    pos, neg = [p_happy(i) for i in SMILING], [p_happy(i) for i in NOT_SMILING]
    return {"auc": float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)),
            "smiling_called_happiness": int(sum(map(called_happy, SMILING))),
            "not_smiling_called_happiness": int(sum(map(called_happy, NOT_SMILING))),
            "mean_p_happiness_smiling": float(np.mean(pos)), "mean_p_happiness_not_smiling": float(np.mean(neg)),
            "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="ferwild:fer2013_vgg",
                        help="a run trained on FER2013 (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    from ferwild.data.faces import FaceAlignment
    from ferwild.recognizer import Recognizer

    shared = Path(os.environ.get("FERWILD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (shared / "face_photos").is_dir():
        sys.exit(f"needs the shared face photos at {shared}; set FERWILD_SHARED_DATA")
    run = args.run
    learned = Recognizer.from_run(run, device="cpu")
    if learned.face_alignment.template is None:
        sys.exit(f"{run} carries no learned template (was it trained on pre-aligned data prepared by this version?)")
    margin = FaceAlignment(**{**learned.face_alignment.to_dict(), "template": None})
    variants = {"learned template (default)": ("learned", learned.face_alignment),
                "margin template (baseline)": ("margin", margin)}
    photos = sorted({shared / "face_photos" / p for p, _ in SMILING + NOT_SMILING})
    summary: dict = {}
    for name, (key, alignment) in variants.items():
        rec = Recognizer(learned.classifier, label_names=learned.label_names, preprocessing=learned.preprocessing,
                         face_alignment=alignment, detector=learned.detector)
        r = summary[key] = score(rec, photos, shared / "face_photos")
        print(f"{name:28s} AUC of p(happiness) {r['auc']:.3f} | labelled happiness: smiling "
              f"{r['smiling_called_happiness']}/{len(SMILING)}, not smiling "
              f"{r['not_smiling_called_happiness']}/{len(NOT_SMILING)} | mean p(happiness) "
              f"{r['mean_p_happiness_smiling']:.2f} vs {r['mean_p_happiness_not_smiling']:.2f} | "
              f"{len(photos)} photos in {r['seconds']:.1f}s", flush=True)
    learned_auc, base_auc = summary["learned"]["auc"], summary["margin"]["auc"]
    print(f"\nAUC learned / margin template: {learned_auc:.3f} / {base_auc:.3f} = {learned_auc / base_auc:.2f}x "
          f"({len(SMILING)} smiling vs {len(NOT_SMILING)} not, hand-labelled)")
    if args.json:
        summary.update(ratio_auc_learned_vs_margin=learned_auc / base_auc, smiling_faces=len(SMILING),
                       not_smiling_faces=len(NOT_SMILING), photos=len(photos), run=str(run),
                       command="bench/bench_framing.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
