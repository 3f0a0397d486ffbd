"""The study runner: expansion, selection on validation, resumability, the Ray path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ferwild.study import StudyError, StudySpec, expand_trials, original_study_design, run_study, select

BASE = {"model.pretrained": "none", "model.image_size": 32, "train.batch_size": 32, "train.epochs": 1,
        "model.name": "cnn_small"}


@pytest.fixture(scope="module")
def prepared(make_prepared) -> Path:
    return make_prepared(180, seed=3, synth_size=48)


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_original_study_design_expands_to_the_papers_grid(tmp_path):
    spec = StudySpec.from_dict(original_study_design("data", seeds=[0, 1]), root=tmp_path)
    trials = expand_trials(spec)
    by_exp = pd.Series([t.experiment for t in trials]).value_counts().to_dict()
    assert by_exp == {"main": 2, "baseline": 2, "epochs": 8, "optimizer_lr": 18, "fine_lr": 6}
    assert len({t.id for t in trials}) == len(trials)
    grid = [t for t in trials if t.experiment == "optimizer_lr"]
    # ablations inherit the main model; values are parsed (1e-2 is a number, not text)
    assert {t.params["model.name"] for t in grid} == {"vit_b16"}
    assert {t.params["optim.lr"] for t in grid} == {1e-2, 1e-3, 1e-5}
    assert {t.params["optim.optimizer"] for t in grid} == {"sgd", "rmsprop", "adam"}
    assert spec.data == str(tmp_path / "data")


@pytest.mark.parametrize("spec,message", [
    ({"seeds": [0], "experiments": [{"name": "a"}]}, "data"),
    ({"data": "d", "experiments": []}, "at least one"),
    ({"data": "d", "experiments": [{"name": "a", "base": "zzz"}]}, "base"),
    ({"data": "d", "experiments": [{"name": "a", "grid": {"optim.lr": []}}]}, "non-empty"),
    ({"data": "d", "experiments": [{"name": "a"}], "selection": {"metric": "test_macro_f1"}}, "validation"),
    ({"data": "d", "experiments": [{"name": "a"}, {"name": "a"}]}, "unique"),
])
def test_bad_study_files(spec, message):
    with pytest.raises(StudyError, match=message):
        StudySpec.from_dict(spec)


def test_selection_uses_validation_not_test():
    spec = StudySpec.from_dict({"data": "d", "seeds": [0, 1],
                                "experiments": [{"name": "g", "grid": {"optim.lr": [0.1, 0.01]}}]})
    trials = expand_trials(spec)
    results = pd.DataFrame({"trial": [t.id for t in trials], "experiment": "g", "seed": [t.seed for t in trials],
                            # lr 0.1: better on val; lr 0.01: better on test
                            "val_macro_f1": [0.80, 0.70, 0.60, 0.62], "val_acc": 0.5,
                            "test_macro_f1": [0.50, 0.52, 0.90, 0.91], "test_acc": 0.5,
                            "run_dir": [f"trials/{t.id}" for t in trials], "seconds": 1.0})
    sel = select(results, trials)
    assert sel["winner"]["params"]["optim.lr"] == 0.1
    assert sel["winner"]["trial"] == trials[0].id            # the better seed on validation
    cell = next(c for c in sel["cells"] if c["params"]["optim.lr"] == 0.1)
    assert cell["val_macro_f1_mean"] == pytest.approx(0.75)
    assert cell["val_macro_f1_std"] == pytest.approx(pd.Series([0.8, 0.7]).std())


def test_study_end_to_end_and_resume(prepared, tmp_path):
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0, 1], "base": BASE,
                                        "experiments": [{"name": "main"},
                                                        {"name": "lr", "base": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}]})
    out = tmp_path / "study"
    results = run_study(spec, out, workers=2, log=lambda m: None)
    assert len(results) == 6
    csv = pd.read_csv(out / "results.csv")
    for col in ("trial", "experiment", "seed", "optim.lr", "val_acc", "val_macro_f1", "test_acc", "test_macro_f1"):
        assert col in csv.columns
    assert csv[["val_macro_f1", "test_macro_f1"]].notna().all().all()
    best = (out / "best_run").read_text().strip()
    assert (out / best / "checkpoints" / "BEST").exists()
    selection = json.loads((out / "selection.json").read_text())
    winner_rows = csv[csv["trial"].isin(next(c["trials"] for c in selection["cells"]
                                             if c["params"] == selection["winner"]["params"]
                                             and c["experiment"] == selection["winner"]["experiment"]))]
    assert selection["winner"]["val_macro_f1_mean"] == pytest.approx(winner_rows["val_macro_f1"].mean())
    assert (out / "report.html").exists() and (out / "report.md").exists()

    # rerunning the same command redoes nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/trial.json")}
    run_study(spec, out, workers=2, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/*/trial.json")} == stamps
    # a different study into the same folder is refused
    other = _write(tmp_path / "other.yaml", {"data": str(prepared), "experiments": [{"name": "x"}]})
    with pytest.raises(StudyError, match="different study"):
        run_study(other, out, log=lambda m: None)


def test_cells_repeated_across_experiments_train_once(prepared, tmp_path):
    # the study's design repeats its main model as the epochs=1 and lr=1e-3 cells
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0], "base": {**BASE, "optim.lr": 1e-3},
                                        "experiments": [{"name": "main"},
                                                        {"name": "lr", "base": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}]})
    trials = expand_trials(StudySpec.load(spec))
    repeat = next(t for t in trials if t.experiment == "lr" and t.params["optim.lr"] == 1e-3)
    assert repeat.same_as == "main-s0"
    assert [t.same_as for t in trials if t is not repeat] == [None, None]
    logs: list[str] = []
    out = tmp_path / "study"
    results = run_study(spec, out, workers=1, log=logs.append, report=False)
    assert "1 repeating another experiment's cell" in logs[0]
    assert not (out / "trials" / repeat.id / "checkpoints").exists()       # not trained again
    row = results.set_index("trial").loc[repeat.id]
    main = results.set_index("trial").loc["main-s0"]
    assert row["run_dir"] == main["run_dir"] == "trials/main-s0"
    assert row["val_macro_f1"] == main["val_macro_f1"] and row["experiment"] == "lr"
    assert json.loads((out / "trials" / repeat.id / "trial.json").read_text())["same_as"] == "main-s0"


def test_study_cli_data_override(prepared, tmp_path):
    from typer.testing import CliRunner

    from ferwild.cli import app

    spec = _write(tmp_path / "s.yaml", {"data": "not-there", "base": BASE, "experiments": [{"name": "main"}]})
    result = CliRunner().invoke(app, ["study", str(spec), "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "not a prepared dataset" in result.output
    result = CliRunner().invoke(app, ["study", str(spec), "--out", str(tmp_path / "b"), "--data", str(prepared)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "b" / "study.yaml").read_text())["data"] == str(prepared.absolute())


@pytest.mark.slow
def test_study_resumes_after_kill9_without_redoing_trials(prepared, tmp_path):
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0, 1, 2], "base": BASE,
                                        "experiments": [{"name": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}]})
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "ferwild.cli", "study", str(spec), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("trials/*/trial.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/trial.json")}
    assert 2 <= len(finished) < 6
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} already done" in done.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished trials untouched
    assert len(pd.read_csv(out / "results.csv")) == 6


@pytest.mark.slow
def test_ray_path_runs_trials_as_tasks(prepared, tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed")
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0], "base": BASE,
                                        "experiments": [{"name": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}]})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_study(spec, tmp_path / "study", ray_address="auto", report=False, log=lambda m: None)
    finally:
        ray.shutdown()
    assert len(results) == 2 and results["val_macro_f1"].notna().all()
    assert (tmp_path / "study" / "best_run").exists()


def test_mlflow_logging_of_trials(prepared, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow not installed")
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0], "base": BASE,
                                        "experiments": [{"name": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}]})
    monkeypatch.chdir(tmp_path)
    run_study(spec, tmp_path / "study", workers=1, report=False, mlflow_uri="./mlruns", log=lambda m: None)
    runs = mlflow.search_runs(experiment_names=["study"])
    assert sorted(runs["tags.mlflow.runName"]) == sorted(p.name for p in (tmp_path / "study" / "trials").iterdir())
    assert set(runs["params.optim.lr"].astype(float)) == {1e-2, 1e-3}
    assert runs["metrics.final_val_macro_f1"].notna().all()
    # a rerun logs nothing twice
    run_study(spec, tmp_path / "study", workers=1, report=False, mlflow_uri="./mlruns", log=lambda m: None)
    assert len(mlflow.search_runs(experiment_names=["study"])) == 2


def test_retrain_winner_on_train_val(prepared, tmp_path):
    spec = _write(tmp_path / "s.yaml", {"data": str(prepared), "seeds": [0], "base": BASE,
                                        "experiments": [{"name": "main", "grid": {"optim.lr": [1e-2, 1e-3]}}],
                                        "selection": {"metric": "val_macro_f1", "retrain_on_train_val": True}})
    run_study(spec, tmp_path / "study", workers=1, report=False, log=lambda m: None)
    selection = json.loads((tmp_path / "study" / "selection.json").read_text())
    retrained = selection["retrained"]
    assert retrained["trial"] == selection["winner"]["trial"] and retrained["train_split"] == "train+val"
    summary = json.loads((tmp_path / "study" / "winner_train_val" / "train_summary.json").read_text())
    counts = json.loads((prepared / "summary.json").read_text())
    n_val = sum(counts["counts"]["val"].values())
    n_train = sum(counts["counts_after_balance"]["train"].values())
    assert summary["train_rows"] == n_train + n_val
    assert 0 <= retrained["test_macro_f1"] <= 1


def test_real_study_recipe_parses_and_matches_the_published_page():
    """recipes/study_ferplus.yaml expands to exactly the trials docs/real-study.md reports."""
    import re

    from conftest import REPO

    spec = StudySpec.load(REPO / "recipes" / "study_ferplus.yaml")
    trials = expand_trials(spec)
    assert Path(spec.data).resolve() == (REPO / "model_work" / "ferplus_basic7").resolve()
    # the page as a reader sees it (its figures sit between render markers)
    page = re.sub(r"<!--.*?-->", "", (REPO / "docs" / "real-study.md").read_text(), flags=re.S)
    # the page's design table: | experiment | cells | seeds | trials | trained |
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", page, flags=re.M)
    assert rows, "docs/real-study.md has no design table"
    reported = {name: tuple(map(int, numbers)) for name, *numbers in rows}
    by_experiment: dict[str, list] = {}
    for t in trials:
        by_experiment.setdefault(t.experiment, []).append(t)
    assert set(reported) == set(by_experiment)
    for name, group in by_experiment.items():
        cells = {json.dumps(t.params, sort_keys=True, default=str) for t in group}
        trained = sum(1 for t in group if t.same_as is None)
        assert reported[name] == (len(cells), len(spec.seeds), len(group), trained), name
    total = re.search(r"(\d+) trials, (\d+) of them trained", page)
    assert total and (int(total[1]), int(total[2])) == (len(trials), sum(t.same_as is None for t in trials))
    assert len(spec.seeds) >= 3
    # every trial the page's tables are built from exists in the recipe's grid
    for trial_id in re.findall(r"`((?:main|baseline|epochs|optimizer_lr|fine_lr|schedule)-[\w.-]*s\d)`", page):
        assert trial_id in {t.id for t in trials}, trial_id
