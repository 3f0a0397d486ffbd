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
def make_prepared(tmp_path_factory):
    """``make_prepared(n, seed=, synth_size=)``: synthetic reference faces prepared at 32 px.

    One builder for every test module that needs a small prepared dataset; each distinct
    ``(n, seed, synth_size)`` is built once per session and shared.
    """
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.data.synth import synth_dataset

    built: dict[tuple[int, int, int], Path] = {}

    def make(n: int, *, seed: int, synth_size: int) -> Path:
        key = (n, seed, synth_size)
        if key not in built:
            root = tmp_path_factory.mktemp(f"prepared-{n}-{seed}-{synth_size}")
            synth_dataset("reference", n, root / "raw", seed=seed, size=synth_size, label_set="basic6")
            prepare(root / "raw" / "manifest.csv", root / "prep", PrepareConfig(size=32, workers=1))
            built[key] = root / "prep"
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, make_prepared):
    """A real (tiny) trained run: synthetic faces -> prepare at 32 px -> cnn_small, 2 epochs.

    Returns ``(run_dir, prepared_dir, raw_dir)``; ``raw_dir/images/<label>/*.png`` are the
    original 64 px synthetic faces. Shared by the inference-side tests (recognizer, predict).
    """
    from ferwild.config import RunConfig
    from ferwild.train import fit

    prep = make_prepared(150, seed=7, synth_size=64)
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    config = RunConfig.load(None, [f"data.path={prep}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=32", "train.epochs=2"])
    fit(config, run, log=lambda message: None)
    return run, prep, prep.parent / "raw"


def start_ferwild_serve(*args: str, timeout: float = 60.0):
    """Start ``ferwild serve ARGS...`` on a free localhost port and wait for ``/health``.

    Returns ``(process, "127.0.0.1:PORT")``; the caller terminates the process.
    """
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"http://{base}/health", timeout=1).json() == {"status": "ok"}:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not come up: {proc.communicate()[0][-2000:]}")
        time.sleep(0.2)


class WatchedRecognizer:
    """Wraps a recogniser and records how its ``analyze`` is called: the most calls running at
    once (``peak``), how many (``calls``) and from which threads (``threads``)."""

    def __init__(self, inner):
        import threading

        self.inner, self.active, self.peak, self.calls, self.threads = inner, 0, 0, 0, set()
        self.label_names, self.info = inner.label_names, inner.info
        self._guard = threading.Lock()

    def analyze(self, images, *, sources=None):
        import threading

        with self._guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls += 1
            self.threads.add(threading.current_thread().name)
        try:
            return self.inner.analyze(images, sources=sources)
        finally:
            with self._guard:
                self.active -= 1
