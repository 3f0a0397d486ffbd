"""The detectors' one home (``ferwild.detectors``): the factory, the names detectors carry, and
MTCNN's rule for images smaller than its smallest face."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ferwild.data.faces import FaceDetector
from ferwild.detectors import DETECTORS, FAST_DETECTORS, BlazeFaceDetector, MTCNNDetector, create_detector
from ferwild.detectors.blazeface import DEFAULT_MIN_CONFIDENCE
from ferwild.serve import live_detector_for


def test_the_factory_builds_every_name_and_each_detector_names_itself():
    for name in DETECTORS:
        detector = create_detector(name)
        if name == "none":
            assert detector is None
            continue
        assert detector.name == name and callable(detector.detect) and callable(detector.detect_all)
    assert set(FAST_DETECTORS) < set(DETECTORS)
    assert isinstance(create_detector("fast"), BlazeFaceDetector) and not create_detector("fast").tiles
    assert create_detector("fast-tiled").tiles


def test_default_thresholds_and_a_given_one():
    # the two score scales differ: each detector keeps its own default unless told
    assert create_detector("fast").min_confidence == DEFAULT_MIN_CONFIDENCE
    assert create_detector("fast-tiled").min_confidence == DEFAULT_MIN_CONFIDENCE
    assert create_detector("mtcnn").min_confidence == 0.9
    assert create_detector("fast-tiled", min_confidence=0.8).min_confidence == 0.8
    assert create_detector("mtcnn", min_confidence=0.7).min_confidence == 0.7


def test_unknown_names_and_bad_thresholds_raise():
    with pytest.raises(ValueError, match=r"unknown detector 'haar'; expected one of \('mtcnn', 'fast', "
                                         r"'fast-tiled', 'none'\)"):
        create_detector("haar")
    for name in ("fast", "fast-tiled", "mtcnn"):
        with pytest.raises(ValueError, match="min_confidence"):
            create_detector(name, min_confidence=1.5)


def test_mtcnn_reads_no_face_in_an_image_smaller_than_its_smallest_face():
    """The recogniser's MTCNN answers no face for images it cannot search; the wrapper prepare
    uses still reports MTCNN's own exception (prepare's manifest says why)."""
    rng = np.random.default_rng(0)
    ok = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    tiny, sliver = np.zeros((5, 5, 3), np.uint8), np.zeros((3, 400, 3), np.uint8)
    # 15 px tall once the 2000 px side is brought down to max_side (640): too small as well
    strip = rng.integers(0, 256, (48, 2000, 3), dtype=np.uint8)
    detector = create_detector("mtcnn")
    assert isinstance(detector, MTCNNDetector) and isinstance(detector, FaceDetector)
    assert [detector.too_small(i) for i in (ok, tiny, sliver, strip)] == [False, True, True, True]
    out = detector.detect([ok, tiny, ok.copy(), sliver, strip, np.zeros((20, 20), np.float32)])
    assert out[1] == [] and out[3] == [] and out[4] == []
    assert isinstance(out[0], list) and isinstance(out[2], list)
    assert isinstance(out[5], TypeError)  # a bad image is still that image's error
    raw = FaceDetector().detect([tiny, ok])
    assert isinstance(raw[0], Exception) and isinstance(raw[1], list)


def test_the_live_detector_is_a_known_name():
    for name in DETECTORS:
        assert live_detector_for(name) in DETECTORS
    assert live_detector_for("mtcnn") == "fast-tiled" and live_detector_for("fast") == "fast"
    assert live_detector_for("custom") == "custom"  # a custom detector's name is kept


def test_importing_the_detectors_imports_neither_torch_nor_onnxruntime():
    code = ("import sys, ferwild.detectors as d; d.create_detector('none'); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'facenet_pytorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_live_video_gets_the_stricter_fast_threshold_and_a_given_one_wins():
    from ferwild.detectors.blazeface import VIDEO_MIN_CONFIDENCE

    assert VIDEO_MIN_CONFIDENCE > DEFAULT_MIN_CONFIDENCE
    for name in FAST_DETECTORS:
        assert create_detector(name, video=True).min_confidence == VIDEO_MIN_CONFIDENCE
        assert create_detector(name, video=True, min_confidence=0.55).min_confidence == 0.55
    assert create_detector("mtcnn", video=True).min_confidence == create_detector("mtcnn").min_confidence
