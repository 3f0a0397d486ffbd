"""Recognise expressions in photos and videos with a trained run or its ONNX export.

:class:`Recognizer` is the one inference facade that ``ferwild predict``, ``ferwild serve`` and
user code share. It cuts each face the way the model's training data was cut (the checkpoint's
:class:`~ferwild.data.faces.FaceAlignment`: MTCNN landmarks -> the same template margin and
crop side, grayscale when the training cache was grey), applies the model's own preprocessing
(input size, mean/std), and returns one :class:`ImageResult` per image with a :class:`Face` per
detected face::

    from ferwild.recognizer import Recognizer
    rec = Recognizer.default()                       # the default shipped model (MODEL_CARD.md)
    rec = Recognizer.from_run("runs/vit")            # or a run, or Recognizer.from_onnx("model.onnx")
    for result in rec.analyze(["group.jpg", "selfie.png"]):
        for face in result.faces:
            print(result.source, face.box, face.label, round(face.confidence, 2))
    for frame in rec.analyze_video("clip.mp4", sample_fps=5):
        ...

One bad image never raises: its result carries ``error`` and the others go on. Videos are
decoded by :mod:`ferwild.video_io`, their faces tracked and smoothed by
:class:`~ferwild.tracking.VideoTracker`; results are drawn by :mod:`ferwild.drawing`.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ferwild.backends import Classifier, OnnxClassifier, TorchClassifier
from ferwild.data.faces import FaceAlignment, FaceDetection, align_face, resize_image, to_channels
from ferwild.data.images import ImageRejected, load_image, pil_to_rgb
from ferwild.detectors import DETECTORS, create_detector  # noqa: F401 - DETECTORS re-exported
from ferwild.formatting import first_line
from ferwild.preprocessing import Preprocessing
from ferwild.tracking import UNCERTAIN, ExpressionSmoother, FaceTracker, VideoTracker, box_area, face_descriptor
from ferwild.video_io import VideoError, iter_video_frames, prefetch

ImageLike = str | os.PathLike | np.ndarray | Image.Image

#: File suffixes ``ferwild predict`` treats as videos (decoded with PyAV/FFmpeg).
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"})
#: File suffixes treated as still images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class RecognizerError(ValueError):
    """A recogniser that cannot be built or a video that cannot be opened (one clear line)."""


@dataclass
class Face:
    """One face in an image: where it is and what the model reads on it.

    ``box`` is ``(x1, y1, x2, y2)`` in the image's pixels (MTCNN's box clipped to the image;
    the whole image for ``detector="none"``); ``landmarks`` the 5 MTCNN points (eyes, nose,
    mouth corners) or None; ``probabilities`` maps every class of the model to its probability;
    ``label``/``confidence`` are the top class and its probability (``label`` is
    :data:`UNCERTAIN` when the recogniser abstains below its ``abstain_below`` confidence; the
    probabilities are kept); ``method`` says how the
    crop was cut (``"mtcnn"``, ``"fast"`` or ``"fast-tiled"``: aligned on the detector's landmarks,
    ``"whole-image"``); ``track`` numbers the person across the frames of a video
    (:class:`~ferwild.tracking.FaceTracker`), None for still images; ``smoothed`` /
    ``smoothed_label`` are the track's reading smoothed over time
    (:class:`~ferwild.tracking.ExpressionSmoother`), None when not smoothed. ``descriptor`` (the
    face's look, for re-identification in one video) is not written out.
    """

    box: tuple[float, float, float, float]
    landmarks: list[list[float]] | None
    detection_confidence: float | None
    label: str
    confidence: float
    probabilities: dict[str, float]
    method: str
    track: int | None = None
    smoothed: dict[str, float] | None = None
    smoothed_label: str | None = None
    descriptor: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain floats, rounded to 6 digits)."""
        return {"box": [round(float(v), 2) for v in self.box],
                "landmarks": self.landmarks,
                "detection_confidence": None if self.detection_confidence is None
                else round(float(self.detection_confidence), 6),
                "label": self.label, "confidence": round(float(self.confidence), 6),
                "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
                "method": self.method, "track": self.track,
                **({} if self.smoothed is None else {
                    "smoothed_label": self.smoothed_label,
                    "smoothed": {k: round(float(v), 6) for k, v in self.smoothed.items()}})}


@dataclass
class ImageResult:
    """What the recogniser found in one image or video frame.

    ``faces`` is sorted by box area, largest first (empty when no face was found, which is not
    an error); ``error`` is a short reason when the image could not be used (then ``faces`` is
    empty and ``width``/``height`` are 0); ``frame``/``time_s`` are set for video frames.
    """

    source: str
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    frame: int | None = None
    time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"source": self.source, "width": self.width, "height": self.height,
                "frame": self.frame, "time_s": None if self.time_s is None else round(float(self.time_s), 4),
                "error": self.error, "n_faces": len(self.faces), "faces": [f.to_dict() for f in self.faces]}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """An in-memory image as ``(H, W, 3)`` uint8 RGB (alpha composited on white, as prepare does)."""
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)  # the same conversion as a file read by prepare
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image, shape {arr.shape}")
    return np.ascontiguousarray(arr)


class Recognizer:
    """Detect, align and classify faces with any :class:`~ferwild.backends.Classifier`.

    Build it with :meth:`from_run` (PyTorch checkpoint) or :meth:`from_onnx` (an ONNX file from
    ``ferwild export``); both read the label names, preprocessing and face alignment that travel
    with the model, so nothing is re-derived from constants.

    Args:
        classifier: maps normalised ``(N, 3, S, S)`` float32 pixels to ``(N, K)`` logits; its
            ``backend`` names it in :meth:`info` (:class:`~ferwild.backends.TorchClassifier`,
            :class:`~ferwild.backends.OnnxClassifier`).
        label_names: the K class names, in logit order.
        preprocessing: the model's :class:`~ferwild.preprocessing.Preprocessing` (input size, mean, std).
        face_alignment: how the training faces were cut (margin, crop side, channels, threshold).
        detector: ``"mtcnn"`` (faces are detected and aligned on their landmarks), ``"fast"``
            (MediaPipe BlazeFace short-range, a few ms a frame: video and live, faces from ~40 px in
            a 640 px frame; :mod:`ferwild.detectors.blazeface` says how it frames faces), ``"none"``
            (each image already is one face crop: it is only resized, as prepare does for
            pre-aligned data) or a detector object (:class:`~ferwild.detectors.MTCNNDetector`,
            :class:`~ferwild.detectors.BlazeFaceDetector` or any object with ``detect``); names
            are built by :func:`ferwild.detectors.create_detector`.
        min_confidence: face threshold (MTCNN default: the one the training data was prepared
            with; the fast detector's own scale defaults to
            :data:`~ferwild.detectors.blazeface.DEFAULT_MIN_CONFIDENCE`).
        max_faces: keep at most this many faces per image, the largest first (None: all).
        batch_size: faces per classifier call.
        detector_device: where MTCNN runs (``from_run`` puts it beside the model, e.g. ``cuda``).
    """

    def __init__(self, classifier: Classifier, *, label_names: Sequence[str],
                 preprocessing: Preprocessing, face_alignment: FaceAlignment, detector: str | Any = "mtcnn",
                 min_confidence: float | None = None, max_faces: int | None = None, batch_size: int = 64,
                 source: str = "", model_config: dict | None = None,
                 detector_device: str = "cpu", description: str = "",
                 abstain_below: float | None = None) -> None:
        if max_faces is not None and max_faces < 1:
            raise RecognizerError(f"max_faces must be >= 1, got {max_faces}")
        if batch_size < 1:
            raise RecognizerError(f"batch_size must be >= 1, got {batch_size}")
        if not label_names:
            raise RecognizerError("the model has no label names")
        if abstain_below is not None and not 0.0 <= float(abstain_below) <= 1.0:
            raise RecognizerError(f"abstain_below must be a probability in [0, 1], got {abstain_below}")
        if not isinstance(classifier, Classifier):
            raise RecognizerError(f"{type(classifier).__name__} is not a classifier: it needs a backend name and "
                                  "a call from pixel_values to logits (ferwild.backends.Classifier)")
        self.classifier = classifier
        self.label_names = list(label_names)
        self.preprocessing = preprocessing
        self.face_alignment = face_alignment
        self.max_faces = max_faces
        # below this top-class probability a face is labelled UNCERTAIN (None: never abstain)
        self.abstain_below = None if abstain_below is None else float(abstain_below)
        self.batch_size = int(batch_size)
        self.backend = classifier.backend
        self.source = source
        self.description = description
        self.model_config = dict(model_config or {})
        self.detector_device = detector_device
        self.detector: Any = self._build_detector(detector, min_confidence)

    # ---------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, which: str = "best", device: str = "auto",
                 **kwargs: Any) -> "Recognizer":
        """A recogniser over a ``ferwild train`` run's ``best`` (or ``last``) checkpoint.

        Runs trained before checkpoints carried their face alignment fall back to the prepared
        dataset named in the run's config, then to the defaults. Keyword arguments go to
        :class:`Recognizer` (``detector``, ``min_confidence``, ``max_faces``, ``batch_size``).

        Raises:
            RecognizerError: not a run, unreadable checkpoint, bad arguments.
        """
        from ferwild.runs import RunError, load_run, resolve_device, resolve_run_dir, training_face_alignment
        from ferwild.shipped import describe_run

        try:
            dev = resolve_device(device)
            model, state = load_run(run_dir, which, dev)
            kwargs.setdefault("description", describe_run(resolve_run_dir(run_dir), state))
        except (RunError, ValueError) as exc:
            raise RecognizerError(str(exc)) from None
        alignment, _ = training_face_alignment(state)
        kwargs.setdefault("detector_device", str(dev))
        return cls(TorchClassifier(model, dev), label_names=state["label_names"],
                   preprocessing=model.preprocessing, face_alignment=alignment,
                   source=str(run_dir), model_config=model.config(), **kwargs)

    @classmethod
    def default(cls, **kwargs: Any) -> "Recognizer":
        """The default model shipped inside the package (``ferwild:ferplus_vgg``, see MODEL_CARD.md):
        FER2013's seven expressions, read from grey faces framed like FER2013's crops. Offline,
        nothing downloaded. Keyword arguments as for :meth:`from_run`."""
        from ferwild.shipped import default_run

        return cls.from_run(default_run(), **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, providers: Sequence[str] | None = None,
                  intra_op_threads: int | None = None, **kwargs: Any) -> "Recognizer":
        """A recogniser over an ONNX file written by ``ferwild export`` (ONNX Runtime, no PyTorch
        model code involved); label names, preprocessing and alignment come from its metadata.
        With ``detector="none"`` (crops in) nothing here imports torch; MTCNN itself needs it."""
        try:
            onnx_model = OnnxClassifier(path, providers=providers, intra_op_threads=intra_op_threads)
        except (OSError, ValueError) as exc:
            raise RecognizerError(str(exc)) from None
        return cls(onnx_model, label_names=onnx_model.label_names, preprocessing=onnx_model.preprocessing,
                   face_alignment=FaceAlignment.from_dict(onnx_model.face_alignment or {}),
                   source=str(path), model_config=onnx_model.model_config,
                   description=str(onnx_model.metadata.get("description") or ""), **kwargs)

    def with_detector(self, detector: str | Any, *, min_confidence: float | None = None) -> "Recognizer":
        """The same model (shared, not copied) behind another detector, e.g. ``"fast"`` for live video.

        Every other setting is carried over as it is (a shallow copy), so a setting added to
        the constructor cannot be dropped here."""
        other = copy.copy(self)
        other.detector = self._build_detector(detector, min_confidence)
        return other

    def _build_detector(self, detector: str | Any, min_confidence: float | None) -> Any:
        """A detector from a name (``DETECTORS``, :func:`~ferwild.detectors.create_detector`) or an
        object with ``detect`` (kept as is)."""
        if not isinstance(detector, str) and callable(getattr(detector, "detect", None)):
            return detector
        if detector == "mtcnn" and min_confidence is None:
            # MTCNN's scores are the training data's scale: read faces at the threshold it was prepared with
            min_confidence = self.face_alignment.min_confidence
        try:
            return create_detector(detector, min_confidence=min_confidence, device=self.detector_device)
        except ValueError as exc:
            raise RecognizerError(str(exc)) from None

    @property
    def detector_name(self) -> str:
        """``"mtcnn"``, ``"fast"``, ``"fast-tiled"`` or ``"none"``: the detector's ``name`` (a custom
        detector without one: its class name)."""
        if self.detector is None:
            return "none"
        return str(getattr(self.detector, "name", type(self.detector).__name__))

    def info(self) -> dict[str, Any]:
        """What this recogniser is (backend, model, labels, preprocessing, alignment), JSON-ready."""
        return {"backend": self.backend, "source": self.source, "description": self.description,
                "model": self.model_config.get("name", ""), "label_names": list(self.label_names),
                "preprocessing": self.preprocessing.to_dict(), "face_alignment": self.face_alignment.to_dict(),
                "detector": self.detector_name,
                "min_confidence": None if self.detector is None else self.detector.min_confidence,
                "max_faces": self.max_faces, "abstain_below": self.abstain_below}

    # ---------------------------------------------------------------------------------------
    # classification of aligned crops
    # ---------------------------------------------------------------------------------------

    def classify(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` of aligned face crops.

        ``crops`` is a list or an ``(N, S, S, C)`` batch of uint8 ``(S, S, 3)`` or ``(S, S, 1)``
        crops, or one such crop alone, at the alignment's crop side
        (other sides are resized); they are converted to the training cache's channels, then
        scaled, normalised and resized to the model's input as in training and evaluation
        (:meth:`~ferwild.preprocessing.Preprocessing.pixel_values`, numpy: the same numbers as
        ``BatchTransform`` to float32 rounding, and no torch for an ONNX model).
        """
        if isinstance(crops, np.ndarray) and crops.ndim != 4:
            # one array is one crop, (S, S) or (S, S, 1|3): iterating it would read its rows as crops
            if crops.ndim == 2 or (crops.ndim == 3 and crops.shape[2] in (1, 3)):
                crops = crops[None]
            else:
                raise RecognizerError(f"classify takes one crop (S, S), (S, S, 1) or (S, S, 3), a batch "
                                      f"(N, S, S, 1|3) or a list of crops; got an array of shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        side, channels = self.face_alignment.crop_size, self.face_alignment.channels
        batch = []
        for crop in crops:
            arr = to_rgb_array(crop)
            if arr.shape[:2] != (side, side):
                arr = resize_image(arr, side)
            batch.append(to_channels(arr, channels))
        out = []
        for start in range(0, len(batch), self.batch_size):
            pixel_values = self.preprocessing.pixel_values(np.stack(batch[start:start + self.batch_size]))
            logits = np.asarray(self.classifier(pixel_values), dtype=np.float64)
            if not np.isfinite(logits).all():
                raise RecognizerError("the model returned non-finite logits")
            out.append(_softmax(logits).astype(np.float32))
        return np.concatenate(out)

    def label_of(self, probabilities: np.ndarray) -> str:
        """The label a face gets: its top class, or :data:`UNCERTAIN` when that class's
        probability is under ``abstain_below``."""
        k = int(np.argmax(probabilities))
        if self.abstain_below is not None and float(probabilities[k]) < self.abstain_below:
            return UNCERTAIN
        return self.label_names[k]

    # ---------------------------------------------------------------------------------------
    # images
    # ---------------------------------------------------------------------------------------

    def analyze(self, images: Sequence[ImageLike], *, sources: Sequence[str] | None = None) -> list[ImageResult]:
        """Detect, align and classify every face of each image; one :class:`ImageResult` per image.

        Images may be paths (decoded like ``ferwild prepare`` does: EXIF rotation, alpha on
        white, 16-bit, ...), ``(H, W[, 3])`` uint8 arrays or PIL images. ``sources`` names them
        in the results (default: the path, or ``"image-<i>"``). An image that cannot be read or
        processed gets ``error`` set; the others are unaffected.
        """
        if sources is not None and len(sources) != len(images):
            raise RecognizerError(f"got {len(sources)} sources for {len(images)} images")
        names = [str(sources[i]) if sources is not None else
                 (os.fspath(im) if isinstance(im, (str, os.PathLike)) else f"image-{i}")
                 for i, im in enumerate(images)]
        results: list[ImageResult] = [ImageResult(name, 0, 0) for name in names]
        arrays: dict[int, np.ndarray] = {}
        for i, image in enumerate(images):
            try:
                if isinstance(image, (str, os.PathLike)):
                    arrays[i] = load_image(image).array
                else:
                    arrays[i] = to_rgb_array(image)
            except ImageRejected as exc:
                results[i].error = exc.reason
            except Exception as exc:  # noqa: BLE001 - one bad input is reported, never fatal
                results[i].error = first_line(exc)
        for i, arr in arrays.items():
            results[i].height, results[i].width = int(arr.shape[0]), int(arr.shape[1])
        self._fill(results, arrays)
        return results

    def analyze_image(self, image: ImageLike, *, source: str | None = None) -> ImageResult:
        """:meth:`analyze` for one image."""
        return self.analyze([image], sources=None if source is None else [source])[0]

    def analyze_detected(self, image: np.ndarray, detections: list[FaceDetection] | Exception, *,
                         source: str = "frame") -> ImageResult:
        """Align and classify the faces ``detections`` found in ``image`` (an RGB array), e.g. when
        detection ran in another thread (``ferwild live`` detects in its decoding thread; aligning
        there too was measured slower: 84 vs 104 frames/s, the two threads then share the GIL more)."""
        arr = to_rgb_array(image)
        result = ImageResult(source, int(arr.shape[1]), int(arr.shape[0]))
        self._fill([result], {0: arr}, found=[detections])
        return result

    def _fill(self, results: list[ImageResult], arrays: dict[int, np.ndarray],
              found: list[list[FaceDetection] | Exception] | None = None) -> None:
        """Detect faces in ``arrays`` (index -> RGB image; ``found``: detections already made),
        classify them, fill ``results``."""
        order = list(arrays)
        crops: list[np.ndarray] = []
        descriptors: list[np.ndarray | None] = []
        owners: list[tuple[int, tuple[float, float, float, float], FaceDetection | None]] = []
        if self.detector is None:
            for i in order:
                arr = arrays[i]
                try:
                    crops.append(resize_image(arr, self.face_alignment.crop_size))
                except Exception as exc:  # noqa: BLE001
                    results[i].error = first_line(exc)
                    continue
                descriptors.append(None)
                owners.append((i, (0.0, 0.0, float(arr.shape[1]), float(arr.shape[0])), None))
        else:
            if found is None:
                found = self.detector.detect([arrays[i] for i in order])
            for i, dets in zip(order, found):
                if isinstance(dets, Exception):
                    results[i].error = f"face detection failed: {first_line(dets)}"
                    continue
                arr = arrays[i]
                h, w = arr.shape[:2]
                dets = sorted(dets, key=lambda d: -box_area(d.box))
                if self.max_faces is not None:
                    dets = dets[: self.max_faces]
                for det in dets:
                    try:
                        crop = align_face(arr, det.landmarks, self.face_alignment.crop_size,
                                          self.face_alignment.margin, template=self.face_alignment.template)
                    except Exception:  # noqa: BLE001 - degenerate landmarks: this face is skipped
                        continue
                    crops.append(crop)
                    descriptors.append(face_descriptor(crop))
                    x1, y1, x2, y2 = det.box
                    owners.append((i, (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)), det))
        if not crops:
            return
        method = self.detector_name
        try:
            probs = self.classify(crops)
        except Exception as exc:  # noqa: BLE001 - the batch fails as a whole: say so per image
            for i, _, _ in owners:
                results[i].error = f"classification failed: {first_line(exc)}"
            return
        for (i, box, det), p, descriptor in zip(owners, probs, descriptors):
            k = int(np.argmax(p))
            results[i].faces.append(Face(
                box=box,
                landmarks=None if det is None else [[round(float(x), 2), round(float(y), 2)] for x, y in det.landmarks],
                detection_confidence=None if det is None else float(det.confidence),
                label=self.label_of(p), confidence=float(p[k]),
                probabilities={name: float(v) for name, v in zip(self.label_names, p)},
                method="whole-image" if det is None else method, descriptor=descriptor))

    # ---------------------------------------------------------------------------------------
    # videos
    # ---------------------------------------------------------------------------------------

    def analyze_video(self, path: str | os.PathLike, **options: Any) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per sampled frame of a video (``frame``, ``time_s`` set).

        The options are :meth:`analyze_video_frames`'s (``sample_fps``, ``every_n_frames``,
        ``max_frames``, ``frames_per_batch``, ``tracker``).
        """
        for result, _ in self.analyze_video_frames(path, **options):
            yield result

    def analyze_video_frames(self, path: str | os.PathLike, *, sample_fps: float | None = None,
                             every_n_frames: int = 1, max_frames: int | None = None, frames_per_batch: int = 16,
                             tracker: FaceTracker | None = None, smoother: ExpressionSmoother | None = None,
                             ) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        """Yield ``(result, frame RGB array)`` per sampled frame of a video (the array is None for
        the error result of a stream that broke), e.g. to draw the results on the frames.

        Faces carry a ``track`` number per person across frames (``tracker``, default a
        :class:`FaceTracker` that keeps a person through a second's occlusion and recognises
        them by look when they come back within 10 s); with ``smoother`` (an
        :class:`~ferwild.tracking.ExpressionSmoother`) also a smoothed reading.

        Frames are decoded in a thread of their own, a few frames ahead of the model.

        Frames are sampled every ``every_n_frames`` decoded frames, or at about ``sample_fps``
        frames per second of video time when given (by presentation timestamps, so variable
        frame rates are handled). Frames are detected and classified in batches of
        ``frames_per_batch``. A stream that breaks part-way ends with one result whose ``error``
        says where it broke; the frames before it are kept.

        Raises:
            RecognizerError: the file cannot be opened or has no video stream.
        """
        if every_n_frames < 1:
            raise RecognizerError(f"every_n_frames must be >= 1, got {every_n_frames}")
        if sample_fps is not None and not sample_fps > 0:
            raise RecognizerError(f"sample_fps must be > 0, got {sample_fps}")
        name = os.fspath(path)
        pending: list[tuple[int, float | None, np.ndarray]] = []
        tracking = VideoTracker(tracker, smoother)

        def flush() -> list[tuple[ImageResult, np.ndarray | None]]:
            results = [ImageResult(name, int(a.shape[1]), int(a.shape[0]), frame=f, time_s=t) for f, t, a in pending]
            self._fill(results, {j: a for j, (_, _, a) in enumerate(pending)})
            out = [(tracking.update(r), a) for r, (_, _, a) in zip(results, pending)]
            pending.clear()
            return out

        frames = prefetch(iter_video_frames(path))
        next_time = 0.0
        kept = 0
        while True:
            try:
                item = next(frames)
            except StopIteration:
                break
            except VideoError as exc:  # cannot be opened at all: the caller's error, not a frame's
                raise RecognizerError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - keep what was decoded, say where it broke
                yield from flush()
                yield ImageResult(name, 0, 0, error=f"video decoding stopped: {first_line(exc)}"), None
                return
            index, time_s, rgb = item
            if sample_fps is not None and time_s is not None:
                if time_s + 1e-9 < next_time:
                    continue
                next_time = (math.floor(time_s * sample_fps + 1e-9) + 1) / sample_fps
            elif index % every_n_frames:
                continue
            pending.append((index, time_s, rgb))
            kept += 1
            if len(pending) >= frames_per_batch:
                yield from flush()
            if max_frames is not None and kept >= max_frames:
                break
        frames.close()
        yield from flush()


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image and video files.

    Files given by name are kept whatever their suffix (a bad one is reported when read);
    inside folders only known image/video suffixes are taken.

    Raises:
        RecognizerError: a path that does not exist, or no input at all.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()
                              and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise RecognizerError(f"{p}: no such file or folder")
    if not out:
        raise RecognizerError("no image or video files found in " + ", ".join(map(str, paths)))
    return out


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``ferwild predict`` decodes this file as a video (by suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
