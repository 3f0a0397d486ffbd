"""Shared fixtures: where the real test data lives, and small helpers to build inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$FERWILD_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FERWILD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real FER2013 / face photos folder; tests that need it skip with a reason when absent."""
    path = shared_data_dir()
    if not (path / "fer2013").is_dir() or not (path / "face_photos").is_dir():
        pytest.skip(f"real test data not present at {path} (set FERWILD_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real (tiny) trained run: synthetic faces -> prepare at 32 px -> cnn_small, 2 epochs.

    Returns ``(run_dir, prepared_dir, raw_dir)``; ``raw_dir/images/<label>/*.png`` are the
    original 64 px synthetic faces. Shared by the inference-side tests (recognizer, predict).
    """
    from ferwild.config import RunConfig
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.data.synth import synth_dataset
    from ferwild.train import fit

    root = tmp_path_factory.mktemp("tiny_run")
    synth_dataset("reference", 150, root / "raw", seed=7, size=64, label_set="basic6")
    prepare(root / "raw" / "manifest.csv", root / "prep", PrepareConfig(size=32, workers=1))
    config = RunConfig.load(None, [f"data.path={root / 'prep'}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=32", "train.epochs=2"])
    fit(config, root / "run", log=lambda message: None)
    return root / "run", root / "prep", root / "raw"
