"""Who is who across frames (FaceTracker) and a reading that does not flicker (ExpressionSmoother).

The tracker and smoother are duck-typed: most tests feed them small fake faces and frames; the
re-identification and real-video tests use the recogniser's own faces from real footage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ferwild.tracking import ExpressionSmoother, FaceTracker, TrackingError, face_descriptor, iou, label_flicker

LABELS = ["happy", "sad", "neutral"]
VIDEO = "face_videos/WolfgangLanger_Pexels.mp4"


@dataclass
class FakeFace:
    box: tuple[float, float, float, float]
    probabilities: dict[str, float] = field(default_factory=dict)
    label: str = ""
    descriptor: np.ndarray | None = None
    track: int | None = None
    smoothed: dict[str, float] | None = None
    smoothed_label: str | None = None


@dataclass
class FakeFrame:
    faces: list[Any]
    time_s: float | None = None


def _box(x: float, y: float = 100.0, side: float = 80.0) -> tuple[float, float, float, float]:
    return (x, y, x + side, y + side)


def _probs(**values: float) -> dict[str, float]:
    p = {n: 0.0 for n in LABELS}
    p.update(values)
    return p


def _face(probs: dict[str, float], track: int | None = 0) -> FakeFace:
    return FakeFace(_box(0), probabilities=probs, label=max(probs, key=probs.get), track=track)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0     # touching
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)


def test_face_descriptor_is_a_unit_correlation_vector():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    d = face_descriptor(crop)
    assert d.shape == (256,) and abs(float(d.sum())) < 1e-3 and float(np.linalg.norm(d)) == pytest.approx(1, abs=1e-5)
    # brightness and contrast changes do not matter (correlation), a different image does
    brighter = np.clip(crop.astype(np.int32) // 2 + 60, 0, 255).astype(np.uint8)
    assert float(d @ face_descriptor(brighter)) > 0.98
    assert abs(float(d @ face_descriptor(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)))) < 0.3
    grey = crop[:, :, :1]
    assert face_descriptor(grey).shape == (256,) and face_descriptor(grey[:, :, 0]) @ face_descriptor(grey) > 0.999
    flat = face_descriptor(np.full((48, 48), 7, np.uint8))
    assert np.isfinite(flat).all() and not flat.any()   # a blank crop: no look, no NaN
    assert face_descriptor(crop, side=8).shape == (64,)


def test_bad_settings_are_refused():
    for kwargs in ({"min_iou": 0.0}, {"min_iou": 1.5}, {"max_missed": -1}, {"max_lost_s": -0.5},
                   {"reentry_s": -1.0}, {"min_similarity": 1.5}):
        with pytest.raises(TrackingError):
            FaceTracker(**kwargs)
    for kwargs in ({"half_life_s": -1.0}, {"switch_margin": 1.0}, {"switch_margin": -0.1}, {"frame_s": 0.0}):
        with pytest.raises(TrackingError):
            ExpressionSmoother(LABELS, **kwargs)
    with pytest.raises(TrackingError):
        ExpressionSmoother([])
    assert issubclass(TrackingError, ValueError)


# ---------------------------------------------------------------------------------------------
# FaceTracker
# ---------------------------------------------------------------------------------------------

def test_ids_follow_people_whatever_the_order_of_the_faces():
    tracker = FaceTracker()
    xs = [0.0, 200.0, 400.0]
    first = tracker.update(FakeFrame([FakeFace(_box(x)) for x in xs])).faces
    ids = {x: f.track for x, f in zip(xs, first)}
    assert sorted(ids.values()) == [0, 1, 2]
    for step in range(1, 6):
        moved = [x + 10 * step for x in reversed(xs)]   # listed in another order, moving right
        faces = tracker.update(FakeFrame([FakeFace(_box(x)) for x in moved])).faces
        assert [f.track for f in faces] == [ids[x] for x in reversed(xs)]
    assert tracker.live_tracks == [0, 1, 2]
    # a newcomer gets the next number, nobody else changes
    faces = tracker.update(FakeFrame([FakeFace(_box(x + 50)) for x in xs] + [FakeFace(_box(700))])).faces
    assert [f.track for f in faces] == [ids[x] for x in xs] + [3]


@pytest.mark.parametrize("hidden,max_missed,kept", [(2, 3, True), (3, 3, True), (4, 3, False), (1, 0, False)])
def test_a_face_hidden_for_a_few_frames_keeps_its_number(hidden, max_missed, kept):
    tracker = FaceTracker(max_missed=max_missed)
    other = FakeFace(_box(500))
    tracker.update(FakeFrame([FakeFace(_box(0)), other]))
    for _ in range(hidden):
        tracker.update(FakeFrame([FakeFace(_box(500))]))   # the first person is hidden
    back = tracker.update(FakeFrame([FakeFace(_box(5)), FakeFace(_box(505))])).faces
    assert back[1].track == 1
    assert (back[0].track == 0) is kept
    if not kept:
        assert back[0].track == 2


def test_a_gap_in_seconds_keeps_the_number_up_to_max_lost_s():
    # 10 fps, max_missed 1 frame, but a face back within 0.5 s of being last seen keeps its number
    for gap_frames, kept in ((4, True), (5, True), (6, False), (10, False)):
        tracker = FaceTracker(max_missed=1, max_lost_s=0.5)
        tracker.update(FakeFrame([FakeFace(_box(0))], time_s=0.0))
        for k in range(1, gap_frames):
            tracker.update(FakeFrame([], time_s=k / 10))
        face = tracker.update(FakeFrame([FakeFace(_box(3))], time_s=gap_frames / 10)).faces[0]
        assert (face.track == 0) is kept, gap_frames
    # frames without times: only max_missed counts
    tracker = FaceTracker(max_missed=1, max_lost_s=10.0)
    tracker.update(FakeFrame([FakeFace(_box(0))]))
    tracker.update(FakeFrame([]))
    tracker.update(FakeFrame([]))
    assert tracker.update(FakeFrame([FakeFace(_box(0))])).faces[0].track == 1
    # whichever of the two is longer: 10 frames beat 0.1 s
    tracker = FaceTracker(max_missed=10, max_lost_s=0.1)
    tracker.update(FakeFrame([FakeFace(_box(0))], time_s=0.0))
    for k in range(1, 9):
        tracker.update(FakeFrame([], time_s=k / 10))
    assert tracker.update(FakeFrame([FakeFace(_box(0))], time_s=0.9)).faces[0].track == 0


def test_faces_that_do_not_overlap_enough_start_new_tracks():
    tracker = FaceTracker(min_iou=0.3)
    tracker.update(FakeFrame([FakeFace(_box(0))]))
    assert tracker.update(FakeFrame([FakeFace(_box(40))])).faces[0].track == 0   # IoU 0.33
    assert tracker.update(FakeFrame([FakeFace(_box(100))])).faces[0].track == 1  # IoU 0
    # without descriptors nothing comes back by look, even with re-entry on
    tracker = FaceTracker(max_missed=0, reentry_s=5.0, max_lost_s=None)
    tracker.update(FakeFrame([FakeFace(_box(0))], time_s=0.0))
    tracker.update(FakeFrame([], time_s=0.1))
    assert tracker.update(FakeFrame([FakeFace(_box(300))], time_s=0.2)).faces[0].track == 1


def test_two_look_alikes_never_share_a_number():
    """Two new faces that both resemble the same ended track: one takes its number, the other
    the next-best ended track's (or a new number), never the same one twice in a frame."""
    rng = np.random.default_rng(3)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 256)))
    near_a = a + 0.2 * b
    near_a /= np.linalg.norm(near_a)
    assert float(near_a @ a) > 0.95 and abs(float(a @ b)) < 0.2
    tracker = FaceTracker(max_missed=0, reentry_s=5.0, min_similarity=0.85, max_lost_s=None)
    tracker.update(FakeFrame([FakeFace(_box(0), descriptor=a), FakeFace(_box(300), descriptor=b)], time_s=0.0))
    tracker.update(FakeFrame([], time_s=0.1))
    faces = tracker.update(FakeFrame([FakeFace(_box(600), descriptor=a), FakeFace(_box(900), descriptor=near_a)],
                                     time_s=0.2)).faces
    assert faces[0].track == 0 and faces[1].track not in (0, 1)   # b's number is not taken by a look-alike of a
    assert faces[1].track == 2


def test_the_best_look_alike_takes_the_number_back_whatever_the_face_order():
    """Re-identification pairs new faces with ended tracks as a whole (Hungarian on similarity):
    a weaker look-alike listed first does not take the number of the face's own return."""
    rng = np.random.default_rng(5)
    a, noise = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 256)))
    weak = a + 0.55 * noise
    weak /= np.linalg.norm(weak)
    assert 0.8 < float(weak @ a) < 0.95
    tracker = FaceTracker(max_missed=0, reentry_s=5.0, min_similarity=0.65, max_lost_s=None)
    tracker.update(FakeFrame([FakeFace(_box(0), descriptor=a)], time_s=0.0))
    tracker.update(FakeFrame([], time_s=0.1))
    faces = tracker.update(FakeFrame([FakeFace(_box(300), descriptor=weak), FakeFace(_box(600), descriptor=a)],
                                     time_s=0.2)).faces
    assert [f.track for f in faces] == [1, 0]


def test_ended_tracks_are_forgotten_without_frame_times_too():
    """Frames without times: ``reentry_s`` counts at 30 frames/s, so the memory stays bounded."""
    rng = np.random.default_rng(6)
    a = rng.normal(size=256)
    a /= np.linalg.norm(a)
    tracker = FaceTracker(max_missed=0, reentry_s=1.0, max_lost_s=None)
    tracker.update(FakeFrame([FakeFace(_box(0), descriptor=a)]))
    for _ in range(20):
        tracker.update(FakeFrame([]))
    assert tracker.update(FakeFrame([FakeFace(_box(300), descriptor=a)])).faces[0].track == 0  # within 30 frames
    for _ in range(40):
        tracker.update(FakeFrame([]))
    assert tracker.update(FakeFrame([FakeFace(_box(300), descriptor=a)])).faces[0].track == 1
    assert not tracker._ended or all(t != 0 for t in tracker._ended)


@pytest.fixture(scope="module")
def rec_fast():
    from ferwild.recognizer import Recognizer

    return Recognizer.default(detector="fast", device="cpu")


def _video_frames(path, count: int) -> list[tuple[float, np.ndarray]]:
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append((float(frame.time), frame.to_ndarray(format="rgb24")))
            if len(out) >= count:
                break
    return out


@pytest.fixture(scope="module")
def video_results(shared_data, rec_fast):
    """The recogniser's results on the first 90 frames of a real one-person video (times set)."""
    path = shared_data / VIDEO
    if not path.is_file():
        pytest.skip(f"{path} not present")
    frames = _video_frames(path, 90)
    results = rec_fast.analyze([a for _, a in frames])
    for result, (t, _) in zip(results, frames):
        result.time_s = t
    return results


@pytest.fixture(scope="module")
def strangers(shared_data, rec_fast):
    """Faces of five other people (a group photo), with their descriptors."""
    result = rec_fast.with_detector("fast-tiled").analyze([shared_data / "face_photos/pyfeat/multi_face.jpg"])[0]
    assert len(result.faces) == 5
    return result.faces


@pytest.mark.shared_data
def test_a_person_who_comes_back_gets_their_number_back(video_results, strangers):
    """Re-entry by look: the same person (a later frame of the video) somewhere else in the
    frame gets the old number back within ``reentry_s``; a stranger does not; after
    ``reentry_s`` nobody does."""
    seen, later = video_results[0].faces[0], video_results[12].faces[0]
    assert float(seen.descriptor @ later.descriptor) >= 0.85
    assert max(float(seen.descriptor @ s.descriptor) for s in strangers) < 0.85

    def run(returning, when: float) -> int:
        tracker = FaceTracker(max_missed=2, reentry_s=3.0, min_similarity=0.85, max_lost_s=None)
        for k in range(3):   # seen for three frames, then gone
            tracker.update(FakeFrame([FakeFace(seen.box, descriptor=seen.descriptor)], time_s=k / 10))
        for k in range(3, 8):
            tracker.update(FakeFrame([], time_s=k / 10))
        assert tracker.live_tracks == []
        x1, y1, x2, y2 = seen.box
        elsewhere = (x1 + 400, y1, x2 + 400, y2)   # no overlap with the old box
        assert iou(elsewhere, seen.box) == 0
        frame = FakeFrame([FakeFace(elsewhere, descriptor=returning.descriptor)], time_s=when)
        return tracker.update(frame).faces[0].track

    assert run(later, when=1.0) == 0
    assert run(strangers[0], when=1.0) == 1
    assert run(later, when=0.2 + 3.5) == 1   # last seen at 0.2 s: forgotten after 3 s


@pytest.mark.shared_data
def test_two_people_who_come_back_swapped_get_their_own_numbers(video_results, strangers):
    a_then, a_now = video_results[0].faces[0], video_results[10].faces[0]
    b = max(strangers, key=lambda f: f.box[2] - f.box[0])
    tracker = FaceTracker(max_missed=0, reentry_s=5.0, max_lost_s=None)
    first = tracker.update(FakeFrame([FakeFace(_box(0, side=100), descriptor=a_then.descriptor),
                                      FakeFace(_box(400, side=100), descriptor=b.descriptor)], time_s=0.0)).faces
    assert [f.track for f in first] == [0, 1]
    tracker.update(FakeFrame([], time_s=0.5))
    back = tracker.update(FakeFrame([FakeFace(_box(800, side=100), descriptor=b.descriptor),
                                     FakeFace(_box(1200, side=100), descriptor=a_now.descriptor)], time_s=1.0)).faces
    assert [f.track for f in back] == [1, 0]
    # a third face, nobody's look: a new number, and no number is given twice
    again = tracker.update(FakeFrame([FakeFace(_box(805, side=100), descriptor=b.descriptor),
                                      FakeFace(_box(1205, side=100), descriptor=a_now.descriptor),
                                      FakeFace(_box(0, side=100), descriptor=-a_now.descriptor)], time_s=1.1)).faces
    assert [f.track for f in again] == [1, 0, 2]


# ---------------------------------------------------------------------------------------------
# ExpressionSmoother
# ---------------------------------------------------------------------------------------------

def test_without_half_life_the_smoothed_reading_is_the_raw_one():
    smoother = ExpressionSmoother(LABELS, half_life_s=0.0, switch_margin=0.0)
    for t, probs in enumerate([_probs(happy=0.7, sad=0.3), _probs(sad=0.9, neutral=0.1), _probs(neutral=1.0)]):
        face = smoother.update(FakeFrame([_face(probs)], time_s=t * 0.1)).faces[0]
        assert face.smoothed == pytest.approx(probs)
        assert face.smoothed_label == face.label


def test_one_step_is_an_exponential_moving_average_with_a_half_life():
    half_life, dt = 0.25, 0.1
    smoother = ExpressionSmoother(LABELS, half_life_s=half_life)
    old, new = _probs(happy=0.8, sad=0.2), _probs(happy=0.2, sad=0.5, neutral=0.3)
    smoother.update(FakeFrame([_face(old)], time_s=1.0))
    face = smoother.update(FakeFrame([_face(new)], time_s=1.0 + dt)).faces[0]
    a = 1 - 2 ** (-dt / half_life)
    assert face.smoothed == pytest.approx({n: (1 - a) * old[n] + a * new[n] for n in LABELS})
    # after exactly one half-life, half of the old reading is left
    smoother = ExpressionSmoother(LABELS, half_life_s=half_life)
    smoother.update(FakeFrame([_face(old)], time_s=0.0))
    face = smoother.update(FakeFrame([_face(new)], time_s=half_life)).faces[0]
    assert face.smoothed["happy"] == pytest.approx((0.8 + 0.2) / 2)
    # frames without times step by frame_s
    smoother = ExpressionSmoother(LABELS, half_life_s=half_life, frame_s=0.05)
    smoother.update(FakeFrame([_face(old)]))
    face = smoother.update(FakeFrame([_face(new)])).faces[0]
    a = 1 - 2 ** (-0.05 / half_life)
    assert face.smoothed["sad"] == pytest.approx((1 - a) * 0.2 + a * 0.5)


def test_smoothing_does_not_depend_on_the_frame_rate():
    """A step from happy to sad at t = 1 s, read at 10 and at 60 frames per second.

    Each reading weighs 1 - 2^(-dt / half-life): as if it had held since the previous frame, so
    the sampled step response is the continuous one led by one frame period, exactly; the decay
    per second is the same at any rate, and the two rates agree closely once the step is a
    few frame periods old."""
    half_life = 0.25

    def smoothed_at(fps: int, until: float) -> float:
        smoother = ExpressionSmoother(LABELS, half_life_s=half_life)
        value = None
        for i in range(round(until * fps) + 1):
            t = i / fps
            probs = _probs(happy=0.9, sad=0.1) if t < 1.0 - 1e-9 else _probs(happy=0.1, sad=0.9)
            value = smoother.update(FakeFrame([_face(probs)], time_s=t)).faces[0].smoothed["sad"]
        return value

    for fps in (10, 30, 60):
        for until in (1.0, 1.2, 1.5, 2.0):
            lead = 1.0 / fps
            assert smoothed_at(fps, until) == pytest.approx(0.9 - 0.8 * 2 ** (-(until - 1.0 + lead) / half_life),
                                                            abs=1e-9)
    assert abs(smoothed_at(10, 2.0) - smoothed_at(60, 2.0)) < 0.02
    assert abs(smoothed_at(10, 2.5) - smoothed_at(60, 2.5)) < 0.005


def test_hysteresis_holds_the_label_through_a_close_race():
    # no smoothing at all: only the margin stops the flicker
    smoother = ExpressionSmoother(LABELS, half_life_s=0.0, switch_margin=0.1)
    labels = []
    for i in range(30):
        lead = _probs(happy=0.53, sad=0.47) if i % 2 == 0 else _probs(happy=0.47, sad=0.53)
        labels.append(smoother.update(FakeFrame([_face(lead)], time_s=i / 30)).faces[0].smoothed_label)
    assert set(labels) == {"happy"}
    # a clear lead switches at once
    face = smoother.update(FakeFrame([_face(_probs(happy=0.3, sad=0.7))], time_s=1.0)).faces[0]
    assert face.smoothed_label == "sad"

    # with smoothing: raw labels that alternate every frame never flip it; a sustained change does
    smoother = ExpressionSmoother(LABELS, half_life_s=0.25, switch_margin=0.1)
    raw, shown = [], []
    for i in range(60):
        probs = _probs(happy=0.6, sad=0.4) if i % 2 == 0 else _probs(happy=0.4, sad=0.6)
        face = smoother.update(FakeFrame([_face(probs)], time_s=i / 30)).faces[0]
        raw.append(face.label)
        shown.append(face.smoothed_label)
    assert len(set(raw)) == 2 and set(shown) == {"happy"}
    switched = None
    for i in range(60, 120):
        face = smoother.update(FakeFrame([_face(_probs(happy=0.3, sad=0.7))], time_s=i / 30)).faces[0]
        if face.smoothed_label == "sad" and switched is None:
            switched = i
    assert face.smoothed_label == "sad"
    assert switched is not None and 60 < switched < 75   # a few frames late, not never


def test_a_low_smoothed_confidence_is_uncertain():
    smoother = ExpressionSmoother(LABELS, half_life_s=0.0, abstain_below=0.5)
    face = smoother.update(FakeFrame([_face(_probs(happy=0.4, sad=0.35, neutral=0.25))], time_s=0.0)).faces[0]
    assert face.smoothed_label == "uncertain" and face.smoothed["happy"] == pytest.approx(0.4)
    face = smoother.update(FakeFrame([_face(_probs(happy=0.6, sad=0.4))], time_s=0.1)).faces[0]
    assert face.smoothed_label == "happy"


def test_a_track_unseen_longer_than_forget_s_starts_afresh():
    smoother = ExpressionSmoother(LABELS, half_life_s=1.0, forget_s=2.0)
    smoother.update(FakeFrame([_face(_probs(happy=1.0))], time_s=0.0))
    # within forget_s: still smoothed towards the old reading
    face = smoother.update(FakeFrame([_face(_probs(sad=1.0))], time_s=0.5)).faces[0]
    assert face.smoothed["happy"] == pytest.approx(2 ** -0.5) and face.smoothed_label == "happy"
    # another track keeps the clock going; then track 0 returns after more than forget_s
    smoother.update(FakeFrame([_face(_probs(neutral=1.0), track=1)], time_s=3.0))
    face = smoother.update(FakeFrame([_face(_probs(sad=1.0))], time_s=4.0)).faces[0]
    assert face.smoothed == pytest.approx(_probs(sad=1.0)) and face.smoothed_label == "sad"
    # time running backwards (a new video) also starts afresh instead of extrapolating
    face = smoother.update(FakeFrame([_face(_probs(neutral=1.0))], time_s=0.5)).faces[0]
    assert face.smoothed == pytest.approx(_probs(neutral=1.0))


def test_tracks_are_smoothed_separately_and_untracked_faces_are_left_alone():
    smoother = ExpressionSmoother(LABELS, half_life_s=0.0)
    untracked = _face(_probs(happy=1.0), track=None)
    no_probs = FakeFace(_box(0), track=5)
    frame = FakeFrame([_face(_probs(happy=1.0), track=0), _face(_probs(sad=1.0), track=1), untracked, no_probs],
                      time_s=0.0)
    faces = smoother.update(frame).faces
    assert [f.smoothed_label for f in faces] == ["happy", "sad", None, None]
    assert untracked.smoothed is None and no_probs.smoothed is None
    assert smoother.update(FakeFrame([], time_s=0.1)).faces == []   # an empty frame is fine


# ---------------------------------------------------------------------------------------------
# label_flicker
# ---------------------------------------------------------------------------------------------

def test_label_flicker_counts_changes_per_track_and_second():
    rows = [
        {"track": 0, "time_s": 0.0, "label": "happy"},
        {"track": 1, "time_s": 0.0, "label": "sad"},
        {"track": 0, "time_s": 0.5, "label": "sad"},      # change 1
        {"track": 1, "time_s": 0.5, "label": "sad"},
        {"track": 0, "time_s": 1.0, "label": "happy"},    # change 2
        {"track": 1, "time_s": 2.0, "label": "neutral"},  # change 3
        {"track": None, "time_s": 1.0, "label": "fear"},  # ignored: no track
        {"track": 0, "time_s": None, "label": "fear"},    # ignored: no time
        {"track": 0, "time_s": 0.75, "smoothed_label": "x"},  # ignored: no label
    ]
    out = label_flicker(rows)
    assert out == {"changes": 3, "track_seconds": 3.0, "changes_per_s": 1.0, "tracks": 2}
    # rows out of time order are put in order per track
    assert label_flicker(list(reversed(rows)))["changes"] == 3
    # another label column
    smoothed = [{"track": 0, "time_s": t, "smoothed_label": lab} for t, lab in [(0, "a"), (1, "a"), (2, "b")]]
    assert label_flicker(smoothed, label_key="smoothed_label")["changes"] == 1
    assert label_flicker(smoothed)["tracks"] == 0
    assert label_flicker([]) == {"changes": 0, "track_seconds": 0.0, "changes_per_s": 0.0, "tracks": 0}
    assert label_flicker([{"track": 0, "time_s": 1.0, "label": "a"}])["changes_per_s"] == 0.0


# ---------------------------------------------------------------------------------------------
# a real video
# ---------------------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_video_one_track_and_smoothing_never_adds_flicker(video_results, rec_fast):
    tracker = FaceTracker(max_lost_s=0.5, reentry_s=2.0)
    smoother = ExpressionSmoother(rec_fast.label_names)
    rows = []
    for result in video_results:
        assert result.error is None and len(result.faces) == 1
        tracker.update(result)
        smoother.update(result)
        face = result.faces[0]
        assert face.method == "fast"
        assert face.smoothed is not None and abs(sum(face.smoothed.values()) - 1) < 1e-4
        assert face.smoothed_label in rec_fast.label_names
        written = face.to_dict()
        assert written["smoothed_label"] == face.smoothed_label and written["track"] == face.track
        rows.append({"track": face.track, "time_s": result.time_s, "label": face.label,
                     "smoothed_label": face.smoothed_label})
    assert {r["track"] for r in rows} == {0}
    raw = label_flicker(rows)
    smooth = label_flicker(rows, label_key="smoothed_label")
    assert raw["tracks"] == smooth["tracks"] == 1
    assert raw["track_seconds"] == pytest.approx(video_results[-1].time_s - video_results[0].time_s, abs=1e-3)
    assert 3.0 < raw["track_seconds"] < 4.5   # ~90 frames at 23.98 fps
    assert smooth["changes"] <= raw["changes"]


@pytest.mark.shared_data
def test_recognizer_video_path_numbers_faces_with_the_tracker_given(shared_data, rec_fast):
    path = shared_data / VIDEO
    if not path.is_file():
        pytest.skip(f"{path} not present")
    tracker = FaceTracker(max_lost_s=1.0)
    results = list(rec_fast.analyze_video(path, max_frames=20, every_n_frames=3, tracker=tracker))
    assert len(results) == 20 and all(r.error is None for r in results)
    assert [r.frame for r in results] == list(range(0, 60, 3))
    assert all(len(r.faces) == 1 and r.faces[0].track == 0 for r in results)
    assert tracker.live_tracks == [0]


# ---------------------------------------------------------------------------------------------
# VideoTracker, LabelFlicker, defaults
# ---------------------------------------------------------------------------------------------

def test_tracker_defaults_keep_a_second_of_occlusion_and_ten_seconds_of_reentry():
    tracker = FaceTracker()
    assert tracker.max_lost_s == 1.0 and tracker.reentry_s == 10.0
    tracker.update(FakeFrame([FakeFace(_box(0))], time_s=0.0))
    for t in (0.2, 0.4, 0.6, 0.8):   # more than max_missed frames, less than a second
        tracker.update(FakeFrame([], time_s=t))
    assert tracker.update(FakeFrame([FakeFace(_box(5))], time_s=0.9)).faces[0].track == 0


def test_video_tracker_numbers_then_smooths_and_sizes_patience_by_frame_rate():
    from ferwild.tracking import UNCERTAIN, VideoTracker

    fast = VideoTracker.at_frame_rate(LABELS, 30.0, abstain_below=0.9)
    assert fast.tracker.max_missed == 15 and fast.smoother.frame_s == pytest.approx(1 / 30)
    assert VideoTracker.at_frame_rate(LABELS, 4.0).tracker.max_missed == 3
    frame = FakeFrame([FakeFace(_box(0), probabilities=_probs(happy=0.6, sad=0.4), label="happy")], time_s=0.0)
    face = fast.update(frame).faces[0]
    assert face.track == 0 and face.smoothed == pytest.approx(_probs(happy=0.6, sad=0.4))
    assert face.smoothed_label == UNCERTAIN == "uncertain"   # 0.6 < abstain_below
    plain = VideoTracker()   # no smoother: numbered only
    face = plain.update(FakeFrame([FakeFace(_box(0), probabilities=_probs(happy=1.0))])).faces[0]
    assert face.track == 0 and face.smoothed is None and plain.tracker.max_missed == 3
    with pytest.raises(TrackingError):
        VideoTracker.at_frame_rate(LABELS, 0.0)


def test_streaming_flicker_counts_as_label_flicker_does():
    from ferwild.tracking import LabelFlicker

    rows = [{"track": k % 2, "time_s": k * 0.1, "label": "ab"[(k // 3) % 2]} for k in range(20)]
    meter = LabelFlicker()
    for r in rows:
        meter.add(r["track"], r["time_s"], r["label"])
    whole = label_flicker(rows)
    assert meter.summary() == whole and whole["changes"] > 0 and meter.tracks == 2
    assert meter.track_seconds == pytest.approx(1.8 + 1.8)
    assert meter.summary(digits=1)["track_seconds"] == 3.6
