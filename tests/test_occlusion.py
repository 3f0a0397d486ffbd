"""Occlusion probes (ferwild.audit.occlusion): the geometry follows the landmarks, a mask over
the mouth of real happy faces drops happiness recall, and the same occluder outside the crop's
footprint changes nothing."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ferwild.audit.occlusion import occlusion_probe
from ferwild.data.occluders import CONTROL, FacePoints, occlude, occluder_polygon, probe_names

# an upright face: eyes at (80, 100) and (140, 100), nose (110, 135), mouth corners (88, 165), (132, 165)
FACE = FacePoints(np.array([[80, 100], [140, 100], [110, 135], [88, 165], [132, 165]], dtype=np.float64))


def _covered(name: str, points: np.ndarray, rotate: float = 0.0) -> list[bool]:
    face = FACE
    if rotate:
        c, s = np.cos(rotate), np.sin(rotate)
        centre = FACE.points.mean(0)
        face = FacePoints((FACE.points - centre) @ np.array([[c, -s], [s, c]]).T + centre)
        points = (points - centre) @ np.array([[c, -s], [s, c]]).T + centre
    image = np.zeros((260, 260), dtype=np.uint8)
    drawn = occlude(image, occluder_polygon(name, face), (255,))
    return [bool(drawn[int(round(y)), int(round(x))]) for x, y in points]


@pytest.mark.parametrize("rotate", [0.0, 0.4])
def test_occluders_cover_what_they_stand_for_and_follow_the_face(rotate):
    eyes, nose, mouth = FACE.points[:2], FACE.points[2:3], FACE.points[3:]
    assert _covered("eyes", eyes, rotate) == [True, True] and _covered("eyes", mouth, rotate) == [False, False]
    assert _covered("mouth", mouth, rotate) == [True, True] and _covered("mouth", eyes, rotate) == [False, False]
    assert _covered("hand", mouth.mean(0, keepdims=True), rotate) == [True]
    assert _covered("hand", eyes, rotate) == [False, False]
    assert _covered("half", eyes, rotate) == [True, False]  # the photo's left half only
    assert _covered("half", nose + [[6.0, 0.0]], rotate) == [False]


def test_random_patches_grow_and_are_seeded():
    areas = []
    for name in [p for p in probe_names() if p.startswith("patch_")]:
        mask = occlude(np.zeros((260, 260), np.uint8), occluder_polygon(name, FACE, np.random.default_rng(3)), (1,))
        areas.append(int(mask.sum()))
    assert areas == sorted(areas) and areas[0] > 0
    a = occluder_polygon("patch_1", FACE, np.random.default_rng(5))
    np.testing.assert_allclose(a, occluder_polygon("patch_1", FACE, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="unknown occluder"):
        occluder_polygon("scarf", FACE)


@pytest.fixture(scope="module")
def wild_happy_neutral(tmp_path_factory, shared_data):
    """40 happy and 40 neutral wild_dev photos, prepared like the default model's training faces."""
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.recognizer import Recognizer

    labels = shared_data / "wild_dev" / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"wild_dev not present at {labels}")
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r["label"] == "happiness"][:40] + [r for r in rows if r["label"] == "neutral"][:40]
    root = tmp_path_factory.mktemp("occlusion")
    subset = root / "labels.csv"
    with subset.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in chosen:
            writer.writerow({**r, "path": str(labels.parent / r["path"])})
    alignment = Recognizer.default(detector="none").face_alignment
    out = root / "prepared"
    prepare(subset, out, PrepareConfig(labels="basic7", size=alignment.crop_size, channels=alignment.channels,
                                       template=alignment.template, balance="none", fallback="drop",
                                       split_ratios=(0.5, 0.25, 0.25), workers=1))
    return out


@pytest.fixture(scope="module")
def untrained_for_occlusion(wild_happy_neutral):
    # fer2013_vgg never saw an occluder in training (FER2013's own faces, framed within a pixel of
    # the default's template at 48 px), so it reads the smile from the mouth: the instrument that
    # shows what the probe measures (the default was fine-tuned with these occluders,
    # recipes/ferplus_occlusion.yaml, and the live model is the default's network)
    return occlusion_probe("ferwild:fer2013_vgg", wild_happy_neutral, detectors=(), n_bootstrap=300)


def test_a_mask_drops_happiness_recall_and_the_control_changes_nothing(untrained_for_occlusion):
    result = untrained_for_occlusion
    assert result["labelled"] and result["faces"] >= 70 and set(result["probes"]) == set(probe_names())
    mask = result["probes"]["mouth"]["recall_drop"]["happiness"]
    assert result["clean"]["recall"]["happiness"] > 0.6  # the model reads these happy faces
    assert mask["ci_low"] > 0.1  # covering mouth and chin takes the smile away
    control = result["probes"][CONTROL]
    assert control["faces"] > 0 and control["flip_rate"]["value"] == 0.0
    assert control["accuracy"]["drop"]["value"] == 0.0
    # the eye band does less to happiness than the mask does
    assert result["probes"]["eyes"]["recall_drop"]["happiness"]["value"] < mask["value"]


def test_the_default_trained_with_occluders_loses_less_to_a_mask(wild_happy_neutral, untrained_for_occlusion):
    # what shipping the occlusion fine-tune bought, on the same faces: a mask takes less of the smile
    default = occlusion_probe("ferwild:ferplus_vgg", wild_happy_neutral, detectors=(), n_bootstrap=300)
    assert default["clean"]["recall"]["happiness"] > 0.6
    for probe in ("mouth", "hand"):
        trained = default["probes"][probe]["accuracy"]["drop"]["value"]
        untrained = untrained_for_occlusion["probes"][probe]["accuracy"]["drop"]["value"]
        assert trained < untrained, probe
