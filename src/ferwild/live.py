"""``ferwild live``: every face of a camera, a stream or a video file, read as it plays.

A grabber thread (:class:`ferwild.video_io.FrameGrabber`) decodes the source with PyAV (FFmpeg:
V4L2 / AVFoundation / DirectShow cameras, RTSP/HTTP streams, files) and keeps only the newest frame, so a slow frame is *dropped*, never
queued: the reading stays at the present instead of lagging further behind. The main thread
reads each frame it takes (:func:`live_recognizer`: ONNX Runtime with the fast detector), numbers
the people and smooths each person's reading (:class:`~ferwild.tracking.VideoTracker`), draws it
(:func:`ferwild.drawing.draw_live`) and shows it in a window (OpenCV, when a display
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
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferwild.detectors import FAST_DETECTORS
from ferwild.drawing import draw_live
from ferwild.face_tables import face_rows, frames_columns, frames_csv_row
from ferwild.recognizer import ImageResult, Recognizer, RecognizerError
from ferwild.tracking import LabelFlicker, VideoTracker
from ferwild.video_io import FrameGrabber, Source, Stalled, VideoError, VideoWriter, describe_source

__all__ = ["LiveConfig", "LiveError", "live_recognizer", "run_live"]


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
# window, outputs
# ------------------------------------------------------------------------------------------------


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
        self.label_names, self.columns = label_names, frames_columns(label_names)
        self._csv_file = open(out / "frames.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(self.columns)
        self._rows = 0
        self._video = VideoWriter(out / "live.mp4", fps, live=True) if record else None

    def write(self, result: ImageResult, annotated) -> None:
        """One frame: its rows of ``frames.csv`` and, when recording, its annotated image."""
        record = {**vars(result), "faces": [vars(face) for face in result.faces]}
        for row in face_rows(record, self.label_names):
            self._csv.writerow(frames_csv_row(row, self.columns))
        self._rows += 1
        if self._rows % 30 == 0:
            self._csv_file.flush()
        if self._video is not None and annotated is not None:
            self._video.add(annotated)

    def close(self) -> None:
        self._csv_file.close()
        if self._video is not None:
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


# ------------------------------------------------------------------------------------------------
# the recogniser
# ------------------------------------------------------------------------------------------------


def live_recognizer(run: str | os.PathLike | None = None, onnx: str | os.PathLike | None = None, *,
                    detector: str = "fast", min_confidence: float | None = None, max_faces: int | None = None,
                    abstain_below: float | None = None, backend: str = "onnx", device: str = "cpu",
                    tta: str | None = None, log: Callable[[str], None] | None = None) -> Recognizer:
    """The recogniser for live use: ONNX Runtime on one thread (the grabber decodes on the other
    core), a run (default: the live model, :func:`ferwild.shipped.live_run`) exported once to a
    cache (:func:`ferwild.export.cached_onnx`, ``log`` says when) and named by the run; or PyTorch
    with ``backend="torch"``, ``tta`` set on the model. Nothing here imports torch on the ONNX path.

    Raises:
        LiveError: both ``run`` and ``onnx``, or a model that cannot be loaded or exported.
    """
    from ferwild.export import ExportError, cached_onnx
    from ferwild.runs import RunError
    from ferwild.shipped import live_run, shipped_onnx

    if run is not None and onnx is not None:
        raise LiveError("give at most one of --run RUN_DIR or --onnx MODEL.onnx")
    if min_confidence is None and detector in FAST_DETECTORS:
        # video frames: BlazeFace's stricter threshold, so an empty scene stays empty
        # (photos keep MediaPipe's 0.5; the choice: ferwild/detectors/blazeface.py)
        from ferwild.detectors.blazeface import VIDEO_MIN_CONFIDENCE

        min_confidence = VIDEO_MIN_CONFIDENCE
    kwargs = {"detector": detector, "min_confidence": min_confidence, "max_faces": max_faces,
              "abstain_below": abstain_below}
    source = run if run is not None else live_run()
    if backend == "torch" and onnx is None:
        try:
            recognizer = Recognizer.from_run(source, device=device, **kwargs)
        except RecognizerError as exc:
            raise LiveError(str(exc)) from None
        if tta is not None and hasattr(recognizer.classifier, "model"):
            recognizer.classifier.model.set_tta(tta)
        return recognizer
    ready = shipped_onnx(source) if onnx is None and tta in (None, "none") else None
    try:
        path = onnx if onnx is not None else ready or cached_onnx(source, tta=tta, log=log)
        recognizer = Recognizer.from_onnx(path, intra_op_threads=1, **kwargs)
    except (RecognizerError, RunError, ExportError, OSError) as exc:
        raise LiveError(str(exc)) from None
    if onnx is None:
        recognizer.source = str(source)
    return recognizer


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
    window_wanted = _window_wanted(config)
    src, grabber = _open_grabber(recognizer, source, config)
    reading = _Reading(recognizer, src, config, grabber, window_wanted)
    stop_flag = _StopFlag()
    previous_handlers = _on_signals(stop_flag)
    grabber.start()
    log(f"reading {src.name} with {recognizer.detector_name} detection "
        f"({'as it plays, dropping frames rather than lag' if grabber.drop else 'every frame'}); "
        f"stop with {'q in the window or ' if reading.window else ''}Ctrl-C")
    try:
        while reading.stop_reason is None:
            item = reading.next_frame(stop_flag)
            if item is None:
                break
            result = reading.read(item)
            if on_frame is not None:
                on_frame(result)
            reading.show_and_check(result, log)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread's handler
        reading.stop_reason = "stopped (Ctrl-C)"
    finally:
        grabber.stop()
        reading.close()
        _restore_signals(previous_handlers)
        grabber.join(timeout=2.0)
    summary = reading.summary()
    if config.out is not None:
        tmp = config.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, config.out / "summary.json")
    return summary


def _window_wanted(config: LiveConfig) -> bool:
    """Whether to show a window; a clear error when one is asked for but cannot be, or when the
    reading would go nowhere."""
    window_wanted = config.window if config.window is not None else (_display_available() and _has_cv2())
    if config.window and not _display_available():
        raise LiveError("no display here for a window: record with --out DIR instead (or set DISPLAY)")
    if config.window and not _has_cv2():
        raise LiveError("a window needs OpenCV: pip install \"ferwild[live]\" (or record with --out DIR)")
    if not window_wanted and config.out is None:
        raise LiveError("no display here (or no OpenCV) and no --out: nowhere to show the reading; "
                        "give --out DIR to record the annotated video and the per-frame CSV")
    return bool(window_wanted)


def _open_grabber(recognizer: Recognizer, source: str | int, config: LiveConfig) -> tuple[Source, FrameGrabber]:
    """The source and its grabber (not started). Two stages on two cores: decode and detect in
    the grabber's thread; align, classify, track, smooth, draw and record in the caller's."""
    detector = recognizer.detector
    try:
        src = describe_source(source)
        pace = src.kind == "file" and (config.pace is None or config.pace)
        grabber = FrameGrabber(src, drop=src.kind != "file" or pace,  # an unpaced file hands over every frame
                               pace=pace, loop=config.loop, open_timeout_s=config.open_timeout_s,
                               read_timeout_s=config.stall_timeout_s,
                               prepare=None if detector is None else (lambda rgb: detector.detect([rgb])[0]))
    except VideoError as exc:
        raise LiveError(str(exc)) from None
    return src, grabber


@dataclass
class _Counts:
    """What a live reading has done so far, for its status lines and summary."""

    started: float = field(default_factory=time.monotonic)
    processed: int = 0
    faces: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=120))
    rss_start: float = field(default_factory=lambda: _rss_mb())
    rss_samples: list = field(default_factory=list)

    def tick(self, n_faces: int) -> tuple[float, float]:
        """Count a frame read; returns (now, frames per second over the last ~120 frames)."""
        self.processed += 1
        self.faces += n_faces
        now = time.monotonic()
        self.recent.append(now)
        span = self.recent[-1] - self.recent[0]
        return now, (len(self.recent) - 1) / span if span > 0 else 0.0

    def sample_memory(self, now: float) -> None:
        self.rss_samples.append((round(now - self.started, 1), round(_rss_mb(), 1)))
        if len(self.rss_samples) > 400:  # a long run keeps its whole curve, thinned: memory stays flat
            self.rss_samples = self.rss_samples[::2]


class _Reading:
    """One ``ferwild live`` run's state, step by step: take a frame, read it, show and record it."""

    def __init__(self, recognizer: Recognizer, src: Source, config: LiveConfig, grabber: FrameGrabber,
                 window_wanted: bool) -> None:
        self.recognizer, self.src, self.config, self.grabber = recognizer, src, config, grabber
        fps_hint = grabber.rate or 30.0
        self.tracking = VideoTracker.at_frame_rate(recognizer.label_names, fps_hint, half_life_s=config.half_life_s,
                                                   switch_margin=config.switch_margin,
                                                   abstain_below=recognizer.abstain_below)
        self.recorder = _Recorder(config.out, recognizer.label_names, fps_hint, config.record) if config.out else None
        self.window = _Window(f"ferwild live: {src.name}") if window_wanted else None
        self.flicker_raw, self.flicker_smoothed = LabelFlicker(), LabelFlicker()
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.counts = _Counts()
        self.next_status = self.counts.started + config.status_every_s
        self.seconds = 0.0
        # the frame just read: its pixels, when it was read and the frame rate then
        self.rgb: np.ndarray | None = None
        self.now, self.fps_now = self.counts.started, 0.0

    def next_frame(self, stop_flag: _StopFlag):
        """The next ``(index, time_s, rgb, detections)``, or None with :attr:`stop_reason` set."""
        try:
            item = _take(self.grabber, self.config.stall_timeout_s, stop_flag)
        except Stalled:
            self.stop_reason = "stalled"
            self.error = f"{self.src.name}: no frame for {self.config.stall_timeout_s:.0f} s (stalled)"
            return None
        if stop_flag.is_set():
            self.stop_reason = stop_flag.reason
            return None
        if item is None:
            self.stop_reason, self.error = ("source error", self.grabber.error) if self.grabber.error \
                else ("end of source", None)
        return item

    def read(self, item) -> ImageResult:
        """Align, classify, track and smooth one frame's faces (detected in the grabber's thread)."""
        index, t, rgb, detections = item
        if self.recognizer.detector is None:
            result = self.recognizer.analyze([rgb], sources=[self.src.name])[0]
        else:
            result = self.recognizer.analyze_detected(rgb, detections, source=self.src.name)
        result.frame, result.time_s = index, t
        self.tracking.update(result)
        for face in result.faces:
            self.flicker_raw.add(face.track, t, face.label)
            self.flicker_smoothed.add(face.track, t, face.smoothed_label)
        self.now, self.fps_now = self.counts.tick(len(result.faces))
        self.rgb = rgb
        return result

    def show_and_check(self, result: ImageResult, log: Callable[[str], None]) -> None:
        """Draw, record and show the frame just read; log the status now and then; set
        :attr:`stop_reason` when a limit is reached or the window asks to stop."""
        config, window, recorder = self.config, self.window, self.recorder
        annotated = None
        if window is not None or (recorder is not None and config.record):
            status = f"{self.fps_now:.1f} fps, {self.grabber.dropped} dropped"
            annotated = draw_live(self.rgb, result, self.recognizer.label_names, status)
        if recorder is not None:
            recorder.write(result, annotated)
        if window is not None and not window.show(annotated):
            self.stop_reason = "stopped (q)"
            return
        now, counts = self.now, self.counts
        if now >= self.next_status:
            self.next_status = now + config.status_every_s
            counts.sample_memory(now)
            log(f"  {counts.processed} frames, {self.fps_now:.1f} frames/s, {self.grabber.dropped} dropped, "
                f"{len(result.faces)} face(s) now")
        if config.max_frames is not None and counts.processed >= config.max_frames:
            self.stop_reason = "max_frames"
        elif config.duration_s is not None and now - counts.started >= config.duration_s:
            self.stop_reason = "duration"

    def close(self) -> None:
        """Stop the clock; close the window and the outputs."""
        self.seconds = time.monotonic() - self.counts.started
        if self.window is not None:
            self.window.close()
        if self.recorder is not None:
            self.recorder.close()

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s content."""
        config, grabber, counts, seconds = self.config, self.grabber, self.counts, self.seconds
        raw, smoothed = self.flicker_raw.summary(digits=2), self.flicker_smoothed.summary(digits=2)
        return {
            "source": self.src.name, "kind": self.src.kind, "detector": self.recognizer.detector_name,
            "model": self.recognizer.source or self.recognizer.info().get("model", ""),
            "frames_decoded": grabber.decoded, "frames_processed": counts.processed,
            "frames_dropped": grabber.dropped, "faces": counts.faces, "seconds": round(seconds, 3),
            "fps_processed": round(counts.processed / seconds, 2) if seconds > 0 else 0.0,
            "fps_source": grabber.rate, "paced": grabber.pace, "stop_reason": self.stop_reason or "end of source",
            "error": self.error,
            "flicker": {"track_seconds": raw["track_seconds"], "label_changes_raw": raw["changes"],
                        "label_changes_smoothed": smoothed["changes"], "changes_per_s_raw": raw["changes_per_s"],
                        "changes_per_s_smoothed": smoothed["changes_per_s"]},
            "tracks": raw["tracks"],
            "rss_mb_start": round(counts.rss_start, 1), "rss_mb_end": round(_rss_mb(), 1),
            "rss_mb_samples": counts.rss_samples,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        }


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
        except Stalled:
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
