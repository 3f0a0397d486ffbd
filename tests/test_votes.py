"""Crowd labels (FER+): reading votes, the hard-label rules, soft-target training, crowd metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ferwild.data.votes import (
    VOTE_CLASSES,
    VOTE_COLUMNS,
    hard_label,
    parse_vote_columns,
    soft_targets,
    vote_class,
    vote_distribution,
)
from ferwild.metrics import crowd_metrics

# ------------------------------------------------------------------------------------------
# the rule


@pytest.mark.parametrize(("votes", "rule", "label", "reason"), [
    # neutral happiness surprise sadness anger disgust fear contempt unknown nf
    ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "majority", "neutral", ""),
    ([4, 0, 0, 4, 1, 0, 0, 0, 1, 0], "majority", "", "vote tie (neutral, sadness)"),
    ([1, 0, 0, 0, 0, 0, 0, 0, 6, 3], "majority", "", "unknown majority"),
    ([0, 0, 0, 0, 0, 0, 0, 0, 3, 7], "majority", "", "not-a-face majority"),
    ([2, 0, 0, 0, 0, 0, 0, 5, 3, 0], "majority", "contempt", ""),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "majority", "", "no votes"),
    # strict: lone votes dropped, then more than half needed
    ([4, 3, 1, 1, 1, 0, 0, 0, 0, 0], "strict", "neutral", ""),   # 4 of 7 after dropping the 1s
    ([4, 3, 3, 0, 0, 0, 0, 0, 0, 0], "strict", "", "no majority"),
    ([4, 3, 3, 0, 0, 0, 0, 0, 0, 0], "majority", "neutral", ""),
])
def test_hard_label_rules(votes, rule, label, reason):
    got_label, got_reason = hard_label(np.array(votes, float), VOTE_CLASSES, rule)
    assert got_label == label
    assert got_reason.startswith(reason) and bool(got_reason) == bool(reason)


def test_vote_class_names():
    assert [vote_class(c) for c in VOTE_COLUMNS] == list(VOTE_CLASSES)
    assert vote_class("votes_happy") == "happiness" and vote_class("votes_NF") == "nf"
    with pytest.raises(ValueError):
        vote_class("votes_banana")


def test_distribution_drops_classes_outside_the_set_and_falls_back_to_the_label():
    frame = pd.DataFrame([[6, 0, 1, 1, 0, 0, 0, 2, 0, 0], [np.nan] * 10], columns=list(VOTE_COLUMNS))
    frame["label"] = ["neutral", "anger"]
    names = ["anger", "neutral", "sadness", "surprise"]
    dist = vote_distribution(frame, names)
    # contempt (2 votes) and the classes not in `names` are left out: 6 neutral, 1 sad, 1 surprise
    np.testing.assert_allclose(dist[0], [0, 6 / 8, 1 / 8, 1 / 8])
    assert np.isnan(dist[1]).all()
    targets = soft_targets(frame, names)
    np.testing.assert_allclose(targets, [[0, 0.75, 0.125, 0.125], [1, 0, 0, 0]])


def test_parse_vote_columns_reports_each_bad_row():
    frame = pd.DataFrame({"votes_anger": ["3", "x", "", "-1", ""], "votes_fear": ["1", "2", "4", "0", ""]})
    values, problems = parse_vote_columns(frame, ["votes_anger", "votes_fear"])
    np.testing.assert_array_equal(values[0], [3, 1])
    assert problems[0] == "" and problems[4] == ""          # all empty: no votes, not a problem
    assert np.isnan(values[4]).all()
    assert "votes_anger='x'" in problems[1]
    assert "votes_anger=''" in problems[2]                   # one cell empty, the other not
    assert "votes_anger='-1'" in problems[3]
    assert np.isnan(values[1:4]).all()


# ------------------------------------------------------------------------------------------
# a FERPlus folder, with every kind of bad input


def _face(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), mode="L")


def _write_ferplus(root, rows_by_folder, full_names=()):
    """Write a FERPlus layout: ``rows_by_folder[folder] = [(name, votes-or-raw-cells, write_png)]``."""
    seed = 0
    for folder, rows in rows_by_folder.items():
        (root / folder).mkdir(parents=True)
        lines = []
        for name, votes, write_png in rows:
            cells = votes if isinstance(votes, str) else ",".join(str(v) for v in votes)
            lines.append(f'{name},"(0, 0, 48, 48)",{cells}')
            if write_png:
                _face(seed).save(root / folder / name)
                seed += 1
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
    if full_names:
        header = "Usage,Image name," + ",".join(VOTE_CLASSES[:-1]) + ",NF"
        body = [f"Training,{n}," + ",".join(["1"] * 10) for n in full_names]
        (root / "fer2013new.csv").write_text("\n".join([header, *body]) + "\n")


def _varied_votes(i: int) -> list[int]:
    votes = [0] * 10
    votes[i % 7] = 7          # one clear majority per face, cycling over the 7 expressions
    votes[(i + 1) % 7] = 3
    return votes


@pytest.fixture(scope="module")
def ferplus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ferplus")
    train = [(f"fer{i:07d}.png", _varied_votes(i), True) for i in range(28)]
    train += [
        ("fer0000100.png", [4, 0, 0, 4, 1, 0, 0, 0, 1, 0], True),     # tie
        ("fer0000101.png", [1, 0, 0, 0, 0, 0, 0, 0, 9, 0], True),     # unknown majority
        ("fer0000102.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10], True),    # not a face
        ("fer0000103.png", [1, 0, 0, 0, 0, 0, 0, 9, 0, 0], True),     # contempt: outside 7 classes
        ("fer0000104.png", "5,0,0,-2,0,0,0,0,0,0", True),              # negative vote
        ("fer0000105.png", "5,0,0", True),                             # missing votes
        ("fer0000106.png", "5,0,0,x,0,0,0,0,0,0", True),               # not a number
        ("fer0000107.png", _varied_votes(3), False),                   # PNG missing
        ("fer0000108.png", _varied_votes(4), True),                    # listed twice in fer2013new.csv
    ]
    valid = [(f"fer{1000 + i:07d}.png", _varied_votes(i), True) for i in range(14)]
    test = [(f"fer{2000 + i:07d}.png", _varied_votes(i), True) for i in range(14)]
    _write_ferplus(root, {"FER2013Train": train, "FER2013Valid": valid, "FER2013Test": test},
                   full_names=["fer0000001.png", "fer0000108.png", "fer0000108.png"])
    return root


@pytest.fixture(scope="module")
def ferplus_prepared(ferplus_dir, tmp_path_factory):
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.data.sources import default_label_set

    assert default_label_set(ferplus_dir) == "basic7"
    out = tmp_path_factory.mktemp("ferplus_prep") / "prep"
    return prepare(ferplus_dir, out, PrepareConfig(labels="basic7", balance=None, workers=1))


def test_ferplus_votes_kept_as_columns_and_bad_rows_reported(ferplus_prepared, ferplus_dir):
    manifest, summary = ferplus_prepared.manifest, ferplus_prepared.summary
    for column in VOTE_COLUMNS:
        assert column in manifest.columns
    by_name = manifest.set_index(manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    # the votes of a good row are label.csv's, in FER+'s order
    np.testing.assert_array_equal(by_name.loc["fer0000005.png", list(VOTE_COLUMNS)].to_numpy(float),
                                  _varied_votes(5))
    # the majority cycles over VOTE_CLASSES' first seven: neutral, happiness, ..., disgust, fear
    assert by_name.loc["fer0000005.png", "label"] == "disgust"
    assert by_name.loc["fer0000000.png", "label"] == "neutral"
    assert by_name.loc["fer0000001.png", "label"] == "happiness"
    # splits are the folders
    assert set(manifest.loc[manifest["status"] == "aligned", "split"]) == {"train", "val", "test"}
    assert manifest.loc[manifest["path"].str.contains("FER2013Test"), "split"].eq("test").all()

    status = by_name["status"].to_dict()
    reason = by_name["reason"].to_dict()
    assert status["fer0000100.png"] == "excluded" and reason["fer0000100.png"].startswith("votes: vote tie")
    assert status["fer0000101.png"] == "excluded" and "unknown majority" in reason["fer0000101.png"]
    assert status["fer0000102.png"] == "excluded" and "not-a-face" in reason["fer0000102.png"]
    assert status["fer0000103.png"] == "excluded" and "contempt" in reason["fer0000103.png"]
    assert status["fer0000104.png"] == "rejected" and "bad votes" in reason["fer0000104.png"]
    assert status["fer0000105.png"] == "rejected" and "expected 10 vote counts" in reason["fer0000105.png"]
    assert status["fer0000106.png"] == "rejected" and "'x'" in reason["fer0000106.png"]
    assert status["fer0000107.png"] == "rejected"                     # the PNG is missing
    assert status["fer0000108.png"] == "rejected" and "listed twice" in reason["fer0000108.png"]
    assert "FER2013Train/label.csv line 37" in reason["fer0000108.png"]    # where to look (28 + 9th row)
    assert status["fer0000001.png"] == "aligned"                      # listed once: fine

    votes = summary["votes"]
    assert votes["rule"] == "majority" and votes["listed_twice"] == ["fer0000108.png"]
    assert votes["excluded"] == {"votes: vote tie": 1, "votes: unknown majority": 1,
                                 "votes: not-a-face majority": 1}
    assert votes["bad_votes"] == 2                                    # the negative and the 'x'
    rejects = pd.read_csv(ferplus_prepared.out_dir / "rejects.csv")
    assert {"fer0000104.png", "fer0000105.png", "fer0000106.png", "fer0000107.png", "fer0000108.png"} <= \
        set(rejects["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    # the summary file says the same
    assert json.loads((ferplus_prepared.out_dir / "summary.json").read_text())["votes"]["bad_votes"] == 2


def test_strict_rule_is_selectable(ferplus_dir, tmp_path):
    from ferwild.data.prepare import PrepareConfig, prepare

    result = prepare(ferplus_dir, tmp_path / "strict", PrepareConfig(labels="affectnet8", balance=None, workers=1,
                                                                       vote_rule="strict"))
    by_name = result.manifest.set_index(result.manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    assert by_name.loc["fer0000103.png", "label"] == "contempt"     # 8 classes keep contempt
    assert result.summary["votes"]["rule"] == "strict"
    assert result.summary["label_names"][-1] == "contempt"


def test_manifest_with_vote_columns(tmp_path):
    from ferwild.data.prepare import PrepareConfig, prepare

    rows = []
    for i in range(24):
        _face(i).save(tmp_path / f"f{i}.png")
        votes = _varied_votes(i)
        rows.append({"path": f"f{i}.png", **{f"votes_{c}": v for c, v in zip(VOTE_CLASSES, votes)}})
    rows[3]["votes_fear"] = "lots"                                   # does not parse
    rows[4]["votes_anger"] = ""                                      # one cell missing
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    result = prepare(tmp_path / "manifest.csv", tmp_path / "prep",
                     PrepareConfig(labels="basic7", balance=None, workers=1, size=48))
    m = result.manifest.set_index(result.manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    assert m.loc["f3.png", "status"] == "rejected" and "votes_fear='lots'" in m.loc["f3.png", "reason"]
    assert m.loc["f4.png", "status"] == "rejected" and "votes_anger=''" in m.loc["f4.png", "reason"]
    assert m.loc["f0.png", "label"] == "neutral" and m.loc["f2.png", "label"] == "surprise"
    assert (m["status"] == "aligned").sum() + (m["status"] == "unaligned").sum() == 22


def test_real_ferplus_reads_every_row(shared_data):
    from ferwild.data.sources import read_source

    root = shared_data / "ferplus"
    if not root.is_dir():
        pytest.skip(f"FER+ not present at {root}")
    rows = read_source(root)
    assert rows["source_split"].value_counts().to_dict() == {"train": 28558, "val": 3579, "test": 3573}
    assert list(rows.columns[-11:]) == [*VOTE_COLUMNS, "source_problem"]
    twice = rows.loc[rows["source_problem"].str.startswith("name listed twice"), "path"]
    assert sorted(p.rsplit("/", 1)[-1] for p in twice) == [
        "fer0006953.png", "fer0008403.png", "fer0011785.png", "fer0033120.png"]
    assert (rows[list(VOTE_COLUMNS)].sum(axis=1) >= 9).mean() > 0.99   # about ten votes per face


# ------------------------------------------------------------------------------------------
# training on the vote distribution


def _train(prepared_dir, out, targets, extra=()):
    from ferwild.config import RunConfig
    from ferwild.train import fit

    config = RunConfig.load(None, [f"data.path={prepared_dir}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=8", "train.epochs=1",
                                   "train.max_train_batches=2", "optim.class_weights=none",
                                   f"optim.targets={targets}", *extra])
    summary = fit(config, out, log=lambda message: None)
    from safetensors.torch import load_file

    from ferwild.runs import checkpoint_dir
    return summary, load_file(checkpoint_dir(out, "last") / "model.safetensors")


def _with_votes(prepared_dir, tmp_path, name, transform):
    """A copy of a prepared dataset whose vote columns are ``transform(votes)``; labels unchanged."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(prepared_dir, copy)
    manifest = pd.read_parquet(copy / "manifest.parquet")
    manifest[list(VOTE_COLUMNS)] = transform(manifest[list(VOTE_COLUMNS)].to_numpy(float))
    manifest.to_parquet(copy / "manifest.parquet", index=False)
    return copy


def test_soft_targets_change_training_and_hard_targets_ignore_votes(ferplus_prepared, tmp_path):
    base = ferplus_prepared.out_dir

    def flatten(v):
        # the same majority class (the top count stays top), a much flatter distribution
        return np.where(np.isfinite(v), np.where(v > 0, v, 2.0), v)

    flat = _with_votes(base, tmp_path, "flat", flatten)
    soft_a, weights_a = _train(base, tmp_path / "soft_a", "votes")
    soft_b, weights_b = _train(flat, tmp_path / "soft_b", "votes")
    hard_a, hard_weights_a = _train(base, tmp_path / "hard_a", "hard")
    hard_b, hard_weights_b = _train(flat, tmp_path / "hard_b", "hard")
    # hard labels are equal in both copies: hard training is identical, so any difference in
    # the soft runs comes from the votes alone
    for key in hard_weights_a:
        torch.testing.assert_close(hard_weights_a[key], hard_weights_b[key])
    assert any(not torch.allclose(weights_a[k], weights_b[k]) for k in weights_a)
    assert soft_a["history"][0]["train_loss"] != pytest.approx(soft_b["history"][0]["train_loss"], rel=1e-3)
    # validation reports the crowd figures
    assert 0 < soft_a["history"][0]["val_vote_agreement"] <= 1 and soft_a["history"][0]["val_vote_ce"] > 0


def test_votes_target_needs_votes(make_prepared, tmp_path):
    from ferwild.runs import RunError

    with pytest.raises(RunError, match="no crowd votes"):
        _train(make_prepared(150, seed=7, synth_size=64), tmp_path / "run", "votes")


def test_loss_is_cross_entropy_to_the_votes():
    from ferwild.data.loader import BatchTransform
    from ferwild.train import train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    images = torch.randint(0, 255, (6, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    votes = torch.softmax(torch.randn(6, 3), 1)
    transform = BatchTransform(4, (0, 0, 0), (1, 1, 1))
    with torch.no_grad():
        expected = float(-(votes * torch.log_softmax(model(transform(images)), 1)).sum(1).mean())
    state = train_one_epoch(model, [(images, labels, votes)], transform, torch.optim.SGD(model.parameters(), lr=0.0),
                            torch.nn.CrossEntropyLoss(), torch.device("cpu"), num_classes=3)
    assert state.loss_sum / state.count == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        hard = float(torch.nn.functional.cross_entropy(model(transform(images)), labels))
    assert expected != pytest.approx(hard, rel=1e-3)


# ------------------------------------------------------------------------------------------
# evaluation against the crowd


def test_crowd_metrics_by_hand():
    votes = np.array([[0.7, 0.3, 0.0], [0.2, 0.4, 0.4], [0.0, 0.1, 0.9], [0.5, 0.5, 0.0]])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1]])
    labels = np.array([0, 1, 2, 0])
    crowd = crowd_metrics(probs, votes, labels, ["a", "b", "c"], n_bootstrap=200)
    # predictions: a, c, a, b -> crowd shares 0.7, 0.4, 0.0, 0.5
    assert crowd["crowd_agreement"]["value"] == pytest.approx((0.7 + 0.4 + 0.0 + 0.5) / 4)
    # plurality: a is top in row 0; c ties top in row 1; a is not top in row 2; b ties top in row 3
    assert crowd["plurality_agreement"]["value"] == pytest.approx(3 / 4)
    assert crowd["majority_accuracy"]["value"] == pytest.approx(1 / 4)
    ce = -(votes * np.log(probs)).sum(1).mean()
    assert crowd["vote_cross_entropy"]["value"] == pytest.approx(ce)
    assert crowd["per_class"]["a"]["support"] == 2
    assert crowd["per_class"]["a"]["crowd_agreement"]["value"] == pytest.approx((0.7 + 0.5) / 2)
    lo, hi = crowd["crowd_agreement"]["ci_low"], crowd["crowd_agreement"]["ci_high"]
    assert lo <= crowd["crowd_agreement"]["value"] <= hi
    with pytest.raises(ValueError):
        crowd_metrics(probs, votes[:, :2], labels, ["a", "b", "c"])


def test_evaluate_scores_against_the_votes(ferplus_prepared, tmp_path):
    from ferwild.evaluate import evaluate_run

    _train(ferplus_prepared.out_dir, tmp_path / "run", "votes")
    summary = evaluate_run(tmp_path / "run", ferplus_prepared.out_dir, "test", tmp_path / "eval")
    crowd = summary["crowd"]
    assert crowd["n"] == summary["n"] == 14
    assert crowd["majority_accuracy"]["value"] == pytest.approx(summary["accuracy"])
    assert "Against the crowd's votes" in (tmp_path / "eval" / "summary.md").read_text()
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    manifest = pd.read_parquet(ferplus_prepared.out_dir / "manifest.parquet").set_index("path")
    votes = soft_targets(manifest.loc[predictions["path"]].reset_index(), summary["label_names"])
    probs = predictions[[f"prob_{n}" for n in summary["label_names"]]].to_numpy()
    agreement = votes[np.arange(len(votes)), probs.argmax(1)].mean()
    assert crowd["crowd_agreement"]["value"] == pytest.approx(agreement, rel=1e-5)


def test_audit_performance_scores_a_side_with_votes_against_the_crowd():
    from ferwild.audit.core import AuditConfig, performance
    from ferwild.audit.model_outputs import ModelOutputs

    rng = np.random.default_rng(0)
    names = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    n = 60
    labels = rng.integers(0, 7, n)
    probs = rng.dirichlet(np.ones(7), n).astype(np.float32)
    votes = np.zeros((n, len(VOTE_COLUMNS)))
    order = [VOTE_CLASSES.index(c) for c in ("anger", "disgust", "fear", "happiness", "sadness", "surprise",
                                             "neutral")]
    votes[np.arange(n), np.array(order)[labels]] = 8
    votes[:, VOTE_CLASSES.index("unknown")] = 2                       # left out of the distribution
    with_votes = pd.DataFrame(votes, columns=list(VOTE_COLUMNS)).assign(label=[names[i] for i in labels])
    without = pd.DataFrame({"label": [names[i] for i in labels]})
    ref = ModelOutputs(with_votes, np.zeros((n, 4), np.float32), probs, labels, names)
    prod = ModelOutputs(without, np.zeros((n, 4), np.float32), probs, labels, names)
    perf = performance(ref, prod, AuditConfig(n_bootstrap=100))
    crowd = perf["reference"]["crowd"]
    assert "crowd" not in perf["production"]
    # all of the crowd (unknown left out) chose the hard label: crowd agreement = accuracy
    assert crowd["crowd_agreement"]["value"] == pytest.approx(perf["reference"]["accuracy"])
    assert crowd["vote_cross_entropy"]["value"] == pytest.approx(-np.log(probs[np.arange(n), labels]).mean(), rel=1e-5)


def test_study_report_shows_crowd_agreement_on_a_voted_dataset(ferplus_prepared, tmp_path):
    import yaml

    from ferwild.study import run_study

    base = {"model.pretrained": "none", "model.image_size": 32, "train.batch_size": 8, "train.epochs": 1,
            "model.name": "cnn_small", "optim.targets": "votes", "optim.class_weights": "none"}
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"data": str(ferplus_prepared.out_dir), "seeds": [0, 1], "base": base,
                                    "experiments": [{"name": "main"}]}))
    run_study(spec, tmp_path / "study", workers=1, log=lambda m: None)
    report = (tmp_path / "study" / "report.md").read_text()
    assert "test crowd agreement (%)" in report
    trial = next((tmp_path / "study" / "trials").iterdir())
    crowd = json.loads((trial / "eval-test" / "summary.json").read_text())["crowd"]
    from ferwild.formatting import pct
    assert pct(crowd["crowd_agreement"]["value"]) in report


def test_an_unreadable_fer2013new_csv_is_a_clear_error(tmp_path):
    from ferwild.data.sources import SourceError, read_source

    _write_ferplus(tmp_path, {"FER2013Test": [("fer0000001.png", _varied_votes(1), True)]})
    (tmp_path / "fer2013new.csv").write_text("not,the,header\n1,2,3\n")
    with pytest.raises(SourceError, match="fer2013new.csv"):
        read_source(tmp_path)
