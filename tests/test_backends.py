"""The two model backends behind one protocol, and the numpy preprocessing the ONNX path uses."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ferwild.backends import Classifier, OnnxClassifier, TorchClassifier
from ferwild.data.loader import BatchTransform
from ferwild.export import export_onnx
from ferwild.preprocessing import Preprocessing
from ferwild.recognizer import Recognizer, RecognizerError
from ferwild.runs import load_run


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run, tmp_path_factory):
    """The shared tiny run (cnn_small, 32 px) exported once for this module."""
    path = tmp_path_factory.mktemp("backends") / "tiny.onnx"
    export_onnx(tiny_run[0], path)
    return path


def test_both_backends_are_classifiers_and_agree(tiny_run, tiny_onnx):
    model, _ = load_run(tiny_run[0], "best", "cpu")
    backends = [TorchClassifier(model, "cpu"), OnnxClassifier(tiny_onnx, intra_op_threads=1)]
    assert all(isinstance(b, Classifier) for b in backends)
    assert [b.backend for b in backends] == ["torch", "onnx"]
    size = model.preprocessing.input_size
    pixels = model.preprocessing.normalize(torch.rand(5, 3, size, size, generator=torch.Generator().manual_seed(3)))
    torch_logits, onnx_logits = (b(pixels.numpy()) for b in backends)
    assert torch_logits.shape == onnx_logits.shape == (5, model.num_classes)
    assert torch_logits.dtype == onnx_logits.dtype == np.float32
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)


def test_recognisers_over_either_backend_agree(tiny_run, tiny_onnx):
    by_torch = Recognizer.from_run(tiny_run[0], detector="none")
    by_onnx = Recognizer.from_onnx(tiny_onnx, detector="none")
    assert (by_torch.backend, by_onnx.backend) == ("torch", "onnx")
    assert by_torch.info()["backend"] == "torch" and by_onnx.info()["backend"] == "onnx"
    # crops at the alignment's side and at other sides (resized first), colour and grey
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in (32, 32, 48, 20)]
    crops.append(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8))
    np.testing.assert_allclose(by_onnx.classify(crops), by_torch.classify(crops), atol=1e-5, rtol=0)


def test_a_recogniser_needs_a_classifier(tiny_run):
    rec = Recognizer.from_run(tiny_run[0], detector="none")
    with pytest.raises(RecognizerError, match="not a classifier"):
        Recognizer(lambda pixel_values: pixel_values, label_names=rec.label_names,
                   preprocessing=rec.preprocessing, face_alignment=rec.face_alignment, detector="none")


def test_the_onnx_recogniser_runs_without_torch(tiny_onnx):
    """An exported model classifies crops (and whole images with detector="none") in a process
    that never imports torch: ONNX Runtime and the numpy preprocessing only."""
    code = (
        "import sys, numpy as np\n"
        "from ferwild.recognizer import Recognizer\n"
        f"rec = Recognizer.from_onnx({str(tiny_onnx)!r}, detector='none')\n"
        "crops = list(np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8))\n"
        "assert rec.classify(crops).shape == (3, len(rec.label_names))\n"
        "assert rec.analyze(crops[:1])[0].faces\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_the_backends_does_not_import_torch():
    code = "import sys, ferwild.backends, ferwild.preprocessing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# (crop side, model input size, channels): equal, upscaled (plain bilinear), downscaled
# (antialiased), by integer and by fractional factors, grey and colour.
RESIZES = [(32, 32, 3), (48, 48, 1), (48, 64, 1), (112, 224, 3), (37, 100, 3), (48, 224, 1),
           (112, 64, 3), (64, 48, 1), (100, 37, 3), (96, 32, 3), (33, 32, 3)]


@pytest.mark.parametrize("side,size,channels", RESIZES)
def test_numpy_preprocessing_matches_the_training_transform(side, size, channels):
    pre = Preprocessing(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = np.random.default_rng(side * size).integers(0, 256, (4, side, side, channels), dtype=np.uint8)
    expected = BatchTransform(pre.input_size, pre.mean, pre.std)(torch.from_numpy(images).permute(0, 3, 1, 2))
    got = pre.pixel_values(images)
    assert got.dtype == np.float32 and got.shape == (4, 3, size, size) and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


def test_numpy_and_torch_normalisation_agree():
    pre = Preprocessing(8, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(pre.normalize_array(pixels.numpy()), pre.normalize(pixels).numpy())
    with pytest.raises(ValueError, match="uint8"):
        pre.pixel_values(np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        pre.pixel_values(np.zeros((1, 8, 8, 2), dtype=np.uint8))


class _OneBadImageDetector:
    """A custom detector (the recogniser accepts any object with ``detect``): it reports an
    exception for images wider than 60 px and one centred face elsewhere."""

    name = "custom"
    min_confidence = 0.5

    def detect(self, images):
        from ferwild.data.faces import FaceDetection

        out = []
        for img in images:
            h, w = img.shape[:2]
            if w > 60:
                out.append(RuntimeError("boom: this image broke the detector"))
                continue
            eyes_y, mouth_y = 0.4 * h, 0.7 * h
            marks = np.array([[0.35 * w, eyes_y], [0.65 * w, eyes_y], [0.5 * w, 0.55 * h],
                              [0.38 * w, mouth_y], [0.62 * w, mouth_y]], dtype=np.float32)
            out.append([FaceDetection(box=(0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h), landmarks=marks, confidence=0.99)])
        return out


def test_a_custom_detectors_error_is_that_images_error(tiny_onnx):
    """A custom detector has no MTCNN size rule: its exception for one image becomes that
    image's error (it used to raise AttributeError on ``max_side`` for the whole batch)."""
    rec = Recognizer.from_onnx(tiny_onnx, detector="none").with_detector(_OneBadImageDetector())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)]
    good, bad = rec.analyze(images)
    assert good.error is None and len(good.faces) == 1
    assert bad.faces == [] and "boom" in bad.error
    assert rec.detector_name == "custom"


def test_with_detector_carries_every_other_setting(tiny_onnx):
    rec = Recognizer.from_onnx(tiny_onnx, detector="none", max_faces=2, abstain_below=0.4)
    rec.batch_size, rec.description, rec.source = 7, "a description", "a source"
    rec.some_new_setting = "kept"  # stands for a constructor argument added later
    other = rec.with_detector(_OneBadImageDetector())
    assert isinstance(other.detector, _OneBadImageDetector) and rec.detector is None
    assert {k: v for k, v in vars(other).items() if k != "detector"} == \
        {k: v for k, v in vars(rec).items() if k != "detector"}
    assert other.classifier is rec.classifier  # the model is shared, not copied
    assert rec.with_detector("none").detector is None
    with pytest.raises(RecognizerError, match="unknown detector"):
        rec.with_detector("nope")


def test_detector_names_round_trip_through_the_factory(tiny_onnx):
    """Each name the recogniser takes builds the detector that names itself so; MTCNN reads
    faces at the training data's threshold, BlazeFace at its own default."""
    from ferwild.detectors import DETECTORS
    from ferwild.detectors.blazeface import DEFAULT_MIN_CONFIDENCE

    rec = Recognizer.from_onnx(tiny_onnx, detector="none")
    for name in DETECTORS:
        other = rec.with_detector(name)
        assert other.detector_name == name and other.info()["detector"] == name
    mtcnn = rec.with_detector("mtcnn")
    assert mtcnn.detector.min_confidence == rec.face_alignment.min_confidence
    assert rec.with_detector("fast").detector.min_confidence == DEFAULT_MIN_CONFIDENCE
    assert rec.with_detector("fast-tiled", min_confidence=0.7).detector.min_confidence == 0.7
    # an image smaller than MTCNN's smallest face holds no face: not an error (MTCNN's own rule)
    small, = mtcnn.analyze([np.zeros((8, 8, 3), np.uint8)])
    assert small.error is None and small.faces == []
    with pytest.raises(RecognizerError, match="min_confidence"):
        rec.with_detector("mtcnn", min_confidence=2.0)


def test_the_live_and_onnx_commands_never_import_torch(tiny_run, tiny_onnx, tmp_path, shared_data):
    """`ferwild live --help`, a live run on a file whose ONNX export is already cached, and
    `predict --onnx --detector fast` run in processes that never import torch (~650 MB less
    before a frame)."""
    from ferwild.export import cached_onnx

    cache = tmp_path / "cache"
    cached_onnx(tiny_run[0], cache_dir=cache / "onnx", tta="none")  # primed here, with torch
    video = shared_data / "face_videos" / "single_face.mp4"
    photo = shared_data / "face_photos" / "pyfeat" / "single_face.jpg"
    commands = [
        ["live", "--help"],
        ["live", str(video), "--run", str(tiny_run[0]), "--out", str(tmp_path / "live"), "--duration", "1",
         "--no-record"],
        # MTCNN is a torch network, so predict's photo path is torch-free with the fast detector
        ["predict", str(photo), "--onnx", str(tiny_onnx), "--detector", "fast", "--out", str(tmp_path / "pred")],
    ]
    for args in commands:
        code = ("import sys\nfrom typer.testing import CliRunner\nfrom ferwild.cli import app\n"
                f"r = CliRunner().invoke(app, {args!r})\n"
                "assert r.exit_code == 0, r.output\n"
                "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "FERWILD_CACHE": str(cache)})
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
        assert out.stdout.strip().splitlines()[-1] == "[]", args


def test_live_paths_read_video_with_the_stricter_fast_threshold(tiny_onnx):
    from ferwild.detectors.blazeface import DEFAULT_MIN_CONFIDENCE, VIDEO_MIN_CONFIDENCE
    from ferwild.live import live_recognizer
    assert live_recognizer(onnx=tiny_onnx, detector="fast").detector.min_confidence == VIDEO_MIN_CONFIDENCE
    assert live_recognizer(onnx=tiny_onnx, detector="fast-tiled", min_confidence=0.55).detector.min_confidence == 0.55
    # a photo recogniser keeps MediaPipe's threshold: each photo holds a face to find
    assert Recognizer.from_onnx(tiny_onnx, detector="fast").detector.min_confidence == DEFAULT_MIN_CONFIDENCE
    # the page's Live mode behind an MTCNN server switches to fast-tiled at the video threshold
    from ferwild.serve import _LiveModel

    live = _LiveModel(Recognizer.from_onnx(tiny_onnx, detector="mtcnn"))
    assert live.detector == "fast-tiled" and live.get().detector.min_confidence == VIDEO_MIN_CONFIDENCE
