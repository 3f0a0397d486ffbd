"""Benchmark: the web page's live mode (WebSocket /ws/live) against POST /predict, frame by frame.

Starts ``ferwild serve`` (the shipped default model, uvicorn on a free 127.0.0.1 port, in its own
process, as a user would) and sends it the frames of a real video (640x360) re-encoded as JPEG
at quality 0.7 -- what the page sends -- one at a time, each after the answer to the one before
(the page's rule: one frame in flight):

1. live: over one WebSocket to ``/ws/live`` (fast detector, tracking and smoothing included);
2. baseline: the same JPEGs through ``POST /predict``, one per request, on one keep-alive
   connection.

With ``--detector fast`` (the default) the server's /predict uses the same detector as the live
endpoint, so the ratio is about the transport and the per-frame work around the model (tracking,
smoothing); ``--detector mtcnn`` compares with what the photo page uses. The two paths take turns in
chunks of ``--chunk`` frames, so background load that comes and goes weighs on both alike.

Prints round-trip frames/s, round-trip p50/p95, the server's own milliseconds per frame
(``server_ms`` / ``elapsed_ms`` of the answers) and the live / baseline ratio of frames/s; the goal
is >= 20 round-trip frames/s live. ``--json`` makes the last line one JSON object
(``ws_fps_640x360``, ``post_fps_640x360``, ``ratio``, ...).

Usage: python bench/bench_live_web.py [--frames 200] [--video ../shared/data/face_videos/WolfgangLanger_Pexels.mp4]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "face_videos" / "WolfgangLanger_Pexels.mp4"
GOAL_FPS = 20.0


def read_frames(path: Path, count: int, quality: int) -> tuple[list[bytes], tuple[int, int]]:
    """The first ``count`` frames of the video, each encoded as a JPEG; and the frame size."""
    import av

    jpegs: list[bytes] = []
    size = (0, 0)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_image()
            size = image.size
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=quality)
            jpegs.append(buf.getvalue())
            if len(jpegs) == count:
                break
    if not jpegs:
        sys.exit(f"{path}: no frames decoded")
    return jpegs, size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, detector: str) -> subprocess.Popen:
    """``ferwild serve`` with the default model in a child process; returns once /health answers."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", "serve", "--port", str(port), "--detector", detector],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json() == {"status": "ok"}:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
            sys.exit(f"the server did not come up:\n{out}")
        time.sleep(0.2)


def summarise(latencies: list[float], wall: float, server_ms: list[float], faces: list[int]) -> dict:
    """frames/s over the path's own wall time, round-trip p50/p95 (ms), median server ms, faces/frame."""
    ordered = sorted(latencies)
    return {"fps": len(latencies) / wall, "p50_ms": statistics.median(ordered) * 1000,
            "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
            "server_ms": statistics.median(server_ms), "faces_per_frame": sum(faces) / len(faces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="a video with a face in it")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per path")
    parser.add_argument("--warmup", type=int, default=10, help="untimed frames per path first")
    parser.add_argument("--chunk", type=int, default=25, help="frames per turn as the two paths take turns")
    parser.add_argument("--quality", type=int, default=70, help="JPEG quality (the page sends 0.7)")
    parser.add_argument("--detector", default="fast", help="the server's detector for POST /predict (live: fast)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    if not args.video.is_file():
        sys.exit(f"{args.video}: no such video (give --video)")

    import httpx
    from websockets.sync.client import connect

    jpegs, (width, height) = read_frames(args.video, args.frames + args.warmup, args.quality)
    print(f"cores: {os.cpu_count()} | {len(jpegs)} frames of {args.video.name}, {width}x{height}, JPEG q{args.quality} "
          f"{statistics.mean(len(j) for j in jpegs) / 1024:.1f} KB on average | load average {os.getloadavg()[0]:.2f}",
          flush=True)
    port = free_port()
    t0 = time.perf_counter()
    server = start_server(port, args.detector)
    print(f"ferwild serve (default model, --detector {args.detector}) up on port {port} in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)

    stats: dict[str, dict[str, list]] = {p: {"lat": [], "server": [], "faces": [], "wall": [0.0]}
                                         for p in ("ws", "post")}
    try:
        with connect(f"ws://127.0.0.1:{port}/ws/live", max_size=None) as ws, \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            def via_ws(data: bytes) -> tuple[float, int]:
                ws.send(data)
                answer = json.loads(ws.recv())
                if answer["error"]:
                    raise RuntimeError(f"live frame failed: {answer['error']}")
                return answer["server_ms"], len(answer["faces"])

            def via_post(data: bytes) -> tuple[float, int]:
                r = http.post("/predict", files={"files": ("frame.jpg", data, "image/jpeg")})
                r.raise_for_status()
                body = r.json()
                [result] = body["results"]
                if result["error"]:
                    raise RuntimeError(f"/predict failed: {result['error']}")
                return body["elapsed_ms"], len(result["faces"])

            paths = {"ws": via_ws, "post": via_post}
            for fn in paths.values():  # warm up: the live model is built on the first live frame
                for data in jpegs[: args.warmup]:
                    fn(data)
            timed = jpegs[args.warmup:]
            for start in range(0, len(timed), args.chunk):
                for name, fn in paths.items():
                    s = stats[name]
                    t_chunk = time.perf_counter()
                    for data in timed[start:start + args.chunk]:
                        t = time.perf_counter()
                        server_ms, faces = fn(data)
                        s["lat"].append(time.perf_counter() - t)
                        s["server"].append(server_ms)
                        s["faces"].append(faces)
                    s["wall"][0] += time.perf_counter() - t_chunk
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    got = {name: summarise(s["lat"], s["wall"][0], s["server"], s["faces"]) for name, s in stats.items()}
    ws, post = got["ws"], got["post"]
    ratio = ws["fps"] / post["fps"]
    print(f"\n{len(stats['ws']['lat'])} frames per path, one in flight, {width}x{height}")
    print(f"  {'path':<34}{'frames/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'server ms':>11}{'faces/frame':>13}")
    for label, r in (("WebSocket /ws/live (fast)", ws), (f"POST /predict ({args.detector}) [baseline]", post)):
        print(f"  {label:<34}{r['fps']:10.1f}{r['p50_ms']:9.1f}{r['p95_ms']:9.1f}{r['server_ms']:11.1f}"
              f"{r['faces_per_frame']:13.2f}")
    print(f"  live / baseline frames/s: {ratio:.2f}x; goal >= {GOAL_FPS:.0f} frames/s live: "
          f"{'met' if ws['fps'] >= GOAL_FPS else 'NOT met'} ({ws['fps']:.1f})")
    print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        print(json.dumps({"ws_fps_640x360": round(ws["fps"], 2), "post_fps_640x360": round(post["fps"], 2),
                          "ratio": round(ratio, 3), "ws_p50_ms": round(ws["p50_ms"], 2),
                          "post_p50_ms": round(post["p50_ms"], 2), "ws_server_ms": round(ws["server_ms"], 2),
                          "post_server_ms": round(post["server_ms"], 2), "frames": len(stats["ws"]["lat"]),
                          "frame_size": [width, height], "detector_post": args.detector,
                          "goal_fps": GOAL_FPS, "goal_met": ws["fps"] >= GOAL_FPS}))


if __name__ == "__main__":
    main()
