"""The inference facade: same numbers as evaluation, real detection on real photos, videos."""

from __future__ import annotations

import glob
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferwild.data.faces import FaceAlignment, FaceDetector, align_face, estimate_template, template_points
from ferwild.data.images import load_image
from ferwild.data.prepared import PreparedDataset
from ferwild.recognizer import Face, ImageResult, Recognizer, RecognizerError, find_inputs
from ferwild.tracking import FaceTracker
from ferwild.video_io import iter_video_frames


@pytest.fixture(scope="module")
def rec_none(tiny_run):
    run, _, _ = tiny_run
    return Recognizer.from_run(run, detector="none")


@pytest.fixture(scope="module")
def rec_mtcnn(tiny_run):
    run, _, _ = tiny_run
    return Recognizer.from_run(run, detector="mtcnn")


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_checkpoint_carries_the_training_face_alignment(tiny_run, rec_none):
    run, prep, _ = tiny_run
    expected = PreparedDataset(prep).face_alignment()
    assert rec_none.face_alignment == expected
    assert expected.crop_size == 32 and expected.channels == 3
    info = rec_none.info()
    assert info["label_names"] == PreparedDataset(prep).label_names
    assert info["model"] == "cnn_small" and info["backend"] == "torch"


def test_classify_matches_evaluation_on_cached_crops(tiny_run, rec_none, tmp_path):
    """Train/serve parity: the recogniser's preprocessing of aligned crops gives the same
    probabilities as `ferwild evaluate` on the same cached crops."""
    from ferwild.evaluate import evaluate_run

    run, prep, _ = tiny_run
    evaluate_run(run, prep, "test", tmp_path / "ev")
    preds = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    data = PreparedDataset(prep)
    rows = data.rows("test", include_augmented=False)
    probs = rec_none.classify(list(data.images(rows)))
    expected = preds[[f"prob_{n}" for n in rec_none.label_names]].to_numpy()
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_classify_takes_one_crop_alone_and_refuses_ambiguous_arrays(tiny_run, rec_none):
    _, prep, _ = tiny_run
    data = PreparedDataset(prep)
    crops = data.images(data.rows("test", include_augmented=False).head(3))
    one = rec_none.classify(crops[0])                   # one (S, S, C) array is one crop
    assert one.shape == (1, len(rec_none.label_names))
    np.testing.assert_allclose(one[0], rec_none.classify(crops)[0], atol=1e-6)
    assert rec_none.classify(crops[0][..., 0]).shape == (1, len(rec_none.label_names))  # (S, S) grey
    with pytest.raises(RecognizerError, match="shape"):
        rec_none.classify(np.zeros((5, 32, 32), np.uint8))  # a stack without channels: say so


def test_inputs_as_paths_arrays_and_pil_agree(tiny_run, rec_none):
    _, _, raw = tiny_run
    paths = sorted(glob.glob(str(raw / "images" / "*" / "*.png")))[:3]
    arrays = [load_image(p).array for p in paths]
    by_path = rec_none.analyze(paths)
    by_array = rec_none.analyze(arrays)
    by_pil = rec_none.analyze([Image.open(p) for p in paths])
    for a, b, c, p in zip(by_path, by_array, by_pil, paths):
        assert a.source == p and b.source.startswith("image-")
        assert a.error is None and len(a.faces) == 1 and a.faces[0].method == "whole-image"
        assert a.faces[0].box == (0.0, 0.0, 64.0, 64.0)
        assert a.faces[0].probabilities == b.faces[0].probabilities == c.faces[0].probabilities
        assert abs(sum(a.faces[0].probabilities.values()) - 1) < 1e-5
        assert a.faces[0].label == max(a.faces[0].probabilities, key=a.faces[0].probabilities.get)


def test_one_bad_input_never_spoils_the_batch(tiny_run, rec_none, tmp_path):
    _, _, raw = tiny_run
    good = sorted(glob.glob(str(raw / "images" / "*" / "*.png")))[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(Path(good).read_bytes()[:200])
    results = rec_none.analyze([good, text, tmp_path / "missing.png", truncated,
                                np.zeros((4, 4, 4), np.uint8), np.zeros((8, 8), np.float32), good])
    assert [r.error is None for r in results] == [True, False, False, False, False, False, True]
    assert "not an image" in results[1].error
    assert results[0].faces[0].probabilities == results[6].faces[0].probabilities
    with pytest.raises(RecognizerError, match="sources"):
        rec_none.analyze([good], sources=["a", "b"])


def test_grey_training_data_means_grey_inference(rec_none):
    """A model trained on a grayscale cache sees new colour faces as grey (luma), like FER2013's."""
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    luma = np.asarray(Image.fromarray(colour).convert("L"))
    grey3 = np.repeat(luma[:, :, None], 3, axis=2)
    as_colour = rec_none.classify([colour])
    grey_rec = Recognizer(rec_none.classifier, label_names=rec_none.label_names,
                          preprocessing=rec_none.preprocessing, detector="none",
                          face_alignment=FaceAlignment(crop_size=32, channels=1))
    np.testing.assert_allclose(grey_rec.classify([colour]), rec_none.classify([grey3]), atol=1e-6)
    assert not np.allclose(as_colour, rec_none.classify([grey3]), atol=1e-4)


def test_bad_arguments_fail_clearly(tiny_run, tmp_path):
    run, _, _ = tiny_run
    with pytest.raises(RecognizerError, match="no best checkpoint|not a ferwild"):
        Recognizer.from_run(tmp_path)
    with pytest.raises(RecognizerError, match="unknown detector"):
        Recognizer.from_run(run, detector="haar")
    with pytest.raises(RecognizerError, match="max_faces"):
        Recognizer.from_run(run, max_faces=0)
    with pytest.raises(RecognizerError, match="no such"):
        find_inputs([tmp_path / "nothing-here"])


# ---------------------------------------------------------------------------------------------
# videos
# ---------------------------------------------------------------------------------------------


def test_video_sampling_by_rate_and_by_stride(rec_none, tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    path = tmp_path / "clip.mp4"
    _write_video(path, frames, fps=10)
    decoded = list(iter_video_frames(path))
    assert len(decoded) == 30 and decoded[0][2].shape == (48, 64, 3)
    assert [round(t, 3) for _, t, _ in decoded[:3]] == [0.0, 0.1, 0.2]

    every = list(rec_none.analyze_video(path))
    assert [r.frame for r in every] == list(range(30))
    assert all(len(r.faces) == 1 and r.width == 64 and r.height == 48 for r in every)
    by_rate = list(rec_none.analyze_video(path, sample_fps=2.5))
    assert [r.frame for r in by_rate] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert [round(r.time_s, 2) for r in by_rate][:3] == [0.0, 0.4, 0.8]
    by_stride = list(rec_none.analyze_video(path, every_n_frames=7, max_frames=3))
    assert [r.frame for r in by_stride] == [0, 7, 14]
    # frames are classified in batches: the numbers do not depend on the batching
    assert every[7].faces[0].probabilities == by_stride[1].faces[0].probabilities


def _frame(*boxes) -> ImageResult:
    return ImageResult("v", 100, 100, faces=[Face(b, None, None, "x", 1.0, {}, "mtcnn") for b in boxes])


def test_tracker_keeps_each_person_s_number():
    tracker = FaceTracker(min_iou=0.3, max_missed=1)
    left, right = (0, 0, 20, 20), (50, 0, 70, 20)
    tracks = lambda r: [f.track for f in r.faces]  # noqa: E731
    assert tracks(tracker.update(_frame(left, right))) == [0, 1]
    # both move a little and come in the other order: numbers follow the people, not the order
    assert tracks(tracker.update(_frame((52, 1, 72, 21), (2, 1, 22, 21)))) == [1, 0]
    # a newcomer far from both gets a new number; one frame without the right person is tolerated
    assert tracks(tracker.update(_frame((3, 2, 23, 22), (30, 60, 50, 80)))) == [0, 2]
    assert tracks(tracker.update(_frame((3, 2, 23, 22), (52, 1, 72, 21)))) == [0, 1]
    # gone for longer than max_missed: the same place later is a new person
    tracker.update(_frame())
    tracker.update(_frame())
    assert tracks(tracker.update(_frame((3, 2, 23, 22)))) == [3]
    # a jump beyond the overlap threshold is a new person too
    assert tracks(tracker.update(_frame((60, 60, 80, 80)))) == [4]
    with pytest.raises(ValueError):
        FaceTracker(min_iou=0)


def test_unreadable_videos(rec_none, tmp_path):
    text = tmp_path / "fake.mp4"
    text.write_text("no video here")
    with pytest.raises(RecognizerError, match="cannot open"):
        list(rec_none.analyze_video(text))
    with pytest.raises(RecognizerError, match="no such"):
        list(rec_none.analyze_video(tmp_path / "missing.mp4"))
    with pytest.raises(RecognizerError, match="sample_fps"):
        list(rec_none.analyze_video(text, sample_fps=0))


# ---------------------------------------------------------------------------------------------
# real photos (MTCNN)
# ---------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_photos_every_face_found_and_classified(shared_data, rec_mtcnn):
    photos = shared_data / "face_photos"
    two = photos / "face_recognition" / "two_people.jpg"
    five = photos / "pyfeat" / "multi_face.jpg"
    none = photos / "pyfeat" / "free-mountain-vector-01.jpg"
    rgba = photos / "pyfeat" / "Image_with_alpha.png"
    results = rec_mtcnn.analyze([two, five, none, rgba, photos / "face_recognition" / "32bit.png"])
    assert [len(r.faces) for r in results] == [2, 5, 0, 1, 1]
    assert all(r.error is None for r in results)
    for r in results:
        areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in r.faces]
        assert areas == sorted(areas, reverse=True)  # the largest face first
        for f in r.faces:
            x1, y1, x2, y2 = f.box
            assert 0 <= x1 < x2 <= r.width and 0 <= y1 < y2 <= r.height
            assert f.method == "mtcnn" and f.detection_confidence >= 0.9 and len(f.landmarks) == 5
            assert set(f.probabilities) == set(rec_mtcnn.label_names)
    # max_faces keeps the largest
    capped = Recognizer(rec_mtcnn.classifier, label_names=rec_mtcnn.label_names,
                        preprocessing=rec_mtcnn.preprocessing, face_alignment=rec_mtcnn.face_alignment,
                        detector=rec_mtcnn.detector, max_faces=2).analyze([five])[0]
    assert [f.box for f in capped.faces] == [f.box for f in results[1].faces[:2]]


@pytest.mark.shared_data
def test_video_of_real_photos_finds_faces_only_where_they_are(shared_data, rec_mtcnn, tmp_path):
    photo = np.asarray(Image.open(shared_data / "face_photos" / "face_recognition" / "obama-240p.jpg").convert("RGB"))
    h, w = (photo.shape[0] // 2) * 2, (photo.shape[1] // 2) * 2
    frames = [photo[:h, :w]] * 5 + [np.zeros((h, w, 3), np.uint8)] * 5
    path = tmp_path / "clip.mp4"
    _write_video(path, frames, fps=5)
    results = list(rec_mtcnn.analyze_video(path))
    assert [len(r.faces) for r in results] == [1] * 5 + [0] * 5
    assert all(r.error is None for r in results)
    assert [r.faces[0].track for r in results[:5]] == [0] * 5


@pytest.mark.shared_data
def test_video_tracks_two_people_while_the_camera_pans(shared_data, rec_mtcnn, tmp_path):
    photo = np.asarray(Image.open(shared_data / "face_photos" / "face_recognition" / "two_people.jpg").convert("RGB"))
    crop_w = 900
    frames = [np.ascontiguousarray(photo[:660, 8 * k: 8 * k + crop_w]) for k in range(8)]  # pan right
    # cut away, then back to where both faces are whole (in the first frames the right one is cut
    # by the frame's edge: its look is not comparable)
    frames += [np.zeros_like(frames[0])] * 5 + frames[6:8]
    path = tmp_path / "pan.mp4"
    _write_video(path, frames, fps=5)
    results = list(rec_mtcnn.analyze_video(path))
    assert [len(r.faces) for r in results] == [2] * 8 + [0] * 5 + [2] * 2
    by_side = [{("left" if (f.box[0] + f.box[2]) / 2 < crop_w / 2 else "right"): f.track for f in r.faces}
               for r in results if r.faces]
    assert by_side[:8] == [by_side[0]] * 8 and set(by_side[0].values()) == {0, 1}
    # after a cut longer than the tracker's patience for an occlusion (1 s) the two people are
    # recognised by their look (within 10 s) and each gets their own number back
    assert by_side[8] == by_side[0] and by_side[9] == by_side[8]
    # with re-identification off, the same cut gives them new numbers
    results = list(rec_mtcnn.analyze_video(path, tracker=FaceTracker(max_lost_s=1.0, reentry_s=0)))
    by_side = [{("left" if (f.box[0] + f.box[2]) / 2 < crop_w / 2 else "right"): f.track for f in r.faces}
               for r in results if r.faces]
    assert set(by_side[8].values()) == {2, 3} and by_side[9] == by_side[8]


@pytest.mark.shared_data
def test_template_of_pre_aligned_crops_is_recovered(shared_data):
    """estimate_template finds where the landmarks sit in crops cut with a known template."""
    detector = FaceDetector()
    truth = template_points(1, margin=0.0)  # tighter than our default, like FER2013
    crops = []
    for path in find_inputs([shared_data / "face_photos"]):
        image = load_image(path).array
        found = detector.detect([image])[0]
        if found and not isinstance(found, Exception):
            crops.append(align_face(image, found[0].landmarks, 96, template=truth))
    estimate = estimate_template(crops, detector)
    assert estimate is not None and estimate["n_detected"] >= 20
    points = np.array(estimate["points"])
    # the scale of the framing (eye distance) is what matters most, and is recovered closely;
    # MTCNN re-detecting its own aligned crops shifts points by a few % of the crop in y
    eyes = lambda p: p[1, 0] - p[0, 0]  # noqa: E731
    assert abs(eyes(points) / eyes(truth) - 1) < 0.03
    # and the estimate is nearer the true template than the default framing is
    assert np.abs(points - truth).mean() < np.abs(points - template_points(1)).mean()


@pytest.mark.shared_data
def test_prepare_learns_the_framing_of_fer2013(shared_data, tmp_path):
    from ferwild.data.prepare import PrepareConfig, prepare

    src = tmp_path / "fer"
    for label in ("happy", "surprise", "neutral"):
        files = sorted((shared_data / "fer2013" / "test" / label).iterdir())[:40]
        (src / "test" / label).mkdir(parents=True)
        for f in files:
            (src / "test" / label / f.name).symlink_to(f)
    result = prepare(src, tmp_path / "prep", PrepareConfig(labels="basic7", workers=1, split="ratios"))
    assert result.summary["align_mode"] == "none"
    template = result.summary["face_template"]
    assert template is not None and template["n_detected"] >= 10
    points = np.array(template["points"])
    eye_distance = points[1, 0] - points[0, 0]
    # FER2013's faces fill the crop: eyes further apart than even the bare ArcFace crop's
    assert eye_distance > template_points(1, margin=0.0)[1, 0] - template_points(1, margin=0.0)[0, 0]
    alignment = PreparedDataset(tmp_path / "prep").face_alignment()
    assert alignment.template is not None and alignment.channels == 1 and alignment.crop_size == 48
    np.testing.assert_allclose(alignment.points(48), points * 48)


def test_prepare_config_like_copies_the_face_cut(tiny_run):
    from ferwild.data.prepare import PrepareConfig

    _, prep, _ = tiny_run
    config = PrepareConfig.like(prep, unlabelled=True, balance=None)
    alignment = PreparedDataset(prep).face_alignment()
    assert (config.size, config.margin, config.channels, config.template) == (
        alignment.crop_size, alignment.margin, alignment.channels, alignment.template)
    assert config.labels == PreparedDataset(prep).summary["label_set"] and config.unlabelled
    with pytest.raises(FileNotFoundError):
        PrepareConfig.like(prep / "missing")


@pytest.mark.shared_data
def test_photos_prepared_like_fer2013_are_framed_like_it(shared_data, tmp_path):
    """`prepare --like` a pre-aligned reference: production photos come out at its side, grey,
    and with their landmarks where the reference's sit."""
    from ferwild.data.prepare import PrepareConfig, prepare

    src = tmp_path / "fer"
    for label in ("happy", "surprise", "angry"):
        (src / "test" / label).mkdir(parents=True)
        for f in sorted((shared_data / "fer2013" / "test" / label).iterdir())[:40]:
            (src / "test" / label / f.name).symlink_to(f)
    prepare(src, tmp_path / "ref", PrepareConfig(labels="basic7", workers=1, split="ratios"))
    reference = PreparedDataset(tmp_path / "ref").face_alignment()
    prepare(shared_data / "face_photos", tmp_path / "photos",
            PrepareConfig.like(tmp_path / "ref", unlabelled=True, balance=None, workers=1))
    photos = PreparedDataset(tmp_path / "photos")
    assert photos.summary["cache_shape"] == [48, 48, 1]
    assert photos.face_alignment().template == reference.template
    crops = photos.images(photos.rows("test")[lambda d: d["status"] == "aligned"])
    estimate = estimate_template(list(crops))
    assert estimate is not None
    eyes = lambda p: p[1][0] - p[0][0]  # noqa: E731
    assert abs(eyes(estimate["points"]) / eyes(reference.template) - 1) < 0.1


def test_a_study_folder_or_its_best_run_file_means_the_selected_run(tiny_run, tmp_path, rec_none):
    import os

    from ferwild.runs import resolve_run_dir

    run, _, _ = tiny_run
    study = tmp_path / "study"
    study.mkdir()
    (study / "best_run").write_text(os.path.relpath(run, study) + "\n")
    assert resolve_run_dir(study).resolve() == run.resolve()
    assert resolve_run_dir(study / "best_run").resolve() == run.resolve()
    assert resolve_run_dir(run) == run
    image = np.full((32, 32, 3), 128, np.uint8)
    via_study = Recognizer.from_run(study, detector="none").analyze([image])[0]
    assert via_study.faces[0].probabilities == rec_none.analyze([image])[0].faces[0].probabilities
