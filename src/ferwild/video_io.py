"""Video in and out with PyAV (FFmpeg): open a file, camera or stream, decode its frames, write H.264.

One decoder (:func:`decode_frames`) and two hand-offs of its frames to the reader:

* :func:`prefetch` over :func:`iter_video_frames`: a bounded queue, every frame kept
  (``ferwild predict`` and :meth:`ferwild.recognizer.Recognizer.analyze_video`);
* :class:`FrameGrabber`: only the newest frame kept, a slow reader's missed frames dropped
  (``ferwild live``), or every frame handed over one at a time (``drop=False``).

:class:`VideoWriter` encodes annotated frames as H.264 MP4 (yuv420p: plays in browsers), either
written whole and renamed into place (``ferwild predict``) or fragmented as it goes, playable even
if the process is killed (``ferwild live``). Every message about a video that cannot be read
comes from here, as a :class:`VideoError`.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferwild.formatting import first_line

__all__ = ["FrameGrabber", "Source", "Stalled", "VideoError", "VideoWriter", "decode_frames", "describe_source",
           "iter_video_frames", "open_source", "open_video", "prefetch", "video_frame_rate", "video_open_error"]


class VideoError(ValueError):
    """A video, camera or stream that cannot be opened (one clear line for the user)."""


# ------------------------------------------------------------------------------------------------
# opening
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What ``av.open`` gets for a user's SOURCE, and how to name it in messages."""

    target: str
    format: str | None
    name: str
    kind: str  # "camera" | "stream" | "file"


def describe_source(source: str | int) -> Source:
    """A camera index (``0``), a device (``/dev/video2``), a stream URL (``rtsp://...``) or a file.

    Raises:
        VideoError: a camera index on a platform without camera support by index.
    """
    text = str(source).strip()
    if text.isdigit():
        index = int(text)
        if sys.platform.startswith("linux"):
            return Source(f"/dev/video{index}", "v4l2", f"camera {index} (/dev/video{index})", "camera")
        if sys.platform == "darwin":
            return Source(str(index), "avfoundation", f"camera {index}", "camera")
        if sys.platform == "win32":
            raise VideoError("on Windows give the camera by name: ferwild live \"video=Integrated Camera\" "
                             "(ffmpeg -list_devices true -f dshow -i dummy lists them)")
        raise VideoError(f"no camera support on {sys.platform}; give a stream URL or a video file")
    if text.startswith("/dev/video"):
        return Source(text, "v4l2", f"camera {text}", "camera")
    if text.startswith("video="):
        return Source(text, "dshow", f"camera {text[6:]}", "camera")
    if "://" in text:
        return Source(text, None, text, "stream")
    return Source(text, None, text, "file")


def video_open_error(name: str, exc: BaseException) -> str:
    """Why ``av.open(name)`` failed, in words: a file FFmpeg cannot decode (a text file renamed
    ``.mp4``) is "not a video file"; PyAV's raw text is logged at DEBUG (``ferwild ... --verbose``)."""
    import av

    logging.getLogger(__name__).debug("%s: %s", name, first_line(exc))
    if isinstance(exc, av.error.InvalidDataError) and Path(name).is_file():
        return f"{name}: cannot open as a video: not a video file (could not decode)"
    return f"{name}: cannot open as a video ({first_line(exc)})"


def _camera_open_error(name: str, exc: BaseException) -> str | None:
    """What a camera's ``errno`` says (busy, not allowed, not there), or None for another error."""
    code = getattr(exc, "errno", None)
    if code == errno.EBUSY:
        return f"{name} is busy: another program is using it (close it and try again)"
    if code in (errno.EACCES, errno.EPERM):
        return f"{name}: permission denied (on Linux: add yourself to the 'video' group)"
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"{name} not found: no such camera on this machine"
    return None


def open_source(source: Source, open_timeout_s: float | None = None, read_timeout_s: float | None = None):
    """``av.open`` of a file, camera or stream, with messages that say what is wrong with it.

    Raises:
        VideoError: a missing file or camera, a busy or forbidden camera, not a video, no video stream.
    """
    import av

    if source.kind == "file" and not Path(source.target).is_file():
        raise VideoError(f"{source.name}: no such video file")
    if source.kind == "camera" and source.format == "v4l2" and not Path(source.target).exists():
        raise VideoError(f"{source.name} not found: no such camera on this machine (is it plugged in? "
                         "`v4l2-ctl --list-devices` lists cameras)")
    timeout = None if open_timeout_s is None else (open_timeout_s, read_timeout_s)
    try:
        container = av.open(source.target, format=source.format, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - av raises many OSError subclasses; say which case it is
        said = _camera_open_error(source.name, exc) if source.kind == "camera" else None
        raise VideoError(said or video_open_error(source.name, exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source.name}: has no video stream")
    return container


def open_video(path: str | os.PathLike):
    """``av.open`` of a video file (:func:`open_source` for a file named by its path)."""
    name = os.fspath(path)
    return open_source(Source(name, None, name, "file"))


def video_frame_rate(path: str | os.PathLike) -> float | None:
    """A video file's nominal frames per second (None when the file does not say)."""
    container = open_video(path)
    try:
        rate = container.streams.video[0].average_rate
    finally:
        container.close()
    return float(rate) if rate else None


# ------------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------------


def decode_frames(container) -> Iterator[tuple[float | None, np.ndarray]]:
    """The frames of an open container's first video stream: ``(time in seconds or None, (H, W, 3)
    uint8 RGB)``. Errors part-way through come out as PyAV's."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-level threads: decoding keeps up with the model on 2 cores
    for frame in container.decode(stream):
        yield (None if frame.time is None else float(frame.time)), frame.to_ndarray(format="rgb24")


def iter_video_frames(path: str | os.PathLike) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """Decode a video file: ``(frame index, time in seconds or None, (H, W, 3) uint8 RGB)``.

    Raises:
        VideoError: when the file is missing, not a video, or has no video stream (raised at the
            first ``next``). Errors part-way through come out of ``next`` as PyAV errors.
    """
    container = open_video(path)
    try:
        for index, (time_s, rgb) in enumerate(decode_frames(container)):
            yield index, time_s, rgb
    finally:
        container.close()


def prefetch(iterator: Iterator[Any], depth: int = 8) -> Iterator[Any]:
    """``iterator``'s items, produced in a thread of their own up to ``depth`` ahead (decoding
    overlaps the model on a second core); none is dropped. An exception of the iterator is raised
    where it happened in the sequence; closing the generator stops the thread."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            items.put((False, exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if stop.is_set() and close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
        items.put((True, end))

    thread = threading.Thread(target=work, name="ferwild-decode", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)


class Stalled(Exception):
    """No frame came from a :class:`FrameGrabber` within the time asked."""


class FrameGrabber(threading.Thread):
    """Decodes a source in its own thread.

    With ``drop`` (live use) only the newest frame is kept: a frame not taken before the next one
    arrives is counted in :attr:`dropped`. Without it every frame is handed over (the decoder
    waits for the reader: long videos, benchmarks). ``pace`` releases a file's frames at their
    timestamps, as a camera would; ``loop`` starts a file over at its end, its times running on.

    Raises:
        VideoError: the source cannot be opened (in the constructor, in the caller's thread).
    """

    def __init__(self, source: Source, *, drop: bool, pace: bool, loop: bool = False,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                 prepare: Callable[[np.ndarray], Any] | None = None) -> None:
        super().__init__(name="ferwild-grabber", daemon=True)
        self.source, self.drop, self.pace, self.loop = source, drop, pace, loop
        # work done on each frame in this thread (face detection): a two-stage pipeline on two cores
        self.prepare = prepare
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self._cond = threading.Condition()
        self._slot: tuple[int, float, np.ndarray, Any] | None = None
        self._halt = threading.Event()
        self.done = False
        self.error: str | None = None
        self.decoded = 0
        self.dropped = 0
        self.container = open_source(source, open_timeout_s, read_timeout_s)
        rate = self.container.streams.video[0].average_rate
        self.rate: float | None = float(rate) if rate else None  # the source's nominal frames per second

    def stop(self) -> None:
        """Ask the thread to finish (it may be blocked in the decoder until the read timeout)."""
        self._halt.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        offset, started = 0.0, time.monotonic()
        try:
            while not self._halt.is_set():
                span = self._play(offset, started)
                if not (self.loop and self.source.kind == "file") or self._halt.is_set():
                    break
                self.container.close()
                offset += span + 1.0 / (self.rate or 30.0)
                self.container = open_source(self.source, self.open_timeout_s, self.read_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported by the reader, never a traceback
            self.error = self._explain(exc)
        finally:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001
                pass
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def _play(self, offset: float, started: float) -> float:
        """Hand over the frames of the open container once, their times shifted to start at
        ``offset``; returns the time they spanned."""
        first: float | None = None
        last = 0.0
        frames = decode_frames(self.container)
        if self.prepare is not None:
            # three stages on two cores: decoding (FFmpeg, mostly outside the GIL) runs one frame
            # ahead of the detection in this thread, so neither waits for the other; one frame,
            # so that a camera's reading stays at most a frame behind the present
            frames = prefetch(frames, depth=1)
        try:
            for time_s, rgb in frames:
                if self._halt.is_set():
                    break
                last = time_s if time_s is not None else self.decoded / (self.rate or 30.0)
                first = last if first is None else first
                t = offset + last - first
                wait = started + t - time.monotonic()
                if self.pace and wait > 0 and self._halt.wait(wait):
                    break
                self._put((self.decoded, t, rgb, None if self.prepare is None else self.prepare(rgb)))
                self.decoded += 1
        finally:
            frames.close()  # a prefetching thread stops before its container closes
        return last - (first or 0.0)

    def _explain(self, exc: Exception) -> str:
        code = getattr(exc, "errno", None)
        if self.source.kind == "camera":
            return (f"{self.source.name} stopped delivering frames (unplugged?): {first_line(exc)}"
                    if code in (errno.ENODEV, errno.EIO, errno.ENXIO, None) else
                    f"{self.source.name} failed: {first_line(exc)}")
        if code == errno.ETIMEDOUT or "timed out" in str(exc).lower():
            return f"{self.source.name}: the stream stalled (no data for {self.read_timeout_s:.0f} s)"
        return f"{self.source.name}: decoding stopped after {self.decoded} frames ({first_line(exc)})"

    def _put(self, item: tuple[int, float, np.ndarray, Any]) -> None:
        with self._cond:
            if self.drop:
                if self._slot is not None:
                    self.dropped += 1
            else:
                while self._slot is not None and not self._halt.is_set():
                    self._cond.wait(0.1)
            self._slot = item
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[int, float, np.ndarray, Any] | None:
        """The next (newest) ``(index, time_s, rgb, prepared)``; None at the end of the source.

        Raises:
            Stalled: no frame within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self.done:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Stalled()
                self._cond.wait(left)
            item, self._slot = self._slot, None
            self._cond.notify_all()
            return item


# ------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------


class VideoWriter:
    """Frames -> an H.264 MP4 (yuv420p, so it plays in browsers; odd sides are cropped to even).

    By default the file is written under a temporary name and renamed into place on
    :meth:`close` (no file when no frame was added). With ``live`` it is written in place as a
    fragmented MP4, playable even if the process is killed, and encoded fast (the recording
    must not eat the frame budget of the reading itself).
    """

    def __init__(self, target: str | os.PathLike, fps: float, *, live: bool = False) -> None:
        self.target, self.fps, self.live = Path(target), float(fps), live
        self.tmp = self.target if live else self.target.with_name(f".{self.target.name}.tmp.mp4")
        self.container = None
        self.stream = None

    def _start(self, width: int, height: int) -> None:
        from fractions import Fraction

        import av

        self.target.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if self.live else {}
        self.container = av.open(str(self.tmp), mode="w", options=options)
        self.stream = self.container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
        self.stream.pix_fmt = "yuv420p"
        self.stream.width, self.stream.height = width, height
        if self.live:
            self.stream.options = {"preset": "veryfast", "tune": "zerolatency"}

    def add(self, image) -> None:
        """Encode one frame: a PIL image (e.g. from :func:`ferwild.drawing.draw_result`) or an
        ``(H, W, 3)`` uint8 RGB array."""
        import av

        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        h, w = (arr.shape[0] // 2) * 2, (arr.shape[1] // 2) * 2  # yuv420p needs even sides
        if self.container is None:
            self._start(w, h)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file (renamed into place unless ``live``)."""
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
        if self.tmp != self.target:
            os.replace(self.tmp, self.target)
