"""``ferwild live``: a video file as the source (no camera in CI), a display-less run recording
to ``--out``, and the failures a live source has (missing / busy / unplugged camera, a stalled
stream, a corrupt video), each with a clear message and what was written kept."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferwild.live import LiveConfig, LiveError, run_live
from ferwild.video_io import FrameGrabber, Source, VideoError, describe_source, open_source
from ferwild.recognizer import Recognizer

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def video(shared_data) -> Path:
    return shared_data / "face_videos" / "WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.default(detector="fast", device="cpu")


def _decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_file_unpaced_reads_every_frame_and_records_it(rec, video, tmp_path):
    out = tmp_path / "live"
    summary = run_live(rec, str(video), LiveConfig(out=out, pace=False, max_frames=40), log=lambda m: None)
    assert summary["frames_processed"] == 40 and summary["frames_dropped"] == 0
    assert summary["stop_reason"] == "max_frames" and summary["error"] is None
    assert summary["detector"] == "fast" and summary["fps_processed"] > 0
    assert json.loads((out / "summary.json").read_text())["frames_processed"] == 40
    frames = pd.read_csv(out / "frames.csv")
    assert sorted(frames["frame"].unique()) == list(range(40))  # unpaced: every frame, in order
    assert frames["track"].nunique() == 1  # one person, one number
    assert set(frames["smoothed_label"]) <= set(rec.label_names)
    raw = frames[[f"prob_{n}" for n in rec.label_names]].to_numpy()
    smooth = frames[[f"smoothed_{n}" for n in rec.label_names]].to_numpy()
    assert np.allclose(raw.sum(1), 1, atol=1e-3) and np.allclose(smooth.sum(1), 1, atol=1e-3)
    assert np.allclose(raw[0], smooth[0], atol=1e-4)  # the first reading starts the average
    assert np.abs(np.diff(smooth, axis=0)).mean() < np.abs(np.diff(raw, axis=0)).mean()  # smoother
    assert _decoded_frames(out / "live.mp4") == 40


def test_paced_file_drops_frames_rather_than_lag(rec, video, tmp_path):
    """A reader slower than the source skips frames; the frame it reads stays near the present."""
    lags = []
    started = []

    def slow(result):
        now = time.monotonic()
        started.append(started[0] if started else now - result.time_s)
        lags.append(now - started[0] - result.time_s)
        time.sleep(0.12)  # ~8 frames/s of reading against a 24 frames/s source

    summary = run_live(rec, str(video), LiveConfig(out=tmp_path / "o", duration_s=2.5, record=False),
                       log=lambda m: None, on_frame=slow)
    assert summary["paced"] and summary["frames_dropped"] > 10
    assert summary["frames_processed"] < summary["frames_decoded"]
    # the lag does not grow: the last frames read are as fresh as the first ones (within a frame or two)
    assert max(lags[-3:]) < 0.35, lags


def _fake_container(frames: list[np.ndarray], then: Exception | None = None, stall: float = 0.0):
    """An object with PyAV's container surface: ``frames``, then ``then`` raised or a stall."""
    import av

    class Stream:
        average_rate = 25
        thread_type = "SLICE"

    class Container:
        streams = type("Streams", (), {"video": [Stream()]})()

        def decode(self, stream):
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = i, __import__("fractions").Fraction(1, 25)
                yield frame
            if stall:
                time.sleep(stall)
            if then is not None:
                raise then

        def close(self):
            pass

    return Container()


def _real_frames(video: Path, n: int) -> list[np.ndarray]:
    import av

    with av.open(str(video)) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                return out
    return out


def test_camera_unplugged_mid_stream_keeps_what_was_read(rec, video, tmp_path, monkeypatch):
    frames = _real_frames(video, 6)
    unplugged = OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr("ferwild.video_io.open_source", lambda *a, **k: _fake_container(frames, then=unplugged))
    monkeypatch.setattr("ferwild.live.describe_source",
                        lambda s: Source("/dev/video0", "v4l2", "camera 0 (/dev/video0)", "camera"))
    summary = run_live(rec, "0", LiveConfig(out=tmp_path / "o", pace=False), log=lambda m: None)
    assert summary["stop_reason"] == "source error"
    assert "camera 0" in summary["error"] and "unplugged" in summary["error"]
    # a camera never waits: frames may be dropped, but what was read is on disk
    kept = pd.read_csv(tmp_path / "o" / "frames.csv")
    assert 1 <= kept["frame"].nunique() <= 6 and summary["frames_processed"] == kept["frame"].nunique()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["error"] == summary["error"]
    assert _decoded_frames(tmp_path / "o" / "live.mp4") == summary["frames_processed"]


def test_stalled_stream_stops_with_a_message(rec, video, tmp_path, monkeypatch):
    frames = _real_frames(video, 4)
    monkeypatch.setattr("ferwild.video_io.open_source", lambda *a, **k: _fake_container(frames, stall=20))
    monkeypatch.setattr("ferwild.live.describe_source",
                        lambda s: Source("rtsp://cam/stream", None, "rtsp://cam/stream", "stream"))
    t0 = time.monotonic()
    summary = run_live(rec, "rtsp://cam/stream", LiveConfig(out=tmp_path / "o", stall_timeout_s=1.0),
                       log=lambda m: None)
    assert time.monotonic() - t0 < 8  # it gave up after the stall timeout, not after the stall
    assert summary["stop_reason"] == "stalled" and "stalled" in summary["error"]
    assert summary["frames_processed"] >= 1
    assert pd.read_csv(tmp_path / "o" / "frames.csv")["frame"].nunique() == summary["frames_processed"]


def test_missing_and_busy_cameras_say_so(monkeypatch, tmp_path):
    if sys.platform.startswith("linux"):
        assert describe_source("3") == Source("/dev/video3", "v4l2", "camera 3 (/dev/video3)", "camera")
        if not Path("/dev/video9").exists():
            with pytest.raises(VideoError, match=r"camera 9 \(/dev/video9\) not found"):
                open_source(describe_source("9"), 1.0, 1.0)
    device = tmp_path / "video0"
    device.write_bytes(b"")
    camera = Source(str(device), "v4l2", "camera 0", "camera")

    def refuse(code):
        def open_(*args, **kwargs):
            raise OSError(code, os.strerror(code))
        return open_

    monkeypatch.setattr("av.open", refuse(errno.EBUSY))
    with pytest.raises(VideoError, match="camera 0 is busy: another program is using it"):
        open_source(camera, 1.0, 1.0)
    monkeypatch.setattr("av.open", refuse(errno.EACCES))
    with pytest.raises(VideoError, match="permission denied"):
        open_source(camera, 1.0, 1.0)
    assert describe_source("rtsp://h/s").kind == "stream" and describe_source("clip.mp4").kind == "file"


def test_corrupt_and_unreadable_videos(rec, video, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(LiveError, match="cannot open as a video"):
        run_live(rec, str(garbage), LiveConfig(out=tmp_path / "g"))
    with pytest.raises(LiveError, match="no such video file"):
        run_live(rec, str(tmp_path / "missing.mp4"), LiveConfig(out=tmp_path / "m"))
    # a file cut in the middle (a copy that stopped downloading): the part before the cut is read
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        summary = run_live(rec, str(cut), LiveConfig(out=tmp_path / "c", pace=False, record=False),
                           log=lambda m: None)
    except LiveError as exc:  # an MP4 cut before its index cannot be opened at all: say so
        assert "cannot open" in str(exc)
        return
    assert summary["frames_processed"] > 0
    assert (tmp_path / "c" / "summary.json").is_file()
    assert pd.read_csv(tmp_path / "c" / "frames.csv")["frame"].nunique() == summary["frames_processed"]


def test_no_display_and_no_out_is_a_clear_error(rec, video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(LiveError, match="give --out DIR"):
            run_live(rec, str(video), LiveConfig())
        with pytest.raises(LiveError, match="no display here for a window"):
            run_live(rec, str(video), LiveConfig(window=True))


def test_grabber_hands_over_every_frame_when_not_dropping(video):
    grabber = FrameGrabber(describe_source(str(video)), drop=False, pace=False)
    grabber.start()
    seen = []
    while (item := grabber.take(5.0)) is not None:
        seen.append(item[0])
    assert seen == list(range(len(seen))) and len(seen) == grabber.decoded == 472 and grabber.dropped == 0


def test_cli_live_stops_cleanly_on_ctrl_c(video, tmp_path):
    """The display-less CLI run on a looped file, interrupted: exit 0, outputs closed and readable."""
    out = tmp_path / "live"
    env = {**os.environ, "FERWILD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", "live", str(video), "--out", str(out), "--loop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not (out / "frames.csv").exists() or (out / "frames.csv").stat().st_size < 5000:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "frames read at" in stdout and "stopped (Ctrl-C)" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "stopped (Ctrl-C)" and summary["frames_processed"] > 10
    from ferwild.shipped import live_run, shipped_onnx

    assert summary["detector"] == "fast" and summary["model"] == live_run()
    assert _decoded_frames(out / "live.mp4") == summary["frames_processed"]
    exported = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    # ONNX Runtime ran the live model's shipped file (nothing exported), or an export of the model
    assert not exported if shipped_onnx(live_run()) is not None else exported


def test_window_shows_each_frame_and_q_stops(rec, video, tmp_path, monkeypatch):
    """The window path with a stand-in for OpenCV (no display in CI): every frame read is shown,
    annotated with the side strip, and ``q`` stops the run cleanly."""
    import types

    shown = []
    fake = types.SimpleNamespace(
        WINDOW_NORMAL=0, WND_PROP_VISIBLE=1,
        namedWindow=lambda title, flags: None,
        imshow=lambda title, bgr: shown.append(bgr.shape),
        waitKey=lambda ms: ord("q") if len(shown) >= 5 else -1,
        getWindowProperty=lambda title, prop: 1.0,
        destroyAllWindows=lambda: shown.append("closed"))
    monkeypatch.setitem(sys.modules, "cv2", fake)
    monkeypatch.setenv("DISPLAY", ":99")
    summary = run_live(rec, str(video), LiveConfig(pace=False), log=lambda m: None)
    assert summary["stop_reason"] == "stopped (q)" and summary["frames_processed"] == 5
    assert shown[-1] == "closed" and len(shown) == 6
    h, w, c = shown[0]
    assert (h, c) == (360, 3) and w > 640  # the frame plus the strip of per-person bars
