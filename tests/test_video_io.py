"""Video in and out (ferwild.video_io): one decoder under both hand-offs, one H.264 writer for
predict's annotated videos and live's recording, one wording for a video that cannot be opened."""

from __future__ import annotations

import numpy as np
import pytest

from ferwild.video_io import (
    FrameGrabber,
    VideoError,
    VideoWriter,
    describe_source,
    iter_video_frames,
    open_video,
    prefetch,
    video_frame_rate,
)


def _frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _count(path) -> int:
    return sum(1 for _ in iter_video_frames(path))


def test_writer_renames_into_place_and_leaves_nothing_without_frames(tmp_path):
    from PIL import Image

    target = tmp_path / "sub" / "clip.mp4"
    writer = VideoWriter(target, fps=10)
    for rgb in _frames(12, 49, 65):   # odd sides: cropped to even for yuv420p
        writer.add(Image.fromarray(rgb))
        assert not target.exists()      # written under a temporary name until closed
    writer.close()
    assert _count(target) == 12 and video_frame_rate(target) == pytest.approx(10)
    assert next(iter_video_frames(target))[2].shape == (48, 64, 3)
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]
    empty = VideoWriter(tmp_path / "none.mp4", fps=10)
    empty.close()
    assert list(tmp_path.glob("*none*")) == []


def test_live_writer_is_playable_before_it_is_closed(tmp_path):
    target = tmp_path / "live.mp4"
    writer = VideoWriter(target, fps=25, live=True)
    for rgb in _frames(30):
        writer.add(rgb)                 # arrays as well as PIL images
    assert target.is_file() and target.stat().st_size > 0   # fragmented, in place: survives a kill
    writer.close()
    assert _count(target) == 30


def test_one_wording_for_videos_that_cannot_be_opened(tmp_path):
    text = tmp_path / "fake.mp4"
    text.write_text("no video here")
    with pytest.raises(VideoError, match="not a video file \\(could not decode\\)"):
        open_video(text)
    with pytest.raises(VideoError, match="no such video file"):
        next(iter_video_frames(tmp_path / "missing.mp4"))
    assert describe_source("clip.mp4").kind == "file" and describe_source("rtsp://h/s").kind == "stream"


def test_prefetch_keeps_order_and_raises_where_the_source_broke():
    def source():
        yield from range(5)
        raise OSError("cut")

    got = []
    with pytest.raises(OSError, match="cut"):
        for item in prefetch(source(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_both_hand_offs_see_the_same_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, fps=10)
    for rgb in _frames(15):
        writer.add(rgb)
    writer.close()
    queued = list(prefetch(iter_video_frames(path)))
    grabber = FrameGrabber(describe_source(str(path)), drop=False, pace=False, prepare=lambda rgb: rgb.mean())
    grabber.start()
    handed = []
    while (item := grabber.take(10.0)) is not None:
        handed.append(item)
    grabber.join(5.0)
    assert [i for i, _, _ in queued] == [i for i, _, _, _ in handed] == list(range(15))
    assert [round(t, 3) for _, t, _ in queued] == [round(t, 3) for _, t, _, _ in handed]
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b, _) in zip(queued, handed))
    assert handed[3][3] == pytest.approx(handed[3][2].mean())   # prepared in the grabber's thread
    assert grabber.decoded == 15 and grabber.dropped == 0 and grabber.error is None
