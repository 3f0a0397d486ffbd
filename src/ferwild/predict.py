"""``ferwild predict``: a recogniser over many photos and videos, resumable, nothing lost.

Writes into ``OUT``:

* ``results.jsonl``: one line per image or sampled video frame (:meth:`ImageResult.to_dict`),
  appended and flushed batch by batch. It is the job's journal: after a kill (even ``kill -9``)
  the same command resumes after the last complete image; a video whose frames were cut off is
  redone from its start.
* ``predictions.csv``: one row per face (and one row with ``n_faces`` 0 or an ``error`` for an
  image without faces or unreadable), columns ``source, frame, time_s, face, track, n_faces,
  x1, y1, x2, y2, detection_confidence, label, confidence, prob_<class>..., error, smoothed_label``
  (``track`` numbers a person across a video's frames; ``smoothed_label`` is their reading
  smoothed over time, :class:`~ferwild.tracking.ExpressionSmoother`, empty for photos).
* ``summary.json``: counts, label mix, per video its label shares and per tracked person when
  they are on screen and their label shares, errors, the recogniser's info.
* ``annotated/`` (with ``annotate``): the images with boxes and labels drawn, and each video
  re-encoded (H.264) with its sampled frames annotated.
* ``timelines/``: per video, each tracked person's smoothed class probabilities over time (PNG)
  and, beside it, the same as a table (CSV: ``frame, time_s, track, label, smoothed_label,
  prob_<class>..., smoothed_<class>...``, raw and smoothed).
* ``summary.json`` also gives, per video, the frames read per second (decoding in its own
  thread, detection, alignment, classification, tracking) and its label flicker (label changes
  per second of a track) before and after smoothing.

On a Ray cluster (``ray_address``) actors write their finished tasks as ``parts/*.jsonl``, each
folded into ``results.jsonl`` as it arrives; the other outputs are written as in a local run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferwild.config import Settings, check_int, check_number
from ferwild.files import save_json_atomic, save_text_atomic
from ferwild.drawing import draw_result
from ferwild.face_tables import face_rows, prediction_columns, timeline_columns
from ferwild.recognizer import ImageResult, Recognizer, RecognizerError, find_inputs, is_video
from ferwild.video_io import VideoWriter, video_frame_rate

RESULTS = "results.jsonl"
PARTS = "parts"  # a Ray run's committed part journals, folded into RESULTS as they finish
PREDICTIONS = "predictions.csv"
SUMMARY = "summary.json"
JOB = "job.json"


@dataclass
class PredictConfig(Settings):
    """Options of a prediction job (saved to ``OUT/job.json`` and checked on resume).

    ``sample_fps`` samples videos at about that many frames per second of video time; else every
    ``every_n_frames``-th frame is used. ``max_frames`` caps the sampled frames per video.
    ``batch_images`` images are analysed (and journalled) at a time. ``smooth_half_life_s`` is the
    half-life of each tracked person's smoothed reading in videos (0: no smoothing; the raw
    reading is always kept too).
    """

    sample_fps: float | None = None
    every_n_frames: int = 1
    max_frames: int | None = None
    annotate: bool = False
    batch_images: int = 32
    smooth_half_life_s: float = 0.25

    def __post_init__(self) -> None:
        if self.sample_fps is not None:
            self.sample_fps = check_number(self.sample_fps, "sample_fps", low=0, low_open=True)
        self.every_n_frames = check_int(self.every_n_frames, "every_n_frames", 1)
        if self.max_frames is not None:
            self.max_frames = check_int(self.max_frames, "max_frames", 1)
        self.batch_images = check_int(self.batch_images, "batch_images", 1)
        self.smooth_half_life_s = check_number(self.smooth_half_life_s, "smooth_half_life_s", low=0)


def _read_journal(path: Path) -> tuple[list[dict], str]:
    """Complete lines of the journal and its valid text (a line cut by a kill is dropped)."""
    if not path.exists():
        return [], ""
    text = path.read_text(encoding="utf-8")
    keep = text[: text.rfind("\n") + 1]
    records = []
    for line in keep.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # anything after a damaged line is redone
    valid = "".join(json.dumps(r) + "\n" for r in records)
    return records, valid


def _resume_state(out: Path) -> tuple[list[dict], set[str]]:
    """Journal records to keep and the sources already complete.

    Images are complete with their line; videos only with their ``video_done`` marker, so the
    frames of a video that was cut off are dropped and the video is redone.
    """
    records, _ = _read_journal(out / RESULTS)
    finished_videos = {r["source"] for r in records if r.get("video_done")}
    kept = [r for r in records if not r.get("is_video") or r["source"] in finished_videos]
    done = {r["source"] for r in kept if not r.get("is_video")} | finished_videos
    return kept, done


def _relative_names(inputs: Sequence[str | os.PathLike], files: Sequence[Path]) -> dict[str, Path]:
    """Each input file -> its name under ``annotated/`` and ``timelines/``: ``<folder name>/<path
    inside it>`` for files found in a folder argument, the file name for file arguments (made
    unique). ``files`` is ``find_inputs(inputs)``: the folders are not walked again."""
    folders = [Path(a) for a in inputs if Path(a).is_dir()]
    names: dict[str, Path] = {}
    used: set[Path] = set()
    for f in files:
        folder = next((d for d in folders if f.is_relative_to(d)), None)
        rel = Path(folder.name) / f.relative_to(folder) if folder is not None else Path(f.name)
        if rel in used:
            rel = rel.with_name(f"{rel.stem}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}{rel.suffix}")
        used.add(rel)
        names.setdefault(str(f), rel)
    return names


def _annotated_path(out: Path, rel: Path, suffix: str) -> Path:
    return (out / "annotated" / rel).with_suffix(suffix)


def predict_files(recognizer: Recognizer, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  config: PredictConfig | None = None, *, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Run ``recognizer`` over image/video files and folders; write ``OUT`` (see module doc).

    Resumes an unfinished job in ``out_dir`` made with the same model and options; with
    ``overwrite`` starts afresh. ``progress(done_files, total_files)`` is called as files finish.
    With ``ray_address`` (``ferwild.parallel.ray_session``) the files are spread over Ray actors,
    each holding a copy of ``recognizer`` (see :func:`_predict_on_ray`); the outputs are the same
    as a local run's. Returns the summary.

    Raises:
        RecognizerError: no inputs, a missing path, or ``out_dir`` holding another job.
        RayUnavailable: ``ray_address`` given but Ray is not installed or not reachable.
    """
    config = config or PredictConfig()
    log = log or (lambda message: None)
    files = find_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _claim_out_dir(out, {"recognizer": recognizer.info(), "config": config.to_dict()}, overwrite)

    parts = sorted((out / PARTS).glob("part-*.jsonl"))
    if parts:  # what an interrupted Ray run committed is finished work
        _fold_parts(out, parts, _resume_state(out)[1])
    records, done = _resume_state(out)
    save_text_atomic(out / RESULTS, "".join(json.dumps(r) + "\n" for r in records))
    if done:
        log(f"resuming: {len(done)} of {len(files)} files already done")
    names = _relative_names(inputs, files)
    todo = [f for f in files if str(f) not in done]
    finished = len(files) - len(todo)
    if progress:
        progress(finished, len(files))

    def advance(n_files: int) -> None:
        nonlocal finished
        finished += n_files
        if progress:
            progress(finished, len(files))

    t0 = time.perf_counter()
    if ray_address:
        _predict_on_ray(recognizer, todo, names, out, config, ray_address, advance, log, done)
    else:
        with open(out / RESULTS, "a", encoding="utf-8") as journal:
            def write(lines: list[dict]) -> None:
                journal.write("".join(json.dumps(r) + "\n" for r in lines))
                journal.flush()
                os.fsync(journal.fileno())  # a kill -9 loses at most the batch in flight

            _predict_some(recognizer, todo, names, out, config, write, advance, log)

    records, _ = _read_journal(out / RESULTS)
    # one order whatever ran where or was resumed: images as the inputs list them, then videos
    records = _in_input_order(records, files)
    save_text_atomic(out / RESULTS, "".join(json.dumps(r) + "\n" for r in records))
    summary = _summarise(records, recognizer, len(files), time.perf_counter() - t0)
    write_predictions_csv(records, recognizer.label_names, out / PREDICTIONS)
    for source, frames in _video_frames(records).items():
        rel = names.get(source, Path(Path(source).name))
        figure = video_timeline_figure(frames, recognizer.label_names, out / "timelines" / rel.with_suffix(".png"),
                                       title=rel.as_posix())
        summary["videos"][source]["timeline"] = figure.relative_to(out).as_posix()
        table = write_timeline_csv(frames, recognizer.label_names, figure.with_suffix(".csv"))
        summary["videos"][source]["timeline_csv"] = table.relative_to(out).as_posix()
    save_json_atomic(out / SUMMARY, summary)
    return summary


def _claim_out_dir(out: Path, job: dict[str, Any], overwrite: bool) -> None:
    """Record ``job`` (model + options) in ``OUT/job.json``; a folder holding another job is
    refused unless ``overwrite``, which starts afresh."""
    job_path = out / JOB
    if overwrite:
        for name in (RESULTS, PREDICTIONS, SUMMARY, JOB):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / PARTS, ignore_errors=True)
    elif job_path.exists():
        previous = json.loads(job_path.read_text())
        if previous != json.loads(json.dumps(job)):
            raise RecognizerError(f"{out} holds predictions of another model or options; "
                                  "use another --out or --overwrite")
    save_json_atomic(job_path, job)


def _predict_some(recognizer: Recognizer, files: Sequence[Path], names: dict[str, Path], out: Path,
                  config: PredictConfig, write: Callable[[list[dict]], None], advance: Callable[[int], None],
                  log: Callable[[str], None]) -> None:
    """Analyse ``files`` (images in batches of ``config.batch_images``, then each video), handing
    each batch's journal records to ``write`` and writing annotated copies under ``out``."""
    images = [f for f in files if not is_video(f)]
    videos = [f for f in files if is_video(f)]
    for start in range(0, len(images), config.batch_images):
        batch = images[start:start + config.batch_images]
        results = recognizer.analyze(batch, sources=[str(f) for f in batch])
        if config.annotate:
            for path, result in zip(batch, results):
                if result.error is None:
                    # same name and format as the input (a.png and a.jpg stay two files)
                    target = out / "annotated" / names[str(path)]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    lossy = target.suffix.lower() in {".jpg", ".jpeg", ".webp"}
                    draw_result(path, result).save(target, **({"quality": 90} if lossy else {}))
        write([r.to_dict() for r in results])
        advance(len(batch))
    for path in videos:
        _predict_video(recognizer, path, out, names.get(str(path)), config, write, log)
        advance(1)


def _in_input_order(records: list[dict], files: Sequence[Path]) -> list[dict]:
    """Images in the order of ``files``, then videos in that order; a video's frames keep theirs."""
    position = {str(f): i for i, f in enumerate(files)}
    return sorted(records, key=lambda r: (bool(r.get("is_video")), position.get(r["source"], len(position))))


# --------------------------------------------------------------------------------------------
# on a Ray cluster


class _PredictActor:
    """One Ray actor: a copy of the recogniser, analysing tasks of files into part journals."""

    def __init__(self, recognizer: Recognizer, out: str, config: PredictConfig) -> None:
        from ferwild.parallel import worker_init

        if not _use_gpu(recognizer):
            worker_init()  # one core's worth: torch at one thread
        self.recognizer, self.out, self.config = recognizer, Path(out), config

    def run(self, index: int, files: list[str], names: dict[str, str]) -> tuple[str, int]:
        """Analyse ``files``; commit their records as ``OUT/parts/part-<index>.jsonl`` (atomic)."""
        lines: list[dict] = []
        _predict_some(self.recognizer, [Path(f) for f in files], {k: Path(v) for k, v in names.items()}, self.out,
                      self.config, lines.extend, lambda n: None, lambda message: None)
        part = self.out / PARTS / f"part-{index:06d}.jsonl"
        save_text_atomic(part, "".join(json.dumps(r) + "\n" for r in lines))
        return str(part), len(files)


def _use_gpu(recognizer: Recognizer) -> bool:
    """Move a torch classifier to this actor's GPU, if Ray gave it one; True when it did."""
    import sys

    classifier = recognizer.classifier
    if getattr(classifier, "backend", None) != "torch" or "torch" not in sys.modules:
        return False
    torch = sys.modules["torch"]
    if not torch.cuda.is_available():
        return False
    classifier.model.to("cuda")
    classifier.device = torch.device("cuda")
    return True


def _predict_on_ray(recognizer: Recognizer, todo: Sequence[Path], names: dict[str, Path], out: Path,
                    config: PredictConfig, address: str, advance: Callable[[int], None],
                    log: Callable[[str], None], done: set[str]) -> None:
    """Spread ``todo`` over Ray actors; fold each finished part into the journal.

    Tasks are the local run's batches of ``batch_images`` images and one task per video, so the
    results are those of a local run. There is one actor per GPU when the cluster has GPUs (the
    classifier runs there; face detection stays on the CPU), else one per CPU. ``out`` must be
    on storage every node sees; so must an ONNX model's file. A killed driver loses only the
    tasks in flight: parts committed by then are folded in when the job is run again. ``done``
    holds the sources the journal has complete; it grows as parts are folded.
    """
    from ferwild.parallel import ray_session

    images = [f for f in todo if not is_video(f)]
    tasks = [images[i:i + config.batch_images] for i in range(0, len(images), config.batch_images)]
    tasks += [[f] for f in todo if is_video(f)]
    if not tasks:
        return
    with ray_session(address) as ray:
        from ray.util import ActorPool

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        actor_class = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(_PredictActor)
        shared = ray.put(recognizer)  # sent once, not once per actor
        actors = [actor_class.remote(shared, str(out), config) for _ in range(min(len(tasks), gpus or cpus))]
        log(f"predicting on Ray at {address}: {len(tasks)} tasks over {len(actors)} "
            f"{'GPU' if gpus else 'CPU'} actor(s)")
        pool = ActorPool(actors)
        work = [(i, [str(f) for f in task], {str(f): names[str(f)].as_posix() for f in task})
                for i, task in enumerate(tasks)]
        for part, n_files in pool.map_unordered(lambda actor, w: actor.run.remote(*w), work):
            _fold_parts(out, [Path(part)], done)
            advance(n_files)


def _fold_parts(out: Path, parts: Sequence[Path], done: set[str]) -> None:
    """Append committed part journals to the journal and delete them. A source in ``done`` (the
    journal holds it complete) is not added twice; ``done`` grows with what is folded."""
    if not parts:
        return
    with open(out / RESULTS, "a", encoding="utf-8") as journal:
        for part in parts:
            records, _ = _read_journal(part)
            journal.write("".join(json.dumps(r) + "\n" for r in records if r["source"] not in done))
            journal.flush()
            os.fsync(journal.fileno())
            done |= {r["source"] for r in records}
            part.unlink()


def _video_frames(records: list[dict]) -> dict[str, list[dict]]:
    """Each finished video's frame records (no error), in journal order."""
    frames: dict[str, list[dict]] = {}
    for r in records:
        if r.get("is_video") and not r.get("video_done") and not r.get("error"):
            frames.setdefault(r["source"], []).append(r)
    return frames


def video_timeline_figure(frames: list[dict], label_names: Sequence[str], path: Path, *, title: str = "",
                          max_tracks: int = 4) -> Path:
    """How each person's expression reads over a video: one panel per track (the ``max_tracks``
    seen longest), class probabilities stacked over time (the smoothed ones when the frames have
    them). Written to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tracks: dict[int, list[tuple[float, list[float]]]] = {}
    smoothed = any(face.get("smoothed") for r in frames for face in r["faces"])
    for r in frames:
        for face in r["faces"]:
            t = r["time_s"] if r.get("time_s") is not None else float(r.get("frame") or 0)
            probs = face.get("smoothed") or face["probabilities"]
            tracks.setdefault(face.get("track", 0), []).append((t, [probs[n] for n in label_names]))
    shown = sorted(tracks, key=lambda k: -len(tracks[k]))[:max_tracks]
    fig = Figure(figsize=(9, 1.9 * max(1, len(shown)) + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(shown)), 1, sharex=True, squeeze=False)[:, 0]
    colors = ["#e63946", "#6a4c93", "#f4a261", "#2a9d8f", "#457b9d", "#e9c46a", "#8338ec", "#1d3557"]
    for ax, track in zip(axes, shown):
        times = np.array([t for t, _ in tracks[track]])
        probs = np.array([p for _, p in tracks[track]]).T
        ax.stackplot(times, probs, labels=list(label_names), colors=colors[:len(label_names)], alpha=0.9)
        top = Counter(label_names[int(i)] for i in probs.argmax(axis=0)).most_common(1)[0]
        ax.set_ylim(0, 1)
        ax.set_ylabel("p")
        ax.set_title(f"person {track}: {times.min():.1f}-{times.max():.1f} s, mostly {top[0]} "
                     f"({top[1] / probs.shape[1]:.0%} of {probs.shape[1]} frames)", fontsize=9, loc="left")
    if not shown:
        axes[0].text(0.5, 0.5, "no face in any sampled frame", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    else:
        axes[-1].set_xlabel("time (s)")
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    what = "expression over time" + (" (smoothed per person)" if smoothed else "")
    fig.suptitle(f"{what}: {title}" if title else what, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def write_timeline_csv(frames: list[dict], label_names: Sequence[str], path: Path) -> Path:
    """The timeline as a table: one row per face and sampled frame, raw and smoothed probabilities."""
    import pandas as pd

    rows = [row for r in frames for row in face_rows(r, label_names) if row["face"] is not None]
    table = pd.DataFrame(rows, columns=timeline_columns(label_names))
    for column in ("frame", "track"):
        table[column] = table[column].astype("Int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_text_atomic(path, table.to_csv(index=False))
    return path


def _predict_video(recognizer: Recognizer, path: Path, out: Path, rel: Path | None, config: PredictConfig,
                   write: Callable[[list[dict]], None], log: Callable[[str], None]) -> None:
    """Journal one video's sampled frames (and encode the annotated copy), then its done marker."""
    from ferwild.tracking import ExpressionSmoother

    source = str(path)
    writer = None
    buffered: list[dict] = []
    started, n_frames = time.perf_counter(), 0
    smoother = (ExpressionSmoother(recognizer.label_names, half_life_s=config.smooth_half_life_s,
                                   abstain_below=recognizer.abstain_below)
                if config.smooth_half_life_s > 0 else None)
    try:
        frames = recognizer.analyze_video_frames(path, sample_fps=config.sample_fps,
                                                 every_n_frames=config.every_n_frames, max_frames=config.max_frames,
                                                 smoother=smoother)
        for result, rgb in frames:
            record = {**result.to_dict(), "source": source, "is_video": True}
            buffered.append(record)
            n_frames += result.error is None
            if config.annotate and rgb is not None:
                writer = writer or VideoWriter(_annotated_path(out, rel, ".mp4"),
                                               fps=config.sample_fps or _sampled_rate(path, config.every_n_frames))
                writer.add(draw_result(rgb, result))
            if len(buffered) >= 64:
                write(buffered)
                buffered = []
    except RecognizerError as exc:  # cannot open: one error line, the job goes on
        buffered.append({**ImageResult(source, 0, 0, error=str(exc)).to_dict(), "is_video": True})
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    write(buffered + [{"source": source, "is_video": True, "video_done": True, "frames_read": n_frames,
                       "seconds": round(seconds, 3), "detector": recognizer.detector_name}])
    log(f"{path}: done, {n_frames} frames at {n_frames / max(seconds, 1e-9):.1f} frames/s")


def _sampled_rate(path: Path, every_n_frames: int) -> float:
    """Frames per second of a video sampled every ``every_n_frames`` frames (25 when it does not say)."""
    return (video_frame_rate(path) or 25.0) / every_n_frames


def write_predictions_csv(records: list[dict], label_names: Sequence[str], path: Path) -> None:
    """Flatten journal records to one row per face (see the module doc), written atomically."""
    import pandas as pd

    rows = [row for r in records if not r.get("video_done") for row in face_rows(r, label_names)]
    frame = pd.DataFrame(rows, columns=prediction_columns(label_names))
    for column in ("face", "track", "frame"):
        frame[column] = frame[column].astype("Int64")
    save_text_atomic(path, frame.to_csv(index=False))


def _overall_rate(markers) -> float | None:
    """Frames read per second over all videos (total frames / total seconds), None without videos."""
    markers = [m for m in markers if m.get("seconds")]
    seconds = sum(m["seconds"] for m in markers)
    return round(sum(m.get("frames_read", 0) for m in markers) / seconds, 2) if seconds > 0 else None


def _video_speed_and_flicker(marker: dict | None, frames: list[dict], label_flicker: Callable) -> dict[str, Any]:
    """A video's frames read per second (from its done marker) and its label flicker, raw and smoothed."""
    rows = [{"track": f.get("track"), "time_s": r.get("time_s"), "label": f["label"],
             "smoothed_label": f.get("smoothed_label")} for r in frames for f in r.get("faces", [])]
    raw = label_flicker(rows)
    smoothed = label_flicker(rows, label_key="smoothed_label")
    out: dict[str, Any] = {"flicker": {"changes_per_s_raw": raw["changes_per_s"],
                                       "changes_per_s_smoothed": smoothed["changes_per_s"] if smoothed["tracks"]
                                       else None, "track_seconds": raw["track_seconds"]}}
    if marker and marker.get("seconds"):
        out.update(frames_per_s=round(marker.get("frames_read", 0) / marker["seconds"], 2),
                   seconds=marker["seconds"], detector=marker.get("detector"))
    return out


def _summarise(records: list[dict], recognizer: Recognizer, n_files: int, seconds: float) -> dict[str, Any]:
    from ferwild.tracking import label_flicker

    results = [r for r in records if not r.get("video_done")]
    done_markers = {r["source"]: r for r in records if r.get("video_done")}
    labels = Counter(f["label"] for r in results for f in r.get("faces", []))
    errors = [{"source": r["source"], "frame": r.get("frame"), "error": r["error"]} for r in results if r.get("error")]
    videos: dict[str, dict] = {}
    for r in results:
        if r.get("is_video") and not r.get("error"):
            v = videos.setdefault(r["source"], {"frames": 0, "frames_with_faces": 0, "labels": Counter(),
                                                "tracks": {}})
            v["frames"] += 1
            v["frames_with_faces"] += bool(r.get("faces"))
            if r.get("faces"):  # the largest face: the subject of the shot
                v["labels"][r["faces"][0]["label"]] += 1
            for face in r.get("faces", []):
                t = v["tracks"].setdefault(face.get("track"), {"frames": 0, "first_s": r.get("time_s"),
                                                               "labels": Counter()})
                t["frames"] += 1
                t["last_s"] = r.get("time_s")
                t["labels"][face["label"]] += 1

    def shares(counts: Counter, total: int) -> dict[str, float]:
        return {k: round(c / max(1, total), 4) for k, c in counts.most_common()}

    per_video = {s: {"frames": v["frames"], "frames_with_faces": v["frames_with_faces"],
                     "label_share": shares(v["labels"], v["frames_with_faces"]),
                     # per person: when they are on screen and how their expression reads over time
                     "tracks": {str(k): {"frames": t["frames"], "first_s": t["first_s"], "last_s": t["last_s"],
                                         "label_share": shares(t["labels"], t["frames"])}
                                for k, t in v["tracks"].items()},
                     **_video_speed_and_flicker(done_markers.get(s), [r for r in results if r["source"] == s],
                                                label_flicker)}
                 for s, v in videos.items()}
    images = [r for r in results if not r.get("is_video")]
    return {"n_files": n_files, "n_images": len(images),
            "n_videos": len({r["source"] for r in results if r.get("is_video")}),
            "n_frames": sum(1 for r in results if r.get("is_video") and not r.get("error")),
            "n_faces": sum(labels.values()),
            "n_without_face": sum(1 for r in results if not r.get("faces") and not r.get("error")),
            "n_errors": len(errors), "labels": dict(labels.most_common()), "videos": per_video,
            "errors": errors[:1000], "seconds_this_session": round(seconds, 3),
            "video_frames_per_s": _overall_rate(done_markers.values()),
            "recognizer": recognizer.info()}
