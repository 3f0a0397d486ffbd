"""Benchmark: /predict through HTTP vs calling ``Recognizer.analyze`` directly, same run, same images.

Builds (once, kept under --work and reused by later runs) a tiny cnn_small run trained on
synthetic faces, and serves it with ``detector="none"`` (each synthetic image is one face crop,
so the figures are about the service, not about MTCNN). Then, for requests of 1 image and of
--batch images (PNG-encoded synthetic faces, --size px):

1. baseline: ``recognizer.analyze(arrays)`` on already-decoded arrays (what the model costs);
2. ``recognizer.analyze`` on the PNG bytes decoded with ``load_image_bytes`` (model + decoding);
3. ``POST /predict`` through FastAPI's ``TestClient`` (in-process ASGI, no sockets);
4. ``POST /predict`` to a real uvicorn on 127.0.0.1 (server in a thread of this process),
   one keep-alive ``httpx.Client``, requests one after another;
5. the same uvicorn with --concurrency clients at once (the model runs one batch at a time,
   so this shows queueing, not parallel inference).

Each figure: requests/s, p50 and p95 latency over --requests timed requests (after --warmup),
and the ratio of its p50 latency to the baseline's (the HTTP overhead factor). The five paths
take turns in chunks of --chunk requests, so background load that comes and goes during the
run (on 2 cores, torch's threads slow down many times over when another process is busy)
weighs on every path alike; the load average is printed at the start and the end.
The run is built in a child process, so training leaves nothing behind in the measuring one.

Usage: python bench/bench_serve.py [--requests 200] [--batch 8] [--work /tmp/ferwild_bench_serve] [--json]

With ``--json`` the last line is one JSON object: for ``one_image`` and ``batch`` (``--batch``
images per request), per path (``baseline``, ``decode_png``, ``testclient``, ``uvicorn``,
``uvicorn_concurrent``) its ``rps``, ``img_per_s``, ``p50_ms``, ``p95_ms``,
``ratio_p50_vs_baseline`` and ``overhead_p50_ms`` (its p50 minus the baseline's); also
``image_side_px``, ``batch_images``, ``requests``, ``concurrency``, ``load_average_start``,
``load_average_end``, ``model``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferwild.data.images import load_image_bytes


def build(root: Path) -> tuple[Path, list[Path]]:
    """A tiny trained run and its synthetic source images (built in a child process, reused)."""
    import multiprocessing

    if not (root / ".built").exists():
        child = multiprocessing.get_context("spawn").Process(target=_build, args=(root,))
        child.start()
        child.join()
        if child.exitcode != 0:
            sys.exit(f"building the run under {root} failed (exit code {child.exitcode})")
    else:
        print(f"  run reused ({root})", flush=True)
    return root / "run", sorted((root / "raw" / "images").rglob("*.png"))


def _build(root: Path) -> None:
    from ferwild.config import RunConfig
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.data.synth import synth_dataset
    from ferwild.train import fit

    run, raw = root / "run", root / "raw"
    marker = root / ".built"
    if not marker.exists():
        t0 = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        synth_dataset("reference", 240, raw, seed=0, size=96, label_set="basic6")
        prepare(raw / "manifest.csv", root / "prep", PrepareConfig(size=48, workers=1))
        cfg = RunConfig.load(None, [f"data.path={root / 'prep'}", "model.name=cnn_small", "model.pretrained=none",
                                    "model.image_size=48", "train.batch_size=32", "train.epochs=2"])
        fit(cfg, run, log=lambda m: None)
        marker.write_text(json.dumps({"seconds": time.perf_counter() - t0}))
        print(f"  built run under {root} in {time.perf_counter() - t0:.1f}s", flush=True)


def interleaved(paths: list[tuple[str, object, int]], requests: int, warmup: int, chunk: int) -> dict:
    """Time each path's ``fn(i)`` ``requests`` times, the paths taking turns in chunks of ``chunk``
    requests, so that a change of background load during the run hits every path alike.

    ``paths``: ``(name, fn, concurrency)``; a path with concurrency > 1 runs each chunk on that
    many client threads. Returns ``name -> {rps, p50, p95}`` (ms; rps over that path's own time).
    """
    pools = {name: ThreadPoolExecutor(conc) for name, _, conc in paths if conc > 1}
    lat: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    wall = dict.fromkeys(lat, 0.0)
    try:
        for _, fn, _ in paths:
            for i in range(warmup):
                fn(i)
        done = 0
        while done < requests:
            n = min(chunk, requests - done)
            for name, fn, conc in paths:
                def one(i: int, fn=fn, name=name) -> None:
                    t = time.perf_counter()
                    fn(i)
                    lat[name].append(time.perf_counter() - t)

                t0 = time.perf_counter()
                if conc > 1:
                    list(pools[name].map(one, range(done, done + n)))
                else:
                    for i in range(done, done + n):
                        one(i)
                wall[name] += time.perf_counter() - t0
            done += n
    finally:
        for pool in pools.values():
            pool.shutdown()
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {"rps": len(values) / wall[name], "p50": statistics.median(values) * 1000,
                     "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))] * 1000}
    return out


class ThreadedUvicorn:
    """uvicorn serving ``app`` on a free localhost port, in a daemon thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


PATHS = ("baseline", "decode_png", "testclient", "uvicorn", "uvicorn_concurrent")  # JSON keys, in measure()'s order


def measure(rec, app, images: list, pngs: list[bytes], n: int, args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Every path with ``n`` images per request; the baseline first."""
    import httpx
    from fastapi.testclient import TestClient

    def pick(i: int) -> list[int]:
        return [(i * n + k) % len(images) for k in range(n)]

    def direct(i: int) -> None:
        res = rec.analyze([images[j] for j in pick(i)], sources=["x"] * n)
        assert len(res) == n and all(len(r.faces) == 1 for r in res)

    def direct_bytes(i: int) -> None:
        arrays = [load_image_bytes(pngs[j]).array for j in pick(i)]
        res = rec.analyze(arrays, sources=["x"] * n)
        assert all(len(r.faces) == 1 for r in res)

    def files(i: int) -> list:
        return [("files", (f"{j}.png", pngs[j], "image/png")) for j in pick(i)]

    with TestClient(app) as tc, ThreadedUvicorn(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        local, opened = threading.local(), []

        def via_testclient(i: int) -> None:
            r = tc.post("/predict", files=files(i))
            assert r.status_code == 200 and len(r.json()["results"]) == n

        def via_uvicorn(i: int) -> None:
            r = client.post("/predict", files=files(i))
            assert r.status_code == 200 and len(r.json()["results"]) == n

        def via_uvicorn_conc(i: int) -> None:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=url, timeout=60)
                opened.append(local.client)
            r = local.client.post("/predict", files=files(i))
            assert r.status_code == 200 and len(r.json()["results"]) == n

        names = ["analyze(arrays)  [baseline]", "decode PNG + analyze", "TestClient /predict",
                 "uvicorn /predict, 1 client", f"uvicorn /predict, {args.concurrency} clients"]
        got = interleaved([(names[0], direct, 1), (names[1], direct_bytes, 1), (names[2], via_testclient, 1),
                           (names[3], via_uvicorn, 1), (names[4], via_uvicorn_conc, args.concurrency)],
                          args.requests, args.warmup, args.chunk)
        for c in opened:
            c.close()
    return [(name, got[name]) for name in names]


def figures(rows: list[tuple[str, dict]], n: int) -> dict:
    """One request size's rows (``measure``'s) as the JSON figures of each path."""
    base = rows[0][1]
    return {key: {"rps": r["rps"], "img_per_s": r["rps"] * n, "p50_ms": r["p50"], "p95_ms": r["p95"],
                  "ratio_p50_vs_baseline": r["p50"] / base["p50"], "overhead_p50_ms": r["p50"] - base["p50"]}
            for key, (_, r) in zip(PATHS, rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per figure")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests before each figure")
    parser.add_argument("--batch", type=int, default=8, help="images per request in the batched figures")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel clients in figure 5")
    parser.add_argument("--chunk", type=int, default=20, help="requests per turn as the paths take turns")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferwild_bench_serve"),
                        help="the tiny run is built under WORK and reused by later runs")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from ferwild.recognizer import Recognizer
    from ferwild.serve import create_app

    load_start = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()} | torch threads: {torch.get_num_threads()} | "
          f"{args.requests} requests per figure | load average {load_start:.2f}", flush=True)
    run, sources = build(args.work)
    rec = Recognizer.from_run(run, detector="none", device="cpu")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sources[:64]]
    pngs = []
    for arr in images:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    side = images[0].shape[0]
    print(f"  images: {len(images)} synthetic faces, {side} x {side} px, PNG "
          f"{np.mean([len(b) for b in pngs]) / 1024:.1f} KB on average; model {rec.info()['model']}, "
          "detector none", flush=True)
    app = create_app(rec, max_files=max(16, args.batch))

    summary: list[tuple[str, dict, dict]] = []
    out: dict = {}
    for stage, n in (("one_image", 1), ("batch", args.batch)):
        print(f"\n{n} image{'s' if n > 1 else ''} per request", flush=True)
        rows = measure(rec, app, images, pngs, n, args)
        base = rows[0][1]
        out[stage] = figures(rows, n)

        print(f"  {'path':<32}{'req/s':>9}{'img/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p50 / baseline':>16}")
        for name, r in rows:
            print(f"  {name:<32}{r['rps']:9.1f}{r['rps'] * n:9.1f}{r['p50']:9.2f}{r['p95']:9.2f}"
                  f"{r['p50'] / base['p50']:15.2f}x", flush=True)
        summary += [(f"{name} ({n}/req)", r, base) for name, r in rows[1:]]

    load = os.getloadavg()[0]
    busy = load > 0.5 * (os.cpu_count() or 1)
    print(f"\nload average at the end {load:.2f}" + ("  (WARNING: other processes compete for the cores; torch's "
          "threads slow down a lot under contention; the paths take turns, so the ratios stay comparable)"
          if busy else ""))
    print(f"\nsummary ({os.cpu_count()} cores): p50 latency vs analyze(arrays) with the same images per request")
    print(f"  {'figure':<44}{'p50 ms':>9}{'baseline':>10}{'ratio':>9}{'req/s':>9}")
    for name, r, base in summary:
        print(f"  {name:<44}{r['p50']:9.2f}{base['p50']:10.2f}{r['p50'] / base['p50']:8.2f}x{r['rps']:9.1f}")
    if args.json:
        out.update(image_side_px=int(side), batch_images=args.batch, requests=args.requests,
                   concurrency=args.concurrency, load_average_start=load_start, load_average_end=load,
                   model=rec.info()["model"],
                   machine=f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
                   command="bench/bench_serve.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
