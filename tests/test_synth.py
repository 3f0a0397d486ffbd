"""Tests for the procedural face generator (ferwild.data.synth)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferwild.data.synth import EXPRESSION_PROTOTYPES, MANIFEST_COLUMNS, PRESETS, generate_face, synth_dataset
from ferwild.labels import get_label_set


def _lm(row: pd.Series | str) -> np.ndarray:
    s = row if isinstance(row, str) else row["landmarks"]
    return np.array(s.split(), float).reshape(5, 2)


# Attributes do not depend on the image size, so the preset statistics are measured on tiny
# images (fast); the learnability test needs real resolution and makes its own sets.
@pytest.fixture(scope="module")
def ref600(tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("ref600")
    return synth_dataset("reference", 600, out, seed=0, size=32), out


@pytest.fixture(scope="module")
def prod600(tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("prod600")
    return synth_dataset("production", 600, out, seed=0, size=112), out


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    # production exercises every nuisance (noise, blur, hands, text) in a small set
    a = synth_dataset("production", 30, tmp_path / "a", seed=5, size=64, images_per_subject=3)
    b = synth_dataset("production", 30, tmp_path / "b", seed=5, size=64, images_per_subject=3)
    c = synth_dataset("production", 30, tmp_path / "c", seed=6, size=64, images_per_subject=3)
    assert (tmp_path / "a/manifest.csv").read_bytes() == (tmp_path / "b/manifest.csv").read_bytes()
    pd.testing.assert_frame_equal(a, b)
    for rel in a["path"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a/manifest.csv").read_bytes() != (tmp_path / "c/manifest.csv").read_bytes()
    # compare pixels of the first few images regardless of their names
    pa = [np.asarray(Image.open(tmp_path / "a" / r)) for r in a["path"][:5]]
    pc = [np.asarray(Image.open(tmp_path / "c" / r)) for r in c["path"][:5]]
    assert all(not np.array_equal(x, y) for x, y in zip(pa, pc))
    assert any("hand" == o or "text" == o for o in a["attr_occlusion"])  # covered what we claim


def test_generate_face_is_deterministic_and_validates_keys():
    im1, lm1 = generate_face({"noise": 2, "background": "blobs"}, 64, np.random.default_rng(1))
    im2, lm2 = generate_face({"noise": 2, "background": "blobs"}, 64, np.random.default_rng(1))
    assert np.array_equal(np.asarray(im1), np.asarray(im2)) and np.array_equal(lm1, lm2)
    assert im1.size == (64, 64) and im1.mode == "RGB" and lm1.shape == (5, 2)
    with pytest.raises(ValueError, match="unknown face parameters"):
        generate_face({"eye_opening": 1.0}, 64, np.random.default_rng(0))


# --------------------------------------------------------------------------- manifest

def test_manifest_contract(ref600):
    df, out = ref600
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    on_disk = pd.read_csv(out / "manifest.csv", dtype={"subject": str, "landmarks": str})
    pd.testing.assert_frame_equal(df, on_disk)
    assert len(df) == 600 and df["path"].is_unique
    labels = get_label_set("basic7")
    assert set(df["label"]) == set(labels)
    assert df["label"].value_counts().sum() == 600
    for rel, label in zip(df["path"], df["label"]):
        assert "\\" not in rel and rel.startswith(f"images/{label}/") and rel.endswith(".png")
    assert all((out / rel).is_file() for rel in df["path"][:50])
    # landmarks: 10 numbers with 2 decimals
    assert df["landmarks"].str.fullmatch(r"(-?\d+\.\d\d )(-?\d+\.\d\d ){8}-?\d+\.\d\d").all()
    assert pd.api.types.is_integer_dtype(df["attr_roll"]) and pd.api.types.is_integer_dtype(df["attr_yaw"])
    assert pd.api.types.is_integer_dtype(df["attr_blur"]) and pd.api.types.is_integer_dtype(df["attr_noise"])
    assert set(df["attr_gender"]) == {"female", "male"}
    assert set(df["attr_skin_tone"]) <= {"light", "medium", "dark"}
    assert set(df["attr_age"]) == {"young", "old"}
    assert set(df["attr_glasses"]) == {"yes", "no"}
    assert set(df["attr_lighting"]) <= {"even", "side", "dim"}
    assert set(df["attr_occlusion"]) <= {"none", "hand", "text"}
    assert df["attr_roll"].abs().max() <= PRESETS["reference"]["max_roll"]
    # several images per subject, and each subject keeps its identity attributes
    per = df.groupby("subject").size()
    assert per.min() >= 2 and per.median() == 8
    ident_cols = ["attr_gender", "attr_skin_tone", "attr_age", "attr_glasses", "attr_hair"]
    assert (df.groupby("subject")[ident_cols].nunique() == 1).all().all()
    # subjects show more than one expression
    assert (df.groupby("subject")["label"].nunique() >= 2).mean() > 0.8


def test_subject_ids_disjoint_and_label_sets(ref600, prod600, tmp_path):
    ref, prod = ref600[0], prod600[0]
    assert ref["subject"].str.startswith("ref-").all() and prod["subject"].str.startswith("prod-").all()
    assert not set(ref["subject"]) & set(prod["subject"])
    b6 = synth_dataset("reference", 60, tmp_path / "b6", size=32, label_set="basic6")
    assert set(b6["label"]) == set(get_label_set("basic6")) and len(b6) == 60
    other_seed = synth_dataset("reference", 20, tmp_path / "s7", seed=7, size=32)
    assert not set(other_seed["subject"]) & set(ref["subject"])


def test_overrides_apply_and_get_their_own_subject_ids(ref600, tmp_path):
    df = synth_dataset("reference", 40, tmp_path / "o", size=32,
                       overrides={"occlusion": {"hand": 1.0}, "p_male": {"default": 0.0}})
    assert (df["attr_occlusion"] == "hand").all() and (df["attr_gender"] == "female").all()
    assert not set(df["subject"]) & set(ref600[0]["subject"])
    with pytest.raises(ValueError, match="unknown preset key"):
        synth_dataset("reference", 5, tmp_path / "bad", overrides={"occlusions": {}})
    with pytest.raises(ValueError, match="unknown preset"):
        synth_dataset("studio", 5, tmp_path / "bad")


# --------------------------------------------------------------------------- landmarks

def _gray(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L"), float)


def _at(g: np.ndarray, xy) -> float:
    return float(g[int(round(xy[1])), int(round(xy[0]))])


@pytest.mark.parametrize("roll, yaw", [(0.0, 0.0), (30.0, 0.0), (-20.0, 25.0)])
def test_landmarks_sit_on_drawn_features(roll, yaw):
    params = {"roll": roll, "yaw": yaw, "scale": 0.8, "cx": 0.46, "cy": 0.53, "eye_color": (90, 140, 190)}
    im, lm = generate_face(params, 160, np.random.default_rng(0))
    g = _gray(im)
    skin = _at(g, 0.5 * (lm[0] + lm[2]) + [0, 0])  # cheek/nose-bridge skin between eye and nose
    for eye in lm[:2]:
        # the pupil is drawn exactly at the eye centre: dark, and darker than the (blue) iris
        # two pixels to the side
        assert _at(g, eye) < 60, (roll, yaw, _at(g, eye))
        assert _at(g, eye) < skin - 100
    # just inside each mouth corner is lip, clearly darker than skin
    centre = 0.5 * (lm[3] + lm[4])
    for corner in lm[3:]:
        assert _at(g, corner + 0.2 * (centre - corner)) < skin - 30
    # geometry in the face's own frame: eyes above nose above mouth, left before right
    a = math.radians(roll)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # undo the roll
    q = (lm - lm.mean(0)) @ rot.T
    assert q[0, 0] < q[1, 0] and q[3, 0] < q[4, 0]
    assert max(q[0, 1], q[1, 1]) < q[2, 1] < min(q[3, 1], q[4, 1])
    # the eye line's angle is the roll
    d = lm[1] - lm[0]
    assert math.degrees(math.atan2(d[1], d[0])) == pytest.approx(roll, abs=0.5)
    # yaw slides the nose tip (in front of the face) towards the turn
    shift = q[2, 0] - 0.5 * (q[0, 0] + q[1, 0])
    if yaw == 0:
        assert abs(shift) < 0.5
    else:
        assert shift > 3


def test_eye_landmarks_are_subpixel_accurate():
    # The pupil is a dark disc drawn around the eye landmark: its dark-weighted centroid must
    # coincide with the landmark. A half-pixel slip in the canvas <-> output convention
    # shows up as a consistent offset of ~0.25 px here.
    size, offsets = 320, []
    yy, xx = np.mgrid[0:size, 0:size]
    for cx, roll in [(0.5, 0.0), (0.473, 0.0), (0.51, 30.0), (0.49, -15.0)]:
        params = {"scale": 0.9, "cx": cx, "cy": 0.52, "roll": roll, "eye_open": 1.5,
                  "eye_color": (90, 140, 190)}
        im, lm = generate_face(params, size, np.random.default_rng(0))
        g = _gray(im)
        for eye in lm[:2]:
            w = np.clip(70 - g, 0, None) * (np.hypot(xx - eye[0], yy - eye[1]) < 7)
            offsets.append(np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum() - eye)
    offsets = np.array(offsets)
    assert np.abs(offsets).max() < 0.35, offsets
    assert np.abs(offsets.mean(0)).max() < 0.1, offsets.mean(0)


def test_dataset_landmarks_in_frame_and_faces_not_centred(prod600):
    df, out = prod600
    lm = np.stack([_lm(s) for s in df["landmarks"]])
    assert (lm >= 0).all() and (lm <= 111).all()
    mid = lm[:, :2].mean(1)
    assert mid[:, 0].std() > 0.08 * 112 and mid[:, 1].std() > 0.08 * 112  # not centred
    iod = np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)
    assert iod.min() > 0.05 * 112 and iod.max() < 0.5 * 112
    # the manifest's roll attribute matches the landmark eye line (within rounding, and yaw
    # does not tilt the eye line)
    ang = np.degrees(np.arctan2(lm[:, 1, 1] - lm[:, 0, 1], lm[:, 1, 0] - lm[:, 0, 0]))
    assert np.abs(ang - df["attr_roll"].to_numpy()).max() <= 0.6


# --------------------------------------------------------------------------- presets

def test_presets_differ_as_specified(ref600, prod600):
    ref, prod = ref600[0], prod600[0]
    happy = ref["label"] == "happiness"
    p_male_nonhappy = (ref.loc[~happy, "attr_gender"] == "male").mean()
    p_female_happy = (ref.loc[happy, "attr_gender"] == "female").mean()
    assert p_male_nonhappy > 0.7, p_male_nonhappy
    assert p_female_happy > 0.6, p_female_happy
    # production: mostly female in every class
    assert (prod["attr_gender"] == "female").mean() > 0.65
    assert (prod.groupby("label")["attr_gender"].apply(lambda s: (s == "female").mean()) > 0.5).all()
    occ_ref = (ref["attr_occlusion"] != "none").mean()
    occ_prod = (prod["attr_occlusion"] != "none").mean()
    assert occ_ref < 0.1 and 0.2 < occ_prod < 0.4 and occ_prod > occ_ref + 0.15
    assert {"hand", "text"} <= set(prod["attr_occlusion"])
    # harsher pose and light, more blur, a more unbalanced class mix
    assert prod["attr_roll"].abs().mean() > ref["attr_roll"].abs().mean() * 1.4
    assert (prod["attr_lighting"] != "even").mean() > (ref["attr_lighting"] != "even").mean() + 0.15
    assert (prod["attr_blur"] > 0).mean() > (ref["attr_blur"] > 0).mean() + 0.15
    vc_r, vc_p = ref["label"].value_counts(), prod["label"].value_counts()
    assert vc_p.max() / vc_p.min() > 2 * (vc_r.max() / vc_r.min())


# --------------------------------------------------------------------------- learnability

def _aligned_pixels(df: pd.DataFrame, root: Path, out: int = 48) -> np.ndarray:
    """Eye/mouth-aligned 48 px grayscale crops (what the pipeline's aligner would do)."""
    rows = []
    for rel, lms in zip(df["path"], df["landmarks"]):
        lm = _lm(lms)
        eyes = 0.5 * (lm[0] + lm[1])
        centre = 0.5 * eyes + 0.5 * (0.5 * (lm[3] + lm[4]))
        d = lm[1] - lm[0]
        ang = math.atan2(d[1], d[0])
        k = 2.6 * math.hypot(*d) / out  # source pixels per output pixel
        ca, sa = math.cos(ang) * k, math.sin(ang) * k
        h = out / 2
        coeffs = (ca, -sa, centre[0] - ca * h + sa * h, sa, ca, centre[1] - sa * h - ca * h)
        im = Image.open(root / rel).convert("L")
        im = im.transform((out, out), Image.AFFINE, coeffs, Image.BILINEAR)
        rows.append(np.asarray(im, np.float32).ravel())
    x = np.stack(rows) / 255.0
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)


@pytest.mark.slow
def test_expressions_learnable_but_not_trivial(prod600, tmp_path_factory, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    root = tmp_path_factory.mktemp("ref1500")
    ref = synth_dataset("reference", 1500, root, seed=1)
    t_gen = time.perf_counter() - t0
    x, y = _aligned_pixels(ref, root), ref["label"].to_numpy()
    tr, te = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(x, y, ref["subject"]))
    assert not set(ref["subject"].iloc[tr]) & set(ref["subject"].iloc[te])
    # one BLAS thread: on a 2-core box threaded BLAS makes lbfgs ~20x slower
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; fine for this check
        clf = LogisticRegression(C=0.01, max_iter=200).fit(x[tr], y[tr])
    acc = clf.score(x[te], y[te])
    chance = 1 / len(EXPRESSION_PROTOTYPES)
    prod, prod_root = prod600
    acc_prod = clf.score(_aligned_pixels(prod, prod_root), prod["label"].to_numpy())
    with capsys.disabled():
        print(f"\n[synth learnability] reference held-out acc={acc:.3f} (chance {chance:.3f}, "
              f"majority {pd.Series(y[te]).value_counts(normalize=True).iloc[0]:.3f}); "
              f"production acc={acc_prod:.3f}; generated 1500 @112px in {t_gen:.1f}s")
    assert acc > 2 * chance
    assert acc < 0.95  # not trivially separable
