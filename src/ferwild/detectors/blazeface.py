"""A fast face detector for video and live use: MediaPipe's BlazeFace (short range) in ONNX Runtime.

MTCNN (:class:`~ferwild.detectors.MTCNNDetector`) costs 30-50 ms on a 640x360 frame on a laptop
CPU, most of a 30 fps frame budget. BlazeFace's short-range model (Bazarevsky et al. 2019,
"BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs") reads a 128x128 letterboxed
frame in ~2.5 ms here, one thread. Its weights ship inside ferwild (``weights/blazeface/``): they
are MediaPipe's ``face_detection_short_range.tflite`` from the ``mediapipe==0.10.14`` wheel
(Apache-2.0), converted once to ONNX (``tools/convert_blazeface.py``, outputs checked against
the TFLite interpreter to 5e-5), so nothing is downloaded and no new runtime is needed:
ferwild already depends on ONNX Runtime. (The mediapipe package itself cannot be a dependency:
it pins ``protobuf<5``, and ``onnx`` needs ``protobuf>=6``.)

The decoding follows MediaPipe's ``face_detection_short_range.pbtxt`` graph exactly: 896 SSD
anchors (strides 8, 16, 16, 16; fixed size), sigmoid scores clipped at +-100, boxes and six
keypoints regressed in 128-pixel units, weighted non-maximum suppression at IoU 0.3, score
threshold 0.5 (ferwild's default for photos; live video's is higher: :data:`VIDEO_MIN_CONFIDENCE`).

**How it frames a face.** BlazeFace gives six keypoints: both eyes, the nose tip, the *centre*
of the mouth and both ear tragions; ferwild's crops are aligned on MTCNN's five points (eyes,
nose, mouth *corners*) mapped onto the ArcFace template or onto a pre-aligned dataset's
estimated template. :data:`KEYPOINTS_IN_TEMPLATE` holds where BlazeFace's eyes, nose and mouth
centre sit, on real photos, in the frame MTCNN's points define; a similarity fit of those four
onto the detected keypoints gives the five points MTCNN would report (:func:`five_points`), so
everything downstream (any margin, any template) frames a BlazeFace face as it framed the
training faces. ``bench/bench_fast_detector.py`` compares faces found and accuracy with MTCNN's
on ``wild_dev``; ``tests/test_blazeface.py`` compares the landmarks on real photos.

The short-range model is made for faces that fill a good part of the frame (selfie and
webcam distance, up to ~2 m): in a 640x360 frame it finds faces from ~40 px wide. Small faces
in a large group photo are MTCNN's job, which stays the default for photos and ``prepare``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np
from PIL import Image

from ferwild.data.faces import ARCFACE_TEMPLATE_112, FaceDetection, as_uint8_image, similarity_transform

__all__ = ["BLAZEFACE_MODEL", "DEFAULT_MIN_CONFIDENCE", "VIDEO_MIN_CONFIDENCE", "KEYPOINTS_IN_TEMPLATE", "MEDIAPIPE_MIN_CONFIDENCE",
           "BlazeFaceDetector", "blazeface_anchors", "five_points", "square_tiles"]

#: The ONNX file inside the package (MediaPipe's short-range BlazeFace, see the module docstring).
BLAZEFACE_MODEL = "face_detection_short_range.onnx"
#: MediaPipe's own score threshold (``face_detection_short_range.pbtxt``): what
#: :meth:`BlazeFaceDetector.detect_all` keeps.
MEDIAPIPE_MIN_CONFIDENCE = 0.5
#: The score thresholds of ``fast`` and ``fast-tiled`` (one score scale), chosen on real data by
#: ``bench/bench_fast_detector_threshold.py`` (figures: ``docs/bench/fast_detector_threshold.json``).
#: One threshold cannot serve both uses:
#:
#: * Photos (``predict --detector fast``): MediaPipe's 0.5. Each photo holds a face to find, and
#:   ``wild_dev``'s small, tight faces score lowest: at 0.5 a face is found in 99.1% of 1,000
#:   sampled photos, at 0.625 in 91.4% (on its 2,091 holdout photos the shipped model then reads
#:   76.5% right against 82.7% at 0.5, no face counted wrong: ``bench/bench_fast_detector.py``,
#:   ``docs/bench/bench_fast_detector_holdout*.json``).
#: * Live video (:data:`VIDEO_MIN_CONFIDENCE`, ``ferwild live`` and the page's Live mode): an empty
#:   scene must stay empty. At 0.5 ``face_videos/no_face.mp4`` reads 6 false faces in 5 of its 95
#:   frames (scores 0.51-0.62; issue 25: "6 faces, 2 people"); 0.625 is the lowest threshold swept
#:   (steps of 0.025) with none there for ``fast``, and the three face videos keep a face in every
#:   frame up to 0.8 (a camera's faces are large and frontal). ``fast-tiled`` looks at each frame
#:   4 times and still reads a false face in 13% of the no-face frames at 0.625 (none from 0.725,
#:   which would cost 27 points of ``wild_dev``'s faces).
DEFAULT_MIN_CONFIDENCE = MEDIAPIPE_MIN_CONFIDENCE
VIDEO_MIN_CONFIDENCE = 0.625

_INPUT = 128  # the model's square input side
_NUM_KEYPOINTS = 6
# keypoint order of MediaPipe's face detection: the subject's right eye (image left in an
# unmirrored photo), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
_RIGHT_EYE, _LEFT_EYE, _NOSE, _MOUTH = 0, 1, 2, 3


def blazeface_anchors() -> np.ndarray:
    """The 896 ``(x_centre, y_centre)`` anchors of the short-range model, normalised to [0, 1].

    MediaPipe's ``SsdAnchorsCalculator`` with the short-range options: layers of strides 8, 16,
    16, 16; layers that share a stride share a grid; two anchors per layer and cell (aspect ratio
    1 and the interpolated scale), fixed anchor size, offset 0.5. That gives 16x16x2 + 8x8x6.
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        side = _INPUT // stride
        ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        centres = np.stack([(xs + 0.5) / side, (ys + 0.5) / side], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


@lru_cache(maxsize=1)
def _model_path() -> str:
    ref = resources.files("ferwild") / "weights" / "blazeface" / BLAZEFACE_MODEL
    path = os.fspath(ref)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the BlazeFace model is missing from the installed package: {path}")
    return path


_UNIT_TEMPLATE = ARCFACE_TEMPLATE_112 / 112.0

#: Where BlazeFace's right eye (image left), left eye, nose tip and mouth centre sit in the ArcFace
#: unit template's frame as MTCNN's five landmarks define it: medians over 1,892 real photos of
#: 852 people (the calibration half of ``wild_dev``'s people), ``tools/calibrate_blazeface.py``.
#: Close to the template (eyes, nose), but BlazeFace's mouth centre sits 0.03 above the mean of
#: MTCNN's mouth corners: using the template itself frames faces ~3% too low.
KEYPOINTS_IN_TEMPLATE = np.array([
    [0.3447, 0.4632],  # right eye (image left); IQR x 0.327-0.369, y 0.445-0.480
    [0.6653, 0.4541],  # left eye (image right); IQR x 0.645-0.680, y 0.437-0.472
    [0.5083, 0.6289],  # nose tip; IQR x 0.481-0.536, y 0.603-0.653
    [0.5115, 0.7930],  # mouth centre; IQR x 0.486-0.536, y 0.761-0.819
])


class BlazeFaceDetector:
    """MediaPipe BlazeFace (short range) in ONNX Runtime; the same interface as
    :class:`~ferwild.detectors.MTCNNDetector` (``detect`` / ``detect_all``, one entry per image:
    a list of :class:`~ferwild.data.faces.FaceDetection` or the exception for that image).

    Landmarks are the five points ferwild aligns on (eyes, nose, mouth corners), the corners
    placed from BlazeFace's mouth centre (module docstring); :attr:`keypoints` of the last call
    are not kept, only the five points.

    Args:
        min_confidence: score threshold (default :data:`DEFAULT_MIN_CONFIDENCE`, chosen on real
            data; MediaPipe's own is 0.5). Scores are not on MTCNN's scale, so the recogniser
            does not hand MTCNN's 0.9 over.
        nms_iou: overlap above which detections are merged (weighted NMS, MediaPipe's 0.3).
        threads: ONNX Runtime intra-op threads (1: a detection is ~2.5 ms, and the other core
            decodes video / classifies).
        tiles: also search overlapping square tiles as tall as the frame (3 in a 16:9 frame, 2
            in a 3:2 photo) and merge: the whole frame is letterboxed into 128 px, so five people
            side by side are ~12 px faces to the model and most are missed; in a tile they are
            1.8x larger. Costs one detection per tile more (``--detector fast-tiled``).
        tile_overlap: how much neighbouring tiles overlap (a face cut by one tile's edge is
            whole in its neighbour when it is narrower than the overlap).
        max_tiles: an image needing more tiles than this (a strip, e.g. 20x2000) is searched
            whole only: its tiles would be too small to hold a face, and each costs a detection.
    """

    #: the detector's name (``--detector``, ``Recognizer.detector_name``): ``"fast-tiled"`` with tiles
    name = "fast"
    #: what ``info()``/docs call the model behind ``--detector fast``
    description = "MediaPipe BlazeFace short-range (mediapipe 0.10.14, Apache-2.0), ONNX Runtime"

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, nms_iou: float = 0.3, threads: int = 1,
                 model_path: str | os.PathLike | None = None, tiles: bool = False, tile_overlap: float = 0.25,
                 max_tiles: int = 6) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        import onnxruntime as ort

        if not 0.0 <= tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap}")
        self.min_confidence = float(min_confidence)
        self.nms_iou = float(nms_iou)
        self.tiles, self.tile_overlap, self.max_tiles = bool(tiles), float(tile_overlap), int(max_tiles)
        if self.tiles:
            self.name = "fast-tiled"
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        self.model_path = os.fspath(model_path) if model_path is not None else _model_path()
        self._session = ort.InferenceSession(self.model_path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._anchors = blazeface_anchors()

    def __repr__(self) -> str:
        return f"BlazeFaceDetector(min_confidence={self.min_confidence}, nms_iou={self.nms_iou})"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """Faces with score >= ``min_confidence`` in each image, best first (see the class)."""
        keep = self.min_confidence
        return [r if isinstance(r, Exception) else [d for d in r if d.confidence >= keep]
                for r in self.detect_all(images)]

    def detect_all(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """Every face MediaPipe's own graph would keep (score >= 0.5, or ``min_confidence`` when lower)."""
        out: list[list[FaceDetection] | Exception] = []
        floor = min(MEDIAPIPE_MIN_CONFIDENCE, self.min_confidence)
        for image in images:
            try:
                out.append(self._detect_one(image, floor))
            except Exception as exc:  # noqa: BLE001 - reported in the image's slot
                out.append(exc)
        return out

    # -- one image ---------------------------------------------------------------------------

    def _letterbox(self, img: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float, float]:
        """The 1x3x128x128 input in [-1, 1], the (x, y) scale and the (x, y) padding in input pixels."""
        h, w = img.shape[:2]
        scale = _INPUT / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pil = Image.fromarray(img)
        factor = int(max(h, w) / _INPUT)
        if factor > 1:  # a box filter first (exact for 640x360 -> 128x72): the resize of a whole frame costs ~1 ms
            pil = pil.reduce(factor)
        small = np.asarray(pil.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
        pad_x, pad_y = (_INPUT - nw) // 2, (_INPUT - nh) // 2
        canvas = np.full((_INPUT, _INPUT, 3), -1.0, dtype=np.float32)
        canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = small / 127.5 - 1.0
        # black padding, -1 in the [-1, 1] tensor: MediaPipe warps the uint8 frame with a zero
        # border first and only then normalises (image_to_tensor_converter_opencv.cc)
        return canvas.transpose(2, 0, 1)[None], (nw / w, nh / h), float(pad_x), float(pad_y)

    def raw_keypoints(self, images: Sequence[np.ndarray]) -> list[list[tuple[np.ndarray, np.ndarray]] | Exception]:
        """BlazeFace's own output per image: ``(box (4,), keypoints (6, 2))`` per face, best first,
        keypoints in ferwild's pixel-centre convention (for calibration and inspection); the
        faces :meth:`detect` returns, merged the same way."""
        out: list[list[tuple[np.ndarray, np.ndarray]] | Exception] = []
        floor = min(MEDIAPIPE_MIN_CONFIDENCE, self.min_confidence)
        for image in images:
            try:
                out.append([(box, kps) for box, kps, score in self._raw(image, floor)
                            if score >= self.min_confidence])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out

    def _raw(self, image: np.ndarray, floor: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
        img = as_uint8_image(image, rgb=True)
        regions = square_tiles(*img.shape[:2], self.tile_overlap) if self.tiles else []
        if len(regions) < 2 or len(regions) > self.max_tiles:  # a long strip: no face is big enough to matter
            return self._raw_one(img, floor)
        # Every pass shrinks its pixels to 128 px: box-reduce the frame once, by the factor the
        # tiles need, and cut the tiles from that (one reduce of a 1280x720 frame instead of four).
        factor = max(1, int(min(img.shape[:2]) / _INPUT))
        small = np.asarray(Image.fromarray(img).reduce(factor)) if factor > 1 else img
        found = self._raw_one(small, floor)
        for x, y, side in square_tiles(*small.shape[:2], self.tile_overlap):
            found += [(box + np.array([x, y, x, y]), kps + np.array([x, y]), score)
                      for box, kps, score in self._raw_one(small[y:y + side, x:x + side], floor)]
        if not found:
            return []
        # reduced -> full coordinates: edges scale; landmark pixel centres sit at index + 0.5
        found = [(box * factor, (kps + 0.5) * factor - 0.5, score) for box, kps, score in found]
        merged = _weighted_nms(np.stack([f[0] for f in found]), np.stack([f[1] for f in found]),
                               np.array([f[2] for f in found]), self.nms_iou)
        return sorted(merged, key=lambda d: -d[2])

    def _raw_one(self, img: np.ndarray, floor: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
        tensor, (sx, sy), pad_x, pad_y = self._letterbox(img)
        regressors, scores = self._session.run(None, {self._input: np.ascontiguousarray(tensor)})
        raw = regressors[0].astype(np.float64)
        logits = np.clip(scores[0, :, 0].astype(np.float64), -100.0, 100.0)
        prob = 1.0 / (1.0 + np.exp(-logits))
        keep = np.flatnonzero(prob >= floor)
        if keep.size == 0:
            return []
        anchors = self._anchors[keep].astype(np.float64) * _INPUT  # in input pixels
        reg = raw[keep]
        cx, cy = reg[:, 0] + anchors[:, 0], reg[:, 1] + anchors[:, 1]
        bw, bh = reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = reg[:, 4:4 + 2 * _NUM_KEYPOINTS].reshape(-1, _NUM_KEYPOINTS, 2) + anchors[:, None, :]
        out = []
        for box, points, score in sorted(_weighted_nms(boxes, kps, prob[keep], self.nms_iou), key=lambda d: -d[2]):
            # input pixels -> image pixels (undo the padding, then the scale); landmarks then move
            # from continuous coordinates to ferwild's pixel-centre convention
            box = (box - np.array([pad_x, pad_y, pad_x, pad_y])) / np.array([sx, sy, sx, sy])
            points = (points - np.array([pad_x, pad_y])) / np.array([sx, sy]) - 0.5
            out.append((box, points, score))
        return out

    def _detect_one(self, image: np.ndarray, floor: float) -> list[FaceDetection]:
        return [FaceDetection(box=tuple(float(v) for v in box), landmarks=five_points(kps), confidence=float(score))
                for box, kps, score in self._raw(image, floor)]


def square_tiles(height: int, width: int, overlap: float = 0.25) -> list[tuple[int, int, int]]:
    """``(x, y, side)`` of the overlapping squares, as tall as the image's shorter side, that
    cover it (one square for a square image)."""
    side = int(min(height, width))

    def starts(n: int) -> list[int]:
        if n <= side:
            return [0]
        k = int(np.ceil((n - side) / (side * (1.0 - overlap)))) + 1
        return [round(i * (n - side) / (k - 1)) for i in range(k)]

    return [(x, y, side) for y in starts(height) for x in starts(width)]


def five_points(keypoints: np.ndarray) -> np.ndarray:
    """The five landmarks MTCNN would give (eyes, nose, mouth corners; image left first) for a
    face whose BlazeFace keypoints are ``keypoints`` (``(6, 2)`` or ``(4, 2)``).

    The similarity transform that best maps :data:`KEYPOINTS_IN_TEMPLATE` (where BlazeFace's
    eyes, nose tip and mouth centre sit, on real photos, in the frame MTCNN's landmarks define)
    onto the detected keypoints carries the ArcFace template's five points into the image.
    """
    m = similarity_transform(KEYPOINTS_IN_TEMPLATE, np.asarray(keypoints, dtype=np.float64)[:4])
    return _UNIT_TEMPLATE @ m[:, :2].T + m[:, 2]


def _iou_matrix(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                  iou: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (IoU > ``iou`` with its best
    box) becomes one detection whose box and keypoints are the score-weighted mean of the
    cluster, with the best score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        cluster = np.flatnonzero(alive & (_iou_matrix(boxes[i], boxes) > iou))
        cluster = np.union1d(cluster, [i])
        weights = scores[cluster] / scores[cluster].sum()
        out.append(((boxes[cluster] * weights[:, None]).sum(0), (kps[cluster] * weights[:, None, None]).sum(0),
                    float(scores[i])))
        alive[cluster] = False
    return out
