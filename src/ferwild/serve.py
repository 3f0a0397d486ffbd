"""The HTTP service behind ``ferwild serve``: a JSON API and a small web page.

Endpoints (all JSON except ``/`` and ``/static/*``):

* ``GET /`` -- the web page (``ferwild/static/index.html`` + ``app.js`` + ``style.css``; no
  external resources, so it works on a machine without internet).
* ``GET /health`` -- ``{"status": "ok"}``.
* ``GET /info`` -- ``recognizer.info()`` plus ``labels`` (the class names, in class-id order),
  ``limits`` (``max_files``, ``max_upload_mb``, ``max_upload_bytes``, ``max_pixels``),
  ``live`` (the path of the live WebSocket, ``/ws/live``), ``live_model`` (what reads the live
  frames) and ``live_detector`` (the face detector of the live frames).
* ``GET /docs`` (Swagger UI), ``GET /redoc`` (ReDoc), ``GET /openapi.json`` -- the API's own
  pages, their scripts served from the ``fastapi-offline`` package's files (``/docs-assets/*``):
  no CDN, they work offline. (The WebSocket is not part of OpenAPI: its protocol is in the
  description at the top of both pages.)
* ``POST /predict`` -- ``multipart/form-data`` with one or more images in the field ``files``
  (a single ``file`` field is accepted too). Answers
  ``{"results": [ImageResult.to_dict(), ...], "elapsed_ms": float}``, one result per uploaded
  file, in upload order. A file that is not a usable image (empty, truncated, not an image,
  too many pixels) gets its own ``error`` while the others are analysed: the batch is still
  HTTP 200. Errors of the request itself: 400 (not multipart, no file, malformed multipart),
  413 (a file over ``max_upload_mb``, more than ``max_files`` files, or a body too large).
* ``WebSocket /ws/live`` -- live video (the page's "Live" mode). The client sends each webcam
  frame as one *binary* message, an encoded image (JPEG, PNG or WebP; at most ``max_upload_mb``
  and ``max_pixels``); the server answers every message with one JSON *text* message, in order:
  ``{"frame": n, "time_s": s, "width": w, "height": h, "faces": [Face.to_dict(), ...],
  "server_ms": ms, "error": null}``. ``frame`` counts the binary messages of the connection from
  0, ``time_s`` is the server's time since the connection's first frame. Faces are found with the
  server's own detector (the one ``/predict`` uses, ``/info``'s ``detector``: ``ferwild serve
  --detector``), except that MTCNN (~5 frames/s on 2 CPU cores) gives way to ``fast-tiled``
  (BlazeFace, also over tiles: ~20 frames/s, and like MTCNN it finds every face of a group), and
  unless :func:`create_app`'s ``live_detector`` names one (``/info``'s ``live_detector`` says which
  is in use); faces are numbered by person across frames (``track``) and their readings smoothed over time (``smoothed``,
  ``smoothed_label``), per connection (:class:`ferwild.tracking.FaceTracker`,
  :class:`ferwild.tracking.ExpressionSmoother`). A frame that cannot be used (not an image, too
  many pixels) gets ``error`` set and no faces; the connection stays open (a message over
  ``max_upload_mb`` closes it under :func:`serve`, code 1009, before it is read). The text
  message ``{"reset": true}`` forgets the tracks (numbering restarts at 0) and is answered with
  ``{"reset": true, "error": null}``; any other text message gets an ``error`` answer. A client
  that waits for each answer before sending the next frame never builds a queue: a slow server
  makes it skip camera frames instead of lagging behind.

Safety:

* The body is parsed while it streams in, with the limits enforced as it arrives: a file is
  refused as soon as it passes ``max_upload_mb`` (not after it has been spooled to disk), the
  number of files and form fields is capped, and so is the whole body (``Content-Length`` is
  checked before anything is read).
* Images are decoded with :func:`ferwild.data.images.load_image_bytes` (EXIF orientation,
  palette / alpha / 16-bit / CMYK handled; every bad file becomes a short reason, never an
  exception), whose pixel-count check from the header, before decoding, is the guard against
  decompression bombs (``max_pixels``, never looser than PIL's own limit).
* The model runs in one dedicated, long-lived thread (``ferwild-model``), one batch at a time:
  concurrent requests and live frames queue for it without blocking the event loop or holding
  worker threads, never run the model concurrently, and torch's per-thread state (its OpenMP/MKL thread teams)
  is not rebuilt whenever a short-lived pool thread comes and goes. Decoding runs in anyio
  worker threads, in parallel and outside the model thread.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ferwild.data.images import ImageRejected, load_image_bytes
from ferwild.detectors import FAST_DETECTORS
from ferwild.formatting import first_line
from ferwild.recognizer import ImageResult
from ferwild.tracking import VideoTracker

__all__ = ["DEFAULT_MAX_PIXELS", "FILE_FIELDS", "LIVE_PATH", "create_app", "live_detector_for", "serve"]

#: Images whose header declares more pixels than this are refused before decoding (50 MP: a
#: modern phone photo fits, a decompression bomb does not; PIL's own limit is ~89 MP).
DEFAULT_MAX_PIXELS = 50_000_000

#: Form fields that carry images. Files under any other field name are ignored.
FILE_FIELDS = ("files", "file")

#: The live video WebSocket (see the module docstring).
LIVE_PATH = "/ws/live"

# Web page assets served from the package (ferwild/static), with their media types.
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads nothing from elsewhere; the webcam preview is a MediaStream, the drawn image a
# blob: URL / ImageBitmap. connect-src is completed per request (see _page_headers): the live
# mode's WebSocket goes back to the host the page came from.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src {connect}; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# A Host header that can be written into a CSP host-source as it is: a DNS name or IPv4 address
# and an optional port (CSP has no syntax for IPv6 literals).
_CSP_HOST = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?")

# Multipart overhead allowed on top of the files themselves: boundaries and part headers, and
# the few small non-file fields a browser form may add.
_MAX_FIELDS = 16
_FIELD_BYTES = 16 * 1024
_HEADER_BYTES = 8 * 1024
_OVERHEAD_BYTES = 64 * 1024 + _MAX_FIELDS * _FIELD_BYTES


class _RequestTooLarge(Exception):
    """Raised while the body streams in; becomes HTTP 413 with ``message``."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _LimitedMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, refusing too many / too large files *while* streaming."""

    def __init__(self, *args: Any, max_file_bytes: int, max_file_count: int, **kw: Any):
        super().__init__(*args, **kw)
        self._max_file_bytes = max_file_bytes
        self._max_file_count = max_file_count
        self._file_count = 0
        self._part_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._part_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if self._current_part.file is not None:
            self._file_count += 1
            if self._file_count > self._max_file_count:
                raise _RequestTooLarge(
                    f"too many files: at most {self._max_file_count} images per request"
                )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        super().on_header_field(data, start, end)
        self._check_header(self._current_partial_header_name)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        super().on_header_value(data, start, end)
        self._check_header(self._current_partial_header_value)

    @staticmethod
    def _check_header(buffer: bytes) -> None:
        # python-multipart hands part headers over in pieces that starlette accumulates without
        # a bound: keep a malformed (or hostile) header from filling memory. (Recent
        # python-multipart versions refuse headers over 4 KB themselves; older ones do not.)
        if len(buffer) > _HEADER_BYTES:
            raise MultiPartException(f"part header longer than {_HEADER_BYTES // 1024} KB")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._part_bytes += end - start
            if self._part_bytes > self._max_file_bytes:
                name = self._current_part.file.filename or "a file"
                raise _RequestTooLarge(
                    f"{_short(name)} is larger than the {_mb(self._max_file_bytes)} limit per image"
                )
        super().on_part_data(data, start, end)


def _predict_request_schema(max_files: int) -> dict[str, Any]:
    """The OpenAPI request body of ``POST /predict`` (multipart ``files``, or one ``file``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": f"1 to {max_files} images",
                            },
                            "file": {"type": "string", "format": "binary",
                                     "description": "a single image (alternative to files)"},
                        },
                    }
                }
            },
        }
    }


async def _uploaded_files(request: Request, max_file_bytes: int, max_files: int,
                          max_body_bytes: int) -> tuple[list[str], list[bytes]]:
    """The uploads' display names and bytes (limits enforced by :func:`_read_uploads`)."""
    uploads = await _read_uploads(request, max_file_bytes, max_files, max_body_bytes)
    try:
        names = [_source_name(up.filename, i) for i, up in enumerate(uploads)]
        blobs = [await up.read() for up in uploads]
    finally:
        for up in uploads:
            await up.close()
    return names, blobs


async def _decode_all(blobs: list[bytes], names: list[str], max_pixels: int) -> list[Any]:
    """Decode every upload in parallel worker threads: an image, or the error text for that file."""
    decoded: list[Any] = [None] * len(blobs)

    async def decode(i: int) -> None:
        decoded[i] = await anyio.to_thread.run_sync(_decode, blobs[i], names[i], max_pixels)

    async with anyio.create_task_group() as tg:
        for i in range(len(blobs)):
            tg.start_soon(decode, i)
    return decoded


def _check_limits(max_upload_mb: float, max_files: int, max_pixels: int) -> None:
    """:func:`create_app`'s limits must each allow something (``ValueError`` otherwise)."""
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    if max_files < 1:
        raise ValueError(f"max_files must be >= 1, got {max_files}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")


def _service_info(recognizer: Any, *, max_upload_mb: float, max_upload_bytes: int, max_files: int,
                  max_pixels: int) -> dict[str, Any]:
    """What ``GET /info`` answers: ``recognizer.info()`` plus ``labels`` and ``limits``."""
    info = dict(recognizer.info())
    info["labels"] = [str(name) for name in recognizer.label_names]
    info["limits"] = {
        "max_files": max_files,
        "max_upload_mb": max_upload_mb,
        "max_upload_bytes": max_upload_bytes,
        "max_pixels": max_pixels,
    }
    info["live"] = LIVE_PATH
    return info


def create_app(
    recognizer: Any,
    *,
    max_upload_mb: float = 20,
    max_files: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    live_recognizer: Any = None,
    live_detector: str | None = None,
) -> FastAPI:
    """Build the FastAPI app serving ``recognizer`` (a :class:`ferwild.recognizer.Recognizer`).

    Args:
        recognizer: anything with ``label_names``, ``info()`` and
            ``analyze(images, sources=...)`` returning results with ``to_dict()``.
        max_upload_mb: largest accepted file, in MiB (413 above it).
        max_files: most images per ``/predict`` request (413 above it).
        max_pixels: images whose header declares more pixels are refused before decoding
            (that file's ``error``; PIL's own ``Image.MAX_IMAGE_PIXELS`` is never loosened).
        live_recognizer: the recogniser of ``/ws/live`` (``ferwild serve`` gives the live model,
            ``ferwild:ferplus_live``, when no model is chosen); default: ``recognizer``.
            ``/info``'s ``live_model`` names it.
        live_detector: the face detector of ``/ws/live`` (``"mtcnn"``, ``"fast"``,
            ``"fast-tiled"``, ``"none"``); default: ``recognizer``'s own, so that the live mode
            finds the faces ``/predict`` finds, with ``"fast-tiled"`` for ``"mtcnn"`` (video rate;
            it finds groups as MTCNN does). The live recogniser is put behind it (sharing its
            model) when its own detector differs. ``/info``'s ``live_detector`` names it.
    """
    _check_limits(max_upload_mb, max_files, max_pixels)
    max_file_bytes = max(1, int(max_upload_mb * 1024 * 1024))
    max_body_bytes = max_files * max_file_bytes + _OVERHEAD_BYTES
    info = _service_info(recognizer, max_upload_mb=max_upload_mb, max_upload_bytes=max_file_bytes,
                         max_files=max_files, max_pixels=max_pixels)

    # One batch through the model at a time, always in the same thread; the lock also covers
    # other apps (or user code) sharing this recogniser.
    model_thread = _ModelThread()
    model_lock = threading.Lock()
    live_model = _LiveModel(recognizer, live_recognizer, detector=live_detector)
    info["live_model"] = _model_name(live_recognizer if live_recognizer is not None else recognizer)
    info["live_detector"] = live_model.detector

    app = _new_app(model_thread, max_files=max_files, max_file_bytes=max_file_bytes,
                   live_detector=live_model.detector)
    _add_page_routes(app, info)
    _add_predict_route(app, recognizer, model_thread, model_lock, max_file_bytes=max_file_bytes, max_files=max_files,
                       max_body_bytes=max_body_bytes, max_pixels=max_pixels)
    _add_live_route(app, recognizer, live_model, model_thread, model_lock, max_file_bytes=max_file_bytes,
                    max_pixels=max_pixels)
    return app


def _new_app(model_thread: _ModelThread, *, max_files: int, max_file_bytes: int, live_detector: str) -> FastAPI:
    """The FastAPI app with its description and offline docs; it closes ``model_thread`` on shutdown."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        model_thread.close()

    app = FastAPI(
        title="ferwild",
        summary="Facial expression recognition in the wild",
        description=_API_DESCRIPTION.format(live=LIVE_PATH, max_files=max_files, max_mb=_mb(max_file_bytes),
                                            detector=live_detector),
        version=_version(),
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: blank pages offline
        # (_add_offline_docs serves them from a package's files instead).
        docs_url=None,
        redoc_url=None,
    )
    _add_offline_docs(app)
    return app


def _add_page_routes(app: FastAPI, info: dict[str, Any]) -> None:
    """The web page, its static files, ``/health`` and ``/info``."""
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> Response:
        return _static_response("index.html", request.headers.get("host"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> Response:
        if name not in _STATIC:
            raise HTTPException(status_code=404, detail="not found")
        return _static_response(name, request.headers.get("host"))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    def get_info() -> JSONResponse:
        return JSONResponse(info)


def _add_predict_route(app: FastAPI, recognizer: Any, model_thread: _ModelThread, model_lock: threading.Lock, *,
                       max_file_bytes: int, max_files: int, max_body_bytes: int, max_pixels: int) -> None:
    """``POST /predict``: the uploaded images decoded in worker threads, analysed in the model thread."""
    @app.post(
        "/predict",
        responses={
            400: {"description": "not multipart, no file, or malformed multipart data"},
            413: {"description": "a file over max_upload_mb, or more than max_files files"},
        },
        openapi_extra=_predict_request_schema(max_files),
    )
    async def predict(request: Request) -> JSONResponse:
        """Detect the faces in each uploaded image and classify their expressions."""
        t0 = time.perf_counter()
        names, blobs = await _uploaded_files(request, max_file_bytes, max_files, max_body_bytes)
        decoded = await _decode_all(blobs, names, max_pixels)  # worker threads, outside the model lock
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        analysed: dict[int, dict] = {}
        if good:
            def run_model() -> list:
                with model_lock:
                    return list(recognizer.analyze([decoded[i] for i in good],
                                                   sources=[names[i] for i in good]))

            results = await asyncio.wrap_future(model_thread.submit(run_model))
            if len(results) != len(good):
                raise RuntimeError(f"recognizer returned {len(results)} results for {len(good)} images")
            analysed = {i: r.to_dict() for i, r in zip(good, results)}

        out = [analysed[i] if i in analysed else _error_result(names[i], decoded[i])
               for i in range(len(decoded))]
        return JSONResponse({"results": out, "elapsed_ms": (time.perf_counter() - t0) * 1000.0})


def _add_live_route(app: FastAPI, recognizer: Any, live_model: _LiveModel, model_thread: _ModelThread,
                    model_lock: threading.Lock, *, max_file_bytes: int, max_pixels: int) -> None:
    """``/ws/live``: one encoded frame in, one JSON answer out, per connection its own tracks."""
    @app.websocket(LIVE_PATH)
    async def live(websocket: WebSocket) -> None:
        """Live video: one encoded frame in, one JSON answer out (see the module docstring)."""
        await websocket.accept()
        session = _LiveSession(recognizer)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data, text = message.get("bytes"), message.get("text")
                if data is not None:
                    reply = await live_frame(session, data)
                elif _is_reset(text):
                    session.reset()
                    reply = {"reset": True, "error": None}
                else:
                    reply = _live_reply(None, None, 0, 0, [], 0.0,
                                        'send frames as binary messages (encoded images); the only text '
                                        'message is {"reset": true}')
                await websocket.send_text(json.dumps(reply))
        except WebSocketDisconnect:
            pass  # the client went away while its answer was being computed or sent

    async def live_frame(session: _LiveSession, data: bytes) -> dict[str, Any]:
        """Decode one frame (worker thread), then detect, classify, track and smooth it (model thread)."""
        t0 = time.perf_counter()
        n, time_s = session.next_frame()
        name = f"live-frame-{n}"
        if len(data) > max_file_bytes:
            decoded: Any = f"frame larger than the {_mb(max_file_bytes)} limit per image"
        else:
            decoded = await anyio.to_thread.run_sync(_decode, data, name, max_pixels)
        if isinstance(decoded, str):
            return _live_reply(n, time_s, 0, 0, [], (time.perf_counter() - t0) * 1000.0, decoded)

        def run_model() -> ImageResult:
            fast = live_model.get()
            with model_lock:
                result = fast.analyze([decoded], sources=[name])[0]
            result.frame, result.time_s = n, time_s
            if result.error is None:  # tracking is per connection: outside the lock
                session.tracking.update(result)
            return result

        try:
            result = await asyncio.wrap_future(model_thread.submit(run_model))
        except Exception as exc:  # noqa: BLE001 - one failed frame is reported; the stream goes on
            return _live_reply(n, time_s, 0, 0, [], (time.perf_counter() - t0) * 1000.0,
                               f"analysis failed: {_short(first_line(exc), 200)}")
        return _live_reply(n, time_s, result.width, result.height, [f.to_dict() for f in result.faces],
                           (time.perf_counter() - t0) * 1000.0, result.error)


def serve(
    recognizer: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_upload_mb: float = 20,
    max_files: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    live_recognizer: Any = None,
    live_detector: str | None = None,
    log_level: str = "info",
    **uvicorn_kw: Any,
) -> None:
    """Serve ``recognizer`` with uvicorn until interrupted (one process: the model is loaded once).

    Extra keyword arguments go to ``uvicorn.run`` (e.g. ``access_log=False``,
    ``ssl_certfile=...``). A WebSocket message over ``max_upload_mb`` closes its connection
    (code 1009, "message too big") before it is read: uvicorn's ``ws_max_size`` is set to it.
    """
    import uvicorn

    app = create_app(recognizer, max_upload_mb=max_upload_mb, max_files=max_files,
                     max_pixels=max_pixels, live_recognizer=live_recognizer, live_detector=live_detector)
    # a live frame is held in memory whole: bound it by the same limit as an uploaded file
    uvicorn_kw.setdefault("ws_max_size", max(1, int(max_upload_mb * 1024 * 1024)))
    uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_kw)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


async def _read_uploads(request: Request, max_file_bytes: int, max_files: int,
                        max_body_bytes: int) -> list[UploadFile]:
    """Parse the multipart body with the limits enforced while it streams; return the images."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status_code=400,
            detail="send the images as multipart/form-data, one or more in the field 'files'",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise HTTPException(
            status_code=413,
            detail=f"request too large ({_mb(int(declared))}): at most {max_files} images of "
                   f"{_mb(max_file_bytes)} each",
        )

    async def limited_stream():
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > max_body_bytes:
                raise _RequestTooLarge(
                    f"request too large: at most {max_files} images of {_mb(max_file_bytes)} each"
                )
            yield chunk

    # starlette's own file cap is one above ours, so that ours (a 413 saying why) fires first
    parser = _LimitedMultiPartParser(
        request.headers, limited_stream(), max_files=max_files + 1, max_fields=_MAX_FIELDS,
        max_part_size=_FIELD_BYTES, max_file_bytes=max_file_bytes, max_file_count=max_files,
    )
    try:
        form = await parser.parse()
    except _RequestTooLarge as exc:
        raise HTTPException(status_code=413, detail=exc.message) from None
    except MultiPartException as exc:
        raise HTTPException(status_code=400, detail=f"malformed upload: {exc.message}") from None

    uploads = [v for k, v in form.multi_items() if k in FILE_FIELDS and isinstance(v, UploadFile)]
    if not uploads:
        others = sorted({k for k, v in form.multi_items() if isinstance(v, UploadFile)})
        await form.close()
        hint = f" (got files in {', '.join(map(repr, others))})" if others else ""
        raise HTTPException(
            status_code=400,
            detail=f"no image uploaded: send one or more files in the multipart field 'files'{hint}",
        )
    for k, v in form.multi_items():  # files under other names are not used: release them now
        if isinstance(v, UploadFile) and k not in FILE_FIELDS:
            await v.close()
    return uploads


class _ModelThread:
    """A single long-lived worker thread for the model, started on first use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future:
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferwild-model")
            return self._pool.submit(fn)

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _model_name(recognizer: Any) -> str:
    """What a recogniser reads with, for people: its source (``ferwild:<name>``, a run, a file)."""
    info = recognizer.info() if callable(getattr(recognizer, "info", None)) else {}
    return str(getattr(recognizer, "source", None) or info.get("source") or info.get("model") or "model")


# The live detector for each detector of the app's recogniser (others: the same): MTCNN is too
# slow for video (at 640 px, ~180 ms a frame on 2 cores, against ~15 ms for fast-tiled); the
# tiled BlazeFace finds the small faces of a group that the untiled one misses, as MTCNN does.
_LIVE_DETECTOR = {"mtcnn": "fast-tiled"}
_BLAZEFACE = frozenset(FAST_DETECTORS)


def live_detector_for(detector: str) -> str:
    """The detector of the live frames when the server's recogniser has ``detector`` and no
    ``live_detector`` is given: the same, except ``"fast-tiled"`` for ``"mtcnn"`` (names of
    :func:`ferwild.detectors.create_detector`; a custom detector's name is kept)."""
    return _LIVE_DETECTOR.get(detector, detector)


class _LiveModel:
    """The live recogniser (the app's, or the one given for live frames) behind the live
    detector (see :data:`_LIVE_DETECTOR`, unless told otherwise); built once, on first use (in
    the model thread: loading a detector must not hold up the event loop).

    A recogniser already behind that detector, or one that cannot change detector, is used as it
    is; else :meth:`ferwild.recognizer.Recognizer.with_detector` puts it behind it, sharing its
    classifier (with ``/predict``: both run under the same model lock) and keeping the threshold
    (``--min-confidence``) of the app's recogniser when that has the same detector, else of the
    live recogniser when its detector is of the same kind (BlazeFace, tiled or not).
    """

    def __init__(self, recognizer: Any, live_recognizer: Any = None, *, detector: str | None = None) -> None:
        self._base = recognizer if live_recognizer is None else live_recognizer
        app_detector = _detector_of(recognizer)
        base_detector = _detector_of(self._base)
        want = detector if detector is not None else None if app_detector is None else live_detector_for(app_detector)
        if want is None or not callable(getattr(self._base, "with_detector", None)):
            want = base_detector
        #: the detector the live frames go through (``/info``'s ``live_detector``)
        self.detector: str | None = want
        self._switch = want is not None and want != base_detector
        self._min_confidence = None
        if self._switch:
            like = recognizer if want == app_detector else self._base if {base_detector, want} <= _BLAZEFACE else None
            if like is not None and callable(getattr(like, "info", None)):
                self._min_confidence = like.info().get("min_confidence")
            elif want in _BLAZEFACE:
                # live frames: BlazeFace's video threshold, so an empty scene stays empty
                from ferwild.detectors.blazeface import VIDEO_MIN_CONFIDENCE

                self._min_confidence = VIDEO_MIN_CONFIDENCE
        self._model: Any = None
        self._error: str | None = None
        self._guard = threading.Lock()

    def get(self) -> Any:
        """The live recogniser; raises ``RuntimeError`` (every time) when it cannot be built."""
        with self._guard:
            if self._model is None and self._error is None:
                if not self._switch:
                    self._model = self._base
                else:
                    kw = {} if self._min_confidence is None else {"min_confidence": self._min_confidence}
                    try:
                        self._model = self._base.with_detector(self.detector, **kw)
                    except Exception as exc:  # noqa: BLE001 - e.g. ONNX Runtime missing: said per frame
                        self._error = (f"the {self.detector} face detector is not available: "
                                       f"{_short(first_line(exc), 200)}")
            if self._error is not None:
                raise RuntimeError(self._error)
            return self._model


def _detector_of(recognizer: Any) -> str | None:
    """A recogniser's detector name (``detector_name``, else ``info()["detector"]``), or None."""
    name = getattr(recognizer, "detector_name", None)
    if name is None and callable(getattr(recognizer, "info", None)):
        name = recognizer.info().get("detector")
    return None if name is None else str(name)


class _LiveSession:
    """One live connection's state: frame count, clock, face tracker and expression smoother."""

    def __init__(self, recognizer: Any) -> None:
        self._labels = list(recognizer.label_names)
        self._abstain_below = getattr(recognizer, "abstain_below", None)
        self.frames = 0
        self._t0: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every track (numbering restarts at 0) and every smoothed reading."""
        # a face may vanish for half a second (a hand, a turn of the head) at any frame rate,
        # and someone who steps out and back within 10 s gets their number back (the defaults)
        self.tracking = VideoTracker.at_frame_rate(self._labels, abstain_below=self._abstain_below)

    def next_frame(self) -> tuple[int, float]:
        """The next frame's number and its time: seconds since the connection's first frame,
        on the server's monotonic clock (when it arrived: the browser's clock is not ours)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        n, self.frames = self.frames, self.frames + 1
        return n, now - self._t0


def _is_reset(text: str | None) -> bool:
    """Whether a text message is ``{"reset": true}``."""
    try:
        obj = json.loads(text or "")
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("reset") is True


def _live_reply(frame: int | None, time_s: float | None, width: int, height: int, faces: list[dict],
                server_ms: float, error: str | None) -> dict[str, Any]:
    """One answer of ``/ws/live``."""
    return {"frame": frame, "time_s": None if time_s is None else round(time_s, 4), "width": width,
            "height": height, "faces": faces, "server_ms": round(server_ms, 3), "error": error}


def _decode(data: bytes, name: str, max_pixels: int) -> Any:
    """The image as an (H, W, 3) uint8 RGB array, or the reason it is unusable (a ``str``)."""
    try:
        return load_image_bytes(data, max_pixels=max_pixels, min_side=1, name=name).array
    except ImageRejected as exc:
        return exc.reason


def _error_result(source: str, reason: str) -> dict:
    """A result for a file that never reached the model, shaped like ``ImageResult.to_dict()``."""
    return ImageResult(source=source, width=0, height=0, faces=[], error=reason).to_dict()


_PATH_SEP = re.compile(r"[\\/]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _source_name(filename: str | None, index: int) -> str:
    """The file's base name (browsers may send ``C:\\fakepath\\x.jpg``), control chars removed."""
    name = _CONTROL.sub("", _PATH_SEP.split(filename or "")[-1]).strip()
    return _short(name, 200) if name else f"upload-{index + 1}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _mb(n_bytes: int) -> str:
    mb = n_bytes / (1024 * 1024)
    return f"{mb:.3g} MB" if mb < 10 else f"{math.floor(mb + 0.5)} MB"


def _page_headers(host: str | None) -> dict[str, str]:
    """The page's security headers. The live mode's WebSocket goes to the page's own host: CSP
    Level 3's ``'self'`` covers ``ws:``/``wss:`` to it, but older browsers (Safari before 15.4)
    need the host spelt out, so the ``Host`` the browser sent is named when it is a plain host
    (a name the browser itself typed: it can only narrow what this response allows). A Host CSP
    cannot spell (IPv6) falls back to any WebSocket (``ws: wss:``), still nothing else."""
    if host and _CSP_HOST.fullmatch(host):
        connect = f"'self' ws://{host} wss://{host}"
    else:
        connect = "'self' ws: wss:"
    return {"Content-Security-Policy": _CSP.format(connect=connect), **_PAGE_HEADERS}


def _static_response(name: str, host: str | None) -> Response:
    data = importlib.resources.files("ferwild").joinpath("static", name).read_bytes()
    return Response(content=data, media_type=_STATIC[name],
                    headers={**_page_headers(host), "Cache-Control": "no-cache"})


DOCS_ASSETS = "/docs-assets"

# The top of /docs and /redoc (Markdown): what OpenAPI cannot describe (the page, the WebSocket).
_API_DESCRIPTION = """\
Detect the faces in images and read their expressions. The web page is at [`/`](/); this API's
pages: [Swagger UI](/docs), [ReDoc](/redoc), [OpenAPI schema](/openapi.json).

* `POST /predict`: up to {max_files} images of at most {max_mb} each, as `multipart/form-data`
  in the field `files`; one result per file, in upload order.
* `WebSocket {live}` (not in OpenAPI, which has no WebSockets): live video, as the page's Live
  mode uses it. Send each frame as one *binary* message (an encoded JPEG, PNG or WebP image); each
  is answered, in order, by one JSON text message `{{"frame", "time_s", "width", "height",
  "faces", "server_ms", "error"}}`, its faces numbered by person across frames (`track`) with a
  smoothed reading (`smoothed`, `smoothed_label`). Face detector: `{detector}`. The text message
  `{{"reset": true}}` restarts the numbering.
"""


# /docs and /redoc load nothing from elsewhere either (ReDoc's footer would fetch its maker's logo
# from their CDN): their own inline start-up script and styles, this host's files, data:/blob:.
_DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
             "base-uri 'none'; frame-ancestors 'none'")


def _docs_page(page: HTMLResponse) -> HTMLResponse:
    page.headers.update({"Content-Security-Policy": _DOCS_CSP, **_PAGE_HEADERS})
    return page


def _docs_assets_dir() -> Any:
    """The folder of Swagger UI 5 and ReDoc 2 scripts shipped by the ``fastapi-offline`` package
    (both read the OpenAPI 3.1 document FastAPI writes; Swagger UI 4 cannot)."""
    return importlib.resources.files("fastapi_offline").joinpath("static")


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from the ``fastapi-offline``
    package's files, so the API pages work without a network."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(_docs_assets_dir())), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # no validator badge: it would send the schema's address to an online validator
        return _docs_page(get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} API",
                                              swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                              swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                              swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                                              swagger_ui_parameters={"validatorUrl": None}))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _docs_page(get_redoc_html(openapi_url=openapi_url, title=f"{app.title} API",
                                         redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                                         redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ferwild")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0"
