"""The live mode of ``ferwild serve``: the ``/ws/live`` WebSocket and the page's Live mode.

The server side runs on the shared tiny run (conftest): with ``detector="none"`` (synthetic
crops: every frame is one face) everywhere, and behind real detectors on frames of a real video
and on a group photo when ../shared/data is present. The live frames go through the server's
own detector (the one ``/predict`` uses) unless ``live_detector`` names another. The page's JavaScript runs under node where node exists:
its tag placement against Python's ``ferwild.drawing.place_tags``, and its live loop against a fake browser.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import WatchedRecognizer, start_ferwild_serve
from fastapi.testclient import TestClient
from PIL import Image

from ferwild.detectors.blazeface import VIDEO_MIN_CONFIDENCE
from ferwild.drawing import place_tags
from ferwild.recognizer import Recognizer
from ferwild.serve import LIVE_PATH, create_app

APP_JS = Path(__file__).resolve().parents[1] / "src" / "ferwild" / "static" / "app.js"
VIDEO = Path("face_videos") / "WolfgangLanger_Pexels.mp4"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed: the page's JavaScript is not run")


@pytest.fixture(scope="module")
def tiny(tiny_run) -> dict:
    """The shared tiny run, its labels, and synthetic face crops (64 px) of three classes."""
    run, prep, raw = tiny_run
    labels = json.loads((prep / "summary.json").read_text())["label_names"]
    images = sorted((raw / "images").rglob("*.png"))
    picked = [next(p for p in images if p.parent.name == name) for name in ("happiness", "anger", "surprise")]
    return {"run": run, "labels": labels, "images": [np.asarray(Image.open(p).convert("RGB")) for p in picked]}


@pytest.fixture(scope="module")
def crops(tiny) -> Recognizer:
    """Each image is one face crop: the live endpoint uses this recogniser as it is."""
    return Recognizer.from_run(tiny["run"], detector="none", device="cpu")


@pytest.fixture(scope="module")
def client(crops):
    with TestClient(create_app(crops)) as c:
        yield c


def _encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 70} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _frame(ws, data: bytes) -> dict:
    ws.send_bytes(data)
    return ws.receive_json()


def _check_answer(answer: dict, labels: list[str], width: int, height: int) -> None:
    """A good frame's answer: the documented keys, the frame's size, faces with a tracked,
    smoothed reading whose box lies inside the frame."""
    assert set(answer) == {"frame", "time_s", "width", "height", "faces", "server_ms", "error"}
    assert answer["error"] is None and (answer["width"], answer["height"]) == (width, height)
    assert answer["server_ms"] > 0 and answer["time_s"] >= 0
    for face in answer["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert isinstance(face["track"], int)
        assert list(face["smoothed"]) == labels and sum(face["smoothed"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["smoothed_label"] in labels + ["uncertain"]
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------------------------
# the WebSocket, on face crops
# ----------------------------------------------------------------------------------------------


def test_live_frames_are_analysed_tracked_and_smoothed(client, crops, tiny):
    face = tiny["images"][0]
    h, w = face.shape[:2]
    png = _encode(face, "PNG")  # lossless: the answer must equal the recogniser's own reading
    want = crops.analyze([face])[0].faces[0]
    with client.websocket_connect(LIVE_PATH) as ws:
        answers = [_frame(ws, png) for _ in range(4)]
    for n, answer in enumerate(answers):
        _check_answer(answer, tiny["labels"], w, h)
        assert answer["frame"] == n
        [got] = answer["faces"]
        assert got["box"] == pytest.approx([0, 0, w, h]) and got["method"] == "whole-image"
        assert got["track"] == 0
        for name in tiny["labels"]:
            assert got["probabilities"][name] == pytest.approx(want.probabilities[name], abs=1e-5)
            # the same reading every frame: the smoothed one stays on it
            assert got["smoothed"][name] == pytest.approx(want.probabilities[name], abs=1e-4)
    times = [a["time_s"] for a in answers]
    assert times[0] == 0 and times == sorted(times) and times[-1] > 0


def test_smoothing_follows_the_frames_not_one_frame(client, crops, tiny):
    """A different face in the same place: the raw reading jumps, the smoothed one moves part-way."""
    probs = [r.faces[0].probabilities for r in crops.analyze(tiny["images"])]
    # the two faces and the class whose probability differs most between them (a tiny model:
    # its readings differ by a few points only)
    (i, j, name) = max(((i, j, k) for i in range(3) for j in range(3) for k in tiny["labels"]),
                       key=lambda t: probs[t[1]][t[2]] - probs[t[0]][t[2]])
    a, b, pa, pb = tiny["images"][i], tiny["images"][j], probs[i], probs[j]
    assert pb[name] - pa[name] > 0.01
    with client.websocket_connect(LIVE_PATH) as ws:
        _frame(ws, _encode(a, "PNG"))
        [face] = _frame(ws, _encode(b, "PNG"))["faces"]
    assert face["track"] == 0  # same box: same person
    assert face["probabilities"][name] == pytest.approx(pb[name], abs=1e-5)
    assert pa[name] < face["smoothed"][name] < pb[name]


def test_bad_frames_get_an_error_and_the_stream_goes_on(crops, tiny):
    face = tiny["images"][2]
    h, w = face.shape[:2]
    big = np.random.default_rng(0).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    app = create_app(crops, max_pixels=80 * 80, max_upload_mb=0.02)
    with TestClient(app) as c, c.websocket_connect(LIVE_PATH) as ws:
        bad = {"garbage": b"\x00\x01 not an image at all",
               "empty": b"",
               "truncated": _encode(face)[:300],
               "too many pixels": _encode(np.zeros((100, 100, 3), np.uint8), "PNG"),  # 10,000 px in ~100 bytes
               "too large": _encode(big, "PNG")}
        assert len(bad["too large"]) > 0.02 * 1024 * 1024 > len(bad["too many pixels"])
        good = _encode(face)
        for n, (what, data) in enumerate(bad.items()):
            answer = _frame(ws, data)
            assert answer["frame"] == 2 * n and answer["error"], what
            assert answer["faces"] == [] and (answer["width"], answer["height"]) == (0, 0), what
            # the connection is still open and still works
            ok = _frame(ws, good)
            assert ok["frame"] == 2 * n + 1
            _check_answer(ok, tiny["labels"], w, h)
            assert len(ok["faces"]) == 1 and ok["faces"][0]["track"] == 0
        assert "decompression bomb" in _frame(ws, bad["too many pixels"])["error"]
        assert "limit" in _frame(ws, bad["too large"])["error"]
        ws.send_text("hello")
        answer = ws.receive_json()
        assert answer["frame"] is None and "binary" in answer["error"] and answer["faces"] == []
        assert len(_frame(ws, good)["faces"]) == 1


def test_reset_restarts_track_numbering(client, tiny):
    small = tiny["images"][0]                                       # 64 px: box (0, 0, 64, 64)
    large = np.asarray(Image.fromarray(small).resize((200, 200)))   # box (0, 0, 200, 200): IoU 0.1, a new track
    with client.websocket_connect(LIVE_PATH) as ws:
        assert [f["track"] for f in _frame(ws, _encode(small))["faces"]] == [0]
        assert [f["track"] for f in _frame(ws, _encode(large))["faces"]] == [1]
        assert [f["track"] for f in _frame(ws, _encode(large))["faces"]] == [1]  # kept without a reset
        ws.send_text(json.dumps({"reset": True}))
        assert ws.receive_json() == {"reset": True, "error": None}
        answer = _frame(ws, _encode(large))
        assert [f["track"] for f in answer["faces"]] == [0]
        assert answer["frame"] == 3  # frames are still counted: answers stay matched to frames
        # a new connection starts afresh too
    with client.websocket_connect(LIVE_PATH) as ws:
        assert [f["track"] for f in _frame(ws, _encode(large))["faces"]] == [0]


def test_live_without_a_fast_detector_says_so_per_frame(crops, tiny):
    """Live frames asked to go through a detector the recogniser cannot switch to: every live
    frame gets the reason, the connection stays usable, and /predict is unaffected."""
    from ferwild.recognizer import RecognizerError

    class NoFastDetector:
        detector_name = "mtcnn"

        def __init__(self, inner):
            self.inner, self.label_names, self.info = inner, inner.label_names, inner.info

        def with_detector(self, detector, **kw):
            raise RecognizerError(f"no {detector} detector in this build")

        def analyze(self, images, *, sources=None):
            return self.inner.analyze(images, sources=sources)

    face = _encode(tiny["images"][0], "PNG")
    with TestClient(create_app(NoFastDetector(crops), live_detector="fast")) as c:
        assert c.get("/info").json()["live_detector"] == "fast"
        with c.websocket_connect(LIVE_PATH) as ws:
            for n in range(2):
                answer = _frame(ws, face)
                assert answer["frame"] == n and answer["faces"] == []
                assert answer["error"].startswith("analysis failed") and "no fast detector" in answer["error"]
                assert "the fast face detector is not available" in answer["error"]
            ws.send_text(json.dumps({"reset": True}))
            assert ws.receive_json() == {"reset": True, "error": None}
        r = c.post("/predict", files={"files": ("a.png", face, "image/png")})
        assert r.status_code == 200 and len(r.json()["results"][0]["faces"]) == 1


class _DetectorProbe:
    """A recogniser stand-in that records how it is put behind another detector."""

    def __init__(self, inner, detector: str, min_confidence=None, *, calls=None):
        self.inner, self.detector_name, self.min_confidence = inner, detector, min_confidence
        self.label_names = inner.label_names
        self.calls = [] if calls is None else calls

    def info(self) -> dict:
        return {**self.inner.info(), "detector": self.detector_name, "min_confidence": self.min_confidence}

    def with_detector(self, detector, **kw):
        self.calls.append((detector, kw))
        return _DetectorProbe(self.inner, detector, kw.get("min_confidence"), calls=self.calls)

    def analyze(self, images, *, sources=None):
        results = self.inner.analyze(images, sources=sources)
        for r in results:
            for f in r.faces:
                f.method = self.detector_name
        return results


@pytest.mark.parametrize("server, live, given, want, switched", [
    # `ferwild serve --detector fast-tiled`: the live model (built behind "fast") is put behind
    # the server's detector, with the server's threshold
    ("fast-tiled", "fast", None, "fast-tiled", [("fast-tiled", {"min_confidence": 0.8})]),
    # MTCNN (the default) gives way to fast-tiled, which finds groups at video rate; the live
    # model keeps its own BlazeFace threshold
    ("mtcnn", "fast", None, "fast-tiled", [("fast-tiled", {"min_confidence": 0.6})]),
    # the app's own recogniser: BlazeFace's live-video threshold (an empty scene stays empty)
    ("mtcnn", None, None, "fast-tiled", [("fast-tiled", {"min_confidence": VIDEO_MIN_CONFIDENCE})]),
    ("fast", "fast", None, "fast", []),                          # already there: used as it is
    ("fast", None, None, "fast", []),
    ("none", None, None, "none", []),                            # crops in: every frame is one face
    ("none", "fast", None, "none", [("none", {"min_confidence": 0.8})]),
    ("mtcnn", "fast", "mtcnn", "mtcnn", [("mtcnn", {"min_confidence": 0.8})]),  # told which
    ("fast", None, "fast-tiled", "fast-tiled", [("fast-tiled", {"min_confidence": 0.8})]),
])
def test_live_frames_use_the_servers_detector(crops, tiny, server, live, given, want, switched):
    app_rec = _DetectorProbe(crops, server, 0.8)
    live_rec = None if live is None else _DetectorProbe(crops, live, 0.6)
    probe = live_rec or app_rec
    with TestClient(create_app(app_rec, live_recognizer=live_rec, live_detector=given)) as c:
        assert c.get("/info").json()["live_detector"] == want
        assert c.get("/info").json()["detector"] == server
        with c.websocket_connect(LIVE_PATH) as ws:
            for _ in range(2):  # built once, on the first frame
                [face] = _frame(ws, _encode(tiny["images"][0], "PNG"))["faces"]
                assert face["method"] == want
    assert probe.calls == switched


def test_live_and_predict_never_run_the_model_at_once(crops, tiny):
    """Live frames and /predict share the one model thread: never two model calls at a time."""

    watched = WatchedRecognizer(crops)
    face = _encode(tiny["images"][0], "PNG")
    errors: list[BaseException] = []
    with TestClient(create_app(watched)) as c:
        def stream() -> None:
            try:
                with c.websocket_connect(LIVE_PATH) as ws:
                    for _ in range(8):
                        assert len(_frame(ws, face)["faces"]) == 1
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                errors.append(exc)

        def post() -> None:
            try:
                for _ in range(8):
                    r = c.post("/predict", files={"files": ("a.png", face, "image/png")})
                    assert r.status_code == 200 and len(r.json()["results"][0]["faces"]) == 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (stream, stream, post)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    assert watched.calls == 24 and watched.peak == 1
    assert len(watched.threads) == 1 and watched.threads.pop().startswith("ferwild-model")


def test_live_through_ferwild_serve(tiny):
    """`ferwild serve` end to end: real uvicorn with WebSocket support, a real client, the limit."""
    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    proc, base = start_ferwild_serve("--run", str(tiny["run"]), "--detector", "none", "--max-upload-mb", "0.05")
    try:
        csp = httpx.get(f"http://{base}/").headers["content-security-policy"]
        assert f"connect-src 'self' ws://{base} wss://{base};" in csp
        face = _encode(tiny["images"][0])
        with connect(f"ws://{base}{LIVE_PATH}") as ws:
            for n in range(3):
                ws.send(face)
                answer = json.loads(ws.recv(timeout=30))
                assert answer["frame"] == n and answer["error"] is None
                assert [f["track"] for f in answer["faces"]] == [0]
            # over --max-upload-mb: refused by the WebSocket layer before it is read (1009)
            ws.send(b"\xff" * 60_000)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------------------------
# page, CSP, info
# ----------------------------------------------------------------------------------------------


def test_page_has_live_mode_and_its_csp_allows_the_websocket(client):
    page = client.get("/")
    assert page.status_code == 200
    for needle in ('id="live-toggle"', 'id="live-video"', 'id="live-overlay"', 'id="live-stats"',
                   'id="live-error"', "Start live"):
        assert needle in page.text, needle
    directives = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    # the page's own host, by WebSocket, and nothing else
    assert directives["connect-src"] == "'self' ws://testserver wss://testserver"
    assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"

    # a host CSP cannot spell (IPv6) falls back to any WebSocket; a Host that is not a plain host
    # name cannot smuggle anything into the header
    ipv6 = client.get("/", headers={"host": "[::1]:8000"}).headers["content-security-policy"]
    assert "connect-src 'self' ws: wss:;" in ipv6
    hostile = client.get("/", headers={"host": "x; script-src *"}).headers["content-security-policy"]
    assert "script-src *" not in hostile and "script-src 'self';" in hostile

    js = client.get("/static/app.js")
    assert js.headers["content-security-policy"] == page.headers["content-security-policy"]
    for needle in ("/ws/live", "new WebSocket", "toBlob", '"image/jpeg"', "getUserMedia", "smoothed_label"):
        assert needle in js.text, needle
    assert "innerHTML" not in js.text
    # offline: no address of another host (the only one named is in the advice to use localhost)
    assert set(re.findall(r"(?:https?|wss?)://[\w.-]+", js.text)) == {"http://localhost"}
    assert ".live-stage" in client.get("/static/style.css").text
    assert client.get("/info").json()["live"] == LIVE_PATH


# ----------------------------------------------------------------------------------------------
# a real video, behind the fast detector
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_frames(shared_data) -> list[np.ndarray]:
    """Six consecutive frames (640x360) of the real face video."""
    import av

    path = shared_data / VIDEO
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 6:
                break
    return frames


@pytest.mark.shared_data
def test_real_video_frames_behind_the_fast_detector(tiny, video_frames):
    """The app's recogniser uses MTCNN; live frames told to use the fast detector go through it,
    sharing the model."""
    rec = Recognizer.from_run(tiny["run"], detector="mtcnn", device="cpu")
    fast = rec.with_detector("fast")
    jpegs = [_encode(f) for f in video_frames[:5]]
    with TestClient(create_app(rec, live_detector="fast")) as c:
        assert c.get("/info").json()["detector"] == "mtcnn"
        assert c.get("/info").json()["live_detector"] == "fast"
        with c.websocket_connect(LIVE_PATH) as ws:
            answers = [_frame(ws, data) for data in jpegs]
    tracks = set()
    for n, (answer, data) in enumerate(zip(answers, jpegs)):
        _check_answer(answer, tiny["labels"], 640, 360)
        assert answer["frame"] == n and len(answer["faces"]) == 1, answer
        [face] = answer["faces"]
        assert face["method"] == "fast" and face["detection_confidence"] > 0.5
        x1, y1, x2, y2 = face["box"]
        assert x2 - x1 > 60 and y2 - y1 > 60  # a face, not a speck
        tracks.add(face["track"])
        # what the endpoint answers is the fast recogniser's own reading of the decoded frame
        [want] = fast.analyze([np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))])[0].faces
        assert face["box"] == pytest.approx(list(want.box), abs=0.01)
        for name in tiny["labels"]:
            assert face["probabilities"][name] == pytest.approx(want.probabilities[name], abs=1e-5)
    assert tracks == {0}  # one person, one number, over every frame


@pytest.fixture(scope="module")
def group_frame(shared_data) -> bytes:
    """The five people of face_photos/pyfeat/multi_face.jpg as the page sends them: 640 px wide, JPEG."""
    photo = Image.open(shared_data / "face_photos" / "pyfeat" / "multi_face.jpg").convert("RGB")
    return _encode(np.asarray(photo.resize((640, round(photo.height * 640 / photo.width)))))


@pytest.mark.shared_data
@pytest.mark.parametrize("server, given, detector, five", [
    ("fast", None, "fast", False), ("fast-tiled", None, "fast-tiled", True),
    ("mtcnn", None, "fast-tiled", True), ("mtcnn", "mtcnn", "mtcnn", True)])
def test_live_group_photo_finds_the_servers_faces(tiny, group_frame, server, given, detector, five):
    """A group photo in live mode: the server's detector decides what is found. The untiled fast
    detector (what live mode used whatever the server said) finds 1 to 3 of the 5 people at
    640 px; fast-tiled (live's stand-in for MTCNN) and MTCNN find all five, as /predict does."""
    rec = Recognizer.from_run(tiny["run"], detector=server, device="cpu")
    with TestClient(create_app(rec, live_recognizer=rec.with_detector("fast"), live_detector=given)) as c:
        assert c.get("/info").json()["live_detector"] == detector
        with c.websocket_connect(LIVE_PATH) as ws:
            answer = _frame(ws, group_frame)
    faces = len(answer["faces"])
    assert answer["error"] is None and (faces == 5 if five else 0 < faces < 5), faces
    assert {f["method"] for f in answer["faces"]} == {detector}
    assert sorted(f["track"] for f in answer["faces"]) == list(range(faces))


# ----------------------------------------------------------------------------------------------
# the page's JavaScript under node
# ----------------------------------------------------------------------------------------------


def _node(script: str, stdin: str = "") -> str:
    """Run ``script`` under node with app.js's path as ``process.argv[1]``; its stdout."""
    proc = subprocess.run([NODE, "-e", script, str(APP_JS)], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _placement_cases() -> list[dict]:
    """Hand-made crowded scenes plus random ones (boxes, tag sizes, image size, gap)."""
    cases = [
        # four faces in a row along the top edge: no room above, tags go below / inside
        {"boxes": [[10, 0, 110, 100], [110, 0, 210, 100], [210, 0, 310, 100], [310, 0, 410, 100]],
         "sizes": [[90, 22]] * 4, "width": 640, "height": 360, "gap": 1.5},
        # a face filling the frame between two others, tags wider than the gaps
        {"boxes": [[0, 20, 200, 340], [200, 20, 440, 340], [440, 20, 640, 340]],
         "sizes": [[230, 24], [150, 24], [120, 24]], "width": 640, "height": 360, "gap": 2},
        # nine faces tiling the image: nowhere to put most tags (None)
        {"boxes": [[x, y, x + 60, y + 60] for y in (0, 60, 120) for x in (0, 60, 120)],
         "sizes": [[80, 20]] * 9, "width": 180, "height": 180, "gap": 1},
        # a tag wider than the image
        {"boxes": [[5, 5, 50, 50]], "sizes": [[120, 20]], "width": 100, "height": 100, "gap": 1},
    ]
    rng = np.random.default_rng(19)
    for _ in range(300):
        width, height = float(rng.integers(120, 700)), float(rng.integers(120, 500))
        boxes, sizes = [], []
        for _ in range(int(rng.integers(2, 7))):
            w, h = rng.uniform(20, width / 2.5), rng.uniform(20, height / 2.5)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes.append([x, y, x + w, y + h])
            sizes.append([rng.uniform(30, 140), rng.uniform(12, 28)])
        cases.append({"boxes": boxes, "sizes": sizes, "width": width, "height": height,
                      "gap": float(rng.uniform(0.5, 2))})
    return cases


@needs_node
def test_js_tag_placement_agrees_with_python():
    cases = _placement_cases()
    script = """
const { placeTags } = require(process.argv[1]);
let input = "";
process.stdin.on("data", (d) => { input += d; });
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((c) => placeTags(c.boxes, c.sizes, c.width, c.height, c.gap));
  process.stdout.write(JSON.stringify(out));
});
"""
    js = json.loads(_node(script, json.dumps(cases)))
    assert len(js) == len(cases)

    def overlap(a, b) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    placed = unplaced = not_first = 0
    for case, got in zip(cases, js):
        boxes = [tuple(b) for b in case["boxes"]]
        want = place_tags(boxes, [tuple(s) for s in case["sizes"]], case["width"], case["height"], gap=case["gap"])
        assert len(got) == len(want) == len(boxes)
        for g, w in zip(got, want):
            assert (g is None) == (w is None), (case, got, want)
            if g is not None:
                assert g == pytest.approx(list(w), abs=1e-9)
        tags = [t for t in got if t is not None]
        for i, tag in enumerate(got):
            if tag is None:
                unplaced += 1
                continue
            placed += 1
            x1, y1, x2, y2 = tag
            assert 0 <= x1 and 0 <= y1 and x2 <= case["width"] + 1e-9 and y2 <= case["height"] + 1e-9
            assert math.isclose(x2 - x1, case["sizes"][i][0]) and math.isclose(y2 - y1, case["sizes"][i][1])
            assert not any(overlap(tag, b) for j, b in enumerate(boxes) if j != i), (case, i)
            assert not any(overlap(tag, t) for t in tags if t is not tag), (case, i)
            box = boxes[i]
            not_first += (x1, y1) != (max(0.0, min(box[0], case["width"] - case["sizes"][i][0])),
                                      max(0.0, box[1] - case["sizes"][i][1] - case["gap"]))
    # the cases reach the rule's interesting branches: fallback spots and faces without a spot
    assert placed > 500 and unplaced >= 7 and not_first > 50
    assert js[2].count(None) >= 5 and js[3] == [None]


# A fake browser just big enough for the page's script: DOM elements, a 2D context that records
# what is drawn, a camera whose frames the test fires, and a WebSocket the test answers.
_FAKE_BROWSER = r"""
const vm = require("vm");
const fs = require("fs");
const drawn = [];
const ctx = {
  measureText: (t) => ({ width: 7 * String(t).length }),
  strokeRect(...a) { drawn.push(["box", this.strokeStyle, ...a]); }, fillRect() {}, clearRect() {},
  fillText: (t) => drawn.push(["text", t]), drawImage: () => {}, setTransform: () => {},
};
const elements = {};
function element(id) {
  if (!elements[id]) {
    const listeners = {};
    elements[id] = {
      id, hidden: id.startsWith("live-") && id !== "live-toggle", textContent: "", style: {}, width: 0, height: 0,
      disabled: false, attrs: {}, listeners, classList: { add() {}, remove() {} },
      addEventListener: (type, fn) => { (listeners[type] = listeners[type] || []).push(fn); },
      setAttribute(k, v) { this.attrs[k] = v; }, append() {}, replaceChildren() {}, focus() {},
      getContext: () => ctx, getBoundingClientRect: () => ({ width: 640 }),
      click() { (listeners.click || []).forEach((fn) => fn({})); },
    };
  }
  return elements[id];
}
const video = element("live-video");
Object.assign(video, {
  videoWidth: 1280, videoHeight: 720, clientWidth: 960, clientHeight: 540, readyState: 4, frameCallbacks: [],
  requestVideoFrameCallback(fn) { this.frameCallbacks.push(fn); return this.frameCallbacks.length; },
  cancelVideoFrameCallback() {},
});
const cameraFrame = () => { const fns = video.frameCallbacks.splice(0); fns.forEach((fn) => fn()); };
const sockets = [];
class FakeSocket {
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; this.listeners = {}; sockets.push(this); }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type, ev = {}) { (this.listeners[type] || []).forEach((fn) => fn(ev)); }
  send(data) { this.sent.push(data); }
  close(code) { this.readyState = 3; this.closedWith = code; }
}
FakeSocket.OPEN = 1;
const track = { listeners: {}, stop() {}, addEventListener(type, fn) { this.listeners[type] = fn; } };
let camera = () => Promise.resolve({ getTracks: () => [track] });
const sandbox = {
  console, JSON, Math, Number, String, Object, Array, Promise, Error, TypeError, Date, File: class {},
  setTimeout, clearTimeout, performance,
  document: {
    getElementById: element,
    createElement: (tag) => (tag === "canvas"
      ? { width: 0, height: 0, getContext: () => ctx, toBlob: (cb, type, q) => cb({ type, quality: q }) }
      : element(`new-${tag}`)),
  },
  window: { isSecureContext: true, devicePixelRatio: 1, innerHeight: 800, addEventListener() {} },
  navigator: { mediaDevices: { getUserMedia: (c) => camera(c), enumerateDevices: () => Promise.resolve([]) } },
  location: { protocol: "http:", host: "example.test:8000" },
  fetch: () => Promise.reject(new TypeError("offline")),
  WebSocket: FakeSocket, requestAnimationFrame: () => 0, cancelAnimationFrame() {},
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), sandbox);
const tick = () => new Promise((r) => setImmediate(r));
const el = (id) => elements[id];
"""

_LIVE_SCENARIO = r"""
(async () => {
  const out = {};
  el("live-toggle").click();
  await tick();
  const ws = sockets[0];
  out.url = ws.url;
  out.stageShown = !el("live-stage").hidden;
  out.button = el("live-toggle").textContent;
  ws.readyState = 1;
  ws.fire("open");
  for (let i = 0; i < 5; i++) cameraFrame();        // five camera frames, no answer yet
  out.sentBeforeAnswer = ws.sent.length;
  out.blob = ws.sent[0];
  const face = { box: [320, 90, 480, 270], label: "anger", confidence: 0.5, track: 3,
                 probabilities: { anger: 0.5, happiness: 0.5 },
                 smoothed_label: "happiness", smoothed: { anger: 0.25, happiness: 0.75 } };
  ws.fire("message", { data: JSON.stringify({ frame: 0, width: 640, height: 360, faces: [face],
                                              server_ms: 12.3, error: null }) });
  out.sentAfterAnswer = ws.sent.length;               // the waiting frame goes at once
  out.stats = el("live-stats").textContent;
  out.statsTitle = el("live-stats").attrs.title;
  out.faces = el("live-faces").textContent;
  out.faceCount = el("live-faces").attrs["data-faces"];
  out.drawn = drawn.slice();
  ws.fire("message", { data: JSON.stringify({ frame: 1, width: 0, height: 0, faces: [], server_ms: 1,
                                              error: "not an image" }) });
  out.sentAfterError = ws.sent.length;                // nothing new from the camera: nothing sent
  out.frameError = el("live-error").textContent;
  cameraFrame();
  out.sentAfterNextFrame = ws.sent.length;
  ws.readyState = 3;
  ws.fire("close", { code: 1011, reason: "" });       // the server goes away
  out.closedError = el("live-error").textContent;
  out.buttonAfterClose = el("live-toggle").textContent;
  out.stageHiddenAfterClose = el("live-stage").hidden;

  el("live-toggle").click();                           // again, and the socket never opens
  await tick();
  sockets[1].readyState = 3;
  sockets[1].fire("close", { code: 1006, reason: "" });
  out.failedError = el("live-error").textContent;

  el("live-toggle").click();                           // again, and the camera is unplugged
  await tick();
  track.listeners.ended();
  out.endedError = el("live-error").textContent;
  out.closedByPage = sockets[2].closedWith;

  camera = () => Promise.reject(Object.assign(new Error("denied"), { name: "NotAllowedError" }));
  el("live-toggle").click();
  await tick();
  out.deniedError = el("live-error").textContent;
  camera = () => Promise.reject(Object.assign(new Error("none"), { name: "NotFoundError" }));
  el("live-toggle").click();
  await tick();
  out.noCameraError = el("live-error").textContent;
  out.sockets = sockets.length;

  sandbox.window.isSecureContext = false;
  el("live-toggle").click();
  await tick();
  out.insecureError = el("live-error").textContent;
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@needs_node
def test_page_live_loop_keeps_one_frame_in_flight():
    """The page's live mode in a fake browser: one frame in flight, skipped frames counted, the
    answer drawn with the track's colour and the smoothed label, and a clear word on failures."""
    out = json.loads(_node(_FAKE_BROWSER + _LIVE_SCENARIO))
    assert out["url"] == "ws://example.test:8000/ws/live"
    assert out["stageShown"] and out["button"] == "Stop live"
    # five camera frames while the first was in flight: one sent, three superseded (skipped),
    # the newest waits and goes as soon as the answer is in
    assert out["sentBeforeAnswer"] == 1 and out["blob"] == {"type": "image/jpeg", "quality": 0.7}
    assert out["sentAfterAnswer"] == 2
    # rates of the last second side by side; the totals since the start are said as such
    assert "server 12 ms" in out["stats"] and re.search(r"analysed [\d.]+ of [\d.]+ camera frames/s", out["stats"])
    assert "skipped" not in out["stats"]
    assert "Since Start live: 1 frame analysed, 3 camera frames skipped" in out["statsTitle"]
    assert out["faces"] == "1 face: person #4 happiness 75%" and out["faceCount"] == "1"
    # the answer is for the 640x360 frame that was sent, the 1280x720 video shows at 960x540: the
    # box is drawn where it was found, in the colour of its track (COLORS[3]); the tag reads the
    # smoothed label, not the frame's own, after the person's number
    assert ["box", "#3ddc84", 480, 135, 240, 270] in out["drawn"]
    assert ["text", "#4 happiness 75%"] in out["drawn"] and not any("anger" in str(d) for d in out["drawn"])
    assert out["sentAfterError"] == 2 and "could not be analysed: not an image" in out["frameError"]
    assert out["sentAfterNextFrame"] == 3
    assert "closed" in out["closedError"] and "1011" in out["closedError"]
    assert out["buttonAfterClose"] == "Start live" and out["stageHiddenAfterClose"]
    assert "Could not connect" in out["failedError"]
    assert "denied" in out["deniedError"]
    assert "No camera found" in out["noCameraError"]
    assert "camera stopped" in out["endedError"] and out["closedByPage"] == 1000
    assert out["sockets"] == 3  # no connection without a camera
    assert "secure page" in out["insecureError"]


@needs_node
def test_js_numbers_photo_faces_left_to_right_and_live_faces_by_person():
    script = """
const { readingOrder, faceNumbers } = require(process.argv[1]);
const photo = [{ box: [500, 10, 560, 70] }, { box: [20, 200, 80, 260] }, { box: [300, 50, 340, 90] },
               { label: "no box" }, { box: [20, 20, 80, 80] }];
const live = [{ box: [500, 10, 560, 70], track: 3 }, { box: [20, 200, 80, 260], track: 0 }];
const mixed = [{ box: [500, 10, 560, 70], track: 3 }, { box: [20, 200, 80, 260] }];
process.stdout.write(JSON.stringify({ order: readingOrder(photo), photo: faceNumbers(photo),
  live: faceNumbers(live), mixed: faceNumbers(mixed), none: faceNumbers([]) }));
"""
    out = json.loads(_node(script))
    # left to right by the box's centre (then top to bottom); a face without a box last
    assert out["order"] == [4, 1, 2, 0, 3]
    assert out["photo"] == [4, 2, 3, 5, 1]
    assert out["live"] == [4, 1]          # a person's number is their track + 1, frame after frame
    assert out["mixed"] == [2, 1] and out["none"] == []
