"""int8 twins of ONNX exports (ferwild.export.quantize_onnx, `ferwild export --int8`).

One tiny random-init model serves every test: ``fer_vgg_tiny`` at 48 px with the flip pass, the
shipped family's layout (Conv + BatchNorm, the backbone run twice on shared weights). Its head
is scaled up so that its probabilities are peaked, like a trained model's, rather than all near
1/K, where any int8 error would look negligible.

Tolerances (int8 against the fp32 export of the same model, probabilities in [0, 1]), the same
for static and dynamic twins, on real FER2013 crops and on random pixels:

* mean |dp| <= 0.01: the tiny model measures 0.004-0.005, the shipped ``ferplus_vgg`` 0.002 on
  3,343 FER+ test faces (bench/bench_int8.py); a twin with wrong scales is off by ~0.1 or more.
* labels agree on >= 95 % of faces (measured 98-100 %; ferplus_vgg 99.3 %), and a face whose
  label changes must have been a near-tie in fp32 (top-two gap < 0.3): int8 noise may flip a
  close call, never a clear one.
* max |dp| <= 0.25: a flipped near-tie moves its top two probabilities by about half their
  gap (measured 0.03-0.15 here, 0.10 on ferplus_vgg), so the maximum is loose by nature.

The margins leave room for other CPUs' int8 kernels (uint8 x int8 products are computed
differently with and without VNNI) while still failing a broken twin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from ferwild.backends import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, OnnxClassifier, OnnxModelError, OnnxModelNotFound
from ferwild.export import ExportError, int8_path, quantize_onnx

SIZE = 48
LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
MAX_DP, MEAN_DP, MIN_AGREEMENT, NEAR_TIE = 0.25, 0.01, 0.95, 0.3


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> tuple[Path, Path]:
    """``(run_dir, fp32 .onnx)``: a random-init fer_vgg_tiny with flip TTA, exported once."""
    import torch

    from ferwild.data.faces import FaceAlignment
    from ferwild.export import export_onnx
    from ferwild.models import create_model
    from ferwild.train import save_checkpoint

    root = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = create_model("fer_vgg_tiny", num_classes=len(LABELS), pretrained="none", image_size=SIZE,
                         id2label=dict(enumerate(LABELS))).eval().set_tta("flip")
    with torch.no_grad():
        model.head.weight.mul_(50.0)  # peaked probabilities, as a trained model gives
    state = {"epoch": 0, "model_config": model.config(), "label_names": LABELS,
             "face_alignment": FaceAlignment(crop_size=SIZE).to_dict()}
    save_checkpoint(root / "run", "epoch-000", model, state, pointers=("LAST", "BEST"))
    export_onnx(root / "run", root / "model.onnx", check=False)
    return root / "run", root / "model.onnx"


def _random_pixels(clf: OnnxClassifier, n: int, seed: int) -> np.ndarray:
    """Uniform pixels in [0, 1], normalised as the model expects."""
    return clf.preprocessing.normalize_array(np.random.default_rng(seed).random((n, 3, SIZE, SIZE)))


def _fer_crops(shared: Path, split: str, prefix: str, per_class: int, clf: OnnxClassifier) -> np.ndarray:
    """The first ``per_class`` FER2013 faces of each class (48 px grey JPEGs) as pixel_values."""
    from PIL import Image

    root = shared / "fer2013" / split
    files = [f for d in sorted(root.iterdir())
             for f in sorted(p for p in d.iterdir() if p.name.startswith(prefix))[:per_class]]
    return clf.preprocessing.pixel_values(np.stack([np.asarray(Image.open(f).convert("L"))[..., None] for f in files]))


def _compare(fp32_path: Path, int8_file: Path, x: np.ndarray) -> None:
    """The int8 twin's probabilities are within the module's tolerances of the fp32 file's."""
    ref = OnnxClassifier(fp32_path, intra_op_threads=1).predict_proba(x)
    got = OnnxClassifier(int8_file, intra_op_threads=1).predict_proba(x)
    assert ref.max(1).mean() > 0.35  # peaked (uniform: 1/6): comparing near-uniform outputs would prove little
    diff = np.abs(got - ref)
    flipped = got.argmax(1) != ref.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    figures = f"max |dp| {diff.max():.4f}, mean {diff.mean():.5f}, labels agree {1 - flipped.mean():.1%}"
    assert diff.mean() <= MEAN_DP and diff.max() <= MAX_DP and 1 - flipped.mean() >= MIN_AGREEMENT, figures
    assert np.all(top2[flipped, 1] - top2[flipped, 0] < NEAR_TIE), figures


def _check_twin(fp32_path: Path, twin: Path, report: dict, mode: str, n_crops: int) -> None:
    """The twin opens unchanged, keeps the interface and metadata, says how it was made, is smaller."""
    json.dumps(report)
    source, clf = OnnxClassifier(fp32_path), OnnxClassifier(twin, intra_op_threads=1)
    assert clf.label_names == source.label_names == LABELS
    assert clf.preprocessing == source.preprocessing and clf.face_alignment == source.face_alignment
    assert clf.model_config == source.model_config
    assert [i.name for i in clf.session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in clf.session.get_outputs()] == list(OUTPUT_NAMES)
    quant = clf.metadata["quantization"]
    assert quant["precision"] == "int8" and quant["mode"] == mode and quant["calibration_size"] == n_crops
    assert {k: v for k, v in clf.metadata.items() if k != "quantization"} == source.metadata
    assert report["mode"] == mode and report["calibration_size"] == n_crops and report["path"] == str(twin)
    assert report["fp32_size_bytes"] == fp32_path.stat().st_size
    assert report["size_bytes"] == twin.stat().st_size < 0.5 * fp32_path.stat().st_size
    proto = onnx.load(str(twin))
    assert [p.key for p in proto.metadata_props].count(METADATA_KEY) == 1
    assert any(n.op_type == "QuantizeLinear" if mode == "static" else n.op_type == "DynamicQuantizeLinear"
               for n in proto.graph.node)
    # the shared weights of the flip pass stay shared after BatchNorm folding
    assert "duplicated initializers merged" in report["pre_processing"]
    assert sorted(p.name for p in twin.parent.iterdir() if p.name.startswith(".")) == []  # no temp files


@pytest.mark.shared_data
def test_static_twin_agrees_with_fp32_on_real_faces(fp32, shared_data, tmp_path):
    _, src = fp32
    clf = OnnxClassifier(src)
    calibration = _fer_crops(shared_data, "train", "Training", 12, clf)  # 84 faces
    test = _fer_crops(shared_data, "test", "PrivateTest", 12, clf)
    twin = tmp_path / "model.int8.onnx"
    report = quantize_onnx(src, twin, calibration=calibration)
    _check_twin(src, twin, report, "static", len(calibration))
    assert report["method"] == "percentile" and report["agreement"]["inputs"] == "calibration crops"
    _compare(src, twin, test)


def test_static_twin_agrees_with_fp32_on_random_inputs(fp32, tmp_path):
    _, src = fp32
    clf = OnnxClassifier(src)
    twin = tmp_path / "model.int8.onnx"
    report = quantize_onnx(src, twin, calibration=_random_pixels(clf, 48, seed=1), method="minmax")
    _check_twin(src, twin, report, "static", 48)
    assert report["method"] == "minmax" and not report["reduce_range"]
    _compare(src, twin, _random_pixels(clf, 64, seed=2))
    # any batch size: the batch axis stays dynamic
    assert OnnxClassifier(twin)(_random_pixels(clf, 5, seed=3)).shape == (5, len(LABELS))


def test_dynamic_twin_needs_no_calibration(fp32, tmp_path):
    _, src = fp32
    twin = tmp_path / "dyn.onnx"
    report = quantize_onnx(src, twin)  # no calibration crops: dynamic
    _check_twin(src, twin, report, "dynamic", 0)
    assert report["method"] is None and report["agreement"]["inputs"] == "random pixels"
    _compare(src, twin, _random_pixels(OnnxClassifier(src), 64, seed=4))


def test_bad_inputs_give_clear_errors_and_write_nothing(fp32, tmp_path):
    _, src = fp32
    out = tmp_path / "out.onnx"
    with pytest.raises(OnnxModelNotFound, match="no ONNX model") as info:
        quantize_onnx(tmp_path / "missing.onnx", out)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    (tmp_path / "junk.onnx").write_bytes(b"not protobuf \x00\xff")
    with pytest.raises(OnnxModelError, match="not an ONNX model"):
        quantize_onnx(tmp_path / "junk.onnx", out)
    clf = OnnxClassifier(src)
    with pytest.raises(ExportError, match="static quantisation needs calibration crops"):
        quantize_onnx(src, out, mode="static")
    with pytest.raises(ExportError, match="takes no calibration"):
        quantize_onnx(src, out, calibration=_random_pixels(clf, 4, 0), mode="dynamic")
    with pytest.raises(ExportError, match=r"\(N, 3, 48, 48\).*uint8"):
        quantize_onnx(src, out, calibration=np.zeros((4, 3, 48, 48), np.uint8))
    with pytest.raises(ExportError, match=r"\(N, 3, 48, 48\)"):
        quantize_onnx(src, out, calibration=np.zeros((4, 48, 48, 3), np.float32))
    with pytest.raises(ExportError, match="mode must be"):
        quantize_onnx(src, out, mode="float16")
    with pytest.raises(ExportError, match="method must be"):
        quantize_onnx(src, out, calibration=_random_pixels(clf, 4, 0), method="entropy")
    with pytest.raises(ExportError, match="must not overwrite"):
        quantize_onnx(src, src)
    with pytest.raises(ExportError, match="directory"):
        quantize_onnx(src, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx"]
    quantize_onnx(src, out)
    with pytest.raises(ExportError, match="already quantised"):
        quantize_onnx(out, tmp_path / "twice.onnx")


def test_a_failed_twin_leaves_the_old_file(fp32, tmp_path, monkeypatch):
    import ferwild.export as export_mod

    _, src = fp32
    out = tmp_path / "model.int8.onnx"
    out.write_bytes(b"the previous twin")

    def broken(*args, **kwargs):
        raise ExportError("simulated: the int8 model returned NaN")

    monkeypatch.setattr(export_mod, "_agreement", broken)
    with pytest.raises(ExportError, match="simulated"):
        quantize_onnx(src, out)
    assert out.read_bytes() == b"the previous twin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]


def test_int8_path():
    assert int8_path("a/model.onnx") == Path("a/model.int8.onnx")
    assert int8_path("model") == Path("model.int8.onnx")


def test_cli_export_int8_writes_both_files(fp32, make_prepared, tmp_path):
    from typer.testing import CliRunner

    from ferwild.cli import app

    run, _ = fp32
    prepared = make_prepared(60, seed=5, synth_size=48)
    runner = CliRunner()
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(out), "--no-check", "--int8",
                                 "--calibration", str(prepared)], prog_name="ferwild", terminal_width=200)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]
    twin = OnnxClassifier(tmp_path / "model.int8.onnx")
    assert twin.metadata["quantization"]["mode"] == "static"
    assert 0 < twin.metadata["quantization"]["calibration_size"] <= 512  # the prepared train crops
    assert "static int8, percentile calibration" in result.output, result.output
    assert OnnxClassifier(out).label_names == twin.label_names == LABELS


def test_cli_int8_without_calibration_is_dynamic_and_says_so(fp32, tmp_path, monkeypatch):
    """The CLI's wiring only: the fp32 export is stubbed with a copy of the module's export."""
    import shutil

    from typer.testing import CliRunner

    import ferwild.export as export_mod
    from ferwild.cli import app

    _, src = fp32
    monkeypatch.setattr(export_mod, "export_onnx", lambda run, out, **kw: {"size_bytes": shutil.copy(src, out)
                                                                          and Path(out).stat().st_size})
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", "--run", "x", "--out", str(out), "--int8"], prog_name="ferwild",
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "dynamic int8" in result.output and (tmp_path / "m.int8.onnx").is_file()
    assert OnnxClassifier(tmp_path / "m.int8.onnx").metadata["quantization"]["mode"] == "dynamic"
    result = runner.invoke(app, ["export", "--run", "x", "--out", str(out), "--calibration", str(tmp_path)],
                           prog_name="ferwild", terminal_width=200)
    assert result.exit_code != 0 and "add --int8" in result.output
    help_text = runner.invoke(app, ["export", "--help"], prog_name="ferwild", terminal_width=80).output
    assert "--int8 / --no-int8" in help_text and "--calibration" in help_text
    assert max(map(len, help_text.splitlines())) <= 80
