"""Tests for ferwild.data.faces: geometry, the align_faces policy, the MTCNN guard, real photos.

The geometry and policy tests use synthetic arrays and a stub detector (fast). The detector tests
run the real facenet-pytorch MTCNN on CPU (its weights ship in the wheel, nothing downloads).
Tests on real photos and FER2013 crops read ../shared/data and skip when it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data_dir
from PIL import Image, ImageDraw, ImageOps

from ferwild.data.faces import (
    ARCFACE_TEMPLATE_112,
    DEFAULT_MARGIN,
    AlignResult,
    FaceDetection,
    FaceDetector,
    align_face,
    align_faces,
    center_crop,
    choose_face,
    contact_sheet,
    resize_image,
    similarity_transform,
    template_points,
)

SHARED = shared_data_dir()
PHOTOS = SHARED / "face_photos"


def _rotation(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


# ------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------


def test_template_points_margin_shrinks_toward_centre():
    np.testing.assert_allclose(template_points(112, margin=0.0), ARCFACE_TEMPLATE_112)
    size = 224
    tight, loose = template_points(size, 0.0), template_points(size, 0.5)
    centre = np.array([size / 2, size / 2])
    # Every point moves toward the centre by exactly 1/(1+margin).
    np.testing.assert_allclose(loose - centre, (tight - centre) / 1.5)
    assert template_points(size).shape == (5, 2)
    np.testing.assert_allclose(template_points(size), template_points(size, DEFAULT_MARGIN))


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_recovers_known_transform(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-50, 150, size=(7, 2))
    angle, scale, shift = rng.uniform(-180, 180), rng.uniform(0.2, 5.0), rng.uniform(-80, 80, 2)
    lin = scale * _rotation(angle)
    dst = src @ lin.T + shift
    m = similarity_transform(src, dst)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[:, :2], lin, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-7)
    np.testing.assert_allclose(_apply(m, src), dst, atol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_never_reflects(seed):
    rng = np.random.default_rng(100 + seed)
    src = rng.uniform(0, 100, size=(5, 2))
    mirrored = src * np.array([-1.0, 1.0]) + 300  # the best fit would be a reflection
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    # Still a similarity: equal singular values (uniform scale, no shear).
    s = np.linalg.svd(m[:, :2], compute_uv=False)
    assert s[0] == pytest.approx(s[1])


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), template_points(224))
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        similarity_transform(np.full((5, 2), np.nan), template_points(224))


@pytest.mark.parametrize("face_scale", [1.7, 3.5])  # 3.5: the crop is >2x smaller (reduce path)
def test_align_face_maps_marker_dots_onto_template(face_scale):
    size = 224
    tpl = template_points(size)
    # Place the landmarks in a big image: template scaled up, rotated by 20 degrees, shifted.
    lin = face_scale * _rotation(20.0)
    landmarks = (tpl - size / 2) @ lin.T + np.array([520.0, 430.0])
    img = Image.new("RGB", (1000, 900), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    r = 1.5 * face_scale  # dots of ~3 px diameter after alignment
    for x, y in landmarks:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255))
    crop = align_face(np.asarray(img), landmarks, size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8

    mass = crop[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0:size, 0:size]
    inside = 0.0
    for tx, ty in tpl:
        win = (np.abs(xs - tx) <= 8) & (np.abs(ys - ty) <= 8)
        w = mass * win
        assert w.sum() > 0, f"no dot near template point ({tx:.1f}, {ty:.1f})"
        cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
        assert math.hypot(cx - tx, cy - ty) < 2.0
        inside += w.sum()
    # All the bright pixels are at the template points, none elsewhere.
    assert inside / mass.sum() > 0.99


def test_align_face_identity_is_lossless_and_outside_is_black():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    # Landmarks already on the template: the warp is the identity (no half-pixel shift).
    out = align_face(img, template_points(224), size=224)
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1
    # A face near the top-left corner of a white image: what falls outside is black.
    white = np.full((300, 300, 3), 255, np.uint8)
    corner = align_face(white, template_points(40) - 10, size=224)
    assert corner[0, 0].tolist() == [0, 0, 0]
    assert corner[-1, -1].tolist() == [255, 255, 255]


def test_resize_image_keeps_channels_and_center_crop_is_centred():
    gray = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40, 1)
    assert resize_image(gray, 16).shape == (16, 16, 1)
    assert resize_image(gray[:, :, 0], 16).shape == (16, 16)
    assert resize_image(np.zeros((30, 40, 3), np.uint8), 16).shape == (16, 16, 3)
    same = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_image(same, 16), same)
    # Wide image: red | green (the centred square) | blue.
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40, 0] = 255
    wide[:, 40:80, 1] = 255
    wide[:, 80:, 2] = 255
    crop = center_crop(wide, 20)
    assert crop.shape == (20, 20, 3)
    assert (crop[:, :, 1] > 250).all() and (crop[:, :, [0, 2]] < 5).all()


def _det(x1, y1, x2, y2, conf=0.99):
    return FaceDetection(box=(x1, y1, x2, y2), landmarks=np.zeros((5, 2)), confidence=conf)


def test_choose_face_picks_largest_box():
    small, big, mid = _det(0, 0, 10, 10), _det(5, 5, 45, 45), _det(0, 0, 20, 30)
    best, others = choose_face([small, big, mid])
    assert best is big and others == [small, mid]
    assert choose_face([]) == (None, [])
    a, b = _det(0, 0, 10, 10), _det(50, 50, 60, 60)
    assert choose_face([a, b])[0] is a  # ties: first wins


# ------------------------------------------------------------------------------------------
# align_faces policy (synthetic images, stub detectors: fast)
# ------------------------------------------------------------------------------------------


class StubDetector:
    """Answers detect() from a list, in order; records what it was asked."""

    min_face_size = 20

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen: list[np.ndarray] = []

    def detect(self, images):
        self.seen.extend(images)
        return [self.answers.pop(0) for _ in images]


class NoDetector:
    def detect(self, images):  # pragma: no cover - must not be called
        raise AssertionError("detection must not run")


def _tiny(seed=0, h=40, w=40, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def test_align_faces_mode_none_only_resizes():
    imgs = [_tiny(0), _tiny(1, 48, 48, 1)]
    res = align_faces(imgs, "none", size=32, detector=NoDetector())
    assert [r.status for r in res] == ["aligned", "aligned"]
    assert [r.method for r in res] == ["resize", "resize"]
    assert res[0].crop.shape == (32, 32, 3) and res[1].crop.shape == (32, 32, 1)
    assert all(r.reason == "" and r.box is None for r in res)


@pytest.mark.parametrize("fallback", ["keep", "drop"])
def test_align_faces_mode_landmarks_and_fallback(fallback):
    size = 32
    imgs = [_tiny(0, 64, 64), _tiny(1), _tiny(2)]
    lms = [template_points(64), None, np.full((5, 2), np.nan)]
    res = align_faces(imgs, "landmarks", size=size, fallback=fallback, landmarks=lms,
                      detector=NoDetector())
    assert res[0].status == "aligned" and res[0].method == "landmarks"
    assert res[0].crop.shape == (size, size, 3)
    np.testing.assert_allclose(res[0].landmarks, lms[0])
    for r in res[1:]:
        assert r.reason == "no landmarks given"
        if fallback == "keep":
            assert (r.status, r.method) == ("unaligned", "center")
            assert r.crop.shape == (size, size, 3)
        else:
            assert (r.status, r.method, r.crop) == ("dropped", "", None)


@pytest.mark.parametrize("fallback", ["keep", "drop"])
def test_align_faces_mtcnn_with_stub_detector(fallback):
    size = 32
    face = FaceDetection(box=(8, 8, 56, 56), landmarks=template_points(64), confidence=0.99)
    small = FaceDetection(box=(0, 0, 10, 10), landmarks=template_points(10), confidence=0.95)
    stub = StubDetector([[small, face], [], ValueError("boom")])
    imgs = [_tiny(0, 64, 64), _tiny(1), _tiny(2, 5, 5)]
    res = align_faces(imgs, "mtcnn", size=size, fallback=fallback, detector=stub)
    assert len(stub.seen) == 3  # one batched call for all images
    r = res[0]
    assert (r.status, r.method, r.reason) == ("aligned", "mtcnn", "")
    assert r.box == face.box and r.n_faces == 2 and r.other_boxes == [small.box]
    assert r.confidence == pytest.approx(0.99)
    assert res[1].reason == "no face found" and res[1].n_faces == 0
    assert res[2].reason.startswith("detector error: ValueError: boom")
    assert "smaller than min_face_size" in res[2].reason
    for r in res[1:]:
        if fallback == "keep":
            assert (r.status, r.method, r.crop.shape) == ("unaligned", "center", (size, size, 3))
        else:
            assert (r.status, r.crop) == ("dropped", None)


def test_align_faces_reports_low_confidence_reason():
    class Thresholded(StubDetector):
        min_confidence = 0.9

        def detect_all(self, images):
            return self.detect(images)

    weak = FaceDetection(box=(0, 0, 30, 30), landmarks=template_points(30), confidence=0.71)
    res = align_faces([_tiny()], "mtcnn", detector=Thresholded([[weak]]), size=16)
    assert res[0].status == "unaligned"
    assert res[0].reason == "face confidence 0.71 < 0.90"


def test_align_faces_auto_uses_landmarks_first():
    face = FaceDetection(box=(8, 8, 56, 56), landmarks=template_points(64), confidence=0.99)
    stub = StubDetector([[face], []])
    imgs = [_tiny(0, 64, 64), _tiny(1, 64, 64), _tiny(2)]
    lms = [template_points(64), None, None]
    res = align_faces(imgs, "auto", size=16, landmarks=lms, detector=stub)
    assert [r.method for r in res] == ["landmarks", "mtcnn", "center"]
    assert [r.status for r in res] == ["aligned", "aligned", "unaligned"]
    # Only the images without landmarks went to the detector.
    assert len(stub.seen) == 2 and stub.seen[0] is imgs[1] and stub.seen[1] is imgs[2]


def test_align_faces_accepts_landmarks_as_tables_return_them():
    # Flat 10 numbers and an object array of 2-arrays (what pandas/Parquet give back).
    lm = template_points(64)
    nested = np.empty(5, dtype=object)
    nested[:] = [row for row in lm]
    imgs = [_tiny(0, 64, 64), _tiny(0, 64, 64), _tiny(0, 64, 64)]
    res = align_faces(imgs, "landmarks", size=16, landmarks=[lm, lm.reshape(-1).tolist(), nested])
    assert [r.status for r in res] == ["aligned"] * 3
    np.testing.assert_array_equal(res[1].crop, res[0].crop)
    np.testing.assert_array_equal(res[2].crop, res[0].crop)


def test_align_faces_rejects_bad_arguments():
    imgs = [_tiny()]
    with pytest.raises(ValueError):
        align_faces(imgs, "dlib")
    with pytest.raises(ValueError):
        align_faces(imgs, "none", fallback="ignore")
    with pytest.raises(ValueError):
        align_faces(imgs, "landmarks")  # no landmarks given at all
    with pytest.raises(ValueError):
        align_faces(imgs, "landmarks", landmarks=[None, None])  # wrong length
    with pytest.raises(ValueError):
        align_faces(imgs, "landmarks", landmarks=[np.zeros((68, 2))])  # wrong shape


def test_contact_sheet_writes_png(tmp_path):
    crops = [_tiny(i, 32, 32) for i in range(5)] + [None, _tiny(9, 32, 32, 1)]
    path = tmp_path / "sub" / "sheet.png"
    contact_sheet(crops, [f"crop {i}" for i in range(7)], path, cols=3, title="t")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    with pytest.raises(ValueError):
        contact_sheet(crops, ["one caption"], path)


# ------------------------------------------------------------------------------------------
# Real MTCNN
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_detector_reports_mtcnn_error_in_its_slot(detector):
    rng = np.random.default_rng(0)
    ok48 = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    ok_rect = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    # MTCNN's pyramid is empty when the short side < min_face_size: facenet-pytorch raises
    # "torch.cat(): expected a non-empty list of Tensors".
    tiny, thin = np.zeros((5, 5, 3), np.uint8), np.zeros((3, 400, 3), np.uint8)
    res = detector.detect([ok48, tiny, ok_rect, thin, ok48.copy()])
    assert len(res) == 5
    assert isinstance(res[1], Exception) and isinstance(res[3], Exception)
    assert all(isinstance(res[i], list) for i in (0, 2, 4))


def test_detector_retries_a_failing_batch_one_by_one(detector, monkeypatch):
    real_detect = detector._mtcnn.detect
    calls = []

    def flaky(batch, landmarks=False):
        # Simulate an image that makes facenet raise inside a batch of equal-size images.
        calls.append(len(batch))
        if any(img[0, 0, 0] == 7 for img in batch):
            raise RuntimeError("poisoned image")
        return real_detect(batch, landmarks=landmarks)

    monkeypatch.setattr(detector._mtcnn, "detect", flaky)
    imgs = [np.full((48, 48, 3), 128, np.uint8) for _ in range(4)]
    imgs[2][0, 0, 0] = 7
    res = detector.detect(imgs)
    assert calls == [4, 1, 1, 1, 1]  # the batch, then each image alone
    assert isinstance(res[2], RuntimeError)
    assert all(isinstance(res[i], list) for i in (0, 1, 3))


@pytest.mark.shared_data
def test_detector_downscale_keeps_original_coordinates(detector):
    # The same scene at 240p and 1080p (downscaled to 640 px for detection): the big image's
    # landmarks must come back in its own coordinates, i.e. 4.5x those of the small one.
    if not PHOTOS.is_dir():
        pytest.skip("../shared/data not present")
    small = _load_photo(PHOTOS / "face_recognition" / "obama-240p.jpg")
    big = _load_photo(PHOTOS / "face_recognition" / "obama-1080p.jpg")  # downscaled to 640
    (d_small,), (d_big,) = detector.detect([small]), detector.detect([big])
    f = big.shape[1] / small.shape[1]  # 4.5
    assert 0 <= d_big[0].box[0] < big.shape[1] and d_big[0].box[2] > small.shape[1]
    np.testing.assert_allclose((d_big[0].landmarks + 0.5) / f - 0.5, d_small[0].landmarks,
                               atol=2.0)


# ------------------------------------------------------------------------------------------
# Real photos (../shared/data)
# ------------------------------------------------------------------------------------------


def _load_photo(path: Path) -> np.ndarray:
    """Load like the project's loader will: EXIF orientation, alpha onto white, RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(im.convert("RGB"))


SINGLE_PORTRAITS = [
    "face_recognition/obama.jpg",
    "face_recognition/obama1.jpg",
    "face_recognition/obama2.jpg",
    "face_recognition/obama3.jpg",
    "face_recognition/obama-240p.jpg",
    "face_recognition/obama-480p.jpg",
    "face_recognition/obama-720p.jpg",
    "face_recognition/obama-1080p.jpg",
    "face_recognition/obama_small.jpg",
    "face_recognition/biden.jpg",
    "face_recognition/biden2.jpg",
    "face_recognition/32bit.png",
    "face_recognition/alex-lacamoire.png",
    "face_recognition/alex_lacamoire1.jpg",
    "face_recognition/img1.jpg",
    "face_recognition/img2.jpg",
    "face_recognition/john1.jpeg",
    "face_recognition/john2.jpeg",
    "face_recognition/johnsnow_test1.jpg",
    "face_recognition/lin-manuel-miranda.png",
    "pyfeat/single_face.jpg",
    "pyfeat/0-f1-su-ph.jpg",
    "pyfeat/0-f15-hao-ph.jpg",
    "pyfeat/15-f13-anc-ph.jpg",
    "pyfeat/45-m7-di-ph.jpg",
    "pyfeat/Image_with_alpha.png",
]
# Frontal, whole faces: after alignment a re-detection must find the landmarks on the template.
# Left out: partial faces (obama_partial_face*.jpg: half the face is outside the photo, MTCNN
# still "finds" one and the crop is half black) and the profile 45-m7-di-ph.jpg.
FRONTAL = [n for n in SINGLE_PORTRAITS if "45-m7" not in n]
MULTI = {"pyfeat/multi_face.jpg": 4, "face_recognition/two_people.jpg": 2,
         "face_recognition/obama_and_biden.jpg": 2, "face_recognition/kit_with_rose.jpg": 2}
NO_FACE = "pyfeat/free-mountain-vector-01.jpg"


@pytest.fixture(scope="module")
def photo_results(detector):
    if not PHOTOS.is_dir():
        pytest.skip("../shared/data not present")
    names = SINGLE_PORTRAITS + list(MULTI) + [NO_FACE]
    images = [_load_photo(PHOTOS / n) for n in names]
    results = align_faces(images, "mtcnn", detector=detector, fallback="keep")
    return dict(zip(names, images)), dict(zip(names, results))


@pytest.mark.shared_data
@pytest.mark.parametrize("name", SINGLE_PORTRAITS)
def test_single_portraits_align(photo_results, name):
    r: AlignResult = photo_results[1][name]
    assert (r.status, r.method, r.reason) == ("aligned", "mtcnn", "")
    assert r.n_faces >= 1 and r.confidence >= 0.9
    assert r.crop.shape == (224, 224, 3) and r.landmarks.shape == (5, 2)
    # The landmarks sit inside the chosen box.
    x1, y1, x2, y2 = r.box
    assert (r.landmarks[:, 0] > x1).all() and (r.landmarks[:, 0] < x2).all()
    assert (r.landmarks[:, 1] > y1).all() and (r.landmarks[:, 1] < y2).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("name,at_least", list(MULTI.items()))
def test_multi_face_photos_record_other_boxes(photo_results, name, at_least):
    r = photo_results[1][name]
    assert r.status == "aligned" and r.n_faces >= at_least
    assert len(r.other_boxes) == r.n_faces - 1
    # The chosen face is the largest.
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert all(area(r.box) >= area(b) for b in r.other_boxes)


@pytest.mark.shared_data
def test_photo_without_face_falls_back(photo_results, detector):
    images, results = photo_results
    kept = results[NO_FACE]
    assert (kept.status, kept.method, kept.n_faces) == ("unaligned", "center", 0)
    assert kept.reason == "no face found" and kept.crop.shape == (224, 224, 3)
    (dropped,) = align_faces([images[NO_FACE]], "mtcnn", detector=detector, fallback="drop")
    assert (dropped.status, dropped.crop, dropped.reason) == ("dropped", None, "no face found")


@pytest.mark.shared_data
def test_aligned_crops_put_landmarks_on_template(photo_results, detector):
    _, results = photo_results
    crops = [results[n].crop for n in FRONTAL]
    redetected = detector.detect(crops)  # 224x224 crops: one batched call
    tpl = template_points(224)
    for name, r, found in zip(FRONTAL, (results[n] for n in FRONTAL), redetected):
        assert isinstance(found, list) and found, f"{name}: no face found again in the crop"
        best, _ = choose_face(found)
        # Where the alignment said the landmarks would go (the warp is exact) ...
        expected = _apply(similarity_transform(r.landmarks, tpl), r.landmarks)
        assert np.linalg.norm(best.landmarks - expected, axis=1).mean() < 5.0, name
        # ... and that is near the template (faces differ from it by a few pixels).
        assert np.linalg.norm(best.landmarks - tpl, axis=1).mean() < 0.05 * 224, name


@pytest.mark.shared_data
def test_error_slot_next_to_real_faces(detector):
    if not PHOTOS.is_dir() or not (SHARED / "fer2013").is_dir():
        pytest.skip("../shared/data not present")
    face = _load_photo(PHOTOS / "face_recognition" / "obama_small.jpg")
    fer = sorted((SHARED / "fer2013" / "train" / "happy").glob("*.jpg"))[:8]
    fers = [_load_photo(p) for p in fer]
    tiny = np.zeros((2, 2, 3), np.uint8)
    res = detector.detect([face, tiny, *fers])
    assert isinstance(res[1], Exception)
    assert isinstance(res[0], list) and len(res[0]) >= 1
    assert all(isinstance(r, list) for r in res[2:])
    results = align_faces([face, tiny], "mtcnn", detector=detector)
    assert results[0].status == "aligned"
    assert results[1].status == "unaligned" and results[1].reason.startswith("detector error")


@pytest.mark.shared_data
def test_fer2013_crops_never_raise(detector, record_property):
    happy = SHARED / "fer2013" / "train" / "happy"
    if not happy.is_dir():
        pytest.skip("../shared/data not present")
    paths = sorted(happy.glob("*.jpg"))[:60]
    images = [_load_photo(p) for p in paths]  # grayscale JPEGs -> (48, 48, 3)
    results = align_faces(images, "mtcnn", detector=detector, fallback="keep")
    assert len(results) == len(images) == 60
    assert all(r.status in ("aligned", "unaligned") and r.crop is not None for r in results)
    fraction = sum(r.status == "aligned" for r in results) / len(results)
    record_property("fer2013_face_fraction", fraction)
    print(f"FER2013 happy: MTCNN face in {fraction:.0%} of {len(results)} crops")
