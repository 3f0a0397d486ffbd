"""The model shipped inside the package: packing, loading by name, and its measured figures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ferwild import shipped
from ferwild.cli import app
from ferwild.labels import normalize_label
from ferwild.recognizer import Recognizer
from ferwild.runs import RunError, checkpoint_dir, load_run, pack_run, resolve_run_dir

# ----------------------------------------------------------------------------- packing (any run)


@pytest.fixture
def packed(tiny_run, tmp_path, monkeypatch):
    """The tiny test run packed as a shipped model ``ferwild:tiny`` in a temporary weights folder."""
    run_dir = tiny_run[0]
    weights = tmp_path / "weights"
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights)
    monkeypatch.setenv("FERWILD_CACHE", str(tmp_path / "cache"))
    pack_run(run_dir, weights / "tiny", card={"architecture": "cnn_small", "dataset": "synthetic",
                                                        "test": {"accuracy": 0.5, "macro_f1": 0.4}})
    return run_dir, weights / "tiny"


def test_packed_run_loads_by_name_with_half_weights_and_json_state(packed):
    run_dir, dest = packed
    assert shipped.shipped_names() == ["tiny"]
    assert resolve_run_dir("ferwild:tiny") == dest
    # inference-only state: no optimizer or RNG, readable without unpickling anything
    state = json.loads((checkpoint_dir("ferwild:tiny") / "state.json").read_text())
    assert "optimizer" not in state and "rng" not in state and state["label_names"]
    assert state["config"]["data"]["path"] == "prep"  # the trainer's absolute paths stay behind
    assert "data:\n  path: prep\n" in (dest / "config.yaml").read_text()
    original, _ = load_run(run_dir, "best")
    model, loaded_state = load_run("ferwild:tiny", "best")
    assert loaded_state["face_alignment"] == state["face_alignment"]
    # float16 storage: the weights are the originals rounded to half precision
    for (name, a), b in zip(original.state_dict().items(), model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), msg=name)
        else:
            assert torch.equal(a, b), name
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (original(x).softmax(1) - model(x).softmax(1)).abs().max() < 1e-2
    assert shipped.list_shipped()[0]["name"] == "ferwild:tiny"
    # people are told what reads their photos (the web page shows /info's description)
    info = Recognizer.from_run("ferwild:tiny", detector="none").info()
    assert info["description"] == ("ferwild:tiny, cnn_small trained on synthetic: 50.0% accuracy, "
                                   "40.0% macro-F1 on its held-out test faces")
    assert "cnn_small trained on prep (run run)" == Recognizer.from_run(run_dir, detector="none").description


def test_packed_flip_tta_reaches_torch_and_onnx_alike(tiny_run, tmp_path, monkeypatch):
    from ferwild.export import export_onnx

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    pack_run(tiny_run[0], tmp_path / "weights" / "tta", card={}, tta="flip")
    model, _ = load_run("ferwild:tta")
    assert model.tta == "flip"
    report = export_onnx("ferwild:tta", tmp_path / "tta.onnx")  # parity-checked against PyTorch
    assert report["parity"]["max_abs_diff_probabilities"] < 1e-4
    rec = Recognizer.from_onnx(tmp_path / "tta.onnx", detector="none")
    assert rec.description.startswith("ferwild:tta, cnn_small trained on")  # travels in the ONNX metadata
    assert rec.info()["description"] == rec.description
    crop = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    p, p_mirror = rec.classify([crop, crop[:, ::-1]])
    np.testing.assert_allclose(p, p_mirror, atol=1e-5)  # the file averages a face with its mirror
    with pytest.raises(ValueError, match="tta"):
        pack_run(tiny_run[0], tmp_path / "weights" / "bad", card={}, tta="tencrop")


def test_packed_temperature_calibrates_torch_and_onnx_alike(tiny_run, tmp_path, monkeypatch):
    from ferwild.export import export_onnx
    from ferwild.metrics import apply_temperature

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    pack_run(tiny_run[0], tmp_path / "weights" / "plain", card={}, tta="flip")
    pack_run(tiny_run[0], tmp_path / "weights" / "calibrated", card={}, tta="flip", temperature=2.0)
    assert load_run("ferwild:calibrated")[0].temperature == 2.0
    crops = np.random.default_rng(1).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    plain = Recognizer.from_run("ferwild:plain", detector="none").classify(crops)
    calibrated = Recognizer.from_run("ferwild:calibrated", detector="none").classify(crops)
    np.testing.assert_allclose(calibrated, apply_temperature(plain, 2.0), atol=1e-5)
    assert (calibrated.max(1) < plain.max(1)).all()          # T > 1 softens every answer
    export_onnx("ferwild:calibrated", tmp_path / "calibrated.onnx")
    onnx = Recognizer.from_onnx(tmp_path / "calibrated.onnx", detector="none").classify(crops)
    np.testing.assert_allclose(onnx, calibrated, atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        pack_run(tiny_run[0], tmp_path / "weights" / "bad", card={}, temperature=0.0)


def test_audit_scores_the_model_as_deployed_with_its_tta_and_temperature(tiny_run, tmp_path, monkeypatch):
    from ferwild.audit.model_outputs import forward_outputs
    from ferwild.data.prepared import PreparedDataset
    from ferwild.evaluate import evaluate_run

    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setenv("FERWILD_CACHE", str(tmp_path / "cache"))
    pack_run(tiny_run[0], tmp_path / "weights" / "deployed", card={}, tta="flip", temperature=2.0)
    model, _ = load_run("ferwild:deployed")
    prepared = PreparedDataset(tiny_run[1])
    rows = prepared.rows("test", include_augmented=False).reset_index(drop=True)
    features, probs = forward_outputs(model, prepared, rows)
    summary = evaluate_run("ferwild:deployed", tiny_run[1], "test", tmp_path / "eval")
    expected = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")[[f"prob_{n}" for n in summary["label_names"]]]
    np.testing.assert_allclose(probs, expected.to_numpy(), atol=1e-5)
    assert features.shape == (len(rows), model.num_features)


def test_abstaining_labels_unsure_faces_uncertain_and_keeps_their_probabilities(packed, tmp_path):
    from ferwild.recognizer import UNCERTAIN, RecognizerError

    crops = np.random.default_rng(2).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    rec = Recognizer.from_run("ferwild:tiny", detector="none")
    probs = rec.classify(crops)
    threshold = float(np.median(probs.max(1)))
    abstaining = Recognizer.from_run("ferwild:tiny", detector="none", abstain_below=threshold)
    results = abstaining.analyze(list(crops))
    for p, result in zip(probs, results):
        face = result.faces[0]
        assert face.label == (UNCERTAIN if p.max() < threshold else rec.label_names[int(p.argmax())])
        assert face.confidence == pytest.approx(float(p.max()), abs=1e-6)
        assert max(face.probabilities.values()) == pytest.approx(float(p.max()), abs=1e-6)
    assert sum(r.faces[0].label == UNCERTAIN for r in results) == int((probs.max(1) < threshold).sum()) > 0
    assert abstaining.info()["abstain_below"] == threshold
    with pytest.raises(RecognizerError, match="abstain_below"):
        Recognizer.from_run("ferwild:tiny", detector="none", abstain_below=1.5)
    out = tmp_path / "preds"
    for i, crop in enumerate(crops):
        from PIL import Image
        (tmp_path / "crops").mkdir(exist_ok=True)
        Image.fromarray(crop).save(tmp_path / "crops" / f"{i}.png")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "crops"), "--out", str(out), "--run", "ferwild:tiny",
                                      "--detector", "none", "--abstain-below", str(threshold)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert (pd.read_csv(out / "predictions.csv")["label"] == UNCERTAIN).sum() == (probs.max(1) < threshold).sum()


def test_unknown_shipped_name_is_one_clear_error(packed):
    with pytest.raises(RunError, match="no shipped model ferwild:nope .*ferwild:tiny"):
        resolve_run_dir("ferwild:nope")


def test_derived_files_of_a_shipped_model_go_to_the_user_cache(packed, tmp_path):
    _, dest = packed
    assert shipped.cache_dir(dest, "audit-cache") == tmp_path / "cache" / "shipped" / "tiny" / "audit-cache"
    assert shipped.cache_dir(tmp_path / "myrun", "audit-cache") == tmp_path / "myrun" / "audit-cache"


def test_one_cache_root_for_every_cache(tiny_run, tmp_path, monkeypatch):
    """$FERWILD_CACHE, else $XDG_CACHE_HOME/ferwild, else ~/.cache/ferwild: shipped models'
    derived files and the live path's ONNX exports (export.cached_onnx) both live under it."""
    from ferwild import export

    monkeypatch.delenv("FERWILD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert shipped.cache_root() == tmp_path / "home" / ".cache" / "ferwild"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shipped.cache_root() == tmp_path / "xdg" / "ferwild"
    exported = []
    monkeypatch.setattr(export, "export_onnx", lambda run, target, **kw: (exported.append(target),
                                                                          target.write_bytes(b"onnx")))
    path = export.cached_onnx(tiny_run[0], tta="none")
    assert path.parent == tmp_path / "xdg" / "ferwild" / "onnx" and exported == [path]
    monkeypatch.setenv("FERWILD_CACHE", str(tmp_path / "mine"))
    assert shipped.cache_root() == tmp_path / "mine"
    assert export.cached_onnx(tiny_run[0], tta="none").parent == tmp_path / "mine" / "onnx"


def test_audit_outputs_of_a_shipped_model_leave_its_folder_untouched(packed, tiny_run, tmp_path):
    from ferwild.audit.model_outputs import compute_outputs

    _, dest = packed
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    out = compute_outputs("ferwild:tiny", tiny_run[1], split="test", device="cpu")
    assert len(out.probs) > 0 and np.isfinite(out.probs).all()
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert list((tmp_path / "cache").rglob("*.npz"))  # cached where the user's files go


def test_evaluating_a_shipped_model_writes_to_the_user_cache(packed, tiny_run, tmp_path):
    from ferwild.evaluate import evaluate_run

    _, dest = packed
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    summary = evaluate_run("ferwild:tiny", tiny_run[1], "test", device="cpu")
    assert summary["out_dir"] == str(tmp_path / "cache" / "shipped" / "tiny" / "eval-test")
    assert (tmp_path / "cache" / "shipped" / "tiny" / "eval-test" / "summary.json").is_file()
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


# ----------------------------------------------------------------------------- the real shipped model


def _card() -> dict:
    if shipped.DEFAULT_MODEL not in shipped.shipped_names():
        pytest.fail(f"the default model {shipped.default_run()} is not in {shipped.WEIGHTS_DIR}")
    return shipped.model_card(shipped.DEFAULT_MODEL)


def test_default_model_loads_offline_and_says_what_it_is(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    card = _card()
    rec = Recognizer.default(device="cpu")
    assert rec.label_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    assert rec.face_alignment.channels == 1 and rec.face_alignment.crop_size == 48
    assert rec.model_config["name"] == card["architecture"] == "fer_vgg"
    size = sum(f.stat().st_size for f in shipped.shipped_model_dir(shipped.DEFAULT_MODEL).rglob("*"))
    assert size < 16e6
    assert 0 < rec.model_config.get("temperature", 1.0) and rec.abstain_below is None
    result = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert result.exit_code == 0 and "ferwild:fer2013_vgg" in result.output
    assert shipped.default_run() in result.output


@pytest.mark.shared_data
def test_fer2013_card_accuracy_is_the_models_on_the_whole_private_test(shared_data):
    """The FER2013 model's card figure, re-measured: all 3,589 PrivateTest faces, read from the
    JPEG files through the recogniser (pre-aligned crops: no detector), to 0.1 point."""
    card = shipped.model_card("fer2013_vgg")
    rec = Recognizer.from_run("ferwild:fer2013_vgg", device="cpu", detector="none")
    paths = sorted((shared_data / "fer2013" / "test").glob("*/PrivateTest_*"))
    assert len(paths) == 3589
    truth = np.array([rec.label_names.index(normalize_label(p.parent.name)) for p in paths])
    from ferwild.data.images import load_image

    crops = [load_image(p).array for p in paths]
    pred = rec.classify(crops).argmax(1)
    accuracy = float(np.mean(pred == truth))
    assert abs(100 * accuracy - 100 * card["test"]["accuracy"]) < 0.1, (accuracy, card["test"]["accuracy"])
    assert card["test"]["n"] == 3589


@pytest.mark.shared_data
def test_default_card_accuracy_is_the_models_on_ferplus_test(shared_data):
    """The default model's card figure, re-measured from FER+'s files: every FER2013Test PNG
    whose votes give a 7-class majority label, through the recogniser, to 0.1 point."""
    from ferwild.data.images import load_image
    from ferwild.data.sources import read_source
    from ferwild.data.votes import VOTE_COLUMNS, hard_label, vote_class

    root = shared_data / "ferplus"
    if not root.is_dir():
        pytest.skip(f"FER+ not present at {root}")
    card = _card()
    figures = card["results"]["ferplus_test"]
    rec = Recognizer.default(device="cpu", detector="none")
    rows = read_source(root)
    rows = rows[(rows["source_split"] == "test") & (rows["source_problem"] == "")]
    classes = [vote_class(c) for c in VOTE_COLUMNS]
    labels = [hard_label(v, classes)[0] for v in rows[list(VOTE_COLUMNS)].to_numpy()]
    keep = [label in rec.label_names for label in labels]
    paths = rows["path"][keep].tolist()
    truth = np.array([rec.label_names.index(label) for label, k in zip(labels, keep) if k])
    assert len(paths) == figures["n"]
    pred = rec.classify([load_image(p).array for p in paths]).argmax(1)
    accuracy = float(np.mean(pred == truth))
    assert abs(100 * accuracy - 100 * figures["accuracy"]) < 0.1, (accuracy, figures["accuracy"])


@pytest.mark.shared_data
def test_predict_reads_real_photos_with_no_model_argument(shared_data, tmp_path):
    out = tmp_path / "preds"
    result = CliRunner().invoke(app, ["predict", str(shared_data / "face_photos"), "--out", str(out)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "predictions.csv")
    faces = rows[rows["label"].notna()]
    assert len(faces) >= 30  # 34 photos, most with at least one face
    assert set(faces["label"]) <= set(_card()["labels"])
    assert faces["label"].nunique() >= 3  # real expressions, not one class for every face


def test_inference_never_imports_the_training_loop():
    # a run is its own concept (ferwild.runs): loading one for inference or export must not
    # pull in ferwild.train (the loop, DDP, schedulers)
    code = ("import sys; from ferwild.recognizer import Recognizer; import ferwild.export, ferwild.predict; "
            "rec = Recognizer.default(); assert rec.label_names; "
            "print(sorted(m for m in sys.modules if m in ('ferwild.train', 'ferwild.evaluate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_models_listing_reads_at_80_columns():
    """At 80 columns the shipped models are listed one block each: no name or word cut."""
    from typer.testing import CliRunner

    from ferwild.cli import app

    result = CliRunner().invoke(app, ["models"], terminal_width=80)
    assert result.exit_code == 0
    for row in shipped.list_shipped():
        assert f"\n{row['name']}\n" in result.output
        assert f"trained on: {row['data']}" in result.output
    assert "…" not in result.output.split("trained models shipped")[1]


@pytest.mark.parametrize("earned", [True, False, None])
def test_the_live_paths_take_the_live_model_only_when_its_card_says_it_earned_it(tiny_run, tmp_path, monkeypatch,
                                                                                 earned):
    weights = tmp_path / "weights"
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights)
    assert shipped.live_run() == shipped.default_run()  # nothing shipped: the default's name
    card = {} if earned is None else {"live_default": earned}
    pack_run(tiny_run[0], weights / shipped.LIVE_MODEL, card=card)
    expected = shipped.PREFIX + shipped.LIVE_MODEL if earned else shipped.default_run()
    assert shipped.live_run() == expected


def test_list_shipped_gives_the_report_people_figure_and_the_cards_size(tmp_path, monkeypatch):
    """The real-photo figure is the one on wild_dev's report people (no choice saw them), from the
    model's own card or, for a model measured as another's baseline, from that card; the size is
    the one the card states."""
    def fake(name, card):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "BEST").write_text("final")
        (tmp_path / name / "card.json").write_text(json.dumps(card))

    report, everyone = {"accuracy": 0.83, "macro_f1": 0.5}, {"accuracy": 0.82, "macro_f1": 0.48}
    fake("new", {"results": {"wild_report": report, "wild_all": everyone}, "baseline": "ferwild:old",
                 "baseline_results": {"wild_report": {"accuracy": 0.58, "macro_f1": 0.33}}, "size_bytes": 5_000_000})
    fake("old", {"test": {"accuracy": 0.7}})
    fake("alone", {})
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    rows = {row["name"]: row for row in shipped.list_shipped()}
    assert rows["ferwild:new"]["wild_report"] == report and rows["ferwild:new"]["wild_dev"] == everyone
    assert rows["ferwild:new"]["wild_report_source"] == "ferwild:new"
    assert rows["ferwild:new"]["size_bytes"] == 5_000_000
    assert rows["ferwild:old"]["wild_report"] == {"accuracy": 0.58, "macro_f1": 0.33}
    assert rows["ferwild:old"]["wild_report_source"] == "ferwild:new"
    assert rows["ferwild:alone"]["wild_report"] == {} and rows["ferwild:alone"]["wild_report_source"] is None
    assert rows["ferwild:alone"]["size_bytes"] > 0  # no size in the card: the folder's files
    out = " ".join(CliRunner().invoke(app, ["models"], terminal_width=80).output.split())  # one block a model
    assert "macro-F1: 58.0% / 33.0% (as ferwild:new's baseline)" in out
    assert "test acc / macro-F1: 70.0% / -" in out  # a card without a macro-F1 still lists
    assert "macro-F1: 83.0% / 50.0% size: 5.0 MB" in out
