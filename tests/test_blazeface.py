"""The fast detector (MediaPipe BlazeFace short range in ONNX Runtime, decoded in numpy).

Geometry is checked against exact expectations (anchors, tiles, the letterbox undone),
landmarks against MTCNN on real portraits, and the recogniser's ``detector="fast"`` path
against its own ``analyze``.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferwild.detectors.blazeface import (
    BLAZEFACE_MODEL,
    DEFAULT_MIN_CONFIDENCE,
    VIDEO_MIN_CONFIDENCE,
    KEYPOINTS_IN_TEMPLATE,
    MEDIAPIPE_MIN_CONFIDENCE,
    BlazeFaceDetector,
    blazeface_anchors,
    five_points,
    square_tiles,
)
from ferwild.data.faces import ARCFACE_TEMPLATE_112, FaceDetection
from ferwild.tracking import iou

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "ferwild" / "weights" / "blazeface"

# single-face portraits of face_photos/ on which BlazeFace's and MTCNN's landmarks are compared
PORTRAITS = ["face_recognition/obama.jpg", "face_recognition/biden2.jpg", "face_recognition/img2.jpg",
             "face_recognition/obama_small.jpg", "pyfeat/single_face.jpg"]


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def tiled() -> BlazeFaceDetector:
    return BlazeFaceDetector(tiles=True)


@pytest.fixture(scope="module")
def loose() -> BlazeFaceDetector:
    """At MediaPipe's own threshold: for geometry checks on synthetic frames (a face turned on
    its side scores ~0.6, under ferwild's default)."""
    return BlazeFaceDetector(min_confidence=MEDIAPIPE_MIN_CONFIDENCE)


@pytest.fixture(scope="module")
def mtcnn():
    from ferwild.data.faces import FaceDetector

    return FaceDetector()


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _inter_ocular(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[1] - landmarks[0]))


# ---------------------------------------------------------------------------------------------
# anchors, tiles, five points: exact geometry
# ---------------------------------------------------------------------------------------------

def test_anchors_are_mediapipes_short_range_grid():
    a = blazeface_anchors()
    assert a.shape == (896, 2) and a.dtype == np.float32
    assert (a > 0).all() and (a < 1).all()
    # stride 8: a 16x16 grid, two anchors per cell, x fastest
    np.testing.assert_allclose(a[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [3 / 32, 1 / 32])
    np.testing.assert_allclose(a[32], [1 / 32, 3 / 32])   # second row
    np.testing.assert_allclose(a[511], [31 / 32, 31 / 32])
    # strides 16, 16, 16 share an 8x8 grid: six anchors per cell from index 512 on
    np.testing.assert_allclose(a[512], [1 / 16, 1 / 16])
    np.testing.assert_allclose(a[512:518], np.tile([[1 / 16, 1 / 16]], (6, 1)))
    np.testing.assert_allclose(a[518], [3 / 16, 1 / 16])
    np.testing.assert_allclose(a[-1], [15 / 16, 15 / 16])
    assert len(np.unique(a[:512], axis=0)) == 256 and len(np.unique(a[512:], axis=0)) == 64


@pytest.mark.parametrize("height,width", [(720, 1280), (1280, 720), (360, 640), (400, 600), (720, 1281),
                                          (100, 1000), (500, 500), (1, 1), (37, 38)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_square_tiles_cover_the_image_with_the_overlap_asked(height, width, overlap):
    tiles = square_tiles(height, width, overlap)
    side = min(height, width)
    assert all(s == side for _, _, s in tiles)
    assert all(0 <= x and x + side <= width and 0 <= y and y + side <= height for x, y, _ in tiles)
    covered = np.zeros((height, width), bool)
    for x, y, s in tiles:
        covered[y:y + s, x:x + s] = True
    assert covered.all()
    long = max(height, width)
    starts = sorted(x if width >= height else y for x, y, _ in tiles)
    assert starts[0] == 0 and starts[-1] == long - side
    # neighbours overlap by at least what was asked (to a pixel of rounding) ...
    assert all(b - a <= side * (1 - overlap) + 1 for a, b in itertools.pairwise(starts))
    # ... with as few tiles as that takes
    if len(tiles) > 2:
        assert (long - side) / (len(tiles) - 2) > side * (1 - overlap)
    if height == width:
        assert tiles == [(0, 0, side)]


def test_a_long_strip_is_not_cut_into_hundreds_of_tiles():
    """1x900 would need 1,200 tiles (one detection each): beyond max_tiles the image is searched whole."""
    calls = []
    detector = BlazeFaceDetector(tiles=True)
    original = detector._raw_one
    detector._raw_one = lambda img, floor: calls.append(img.shape) or original(img, floor)
    assert detector.detect([np.zeros((1, 900, 3), np.uint8), np.zeros((20, 2000, 3), np.uint8)]) == [[], []]
    assert len(calls) == 2
    calls.clear()
    detector.detect([np.zeros((720, 1280, 3), np.uint8)])
    assert len(calls) == 4  # the whole frame and its 3 tiles


def test_square_tiles_of_a_16_9_frame():
    assert square_tiles(720, 1280, 0.25) == [(0, 0, 720), (280, 0, 720), (560, 0, 720)]
    assert square_tiles(1280, 720, 0.25) == [(0, 0, 720), (0, 280, 720), (0, 560, 720)]
    assert len(square_tiles(400, 600, 0.25)) == 2  # a 3:2 photo


def test_five_points_is_the_similarity_fit_of_the_calibrated_keypoints():
    unit = ARCFACE_TEMPLATE_112 / 112.0
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale, shift = 150.0, np.array([310.0, 95.0])
    keypoints = KEYPOINTS_IN_TEMPLATE @ rot.T * scale + shift
    np.testing.assert_allclose(five_points(keypoints), unit @ rot.T * scale + shift, atol=1e-6)
    # the ear tragions (keypoints 4, 5) play no part
    six = np.vstack([keypoints, [[0.0, 0.0], [1e4, -1e4]]])
    np.testing.assert_allclose(five_points(six), five_points(keypoints), atol=1e-9)


def test_invalid_settings_are_refused():
    for kwargs in ({"min_confidence": -0.1}, {"min_confidence": 1.5}, {"nms_iou": 0.0}, {"nms_iou": 1.2},
                   {"tile_overlap": 1.0}, {"tile_overlap": -0.1}):
        with pytest.raises(ValueError):
            BlazeFaceDetector(**kwargs)


def test_shipped_model_matches_the_recorded_sha256():
    readme = WEIGHTS / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not written yet: no recorded sha256 to compare with")
    recorded = re.search(r"sha256 of the ONNX file\W*([0-9a-f]{64})", readme.read_text())
    assert recorded, "the weights README records no sha256 of the ONNX file"
    digest = hashlib.sha256((WEIGHTS / BLAZEFACE_MODEL).read_bytes()).hexdigest()
    assert digest == recorded.group(1)
    assert (WEIGHTS / "LICENSE").is_file()


# ---------------------------------------------------------------------------------------------
# real photos
# ---------------------------------------------------------------------------------------------

@pytest.mark.shared_data
@pytest.mark.parametrize("name", PORTRAITS)
def test_landmarks_and_box_agree_with_mtcnn_on_real_portraits(shared_data, detector, mtcnn, name):
    image = _rgb(shared_data / "face_photos" / name)
    fast, = detector.detect([image])[0]   # exactly one face
    slow, = mtcnn.detect([image])[0]
    assert isinstance(fast, FaceDetection) and fast.landmarks.shape == (5, 2)
    assert 0.5 <= fast.confidence <= 1.0
    iod = _inter_ocular(slow.landmarks)
    error = np.linalg.norm(fast.landmarks[:3] - slow.landmarks[:3], axis=1).mean() / iod
    assert error < 0.15, f"{name}: eyes+nose off by {error:.3f} inter-ocular distances"
    assert iou(fast.box, slow.box) > 0.4
    # image-left eye and mouth corner first, as MTCNN; eyes above the nose above the mouth
    lm = fast.landmarks
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    # the five points are five_points() of BlazeFace's own six keypoints
    (box, keypoints), = detector.raw_keypoints([image])[0]
    assert keypoints.shape == (6, 2)
    np.testing.assert_allclose(box, fast.box, atol=1e-6)
    np.testing.assert_allclose(five_points(keypoints), fast.landmarks, atol=1e-6)
    assert np.linalg.norm(keypoints[:2] - lm[:2], axis=1).max() < 0.15 * iod


@pytest.mark.shared_data
def test_letterbox_is_undone_exactly_when_the_model_sees_the_same_input(shared_data, loose):
    """A 16:9 frame and the same frame padded to a square with the letterbox's own padding
    value give the model the same 128x128 input: boxes and landmarks must differ by exactly
    the padding offset (both orientations)."""
    face = np.asarray(Image.open(shared_data / "face_photos/pyfeat/single_face.jpg").convert("RGB").resize((400, 400)))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[200:600, 600:1000] = face
    # the padding value the letterbox writes (tensor in [-1, 1]), as a pixel value
    tensor = loose._letterbox(frame)[0]
    fill = int(np.clip(round((float(tensor[0, 0, 0, 0]) + 1.0) * 127.5), 0, 255))
    for image in (frame, np.ascontiguousarray(frame.transpose(1, 0, 2))):
        h, w = image.shape[:2]
        square = np.full((1280, 1280, 3), fill, np.uint8)
        oy, ox = (1280 - h) // 2, (1280 - w) // 2
        square[oy:oy + h, ox:ox + w] = image
        a, = loose.detect([image])[0]
        b, = loose.detect([square])[0]
        # 1 px here is 0.1 px of the model's input
        np.testing.assert_allclose(np.array(b.box) - [ox, oy, ox, oy], a.box, atol=1.0)
        np.testing.assert_allclose(b.landmarks - [ox, oy], a.landmarks, atol=1.0)
        assert abs(a.confidence - b.confidence) < 0.01


@pytest.mark.shared_data
@pytest.mark.parametrize("size", [(128, 128), (128, 96), (96, 128)])
def test_pixel_centre_landmarks_scale_exactly_with_the_image(shared_data, detector, size):
    """An image of 128 px and its k-fold pixel-repeated copy give the model the same input (the
    copy is box-reduced by k): boxes (continuous coordinates) scale by k, and landmarks (pixel
    centres: x_k = k x + (k - 1) / 2) too, to float precision (square and letterboxed inputs)."""
    small = np.asarray(Image.open(shared_data / "face_photos/pyfeat/single_face.jpg").convert("RGB").resize(size))
    base, = detector.detect([small])[0]
    for k in (2, 3):
        big = np.repeat(np.repeat(small, k, axis=0), k, axis=1)
        det, = detector.detect([big])[0]
        np.testing.assert_allclose(det.box, k * np.array(base.box), atol=1e-6)
        np.testing.assert_allclose(det.landmarks, k * base.landmarks + (k - 1) / 2, atol=1e-6)
        assert det.confidence == pytest.approx(base.confidence, abs=1e-6)


@pytest.mark.shared_data
@pytest.mark.parametrize("height,width,offsets", [
    (900, 900, [(0, 0), (300, 200), (497, 451)]),
    (600, 1100, [(0, 0), (650, 150), (333, 77)]),    # landscape: letterboxed top and bottom
    (1100, 600, [(0, 0), (100, 613), (181, 357)]),   # portrait: letterboxed left and right
])
def test_a_face_moved_in_the_frame_moves_its_box_and_landmarks(shared_data, detector, height, width, offsets):
    face = np.asarray(Image.open(shared_data / "face_photos/pyfeat/single_face.jpg").convert("RGB").resize((400, 400)))
    tol = 3.0 * max(height, width) / 128  # three pixels of the model's 128 px input
    first = None
    for ox, oy in offsets:
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[oy:oy + 400, ox:ox + 400] = face
        det, = detector.detect([canvas])[0]
        box, landmarks = np.array(det.box) - [ox, oy, ox, oy], det.landmarks - [ox, oy]
        if first is None:
            first = box, landmarks
            assert 0 <= box[0] < box[2] <= 400 and 0 <= box[1] < box[3] <= 400  # on the face
            continue
        assert np.abs(box - first[0]).max() < tol
        assert np.abs(landmarks - first[1]).max() < tol


@pytest.mark.shared_data
def test_a_mirrored_photo_gives_mirrored_landmarks_image_left_first(shared_data, detector):
    image = _rgb(shared_data / "face_photos/pyfeat/single_face.jpg")
    w = image.shape[1]
    a, = detector.detect([image])[0]
    b, = detector.detect([np.ascontiguousarray(image[:, ::-1])])[0]
    iod = _inter_ocular(a.landmarks)
    # mirror back: pixel centres map x -> w - 1 - x, and image-left/right swap places
    back = b.landmarks.copy()
    back[:, 0] = w - 1 - back[:, 0]
    back = back[[1, 0, 2, 4, 3]]
    assert np.linalg.norm(back - a.landmarks, axis=1).max() < 0.15 * iod
    assert b.landmarks[0, 0] < b.landmarks[1, 0] and b.landmarks[3, 0] < b.landmarks[4, 0]
    assert iou((w - b.box[2], b.box[1], w - b.box[0], b.box[3]), a.box) > 0.8


def _five_portraits(shared_data: Path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Five wild_dev faces (one per class), 256 px each, side by side in a 1280x720 frame."""
    canvas = np.zeros((720, 1280, 3), np.uint8)
    centres = []
    for i, label in enumerate(["sadness", "surprise", "neutral", "happiness", "fear"]):
        files = sorted(glob.glob(str(shared_data / "wild_dev" / label / "*.jpg")))
        if not files:
            pytest.skip(f"no wild_dev/{label} images in {shared_data}")
        face = Image.open(files[0]).convert("RGB").resize((256, 256))
        canvas[232:488, i * 256:(i + 1) * 256] = np.asarray(face)
        centres.append((i * 256 + 128.0, 360.0))
    return canvas, centres


@pytest.mark.shared_data
def test_tiles_find_five_people_side_by_side(shared_data, detector, tiled, loose):
    canvas, centres = _five_portraits(shared_data)
    whole = detector.detect([canvas])[0]
    found = tiled.detect([canvas])[0]
    assert len(whole) < 5   # each face is ~25 px to the model when the whole frame is letterboxed
    assert len(found) == 5
    inside = np.array([[d.box[0] <= cx <= d.box[2] and d.box[1] <= cy <= d.box[3] for cx, cy in centres]
                       for d in found])
    assert (inside.sum(axis=0) == 1).all() and (inside.sum(axis=1) == 1).all()  # one face each, no duplicates
    assert [d.confidence for d in found] == sorted((d.confidence for d in found), reverse=True)
    for d in found:   # tile detections are moved back into the frame: landmarks in their box
        x1, y1, x2, y2 = d.box
        assert ((d.landmarks >= [x1, y1]) & (d.landmarks <= [x2, y2])).all()
        assert d.landmarks[0, 0] < d.landmarks[1, 0]
    # each face's landmarks are where the detector puts them in that portrait alone, moved
    # to the portrait's place in the frame (eyes and nose within a quarter inter-ocular distance)
    for d, is_inside in zip(found, inside):
        i = int(np.argmax(is_inside))
        portrait = np.ascontiguousarray(canvas[232:488, i * 256:(i + 1) * 256])
        alone, = loose.detect([portrait])[0]
        expected = alone.landmarks + [i * 256, 232]
        error = np.linalg.norm(d.landmarks[:3] - expected[:3], axis=1).mean() / _inter_ocular(expected)
        assert error < 0.25, (i, error)
    assert tiled.name == "fast-tiled" and detector.name == "fast"  # the names create_detector builds them from


@pytest.mark.shared_data
def test_tiles_find_every_face_mtcnn_finds_in_a_group_photo(shared_data, detector, tiled, mtcnn):
    image = _rgb(shared_data / "face_photos/pyfeat/multi_face.jpg")
    reference = mtcnn.detect([image])[0]
    found = tiled.detect([image])[0]
    assert len(reference) == 5
    assert len(found) == len(reference)
    overlap = np.array([[iou(r.box, f.box) for f in found] for r in reference])
    assert (overlap.max(axis=1) > 0.4).all()
    assert len(set(overlap.argmax(axis=1))) == len(reference)  # a different face for each
    assert len(detector.detect([image])[0]) < len(reference)    # what the tiles are for


@pytest.mark.shared_data
def test_no_face_in_a_landscape(shared_data, detector, tiled):
    image = _rgb(shared_data / "face_photos/pyfeat/free-mountain-vector-01.jpg")
    assert detector.detect([image]) == [[]]
    assert tiled.detect([image]) == [[]]


@pytest.mark.shared_data
def test_odd_inputs_each_get_their_own_answer(shared_data, detector, tiled):
    rgb = _rgb(shared_data / "face_photos/face_recognition/obama_small.jpg")
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    images = [grey, grey[:, :, None], rgb.astype(np.float32), np.zeros((0, 0, 3), np.uint8),
              np.zeros((1, 1, 3), np.uint8), np.zeros((3, 40, 3), np.uint8), rgb]
    for det in (detector, tiled):
        out = det.detect(images)
        assert len(out) == len(images)
        assert len(out[0]) == len(out[1]) == 1                          # (H, W) and (H, W, 1) grey
        assert isinstance(out[2], TypeError) and isinstance(out[3], ValueError)  # float, empty
        assert out[4] == [] and out[5] == []                            # 1x1 and a sliver: no face
        assert len(out[6]) == 1                                         # the batch carried on
        assert iou(out[0][0].box, out[6][0].box) > 0.8   # grey finds the colour photo's face
        np.testing.assert_allclose(out[0][0].landmarks, out[1][0].landmarks)
    raw = detector.raw_keypoints([rgb.astype(np.float32), rgb])
    assert isinstance(raw[0], Exception) and len(raw[1]) == 1


@pytest.mark.shared_data
def test_min_confidence_filters_faces(shared_data):
    image = _rgb(shared_data / "face_photos/pyfeat/multi_face.jpg")
    default = BlazeFaceDetector(min_confidence=MEDIAPIPE_MIN_CONFIDENCE).detect([image])[0]
    scores = [d.confidence for d in default]
    assert len(default) >= 2 and scores == sorted(scores, reverse=True)
    threshold = (scores[0] + scores[1]) / 2
    strict = BlazeFaceDetector(min_confidence=threshold).detect([image])[0]
    assert len(strict) == 1 and strict[0].confidence == pytest.approx(scores[0])
    np.testing.assert_allclose(strict[0].box, default[0].box)
    assert BlazeFaceDetector(min_confidence=0.99).detect([image]) == [[]]
    loose = BlazeFaceDetector(min_confidence=0.2).detect([image])[0]
    assert len(loose) > len(default) and all(d.confidence >= 0.2 for d in loose)
    # detect_all still reports what MediaPipe's graph keeps (>= 0.5) when the threshold is higher
    assert len(BlazeFaceDetector(min_confidence=0.99).detect_all([image])[0]) == len(default)


# ---------------------------------------------------------------------------------------------
# the recogniser behind the fast detector
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rec_fast():
    from ferwild.recognizer import Recognizer

    return Recognizer.default(detector="fast", device="cpu")


@pytest.mark.shared_data
def test_recognizer_with_the_fast_detector(shared_data, rec_fast, detector):
    path = shared_data / "face_photos/face_recognition/obama.jpg"
    result = rec_fast.analyze([path])[0]
    assert result.error is None and len(result.faces) == 1
    face = result.faces[0]
    assert face.method == "fast" and rec_fast.detector_name == "fast"
    info = rec_fast.info()
    assert info["detector"] == "fast" and info["min_confidence"] == DEFAULT_MIN_CONFIDENCE
    assert abs(sum(face.probabilities.values()) - 1) < 1e-4
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    det, = detector.detect([_rgb(path)])[0]
    np.testing.assert_allclose(face.landmarks, det.landmarks, atol=0.01)   # rounded to 2 digits
    assert face.detection_confidence == pytest.approx(det.confidence)
    assert face.descriptor is not None and face.descriptor.shape == (256,)
    assert abs(float(np.linalg.norm(face.descriptor)) - 1) < 1e-4
    assert "descriptor" not in face.to_dict()


@pytest.mark.shared_data
def test_analyze_detected_equals_analyze(shared_data, rec_fast, detector):
    image = _rgb(shared_data / "face_photos/face_recognition/two_people.jpg")
    direct = rec_fast.analyze([image])[0]
    detections = detector.detect([image])[0]
    assert len(direct.faces) == len(detections) == 2
    given = rec_fast.analyze_detected(image, detections)
    assert given.error is None and (given.width, given.height) == (image.shape[1], image.shape[0])
    assert [f.box for f in given.faces] == [f.box for f in direct.faces]
    for a, b in zip(given.faces, direct.faces):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
        assert a.label == b.label and a.method == "fast"
    assert rec_fast.analyze_detected(image, []).faces == []
    failed = rec_fast.analyze_detected(image, RuntimeError("the detector thread died"))
    assert failed.faces == [] and "the detector thread died" in failed.error


@pytest.mark.shared_data
def test_with_detector_shares_the_model(shared_data, rec_fast):
    from ferwild.recognizer import RecognizerError

    group = rec_fast.with_detector("fast-tiled")
    assert group.classifier is rec_fast.classifier
    assert group.detector_name == "fast-tiled" and group.info()["detector"] == "fast-tiled"
    assert group.label_names == rec_fast.label_names and group.face_alignment == rec_fast.face_alignment
    result = group.analyze([shared_data / "face_photos/pyfeat/multi_face.jpg"])[0]
    assert len(result.faces) == 5 and {f.method for f in result.faces} == {"fast-tiled"}
    strict = rec_fast.with_detector("fast", min_confidence=0.8)
    assert strict.detector.min_confidence == 0.8 and strict.classifier is rec_fast.classifier
    with pytest.raises(RecognizerError):
        rec_fast.with_detector("fast", min_confidence=1.5)
    plain = rec_fast.with_detector("none")
    assert plain.detector_name == "none" and plain.classifier is rec_fast.classifier


def test_recognizer_fast_detector_on_images_without_faces(rec_fast):
    results = rec_fast.analyze([np.zeros((1, 1, 3), np.uint8), np.full((360, 640, 3), 127, np.uint8)])
    assert [(r.error, r.faces) for r in results] == [(None, []), (None, [])]


# ---------------------------------------------------------------------------------------------
# the default threshold (bench/bench_fast_detector_threshold.py chose it; issue 25)
# ---------------------------------------------------------------------------------------------

def _video_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


@pytest.mark.shared_data
def test_video_threshold_reads_no_face_in_the_no_face_video(shared_data):
    """`ferwild live no_face.mp4 --detector fast` said "6 faces, 2 people" at MediaPipe's 0.5."""
    from ferwild.detectors import create_detector

    frames = _video_frames(shared_data / "face_videos" / "no_face.mp4")
    detector = create_detector("fast", video=True)
    assert len(frames) > 60 and detector.min_confidence == VIDEO_MIN_CONFIDENCE
    found = detector.detect(frames)
    assert all(f == [] for f in found), [len(f) for f in found]
    # ... where MediaPipe's own threshold reads false faces (what the default is for)
    at_mediapipe = BlazeFaceDetector(min_confidence=MEDIAPIPE_MIN_CONFIDENCE).detect(frames)
    assert sum(len(f) for f in at_mediapipe) >= 3


@pytest.mark.shared_data
def test_default_threshold_keeps_the_group_photos_five_faces(shared_data, tiled):
    image = _rgb(shared_data / "face_photos/pyfeat/multi_face.jpg")
    found = tiled.detect([image])[0]
    assert tiled.min_confidence == DEFAULT_MIN_CONFIDENCE and len(found) == 5
    # and at the live threshold too (the page's Live mode reads groups with fast-tiled)
    from ferwild.detectors import create_detector

    assert len(create_detector("fast-tiled", video=True).detect([image])[0]) == 5
    boxes = [d.box for d in found]
    assert all(iou(a, b) < 0.3 for a, b in itertools.combinations(boxes, 2))  # five people, not one twice
