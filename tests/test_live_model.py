"""The shipped live model (ferwild:ferplus_live): it loads from the package with nothing downloaded, the live model's ONNX files (fp32 and int8)
agree with its PyTorch weights on real faces, and the live paths are the ones that load it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ferwild.shipped import (LIVE_MODEL, LIVE_ONNX, live_run, model_card, shipped_model_dir, shipped_names,
                             shipped_onnx)

pytestmark = pytest.mark.skipif(LIVE_MODEL not in shipped_names(), reason="ferwild:ferplus_live is not shipped here")

#: int8 vs fp32 on real crops: the same label for at least this share of faces, and a mean absolute
#: probability difference under this (int8 rounding moves probabilities by about a percent; a broken
#: quantisation - wrong scales, a dropped normalisation - moves labels on a large share of faces).
INT8_SAME_LABEL = 0.95
INT8_MEAN_ABS_DIFF = 0.02
#: fp32 ONNX vs PyTorch: the same arithmetic up to float32 rounding.
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def ferplus_crops(shared_data):
    """300 FER+ test faces (48x48 grey PNGs), as the models' float input."""
    folder = shared_data / "ferplus" / "FER2013Test"
    if not folder.is_dir():
        pytest.skip(f"FER+ not present at {folder}")
    files = sorted(folder.glob("*.png"))[:300]
    return np.stack([np.asarray(Image.open(f).convert("L"))[..., None] for f in files])


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_live_model_files_load_offline_and_agree_with_pytorch(ferplus_crops):
    import torch

    from ferwild.backends import OnnxClassifier
    from ferwild.runs import load_run

    from ferwild.export import cached_onnx

    live = f"ferwild:{LIVE_MODEL}"
    folder = shipped_model_dir(live)
    # the live paths run the file the card names (the int8 twin when it read faces as fp32 does)
    card = model_card(LIVE_MODEL)
    assert shipped_onnx(live) == folder / card.get("live_onnx", LIVE_ONNX) and shipped_onnx(live).is_file()
    # the fp32 reference: the package's file, or the export of its weights (which is what was quantised)
    fp32 = OnnxClassifier(folder / LIVE_ONNX if (folder / LIVE_ONNX).is_file() else cached_onnx(live, tta="none"))
    int8 = OnnxClassifier(folder / "model.int8.onnx")
    assert fp32.label_names == int8.label_names == model_card(LIVE_MODEL)["labels"]
    x = fp32.preprocessing.pixel_values(ferplus_crops)
    model, _ = load_run(live)
    with torch.no_grad():
        reference = _probs(model(torch.from_numpy(x)).numpy())
    p32, p8 = _probs(fp32(x)), _probs(int8(x))
    np.testing.assert_allclose(p32, reference, atol=FP32_ATOL)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= INT8_SAME_LABEL
    assert np.abs(p8 - p32).mean() < INT8_MEAN_ABS_DIFF
    assert int8.path.stat().st_size < fp32.path.stat().st_size


def test_live_run_follows_the_live_models_card():
    # the live paths take the live model only when its card says it earned the place
    earned = model_card(LIVE_MODEL).get("live_default") is True
    assert live_run() == (f"ferwild:{LIVE_MODEL}" if earned else "ferwild:ferplus_vgg")


def test_the_live_paths_load_the_live_run(tmp_path):
    from ferwild.live import live_recognizer

    rec = live_recognizer(None, None, detector="fast", min_confidence=None, max_faces=None, abstain_below=None,
                          backend="onnx", device="cpu", tta="none")
    assert rec.source == live_run() and rec.backend == "onnx"
    assert rec.info()["model"] == model_card(live_run())["architecture"]
    # a chosen model still wins: the live model's own ONNX file
    rec = live_recognizer(None, shipped_onnx(f"ferwild:{LIVE_MODEL}"), detector="fast", min_confidence=None,
                          max_faces=None, abstain_below=None, backend="onnx", device="cpu", tta="none")
    assert rec.source != live_run() and rec.info()["model"] == model_card(LIVE_MODEL)["architecture"]


def test_predict_with_the_fast_detector_uses_the_live_run(tmp_path, shared_data):
    photo = shared_data / "face_photos" / "pyfeat" / "multi_face.jpg"
    out = subprocess.run([sys.executable, "-m", "ferwild.cli", "predict", str(photo), "--out", str(tmp_path / "p"),
                          "--detector", "fast"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    job = json.loads((tmp_path / "p" / "job.json").read_text())  # the model and options of the job
    assert job["recognizer"]["source"] == live_run() and job["recognizer"]["detector"] == "fast"


def test_serve_names_the_live_model_in_info():
    import httpx

    from conftest import start_ferwild_serve

    proc, base = start_ferwild_serve("--detector", "fast", timeout=120)
    try:
        info = httpx.get(f"http://{base}/info", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert info["live_model"] == live_run()
    assert info["source"] == "ferwild:ferplus_vgg"  # /predict keeps the default


@pytest.mark.parametrize("name", [n for n in ("ferplus_vgg", "ferplus_live", "ferplus_ensemble") if n in shipped_names()])
def test_each_shipped_ferplus_model_reads_real_faces_offline_as_its_card_says(name, ferplus_crops):
    """Loaded from the package (nothing downloaded), each FER+ model reads 300 FER+ test faces in
    agreement with the default: a model packed wrong (labels out of order, statistics lost)
    agrees with it on few faces; these models agree on most (their cards: 82-84% accuracy each)."""
    import torch

    from ferwild.runs import load_run

    model, state = load_run(f"ferwild:{name}")
    assert state["label_names"] == model_card(name)["labels"]
    default, _ = load_run("ferwild:ferplus_vgg")
    x = torch.from_numpy(model.preprocessing.pixel_values(ferplus_crops))
    with torch.no_grad():
        p, q = model.eval()(x).softmax(1), default.eval()(x).softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-4)
    assert (p.argmax(1) == q.argmax(1)).float().mean() >= 0.85
