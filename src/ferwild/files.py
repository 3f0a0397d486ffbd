"""Writing files so that a kill at any moment (even ``kill -9``) never leaves half of one.

Every writer goes to a temporary name beside the target, fsyncs, and renames it into place:
a reader sees either the old file or the new one. The temporary file gets the permissions a
plain ``open(path, "w")`` would give (0666 less the umask), not ``mkstemp``'s private 0600.
Used by every stage that writes: prepare's shards and manifest, training checkpoints, reports,
prediction journals, the audit's cached outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_default_mode(path: str | os.PathLike) -> None:
    """Give a file written by a library that creates it private (``mkstemp``, safetensors) the
    permissions a plain ``open(path, "w")`` would have given it: 0666 less the umask."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_target(path: str | os.PathLike) -> Path:
    """A new empty temporary file beside ``path``, to be written and then ``os.replace``d onto it.

    It gets the permissions a plain ``open(path, "w")`` would give (0666 less the umask), not
    ``mkstemp``'s private 0600, so atomically written outputs are as readable as any other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as ``.npy`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write named arrays as one ``.npz`` atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_parquet_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame as Parquet atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    tmp = atomic_target(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    save_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def copy_dir_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the folder ``src`` to ``dest``, which is at every moment its old self whole or the new copy whole.

    The copy is made in a temporary folder beside ``dest``; only once it is complete does it take
    ``dest``'s place (the old folder is renamed aside, the copy renamed in, the old one removed). A
    failure while copying leaves ``dest`` untouched and no temporary folder behind. Between the two
    renames (microseconds) a kill would leave the old folder at ``.<name>.old`` beside ``dest``.
    """
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the folder should read like any other
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            if old.exists():
                os.rename(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _json_default(value: Any):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
