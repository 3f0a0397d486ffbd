"""End-to-end tests of ``prepare`` on inputs built on the fly, plus real data when present."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferwild.data.prepare import PrepareConfig, PrepareError, prepare
from ferwild.data.prepared import ATTR_PREFIX, COL, PreparedDataset

CLASSES = ("happy", "sad", "angry")


def _face_like(rng, side=32, grey=True):
    """A random-ish small crop; different per call so there are no accidental duplicates."""
    base = rng.integers(0, 256, (side // 4, side // 4), dtype=np.uint8)
    img = Image.fromarray(base).resize((side, side), Image.BILINEAR)
    return img if grey else img.convert("RGB")


def make_folder(root: Path, per_class=(30, 12, 6), seed=0, side=32) -> Path:
    """A class-per-folder tree of small grey crops (pre-aligned style), imbalanced."""
    rng = np.random.default_rng(seed)
    for cls, n in zip(CLASSES, per_class):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _face_like(rng, side).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def add_bad_files(root: Path) -> dict[str, str]:
    """Bad inputs of several kinds; returns file name -> expected status."""
    (root / "happy" / "zero.jpg").write_bytes(b"")
    (root / "happy" / "text.jpg").write_text("this is not a JPEG")
    buf = root / "sad" / "full.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(buf, quality=95)
    data = buf.read_bytes()
    buf.unlink()
    (root / "sad" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "banana").mkdir()
    _face_like(np.random.default_rng(99)).save(root / "banana" / "b.png")
    (root / "neutral").mkdir()
    _face_like(np.random.default_rng(98)).save(root / "neutral" / "n.png")
    # an exact duplicate of another file's pixels (different path)
    Image.open(root / "happy" / "happy_000.png").save(root / "happy" / "copy_of_000.png")
    # a near duplicate: the same face, a little brighter
    brighter = np.asarray(Image.open(root / "happy" / "happy_001.png")).astype(int) + 12
    Image.fromarray(brighter.clip(0, 255).astype(np.uint8)).save(root / "happy" / "brighter_001.png")
    return {"zero.jpg": "rejected", "text.jpg": "rejected", "truncated.jpg": "rejected",
            "b.png": "rejected", "n.png": "excluded", "copy_of_000.png": "aligned",
            "brighter_001.png": "aligned"}


def test_prepare_folder_with_bad_inputs(tmp_path):
    src = make_folder(tmp_path / "src")
    expected = add_bad_files(src)
    result = prepare(src, tmp_path / "out", PrepareConfig(workers=1, seed=3))
    m = result.manifest
    originals = m[m["augmented_from"] == ""]
    by_name = {Path(p).name: s for p, s in zip(originals["path"], originals["status"])}
    for name, status in expected.items():
        assert by_name[name] == status, name
    assert len(originals) == 30 + 12 + 6 + len(expected)
    reasons = dict(zip(originals["path"].map(lambda p: Path(p).name), originals["reason"]))
    assert "empty" in reasons["zero.jpg"]
    assert "unknown label" in reasons["b.png"]
    assert "not in basic6" in reasons["n.png"]
    # every column is named in one place (ferwild.data.prepared.COL); attributes are attr_*
    assert {c for c in m.columns if not c.startswith(ATTR_PREFIX)} == set(dataclasses.asdict(COL).values())

    s = result.summary
    assert s["align_mode"] == "none" and s["cache_shape"] == [32, 32, 1]
    assert s["status_counts"]["rejected"] == 4 and s["status_counts"]["excluded"] == 1
    assert s["split_mode"] == "stratified"
    assert s["duplicates"]["exact_pairs"] == 1
    assert s["duplicates"]["near_pairs"] == 1
    twins = dict(zip(originals["path"].map(lambda p: Path(p).name), originals["near_dup_of"]))
    assert twins["brighter_001.png"].endswith("happy_001.png")
    # 70/20/10 per class, then train balanced to its largest class
    train = s["counts"]["train"]
    assert train["happiness"] == round(32 * 0.7)
    assert set(s["counts_after_balance"]["train"].values()) == {train["happiness"]}
    assert s["augmented_rows"] == sum(train["happiness"] - v for v in train.values())

    # files a user relies on
    out = tmp_path / "out"
    for name in ("manifest.parquet", "summary.json", "rejects.csv", "duplicates.csv",
                 "class_counts.png", "contact_sheet.png"):
        assert (out / name).exists(), name
    rejects = pd.read_csv(out / "rejects.csv")
    assert set(rejects["path"].map(lambda p: Path(p).name)) == {"zero.jpg", "text.jpg", "truncated.jpg", "b.png"}

    # the cache holds what the source held (pre-aligned crops are stored at native size, grey)
    ds = PreparedDataset(out)
    row = ds.manifest[ds.manifest["path"].str.endswith("happy_005.png")]
    np.testing.assert_array_equal(ds.images(row)[0, :, :, 0],
                                  np.asarray(Image.open(src / "happy" / "happy_005.png")))
    aug = ds.manifest[ds.manifest["augmented_from"] != ""]
    assert (aug["split"] == "train").all()
    assert set(aug["augmented_from"]) <= set(ds.manifest.loc[ds.manifest["split"] == "train", "path"])
    assert ds.images(aug.head(3)).shape == (3, 32, 32, 1)


def test_prepare_is_deterministic_and_reruns_are_noops(tmp_path):
    src = make_folder(tmp_path / "src", per_class=(10, 6, 4))
    a = prepare(src, tmp_path / "a", PrepareConfig(workers=1, chunk_size=8))
    b = prepare(src, tmp_path / "b", PrepareConfig(workers=2, chunk_size=8))
    cols = ["path", "label", "split", "status", "content_hash", "augmented_from"]
    pd.testing.assert_frame_equal(a.manifest[cols], b.manifest[cols])
    # A second run over a finished folder reuses every chunk (no image is processed again).
    again = prepare(src, tmp_path / "a", PrepareConfig(workers=1, chunk_size=8))
    assert again.summary["timings_s"]["cache_images"] == 0
    pd.testing.assert_frame_equal(again.manifest[cols], a.manifest[cols])
    other = prepare(src, tmp_path / "c", PrepareConfig(workers=1, seed=5))
    assert not a.manifest["split"].equals(other.manifest["split"])


def test_incompatible_rerun_needs_overwrite(tmp_path):
    src = make_folder(tmp_path / "src", per_class=(6, 6, 6))
    prepare(src, tmp_path / "out", PrepareConfig(workers=1))
    with pytest.raises(PrepareError, match="overwrite"):
        prepare(src, tmp_path / "out", PrepareConfig(workers=1, labels="basic7", align="mtcnn"))


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "src" / "happy").mkdir(parents=True)
    (tmp_path / "src" / "happy" / "a.jpg").write_text("nope")
    with pytest.raises(PrepareError, match="nothing usable"):
        prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(workers=1))
    assert "not an image" in (tmp_path / "out" / "rejects.csv").read_text()


def test_group_split_from_manifest_with_landmarks(tmp_path):
    """Subjects never cross splits; given landmarks drive the alignment."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "img").mkdir()
    template = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
    for i in range(90):
        img = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
        name = f"img/{i}.png"
        Image.fromarray(img).save(tmp_path / name)
        lm = template + rng.normal(0, 1, template.shape)
        rows.append({"path": name, "label": CLASSES[i % 3], "subject": f"s{i // 5}",
                     "landmarks": " ".join(f"{v:.2f}" for v in lm.reshape(-1)),
                     "attr_glasses": "yes" if i % 2 else "no"})
    rows[0]["landmarks"] = ""  # one image without landmarks -> fallback
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    result = prepare(tmp_path / "m.csv", tmp_path / "out",
                     PrepareConfig(workers=1, size=64, balance="none"))
    m = result.manifest
    assert result.summary["split_mode"] == "group"
    assert result.summary["cache_shape"] == [64, 64, 3]
    assert m.groupby("subject")["split"].nunique().max() == 1
    assert set(m["split"]) == {"train", "val", "test"}
    assert (m["align_method"] == "landmarks").sum() == 89
    first = m[m["path"].str.endswith("/0.png")].iloc[0]
    # auto mode: no landmarks for this image, so MTCNN was tried (and found no face in noise)
    assert first["status"] == "unaligned" and "no face" in first["reason"]
    assert result.summary["alignment_failure"]["failed"] == 1
    assert "attr_glasses" in m.columns


def test_fer2013_csv_source(tmp_path):
    rng = np.random.default_rng(0)
    pixels = [" ".join(map(str, rng.integers(0, 256, 48 * 48))) for _ in range(40)]
    emotions = [i % 7 for i in range(40)]
    usage = ["Training"] * 30 + ["PublicTest"] * 5 + ["PrivateTest"] * 5
    pixels[3] = "1 2 3"  # a corrupt row
    pd.DataFrame({"emotion": emotions, "pixels": pixels, "Usage": usage}).to_csv(tmp_path / "fer2013.csv", index=False)
    result = prepare(tmp_path / "fer2013.csv", tmp_path / "out",
                     PrepareConfig(workers=1, labels="basic7", balance="none"))
    s = result.summary
    assert s["align_mode"] == "none" and s["cache_shape"] == [48, 48, 1]
    assert s["split_mode"] == "source"
    assert s["status_counts"]["rejected"] == 1
    assert sum(s["counts"]["train"].values()) == 29
    ds = PreparedDataset(tmp_path / "out")
    row = ds.manifest[ds.manifest["path"].str.endswith("#5")]
    expected = np.array(pixels[5].split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(ds.images(row)[0, :, :, 0], expected)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ferwild.cli", *args], capture_output=True, text=True, **kw)


def test_cli_exit_codes(tmp_path):
    src = make_folder(tmp_path / "src", per_class=(5, 5, 5))
    add_bad_files(src)
    ok = _cli("prepare", str(src), "--out", str(tmp_path / "out"), "--workers", "1")
    assert ok.returncode == 0, ok.stderr
    assert "rejected" in ok.stdout and "duplicates" in ok.stdout
    bad = _cli("prepare", str(src), "--out", str(tmp_path / "o2"), "--labels", "basic5")
    assert bad.returncode == 2 and "basic5" in bad.stderr and "Traceback" not in bad.stderr
    bad = _cli("prepare", str(src), "--out", str(tmp_path / "o3"), "--split-ratios", "0.5,0.5")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    missing = _cli("prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "o4"))
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_kill9_then_rerun_gives_the_same_manifest(tmp_path):
    src = make_folder(tmp_path / "src", per_class=(400, 300, 200), side=48)
    args = ["prepare", str(src), "--workers", "1", "--chunk-size", "20"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("chunk-*.parquet"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").glob("chunk-*.parquet")))
    assert 5 <= done_before < 45, "the kill must land mid-run"
    assert not (out / "manifest.parquet").exists()

    resumed = _cli(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["cache_images"] <= 900 - 20 * done_before
    a = pd.read_parquet(tmp_path / "ref" / "manifest.parquet")
    b = pd.read_parquet(out / "manifest.parquet")
    pd.testing.assert_frame_equal(a, b)
    ra, rb = PreparedDataset(tmp_path / "ref"), PreparedDataset(out)
    np.testing.assert_array_equal(ra.images(ra.manifest[ra.manifest["shard"] != ""]),
                                  rb.images(rb.manifest[rb.manifest["shard"] != ""]))


# ---------------------------------------------------------------- on a Ray cluster (a local one here)


def _comparable(summary: dict) -> dict:
    """A summary without what depends on where and how fast it ran."""
    return {k: v for k, v in summary.items() if k not in ("timings_s", "elapsed_s")}


def test_prepare_on_a_local_ray_equals_the_local_run(tmp_path):
    pytest.importorskip("ray")
    src = make_folder(tmp_path / "src")
    add_bad_files(src)
    config = PrepareConfig(workers=2, chunk_size=8, seed=3)
    here = prepare(src, tmp_path / "here", config)
    on_ray = prepare(src, tmp_path / "ray", config, ray_address="local")
    pd.testing.assert_frame_equal(here.manifest, on_ray.manifest)
    assert _comparable(here.summary) == _comparable(on_ray.summary)
    shards = sorted(p.name for p in (tmp_path / "here" / "shards").glob("*.npy"))
    assert shards == sorted(p.name for p in (tmp_path / "ray" / "shards").glob("*.npy"))
    assert any(name.startswith("augmented-") for name in shards)  # balancing ran on Ray too
    for name in shards:
        assert (tmp_path / "here" / "shards" / name).read_bytes() == (tmp_path / "ray" / "shards" / name).read_bytes()


def _kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line mentions ``text`` (a killed driver's Ray)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def test_a_killed_ray_prepare_resumes_to_the_same_dataset(tmp_path):
    pytest.importorskip("ray")
    import tempfile

    src = make_folder(tmp_path / "src", per_class=(200, 150, 100), side=48)
    args = ["prepare", str(src), "--workers", "2", "--chunk-size", "10"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    ray_tmp = tempfile.mkdtemp(prefix="fw-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", *args, "--out", str(out), "--ray-address", "local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list((out / "shards").glob("chunk-*.parquet"))) < 5:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, as a crash or a lost login would
        proc.wait()
    finally:
        _kill_processes_mentioning(ray_tmp)
    done_before = len(list((out / "shards").glob("chunk-*.parquet")))
    assert 5 <= done_before < 45, "the kill must land mid-run"
    assert not (out / "manifest.parquet").exists()

    resumed = _cli(*args, "--out", str(out), "--ray-address", "local", env=env)
    _kill_processes_mentioning(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["cache_images"] <= 450 - 10 * done_before
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "manifest.parquet"),
                                  pd.read_parquet(out / "manifest.parquet"))
    ra, rb = PreparedDataset(tmp_path / "ref"), PreparedDataset(out)
    np.testing.assert_array_equal(ra.images(ra.manifest[ra.manifest["shard"] != ""]),
                                  rb.images(rb.manifest[rb.manifest["shard"] != ""]))


# ---------------------------------------------------------------- real data (../shared/data)

@pytest.mark.shared_data
def test_fer2013_subset_is_prealigned_with_source_split(shared_data, tmp_path):
    fer = shared_data / "fer2013"
    files = sorted((fer / "train" / "disgust").glob("*.jpg"))[:150] + sorted((fer / "test" / "disgust").glob("*.jpg"))
    files += sorted((fer / "train" / "neutral").glob("*.jpg"))[:20]
    pd.DataFrame({"path": [str(f) for f in files],
                  "label": [f.parent.name for f in files],
                  "split": ["train" if f.name.startswith("Training") else
                            "val" if f.name.startswith("PublicTest") else "test" for f in files]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    result = prepare(tmp_path / "m.csv", tmp_path / "out", PrepareConfig(balance="none"))
    s = result.summary
    assert s["align_mode"] == "none" and s["cache_shape"] == [48, 48, 1]
    assert s["status_counts"]["excluded"] == 20  # neutral is not in basic6
    assert s["counts"]["train"] == {"disgust": 150}
    assert s["counts"]["val"]["disgust"] + s["counts"]["test"]["disgust"] == 111


@pytest.mark.shared_data
@pytest.mark.slow
def test_face_photos_are_detected_and_aligned(shared_data, tmp_path):
    photos = sorted(p for p in (shared_data / "face_photos").rglob("*") if p.is_file())
    pd.DataFrame({"path": [str(p) for p in photos], "label": ["happy"] * len(photos)}
                 ).to_csv(tmp_path / "m.csv", index=False)
    result = prepare(tmp_path / "m.csv", tmp_path / "out",
                     PrepareConfig(balance="none", fallback="drop", size=112))
    m = result.manifest.set_index(result.manifest["path"].map(lambda p: Path(p).name))
    assert result.summary["align_mode"] == "auto"
    for name in ("obama.jpg", "biden.jpg", "single_face.jpg", "Image_with_alpha.png", "32bit.png"):
        assert m.loc[name, "status"] == "aligned", name
        assert m.loc[name, "align_method"] == "mtcnn"
    assert m.loc["multi_face.jpg", "n_faces"] >= 4
    assert len(json.loads(m.loc["multi_face.jpg", "other_boxes"])) == m.loc["multi_face.jpg", "n_faces"] - 1
    assert m.loc["free-mountain-vector-01.jpg", "status"] == "dropped"
    assert result.summary["alignment_failure"]["failed"] >= 1
    assert (tmp_path / "out" / "contact_sheet.png").exists()


@pytest.mark.shared_data
@pytest.mark.slow
def test_full_fer2013_folder(shared_data, tmp_path):
    """The whole FER2013 tree (35,887 files) with basic7: counts match the data's README."""
    result = prepare(shared_data / "fer2013", tmp_path / "out", PrepareConfig(labels="basic7"))
    s = result.summary
    assert s["inputs"] == 35887 and s["usable"] == 35887
    assert s["align_mode"] == "none" and s["cache_shape"] == [48, 48, 1]
    assert s["split_mode"] == "source"
    counts = s["counts"]
    assert sum(counts["train"].values()) == 28709
    assert sum(counts["val"].values()) == 3589 and sum(counts["test"].values()) == 3589
    assert counts["train"]["happiness"] == 7215 and counts["train"]["disgust"] == 436
    assert counts["val"]["disgust"] + counts["test"]["disgust"] == 111
    assert set(s["counts_after_balance"]["train"].values()) == {7215}
    d = s["duplicates"]
    # FER2013 is known to hold exact duplicates, some across splits
    assert d["exact_pairs"] > 1000 and d["cross_split_exact"] > 0


def test_duplicate_paths_and_cross_split_duplicates_from_a_manifest(tmp_path):
    """A file listed twice is one input; with --drop-cross-split-dups a test-split copy of a
    training image leaves the evaluation."""
    src = make_folder(tmp_path / "src", per_class=(8, 8, 8))
    files = sorted((src).rglob("*.png"))
    rows = [{"path": str(f), "label": f.parent.name, "split": "train"} for f in files]
    for r in rows[::4]:
        r["split"] = "test"
    twin = src / "happy" / "twin.png"
    train_happy = next(r for r in rows if r["split"] == "train" and r["label"] == "happy")
    Image.open(train_happy["path"]).save(twin)
    rows.append({"path": str(twin), "label": "happy", "split": "test"})
    rows.append({"path": str(files[1]), "label": files[1].parent.name, "split": "train"})  # listed twice
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)

    kept = prepare(tmp_path / "m.csv", tmp_path / "a", PrepareConfig(workers=1, balance="none"))
    assert kept.summary["split_mode"] == "source"
    assert kept.summary["duplicates"]["cross_split_exact"] == 1
    assert "duplicate path" in kept.summary["rejected_reasons"]
    twin_row = kept.manifest[kept.manifest["path"] == str(twin)].iloc[0]
    assert twin_row["split"] == "test" and twin_row["exact_dup_of"] == train_happy["path"]

    dropped = prepare(tmp_path / "m.csv", tmp_path / "b",
                      PrepareConfig(workers=1, balance="none", drop_cross_split_dups=True))
    twin_row = dropped.manifest[dropped.manifest["path"] == str(twin)].iloc[0]
    assert twin_row["status"] == "excluded" and twin_row["split"] == ""
    assert train_happy["path"] in twin_row["reason"]
    assert dropped.summary["duplicates"]["dropped_from_val_test"] == 1
    original = dropped.manifest[dropped.manifest["path"] == train_happy["path"]].iloc[0]
    assert original["split"] == "train"


def test_quality_shift_between_splits_is_flagged(tmp_path):
    """Blurred training images against sharp test images (as in the shared FER2013 copy)."""
    from PIL import ImageFilter

    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(120):
        img = Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8))
        split = "train" if i < 80 else "test"
        if split == "train":
            img = img.filter(ImageFilter.GaussianBlur(2))
        img.save(tmp_path / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": CLASSES[i % 3], "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    s = prepare(tmp_path / "m.csv", tmp_path / "out", PrepareConfig(workers=1, balance="none")).summary
    assert s["image_quality"]["test"]["sharpness"] > 2 * s["image_quality"]["train"]["sharpness"]
    assert any("test images" in w and "sharpness" in w for w in s["quality_warnings"])
    # no warning when the splits are alike
    s2 = prepare(tmp_path / "m.csv", tmp_path / "out2", PrepareConfig(workers=1, balance="none", split="ratios")).summary
    assert s2["quality_warnings"] == []


def test_unlabelled_batch_keeps_every_face_in_test_and_text_columns_have_no_gaps(tmp_path):
    from ferwild.data.synth import synth_dataset

    synth_dataset("reference", 60, tmp_path / "raw", seed=1, size=48, label_set="basic6")
    # labelled and balanced: augmented rows must not leave NaN in text columns
    labelled = prepare(tmp_path / "raw" / "manifest.csv", tmp_path / "lab", PrepareConfig(size=32, workers=1))
    m = labelled.manifest
    assert (m["augmented_from"] != "").any()
    m = pd.read_parquet(tmp_path / "lab" / "manifest.parquet")
    text = [c for c in m.columns if pd.api.types.is_string_dtype(m[c]) and c not in ("box", "landmarks")]
    assert not m[text].isna().any().any(), m[text].isna().sum()[lambda s: s > 0].to_dict()
    # unlabelled: no label, no balancing, every usable face in split "test"
    result = prepare(tmp_path / "raw" / "manifest.csv", tmp_path / "unl",
                     PrepareConfig(size=32, workers=1, unlabelled=True))
    u = result.manifest
    assert len(u) == 60 and (u["label"] == "").all() and (u["augmented_from"] == "").all()
    assert set(u.loc[u["status"].isin(["aligned", "unaligned"]), "split"]) == {"test"}
    saved = pd.read_parquet(tmp_path / "unl" / "manifest.parquet")
    assert (saved["label_id"] == -1).all() and result.summary["split_mode"] == "unlabelled"
