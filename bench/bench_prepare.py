"""Benchmark: ``prepare``'s image throughput against a naive single-process loop, same run.

The naive loop is what a study script does: for each image, open it, run MTCNN, crop the
box, resize - one image at a time in one process (torch using all its default threads).
ferwild's ``prepare`` runs worker processes (one torch thread each), batches MTCNN over
equal-size images, and treats small pre-aligned crops (FER2013) as such.

Usage: python bench/bench_prepare.py [--fer-images 3000] [--photo-copies 5] [--shared ../shared/data] [--json]
Prints img/s of each and the ratio (ferwild / naive). Goal: >= 1.8x on 2 cores. With ``--json``
the last line is one JSON object: per case (``face_photos_auto``, ``fer2013_mtcnn``,
``fer2013_auto``) ``naive_img_per_s``, ``ferwild_img_per_s``, ``ratio_ferwild_vs_naive`` and
the counts beside them, plus ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]


def naive_loop(paths: list[str], size: int = 224) -> int:
    """open -> MTCNN detect -> crop -> resize, one image at a time; returns faces found."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=False, device="cpu")
    found = 0
    for path in paths:
        try:
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            boxes, _ = mtcnn.detect(img)
        except Exception:  # noqa: BLE001 - the naive loop skips what breaks, like a study script
            continue
        if boxes is not None:
            found += 1
            img.crop(tuple(boxes[0])).resize((size, size))
    return found


def ferwild_prepare(paths: list[str], align: str, workdir: Path, size: int = 224) -> tuple[float, dict]:
    from ferwild.data.prepare import PrepareConfig, prepare

    manifest = workdir / f"m-{align}-{len(paths)}.csv"
    pd.DataFrame({"path": paths, "label": ["happy"] * len(paths)}).to_csv(manifest, index=False)
    out = workdir / f"out-{align}-{len(paths)}"
    t0 = time.perf_counter()
    result = prepare(manifest, out, PrepareConfig(align=align, balance="none", size=size,
                                                  near_dup_threshold=0))
    return time.perf_counter() - t0, result.summary


def run_case(name: str, paths: list[str], align: str, workdir: Path) -> dict:
    """Time the naive loop and ``prepare`` on ``paths``; print one line and return its figures."""
    t0 = time.perf_counter()
    found = naive_loop(paths)
    naive_s = time.perf_counter() - t0
    ours_s, summary = ferwild_prepare(paths, align, workdir)
    n = len(paths)
    workers = summary['config']['workers'] or os.cpu_count()
    print(f"{name}: {n} images | naive {n / naive_s:7.1f} img/s ({found} faces) | "
          f"ferwild --align {align} (resolved {summary['align_mode']}, {workers} "
          f"workers) {n / ours_s:7.1f} img/s ({summary['status_counts']['aligned']} aligned) | "
          f"ratio {naive_s / ours_s:5.2f}x", flush=True)
    return {"images": n, "naive_s": naive_s, "naive_img_per_s": n / naive_s, "naive_faces": int(found),
            "align": align, "align_resolved": summary["align_mode"], "workers": int(workers),
            "ferwild_s": ours_s, "ferwild_img_per_s": n / ours_s,
            "ferwild_aligned": int(summary["status_counts"].get("aligned", 0)),
            "ratio_ferwild_vs_naive": naive_s / ours_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get(
        "FERWILD_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--fer-images", type=int, default=3000)
    parser.add_argument("--photo-copies", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if not args.shared.is_dir():
        sys.exit(f"no benchmark data at {args.shared} (set FERWILD_SHARED_DATA)")
    print(f"cores: {os.cpu_count()}")
    parser_photos = sorted(p for p in (args.shared / "face_photos").rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    fer_all = sorted(str(p) for p in (args.shared / "fer2013" / "train").rglob("*.jpg"))
    fer = sorted(rng.choice(fer_all, size=min(args.fer_images, len(fer_all)), replace=False).tolist())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # 34 photos take ~4 s; a few copies under new names let per-image costs, not the
        # ~2 s import of torch + facenet-pytorch that both sides pay, decide the ratio.
        photos = []
        for copy in range(args.photo_copies):
            (work / f"photos{copy}").mkdir()
            for p in parser_photos:
                target = work / f"photos{copy}" / f"{p.parent.name}-{p.name}"
                shutil.copyfile(p, target)  # a copy, not a link: prepare rejects repeated files
                photos.append(str(target))
        summary = {"face_photos_auto": run_case(f"face_photos x{args.photo_copies}", photos, "auto", work),
                   "fer2013_mtcnn": run_case("fer2013", fer, "mtcnn", work),
                   "fer2013_auto": run_case("fer2013", fer, "auto", work)}
    if args.json:
        print(json.dumps({**summary, "photo_copies": args.photo_copies, "fer_images": len(fer),
                          "machine": f"{os.cpu_count()} cores",
                          "command": "bench/bench_prepare.py " + " ".join(argv if argv is not None else sys.argv[1:])}))


if __name__ == "__main__":
    main()
