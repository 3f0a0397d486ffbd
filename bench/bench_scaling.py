"""Benchmark: ``prepare`` and ``predict`` in local processes vs as Ray tasks/actors, same run.

On one machine Ray cannot beat local processes (same cores, plus its scheduler); what this
measures is what a cluster costs per task and per job, and the per-core throughput that a
cluster multiplies:

1. prepare (decode + MTCNN + align + cache) of real photos, ``--copies`` x the face photos in
   ``../shared/data/face_photos`` as a folder of image files: local with 1 and 2 worker
   processes, then Ray (``--ray-address local``) capped at 1 and 2 CPUs;
2. predict (detect + classify with the shipped model) of the same photos: one local process,
   then Ray with 1 and 2 actors;
3. the overhead per task: 200 empty jobs through a process pool and through Ray;
4. a cost model: photos/s per core measured here -> time for 1M photos on N cores.

Usage: python bench/bench_scaling.py [--copies 10] [--shared ../shared/data] [--json]
Prints each throughput and its ratio to the local run with the same number of cores (Ray is
started before its runs are timed; its start and stop are reported apart). With ``--json`` the
last line is one JSON object: ``prepare_{local,ray}_photos_per_s_{1,2}core``,
``ratio_ray_vs_local_prepare_{1,2}core``, ``predict_local_photos_per_s``,
``predict_ray_photos_per_s_{1,2}actor``, ``ratio_ray_vs_local_predict_{1,2}actor``, the overhead
per task (``pool_ms_per_task``, ``ray_ms_per_task``, ``ray_start_stop_s``, and
``ray_overhead_share_of_chunk``: Ray's per-task cost over the one-core prepare time of a chunk),
``cost_model.{prepare,predict}`` (``photos_per_s_per_core``, ``hours_1m_photos_{1,16,64,256}cores``
and the same in ``minutes_...`` and ``seconds_...``), ``command`` and ``machine``.
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

REPO = Path(__file__).resolve().parents[1]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
CHUNK = 8  # photos per prepare task
COST_CORES = (1, 16, 64, 256)


def photo_folder(shared: Path, copies: int, root: Path) -> list[Path]:
    """``copies`` copies of every face photo under one folder (a class subfolder each, as prepare reads)."""
    photos = sorted(p for p in (shared / "face_photos").rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        sys.exit(f"no photos under {shared / 'face_photos'}")
    out = []
    for k in range(copies):
        for i, p in enumerate(photos):
            target = root / "happy" / f"c{k:02d}-{i:03d}{p.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, target)
            out.append(target)
    return out


def time_prepare(folder: Path, out: Path, workers: int, ray_address: str | None) -> float:
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.parallel import ray_session

    config = PrepareConfig(align="mtcnn", balance="none", size=112, near_dup_threshold=0, workers=workers,
                           chunk_size=CHUNK, split="ratios")
    if ray_address is None:
        t0 = time.perf_counter()
        prepare(folder, out, config)
        return time.perf_counter() - t0
    with ray_session(ray_address, num_cpus=workers):  # started first: its start is counted apart
        t0 = time.perf_counter()
        prepare(folder, out, config, ray_address=ray_address)
        return time.perf_counter() - t0


def time_predict(files: list[Path], out: Path, ray_cpus: int | None) -> float:
    from ferwild.predict import PredictConfig, predict_files
    from ferwild.recognizer import Recognizer

    recognizer = Recognizer.default()
    config = PredictConfig(batch_images=8)
    t0 = time.perf_counter()
    if ray_cpus is None:
        predict_files(recognizer, files, out, config)
    else:
        from ferwild.parallel import ray_session

        with ray_session("local", num_cpus=ray_cpus):
            t0 = time.perf_counter()  # the Ray start is counted apart, below
            predict_files(recognizer, files, out, config, ray_address="local")
    return time.perf_counter() - t0


def _nothing(job: dict) -> int:
    return job["i"]


def overhead_per_task(n: int = 200) -> tuple[float, float, float]:
    """Seconds per empty job through a 2-process pool and through Ray, and Ray's start + stop."""
    from ferwild.parallel import ray_session, run_jobs

    jobs = [{"i": i} for i in range(n)]
    t0 = time.perf_counter()
    run_jobs(_nothing, jobs, 2, None)
    pool = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    with ray_session("local", num_cpus=2):
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        run_jobs(_nothing, jobs, 2, None, ray_address="local")
        ray = (time.perf_counter() - t1) / n
        t2 = time.perf_counter()
    start_stop = started + (time.perf_counter() - t2)
    return pool, ray, start_stop


def cost_model(per_core: dict[str, float]) -> dict[str, dict[str, float]]:
    """Time for 1M photos on ``COST_CORES`` cores at each job's one-core rate (hours, minutes, seconds)."""
    out = {}
    for job, rate in per_core.items():
        seconds = {c: 1e6 / (rate * c) for c in COST_CORES}
        out[job] = {"photos_per_s_per_core": rate,
                    **{f"{unit}_1m_photos_{c}cores": s / per for unit, per in (("hours", 3600), ("minutes", 60))
                       for c, s in seconds.items()},
                    **{f"seconds_1m_photos_{c}cores": s for c, s in seconds.items()}}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get(
        "FERWILD_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if not args.shared.is_dir():
        sys.exit(f"no benchmark data at {args.shared} (set FERWILD_SHARED_DATA)")
    from ferwild.system import available_cpus

    cores = available_cpus()
    print(f"cores available: {cores}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        files = photo_folder(args.shared, args.copies, work / "photos")
        n = len(files)
        print(f"{n} photos ({args.copies} copies of the face photos)", flush=True)
        out: dict = {"photos": n, "copies": args.copies, "cores_available": cores}

        pool_s, ray_s, start_stop = overhead_per_task()
        out.update(pool_ms_per_task=pool_s * 1e3, ray_ms_per_task=ray_s * 1e3,
                   ratio_ray_vs_pool_per_task=ray_s / pool_s, ray_start_stop_s=start_stop)
        print(f"overhead per task: process pool {pool_s * 1e3:.2f} ms, Ray {ray_s * 1e3:.2f} ms "
              f"(ratio {ray_s / pool_s:.2f}x); Ray start + stop {start_stop:.1f} s", flush=True)

        per_core = {}
        for workers in (1, 2):
            local = time_prepare(work / "photos", work / f"prep-local-{workers}", workers, None)
            ray = time_prepare(work / "photos", work / f"prep-ray-{workers}", workers, "local")
            per_core.setdefault("prepare", n / local / workers)
            out.update({f"prepare_local_photos_per_s_{workers}core": n / local,
                        f"prepare_ray_photos_per_s_{workers}core": n / ray,
                        f"ratio_ray_vs_local_prepare_{workers}core": local / ray,
                        f"prepare_local_per_core_photos_per_s_{workers}core": n / local / workers})
            print(f"prepare, {workers} core(s): local {n / local:6.1f} photos/s | Ray {n / ray:6.1f} photos/s "
                  f"| ratio Ray/local {local / ray:.2f}x | local per core {n / local / workers:.1f}", flush=True)

        local = time_predict(files, work / "pred-local", None)
        per_core["predict"] = n / local / cores
        out["predict_local_photos_per_s"] = n / local
        print(f"predict, local (1 process, {cores} threads): {n / local:6.1f} photos/s", flush=True)
        for actors in (1, 2):
            ray = time_predict(files, work / f"pred-ray-{actors}", actors)
            out[f"predict_ray_photos_per_s_{actors}actor"] = n / ray
            out[f"ratio_ray_vs_local_predict_{actors}actor"] = local / ray
            print(f"predict, Ray {actors} actor(s): {n / ray:6.1f} photos/s | ratio Ray/local {local / ray:.2f}x",
                  flush=True)

        print("\ncost model: 1M photos at the one-core rate measured here (an upper bound: per-core rates fall "
              "as cores share memory and caches; Ray's overhead per task and its start are small beside them)")
        for job, rate in per_core.items():
            hours = [1e6 / (rate * c) / 3600 for c in COST_CORES]
            print(f"  {job:8s} {rate:5.1f} photos/s/core -> 1 core {hours[0]:6.1f} h | 16 cores {hours[1]:5.2f} h | "
                  f"64 cores {hours[2] * 60:5.1f} min | 256 cores {hours[3] * 60:5.1f} min")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        chunk_s = CHUNK / per_core["prepare"]  # one chunk of prepare at the one-core rate
        out.update(ratio_prepare_local_2core_vs_1core=out["prepare_local_photos_per_s_2core"]
                   / out["prepare_local_photos_per_s_1core"],
                   chunk_photos=CHUNK, chunk_s_prepare_1core=chunk_s, ray_overhead_share_of_chunk=ray_s / chunk_s,
                   cost_model=cost_model(per_core), machine=f"{cores} cores available",
                   command="bench/bench_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
