"""Benchmark: the peer library ``fer`` (PyPI, mini-Xception) on the real-photo dev set ``wild_dev``.

Standalone: imports nothing from ferwild and runs in its own virtualenv, outside the repo, because
``fer`` pulls TensorFlow (and, through facenet-pytorch, torch) and pins an old ``setuptools``.

For every photo of ``<data>/labels.csv`` (columns ``path,label,subject,labeller``) it runs
``fer.FER(mtcnn=...).detect_emotions`` on the RGB image, keeps the LARGEST face box (w*h), takes
its top emotion, maps fer's names onto ferwild's (angry->anger, happy->happiness, sad->sadness,
the rest unchanged) and writes per-photo predictions
(``path,label,subject,labeller,n_faces,pred,confidence,error``) to ``--out``. A photo that cannot be
read or that fer fails on is recorded with its ``error`` and counts as "no face"; the run never aborts.

The summary (printed and written to ``--json``): fer / TensorFlow versions, detector, photos,
photos with a face, detection rate; on photos with a face: accuracy, macro-F1 (sklearn,
``average="macro"`` over the 7 classes), per-class recall with Wilson 95% intervals and support,
95% percentile-bootstrap intervals (1000 resamples over photos, seed 0) for accuracy and macro-F1;
accuracy over all photos with "no face" counted wrong; seconds per photo (wall, decode included).

It is gentle with a shared 2-core machine: one process, TensorFlow set to 1 intra-op and 1
inter-op thread, fer's TFLite interpreter built with 1 thread, OpenCV (and torch, for MTCNN) on
1 thread. Run it under ``nice``.

Build the venv (once, outside the repo)::

    python3 -m venv /tmp/fer_venv
    /tmp/fer_venv/bin/pip install fer tensorflow-cpu scikit-learn "setuptools<81"

(fer 25.10 still imports ``pkg_resources``, gone from setuptools >= 81, hence the pin; its
weights ship in the wheel; facenet-pytorch, and so torch, comes in as one of its requirements.)

Usage::

    nice -n 15 /tmp/fer_venv/bin/python bench/bench_wild_peers.py \\
        --out /tmp/fer_wild_preds.csv --json /tmp/fer_wild_summary.json
    nice -n 15 /tmp/fer_venv/bin/python bench/bench_wild_peers.py --mtcnn \\
        --out /tmp/fer_wild_preds_mtcnn.csv --json /tmp/fer_wild_summary_mtcnn.json

The ``--mtcnn`` JSON is kept as ``docs/bench/wild_peers_fer_mtcnn.json``: the default model's card
quotes it (``recipes/ship_ferplus.py --peer``).

Options: ``--data`` (folder holding labels.csv), ``--mtcnn`` (fer's MTCNN detector instead of the
OpenCV Haar cascade), ``--keras`` (fer's full-precision Keras model instead of its default
quantised TFLite one), ``--bgr`` (hand fer the BGR array, as its own docs do, instead of RGB),
``--limit N`` (first N photos, for a smoke test).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

# Thread limits must be in place before TensorFlow / OpenCV / torch start their pools.
for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
             "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
FER_TO_WILD = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
               "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
# ../shared/data/wild_dev beside the repository, or under $FERWILD_SHARED_DATA (as the tests look)
DEFAULT_DATA = str(Path(os.environ.get("FERWILD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
                   / "wild_dev")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% for z = 1.96); ``(nan, nan)`` when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def make_detector(args):
    """fer's FER object, with every thread pool it uses held to one thread."""
    if args.mtcnn:
        # torch / torchvision must be loaded BEFORE TensorFlow: the other way round (TF 2.21 then
        # torchvision 0.29's C extension) segfaults at import.
        import facenet_pytorch  # noqa: F401
        import torch
        import torchvision  # noqa: F401
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    import cv2
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)
    try:
        from fer.fer import FER  # fer >= 25
    except ImportError:
        from fer import FER  # older releases export it at the top level

    kwargs = {"mtcnn": args.mtcnn}
    if args.keras:
        kwargs["use_tflite"] = False
    elif getattr(FER, "_tflite_interpreter_cache", "absent") is None:
        # fer >= 25 classifies with a TFLite interpreter it builds without a thread count; build it
        # here with one thread and hand it over through fer's own class-level cache.
        import importlib.resources as resources
        model = resources.files("fer") / "data" / "emotion_model_quantized.tflite"
        interp = tf.lite.Interpreter(model_path=str(model), num_threads=1)
        interp.allocate_tensors()
        FER._tflite_interpreter_cache = interp
    return FER(**kwargs)


def top_of_largest(faces: list) -> tuple[str | None, float | None]:
    """The top emotion (fer's name) and its score for the largest box (w*h) among ``faces``."""
    if not faces:
        return None, None
    face = max(faces, key=lambda f: int(f["box"][2]) * int(f["box"][3]))
    emotions = face["emotions"]
    name = max(emotions, key=lambda k: emotions[k])  # as fer.top_emotion: first of ties
    return name, float(emotions[name])


def run(args) -> list[dict]:
    import cv2

    data = Path(args.data)
    with open(data / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.limit:
        rows = rows[: args.limit]
    detector = make_detector(args)
    out_rows = []
    t0 = time.perf_counter()
    for i, row in enumerate(rows, 1):
        rec = {k: row[k] for k in ("path", "label", "subject", "labeller")}
        rec.update(n_faces=0, pred="", confidence="", error="")
        try:
            img = cv2.imread(str(data / row["path"]), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError("unreadable image")
            if not args.bgr:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            faces = detector.detect_emotions(img)
            rec["n_faces"] = len(faces)
            name, score = top_of_largest(faces)
            if name is not None:
                rec["pred"] = FER_TO_WILD[name]
                rec["confidence"] = f"{score:.2f}"
        except Exception as exc:  # a bad photo is recorded, never fatal
            rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
        out_rows.append(rec)
        if i % 500 == 0 or i == len(rows):
            el = time.perf_counter() - t0
            print(f"[{i}/{len(rows)}] {el:.0f}s elapsed, {el / i:.3f} s/photo, "
                  f"faces found {sum(1 for r in out_rows if r['pred'])}", flush=True)
    elapsed = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "subject", "labeller", "n_faces",
                                           "pred", "confidence", "error"])
        w.writeheader()
        w.writerows(out_rows)
    args._elapsed = elapsed
    return out_rows


def summarize(rows: list[dict], args, elapsed: float) -> dict:
    import fer
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import f1_score

    n = len(rows)
    found = [r for r in rows if r["pred"]]
    y = np.array([r["label"] for r in found])
    p = np.array([r["pred"] for r in found])
    correct = (y == p).astype(float)
    m = len(found)

    def macro_f1(yy, pp):
        return float(f1_score(yy, pp, labels=CLASSES, average="macro", zero_division=0))

    rng = np.random.default_rng(args.seed)
    boot = rng.integers(0, m, size=(args.bootstrap, m)) if m else np.zeros((0, 0), int)
    acc_draws = correct[boot].mean(axis=1) if m else np.array([np.nan])
    f1_draws = np.array([macro_f1(y[b], p[b]) for b in boot]) if m else np.array([np.nan])
    per_class = {}
    for c in CLASSES:
        members = y == c
        k, s = int((members & (p == c)).sum()), int(members.sum())
        lo, hi = wilson_interval(k, s)
        per_class[c] = {"recall": (k / s) if s else None, "recall_ci": [lo, hi] if s else None,
                        "support": s, "n_predicted": int((p == c).sum())}
    all_correct = np.array([1.0 if (r["pred"] and r["pred"] == r["label"]) else 0.0 for r in rows])
    boot_all = np.random.default_rng(args.seed).integers(0, n, size=(args.bootstrap, n))
    all_draws = all_correct[boot_all].mean(axis=1)
    q = (0.025, 0.975)
    summary = {
        "fer_version": getattr(fer, "__version__", "unknown"),
        "tensorflow_version": tf.__version__,
        "detector": "mtcnn (facenet-pytorch)" if args.mtcnn else "opencv haar cascade",
        "classifier": "keras hdf5" if args.keras else "fer default (quantised tflite)",
        "channel_order": "bgr" if args.bgr else "rgb",
        "data": str(Path(args.data) / "labels.csv"),
        "n_photos": n,
        "n_with_face": m,
        "n_errors": sum(1 for r in rows if r["error"]),
        "n_multi_face": sum(1 for r in rows if int(r["n_faces"]) > 1),
        "detection_rate": m / n if n else float("nan"),
        "detection_rate_ci": list(wilson_interval(m, n)),
        "on_faces": {
            "n": m,
            "accuracy": float(correct.mean()) if m else None,
            "accuracy_ci": [float(np.quantile(acc_draws, q[0])), float(np.quantile(acc_draws, q[1]))],
            "macro_f1": macro_f1(y, p) if m else None,
            "macro_f1_ci": [float(np.quantile(f1_draws, q[0])), float(np.quantile(f1_draws, q[1]))],
            "per_class": per_class,
        },
        "all_photos_no_face_wrong": {
            "n": n,
            "accuracy": float(all_correct.mean()) if n else None,
            "accuracy_ci": [float(np.quantile(all_draws, q[0])), float(np.quantile(all_draws, q[1]))],
        },
        "bootstrap": {"resamples": args.bootstrap, "seed": args.seed, "unit": "photo",
                      "kind": "percentile 95%"},
        "seconds_per_photo": elapsed / n if n else None,
        "seconds_total": elapsed,
        "threads": {"tf_intra_op": 1, "tf_inter_op": 1, "tflite": 1, "opencv": 1},
        "predictions_csv": str(args.out),
    }
    return summary


def print_summary(s: dict) -> None:
    f, a = s["on_faces"], s["all_photos_no_face_wrong"]
    print(f"\nfer {s['fer_version']} / TF {s['tensorflow_version']}, detector: {s['detector']}, "
          f"classifier: {s['classifier']}, input: {s['channel_order']}")
    print(f"photos {s['n_photos']}, with a face {s['n_with_face']} "
          f"(detection rate {s['detection_rate']:.3f}), errors {s['n_errors']}, "
          f"multi-face {s['n_multi_face']}")
    if f["n"]:
        print(f"on faces:  accuracy {f['accuracy']:.4f} [{f['accuracy_ci'][0]:.4f}, {f['accuracy_ci'][1]:.4f}]"
              f"  macro-F1 {f['macro_f1']:.4f} [{f['macro_f1_ci'][0]:.4f}, {f['macro_f1_ci'][1]:.4f}]")
    print(f"all photos (no face = wrong): accuracy {a['accuracy']:.4f} "
          f"[{a['accuracy_ci'][0]:.4f}, {a['accuracy_ci'][1]:.4f}]")
    for c, v in f["per_class"].items():
        if v["support"]:
            print(f"  {c:10s} recall {v['recall']:.3f} [{v['recall_ci'][0]:.3f}, {v['recall_ci'][1]:.3f}]"
                  f"  support {v['support']:5d}  predicted {v['n_predicted']}")
        else:
            print(f"  {c:10s} support 0  predicted {v['n_predicted']}")
    print(f"seconds per photo {s['seconds_per_photo']:.4f} (total {s['seconds_total']:.0f}s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder holding labels.csv")
    ap.add_argument("--out", default="/tmp/fer_wild_preds.csv", help="per-photo predictions CSV")
    ap.add_argument("--json", default="/tmp/fer_wild_summary.json", help="summary JSON")
    ap.add_argument("--mtcnn", action="store_true", help="fer's MTCNN detector (facenet-pytorch)")
    ap.add_argument("--keras", action="store_true", help="fer's Keras hdf5 model, not its TFLite one")
    ap.add_argument("--bgr", action="store_true", help="pass the BGR array instead of RGB")
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = run(args)
    summary = summarize(rows, args, args._elapsed)
    print_summary(summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
