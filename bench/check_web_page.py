"""Check: the web page of ``ferwild serve`` as a person sees it, with screenshots to look at.

Starts ``ferwild serve`` as a user would (its own process, a free 127.0.0.1 port; extra
arguments go to it, e.g. ``--detector fast``), and drives the system Chromium headless with
Playwright, its camera a fake one showing a photo (default: the five people of
face_photos/pyfeat/multi_face.jpg). At 1280x800 and at 390x844 (a phone) it:

1. opens the page (``start_*.png``);
2. uploads the photo: the faces' numbers in the list, left to right (``upload_*.png``);
3. starts Live for --seconds: the most faces found in one answer, the detector the page names,
   the figures line, and where the Stop button, the video and its figures lie against the
   window (``live_*.png``);
4. opens /docs and /redoc from the page's footer (``docs.png``, ``redoc.png``, laptop only).

Prints one line per step and, last, one JSON object. Exit status 1 when live mode finds fewer
faces than --expect-faces, or the video or its figures are out of the window, or a docs page
does not render.

Needs: ``pip install playwright`` and Debian's chromium (``apt-get install chromium``; or
``--chromium PATH``). Playwright's own browser download is not used.

Usage: python bench/check_web_page.py [--out /tmp/ferwild_web_check] [--photo PHOTO] [--seconds 6]
                                      [--expect-faces 5] [-- SERVE ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERWILD_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_PHOTO = SHARED / "face_photos" / "pyfeat" / "multi_face.jpg"
VIEWPORTS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def write_y4m(photo: Path, out: Path, *, width: int = 1280, frames: int = 2, fps: int = 30) -> Path:
    """A still photo as a Y4M clip (4:2:0): Chromium's fake camera file."""
    image = Image.open(photo).convert("RGB")
    height = round(image.height * width / image.width / 2) * 2
    y, cb, cr = image.resize((width, height), Image.LANCZOS).convert("YCbCr").split()
    half = (width // 2, height // 2)
    planes = b"".join(np.asarray(p).tobytes() for p in (y, cb.resize(half, Image.BILINEAR),
                                                         cr.resize(half, Image.BILINEAR)))
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + planes)
    return out


def start_server(args: list[str], timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"the server did not come up:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.3)


def inside(box: dict | None, viewport: dict) -> bool:
    return (box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 0.5
            and box["y"] + box["height"] <= viewport["height"] + 0.5)


def check_viewport(browser, base: str, name: str, viewport: dict, photo: Path, seconds: float, out: Path) -> dict:
    phone = viewport["width"] < 600
    ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone, device_scale_factor=1)
    page = ctx.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#live-detector:not(:empty)", timeout=30_000)
    page.screenshot(path=str(out / f"start_{name}.png"))
    report: dict = {"header": page.locator("#model-info").inner_text().split("\n")[0],
                    "live_detector_line": page.locator("#live-detector").inner_text()}

    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".card:not(.loading) .card-meta", timeout=120_000)
    card = page.locator(".card").first
    report["upload_rows"] = page.locator(".card .face-title").all_inner_texts()
    report["upload_labels"] = page.locator(".card .face-label").all_inner_texts()
    card.screenshot(path=str(out / f"upload_{name}.png"))
    print(f"{name}: upload: {len(report['upload_rows'])} faces, rows {report['upload_rows']}", flush=True)

    page.click("#live-toggle")
    counts: list[int] = []
    t0 = time.time()
    while time.time() - t0 < seconds:
        n = page.locator("#live-faces").get_attribute("data-faces")
        if n is not None:
            counts.append(int(n))
        time.sleep(0.1)
    page.screenshot(path=str(out / f"live_{name}.png"))
    boxes = {sel: page.locator(sel).bounding_box() for sel in ("#live-toggle", "#live-video", "#live-stats")}
    report.update({
        "live_faces_max": max(counts, default=0), "live_faces_last": counts[-1] if counts else 0,
        "live_faces_line": page.locator("#live-faces").inner_text(),
        "live_stats": page.locator("#live-stats").inner_text(),
        "live_totals": page.locator("#live-stats").get_attribute("title"),
        "live_in_window": {sel: inside(box, viewport) for sel, box in boxes.items()},
        "live_boxes": boxes,
    })
    print(f"{name}: live: at most {report['live_faces_max']} faces in one answer; "
          f"{report['live_detector_line']}; {report['live_stats']}; in the window: {report['live_in_window']}",
          flush=True)
    page.click("#live-toggle")

    if name == "laptop":
        page.click("#docs-link")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        report["docs_operations"] = [" ".join(t.split()[:2]) for t in page.locator(".opblock-summary").all_inner_texts()]
        page.screenshot(path=str(out / "docs.png"))
        page.goto(base + "/")
        page.click("#redoc-link")
        page.wait_for_selector("[role=menuitem] >> text=Predict", timeout=30_000)
        report["redoc_menu"] = page.locator("[role=menuitem]").all_inner_texts()
        page.screenshot(path=str(out / "redoc.png"))
        print(f"docs: {report['docs_operations']}; redoc menu: {report['redoc_menu']}", flush=True)
    ctx.close()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/ferwild_web_check"))
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    ap.add_argument("--seconds", type=float, default=6.0, help="How long Live runs at each size.")
    ap.add_argument("--expect-faces", type=int, default=5, help="Live must find this many faces in one answer.")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("serve_args", nargs="*", help="Arguments for `ferwild serve` (after --).")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    if not Path(args.chromium).is_file():
        sys.exit(f"no Chromium at {args.chromium}: apt-get install chromium, or give --chromium")
    if not args.photo.is_file():
        sys.exit(f"no photo at {args.photo}")
    args.out.mkdir(parents=True, exist_ok=True)
    clip = write_y4m(args.photo, args.out / "camera.y4m")
    proc, base = start_server(args.serve_args)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=[
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            reports = {name: check_viewport(browser, base, name, vp, args.photo, args.seconds, args.out)
                       for name, vp in VIEWPORTS.items()}
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = all(r["live_faces_max"] >= args.expect_faces and all(r["live_in_window"].values()) for r in reports.values())
    ok = ok and "POST /predict" in reports["laptop"].get("docs_operations", []) and reports["laptop"].get("redoc_menu")
    print(f"screenshots in {args.out}/; {'OK' if ok else 'FAILED'}")
    print(json.dumps({"ok": bool(ok), "serve_args": args.serve_args, **reports}, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
