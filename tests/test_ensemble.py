"""Ensembles: FEREnsemble's arithmetic, combine_runs (diverged members left out), and the
combined run working wherever a run does (evaluate, export)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from ferwild.ensemble import ENSEMBLE_REPORT, check_member, combine_runs
from ferwild.models import FEREnsemble, create_model, model_from_config
from ferwild.runs import RunError, checkpoint_dir, load_run


def _members(n=3, name="fer_vgg_half"):
    torch.manual_seed(0)
    return [create_model(name, 5, id2label=dict(enumerate("abcde"))).eval() for _ in range(n)]


def test_ensemble_averages_member_probabilities_over_members_and_mirrors():
    members = _members()
    ensemble = FEREnsemble(members).eval().set_tta("flip")
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        features, logits = ensemble.forward_with_features(x)
        expected = sum(m.head(m.backbone(v)).softmax(1) for m in members for v in (x, x.flip(-1))) / 6
        no_tta = ensemble.set_tta("none")(x).softmax(1)
    assert torch.allclose(logits.exp(), expected, atol=1e-6)
    assert features.shape == (4, 3 * members[0].num_features)
    assert torch.allclose(no_tta, sum(m(x).softmax(1) for m in members) / 3, atol=1e-6)
    # the temperature divides the log mean probabilities, as for a single model
    ensemble.set_temperature(2.0)
    with torch.no_grad():
        assert torch.allclose(ensemble(x), (sum(m(x).softmax(1) for m in members) / 3).log() / 2, atol=1e-5)


def test_ensemble_config_round_trip_and_refusals():
    ensemble = FEREnsemble(_members()).set_tta("flip").set_temperature(0.7)
    config = ensemble.config()
    assert config["ensemble"] == 3 and config["num_features"] == 256
    rebuilt = model_from_config(json.loads(json.dumps(config)))
    assert isinstance(rebuilt, FEREnsemble) and len(rebuilt.members) == 3
    assert (rebuilt.tta, rebuilt.temperature) == ("flip", 0.7)
    rebuilt.load_state_dict(ensemble.state_dict(), strict=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), ensemble.eval()(x))
    with pytest.raises(RuntimeError, match="not trained as a whole"):
        ensemble.train()(x)
    with pytest.raises(ValueError, match="two or more"):
        FEREnsemble(_members(1))
    with pytest.raises(ValueError, match="share architecture"):
        FEREnsemble([_members(1)[0], _members(1, "fer_vgg_tiny")[0]])


@pytest.fixture(scope="module")
def member_runs(tmp_path_factory, make_prepared):
    """Three real tiny runs (cnn_small, seeds 0-2) on synthetic faces, and a copy of the first
    whose weights hold a NaN."""
    from ferwild.config import RunConfig
    from ferwild.train import fit

    prep = make_prepared(150, seed=7, synth_size=64)
    root = tmp_path_factory.mktemp("members")
    runs = []
    for seed in range(3):
        config = RunConfig.load(None, [f"data.path={prep}", "model.name=cnn_small", "model.pretrained=none",
                                       "model.image_size=32", "train.batch_size=32", "train.epochs=2",
                                       f"train.seed={seed}", "optim.scheduler=constant"])
        fit(config, root / f"m{seed}", log=lambda message: None)
        runs.append(root / f"m{seed}")
    broken = root / "nan"
    shutil.copytree(runs[0], broken)
    from safetensors.torch import load_file, save_file

    weights_file = checkpoint_dir(broken, "best") / "model.safetensors"
    weights = load_file(weights_file)
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key][0] = float("nan")
    save_file(weights, weights_file)
    return runs, broken, prep


def test_combine_runs_averages_the_members_and_leaves_out_a_nan_member(member_runs, tmp_path):
    from ferwild.evaluate import evaluate_run

    runs, broken, prep = member_runs
    # tiny runs near chance differ by several points: the accuracy rule is tested below
    report = combine_runs([*runs, broken], tmp_path / "ens", max_val_drop=0.5)
    assert [m["run"] for m in report["members"]] == [str(r) for r in runs]
    assert len(report["excluded"]) == 1 and "non-finite weights" in report["excluded"][0]["problem"]
    assert json.loads((tmp_path / "ens" / ENSEMBLE_REPORT).read_text())["excluded"][0]["run"] == str(broken)

    summary = evaluate_run(tmp_path / "ens", prep, "test", tmp_path / "eval", device="cpu")
    probs = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    names = summary["label_names"]
    member_probs = []
    for i, run in enumerate(runs):
        evaluate_run(run, prep, "test", tmp_path / f"eval{i}", device="cpu")
        member_probs.append(pd.read_parquet(tmp_path / f"eval{i}" / "predictions.parquet")[
            [f"prob_{n}" for n in names]].to_numpy())
    np.testing.assert_allclose(probs[[f"prob_{n}" for n in names]].to_numpy(), np.mean(member_probs, 0), atol=1e-5)
    assert "row_id" in probs.columns  # what distillation keys the teacher's targets by


def test_combine_runs_leaves_out_unfinished_and_far_behind_members(member_runs, tmp_path):
    runs, _, _ = member_runs
    # a run that stopped (a NaN loss stops `ferwild train`): one epoch of its two recorded
    short = tmp_path / "short"
    shutil.copytree(runs[1], short)
    metrics = pd.read_csv(short / "metrics.csv")
    metrics.head(1).to_csv(short / "metrics.csv", index=False)
    assert "unfinished: 1 of 2 epochs" in check_member(short)["problem"]
    # the accuracy rule: a member whose record says it sits far below the best is left out
    behind = tmp_path / "behind"
    shutil.copytree(runs[2], behind)
    metrics = pd.read_csv(behind / "metrics.csv")
    metrics["val_acc"] = 0.01
    metrics.to_csv(behind / "metrics.csv", index=False)
    report = combine_runs([runs[0], runs[1], behind, short], tmp_path / "ens2", max_val_drop=0.15)
    problems = {e["run"]: e["problem"] for e in report["excluded"]}
    assert "points below the best member's" in problems[str(behind)]
    assert "unfinished" in problems[str(short)]
    assert len(report["members"]) == 2
    with pytest.raises(RunError, match="two usable members"):
        combine_runs([runs[0], short], tmp_path / "ens3", max_val_drop=0.5)


def test_combined_run_exports_to_onnx_with_the_same_outputs(member_runs, tmp_path):
    from ferwild.export import export_onnx

    runs, _, _ = member_runs
    combine_runs(runs[:2], tmp_path / "ens", max_val_drop=0.5)
    model, _ = load_run(tmp_path / "ens")
    assert isinstance(model, FEREnsemble)
    result = export_onnx(tmp_path / "ens", tmp_path / "ens.onnx")  # checks ONNX Runtime against PyTorch
    assert (tmp_path / "ens.onnx").is_file() and result


def test_combine_runs_keeps_a_shipped_members_name(tmp_path):
    """A shipped member is recorded as ``ferwild:NAME`` (what a card's commands can rerun), not as
    this machine's path into the package, and still loads from it."""
    from ferwild.runs import resolve_run_dir

    report = combine_runs(["ferwild:ferplus_vgg", "ferwild:ferplus_live"], tmp_path / "ens")
    assert [m["run"] for m in report["members"]] == ["ferwild:ferplus_vgg", "ferwild:ferplus_live"]
    model, _ = load_run(tmp_path / "ens")
    default, _ = load_run(resolve_run_dir("ferwild:ferplus_vgg"))
    first = model.members[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in default.state_dict().items())


def test_an_ensemble_member_brings_its_members(tmp_path):
    """combine_runs over a shipped ensemble and one more run: three members, the first two cut out
    of the ensemble's weights with the figures its card gives them."""
    from ferwild.runs import resolve_run_dir
    from ferwild.shipped import model_card

    report = combine_runs(["ferwild:ferplus_ensemble", "ferwild:ferplus_vgg"], tmp_path / "ens3")
    members = report["members"]
    assert [m.get("via") for m in members] == ["ferwild:ferplus_ensemble", "ferwild:ferplus_ensemble", None]
    card_members = model_card("ferwild:ferplus_ensemble")["members"]
    assert [m["val_acc"] for m in members[:2]] == [m["val_acc"] for m in card_members]
    three, _ = load_run(tmp_path / "ens3")
    two, _ = load_run(resolve_run_dir("ferwild:ferplus_ensemble"))
    default, _ = load_run(resolve_run_dir("ferwild:ferplus_vgg"))
    assert isinstance(three, FEREnsemble) and len(three.members) == 3
    for mine, theirs in [(three.members[0], two.members[0]), (three.members[1], two.members[1]),
                         (three.members[2], default)]:
        ref = theirs.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in mine.state_dict().items())
    # the ensemble's two members differ, so the check above tells which is which
    first, second = two.members[0].state_dict(), two.members[1].state_dict()
    assert any(not torch.equal(v, second[k]) for k, v in first.items() if v.is_floating_point())

    # an ensemble whose members' report is gone cannot say what they were
    bare = tmp_path / "bare"
    shutil.copytree(resolve_run_dir("ferwild:ferplus_ensemble"), bare)
    (bare / "card.json").unlink()
    with pytest.raises(RunError, match="without the report of its members"):
        combine_runs([bare, "ferwild:ferplus_vgg"], tmp_path / "ens_bad")
