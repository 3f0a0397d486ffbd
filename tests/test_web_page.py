"""The web page of ``ferwild serve`` in a real browser: headless Chromium driven by Playwright.

What a person sees, checked in the page's DOM (and in what the page draws on its canvases):

* ``/docs`` (Swagger UI) shows the operations and ``/redoc`` (ReDoc) loads, with no network;
  the page's footer links to both;
* an uploaded group photo's faces are numbered left to right, and the number on each box's tag
  (and its colour) is that of its row in the list;
* Live mode with a fake camera showing the same photo finds all five people, with the detector
  that stands for the server's (MTCNN's live stand-in, fast-tiled; no longer the untiled fast
  one, which finds 2 or 3 of them), which the page names;
* the Live heading (its Stop button), the video and its figures fit in the window, on a laptop
  (1280x800), on a phone (390x844) and on a small laptop (1024x600).

Skipped, with the reason, where Playwright (``pip install playwright``) or a Chromium
(``apt-get install chromium``; or ``$FERWILD_CHROMIUM``) is missing; the photo tests also need
../shared/data. Playwright's own browser download is not used: it drives the system Chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data_dir
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def _chromium() -> str | None:
    for candidate in (os.environ.get("FERWILD_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium, or set "
                                "FERWILD_CHROMIUM): the page is not tried in a browser")

PHOTO = shared_data_dir() / "face_photos" / "pyfeat" / "multi_face.jpg"  # five people in a row
needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason=f"{PHOTO} is not present (set FERWILD_SHARED_DATA)")

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHORT = {"width": 1024, "height": 600}   # a small laptop: the video must shrink to fit

# Records what the page draws on its canvases (tags, boxes): the canvas is pixels, not DOM. An
# init script runs before the page's own and is not subject to its CSP.
_RECORD_DRAWING = """
window.__drawn = [];
const proto = CanvasRenderingContext2D.prototype;
for (const op of ["fillText", "fillRect", "strokeRect"]) {
  const original = proto[op];
  proto[op] = function (...args) {
    window.__drawn.push({ on: this.canvas.id || this.canvas.className, op, args: args.map((a) => (typeof a ===
      "number" ? a : String(a))), style: String(op === "strokeRect" ? this.strokeStyle : this.fillStyle) });
    return original.apply(this, args);
  };
}
"""


def write_y4m(photo: Path, out: Path, *, width: int = 1280, frames: int = 2, fps: int = 30) -> Path:
    """A still photo as a Y4M clip (4:2:0), the format of Chromium's fake camera file (no ffmpeg needed)."""
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


@pytest.fixture(scope="module")
def server():
    """``ferwild serve``'s app on a free localhost port, as ``ferwild serve`` builds it by default:
    the shipped model behind MTCNN for /predict, and a live recogniser built behind the fast
    detector (the live model's way), which live mode must put behind fast-tiled."""
    import uvicorn

    from ferwild.recognizer import Recognizer
    from ferwild.serve import create_app

    recognizer = Recognizer.default(detector="mtcnn", device="cpu")
    app = create_app(recognizer, live_recognizer=recognizer.with_detector("fast"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=1 << 24))
    thread = threading.Thread(target=srv.run, name="web-page-server", daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium whose (fake) camera shows the group photo, over and over."""
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
    if PHOTO.is_file():
        clip = write_y4m(PHOTO, tmp_path_factory.mktemp("camera") / "camera.y4m")
        args.append(f"--use-file-for-fake-video-capture={clip}")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, server):
    """``open_page(path, viewport)``: a fresh tab (its own context) on the server, drawing recorded."""
    contexts = []

    def open_(path: str = "/", viewport: dict = LAPTOP):
        phone = viewport["width"] < 600
        ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone, device_scale_factor=1)
        contexts.append(ctx)
        ctx.add_init_script(_RECORD_DRAWING)
        page = ctx.new_page()
        page.goto(server + path)
        return page

    yield open_
    for ctx in contexts:
        ctx.close()


def _wait(condition, timeout: float = 30.0, what: str = "the page"):
    """Poll ``condition()`` (Python side: the page's CSP forbids eval, so no wait_for_function)."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _inside(box: dict | None, viewport: dict) -> bool:
    return (box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 0.5
            and box["y"] + box["height"] <= viewport["height"] + 0.5)


# ----------------------------------------------------------------------------------------------
# the API's own pages
# ----------------------------------------------------------------------------------------------


def test_docs_render_the_operations_offline(open_page):
    page = open_page("/")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click("#docs-link")                     # the page's footer links to them
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    assert page.url.endswith("/docs")
    operations = {" ".join(t.split()[:2]) for t in page.locator(".opblock-summary").all_inner_texts()}
    assert {"POST /predict", "GET /info", "GET /health"} <= operations
    assert "Unable to render" not in page.content()
    assert "/ws/live" in page.locator(".information-container").inner_text()  # the WebSocket, described
    page.locator(".opblock-summary", has_text="/predict").click()            # an operation opens
    page.wait_for_selector("text=multipart/form-data", timeout=10_000)
    assert all(u.startswith(page.url.split("/docs")[0]) or u.startswith("data:") for u in requests), requests


def test_redoc_loads(open_page):
    page = open_page("/")
    page.click("#redoc-link")
    page.wait_for_selector("[role=menuitem] >> text=Predict", timeout=20_000)
    assert page.url.endswith("/redoc")
    assert page.get_by_text("/ws/live").count() >= 1
    assert "Something went wrong" not in page.content()


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------


@needs_photo
def test_upload_numbers_faces_left_to_right_on_the_list_and_the_tags(open_page):
    page = open_page("/")
    with page.expect_response("**/predict", timeout=60_000) as response:
        page.set_input_files("#file-input", str(PHOTO))
    faces = response.value.json()["results"][0]["faces"]
    assert len(faces) == 5
    page.wait_for_selector(".card:not(.loading) .faces li")
    rows = page.locator(".card .faces > li.face")
    assert rows.count() == 5
    titles = page.locator(".card .face-title").all_inner_texts()
    assert titles == [f"Face #{n}" for n in range(1, 6)]
    labels = page.locator(".card .face-label").all_inner_texts()
    swatches = [page.locator(".card .swatch").nth(i).evaluate("e => getComputedStyle(e).backgroundColor")
                for i in range(5)]

    drawn = page.evaluate("() => window.__drawn")
    on_card = [d for d in drawn if "card-canvas" in d["on"]]
    # each tag "#N label p%" is drawn on a background of row N's colour and says row N's reading
    tags = {}
    for before, text in zip(on_card, on_card[1:]):
        if text["op"] == "fillText" and text["args"][0].startswith("#") and before["op"] == "fillRect":
            number, reading = text["args"][0][1:].split(" ", 1)
            tags[int(number)] = (reading, before["style"])
    assert sorted(tags) == [1, 2, 3, 4, 5], tags
    boxes = {}
    for d in on_card:
        if d["op"] == "strokeRect" and d["style"].startswith("#"):
            boxes[d["style"]] = d["args"]
    for n in range(1, 6):
        reading, colour = tags[n]
        assert reading == labels[n - 1]
        assert _rgb(colour) == swatches[n - 1]
    # and row N's box (its colour) is the N-th from the left
    centres = [boxes[tags[n][1]][0] + boxes[tags[n][1]][2] / 2 for n in range(1, 6)]
    assert centres == sorted(centres)
    # the server's own order is not left to right here: the page does the numbering
    server_centres = [(f["box"][0] + f["box"][2]) / 2 for f in faces]
    assert server_centres != sorted(server_centres)


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


def test_buttons_explain_themselves_and_the_live_detector_is_named(open_page):
    page = open_page("/")
    page.wait_for_selector("#live-detector:not(:empty)")
    # /predict's detector in the header; live mode's own (MTCNN's stand-in) in the Live section
    assert "detector mtcnn" in page.locator("#model-info").inner_text()
    assert "face detector fast-tiled" in page.locator("#live-detector").inner_text()
    for button in ("#camera-start", "#live-toggle"):
        assert page.locator(button).get_attribute("title")
        hint = page.locator(button).get_attribute("aria-describedby")
        assert page.locator(f"#{hint}").is_visible() and page.locator(f"#{hint}").inner_text().strip()
    footer = page.locator("footer").inner_text()
    for needle in ("POST /predict", "WebSocket /ws/live", "/docs", "/redoc"):
        assert needle in footer


@needs_photo
@pytest.mark.parametrize("viewport", [LAPTOP, PHONE, SHORT], ids=["1280x800", "390x844", "1024x600"])
def test_live_finds_the_five_people_and_fits_the_window(open_page, viewport):
    page = open_page("/", viewport)
    page.wait_for_selector("#live-detector:not(:empty)")
    page.click("#live-toggle")
    counts: list[int] = []

    def five() -> bool:
        n = page.locator("#live-faces").get_attribute("data-faces")
        if n is not None:
            counts.append(int(n))
        return bool(counts) and counts[-1] >= 5

    _wait(five, 40, "five faces in live mode")
    assert counts[-1] == 5
    assert page.locator("#live-faces").inner_text().startswith("5 faces: person #")
    assert page.locator("#live-detector").inner_text().startswith("Live mode reads with: face detector fast-tiled")
    _wait(lambda: "camera frames/s" in page.locator("#live-stats").inner_text(), 20, "the live figures")
    # the overlay carries each person's number on their tag
    drawn = page.evaluate("() => window.__drawn")
    numbers = {d["args"][0].split(" ")[0] for d in drawn if d["on"] == "live-overlay" and d["op"] == "fillText"}
    assert {"#1", "#2", "#3", "#4", "#5"} <= numbers
    # the heading with its Stop button, the video and its figures: all in the window at once
    for selector in ("#live-toggle", "#live-video", "#live-stats"):
        assert _inside(page.locator(selector).bounding_box(), viewport), (selector, page.locator(selector).bounding_box())
    assert page.locator("#live-toggle").inner_text() == "Stop live"
    page.click("#live-toggle")
    assert page.locator("#live-stage").is_hidden()
