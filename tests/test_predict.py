"""`ferwild predict` / `export`: the batch job over photos and videos, its resume, the ONNX path."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferwild.predict import PREDICTIONS, RESULTS, PredictConfig, predict_files
from ferwild.recognizer import Recognizer, RecognizerError


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ferwild.cli", *args], capture_output=True, text=True, **kw)


def _said(result) -> str:
    """stdout + stderr with rich's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def _write_video(path: Path, n: int, fps: int = 10, seed: int = 0) -> None:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for _ in range(n):
            frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory):
    """A folder of 24 faces in two subfolders, a text file posing as a photo, and a video."""
    _, _, raw = tiny_run
    root = tmp_path_factory.mktemp("inputs")
    faces = sorted(glob.glob(str(raw / "images" / "*" / "*.png")))[:24]
    for i, f in enumerate(faces):
        target = root / "photos" / ("a" if i % 2 else "b") / f"face{i:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    (root / "photos" / "a" / "broken.jpg").write_text("this is not a jpeg")
    _write_video(root / "clip.mp4", 20)
    return root


@contextmanager
def _counting_images(recognizer: Recognizer):
    """Counts the images ``recognizer.analyze`` is given while the block runs (a list of batch sizes)."""
    calls: list[int] = []
    original = recognizer.analyze

    def counting(batch, **kw):
        calls.append(len(batch))
        return original(batch, **kw)

    recognizer.analyze = counting
    try:
        yield calls
    finally:
        del recognizer.analyze


@pytest.fixture(scope="module")
def rec(tiny_run):
    return Recognizer.from_run(tiny_run[0], detector="none")


def test_predict_writes_the_contract(rec, inputs, tmp_path):
    out = tmp_path / "out"
    summary = predict_files(rec, [inputs / "photos", inputs / "clip.mp4"], out,
                            PredictConfig(sample_fps=5, annotate=True, batch_images=5))
    frame = pd.read_csv(out / PREDICTIONS)
    expected = (["source", "frame", "time_s", "face", "track", "n_faces", "x1", "y1", "x2", "y2",
                 "detection_confidence",
                 "label", "confidence"] + [f"prob_{n}" for n in rec.label_names] + ["error"])
    # the contract's columns come first and unchanged; smoothed_label was added after them
    assert list(frame.columns) == expected + ["smoothed_label"]
    videos = frame[frame["frame"].notna() & frame["track"].notna()]
    assert len(videos) and videos["smoothed_label"].isin(rec.label_names).all()
    assert frame[frame["frame"].isna()]["smoothed_label"].isna().all()  # photos are not smoothed
    images = frame[frame["frame"].isna()]
    assert len(images) == 25 and images["source"].nunique() == 25
    bad = images[images["source"].str.endswith("broken.jpg")]
    assert len(bad) == 1 and "not an image" in bad["error"].iloc[0] and bad["n_faces"].iloc[0] == 0
    good = images.drop(bad.index)
    assert (good["n_faces"] == 1).all() and good["error"].isna().all()
    probs = good[[f"prob_{n}" for n in rec.label_names]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (good["label"].to_numpy() == np.array(rec.label_names)[probs.argmax(axis=1)]).all()
    # the video: 20 frames at 10 fps sampled at 5 fps -> 10 frames, 0.2 s apart
    video = frame[frame["frame"].notna()]
    assert video["frame"].tolist() == list(range(0, 20, 2))
    assert video["track"].tolist() == [0] * 10 and images["track"].isna().all()  # one person, whole frame
    np.testing.assert_allclose(video["time_s"].to_numpy(), np.arange(10) * 0.2, atol=1e-6)
    assert summary["n_images"] == 25 and summary["n_videos"] == 1 and summary["n_frames"] == 10
    assert summary["n_errors"] == 1 and summary["n_faces"] == 24 + 10
    clip = summary["videos"][str(inputs / "clip.mp4")]
    assert sum(clip["label_share"].values()) == pytest.approx(1, abs=1e-3)
    assert list(clip["tracks"]) == ["0"] and clip["tracks"]["0"]["frames"] == 10
    assert clip["tracks"]["0"]["first_s"] == 0 and clip["tracks"]["0"]["last_s"] == pytest.approx(1.8)
    from PIL import Image

    assert clip["timeline"] == "timelines/clip.png"
    with Image.open(out / clip["timeline"]) as timeline:
        assert timeline.format == "PNG" and timeline.size[0] > 300
    # annotated copies: every readable image, and the video with its sampled frames
    annotated = sorted(p.relative_to(out / "annotated") for p in (out / "annotated").rglob("*.*"))
    assert Path("photos/a/face01.png") in annotated and Path("clip.mp4") in annotated
    assert len(annotated) == 24 + 1
    import av

    with av.open(str(out / "annotated" / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_resume_redoes_only_what_was_cut_off(rec, inputs, tmp_path):
    """A journal cut mid-line and a video without its done marker: only those are redone, and
    the result equals an uninterrupted run."""
    clean = tmp_path / "clean"
    predict_files(rec, [inputs / "photos", inputs / "clip.mp4"], clean, PredictConfig(batch_images=4))
    lines = (clean / RESULTS).read_text().splitlines(keepends=True)
    images = [ln for ln in lines if '"is_video"' not in ln]
    video = [ln for ln in lines if '"is_video"' in ln and "video_done" not in ln]
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(clean / "job.json", cut / "job.json")
    # 10 complete image lines, half of the video's frames (no done marker), then a torn line
    (cut / RESULTS).write_text("".join(images[:10] + video[:4]) + images[10][:25])

    with _counting_images(rec) as calls:
        summary = predict_files(rec, [inputs / "photos", inputs / "clip.mp4"], cut, PredictConfig(batch_images=4))
    assert sum(calls) == 25 - 10  # the 10 journalled images were not redone
    pd.testing.assert_frame_equal(pd.read_csv(cut / PREDICTIONS), pd.read_csv(clean / PREDICTIONS))
    assert summary["n_frames"] == 20


def test_killed_job_resumes_to_the_same_result(tiny_run, inputs, tmp_path):
    """kill -9 in the middle of a CLI job, rerun the same command: same predictions.csv."""
    run = tiny_run[0]
    many = tmp_path / "many"
    for k in range(12):  # 12 x 24 faces: long enough to be killed part-way
        shutil.copytree(inputs / "photos", many / f"copy{k:02d}")
    args = ["predict", str(many), "--run", str(run), "--detector", "none", "--batch-images", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "ferwild.cli", *args, "--out", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "killed" / RESULTS
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 40:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    done_before = journal.read_text().count("\n")
    resumed = _cli(*args, "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    clean = _cli(*args, "--out", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    killed_csv = pd.read_csv(tmp_path / "killed" / PREDICTIONS)
    pd.testing.assert_frame_equal(killed_csv, pd.read_csv(tmp_path / "clean" / PREDICTIONS))
    assert len(killed_csv) == 12 * 25
    assert proc.returncode == -signal.SIGKILL  # it was really killed part-way, not finished first
    assert 40 <= done_before < 12 * 25
    assert "resuming" in _said(resumed)


def test_predict_on_a_local_ray_equals_the_local_run(rec, tiny_run, inputs, tmp_path):
    """Torch and ONNX recognisers travel to Ray actors; the outputs are a local run's."""
    pytest.importorskip("ray")
    from ferwild.export import export_onnx
    from ferwild.parallel import ray_session

    paths = [inputs / "photos", inputs / "clip.mp4"]
    config = PredictConfig(sample_fps=5, annotate=True, batch_images=5)
    export_onnx(tiny_run[0], tmp_path / "model.onnx")
    by_onnx = Recognizer.from_onnx(tmp_path / "model.onnx", detector="none")
    with ray_session("local", num_cpus=2):  # one Ray for both jobs (each would start its own)
        for name, recognizer in (("torch", rec), ("onnx", by_onnx)):
            here, there = tmp_path / f"{name}-here", tmp_path / f"{name}-ray"
            local = predict_files(recognizer, paths, here, config)
            on_ray = predict_files(recognizer, paths, there, config, ray_address="local")
            a, b = pd.read_csv(here / PREDICTIONS), pd.read_csv(there / PREDICTIONS)
            assert len(a) == 25 + 10 and (a["error"].fillna("") != "").sum() == 1  # the broken file: one row
            # one thread per actor vs the whole machine: float sums may differ in the last bits
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)
            sources = [json.loads(line)["source"] for line in (here / RESULTS).read_text().splitlines()]
            assert sources == [json.loads(line)["source"] for line in (there / RESULTS).read_text().splitlines()]
            # wall-clock figures differ between any two runs; everything else must be equal
            for summary in (local, on_ray):
                summary.pop("seconds_this_session")
                assert summary.pop("video_frames_per_s") > 0
                for video in summary["videos"].values():
                    assert video.pop("frames_per_s") > 0 and video.pop("seconds") > 0
            assert local == on_ray
            annotated = sorted(p.relative_to(here).as_posix() for p in (here / "annotated").rglob("*.*"))
            assert annotated == sorted(p.relative_to(there).as_posix() for p in (there / "annotated").rglob("*.*"))
            assert not list((there / "parts").glob("*"))  # every part folded into the journal


def test_parts_an_interrupted_ray_run_committed_are_not_redone(rec, inputs, tmp_path):
    clean = tmp_path / "clean"
    predict_files(rec, [inputs / "photos"], clean, PredictConfig(batch_images=5))
    lines = (clean / RESULTS).read_text().splitlines(keepends=True)
    out = tmp_path / "out"
    (out / "parts").mkdir(parents=True)
    shutil.copy(clean / "job.json", out / "job.json")
    (out / "parts" / "part-000003.jsonl").write_text("".join(lines[15:20]))  # finished by an actor
    (out / "parts" / "part-000000.jsonl").write_text("".join(lines[:5]))

    with _counting_images(rec) as calls:
        predict_files(rec, [inputs / "photos"], out, PredictConfig(batch_images=5))
    assert sum(calls) == 25 - 10
    pd.testing.assert_frame_equal(pd.read_csv(out / PREDICTIONS), pd.read_csv(clean / PREDICTIONS))
    assert (out / RESULTS).read_text() == (clean / RESULTS).read_text()  # the same order, too
    assert not list((out / "parts").glob("*"))


def test_another_model_or_options_is_not_mixed_in(rec, inputs, tmp_path):
    out = tmp_path / "out"
    predict_files(rec, [inputs / "photos"], out, PredictConfig(batch_images=8))
    with pytest.raises(RecognizerError, match="another model or options"):
        predict_files(rec, [inputs / "photos"], out, PredictConfig(batch_images=8, sample_fps=2))
    summary = predict_files(rec, [inputs / "photos"], out, PredictConfig(sample_fps=2), overwrite=True)
    assert summary["n_images"] == 25
    assert json.loads((out / "job.json").read_text())["config"]["sample_fps"] == 2


def test_export_then_predict_with_onnx_gives_the_same_predictions(tiny_run, inputs, tmp_path):
    run = tiny_run[0]
    exported = _cli("export", "--run", str(run), "--out", str(tmp_path / "model.onnx"))
    assert exported.returncode == 0, exported.stderr
    assert "max |dp|" in _said(exported)
    by_torch = _cli("predict", str(inputs / "photos"), "--run", str(run), "--detector", "none",
                    "--out", str(tmp_path / "torch"))
    by_onnx = _cli("predict", str(inputs / "photos"), "--onnx", str(tmp_path / "model.onnx"), "--detector",
                   "none", "--out", str(tmp_path / "onnx"))
    assert by_torch.returncode == 0 and by_onnx.returncode == 0, by_onnx.stderr
    a, b = pd.read_csv(tmp_path / "torch" / PREDICTIONS), pd.read_csv(tmp_path / "onnx" / PREDICTIONS)
    assert (a["label"].fillna("") == b["label"].fillna("")).all()
    prob_cols = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[prob_cols].fillna(0).to_numpy(), b[prob_cols].fillna(0).to_numpy(), atol=1e-4)
    assert "24 faces" in _said(by_onnx) and "1 errors" in _said(by_onnx)
    onnx_rec = Recognizer.from_onnx(tmp_path / "model.onnx", detector="none")
    assert onnx_rec.face_alignment == Recognizer.from_run(run, detector="none").face_alignment


def test_predict_cli_errors(tiny_run, tmp_path):
    run = tiny_run[0]
    both = _cli("predict", str(tmp_path), "--run", str(run), "--onnx", "x.onnx", "--out", str(tmp_path / "o"))
    assert both.returncode == 2 and "at most one of --run" in _said(both)
    missing = _cli("predict", str(tmp_path / "nope"), "--run", str(run), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and "no such file or folder" in _said(missing)
    bad_fps = _cli("predict", str(tmp_path), "--run", str(run), "--fps", "0", "--out", str(tmp_path / "o"))
    assert bad_fps.returncode == 2 and "sample_fps" in _said(bad_fps)
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("nope")
    bad_model = _cli("predict", str(tmp_path), "--onnx", str(not_onnx), "--out", str(tmp_path / "o"))
    assert bad_model.returncode == 2 and "error:" in _said(bad_model) and "Traceback" not in _said(bad_model)


def test_timeline_figure_of_a_video_without_faces(tmp_path):
    from PIL import Image

    from ferwild.predict import video_timeline_figure

    frames = [{"source": "v.mp4", "frame": k, "time_s": k / 5, "faces": [], "is_video": True} for k in range(5)]
    path = video_timeline_figure(frames, ["anger", "happiness"], tmp_path / "t" / "v.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert not list((tmp_path / "t").glob(".*"))  # no temporary file left


def test_an_empty_folder_among_the_inputs_is_fine(rec, inputs, tmp_path):
    (tmp_path / "empty").mkdir()
    summary = predict_files(rec, [tmp_path / "empty", inputs / "photos"], tmp_path / "out",
                            PredictConfig(annotate=True))
    assert summary["n_images"] == 25
    assert (tmp_path / "out" / "annotated" / "photos" / "a" / "face01.png").exists()


def test_annotated_copies_keep_name_and_format_and_say_when_no_face(tiny_run, tmp_path):
    from PIL import Image

    from ferwild.data.faces import FaceDetector

    class NoFaces(FaceDetector):
        """A detector that finds nothing (a photo without a face)."""

        def __init__(self):
            self.min_confidence = 0.9

        def detect(self, images):
            return [[] for _ in images]

    folder = tmp_path / "in"
    folder.mkdir()
    grey = np.full((96, 96, 3), 128, np.uint8)
    Image.fromarray(grey).save(folder / "a.png")
    Image.fromarray(grey).save(folder / "a.jpg", quality=95)
    rec = Recognizer.from_run(tiny_run[0], detector=NoFaces())
    summary = predict_files(rec, [folder], tmp_path / "out", PredictConfig(annotate=True))
    assert summary["n_without_face"] == 2
    with Image.open(tmp_path / "out" / "annotated" / "in" / "a.png") as png, \
            Image.open(tmp_path / "out" / "annotated" / "in" / "a.jpg") as jpg:
        assert (png.format, jpg.format) == ("PNG", "JPEG")
        corner = np.asarray(png.convert("RGB"))[:8, :40]
        assert (corner != 128).any()  # the "no face found" note
        assert (np.asarray(png.convert("RGB"))[-20:, -20:] == 128).all()  # the rest of the photo untouched
