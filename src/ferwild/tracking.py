"""Who is who across video frames, and a reading that does not flicker.

* :class:`FaceTracker` numbers the faces of consecutive frames by person: boxes are matched to
  live tracks by overlap (Hungarian assignment); a track that loses its face (an occlusion, a
  missed detection) is kept for ``max_missed`` frames or ``max_lost_s`` seconds; after that it
  is remembered for ``reentry_s`` seconds by what the face looked like (its aligned crop, grey,
  16x16, standardised), so a person who leaves and comes back gets their number back.
* :class:`ExpressionSmoother` smooths each track's class probabilities over time (an
  exponential moving average with a half-life in seconds, so it behaves the same at 10 or 60
  frames per second) and holds the displayed label until another class leads by
  ``switch_margin`` (hysteresis). The raw per-frame reading stays in ``probabilities`` /
  ``label``; the smoothed one goes to ``smoothed`` / ``smoothed_label``.
* :class:`VideoTracker` is the two in the order every video path applies them (``ferwild
  predict``, ``ferwild live``, the web page's live mode).
* :class:`LabelFlicker` measures what smoothing is for: label changes per second of a track,
  counted as frames go by; :func:`label_flicker` counts them over a finished video's rows.

Faces are duck-typed: anything with ``box`` and ``track`` (and ``probabilities``, ``label`` for
the smoother, an optional ``descriptor`` for re-entry) works, e.g.
:class:`ferwild.recognizer.Face`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferwild.data.faces import Box

__all__ = ["UNCERTAIN", "ExpressionSmoother", "FaceTracker", "LabelFlicker", "TrackingError", "VideoTracker",
           "box_area", "face_descriptor", "label_flicker"]

#: The label of a face read with less confidence than an ``abstain_below`` threshold (the
#: recogniser's for one frame, the smoother's for a track's smoothed reading).
UNCERTAIN = "uncertain"


class TrackingError(ValueError):
    """Bad tracker or smoother settings."""


def box_area(box: Box) -> float:
    """The area of an ``(x1, y1, x2, y2)`` box (0 for an empty one)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (box_area(a) + box_area(b) - inter)


def face_descriptor(crop: np.ndarray, side: int = 16) -> np.ndarray:
    """A face's look for re-identification within one video: the aligned crop, grey, ``side`` x
    ``side``, zero mean and unit norm (cosine similarity = correlation of the two thumbnails).

    Cheap (~0.1 ms) and only meant for a few people in one scene and light, not for telling
    strangers apart in general."""
    from PIL import Image

    arr = np.asarray(crop)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    image = Image.fromarray(arr.astype(np.uint8)).convert("L").resize((side, side), Image.Resampling.BILINEAR)
    v = np.asarray(image, dtype=np.float32).ravel()
    v -= v.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else v


@dataclass
class _Track:
    box: Box
    missed: int
    last_time: float | None
    descriptor: np.ndarray | None
    last_frame: int = 0


class FaceTracker:
    """Numbers the faces of consecutive frames by person (see the module docstring).

    Args:
        min_iou: least overlap between a face and a track's last box to continue the track.
        max_missed: frames a track may go without its face (an occlusion) and still continue.
        max_lost_s: when frames carry times, a track also continues through gaps up to this many
            seconds (whichever of the two is longer); None: frames only. The default keeps a
            person through a second's occlusion.
        reentry_s: how long an ended track is remembered by its look (0: never); by default a
            person who comes back within 10 s gets their number back.
        min_similarity: least descriptor similarity (correlation) for a new face to take an
            ended track's number back. 0.65: on a real talking-head video the same person's
            thumbnails correlate 0.86 a half-second apart and 0.70-0.76 one to four seconds apart,
            while the five strangers of one group photo reach at most 0.51.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 3, *, max_lost_s: float | None = 1.0,
                 reentry_s: float = 10.0, min_similarity: float = 0.65) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise TrackingError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_missed < 0:
            raise TrackingError(f"max_missed must be >= 0, got {max_missed}")
        if max_lost_s is not None and max_lost_s < 0:
            raise TrackingError(f"max_lost_s must be >= 0, got {max_lost_s}")
        if reentry_s < 0:
            raise TrackingError(f"reentry_s must be >= 0, got {reentry_s}")
        if not -1.0 <= min_similarity <= 1.0:
            raise TrackingError(f"min_similarity must be in [-1, 1], got {min_similarity}")
        self.min_iou, self.max_missed = float(min_iou), int(max_missed)
        self.max_lost_s, self.reentry_s, self.min_similarity = max_lost_s, float(reentry_s), float(min_similarity)
        self._tracks: dict[int, _Track] = {}
        self._ended: dict[int, _Track] = {}  # id -> the track as it was last seen (for re-entry)
        self._next = 0
        self._frames = 0

    @property
    def live_tracks(self) -> list[int]:
        """Numbers of the tracks that can still continue."""
        return sorted(self._tracks)

    def update(self, result: Any) -> Any:
        """Set ``track`` on each face of the next frame (``result.faces``, in place); returns ``result``."""
        from scipy.optimize import linear_sum_assignment

        now = getattr(result, "time_s", None)
        faces = list(result.faces)
        # a track gone longer than the patience by this frame's time ends before matching, so that
        # the gap that counts is the one up to the face's return, not up to the last empty frame
        for t in [t for t, tr in self._tracks.items() if not self._may_continue(tr, now)]:
            self._end(t)
        ids = list(self._tracks)
        matched: dict[int, int] = {}
        if ids and faces:
            overlap = np.array([[iou(self._tracks[t].box, f.box) for f in faces] for t in ids])
            rows, cols = linear_sum_assignment(-overlap)
            matched = {int(c): ids[r] for r, c in zip(rows, cols) if overlap[r, c] >= self.min_iou}
        self._forget_ended(now)
        matched.update(self._reentries([j for j in range(len(faces)) if j not in matched], faces))
        for j, face in enumerate(faces):
            descriptor = getattr(face, "descriptor", None)
            if j not in matched:
                matched[j] = self._next
                self._next += 1
            face.track = matched[j]
            old = self._tracks.get(face.track) or self._ended.pop(face.track, None)
            if descriptor is None and old is not None:
                descriptor = old.descriptor
            self._tracks[face.track] = _Track(tuple(face.box), 0, now, descriptor, self._frames)
        seen = set(matched.values())
        for t in ids:
            if t in seen:
                continue
            self._tracks[t].missed += 1
            if not self._may_continue(self._tracks[t], now):
                self._end(t)
        self._frames += 1
        return result

    def _end(self, number: int) -> None:
        track = self._tracks.pop(number)
        if self.reentry_s > 0 and track.descriptor is not None:
            self._ended[number] = track

    def _may_continue(self, track: _Track, now: float | None) -> bool:
        if track.missed <= self.max_missed:
            return True
        if self.max_lost_s is not None and now is not None and track.last_time is not None:
            return now - track.last_time <= self.max_lost_s
        return False

    def _forget_ended(self, now: float | None) -> None:
        """Drop ended tracks older than ``reentry_s`` (frames without times: ``reentry_s`` at 30 frames/s)."""
        def stale(track: _Track) -> bool:
            if now is not None and track.last_time is not None:
                return now - track.last_time > self.reentry_s
            return self._frames - track.last_frame > self.reentry_s * 30

        for t in [t for t, tr in self._ended.items() if stale(tr)]:
            del self._ended[t]

    def _reentries(self, unmatched: list[int], faces: list[Any]) -> dict[int, int]:
        """Ended tracks taken back by the new faces that look like them: one-to-one, the best
        overall pairing (Hungarian on descriptor similarity), each pair at least ``min_similarity``."""
        from scipy.optimize import linear_sum_assignment

        ended = [t for t, tr in self._ended.items() if tr.descriptor is not None]
        new = [j for j in unmatched if getattr(faces[j], "descriptor", None) is not None]
        if not ended or not new:
            return {}
        similarity = np.array([[float(np.dot(faces[j].descriptor, self._ended[t].descriptor)) for t in ended]
                               for j in new])
        rows, cols = linear_sum_assignment(-similarity)
        return {new[r]: ended[c] for r, c in zip(rows, cols) if similarity[r, c] >= self.min_similarity}


class ExpressionSmoother:
    """Per-track smoothing of class probabilities with a hysteresis on the label.

    Args:
        label_names: the model's classes, in probability order.
        half_life_s: time for an old reading's weight to halve (0: no smoothing).
        switch_margin: the displayed label changes only when another class's smoothed
            probability exceeds the current label's by this much.
        frame_s: the time step assumed for frames without times (video frame index only).
        abstain_below: below this smoothed top probability the label is ``uncertain`` (as the
            recogniser's own ``abstain_below``); None: never.
        forget_s: a track unseen this long starts afresh.
    """

    def __init__(self, label_names: Sequence[str], *, half_life_s: float = 0.25, switch_margin: float = 0.1,
                 frame_s: float = 1 / 30, abstain_below: float | None = None, forget_s: float = 2.0) -> None:
        if not label_names:
            raise TrackingError("the smoother needs the model's label names")
        if half_life_s < 0:
            raise TrackingError(f"half_life_s must be >= 0, got {half_life_s}")
        if not 0.0 <= switch_margin < 1.0:
            raise TrackingError(f"switch_margin must be in [0, 1), got {switch_margin}")
        if frame_s <= 0:
            raise TrackingError(f"frame_s must be > 0, got {frame_s}")
        self.label_names = list(label_names)
        self.half_life_s, self.switch_margin, self.frame_s = float(half_life_s), float(switch_margin), float(frame_s)
        self.abstain_below = abstain_below
        self.forget_s = float(forget_s)
        self._state: dict[int, tuple[np.ndarray, int, float]] = {}  # track -> (probs, label index, time)
        self._clock = 0.0

    def update(self, result: Any) -> Any:
        """Set ``smoothed`` (class -> probability) and ``smoothed_label`` on each tracked face."""
        now = getattr(result, "time_s", None)
        now = self._clock + self.frame_s if now is None else float(now)
        self._clock = now
        for face in result.faces:
            track = getattr(face, "track", None)
            probs = getattr(face, "probabilities", None)
            if track is None or not probs:
                continue
            p = np.array([float(probs.get(n, 0.0)) for n in self.label_names], dtype=np.float64)
            state = self._state.get(track)
            if state is None or not (0.0 <= now - state[2] <= self.forget_s):
                smoothed, current = p, int(np.argmax(p))
            else:
                previous, current, then = state
                dt = max(now - then, 0.0)
                # weight of the new reading: 1 - 2^(-dt / half_life), the same decay at any frame rate
                alpha = 1.0 if self.half_life_s == 0 else 1.0 - math.pow(2.0, -dt / self.half_life_s)
                smoothed = (1.0 - alpha) * previous + alpha * p
                best = int(np.argmax(smoothed))
                if best != current and smoothed[best] - smoothed[current] >= self.switch_margin:
                    current = best
            self._state[track] = (smoothed, current, now)
            face.smoothed = {n: float(v) for n, v in zip(self.label_names, smoothed)}
            top = float(smoothed[current])
            face.smoothed_label = (UNCERTAIN if self.abstain_below is not None and top < self.abstain_below
                                   else self.label_names[current])
        for t in [t for t, (_, _, then) in self._state.items() if now - then > self.forget_s]:
            del self._state[t]
        return result


class VideoTracker:
    """Numbers the people of a video's frames (:class:`FaceTracker`), then smooths each one's
    reading (:class:`ExpressionSmoother`, when given): the one place a video's faces get their
    ``track``, ``smoothed`` and ``smoothed_label``.

    Frames go to :meth:`update` in order; ``tracker`` defaults to a :class:`FaceTracker` with its
    defaults. :meth:`at_frame_rate` builds both for frames arriving at a known rate (live video).
    """

    def __init__(self, tracker: FaceTracker | None = None, smoother: ExpressionSmoother | None = None) -> None:
        self.tracker = tracker if tracker is not None else FaceTracker()
        self.smoother = smoother

    @classmethod
    def at_frame_rate(cls, label_names: Sequence[str], frame_rate: float = 30.0, *, half_life_s: float = 0.25,
                      switch_margin: float = 0.1, abstain_below: float | None = None) -> "VideoTracker":
        """A tracker and smoother for frames at about ``frame_rate`` per second: a face may go
        missing for half a second of frames (at least 3), and frames without times are taken as
        ``1 / frame_rate`` apart."""
        if not frame_rate > 0:
            raise TrackingError(f"frame_rate must be > 0, got {frame_rate}")
        return cls(FaceTracker(max_missed=max(3, round(frame_rate / 2))),
                   ExpressionSmoother(label_names, half_life_s=half_life_s, switch_margin=switch_margin,
                                      frame_s=1.0 / frame_rate, abstain_below=abstain_below))

    def update(self, result: Any) -> Any:
        """Track (and smooth) the faces of the next frame, in place; returns ``result``."""
        self.tracker.update(result)
        if self.smoother is not None:
            self.smoother.update(result)
        return result


class LabelFlicker:
    """Label changes per second of track time, counted frame by frame (no history kept).

    :meth:`add` one face's ``(track, time_s, label)`` at a time, in time order per track;
    :meth:`summary` says how often labels changed over all tracks so far.
    """

    def __init__(self) -> None:
        self._last: dict[Any, tuple[float, str]] = {}
        self._first: dict[Any, float] = {}
        self.changes = 0

    def add(self, track: Any, time_s: float, label: Any) -> None:
        """Count one face's reading (``label`` compared with the same track's previous one)."""
        previous = self._last.get(track)
        if previous is None:
            self._first[track] = float(time_s)
        else:
            self.changes += previous[1] != label
        self._last[track] = (float(time_s), label)

    @property
    def tracks(self) -> int:
        """How many tracks were seen."""
        return len(self._last)

    @property
    def track_seconds(self) -> float:
        """Seconds from each track's first reading to its last, summed over the tracks."""
        return sum(self._last[t][0] - self._first[t] for t in self._last)

    def summary(self, digits: int = 3) -> dict[str, float]:
        """``{"changes": n, "track_seconds": s, "changes_per_s": n / s, "tracks": k}`` (s rounded to ``digits``)."""
        seconds = self.track_seconds
        return {"changes": self.changes, "track_seconds": round(seconds, digits),
                "changes_per_s": round(self.changes / seconds, 4) if seconds > 0 else 0.0, "tracks": self.tracks}


def label_flicker(rows: Iterable[dict], *, label_key: str = "label") -> dict[str, float]:
    """Label changes per second of track time, over all tracks of one video.

    ``rows`` are per-face records with ``track``, ``time_s`` and ``label_key`` (rows missing one
    are skipped), in any order: each track's rows are counted in time order.
    Returns ``{"changes": n, "track_seconds": s, "changes_per_s": n / s, "tracks": k}``.
    """
    kept = [(float(row["time_s"]), row["track"], str(row[label_key])) for row in rows
            if row.get("track") is not None and row.get("time_s") is not None and row.get(label_key) is not None]
    meter = LabelFlicker()
    for time_s, track, label in sorted(kept, key=lambda x: x[0]):
        meter.add(track, time_s, label)
    return meter.summary()
