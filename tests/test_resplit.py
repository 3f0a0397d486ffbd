"""`ferwild resplit`: the same prepared faces under another split, without detecting again."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ferwild.data.prepared import PreparedDataset
from ferwild.data.resplit import ResplitError, resplit


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared(180, seed=3, synth_size=48)


def _people_across_splits(folder) -> int:
    m = pd.read_parquet(folder / "manifest.parquet")
    m = m[m["split"] != ""]
    return int((m.groupby("subject")["split"].nunique() > 1).sum())


def test_random_split_shares_people_and_grouped_split_does_not(prepared, tmp_path):
    original = PreparedDataset(prepared)
    assert _people_across_splits(prepared) == 0          # prepare groups by subject

    random = resplit(prepared, tmp_path / "random", group_by="none", seed=1)
    grouped = resplit(prepared, tmp_path / "grouped", group_by="auto", seed=1)
    assert random["group_by"] == "none" and grouped["group_by"] == "subject"
    assert random["people_in_two_splits"] == _people_across_splits(tmp_path / "random") > 0
    assert grouped["people_in_two_splits"] == _people_across_splits(tmp_path / "grouped") == 0

    # the same faces and pixels, only the split column differs
    for folder in (tmp_path / "random", tmp_path / "grouped"):
        again = PreparedDataset(folder)
        assert (folder / "shards").is_symlink()
        rows = again.rows()
        assert len(rows) == len(original.rows(include_augmented=False))
        assert (rows["augmented_from"].astype(str) == "").all()
        by_path = original.rows(include_augmented=False).set_index("path")
        sample = rows.head(7)
        assert np.array_equal(again.images(sample), original.images(by_path.loc[sample["path"]].reset_index()))
        summary = json.loads((folder / "summary.json").read_text())
        counts = summary["counts"]
        assert sum(sum(c.values()) for c in counts.values()) == len(rows)
        assert summary["resplit"]["seed"] == 1


def test_resplit_ratios_seed_and_duplicates(prepared, tmp_path):
    a = resplit(prepared, tmp_path / "a", group_by="none", ratios=(0.5, 0.25, 0.25), seed=0)
    b = resplit(prepared, tmp_path / "b", group_by="none", ratios=(0.5, 0.25, 0.25), seed=0)
    c = resplit(prepared, tmp_path / "c", group_by="none", ratios=(0.5, 0.25, 0.25), seed=5)
    ma, mb, mc = (pd.read_parquet(tmp_path / x / "manifest.parquet")["split"] for x in "abc")
    assert ma.equals(mb) and not ma.equals(mc)           # deterministic in the seed
    total = sum(sum(v.values()) for v in a["counts"].values())
    assert abs(sum(a["counts"]["train"].values()) - total / 2) <= 7
    dup = pd.read_csv(tmp_path / "a" / "duplicates.csv")
    manifest = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    split_of = dict(zip(manifest["path"], manifest["split"]))
    for row in dup.itertuples():                         # split columns follow the new split
        assert row.split_i == split_of.get(row.path_i, "") and row.split_j == split_of.get(row.path_j, "")
        assert bool(row.cross_split) == (row.split_i != row.split_j and row.split_i != "" and row.split_j != "")


def test_resplit_errors(prepared, tmp_path):
    with pytest.raises(ResplitError, match="not a prepared dataset"):
        resplit(tmp_path, tmp_path / "x")
    with pytest.raises(ResplitError, match="no column 'person'"):
        resplit(prepared, tmp_path / "x", group_by="person")
    resplit(prepared, tmp_path / "y")
    with pytest.raises(ResplitError, match="--overwrite"):
        resplit(prepared, tmp_path / "y", seed=2)
    resplit(prepared, tmp_path / "y", seed=2, overwrite=True)
    assert json.loads((tmp_path / "y" / "summary.json").read_text())["resplit"]["seed"] == 2
    with pytest.raises(ResplitError, match="new folder"):
        resplit(prepared, prepared)


def test_resplit_cli_and_training_on_it(prepared, tmp_path):
    from typer.testing import CliRunner

    from ferwild.cli import app
    from ferwild.config import RunConfig
    from ferwild.train import fit

    result = CliRunner().invoke(app, ["resplit", str(prepared), "--out", str(tmp_path / "r"), "--group-by", "none",
                                      "--split-ratios", "0.6,0.2,0.2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "people with photos in more than one split" in result.output
    bad = CliRunner().invoke(app, ["resplit", str(prepared), "--out", str(tmp_path / "r2"), "--group-by", "zzz"])
    assert bad.exit_code == 2 and "no column 'zzz'" in bad.output
    config = RunConfig.load(None, [f"data.path={tmp_path / 'r'}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=32", "train.epochs=1"])
    summary = fit(config, tmp_path / "run", log=lambda m: None)
    assert summary is not None and (tmp_path / "run" / "checkpoints" / "BEST").exists()
