"""Detector names -> detectors: the one place ``--detector``, the recogniser and the server
turn a name into a face detector."""

from __future__ import annotations

from typing import Any

__all__ = ["DETECTORS", "FAST_DETECTORS", "create_detector"]

#: ``mtcnn``: facenet-pytorch MTCNN (photos, ``prepare``); ``fast``: BlazeFace short-range in ONNX
#: Runtime (video and live, :mod:`ferwild.detectors.blazeface`); ``fast-tiled``: the same, also over
#: overlapping tiles (groups: faces down to ~1/8 of the frame's height); ``none``: one face crop each.
DETECTORS = ("mtcnn", "fast", "fast-tiled", "none")
#: The BlazeFace detectors (one score scale, tiled or not).
FAST_DETECTORS = ("fast", "fast-tiled")


def create_detector(name: str, *, min_confidence: float | None = None, device: str = "cpu",
                    video: bool = False) -> Any:
    """The detector called ``name`` (one of :data:`DETECTORS`); ``None`` for ``"none"`` (each
    image already is one face crop).

    Every detector has ``name`` (the name it was built from), ``min_confidence`` and ``detect``
    / ``detect_all`` (one entry per image: a list of
    :class:`~ferwild.data.faces.FaceDetection` or the exception for that image).

    Args:
        name: ``"mtcnn"``, ``"fast"``, ``"fast-tiled"`` or ``"none"``.
        min_confidence: score threshold; None: the detector's own default (MTCNN 0.9, BlazeFace
            :data:`~ferwild.detectors.blazeface.DEFAULT_MIN_CONFIDENCE`, or with ``video``
            :data:`~ferwild.detectors.blazeface.VIDEO_MIN_CONFIDENCE`: the score scales differ).
        device: where MTCNN runs (``"cpu"``, ``"cuda"``); BlazeFace runs in ONNX Runtime on the CPU.
        video: live video frames rather than photos: BlazeFace's stricter default, so that an
            empty scene stays empty (photos hold a face to find; see ``detectors/blazeface.py``).

    Raises:
        ValueError: an unknown name ("unknown detector ...", listing the known ones) or a
            threshold out of [0, 1].
    """
    kwargs = {} if min_confidence is None else {"min_confidence": float(min_confidence)}
    if name in FAST_DETECTORS:
        from ferwild.detectors.blazeface import VIDEO_MIN_CONFIDENCE, BlazeFaceDetector  # ONNX Runtime: when used

        if video and min_confidence is None:
            kwargs["min_confidence"] = VIDEO_MIN_CONFIDENCE
        return BlazeFaceDetector(tiles=name == "fast-tiled", **kwargs)
    if name == "mtcnn":
        from ferwild.detectors.mtcnn import MTCNNDetector

        return MTCNNDetector(device=device, **kwargs)
    if name == "none":
        return None
    raise ValueError(f"unknown detector {name!r}; expected one of {DETECTORS}")
