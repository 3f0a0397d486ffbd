"""Benchmark: the recogniser on photos and video frames, batched vs one at a time, same run.

The baseline is what an inference script usually does: for each image (or decoded frame),
run MTCNN on it, align each face, and call the model, one image at a time. ``Recognizer``
batches MTCNN over same-size images (video frames are all the same size) and the classifier
over all faces of a batch. Both paths produce the same faces and probabilities (checked here).

Inputs (real faces, from ``../shared/data/face_photos``):
* photos: the 34 photos, repeated ``--repeat`` times (mixed sizes: MTCNN cannot batch them);
* video: ``--frames`` frames of 640x360 panning across ``multi_face.jpg`` (5 faces each).

Usage: python bench/bench_predict.py [--run RUN_DIR] [--repeat 2] [--frames 48] [--json]
Without ``--run`` a random-init cnn_small checkpoint is written (speed does not depend on the
weights). Prints images/s of each path and the ratio batched / one-at-a-time. With ``--json``
the last line is one JSON object: ``photos_one_img_per_s``, ``photos_batched_img_per_s``,
``ratio_batched_vs_one_photos``, ``photos_same_results``, ``video_one_frames_per_s``,
``video_batched_frames_per_s``, ``ratio_batched_vs_one_video``, ``video_faces_per_frame``,
``video_same_face_counts``, the counts beside them, ``model``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def random_run(root: Path) -> Path:
    """A run folder with a random-init cnn_small checkpoint at 48 px, as ``fit`` saves it."""
    from ferwild.data.faces import FaceAlignment
    from ferwild.models import create_model
    from ferwild.train import save_checkpoint

    labels = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    model = create_model("cnn_small", num_classes=len(labels), pretrained="none", image_size=48,
                         id2label=dict(enumerate(labels)))
    state = {"epoch": 0, "model_config": model.config(), "label_names": labels,
             "face_alignment": FaceAlignment(crop_size=48).to_dict()}
    save_checkpoint(root / "run", "epoch-000", model, state, pointers=("LAST", "BEST"))
    return root / "run"


def write_pan_video(photo: Path, path: Path, frames: int) -> None:
    import av
    from PIL import Image

    image = np.asarray(Image.open(photo).convert("RGB").resize((1000, 667)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for k in range(frames):
            x = int(k * (1000 - 640) / max(1, frames - 1))
            crop = np.ascontiguousarray(image[150:510, x:x + 640])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    from ferwild.data.images import load_image
    from ferwild.recognizer import Recognizer, find_inputs
    from ferwild.video_io import iter_video_frames

    shared = Path(os.environ.get("FERWILD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (shared / "face_photos").is_dir():
        sys.exit(f"needs the shared face photos at {shared}; set FERWILD_SHARED_DATA")
    work = Path(tempfile.mkdtemp(prefix="ferwild_bench_predict_"))
    run = args.run or random_run(work)
    rec = Recognizer.from_run(run, device="cpu")
    print(f"{os.cpu_count()} cores; model {rec.info()['model']}; torch threads default", flush=True)

    photos = find_inputs([shared / "face_photos"]) * args.repeat
    arrays = [load_image(p).array for p in photos]
    rec.analyze(arrays[:2])  # warm-up: MTCNN and model weights paged in
    one, t_one = timed(lambda: [rec.analyze([a])[0] for a in arrays])
    batched, t_batched = timed(lambda: rec.analyze(arrays))
    same = all(len(a.faces) == len(b.faces) and all(np.allclose(list(x.probabilities.values()),
               list(y.probabilities.values()), atol=1e-5) for x, y in zip(a.faces, b.faces))
               for a, b in zip(one, batched))
    faces = sum(len(r.faces) for r in batched)
    print(f"photos ({len(arrays)}, mixed sizes, {faces} faces): one at a time {len(arrays) / t_one:6.1f} img/s, "
          f"batched {len(arrays) / t_batched:6.1f} img/s -> {t_one / t_batched:.2f}x (same results: {same})",
          flush=True)

    video = work / "pan.mp4"
    write_pan_video(shared / "face_photos" / "pyfeat" / "multi_face.jpg", video, args.frames)
    frames = [rgb for _, _, rgb in iter_video_frames(video)]
    one_v, t_one_v = timed(lambda: [rec.analyze([f])[0] for f in frames])
    batched_v, t_batched_v = timed(lambda: list(rec.analyze_video(video, frames_per_batch=16)))
    faces_v = sum(len(r.faces) for r in batched_v)
    same_v = [len(r.faces) for r in one_v] == [len(r.faces) for r in batched_v]
    print(f"video ({len(frames)} frames 640x360, {faces_v} faces; batched includes decoding): one at a time "
          f"{len(frames) / t_one_v:6.1f} frames/s, batched {len(frames) / t_batched_v:6.1f} frames/s -> "
          f"{t_one_v / t_batched_v:.2f}x (same face counts: {same_v})", flush=True)
    if args.json:
        print(json.dumps({
            "model": rec.info()["model"], "photos_images": len(arrays), "photos_faces": faces,
            "photos_one_s": t_one, "photos_batched_s": t_batched, "photos_one_img_per_s": len(arrays) / t_one,
            "photos_batched_img_per_s": len(arrays) / t_batched, "ratio_batched_vs_one_photos": t_one / t_batched,
            "photos_same_results": bool(same), "video_frames": len(frames), "video_faces": faces_v,
            "video_faces_per_frame": faces_v / max(1, len(frames)), "video_one_s": t_one_v,
            "video_batched_s": t_batched_v, "video_one_frames_per_s": len(frames) / t_one_v,
            "video_batched_frames_per_s": len(frames) / t_batched_v,
            "ratio_batched_vs_one_video": t_one_v / t_batched_v, "video_same_face_counts": bool(same_v),
            "machine": f"{os.cpu_count()} cores, torch threads default",
            "command": "bench/bench_predict.py " + " ".join(argv if argv is not None else sys.argv[1:])}))


if __name__ == "__main__":
    main()
