"""``ferwild live``: every face of a camera, a stream or a video file, read as it plays.

A grabber thread decodes the source with PyAV (FFmpeg: V4L2 / AVFoundation / DirectShow cameras,
RTSP/HTTP streams, files) and keeps only the newest frame, so a slow frame is *dropped*, never
queued: the reading stays at the present instead of lagging further behind. The main thread
reads each frame it takes (``Recognizer`` with the fast detector), numbers the people
(:class:`~ferwild.tracking.FaceTracker`), smooths each person's reading
(:class:`~ferwild.tracking.ExpressionSmoother`) and shows it in a window (OpenCV, when a display
and ``opencv-python`` are there) and/or records it with ``out``: ``live.mp4`` (annotated; a
fragmented MP4, playable even if the process is killed), ``frames.csv`` (one row per face and
frame, raw and smoothed probabilities, flushed as it goes) and ``summary.json`` (frames read,
processed and dropped, frames per second, why it stopped, memory).

It stops cleanly, writing what it has, at the end of a file, on Ctrl-C / SIGTERM / ``q`` in the
window, after ``max_frames`` or ``duration_s``, and with a clear message when the camera is
missing, busy or unplugged, when a stream stalls (no frame for ``stall_timeout_s``) or when a
video is corrupt.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferwild.formatting import first_line
from ferwild.recognizer import ImageResult, Recognizer, draw_result, face_colour, video_open_error
from ferwild.tracking import ExpressionSmoother, FaceTracker

__all__ = ["LiveConfig", "LiveError", "FrameGrabber", "describe_source", "draw_live", "run_live"]


class LiveError(RuntimeError):
    """A source that cannot be read (one clear line for the user)."""


@dataclass
class LiveConfig:
    """How ``ferwild live`` runs.

    ``out``: folder for ``live.mp4``, ``frames.csv``, ``summary.json`` (None: nothing written).
    ``window``: show a window (None: when a display and OpenCV are there). ``pace``: read a
    *file* at its own frame rate, as a camera would deliver it (None/True), or as fast as it
    decodes with no frame dropped (False: for long videos and benchmarks). ``loop``: start a
    file over at its end (a long stream from a short clip). ``record``: write the annotated
    video when ``out`` is given. ``half_life_s`` / ``switch_margin``: the smoother's.
    """

    out: Path | None = None
    window: bool | None = None
    pace: bool | None = None
    loop: bool = False
    max_frames: int | None = None
    duration_s: float | None = None
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 10.0
    record: bool = True
    half_life_s: float = 0.25
    switch_margin: float = 0.1
    status_every_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if not self.stall_timeout_s > 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
        if not self.open_timeout_s > 0:
            raise ValueError(f"open_timeout_s must be > 0, got {self.open_timeout_s}")
        if self.out is not None:
            self.out = Path(self.out)


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What ``av.open`` gets for a user's SOURCE, and how to name it in messages."""

    target: str
    format: str | None
    name: str
    kind: str  # "camera" | "stream" | "file"


def describe_source(source: str | int) -> Source:
    """A camera index (``0``), a device (``/dev/video2``), a stream URL (``rtsp://...``) or a file."""
    text = str(source).strip()
    if text.isdigit():
        index = int(text)
        if sys.platform.startswith("linux"):
            return Source(f"/dev/video{index}", "v4l2", f"camera {index} (/dev/video{index})", "camera")
        if sys.platform == "darwin":
            return Source(str(index), "avfoundation", f"camera {index}", "camera")
        if sys.platform == "win32":
            raise LiveError("on Windows give the camera by name: ferwild live \"video=Integrated Camera\" "
                            "(ffmpeg -list_devices true -f dshow -i dummy lists them)")
        raise LiveError(f"no camera support on {sys.platform}; give a stream URL or a video file")
    if text.startswith("/dev/video"):
        return Source(text, "v4l2", f"camera {text}", "camera")
    if text.startswith("video="):
        return Source(text, "dshow", f"camera {text[6:]}", "camera")
    if "://" in text:
        return Source(text, None, text, "stream")
    return Source(text, None, text, "file")


def _open(source: Source, open_timeout_s: float, read_timeout_s: float):
    """``av.open`` with messages that say what is wrong with a camera, stream or file."""
    import av

    if source.kind == "file" and not Path(source.target).is_file():
        raise LiveError(f"{source.name}: no such video file")
    if source.kind == "camera" and source.format == "v4l2" and not Path(source.target).exists():
        raise LiveError(f"{source.name} not found: no such camera on this machine (is it plugged in? "
                        "`v4l2-ctl --list-devices` lists cameras)")
    try:
        container = av.open(source.target, format=source.format, timeout=(open_timeout_s, read_timeout_s))
    except Exception as exc:  # noqa: BLE001 - av raises many OSError subclasses; say which case it is
        code = getattr(exc, "errno", None)
        if source.kind == "camera" and code == errno.EBUSY:
            raise LiveError(f"{source.name} is busy: another program is using it (close it and try again)") from None
        if source.kind == "camera" and code in (errno.EACCES, errno.EPERM):
            raise LiveError(f"{source.name}: permission denied (on Linux: add yourself to the 'video' group)") from None
        if source.kind == "camera" and code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise LiveError(f"{source.name} not found: no such camera on this machine") from None
        raise LiveError(video_open_error(source.name, exc)) from None
    if not container.streams.video:
        container.close()
        raise LiveError(f"{source.name}: has no video stream")
    return container


class _Stalled(Exception):
    pass


class FrameGrabber(threading.Thread):
    """Decodes a source in its own thread.

    With ``drop`` (live use) only the newest frame is kept: a frame not taken before the next one
    arrives is counted in :attr:`dropped`. Without it every frame is handed over (the decoder
    waits for the reader: long videos, benchmarks). ``pace`` releases a file's frames at their
    timestamps, as a camera would; ``loop`` starts a file over at its end, its times running on.
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
        self.rate: float | None = None  # the source's nominal frames per second
        self.container = _open(source, open_timeout_s, read_timeout_s)  # fail here, in the caller's thread
        rate = self.container.streams.video[0].average_rate
        self.rate = float(rate) if rate else None

    def stop(self) -> None:
        """Ask the thread to finish (it may be blocked in the decoder until the read timeout)."""
        self._halt.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        offset, container = 0.0, self.container
        started = time.monotonic()
        try:
            while not self._halt.is_set():
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                last = 0.0
                first: float | None = None
                for frame in container.decode(stream):
                    if self._halt.is_set():
                        break
                    t = float(frame.time) if frame.time is not None else self.decoded / (self.rate or 30.0)
                    first = t if first is None else first
                    last = t
                    t = offset + t - first
                    if self.pace:
                        wait = started + t - time.monotonic()
                        if wait > 0 and self._halt.wait(wait):
                            break
                    rgb = frame.to_ndarray(format="rgb24")
                    self._put((self.decoded, t, rgb, None if self.prepare is None else self.prepare(rgb)))
                    self.decoded += 1
                if not (self.loop and self.source.kind == "file") or self._halt.is_set():
                    break
                container.close()
                offset += last - (first or 0.0) + 1.0 / (self.rate or 30.0)
                container = self.container = _open(self.source, self.open_timeout_s, self.read_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported by the reader, never a traceback
            self.error = self._explain(exc)
        finally:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass
            with self._cond:
                self.done = True
                self._cond.notify_all()

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
        Raises ``_Stalled`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self.done:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Stalled()
                self._cond.wait(left)
            item, self._slot = self._slot, None
            self._cond.notify_all()
            return item


# ------------------------------------------------------------------------------------------------
# drawing, window, outputs
# ------------------------------------------------------------------------------------------------


def draw_live(rgb: np.ndarray, result: ImageResult, label_names: list[str], status: str = "", max_panels: int = 4):
    """The frame with boxes and tags (:func:`~ferwild.recognizer.draw_result`) and, in a strip on
    its right, each person's smoothed probabilities as bars (the largest ``max_panels`` faces),
    ``status`` (frame rate, drops) on top of the strip. Returns a PIL RGB image."""
    from PIL import Image, ImageDraw, ImageFont

    frame = draw_result(rgb, result)
    h = frame.height
    font_size = max(11, round(h / 40))
    font = ImageFont.load_default(size=font_size)
    strip_w = max(180, round(h * 0.55))
    canvas = Image.new("RGB", (frame.width + strip_w, h), (24, 24, 24))
    canvas.paste(frame, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = frame.width + 8, 6
    if status:
        draw.text((x0, y), status, fill=(230, 230, 230), font=font)
        y += font_size + 8
    line = font_size + 3
    bar_x = x0 + round(strip_w * 0.45)
    bar_w = strip_w - (bar_x - frame.width) - 10
    for i, face in enumerate(result.faces[:max_panels]):
        if y + line * (len(label_names) + 1) > h:
            break
        colour = face_colour(i if face.track is None else face.track)
        probs = face.smoothed or face.probabilities
        title = f"person {face.track}" if face.track is not None else f"face {i + 1}"
        draw.rectangle([x0, y + 2, x0 + 10, y + font_size], fill=colour)
        draw.text((x0 + 16, y), f"{title}: {face.smoothed_label or face.label}", fill=(255, 255, 255), font=font)
        y += line + 2
        for name in label_names:
            p = float(probs.get(name, 0.0))
            draw.text((x0, y), name[:10], fill=(200, 200, 200), font=font)
            draw.rectangle([bar_x, y + 3, bar_x + bar_w, y + font_size - 1], outline=(90, 90, 90))
            draw.rectangle([bar_x, y + 3, bar_x + max(1, round(bar_w * p)), y + font_size - 1], fill=colour)
            y += line
        y += 6
    return canvas


def _display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Window:
    """An OpenCV window (``opencv-python``); ``q`` or Esc asks to stop."""

    def __init__(self, title: str) -> None:
        import cv2  # optional: pip install "ferwild[live]"

        self.cv2, self.title = cv2, title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, image) -> bool:
        """Show a PIL image; False when the user asked to stop (q, Esc, window closed)."""
        cv2 = self.cv2
        cv2.imshow(self.title, np.asarray(image)[:, :, ::-1])
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return not (key in (ord("q"), 27) or closed)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


class _Recorder:
    """``live.mp4`` (fragmented: playable after a crash) and ``frames.csv`` (flushed as it goes)."""

    def __init__(self, out: Path, label_names: list[str], fps: float, record: bool) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.label_names, self.fps, self.record = out, label_names, fps, record
        self._csv_file = open(out / "frames.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["frame", "time_s", "face", "track", "x1", "y1", "x2", "y2", "detection_confidence",
                            "label", "confidence", "smoothed_label"] + [f"prob_{n}" for n in label_names]
                           + [f"smoothed_{n}" for n in label_names])
        self._rows = 0
        self._video = None
        self._stream = None

    def write(self, result: ImageResult, annotated) -> None:
        if not result.faces:
            self._csv.writerow([result.frame, f"{result.time_s:.4f}"] + [""] * (10 + 2 * len(self.label_names)))
        for k, face in enumerate(result.faces):
            smoothed = face.smoothed or {}
            self._csv.writerow(
                [result.frame, f"{result.time_s:.4f}", k, face.track] + [f"{v:.1f}" for v in face.box]
                + ["" if face.detection_confidence is None else f"{face.detection_confidence:.4f}",
                   face.label, f"{face.confidence:.4f}", face.smoothed_label or ""]
                + [f"{face.probabilities[n]:.4f}" for n in self.label_names]
                + [f"{smoothed[n]:.4f}" if n in smoothed else "" for n in self.label_names])
        self._rows += 1
        if self._rows % 30 == 0:
            self._csv_file.flush()
        if self.record and annotated is not None:
            self._encode(annotated)

    def _encode(self, annotated) -> None:
        import av

        image = np.asarray(annotated)
        h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
        if self._video is None:
            from fractions import Fraction

            self._video = av.open(str(self.out / "live.mp4"), mode="w",
                                  options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
            self._stream = self._video.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.pix_fmt = "yuv420p"
            self._stream.width, self._stream.height = w, h
            # fast encoding: the recording must not eat the frame budget of the reading itself
            self._stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._video.mux(packet)

    def close(self) -> None:
        self._csv_file.close()
        if self._video is not None:
            try:
                for packet in self._stream.encode():
                    self._video.mux(packet)
            finally:
                self._video.close()


def _rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


class _FlickerMeter:
    """Label changes per second of track time, raw and smoothed, kept as counters (no history)."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[float, str, str | None]] = {}
        self.first: dict[int, float] = {}
        self.raw = self.smoothed = 0

    def add(self, result: ImageResult) -> None:
        for face in result.faces:
            if face.track is None:
                continue
            prev = self.last.get(face.track)
            if prev is not None:
                self.raw += prev[1] != face.label
                self.smoothed += prev[2] != face.smoothed_label
            else:
                self.first[face.track] = float(result.time_s or 0.0)
            self.last[face.track] = (float(result.time_s or 0.0), face.label, face.smoothed_label)

    def summary(self) -> dict[str, float]:
        seconds = sum(self.last[t][0] - self.first[t] for t in self.last)
        per_s = (lambda n: round(n / seconds, 4) if seconds > 0 else 0.0)  # noqa: E731
        return {"track_seconds": round(seconds, 2), "label_changes_raw": self.raw,
                "label_changes_smoothed": self.smoothed, "changes_per_s_raw": per_s(self.raw),
                "changes_per_s_smoothed": per_s(self.smoothed)}


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


def run_live(recognizer: Recognizer, source: str | int, config: LiveConfig | None = None, *,
             log: Callable[[str], None] = print, on_frame: Callable[[ImageResult], None] | None = None
             ) -> dict[str, Any]:
    """Read every face of ``source`` as it plays until it ends or is stopped; returns the summary
    (also ``OUT/summary.json``). See the module docstring for what is written and when it stops.

    Raises:
        LiveError: the source cannot be opened (missing, busy, not a video), or there is neither a
            window nor ``out`` to show the reading in.
    """
    config = config or LiveConfig()
    src = describe_source(source)
    window_wanted = config.window if config.window is not None else (_display_available() and _has_cv2())
    if config.window and not _display_available():
        raise LiveError("no display here for a window: record with --out DIR instead (or set DISPLAY)")
    if config.window and not _has_cv2():
        raise LiveError("a window needs OpenCV: pip install \"ferwild[live]\" (or record with --out DIR)")
    if not window_wanted and config.out is None:
        raise LiveError("no display here (or no OpenCV) and no --out: nowhere to show the reading; "
                        "give --out DIR to record the annotated video and the per-frame CSV")
    pace = src.kind == "file" and (config.pace is None or config.pace)
    drop = src.kind != "file" or pace  # a camera does not wait; an unpaced file hands over every frame
    # two stages on two cores: decode and detect in the grabber's thread; align, classify, track,
    # smooth, draw and record here
    detector = recognizer.detector
    grabber = FrameGrabber(src, drop=drop, pace=pace, loop=config.loop, open_timeout_s=config.open_timeout_s,
                           read_timeout_s=config.stall_timeout_s,
                           prepare=None if detector is None else (lambda rgb: detector.detect([rgb])[0]))
    fps_hint = grabber.rate or 30.0
    tracker = FaceTracker(max_missed=max(3, round(fps_hint / 2)), max_lost_s=1.0, reentry_s=10.0)
    smoother = ExpressionSmoother(recognizer.label_names, half_life_s=config.half_life_s,
                                  switch_margin=config.switch_margin, frame_s=1.0 / fps_hint,
                                  abstain_below=recognizer.abstain_below)
    recorder = _Recorder(config.out, recognizer.label_names, fps_hint, config.record) if config.out else None
    window = _Window(f"ferwild live: {src.name}") if window_wanted else None
    flicker = _FlickerMeter()
    stop_reason, error = "end of source", None
    processed, faces_seen = 0, 0
    recent: deque[float] = deque(maxlen=120)
    rss_start = _rss_mb()
    rss_samples: list[tuple[float, float]] = []
    started = time.monotonic()
    next_status = started + config.status_every_s
    stop_flag = _StopFlag()
    previous_handlers = _on_signals(stop_flag)
    grabber.start()
    log(f"reading {src.name} with {recognizer.detector_name} detection "
        f"({'as it plays, dropping frames rather than lag' if drop else 'every frame'}); "
        f"stop with {'q in the window or ' if window else ''}Ctrl-C")
    try:
        while True:
            try:
                item = _take(grabber, config.stall_timeout_s, stop_flag)
            except _Stalled:
                stop_reason, error = "stalled", f"{src.name}: no frame for {config.stall_timeout_s:.0f} s (stalled)"
                break
            if stop_flag.is_set():
                stop_reason = stop_flag.reason
                break
            if item is None:
                if grabber.error:
                    stop_reason, error = "source error", grabber.error
                break
            index, t, rgb, detections = item
            if detector is None:
                result = recognizer.analyze([rgb], sources=[src.name])[0]
            else:
                result = recognizer.analyze_detected(rgb, detections, source=src.name)
            result.frame, result.time_s = index, t
            tracker.update(result)
            smoother.update(result)
            flicker.add(result)
            processed += 1
            faces_seen += len(result.faces)
            now = time.monotonic()
            recent.append(now)
            span = recent[-1] - recent[0]
            fps_now = (len(recent) - 1) / span if span > 0 else 0.0
            annotated = None
            if window is not None or (recorder is not None and config.record):
                status = f"{fps_now:.1f} fps, {grabber.dropped} dropped"
                annotated = draw_live(rgb, result, recognizer.label_names, status)
            if recorder is not None:
                recorder.write(result, annotated)
            if on_frame is not None:
                on_frame(result)
            if window is not None and not window.show(annotated):
                stop_reason = "stopped (q)"
                break
            if now >= next_status:
                next_status = now + config.status_every_s
                rss_samples.append((round(now - started, 1), round(_rss_mb(), 1)))
                if len(rss_samples) > 400:  # a long run keeps its whole curve, thinned: memory stays flat
                    rss_samples = rss_samples[::2]
                log(f"  {processed} frames, {fps_now:.1f} frames/s, {grabber.dropped} dropped, "
                    f"{len(result.faces)} face(s) now")
            if config.max_frames is not None and processed >= config.max_frames:
                stop_reason = "max_frames"
                break
            if config.duration_s is not None and now - started >= config.duration_s:
                stop_reason = "duration"
                break
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread's handler
        stop_reason = "stopped (Ctrl-C)"
    finally:
        grabber.stop()
        seconds = time.monotonic() - started
        if window is not None:
            window.close()
        if recorder is not None:
            recorder.close()
        _restore_signals(previous_handlers)
        grabber.join(timeout=2.0)
    summary = {
        "source": src.name, "kind": src.kind, "detector": recognizer.detector_name,
        "model": recognizer.source or recognizer.info().get("model", ""),
        "frames_decoded": grabber.decoded, "frames_processed": processed, "frames_dropped": grabber.dropped,
        "faces": faces_seen, "seconds": round(seconds, 3),
        "fps_processed": round(processed / seconds, 2) if seconds > 0 else 0.0,
        "fps_source": grabber.rate, "paced": pace, "stop_reason": stop_reason, "error": error,
        "flicker": flicker.summary(), "tracks": len(flicker.last),
        "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(_rss_mb(), 1), "rss_mb_samples": rss_samples,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    if config.out is not None:
        tmp = config.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, config.out / "summary.json")
    return summary


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken (e.g. no libGL): no window
        return False
    return True


class _StopFlag(threading.Event):
    """Set by Ctrl-C / SIGTERM; says which."""

    reason = ""

    def stop(self, reason: str) -> None:
        if self.is_set():  # a second Ctrl-C: the user insists, stop now
            raise KeyboardInterrupt
        self.reason = reason
        self.set()


def _take(grabber: FrameGrabber, stall_timeout_s: float, stop_flag: _StopFlag):
    """The next frame, waiting at most ``stall_timeout_s`` in short slices so that a stop request
    is seen at once; None at the end of the source or when asked to stop."""
    deadline = time.monotonic() + stall_timeout_s
    while not stop_flag.is_set():
        try:
            return grabber.take(min(0.2, max(0.0, deadline - time.monotonic())))
        except _Stalled:
            if time.monotonic() >= deadline:
                raise
    return None


def _on_signals(flag: _StopFlag) -> dict:
    """Ctrl-C and SIGTERM stop the loop *between* frames (a frame is read, recorded and written
    whole, and the outputs are closed properly); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: flag.stop("stopped (Ctrl-C)")),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: flag.stop("stopped (SIGTERM)"))}


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
