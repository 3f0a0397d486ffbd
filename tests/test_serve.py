"""The HTTP service (``ferwild.serve``): page, health/info, and /predict on a real tiny run."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import WatchedRecognizer, start_ferwild_serve
from fastapi.testclient import TestClient
from PIL import Image

from ferwild.recognizer import Recognizer
from ferwild.serve import create_app


@pytest.fixture(scope="module")
def tiny(tiny_run) -> dict:
    """The shared tiny cnn_small run (conftest), its label names and some face images."""
    run, prep, raw = tiny_run
    labels = json.loads((prep / "summary.json").read_text())["label_names"]
    images = sorted((raw / "images").rglob("*.png"))
    # faces of different classes, so their predictions are not all alike
    picked = [next(p for p in images if p.parent.name == name) for name in ("happiness", "anger", "surprise")]
    return {"run": run, "labels": labels, "images": picked}


@pytest.fixture(scope="module")
def recognizer(tiny) -> Recognizer:
    # the synthetic faces are already crops (MTCNN does not find drawn faces): whole image = one face
    return Recognizer.from_run(tiny["run"], detector="none", device="cpu")


@pytest.fixture(scope="module")
def client(recognizer):
    with TestClient(create_app(recognizer)) as c:
        yield c


def _png(path_or_array) -> bytes:
    img = Image.open(path_or_array) if isinstance(path_or_array, Path) else Image.fromarray(path_or_array)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _assert_same(http: dict, direct, labels: list[str]) -> None:
    """An HTTP result equals the recogniser's own result for the same image (up to JSON rounding)."""
    assert http["error"] is None and direct.error is None
    assert (http["width"], http["height"]) == (direct.width, direct.height)
    assert len(http["faces"]) == len(direct.faces) == 1
    got, want = http["faces"][0], direct.faces[0]
    assert got["label"] == want.label
    assert got["method"] == want.method == "whole-image"
    assert got["box"] == pytest.approx([0, 0, direct.width, direct.height])
    assert list(got["probabilities"]) == labels
    assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for name in labels:
        assert got["probabilities"][name] == pytest.approx(want.probabilities[name], abs=1e-5)
    assert got["confidence"] == pytest.approx(want.confidence, abs=1e-5)
    assert got["label"] == max(got["probabilities"], key=got["probabilities"].get)


# ----------------------------------------------------------------------------------------------
# page, health, info
# ----------------------------------------------------------------------------------------------


def test_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for needle in ("<title>ferwild", 'id="drop-zone"', 'id="file-input"', 'type="file"', "multiple",
                   'id="model-info"', 'id="camera"', 'id="results"', "<canvas", "/static/app.js",
                   "/static/style.css"):
        assert needle in html, needle
    # self-contained: nothing is loaded from another host
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "@import" not in client.get("/static/style.css").text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp

    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "/predict" in js.text and "/info" in js.text and "getUserMedia" in js.text
    assert "innerHTML" not in js.text  # server strings (file names!) only ever go in as text
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for bad in ("/static/nope.js", "/static/..%2Fserve.py", "/static/__init__.py"):
        assert client.get(bad).status_code == 404, bad


def test_health_and_info(client, tiny):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["labels"] == tiny["labels"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert info["label_names"] == tiny["labels"]
    assert info["backend"] == "torch" and info["model"] == "cnn_small" and info["detector"] == "none"
    assert info["limits"]["max_files"] == 16 and info["limits"]["max_upload_bytes"] == 20 * 1024 * 1024


# ----------------------------------------------------------------------------------------------
# /predict
# ----------------------------------------------------------------------------------------------


def test_predict_matches_the_recognizer(client, recognizer, tiny):
    a, b = tiny["images"][:2]
    r = client.post("/predict", files=[("files", ("a face.png", _png(a), "image/png")),
                                       ("files", ("b.png", _png(b), "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "elapsed_ms"} and body["elapsed_ms"] > 0
    results = body["results"]
    assert [x["source"] for x in results] == ["a face.png", "b.png"]
    direct = recognizer.analyze([a, b])
    for http, want in zip(results, direct):
        _assert_same(http, want, tiny["labels"])
        assert http["n_faces"] == 1
    # two different faces: the numbers really come from each image, not from one of them
    assert results[0]["faces"][0]["probabilities"] != results[1]["faces"][0]["probabilities"]


def test_single_file_field_and_other_formats(client, recognizer, tiny):
    path = tiny["images"][2]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("RGBA").save(buf, format="WEBP", lossless=True)
    r = client.post("/predict", files={"file": ("face.webp", buf.getvalue(), "image/webp")})
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    _assert_same(result, recognizer.analyze([rgb])[0], tiny["labels"])


def test_bad_files_get_their_own_error(client, recognizer, tiny):
    good = tiny["images"][0]
    png = _png(good)
    r = client.post("/predict", files=[
        ("files", ("notes.txt", b"this is not an image\n", "text/plain")),
        ("files", ("good.png", png, "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("cut.png", png[: len(png) // 2], "image/png")),
    ])
    assert r.status_code == 200, r.text
    text, ok, empty, cut = r.json()["results"]
    _assert_same(ok, recognizer.analyze([good])[0], tiny["labels"])
    for res, word in ((text, "not an image"), (empty, "empty"), (cut, "truncated")):
        assert res["error"] and word in res["error"], res
        assert res["faces"] == [] and res["n_faces"] == 0 and (res["width"], res["height"]) == (0, 0)
    assert [x["source"] for x in (text, ok, empty, cut)] == ["notes.txt", "good.png", "empty.png", "cut.png"]


def test_decompression_bomb_is_refused_before_decoding(client):
    buf = io.BytesIO()
    Image.new("1", (8_000, 8_000)).save(buf, format="PNG")  # 64 MP (> the 50 MP default) in a few KB
    assert len(buf.getvalue()) < 100_000
    t0 = time.perf_counter()
    r = client.post("/predict", files={"files": ("bomb.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200
    [res] = r.json()["results"]
    assert "decompression bomb" in res["error"] and res["faces"] == []
    assert time.perf_counter() - t0 < 5


def test_request_errors(client):
    r = client.post("/predict", data={"note": "no file here"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"]
    r = client.post("/predict")
    assert r.status_code == 400
    r = client.post("/predict", files={"image": ("a.png", b"\x89PNG", "image/png")})
    assert r.status_code == 400
    assert "no image uploaded" in r.json()["detail"] and "'files'" in r.json()["detail"]
    r = client.post("/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    huge_header = (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + b"a" * 50_000
                   + b".png\"\r\n\r\n\x89PNG\r\n--x--\r\n")
    r = client.post("/predict", content=huge_header, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "malformed upload" in r.json()["detail"]  # not a 500, not stored
    assert client.get("/predict").status_code == 405


def test_limits(recognizer, tiny):
    big = np.random.default_rng(0).integers(0, 256, size=(120, 120, 3), dtype=np.uint8)  # noise: ~43 KB PNG
    small = _png(tiny["images"][0])
    with TestClient(create_app(recognizer, max_upload_mb=0.02, max_files=2)) as c:
        assert len(_png(big)) > 0.02 * 1024 * 1024 > len(small)
        r = c.post("/predict", files=[("files", ("ok.png", small, "image/png")),
                                      ("files", ("huge.png", _png(big), "image/png"))])
        assert r.status_code == 413 and "huge.png" in r.json()["detail"], r.text
        r = c.post("/predict", files=[("files", (f"{i}.png", small, "image/png")) for i in range(3)])
        assert r.status_code == 413 and "at most 2" in r.json()["detail"], r.text
        r = c.post("/predict", files=[("files", (f"{i}.png", small, "image/png")) for i in range(2)])
        assert r.status_code == 200 and len(r.json()["results"]) == 2
    with pytest.raises(ValueError):
        create_app(recognizer, max_files=0)


def test_concurrent_requests_run_the_model_one_at_a_time(recognizer, tiny):
    """Concurrent requests all get their own right answer and never overlap inside the model."""

    watched = WatchedRecognizer(recognizer)
    app = create_app(watched)
    payloads = [_png(p) for p in tiny["images"]]
    expected = [r.faces[0].label for r in recognizer.analyze(tiny["images"])]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            async def one(k):
                i = k % len(payloads)
                r = await ac.post("/predict", files={"files": (f"{k}.png", payloads[i], "image/png")})
                return i, r
            return await asyncio.gather(*(one(k) for k in range(6)))

    answers = asyncio.run(main())
    # Deterministic, no timing window: every model call ran on the one dedicated model thread,
    # and a thread cannot overlap with itself (the peak counter agrees).
    assert watched.calls == 6 and watched.peak == 1
    assert len(watched.threads) == 1 and watched.threads.pop().startswith("ferwild-model")
    for i, r in answers:
        assert r.status_code == 200
        assert r.json()["results"][0]["faces"][0]["label"] == expected[i]


# ----------------------------------------------------------------------------------------------
# real photos with MTCNN
# ----------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_photos_with_mtcnn(shared_data, tiny):
    rec = Recognizer.from_run(tiny["run"], detector="mtcnn", device="cpu")
    photos = shared_data / "face_photos"
    two = photos / "face_recognition" / "two_people.jpg"
    mountain = photos / "pyfeat" / "free-mountain-vector-01.jpg"
    with TestClient(create_app(rec)) as c:
        assert c.get("/info").json()["detector"] == "mtcnn"
        r = c.post("/predict", files=[("files", (two.name, two.read_bytes(), "image/jpeg")),
                                      ("files", (mountain.name, mountain.read_bytes(), "image/jpeg"))])
    assert r.status_code == 200, r.text
    people, empty = r.json()["results"]
    w, h = Image.open(two).size
    assert people["error"] is None and (people["width"], people["height"]) == (w, h)
    assert len(people["faces"]) == 2
    for face in people["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert face["method"] == "mtcnn" and face["detection_confidence"] > 0.9
        assert len(face["landmarks"]) == 5 and face["label"] in tiny["labels"]
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # two different people, side by side: the boxes do not overlap
    left, right = sorted(f["box"] for f in people["faces"])
    assert left[2] <= right[0]
    assert empty["error"] is None and empty["faces"] == [] and empty["width"] > 0


def test_serve_command_answers_over_http(tiny):
    """`ferwild serve` end to end: a real uvicorn process on a free port, the page, /predict."""
    proc, host = start_ferwild_serve("--run", str(tiny["run"]), "--detector", "none", "--max-files", "2")
    base = f"http://{host}"
    try:
        page = httpx.get(base + "/")
        assert page.status_code == 200 and "<title>" in page.text and "ferwild" in page.text
        files = [("files", (p.name, _png(p), "image/png")) for p in tiny["images"][:2]]
        answer = httpx.post(f"{base}/predict", files=files, timeout=30)
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["source"] for r in results] == [p.name for p in tiny["images"][:2]]
        assert all(len(r["faces"]) == 1 and r["faces"][0]["label"] in tiny["labels"] for r in results)
        too_many = [("files", (p.name, _png(p), "image/png")) for p in tiny["images"][:3]]
        assert httpx.post(f"{base}/predict", files=too_many, timeout=30).status_code == 413
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_api_docs_pages_work_offline(client):
    """/docs (Swagger UI 5) and /redoc (ReDoc 2) load their scripts from a pip package's files,
    not from a CDN, in versions that read the OpenAPI 3.1 document FastAPI writes."""
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "ferwild" and schema["openapi"].startswith("3.1")
    # what OpenAPI cannot list is in its description: the page, the WebSocket, the docs pages
    for needle in ("/ws/live", "(/docs)", "(/redoc)", "/openapi.json"):
        assert needle in schema["info"]["description"], needle

    for path, script_name in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(path)
        assert page.status_code == 200, path
        assert f"/docs-assets/{script_name}" in page.text and "/openapi.json" in page.text
        assert "cdn." not in page.text and "https://" not in page.text.split("<body>")[0]
        csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
        assert csp["default-src"] == "'self'" and "https:" not in page.headers["content-security-policy"]
        script = client.get(f"/docs-assets/{script_name}")
        assert script.status_code == 200 and len(script.content) > 500_000
        assert "javascript" in script.headers["content-type"]
    assert '"validatorUrl": null' in client.get("/docs").text  # no call to an online validator
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    # Swagger UI 4 says "does not specify a valid version field" for OpenAPI 3.1: it must be 5
    bundle = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "oas31" in bundle


def test_page_links_the_api_docs_and_lists_the_websocket(client):
    page = client.get("/").text
    footer = page[page.index('<footer'):page.index('</footer>')]
    for needle in ('href="/docs"', 'href="/redoc"', 'href="/openapi.json"', "POST /predict", "WebSocket /ws/live",
                   "GET /info", "GET /health"):
        assert needle in footer, needle
