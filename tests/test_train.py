"""Training and evaluation end to end on a small prepared dataset (tiny model, CPU)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ferwild.config import RunConfig
from ferwild.data.prepare import PrepareConfig, prepare
from ferwild.data.synth import synth_dataset
from ferwild.train import METRIC_COLUMNS, TrainingDiverged, fit

TRAIN_ARGS = ["--model", "cnn_small", "--pretrained", "none", "--batch-size", "32", "--image-size", "32"]


@pytest.fixture(scope="module")
def prepared(make_prepared) -> Path:
    return make_prepared(360, seed=1, synth_size=64)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ferwild.cli", *args], capture_output=True, text=True, **kw)


def _config(prepared: Path, **train) -> RunConfig:
    overrides = [f"data.path={prepared}", "model.name=cnn_small", "model.pretrained=none",
                 "model.image_size=32", "train.batch_size=32"] + [f"train.{k}={v}" for k, v in train.items()]
    return RunConfig.load(None, overrides)


def test_train_cli_writes_the_contract(prepared, tmp_path):
    run = tmp_path / "run"
    out = _cli("train", *TRAIN_ARGS, "--data", str(prepared), "--epochs", "2", "--out", str(run),
               "optim.lr=3e-3")
    assert out.returncode == 0, out.stderr
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns[:8]) == METRIC_COLUMNS
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics[METRIC_COLUMNS].notna().all().all()
    assert (metrics["lr"] == 3e-3).all()
    resolved = RunConfig.load(run / "config.yaml")
    assert resolved.model.name == "cnn_small" and resolved.optim.lr == 3e-3 and resolved.train.epochs == 2
    for name in ("curves.png", "metrics.md", "checkpoints/LAST", "checkpoints/BEST"):
        assert (run / name).exists(), name
    # learning happened: training loss falls
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    # every file (weights included) has the permissions a plain write gives
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in modes.items() if v != 0o666 & ~umask} == {}

    ev = _cli("evaluate", str(run), "--data", str(prepared), "--split", "test", "--out", str(tmp_path / "ev"))
    assert ev.returncode == 0, ev.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    for key in ("accuracy", "macro_f1", "ece", "per_class"):
        assert key in summary
    n_test = sum(json.loads((prepared / "summary.json").read_text())["counts"]["test"].values())
    assert summary["n"] == n_test
    assert set(summary["per_class"]) == set(json.loads((prepared / "summary.json").read_text())["label_names"])
    preds = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    assert len(preds) == n_test and "attr_gender" in preds.columns
    assert (tmp_path / "ev" / "confusion_matrix.png").exists()


def test_resume_after_kill9_gives_identical_metrics(prepared, tmp_path):
    args = ["train", *TRAIN_ARGS, "--data", str(prepared), "--epochs", "4", "--seed", "3"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", *args, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pointer = run / "checkpoints" / "LAST"
    deadline = time.time() + 120
    while time.time() < deadline and not pointer.exists():
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = int(pointer.read_text().strip().split("-")[1])
    assert 1 <= done < 4, "the kill must land mid-run"

    again = _cli(*args, "--out", str(run))
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently overwrite a run
    resumed = _cli(*args, "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = pd.read_csv(tmp_path / "ref" / "metrics.csv")[METRIC_COLUMNS]
    b = pd.read_csv(run / "metrics.csv")[METRIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)


def test_sigint_mid_epoch_checkpoints_and_resumes_exactly(prepared, tmp_path, monkeypatch):
    """SIGINT checkpoints mid-epoch; --resume replays the rest of that epoch identically."""
    import ferwild.train as train_mod

    ref = fit(_config(prepared, epochs=2, seed=5), tmp_path / "ref", log=lambda m: None)

    original = train_mod.train_one_epoch
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        should_stop = kwargs["should_stop"]
        calls["n"] += 1
        if calls["n"] == 2:  # second epoch: ask to stop after two optimizer steps
            steps = {"k": 0}

            def stop_after_two():
                steps["k"] += 1
                return steps["k"] >= 2 or should_stop()
            kwargs["should_stop"] = stop_after_two
        return original(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", interrupting)
    with pytest.raises(train_mod.TrainingInterrupted):
        fit(_config(prepared, epochs=2, seed=5), tmp_path / "int", log=lambda m: None)
    assert (tmp_path / "int" / "checkpoints" / "LAST").read_text().strip() == "epoch-001-step-000002"
    monkeypatch.setattr(train_mod, "train_one_epoch", original)
    resumed = fit(_config(prepared, epochs=2, seed=5), tmp_path / "int", resume=True, log=lambda m: None)
    cols = METRIC_COLUMNS
    pd.testing.assert_frame_equal(pd.DataFrame(ref["history"])[cols], pd.DataFrame(resumed["history"])[cols])


def test_nan_loss_fails_fast_and_keeps_last_good_checkpoint(prepared, tmp_path, monkeypatch):
    fit(_config(prepared, epochs=1), tmp_path / "run", log=lambda m: None)
    good = (tmp_path / "run" / "checkpoints" / "LAST").read_text()
    real_forward = torch.nn.CrossEntropyLoss.forward

    def nan_loss(self, logits, target):
        return real_forward(self, logits, target) * float("nan")

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_loss)
    with pytest.raises(TrainingDiverged, match="nan"):
        fit(_config(prepared, epochs=2), tmp_path / "run", resume=True, log=lambda m: None)
    assert (tmp_path / "run" / "checkpoints" / "LAST").read_text() == good


def test_accumulation_matches_the_full_batch(prepared, tmp_path):
    """batch 32 as 4 micro-batches of 8 takes the same optimizer steps (no BatchNorm in the
    way: compared through the first epoch's training loss, which uses the same samples)."""
    full = fit(_config(prepared, epochs=1, seed=2), tmp_path / "a", log=lambda m: None)
    accum = fit(_config(prepared, epochs=1, seed=2, micro_batch_size=8), tmp_path / "b", log=lambda m: None)
    assert full["history"][0]["train_loss"] == pytest.approx(accum["history"][0]["train_loss"], rel=0.05)


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet9000"], "unknown model"),
    (["--batch-size", "100000"], "larger than the training split"),
    (["optim.optimizer=adagrad"], "optim.optimizer"),
    (["data.val_split=holdout"], "empty"),
    (["--data", "NOT_PREPARED"], "NOT_PREPARED"),
    (["--model", "fer_vgg", "--image-size", "40"], "multiple of 16"),
])
def test_user_mistakes_are_one_line_errors(prepared, tmp_path, args, message):
    base = ["train", "--data", str(prepared), "--pretrained", "none", "--model", "cnn_small",
            "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "r")]
    out = _cli(*base, *args)
    assert out.returncode == 2, out.stdout
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # a run that could not start leaves nothing behind


def test_evaluate_mistakes(prepared, tmp_path):
    run = tmp_path / "run"
    assert _cli("train", *TRAIN_ARGS, "--data", str(prepared), "--epochs", "1", "--out", str(run)).returncode == 0
    # a dataset with another label set
    other = tmp_path / "other"
    synth_dataset("production", 60, other / "raw", seed=2, size=48, label_set="basic7")
    prepare(other / "raw" / "manifest.csv", other / "prep", PrepareConfig(size=32, labels="basic7", workers=1))
    out = _cli("evaluate", str(run), "--data", str(other / "prep"))
    assert out.returncode == 2 and "label sets differ" in out.stderr
    out = _cli("evaluate", str(run), "--data", str(prepared), "--split", "holdout")
    assert out.returncode == 2 and "empty" in out.stderr
    out = _cli("evaluate", str(tmp_path), "--data", str(prepared))
    assert out.returncode == 2 and "checkpoint" in out.stderr
    best = run / "checkpoints" / (run / "checkpoints" / "BEST").read_text().strip()
    (best / "model.safetensors").write_bytes(b"not a safetensors file")
    out = _cli("evaluate", str(run), "--data", str(prepared))
    assert out.returncode == 2 and "cannot read weights" in out.stderr and "Traceback" not in out.stderr
    (best / "state.pt").write_bytes(b"garbage")
    out = _cli("evaluate", str(run), "--data", str(prepared))
    assert out.returncode == 2 and "checkpoint state" in out.stderr


@pytest.mark.slow
def test_torchrun_two_processes_gloo(prepared, tmp_path):
    """The same command under torchrun trains with DDP on CPU (gloo) and evaluates every val row."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "ferwild.cli", "train", *TRAIN_ARGS, "--data", str(prepared), "--epochs", "2",
           "--out", str(run), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs"] == 2
    # rank 0 reports metrics over the whole validation split (confusions summed across ranks)
    assert metrics["val_count"].tolist() == [summary["val_rows"]] * 2
    assert "2 rank(s)" in out.stdout


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synth_dataset("reference", 60, root / "raw", seed=4, size=64, label_set="basic6")
    prepare(root / "raw" / "manifest.csv", root / "prep", PrepareConfig(size=32, workers=1, balance="none"))
    return root / "prep"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b16", "resnet50"])
def test_study_models_train_checkpoint_and_evaluate(tiny_prepared, tmp_path, name):
    """The study's two architectures (random init) go through fit -> safetensors checkpoint ->
    evaluate with the same code as the small models."""
    from ferwild.evaluate import evaluate_run
    from ferwild.runs import load_run

    cfg = RunConfig.load(None, [f"data.path={tiny_prepared}", f"model.name={name}", "model.pretrained=none",
                                "train.batch_size=4", "train.epochs=1", "train.max_train_batches=1",
                                "train.eval_batch_size=8"])
    summary = fit(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["epochs"] == 1 and summary["history"][0]["train_loss"] > 0
    model, state = load_run(tmp_path / "run", "last")
    assert state["model_config"]["name"] == name and model.preprocessing.input_size == 224
    result = evaluate_run(tmp_path / "run", tiny_prepared, "test", tmp_path / "ev", which="last")
    preds = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    assert len(preds) == result["n"] > 0
    # reloading the checkpoint reproduces the same probabilities
    again = evaluate_run(tmp_path / "run", tiny_prepared, "test", tmp_path / "ev2", which="last")
    preds2 = pd.read_parquet(tmp_path / "ev2" / "predictions.parquet")
    prob_cols = [c for c in preds.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(preds[prob_cols], preds2[prob_cols])
    assert again["accuracy"] == result["accuracy"]


def test_face_occluders_in_training_take_the_prepared_template(prepared, tmp_path, monkeypatch):
    """`occlude_p` without points: training places the occluders where this dataset's crops put
    the landmarks (its face alignment), and the run trains."""
    import numpy as np

    import ferwild.data.augment as augment
    from ferwild.data.prepared import PreparedDataset

    seen = []
    real = augment._face_occluders
    monkeypatch.setattr(augment, "_face_occluders", lambda x, g, config: (seen.append(config.occlude_points),
                                                                          real(x, g, config))[1])
    config = RunConfig.load(None, [f"data.path={prepared}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=32", "train.epochs=1",
                                   "data.augment=true", "data.augment_options={occlude_p: 0.5}"])
    fit(config, tmp_path / "run", log=lambda m: None)
    expected = PreparedDataset(prepared).face_alignment().points(1)
    assert seen and np.allclose(np.asarray(seen[0]), expected)
    assert (tmp_path / "run" / "metrics.csv").is_file()
