"""Benchmark: the fast detector's score threshold, chosen on real data (issue 25 §3).

At MediaPipe's own threshold (0.5) ``ferwild live no_face.mp4 --detector fast`` reported
"6 faces, 2 people" in a video without a face. This sweeps the threshold of ``fast`` and
``fast-tiled`` (BlazeFace, untiled and tiled) and prints, per threshold:

* false faces: detections per frame of ``face_videos/no_face.mp4`` (no face in it; also the
  share of its frames with any detection) and in ``face_photos/pyfeat/free-mountain-vector-01.jpg``
  (a drawing of mountains);
* real faces still found: ``face_photos/pyfeat/multi_face.jpg``'s 5 faces (faces found; more
  than 5 would be false ones), the share of ``wild_dev`` photos with a face (every photo holds
  one labelled face; a seeded sample, ``--photos``) and the share of frames with a face in the
  other videos (``single_face.mp4``, ``WolfgangLanger_Pexels.mp4``: a face throughout;
  ``face_noface.mov``: a face in part of it, so its share only shows the trend).

Each image is detected once per detector with the lowest threshold swept; the rows filter those
scores. That is exact: weighted NMS seeds each cluster with its best box in score order, so the
detections scoring >= t are the same whether the lower ones took part or not (only their box
positions, a score-weighted mean, move a little).

Usage::

    nice -n 10 .venv/bin/python bench/bench_fast_detector_threshold.py --json docs/bench/fast_detector_threshold.json
    .venv/bin/python bench/bench_fast_detector_threshold.py --photos 100     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("FERWILD_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
THRESHOLDS = [round(0.5 + 0.025 * i, 3) for i in range(19)]  # 0.50 (MediaPipe's) .. 0.95
NO_FACE_VIDEO = "no_face.mp4"
FACE_VIDEOS = ["single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov"]
NO_FACE_PHOTO = "pyfeat/free-mountain-vector-01.jpg"
GROUP_PHOTO, GROUP_FACES = "pyfeat/multi_face.jpg", 5


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as an RGB array (as ``ferwild live`` decodes a file)."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def scores(detector, images: list[np.ndarray]) -> list[list[float]]:
    """The detection scores per image (an image the detector fails on: none)."""
    return [[] if isinstance(found, Exception) else [d.confidence for d in found]
            for found in (detector.detect([image])[0] for image in images)]


def count(per_image: list[list[float]], t: float) -> np.ndarray:
    """Detections scoring >= ``t`` per image."""
    return np.array([sum(s >= t for s in image) for image in per_image])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--photos", type=int, default=1000, help="wild_dev photos sampled (seeded; 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures here")
    args = parser.parse_args(argv)

    from ferwild.data.images import load_image
    from ferwild.detectors import FAST_DETECTORS, create_detector

    labels = pd.read_csv(args.data / "wild_dev" / "labels.csv")
    if args.photos and args.photos < len(labels):
        labels = labels.sample(n=args.photos, random_state=args.seed)
    wild = [load_image(args.data / "wild_dev" / p).array for p in labels["path"]]
    photos = args.data / "face_photos"
    sources = {
        "no_face_video": video_frames(args.data / "face_videos" / NO_FACE_VIDEO),
        "no_face_photo": [load_image(photos / NO_FACE_PHOTO).array],
        "multi_face": [load_image(photos / GROUP_PHOTO).array],
        "wild_dev": wild,
        **{name: video_frames(args.data / "face_videos" / name) for name in FACE_VIDEOS},
    }
    sizes = {name: len(images) for name, images in sources.items()}
    print("images: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), file=sys.stderr)

    out: dict = {"floor": THRESHOLDS[0], "thresholds": THRESHOLDS, "images": sizes,
                 "wild_dev_sample": {"photos": len(labels), "seed": args.seed}, "detectors": {}}
    for name in FAST_DETECTORS:
        detector = create_detector(name, min_confidence=THRESHOLDS[0])
        start = time.perf_counter()
        found = {source: scores(detector, images) for source, images in sources.items()}
        seconds = time.perf_counter() - start
        rows = []
        for t in THRESHOLDS:
            no_face = count(found["no_face_video"], t)
            wild_n = count(found["wild_dev"], t)
            row = {
                "threshold": t,
                "no_face_video_false_faces_per_frame": round(float(no_face.mean()), 4),
                "no_face_video_frames_with_a_face": round(float((no_face > 0).mean()), 4),
                "no_face_photo_false_faces": int(count(found["no_face_photo"], t)[0]),
                "multi_face_found_of_5": int(count(found["multi_face"], t)[0]),
                "wild_dev_share_with_a_face": round(float((wild_n > 0).mean()), 4),
                **{f"{video}_share_with_a_face": round(float((count(found[video], t) > 0).mean()), 4)
                   for video in FACE_VIDEOS},
            }
            rows.append(row)
        # the lowest threshold without a false face on the no-face video and photo
        clean = next((r["threshold"] for r in rows if r["no_face_video_false_faces_per_frame"] == 0
                      and r["no_face_photo_false_faces"] == 0), None)
        top = max((s for image in found["no_face_video"] for s in image), default=None)
        out["detectors"][name] = {
            "rows": rows, "lowest_threshold_without_false_faces": clean,
            "no_face_video_top_score": None if top is None else round(top, 4),
            "no_face_video_scores": sorted(round(s, 4) for image in found["no_face_video"] for s in image),
            "multi_face_scores": sorted((round(s, 4) for s in found["multi_face"][0]), reverse=True),
            "seconds": round(seconds, 1),
        }
        print(f"\n{name} (detection {seconds:.1f} s; no-face video's best score {top}; lowest threshold "
              f"without false faces: {clean})")
        head = ["thr", "false/frame", "frames w/ false", "mountain", "multi_face/5", "wild_dev",
                "single_face", "WolfgangLanger", "face_noface"]
        print("  ".join(f"{h:>14s}" for h in head))
        for r in rows:
            cells = [f"{r['threshold']:.3f}", f"{r['no_face_video_false_faces_per_frame']:.3f}",
                     f"{r['no_face_video_frames_with_a_face']:.1%}", str(r["no_face_photo_false_faces"]),
                     str(r["multi_face_found_of_5"]), f"{r['wild_dev_share_with_a_face']:.1%}",
                     *(f"{r[f'{v}_share_with_a_face']:.1%}" for v in FACE_VIDEOS)]
            print("  ".join(f"{c:>14s}" for c in cells))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
