"""ONNX export of tiny trained runs: parity with PyTorch, metadata, atomic writes, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from ferwild.backends import METADATA_KEY, OnnxClassifier, OnnxModelError, OnnxModelNotFound
from ferwild.config import RunConfig
from ferwild.data.faces import FaceAlignment
from ferwild.data.prepare import PrepareConfig, prepare
from ferwild.data.synth import synth_dataset
from ferwild.export import ExportError, export_onnx
from ferwild.runs import RunError, load_run
from ferwild.train import fit

SIZE = 32  # every model here accepts it: cnn_small/resnet18 pool adaptively, vit_tiny's patch is 8
MODELS = ["cnn_small", "vit_tiny", "resnet18"]


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-data")
    synth_dataset("reference", 120, root / "raw", seed=1, size=48, label_set="basic6")
    prepare(root / "raw" / "manifest.csv", root / "prep", PrepareConfig(size=SIZE, workers=1))
    return root / "prep"


_RUNS: dict[str, Path] = {}


def _run(name: str, prepared: Path, root: Path) -> Path:
    """A one-batch, one-epoch run of ``name`` (random init), trained once per module."""
    if name not in _RUNS:
        cfg = RunConfig.load(None, [f"data.path={prepared}", f"model.name={name}", "model.pretrained=none",
                                    f"model.image_size={SIZE}", "train.batch_size=16", "train.epochs=1",
                                    "train.max_train_batches=1", "train.device=cpu", "train.seed=0"])
        fit(cfg, root / name, log=lambda m: None)
        _RUNS[name] = root / name
    return _RUNS[name]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    _RUNS.clear()
    return tmp_path_factory.mktemp("export-runs")


@pytest.fixture
def cnn_run(tiny_prepared, runs_root) -> Path:
    return _run("cnn_small", tiny_prepared, runs_root)


def _pixels(model, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return model.preprocessing.normalize(torch.rand(n, 3, SIZE, SIZE, generator=gen))


def _same_argmax(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> bool:
    """Argmaxes agree, except where ``b``'s top two are a near-tie that rounding may flip."""
    top2 = np.sort(b, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < tol
    return bool(np.all((a.argmax(1) == b.argmax(1)) | tie))


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("name", MODELS)
def test_export_matches_torch_and_roundtrips_metadata(name, tiny_prepared, runs_root, tmp_path):
    run = _run(name, tiny_prepared, runs_root)
    out = tmp_path / "model.onnx"
    report = export_onnx(run, out)

    json.dumps(report)  # JSON-able as promised
    assert report["exporter"] in ("dynamo", "torchscript")
    assert report["path"] == str(out) and report["size_bytes"] == out.stat().st_size > 0
    assert report["input_shape"][1:] == [3, SIZE, SIZE] and isinstance(report["input_shape"][0], str)
    parity = report["parity"]
    assert parity["passed"] and parity["max_abs_diff_probabilities"] < 1e-4
    assert parity["max_abs_diff_logits"] < 1e-3 and parity["argmax_agreement"] == 1.0
    assert sorted(b["batch"] for b in parity["batches"]) == [1, 4]  # two batch sizes were checked
    # one self-contained file: no external-data side file, no temp files
    assert _leftovers(tmp_path, set()) == ["model.onnx"]
    proto = onnx.load(str(out), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer)
    assert proto.producer_name == "ferwild" and name in proto.doc_string

    model, state = load_run(run, "best")
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert meta["label_names"] == list(state["label_names"])
    assert meta["preprocessing"] == model.preprocessing.to_dict()
    assert meta["face_alignment"] == state["face_alignment"]
    assert meta["model_config"] == json.loads(json.dumps(state["model_config"]))
    assert meta["epoch"] == state["epoch"] == 1 and meta["checkpoint"] == "best"
    assert meta["opset"] == 18 and meta["exporter"] == report["exporter"]
    assert meta["torch_version"] == torch.__version__ and meta["ferwild_version"]
    assert meta["source_run"] == str(run.resolve())

    # a fresh batch of a size neither the export nor the check used: the batch axis is dynamic
    x = _pixels(model, 3, seed=123)
    with torch.no_grad():
        ref = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], {"pixel_values": x.numpy()})
    assert logits.shape == (3, len(state["label_names"]))
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(ref), 1).numpy(), atol=1e-4, rtol=0)

    clf = OnnxClassifier(out, intra_op_threads=1)
    assert clf.label_names == list(state["label_names"])
    assert clf.preprocessing == model.preprocessing
    assert clf.face_alignment == state["face_alignment"] and clf.model_config["name"] == name
    assert clf.metadata["exporter"] == report["exporter"]
    got = clf(x.numpy())
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert _same_argmax(got, ref)
    x8 = _pixels(model, 8, seed=7)
    with torch.no_grad():
        ref8 = model(x8).numpy()
    assert _same_argmax(clf(x8.numpy()), ref8)
    p = clf.predict_proba(x8.numpy().astype(np.float64))  # other float widths are converted
    assert p.dtype == np.float32 and np.allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p, torch.softmax(torch.from_numpy(ref8), 1).numpy(), atol=1e-4, rtol=0)


def test_falls_back_to_torchscript_when_dynamo_fails(cnn_run, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("simulated: torch.export cannot capture this model")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    out = tmp_path / "ts.onnx"
    report = export_onnx(cnn_run, out)
    assert report["exporter"] == "torchscript"
    assert "simulated: torch.export cannot capture" in report["exporter_fallback_reason"]
    assert report["parity"]["max_abs_diff_probabilities"] < 1e-4
    assert OnnxClassifier(out).metadata["exporter"] == "torchscript"
    assert _leftovers(tmp_path, set()) == ["ts.onnx"]  # the exporter's scratch folder is gone


def test_failed_export_leaves_no_file(cnn_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(torch.onnx, "export", broken)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="neither ONNX exporter") as info:
        export_onnx(cnn_run, out)
    assert "dynamo" in str(info.value) and "torchscript" in str(info.value)
    assert not out.exists()
    assert _leftovers(tmp_path, set()) == []


def test_crash_while_writing_keeps_the_old_file(cnn_run, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")

    def half_write(proto, path, *args, **kwargs):
        Path(path).write_bytes(proto.SerializeToString()[:100])  # a partial file, then the crash
        raise OSError("simulated: disk full")

    monkeypatch.setattr(onnx, "save_model", half_write)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(cnn_run, out)
    assert out.read_bytes() == b"the previous export"
    assert _leftovers(tmp_path, set()) == ["model.onnx"]


def test_parity_failure_raises_and_installs_nothing(cnn_run, tmp_path, monkeypatch):
    import ferwild.export as export_mod

    real_wrap = export_mod._wrap

    class Sharpened(torch.nn.Module):  # the exported graph computes something else than the model
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            logits, _ = self.inner(pixel_values)
            logits = logits * 3.0
            return logits, torch.softmax(logits, dim=-1)

    monkeypatch.setattr(export_mod, "_wrap", lambda model: Sharpened(real_wrap(model)).eval())
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differ"):
        export_onnx(cnn_run, out)
    assert not out.exists() and _leftovers(tmp_path, set()) == []
    # without the check the same graph is written (the check is what caught it)
    report = export_onnx(cnn_run, out, check=False)
    assert report["parity"] is None and out.exists()


def test_old_run_without_face_alignment_falls_back(cnn_run, tmp_path):
    """Runs trained before checkpoints carried their face alignment: the prepared data named in
    the run's config when it still exists, else the defaults, and the metadata says which."""
    from ferwild.data.prepared import PreparedDataset

    run = tmp_path / "old-run"
    shutil.copytree(cnn_run, run)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "BEST").read_text().strip()
    state = torch.load(ckpt / "state.pt", weights_only=True)
    state.pop("face_alignment")
    torch.save(state, ckpt / "state.pt")
    report = export_onnx(run, tmp_path / "old.onnx", check=False)
    assert report["face_alignment_source"] == "prepared data"
    data = PreparedDataset(state["config"]["data"]["path"])
    assert OnnxClassifier(tmp_path / "old.onnx").face_alignment == data.face_alignment().to_dict()

    state["config"]["data"]["path"] = str(tmp_path / "moved-away")
    torch.save(state, ckpt / "state.pt")
    report = export_onnx(run, tmp_path / "older.onnx", check=False)
    assert report["face_alignment_source"] == "defaults"
    clf = OnnxClassifier(tmp_path / "older.onnx")
    assert clf.face_alignment == FaceAlignment().to_dict()
    assert clf.metadata["face_alignment_source"] == "defaults"


def test_export_argument_and_run_errors(cnn_run, tmp_path):
    with pytest.raises(RunError, match="checkpoint"):
        export_onnx(tmp_path / "no-such-run", tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="best' or 'last"):
        export_onnx(cnn_run, tmp_path / "x.onnx", which="middle")
    with pytest.raises(ExportError, match="opset"):
        export_onnx(cnn_run, tmp_path / "x.onnx", opset=7)
    with pytest.raises(ExportError, match="directory"):
        export_onnx(cnn_run, tmp_path)
    assert _leftovers(tmp_path, set()) == []


def test_classifier_errors(cnn_run, tmp_path):
    with pytest.raises(OnnxModelNotFound, match="no ONNX model") as info:
        OnnxClassifier(tmp_path / "missing.onnx")
    assert isinstance(info.value, FileNotFoundError)

    (tmp_path / "junk.onnx").write_bytes(b"definitely not protobuf \x00\xff")
    with pytest.raises(OnnxModelError, match="not an ONNX model"):
        OnnxClassifier(tmp_path / "junk.onnx")

    # a valid ONNX graph that ferwild did not export
    graph = helper.make_graph(
        [helper.make_node("Relu", ["pixel_values"], ["logits"])], "foreign",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 32, 32])],
    )
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    foreign.ir_version = 9
    onnx.save_model(foreign, str(tmp_path / "foreign.onnx"))
    assert ort.InferenceSession(str(tmp_path / "foreign.onnx"), providers=["CPUExecutionProvider"])  # valid ONNX
    with pytest.raises(OnnxModelError, match="not exported by ferwild export.*ferwild' metadata"):
        OnnxClassifier(tmp_path / "foreign.onnx")

    out = tmp_path / "model.onnx"
    export_onnx(cnn_run, out, check=False)
    clf = OnnxClassifier(out)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\).*got shape \(2, 3, 48, 48\)"):
        clf(np.zeros((2, 3, 48, 48), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\).*got shape \(2, 32, 32, 3\)"):
        clf.predict_proba(np.zeros((2, 32, 32, 3), np.float32))  # channels-last by mistake
    with pytest.raises(ValueError, match="got dtype uint8"):
        clf(np.zeros((2, 3, 32, 32), np.uint8))
    assert clf(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 6)
    with pytest.raises(OnnxModelError, match="not available"):
        OnnxClassifier(out, providers=["NoSuchExecutionProvider"])

    # ferwild metadata that is not ours to read: a newer format is refused, not guessed at
    proto = onnx.load(str(out))
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    entry.value = json.dumps({**meta, "format": "ferwild.onnx/99"})
    onnx.save_model(proto, str(tmp_path / "future.onnx"))
    with pytest.raises(OnnxModelError, match="metadata format"):
        OnnxClassifier(tmp_path / "future.onnx")
