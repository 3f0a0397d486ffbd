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
