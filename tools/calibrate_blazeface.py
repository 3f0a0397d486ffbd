"""Measure where BlazeFace's keypoints sit in the 5-point (ArcFace) template frame that MTCNN's
landmarks define, so that ``--detector fast`` frames faces the way MTCNN-aligned training data was.

For every photo of the calibration people (half of ``wild_dev``'s subjects, by a stable hash:
the other half stays for checking) both detectors run; where each finds exactly one face and the
boxes overlap, the similarity transform that maps MTCNN's 5 landmarks onto the ArcFace unit
template is applied to BlazeFace's raw keypoints (eyes, nose tip, mouth centre). The per-point
medians (robust to the odd bad detection) are printed as the ``_KEYPOINTS_IN_TEMPLATE`` constant of
``ferwild/detectors/blazeface.py``, with the spread.

    OMP_NUM_THREADS=1 nice .venv/bin/python tools/calibrate_blazeface.py
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("FERWILD_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / "wild_dev"


def calibration_half(subject: str) -> bool:
    """True for the people used to calibrate (a stable split: crc32 of the name is even)."""
    return zlib.crc32(subject.encode()) % 2 == 0


def main() -> int:
    import torch

    torch.set_num_threads(1)
    from ferwild.data.faces import ARCFACE_TEMPLATE_112, FaceDetector, similarity_transform
    from ferwild.data.images import load_image
    from ferwild.detectors.blazeface import BlazeFaceDetector
    from ferwild.tracking import iou as _iou

    labels = pd.read_csv(DATA / "labels.csv")
    labels = labels[labels["subject"].map(calibration_half)]
    fast, mtcnn = BlazeFaceDetector(), FaceDetector()
    unit = ARCFACE_TEMPLATE_112 / 112.0
    points = []
    for i, rel in enumerate(labels["path"]):
        image = load_image(DATA / rel).array
        (b,), (m,) = fast.raw_keypoints([image]), mtcnn.detect([image])
        if isinstance(b, Exception) or isinstance(m, Exception) or len(b) != 1 or len(m) != 1:
            continue
        box, kps = b[0]
        if _iou(tuple(box), m[0].box) < 0.3:
            continue
        to_unit = similarity_transform(m[0].landmarks, unit)
        points.append(kps[:4] @ to_unit[:, :2].T + to_unit[:, 2])
        if i % 200 == 0:
            print(f"{i}/{len(labels)}", file=sys.stderr)
    arr = np.stack(points)
    median = np.median(arr, axis=0)
    spread = np.percentile(arr, [25, 75], axis=0)
    print(f"# {len(arr)} photos of {labels['subject'].nunique()} calibration people in wild_dev")
    print("_KEYPOINTS_IN_TEMPLATE = np.array([")
    names = ["right eye (image left)", "left eye (image right)", "nose tip", "mouth centre"]
    for name, p, lo, hi in zip(names, median, spread[0], spread[1]):
        print(f"    [{p[0]:.4f}, {p[1]:.4f}],  # {name}; IQR x {lo[0]:.3f}-{hi[0]:.3f}, y {lo[1]:.3f}-{hi[1]:.3f}")
    print("])")
    print("# ArcFace unit template for comparison:", np.round(unit, 4).tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
