"""Benchmark: the shipped model next to the models people use today, and its CPU speed.

1. **Accuracy** on FER2013's PrivateTest (all 3,589 faces, read from the JPEG files through the
   recogniser, as a user's pre-aligned crops would be), with PyTorch and with the model's ONNX
   export, printed next to published figures on the same faces: fer 25.10 (mini-Xception, what
   ``pip install fer`` gives) and the best from-scratch single nets. The ratio is ferwild / fer.
2. **Speed of classification** (aligned crops -> probabilities, batch 64): ONNX Runtime vs
   PyTorch, faces/s, measured in the same run.
3. **Speed of the whole recogniser on photos** (decode, MTCNN, align, classify: what
   ``ferwild predict`` does) with the shipped model vs the demo-sized ``cnn_small``, over the
   photos of ``face_photos``: the shipped model's cost over today's demo recogniser.

Usage: python bench/bench_peers.py [--repeats 3] [--run ferwild:fer2013_vgg] [--json]

``--run`` is the model measured (default the shipped ``ferwild:fer2013_vgg``, the FER2013 model
these peers compare with; ``Recognizer.default()`` is the FER+ model ``ferplus_vgg``). With
``--json`` the last line is one JSON object: ``privatetest_faces``, ``accuracy_torch``,
``macro_f1_torch``, ``accuracy_onnx``, ``macro_f1_onnx`` (shares 0-1), ``ratio_accuracy_vs_fer``,
``ratio_macro_f1_vs_fer``, ``torch_faces_per_s``, ``onnx_faces_per_s``, ``ratio_onnx_vs_torch``,
``photos``, ``photo_faces``, ``shipped_faces_per_s``, ``demo_faces_per_s``,
``ratio_time_shipped_vs_demo``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# (model, PrivateTest accuracy, macro-F1) as published / measured on the same 3,589 faces
ANCHORS = [
    ("fer 25.10 (mini-Xception)", 0.6567, 0.6407),
    ("VGG variant (Khaireddin & Chen 2021)", 0.7328, None),
    ("Residual Masking Network (Pham et al. 2021)", 0.7414, None),
]


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def accuracy(torch_rec, onnx_rec, name: str, paths: list[Path]) -> tuple[list, dict]:
    """Figure 1: PrivateTest accuracy / macro-F1 with PyTorch and ONNX Runtime, printed beside ANCHORS.
    Returns the aligned crops (figure 2 reuses them) and the figures."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    from ferwild.data.images import load_image
    from ferwild.labels import normalize_label

    truth = np.array([torch_rec.label_names.index(normalize_label(p.parent.name)) for p in paths])
    crops = [load_image(p).array for p in paths]
    print(f"PrivateTest: {len(paths)} faces", flush=True)
    rows = []
    for label, rec in ((f"ferwild {name} (PyTorch)", torch_rec), (f"ferwild {name} (ONNX Runtime)", onnx_rec)):
        pred = rec.classify(crops).argmax(1)
        rows.append((label, accuracy_score(truth, pred), f1_score(truth, pred, average="macro")))
    fer_acc, fer_f1 = ANCHORS[0][1], ANCHORS[0][2]
    print(f"\n{'model':45s} {'accuracy':>9s} {'macro-F1':>9s}")
    for label, acc, f1 in rows + ANCHORS:
        print(f"{label:45s} {100 * acc:8.2f}% {'' if f1 is None else f'{100 * f1:8.2f}%':>9s}")
    acc, f1 = rows[0][1], rows[0][2]
    print(f"ferwild / fer: accuracy {acc / fer_acc:.3f}x ({100 * (acc - fer_acc):+.2f} points), "
          f"macro-F1 {f1 / fer_f1:.3f}x ({100 * (f1 - fer_f1):+.2f} points)\n", flush=True)
    return crops, {"privatetest_faces": len(paths), "accuracy_torch": float(rows[0][1]),
                   "macro_f1_torch": float(rows[0][2]), "accuracy_onnx": float(rows[1][1]),
                   "macro_f1_onnx": float(rows[1][2]), "fer_accuracy_published": fer_acc,
                   "fer_macro_f1_published": fer_f1, "ratio_accuracy_vs_fer": float(acc / fer_acc),
                   "ratio_macro_f1_vs_fer": float(f1 / fer_f1), "diff_accuracy_vs_fer": float(acc - fer_acc),
                   "diff_macro_f1_vs_fer": float(f1 - fer_f1)}


def recogniser_speed(run: str, photos: list[Path], repeats: int) -> dict:
    """Figure 3: the whole recogniser (MTCNN included) with ``run`` vs the demo-sized cnn_small."""
    from ferwild.backends import TorchClassifier
    from ferwild.models import create_model
    from ferwild.recognizer import Recognizer

    shipped_rec = Recognizer.from_run(run, device="cpu")
    demo_model = create_model("cnn_small", len(shipped_rec.label_names), image_size=48,
                              id2label=dict(enumerate(shipped_rec.label_names)))
    demo_rec = Recognizer(TorchClassifier(demo_model, "cpu"), label_names=shipped_rec.label_names,
                          preprocessing=demo_model.preprocessing, face_alignment=shipped_rec.face_alignment)
    shipped_rec.analyze(photos[:2]), demo_rec.analyze(photos[:2])  # warm-up (MTCNN, first allocations)
    n_faces = sum(len(r.faces) for r in shipped_rec.analyze(photos))
    t_shipped = best_of(lambda: shipped_rec.analyze(photos), repeats)
    t_demo = best_of(lambda: demo_rec.analyze(photos), repeats)
    print(f"recogniser on {len(photos)} photos ({n_faces} faces, MTCNN included): shipped fer_vgg "
          f"{n_faces / t_shipped:.1f} faces/s, demo cnn_small {n_faces / t_demo:.1f} faces/s: "
          f"shipped / demo time {t_shipped / t_demo:.2f}x", flush=True)
    return {"photos": len(photos), "photo_faces": n_faces, "shipped_s": t_shipped, "demo_s": t_demo,
            "shipped_faces_per_s": n_faces / t_shipped, "demo_faces_per_s": n_faces / t_demo,
            "ratio_time_shipped_vs_demo": t_shipped / t_demo}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", default="ferwild:fer2013_vgg",
                        help="the model measured (default: the shipped FER2013 model)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    from ferwild.export import export_onnx
    from ferwild.recognizer import Recognizer

    shared = Path(os.environ.get("FERWILD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (shared / "fer2013").is_dir():
        sys.exit(f"needs the shared data (FER2013 and face_photos) at {shared}; set FERWILD_SHARED_DATA")

    name = str(args.run).removeprefix("ferwild:")
    torch_rec = Recognizer.from_run(args.run, device="cpu", detector="none")
    onnx_path = Path(tempfile.mkdtemp(prefix="ferwild_peers_")) / f"{Path(name).name}.onnx"
    export_onnx(args.run, onnx_path)
    onnx_rec = Recognizer.from_onnx(onnx_path, detector="none")

    paths = sorted((shared / "fer2013" / "test").glob("*/PrivateTest_*"))
    crops, summary = accuracy(torch_rec, onnx_rec, name, paths)

    sample = crops[:1024]
    t_torch = best_of(lambda: torch_rec.classify(sample), args.repeats)
    t_onnx = best_of(lambda: onnx_rec.classify(sample), args.repeats)
    print(f"classify {len(sample)} aligned crops: PyTorch {len(sample) / t_torch:.0f} faces/s, ONNX Runtime "
          f"{len(sample) / t_onnx:.0f} faces/s: ONNX / PyTorch {t_torch / t_onnx:.2f}x", flush=True)
    summary.update(classified_crops=len(sample), torch_faces_per_s=len(sample) / t_torch,
                   onnx_faces_per_s=len(sample) / t_onnx, ratio_onnx_vs_torch=t_torch / t_onnx)

    photos = sorted(p for p in (shared / "face_photos").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    summary.update(recogniser_speed(args.run, photos, args.repeats))
    if args.json:
        summary.update(run=str(args.run), repeats=args.repeats, machine=f"{os.cpu_count()} cores",
                       command="bench/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
