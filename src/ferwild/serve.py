"""The HTTP service behind ``ferwild serve``: a JSON API and a small web page.

Endpoints (all JSON except ``/`` and ``/static/*``):

* ``GET /`` -- the web page (``ferwild/static/index.html`` + ``app.js`` + ``style.css``; no
  external resources, so it works on a machine without internet).
* ``GET /health`` -- ``{"status": "ok"}``.
* ``GET /info`` -- ``recognizer.info()`` plus ``labels`` (the class names, in class-id order) and
  ``limits`` (``max_files``, ``max_upload_mb``, ``max_upload_bytes``, ``max_pixels``).
* ``POST /predict`` -- ``multipart/form-data`` with one or more images in the field ``files``
  (a single ``file`` field is accepted too). Answers
  ``{"results": [ImageResult.to_dict(), ...], "elapsed_ms": float}``, one result per uploaded
  file, in upload order. A file that is not a usable image (empty, truncated, not an image,
  too many pixels) gets its own ``error`` while the others are analysed: the batch is still
  HTTP 200. Errors of the request itself: 400 (not multipart, no file, malformed multipart),
  413 (a file over ``max_upload_mb``, more than ``max_files`` files, or a body too large).

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
  concurrent requests queue for it without blocking the event loop or holding worker threads,
  never run the model concurrently, and torch's per-thread state (its OpenMP/MKL thread teams)
  is not rebuilt whenever a short-lived pool thread comes and goes. Decoding runs in anyio
  worker threads, in parallel and outside the model thread.
"""

from __future__ import annotations

import asyncio
import importlib.resources
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
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ferwild.data.images import ImageRejected, load_image_bytes
from ferwild.recognizer import ImageResult

__all__ = ["DEFAULT_MAX_PIXELS", "FILE_FIELDS", "create_app", "serve"]

#: Images whose header declares more pixels than this are refused before decoding (50 MP: a
#: modern phone photo fits, a decompression bomb does not; PIL's own limit is ~89 MP).
DEFAULT_MAX_PIXELS = 50_000_000

#: Form fields that carry images. Files under any other field name are ignored.
FILE_FIELDS = ("files", "file")

# Web page assets served from the package (ferwild/static), with their media types.
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads nothing from elsewhere; the webcam preview is a MediaStream, the drawn image a
# blob: URL / ImageBitmap.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

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
    return info


def create_app(
    recognizer: Any,
    *,
    max_upload_mb: float = 20,
    max_files: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """Build the FastAPI app serving ``recognizer`` (a :class:`ferwild.recognizer.Recognizer`).

    Args:
        recognizer: anything with ``label_names``, ``info()`` and
            ``analyze(images, sources=...)`` returning results with ``to_dict()``.
        max_upload_mb: largest accepted file, in MiB (413 above it).
        max_files: most images per ``/predict`` request (413 above it).
        max_pixels: images whose header declares more pixels are refused before decoding
            (that file's ``error``; PIL's own ``Image.MAX_IMAGE_PIXELS`` is never loosened).
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        model_thread.close()

    app = FastAPI(
        title="ferwild",
        summary="Facial expression recognition in the wild",
        version=_version(),
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: blank pages offline.
        docs_url=None,
        redoc_url=None,
    )
    _add_offline_docs(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> Response:
        return _static_response("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(status_code=404, detail="not found")
        return _static_response(name)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    def get_info() -> JSONResponse:
        return JSONResponse(info)

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

    return app


def serve(
    recognizer: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_upload_mb: float = 20,
    max_files: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log_level: str = "info",
    **uvicorn_kw: Any,
) -> None:
    """Serve ``recognizer`` with uvicorn until interrupted (one process: the model is loaded once).

    Extra keyword arguments go to ``uvicorn.run`` (e.g. ``access_log=False``,
    ``ssl_certfile=...``).
    """
    import uvicorn

    app = create_app(recognizer, max_upload_mb=max_upload_mb, max_files=max_files,
                     max_pixels=max_pixels)
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


def _static_response(name: str) -> Response:
    data = importlib.resources.files("ferwild").joinpath("static", name).read_bytes()
    return Response(content=data, media_type=_STATIC[name],
                    headers={**_PAGE_HEADERS, "Cache-Control": "no-cache"})


DOCS_ASSETS = "/docs-assets"


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) served from the ``swagger-ui-bundle`` package's files, so the API
    page works without a network; ``/redoc`` is off (no pip package ships its script)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ferwild")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0"
