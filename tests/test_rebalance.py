"""Rebalancing a prepared training split over attribute x class cells (ferwild.audit.rebalance)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ferwild.audit.rebalance import FIGURE, MARKER, RebalanceConfig, rebalance
from ferwild.data.prepared import PreparedDataset


@pytest.fixture(scope="module")
def prepared(make_prepared) -> Path:
    return make_prepared(240, seed=3, synth_size=48)


@pytest.fixture(scope="module")
def by_gender(prepared, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("by_gender") / "out"
    section = rebalance(prepared, out, RebalanceConfig(("gender",), workers=1))
    return out, section


def _originals(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["augmented_from"] == ""].reset_index(drop=True)


def _by_path(ds: PreparedDataset, split: str) -> pd.DataFrame:
    return ds.rows(split).sort_values("path").reset_index(drop=True)


def test_gender_cells_reach_the_target_and_nothing_else_changes(prepared, by_gender):
    out, section = by_gender
    src, dst = PreparedDataset(prepared), PreparedDataset(out)
    src_train = src.rows("train", include_augmented=False)
    before = pd.crosstab(src_train["attr_gender"], src_train["label"])
    assert before.to_numpy().min() * 5 < before.to_numpy().max()  # unbalanced to start with
    assert section["target"] == before.max().max()

    train = dst.rows("train")
    after = pd.crosstab(train["attr_gender"], train["label"])
    capped = {(c["attr_gender"], c["label"]) for c in section["capped_cells"]}
    for cell in section["cells"]:
        key = (cell["attr_gender"], cell["label"])
        assert cell["before"] == before.loc[key], key
        assert cell["after"] == after.loc[key], key
        assert cell["reached_target"] == (key not in capped)
        if cell["reached_target"]:
            assert after.loc[key] == section["target"], key
    assert len(section["cells"]) == before.size

    # every original row of every split is there, unchanged; prepare's balancing copies are gone
    pd.testing.assert_frame_equal(_originals(dst.manifest), _originals(src.manifest))
    src_aug = src.manifest[src.manifest["augmented_from"] != ""]
    assert section["dropped_augmented_rows"] == len(src_aug) > 0
    assert not set(dst.manifest["shard"]) & set(src_aug["shard"])
    # val/test: same rows, same pixels
    for split in ("val", "test"):
        a, b = _by_path(src, split), _by_path(dst, split)
        assert a["path"].tolist() == b["path"].tolist() and len(a) > 0
        np.testing.assert_array_equal(src.images(a), dst.images(b))

    # summary: counts updated, source keys kept, rebalance section returned
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rebalance"] == json.loads(json.dumps(section))
    assert summary["counts_after_balance"]["train"] == train["label"].value_counts().sort_index().to_dict()
    assert summary["counts_after_balance"]["val"] == src.summary["counts_after_balance"]["val"]
    assert summary["augmented_rows"] == int((dst.manifest["augmented_from"] != "").sum()) == section["added_rows"]
    assert summary["label_names"] == src.label_names and summary["cache_shape"] == src.summary["cache_shape"]
    # source shards are linked, not copied; the figure is a PNG
    chunk = out / "shards" / "chunk-00000.npy"
    assert chunk.is_symlink() or os.stat(chunk).st_nlink > 1
    assert (out / FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augmented_rows_are_new_pixels_with_their_sources_attributes(prepared, by_gender):
    out, _ = by_gender
    dst = PreparedDataset(out)
    aug = dst.manifest[dst.manifest["augmented_from"] != ""].reset_index(drop=True)
    assert (aug["split"] == "train").all() and len(aug) > 100
    originals = dst.manifest[dst.manifest["augmented_from"] == ""].set_index("path")
    source = originals.loc[aug["augmented_from"]].reset_index()
    attrs = [c for c in dst.manifest.columns if c.startswith("attr_")]
    assert len(attrs) > 5
    for col in attrs + ["label", "label_id", "subject"]:
        assert aug[col].tolist() == source[col].tolist(), col
    assert all(re.fullmatch(re.escape(s) + r"#aug[1-9]\d*", p) for p, s in zip(aug["path"], aug["augmented_from"]))
    assert aug["row_id"].tolist() == list(range(int(originals["row_id"].max()) + 1,
                                               int(originals["row_id"].max()) + 1 + len(aug)))
    assert aug["shard"].str.startswith("rebalanced-").all()

    new, old = dst.images(aug), dst.images(source)
    assert new.dtype == np.uint8 and new.shape == (len(aug), *dst.summary["cache_shape"])
    differs = [not np.array_equal(a, b) for a, b in zip(new, old)]
    assert all(differs)
    # still the same face roughly: the mean absolute change is far below a random image's
    assert np.abs(new.astype(int) - old.astype(int)).mean() < 60


def test_training_runs_on_the_rebalanced_dataset(by_gender, tmp_path):
    from ferwild.config import RunConfig
    from ferwild.data.loader import CachedFaceDataset
    from ferwild.train import fit

    out, _ = by_gender
    ds = PreparedDataset(out)
    rows = ds.rows("train")
    dataset = CachedFaceDataset(out, rows, ds.label_names)
    aug_pos = np.flatnonzero((rows["augmented_from"] != "").to_numpy())[:8]
    images, labels = dataset[aug_pos]
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, 32, 32)
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), ds.images(rows.iloc[aug_pos]))
    assert labels.tolist() == rows["label_id"].iloc[aug_pos].tolist()

    cfg = RunConfig.load(None, [f"data.path={out}", "model.name=cnn_small", "model.pretrained=none",
                                "model.image_size=32", "train.batch_size=16", "train.epochs=1",
                                "train.max_train_batches=3", "train.device=cpu"])
    summary = fit(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["epochs"] == 1 and summary["history"][0]["train_loss"] > 0


def test_rerun_is_identical_and_resumes_a_missing_block(prepared, by_gender, tmp_path):
    ref_out, ref_section = by_gender
    out = tmp_path / "out"
    config = RebalanceConfig(("attr_gender",), workers=1)
    first = rebalance(prepared, out, config)
    manifest = pd.read_parquet(out / "manifest.parquet")
    # another folder, same call: the same rows and pixels
    pd.testing.assert_frame_equal(manifest, pd.read_parquet(ref_out / "manifest.parquet"))
    assert first == ref_section
    shard = out / "shards" / f"{first['new_shards'][0]}.npy"
    pixels = np.load(shard)

    shard.unlink()  # as if killed before this block was written
    (out / "summary.json").unlink()
    # same call again (workers do not change the output): no overwrite needed
    again = rebalance(prepared, out, RebalanceConfig(("attr_gender",), workers=2))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "manifest.parquet"), manifest)
    np.testing.assert_array_equal(np.load(shard), pixels)
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in first.items() if k != "config"}

    mtime = shard.stat().st_mtime_ns
    rebalance(prepared, out, config)  # nothing missing: the block is reused, not rewritten
    assert shard.stat().st_mtime_ns == mtime


def test_shards_fall_back_to_hardlinks_without_symlinks(prepared, tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    section = rebalance(prepared, tmp_path / "out", RebalanceConfig(("gender",), workers=1))
    chunk = tmp_path / "out" / "shards" / "chunk-00000.npy"
    assert not chunk.is_symlink() and os.path.samefile(chunk, prepared / "shards" / "chunk-00000.npy")
    assert set(section["shard_links"]) == {"hardlink"}
    assert len(PreparedDataset(tmp_path / "out").rows("val")) == len(PreparedDataset(prepared).rows("val"))


def test_two_attributes_and_the_copy_cap(prepared, tmp_path):
    cap = 3
    section = rebalance(prepared, tmp_path / "out", RebalanceConfig(("gender", "occlusion"), max_copies_per_row=cap,
                                                                    workers=1))
    ds = PreparedDataset(tmp_path / "out")
    train = ds.rows("train")
    aug = train[train["augmented_from"] != ""]
    per_source = aug["augmented_from"].value_counts()
    assert per_source.max() == cap  # the small cells used the whole cap, and never more
    after = train.groupby(["attr_gender", "attr_occlusion", "label"]).size()
    goal = section["target"]
    capped = {(c["attr_gender"], c["attr_occlusion"], c["label"]) for c in section["capped_cells"]}
    assert capped, "some gender x occlusion x class cells are too small for the cap"
    for cell in section["cells"]:
        key = (cell["attr_gender"], cell["attr_occlusion"], cell["label"])
        assert after[key] == cell["after"] == min(goal, cell["before"] * (1 + cap)), key
        assert cell["reached_target"] == (key not in capped) == (cell["after"] >= goal)
    # combinations with no row at all are reported, not invented
    empty = [c for c in section["unfillable_cells"] if c["rows"] == 0]
    assert empty and all(key not in after.index for key in
                         ((c["attr_gender"], c["attr_occlusion"], c["label"]) for c in empty))


def test_keeping_prepare_copies_and_a_low_target(prepared, tmp_path):
    src = PreparedDataset(prepared)
    section = rebalance(prepared, tmp_path / "out", RebalanceConfig(
        ("gender",), target=10, drop_original_augmented=False, max_copies_per_row=4, min_cell=3, workers=1))
    ds = PreparedDataset(tmp_path / "out")
    pd.testing.assert_frame_equal(ds.manifest.iloc[:len(src.manifest)], src.manifest)  # all kept, in order
    assert section["dropped_augmented_rows"] == 0
    assert not ds.manifest["path"].duplicated().any()  # new copy numbers continue after prepare's
    train = ds.rows("train")
    assert train["augmented_from"][train["augmented_from"] != ""].value_counts().max() <= 4
    # cells above 10 are left as they are; prepare's copies count in their cells
    assert section["above_target_cells"] and any("left as they are" in n for n in section["notes"])
    src_counts = src.rows("train").groupby(["attr_gender", "label"]).size()
    counts = train.groupby(["attr_gender", "label"]).size()
    for cell in section["cells"]:
        key = (cell["attr_gender"], cell["label"])
        assert cell["before"] == src_counts[key] and counts[key] == cell["after"], key
        if cell["reached_target"]:
            assert cell["after"] == max(cell["before"], 10), key
        else:
            assert cell["after"] < 10, key
    # a cell with fewer original rows than min_cell is reported, not inflated
    originals = src.rows("train", include_augmented=False).groupby(["attr_gender", "label"]).size()
    small = {k for k, n in originals.items() if n < 3}
    assert small and small == {(c["attr_gender"], c["label"]) for c in section["unfillable_cells"] if c["rows"]}
    assert all(c["added"] == 0 and not c["reached_target"] for c in section["cells"]
               if (c["attr_gender"], c["label"]) in small)


def test_bad_inputs_are_refused(prepared, tmp_path):
    with pytest.raises(ValueError, match="attr_occlusion") as err:
        rebalance(prepared, tmp_path / "a", RebalanceConfig(("ethnicity",)))
    assert "attr_ethnicity" in str(err.value) and "attr_gender" in str(err.value)
    with pytest.raises(ValueError, match="differ"):
        rebalance(prepared, prepared, RebalanceConfig(("gender",)))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        rebalance(prepared, busy, RebalanceConfig(("gender",), workers=1))
    assert not (busy / "manifest.parquet").exists()
    rebalance(prepared, busy, RebalanceConfig(("gender",), workers=1), overwrite=True)
    assert (busy / "manifest.parquet").exists() and (busy / "notes.txt").exists()
    # a finished run with other settings is not silently replaced either
    with pytest.raises(FileExistsError):
        rebalance(prepared, busy, RebalanceConfig(("gender",), seed=1, workers=1))
    assert json.loads((busy / MARKER).read_text())["config"]["seed"] == 0

    assert RebalanceConfig("gender").attributes == ("attr_gender",)
    for bad in ({"attributes": ()}, {"attributes": ("gender", "attr_gender")},
                {"attributes": ("gender",), "target": "most"}, {"attributes": ("gender",), "target": 0},
                {"attributes": ("gender",), "max_copies_per_row": 0}, {"attributes": ("gender",), "workers": -1}):
        with pytest.raises(ValueError):
            RebalanceConfig(**bad)


def test_numeric_attribute_is_binned_and_median_target(prepared, tmp_path):
    section = rebalance(prepared, tmp_path / "out", RebalanceConfig(("yaw",), target="median", workers=1))
    bins = section["binned"]["attr_yaw"]
    assert len(bins) == 3  # ~30 distinct yaw angles -> 3 quantile bins, not 30 cells
    assert {c["attr_yaw"] for c in section["cells"]} == set(bins) and len(section["cells"]) == 18
    befores = sorted(c["before"] for c in section["cells"])
    assert section["target"] == int(np.ceil(np.median(befores))) < befores[-1]
    assert all(c["after"] == max(c["before"], section["target"]) for c in section["cells"])
    ds = PreparedDataset(tmp_path / "out")
    aug = ds.manifest[ds.manifest["augmented_from"] != ""]
    assert len(aug) == section["added_rows"] > 0
    assert pd.to_numeric(aug["attr_yaw"]).notna().all()  # rows keep the raw value, not the bin
