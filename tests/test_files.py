"""Atomic writers: whole files or nothing, with the permissions of a normal write."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest

from ferwild.files import save_json_atomic, save_npy_atomic, save_npz_atomic, save_parquet_atomic, save_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_write_gets(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        save_text_atomic(tmp_path / "a.txt", "x")
        save_json_atomic(tmp_path / "a.json", {"a": 1})
        save_npy_atomic(tmp_path / "a.npy", np.zeros(3))
        save_npz_atomic(tmp_path / "a.npz", x=np.zeros(3))
        save_parquet_atomic(pd.DataFrame({"a": [1]}), tmp_path / "a.parquet")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    for name in ("a.txt", "a.json", "a.npy", "a.npz", "a.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left
