import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferwild.data.sources import SourceError, decode_fer2013_pixels, normalize_split, parse_landmarks, read_source


def _img(path, size=(20, 20), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_image_folder_with_split_folders_and_fer_prefixes(tmp_path):
    _img(tmp_path / "train" / "happy" / "Training_1.jpg")
    _img(tmp_path / "test" / "angry" / "PublicTest_2.jpg")
    _img(tmp_path / "test" / "angry" / "PrivateTest_3.jpg")
    (tmp_path / "train" / "happy" / "notes.txt").write_text("not an image row")
    rows = read_source(tmp_path)
    assert len(rows) == 3
    by_name = {p.split("/")[-1]: (lab, s) for p, lab, s in zip(rows["path"], rows["label_raw"], rows["source_split"])}
    assert by_name == {"Training_1.jpg": ("happy", "train"), "PublicTest_2.jpg": ("angry", "val"),
                       "PrivateTest_3.jpg": ("angry", "test")}


def test_image_folder_without_splits(tmp_path):
    _img(tmp_path / "sad" / "a.png")
    rows = read_source(tmp_path)
    assert rows["source_split"].tolist() == [""]
    assert rows["label_raw"].tolist() == ["sad"]


def test_manifest_csv_relative_paths_landmarks_attrs(tmp_path):
    _img(tmp_path / "imgs" / "a.jpg")
    pd.DataFrame({"path": ["imgs/a.jpg"], "label": ["Surprised"], "split": ["validation"],
                  "subject": ["s1"], "landmarks": ["1 2 3 4 5 6 7 8 9 10"],
                  "attr_gender": ["female"], "labeller": [302]}).to_csv(tmp_path / "m.csv", index=False)
    rows = read_source(tmp_path / "m.csv")
    assert rows.loc[0, "attr_labeller"] == "302"   # who labelled a face: audited like any attribute
    assert rows.loc[0, "path"] == str((tmp_path / "imgs" / "a.jpg").absolute())
    assert rows.loc[0, "source_split"] == "val"
    assert rows.loc[0, "subject"] == "s1"
    assert rows.loc[0, "attr_gender"] == "female"
    np.testing.assert_array_equal(rows.loc[0, "landmarks"], np.arange(1, 11).reshape(5, 2))


def test_manifest_parquet_and_missing_columns(tmp_path):
    pd.DataFrame({"path": ["x.jpg"], "label": ["sad"]}).to_parquet(tmp_path / "m.parquet")
    assert read_source(tmp_path / "m.parquet")["label_raw"].tolist() == ["sad"]
    pd.DataFrame({"file": ["x.jpg"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SourceError, match="path"):
        read_source(tmp_path / "bad.csv")


def test_fer2013_csv(tmp_path):
    pixels = " ".join(str(v % 256) for v in range(48 * 48))
    pd.DataFrame({"emotion": [3, 6, 0], "pixels": [pixels] * 3,
                  "Usage": ["Training", "PublicTest", "PrivateTest"]}).to_csv(tmp_path / "fer2013.csv", index=False)
    rows = read_source(tmp_path / "fer2013.csv")
    assert rows["label_raw"].tolist() == ["happiness", "neutral", "anger"]
    assert rows["source_split"].tolist() == ["train", "val", "test"]
    assert rows["path"].iloc[1].endswith("fer2013.csv#1")
    image = decode_fer2013_pixels(rows["pixels"].iloc[0])
    assert image.shape == (48, 48, 1) and image[0, 5, 0] == 5


def test_bad_pixel_strings_and_splits_and_landmarks():
    with pytest.raises(ValueError, match="square"):
        decode_fer2013_pixels("1 2 3")
    with pytest.raises(ValueError, match="0..255"):
        decode_fer2013_pixels("1 2 3 999")
    with pytest.raises(SourceError):
        normalize_split("holdout")
    assert normalize_split("PrivateTest") == "test"
    assert parse_landmarks("1 2 3") is None
    assert parse_landmarks("[1,2,3,4,5,6,7,8,9,nan]") is None
    assert parse_landmarks(list(range(10))).shape == (5, 2)


def test_missing_source(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(SourceError, match="unsupported"):
        read_source(tmp_path / "x.txt")
