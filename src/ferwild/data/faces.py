"""Face detection and 5-point alignment for the ``prepare`` step.

Pipeline per image: find faces with MTCNN (facenet-pytorch, its shipped weights, CPU by
default), keep the largest face, estimate the similarity transform that maps its five landmarks
onto a canonical template (ArcFace's 5-point template with an extra margin so the whole face,
brows to chin, stays in the crop) and warp the image with it. Images without a usable face go
through a fallback policy: keep a centre crop ("unaligned") or drop them.

Conventions
-----------
* Images are ``(H, W, 3)`` uint8 RGB numpy arrays (``(H, W)`` / ``(H, W, 1)`` grayscale is
  accepted where noted and replicated to RGB for the detector).
* Point coordinates (boxes, landmarks, template) are pixel coordinates of the image with the
  centre of pixel ``(i, j)`` at ``x=j, y=i`` (the OpenCV / insightface convention the ArcFace
  template is defined in).
* Areas of an aligned crop that fall outside the source image are filled with **black**, as
  insightface's ``norm_crop`` (``cv2.warpAffine``'s default border) does: the model then sees the
  same kind of padding as models trained on ArcFace-style crops, and edge replication would
  smear streaks of hair/background over the border instead.
* Nothing here sets torch's thread count; the caller decides.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DEFAULT_MARGIN",
    "AlignResult",
    "FaceDetection",
    "FaceDetector",
    "align_face",
    "align_faces",
    "center_crop",
    "choose_face",
    "contact_sheet",
    "resize_image",
    "similarity_transform",
    "template_points",
]

#: The standard ArcFace (insightface) 5-point template for 112x112 crops: left eye, right eye,
#: nose tip, left mouth corner, right mouth corner ("left" = the image's left).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: Extra room around the ArcFace template, as a fraction of it (see :func:`template_points`).
#: Tuned on a contact sheet of real photos: at 0.2 the chin touches the bottom edge and open
#: mouths (surprise) lose it; at 0.3 brows-to-chin is always in, with little background.
DEFAULT_MARGIN = 0.3

MODES = ("mtcnn", "landmarks", "none", "auto")
FALLBACKS = ("keep", "drop")

Box = tuple[float, float, float, float]


@dataclass
class FaceDetection:
    """One face found by the detector, in the input image's pixel coordinates.

    ``box`` is ``(x1, y1, x2, y2)`` as MTCNN regresses it (it may extend past the image border);
    ``landmarks`` is ``(5, 2)``: left eye, right eye, nose, left mouth corner, right mouth corner
    (image left/right, as MTCNN gives them).
    """

    box: Box
    landmarks: np.ndarray
    confidence: float


@dataclass
class AlignResult:
    """What happened to one image in :func:`align_faces`.

    ``status`` is ``"aligned"`` | ``"unaligned"`` | ``"dropped"``; ``method`` is ``"mtcnn"``,
    ``"landmarks"``, ``"resize"`` (pre-aligned input, mode ``none``), ``"center"`` (fallback
    centre crop) or ``""`` when dropped. ``reason`` is ``""`` for a normal alignment, otherwise
    why the image was not aligned. ``n_faces`` counts the faces found above the detector's
    ``min_confidence`` (1 when landmarks were given, 0 when no detection ran or none was found);
    ``other_boxes`` holds the boxes of the faces that were not chosen.
    """

    crop: np.ndarray | None
    status: str
    method: str
    reason: str
    box: Box | None
    landmarks: np.ndarray | None
    confidence: float | None
    n_faces: int
    other_boxes: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class FaceAlignment:
    """How a prepared dataset's crops were cut, so that new faces are cut the same way.

    A model only sees faces the way its training data showed them: the same template
    ``margin``, the same crop side (``crop_size``, the cache's side, which the model's
    preprocessing then resizes to its input size) and the same colour (``channels`` 1 for a
    grayscale cache such as FER2013's). ``align_mode`` is the mode the data was prepared with
    (``"none"`` for pre-aligned crops: new photos still need detection and alignment);
    ``min_confidence`` is the detector threshold used then.
    """

    align_mode: str = "auto"
    margin: float = DEFAULT_MARGIN
    crop_size: int = 224
    channels: int = 3
    min_confidence: float = 0.9
    #: For pre-aligned data: where the 5 landmarks sit in its crops, normalised to [0, 1]
    #: (:func:`estimate_template`); None: the ArcFace template with ``margin``.
    template: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.align_mode not in MODES:
            raise ValueError(f"unknown align mode {self.align_mode!r}; expected one of {MODES}")
        if self.margin <= -1:
            raise ValueError(f"margin must be > -1, got {self.margin}")
        if self.crop_size <= 0:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.template is not None:
            points = np.asarray(self.template, dtype=np.float64)
            if points.shape != (5, 2) or not np.isfinite(points).all():
                raise ValueError(f"template must be 5 finite (x, y) points, got shape {points.shape}")
            object.__setattr__(self, "template", tuple((float(x), float(y)) for x, y in points))

    def points(self, size: int | None = None) -> np.ndarray:
        """The ``(5, 2)`` landmark targets for a ``size`` crop (default :attr:`crop_size`)."""
        side = self.crop_size if size is None else size
        if self.template is not None:
            return np.asarray(self.template, dtype=np.float64) * float(side)
        return template_points(side, self.margin)

    def to_dict(self) -> dict:
        return {"align_mode": self.align_mode, "margin": float(self.margin), "crop_size": int(self.crop_size),
                "channels": int(self.channels), "min_confidence": float(self.min_confidence),
                "template": None if self.template is None else [list(p) for p in self.template]}

    @classmethod
    def from_dict(cls, d: dict) -> "FaceAlignment":
        known = {k: d[k] for k in ("align_mode", "margin", "crop_size", "channels", "min_confidence",
                                   "template") if d.get(k) is not None}
        return cls(**known)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def template_points(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Canonical landmark positions for a ``size`` x ``size`` crop, shape ``(5, 2)``.

    The ArcFace 112x112 template is normalised to ``[0, 1]``, shrunk toward the crop centre by
    ``1 / (1 + margin)`` and scaled to ``size``. The bare ArcFace crop (``margin=0``) is cut for
    recognition and clips the forehead and chin; expression models need the brows and the chin
    (AU1/2/4, jaw drop), hence the default margin :data:`DEFAULT_MARGIN` (0.3).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if margin <= -1:
        raise ValueError(f"margin must be > -1, got {margin}")
    unit = ARCFACE_TEMPLATE_112 / 112.0
    return (0.5 + (unit - 0.5) / (1.0 + margin)) * float(size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``.

    Rotation + uniform scale + translation, never a reflection. Returns the ``(2, 3)`` matrix
    ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``. Raises ``ValueError`` for mismatched,
    non-finite or degenerate (all-coincident) points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    n = len(src)
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = float((src_c**2).sum()) / n
    if var_src <= 1e-12:
        raise ValueError("degenerate source points (all coincide)")
    # In 2-D, Umeyama's solution (SVD of the covariance, the weakest axis flipped when the best
    # orthogonal map would be a reflection) is the least-squares fit of A = [[a, -b], [b, a]]:
    # closed form, no SVD (this runs for every face of every video frame, twice).
    x, y, u, v = src_c[:, 0], src_c[:, 1], dst_c[:, 0], dst_c[:, 1]
    a = float((x * u + y * v).sum()) / n / var_src
    b = float((x * v - y * u).sum()) / n / var_src
    m = np.empty((2, 3))
    m[:, :2] = ((a, -b), (b, a))
    m[:, 2] = mu_dst - m[:, :2] @ mu_src
    return m


def as_uint8_image(image: np.ndarray, *, rgb: bool) -> np.ndarray:
    """Validate an image array; with ``rgb`` also turn grayscale into 3-channel RGB."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if rgb:
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {np.shape(image)}")
    elif arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W[, C]) image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image, shape {arr.shape}")
    return np.ascontiguousarray(arr)


def to_channels(crop: np.ndarray, channels: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 crop as ``channels`` (3: unchanged; 1: ``(H, W, 1)`` luma).

    Grey crops keep their exact values; colour ones go through PIL's ITU-R 601 luma, the way
    a grayscale cache (FER2013) is filled and the way new faces are fed to a model trained on it.
    """
    if channels == 3:
        return crop
    if channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 0], crop[..., 2]):
        return np.ascontiguousarray(crop[..., :1])
    return np.asarray(Image.fromarray(crop).convert("L"))[..., None]


def align_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = 224, margin: float = DEFAULT_MARGIN,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``image`` so that its 5 ``landmarks`` land on :func:`template_points`.

    ``template`` (``(5, 2)`` points normalised to ``[0, 1]``, e.g. from
    :func:`estimate_template`) replaces the ArcFace template and ``margin``: new faces are then
    framed like an existing pre-aligned dataset.

    Returns a ``(size, size, 3)`` uint8 crop, bilinear interpolation (PIL affine transform),
    with parts outside the source image filled with black (see the module docstring). When the
    warp shrinks the face by more than 2x, the image is first box-reduced by an integer factor
    so that the bilinear warp does not alias (plain bilinear only looks at 4 source pixels).
    """
    img = as_uint8_image(image, rgb=True)
    lm = _landmarks_array(landmarks)
    dst = template_points(size, margin) if template is None else _landmarks_array(template) * float(size)
    m = similarity_transform(lm, dst)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale <= 1e-6:
        raise ValueError("degenerate alignment transform")

    factor = int(1.0 / scale) if scale < 0.5 else 1  # leaves the remaining bilinear scale in (0.5, 1]
    img, offset = _crop_to_output(img, m, size, factor)
    if offset is not None:  # the same map, from the window's origin: m(x + o) = A x + (A o + t)
        lm = lm - offset
        m = np.concatenate([m[:, :2], (m[:, 2] + m[:, :2] @ offset)[:, None]], axis=1)
    pil = Image.fromarray(img)
    if factor > 1:
        pil = pil.reduce(factor)
        # Reduce maps continuous coordinates by 1/factor; pixel centres sit at index + 0.5.
        m = similarity_transform((lm + 0.5) / factor - 0.5, dst)

    # PIL wants the inverse map (output -> input) in coordinates where pixel centres are at
    # index + 0.5; our points have centres at the index, hence the half-pixel shift.
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    lin, t = inv[:, :2], inv[:, 2]
    t = t + 0.5 - lin @ np.array([0.5, 0.5])
    coeffs = (lin[0, 0], lin[0, 1], t[0], lin[1, 0], lin[1, 1], t[1])
    out = pil.transform(
        (size, size),
        Image.Transform.AFFINE,
        data=tuple(float(c) for c in coeffs),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(out, dtype=np.uint8)


def _crop_to_output(img: np.ndarray, m: np.ndarray, size: int, factor: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The part of ``img`` the ``size`` crop samples from, and its ``(x, y)`` origin (None: all of it).

    Reducing and warping a whole 1280x720 frame for one 48 px face costs milliseconds; its
    neighbourhood is enough. The window is padded by the interpolation's reach and starts on a
    multiple of ``factor``, so that ``Image.reduce`` forms the same pixel blocks as on the whole
    image: the crop is identical to the one cut from the full image.
    """
    h, w = img.shape[:2]
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64) - 0.5
    src = corners @ inv[:, :2].T + inv[:, 2]
    pad = 2 * factor + 2
    x0, y0 = np.floor(src.min(axis=0)) - pad
    x1, y1 = np.ceil(src.max(axis=0)) + pad
    x0, y0 = max(0, int(x0) // factor * factor), max(0, int(y0) // factor * factor)
    x1, y1 = min(w, -(-int(x1) // factor) * factor), min(h, -(-int(y1) // factor) * factor)
    if x1 - x0 <= 0 or y1 - y0 <= 0 or (x0 == 0 and y0 == 0 and x1 == w and y1 == h):
        return img, None
    return np.ascontiguousarray(img[y0:y1, x0:x1]), np.array([x0, y0], dtype=np.float64)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Plain resize of a (pre-aligned) crop to ``(size, size)``, keeping its channel count.

    ``(H, W, 1)`` -> ``(size, size, 1)``, ``(H, W, 3)`` -> ``(size, size, 3)``, ``(H, W)`` ->
    ``(size, size)``. PIL bicubic, which antialiases when shrinking. The aspect ratio is not
    preserved (pre-aligned datasets are square already).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W[, C]) image, got shape {arr.shape}")
    if arr.shape[:2] == (size, size):
        return arr.copy()  # already the right size: resampling would only blur

    def _resize(plane: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.ascontiguousarray(plane))
        return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)

    if arr.ndim == 2:
        return _resize(arr)
    if arr.shape[2] in (3, 4):  # RGB / RGBA: PIL resizes all bands at once
        return _resize(arr)
    # Any other channel count (1, 2, 5+): resize band by band.
    return np.stack([_resize(arr[:, :, c]) for c in range(arr.shape[2])], axis=2)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Largest centred square of ``image``, resized to ``size`` (PIL, antialiased).

    Keeps the channel count like :func:`resize_image`. This is the fallback crop for images
    where no face was found, so that they can still be kept (unaligned).
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W[, C]) image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_image(arr[top : top + side, left : left + side], size)


def choose_face(
    detections: list[FaceDetection],
) -> tuple[FaceDetection | None, list[FaceDetection]]:
    """Pick the face with the largest box; return it and the others (in their input order).

    The detections are expected to be filtered by confidence already. The largest face is the
    subject in portraits and the most reliable to align; on ties the first one wins.
    """
    if not detections:
        return None, []

    def area(d: FaceDetection) -> float:
        x1, y1, x2, y2 = d.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    best = max(range(len(detections)), key=lambda i: (area(detections[i]), -i))
    return detections[best], [d for i, d in enumerate(detections) if i != best]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


class FaceDetector:
    """facenet-pytorch MTCNN (its shipped weights), CPU by default.

    ``min_confidence`` filters MTCNN's final (O-net) score; MTCNN's own stage thresholds
    (0.6, 0.7, 0.7) stay as shipped, so :meth:`detect_all` also returns the candidates between
    0.7 and ``min_confidence``. Images whose longer side exceeds ``max_side`` are downscaled for
    detection (the pyramid cost grows with the pixel count; faces that matter for FER stay well
    above ``min_face_size`` at 640 px), and boxes/landmarks are scaled back to the original
    image. Note that ``min_face_size`` applies to the downscaled image, and MTCNN cannot search
    an image whose shorter side (after the downscale) is below ``min_face_size``: it raises
    (``prepare`` reports it; the recogniser's :class:`~ferwild.detectors.MTCNNDetector` answers
    no face).

    Same-size images are stacked into one MTCNN call when they are small (at most
    ``batch_max_pixels`` pixels each: on CPU that is where batching pays); larger images run
    one by one. Batches hold at most ``max_batch`` images to bound the pyramid's memory.
    """

    #: the detector's name (``--detector mtcnn``, ``Recognizer.detector_name``)
    name = "mtcnn"
    #: Images per MTCNN call at most (the pyramid of a batch lives in memory at once).
    max_batch: int = 128
    #: Same-size images up to this many pixels are batched; larger ones run one at a time.
    #: Measured on 2 CPU cores (torch 2.14, best of 5): 64 FER 48x48 crops 580 -> 1600
    #: images/s batched (2.8x; 2.4x with 1 thread), 96x96 2.8x, 160x160 1.8x, 224x224 1.5x,
    #: 256x256 1.4x, 320x320 1.1x, 400x400 0.9x; photos are break-even (512x512: 37 vs 36
    #: images/s, 640x360: 29 vs 33), not worth a big batch's memory or a whole-batch retry.
    batch_max_pixels: int = 256 * 256

    def __init__(
        self,
        min_confidence: float = 0.9,
        min_face_size: int = 20,
        max_side: int = 640,
        device: str = "cpu",
    ):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (P-net window), got {min_face_size}")
        if max_side < min_face_size:
            raise ValueError(f"max_side must be >= min_face_size, got {max_side}")
        # Imported here so that using the geometry helpers does not pay for facenet's import.
        from facenet_pytorch import MTCNN

        self.min_confidence = float(min_confidence)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.device = device
        # keep_all: we want every face (n_faces, other_boxes) and choose ourselves.
        self._mtcnn = MTCNN(
            keep_all=True, min_face_size=self.min_face_size, select_largest=False, device=device
        )
        self._mtcnn.eval()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """Detect faces in each image; one entry per input, in order.

        An entry is the list of detections with ``confidence >= min_confidence`` (sorted by
        confidence, possibly empty), or the ``Exception`` raised for that image, so that one bad
        image never takes down the others.
        """
        keep = self.min_confidence
        return [
            r if isinstance(r, Exception) else [d for d in r if d.confidence >= keep]
            for r in self.detect_all(images)
        ]

    def detect_all(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """Like :meth:`detect` but without the ``min_confidence`` filter (MTCNN's own only).

        :func:`align_faces` uses it to say *why* an image has no face ("face confidence 0.71 <
        0.90" rather than just "no face found").
        """
        results: list[list[FaceDetection] | Exception | None] = [None] * len(images)
        # (downscaled shape) -> [(index, downscaled image, (sx, sy))]
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray, tuple[float, float]]]]
        groups = defaultdict(list)
        for i, image in enumerate(images):
            try:
                small, scale = self._prepare(image)
            except Exception as exc:  # noqa: BLE001 - reported in the image's slot
                results[i] = exc
                continue
            groups[small.shape[:2]].append((i, small, scale))

        for (h, w), members in groups.items():
            step = self.max_batch if h * w <= self.batch_max_pixels else 1
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                for (i, _, scale), found in zip(chunk, self._run_guarded([m[1] for m in chunk])):
                    results[i] = found if isinstance(found, Exception) else _rescale(found, scale)
        return results  # type: ignore[return-value]

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """RGB-check and downscale one image; return it and the (x, y) factors back."""
        img = as_uint8_image(image, rgb=True)
        h, w = img.shape[:2]
        longest = max(h, w)
        if longest <= self.max_side:
            return img, (1.0, 1.0)
        r = self.max_side / longest
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        # BILINEAR in PIL's resize is area-aware when shrinking (antialiased), and cheap.
        small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
        return small, (w / nw, h / nh)

    def _run_guarded(self, batch: list[np.ndarray]) -> list[list[FaceDetection] | Exception]:
        """Run MTCNN on same-size images; if the batched call raises, retry one by one."""
        try:
            return self._run(batch)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                return [exc]
        out: list[list[FaceDetection] | Exception] = []
        for img in batch:
            try:
                out.extend(self._run([img]))
            except Exception as exc:  # noqa: BLE001 - this image's own failure
                out.append(exc)
        return out

    def _run(self, batch: list[np.ndarray]) -> list[list[FaceDetection]]:
        """One MTCNN call on a stack of equal-size images; detections in batch-image coords."""
        stacked = np.stack(batch)  # 4-D input: MTCNN returns per-image results
        boxes, probs, points = self._mtcnn.detect(stacked, landmarks=True)
        out: list[list[FaceDetection]] = []
        for j in range(len(batch)):
            if boxes[j] is None:
                out.append([])
                continue
            # MTCNN returns ragged object arrays; normalise to float arrays.
            b = np.asarray(boxes[j], dtype=np.float64).reshape(-1, 4)
            p = np.asarray(probs[j], dtype=np.float64).reshape(-1)
            lm = np.asarray(points[j], dtype=np.float64).reshape(-1, 5, 2)
            dets = [
                FaceDetection(box=tuple(float(v) for v in b[k]), landmarks=lm[k].copy(),
                              confidence=float(p[k]))
                for k in range(len(b))
            ]
            dets.sort(key=lambda d: -d.confidence)
            out.append(dets)
        return out


def _rescale(dets: list[FaceDetection], scale: tuple[float, float]) -> list[FaceDetection]:
    """Map detections from the downscaled image back to the original image's coordinates."""
    sx, sy = scale
    if sx == 1.0 and sy == 1.0:
        return dets
    out = []
    for d in dets:
        x1, y1, x2, y2 = d.box
        # Box edges scale as continuous coordinates; landmark points are pixel positions whose
        # centres sit at index + 0.5 in continuous coordinates.
        lm = (d.landmarks + 0.5) * np.array([sx, sy]) - 0.5
        out.append(FaceDetection(box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), landmarks=lm,
                                 confidence=d.confidence))
    return out


@lru_cache(maxsize=1)
def _default_detector() -> FaceDetector:
    """A shared default detector: building MTCNN costs ~0.1-0.5 s, not worth paying per call."""
    return FaceDetector()


# --------------------------------------------------------------------------------------------
# Batch alignment with a fallback policy
# --------------------------------------------------------------------------------------------


def _landmarks_array(value: object) -> np.ndarray:
    """Landmarks as a float (5, 2) array; also takes 10 flat numbers or nested sequences.

    Tables (pandas/Parquet) hand (5, 2) arrays back as object arrays of 2-arrays or as flat
    lists; ``tolist`` unnests both before the float conversion.
    """
    raw = value.tolist() if isinstance(value, np.ndarray) else value
    lm = np.array(raw, dtype=np.float64)
    if lm.size == 10:
        lm = lm.reshape(5, 2)
    if lm.shape != (5, 2):
        # A wrong shape is a caller bug (e.g. 68-point landmarks), not missing data: say so.
        raise ValueError(f"landmarks must be (5, 2), got shape {lm.shape}")
    return lm


def _given_landmarks(value: object) -> np.ndarray | None:
    """The (5, 2) landmarks for one image, or None when missing (None / any NaN)."""
    if value is None:
        return None
    lm = _landmarks_array(value)
    if not np.isfinite(lm).all():
        return None
    return lm


def _fallback(image: np.ndarray, reason: str, fallback: str, size: int, **info) -> AlignResult:
    """Apply the fallback policy to an image that could not be aligned."""
    base = dict(box=None, landmarks=None, confidence=None, n_faces=0, other_boxes=[])
    base.update(info)
    if fallback == "keep":
        try:
            crop = center_crop(as_uint8_image(image, rgb=True), size)
            return AlignResult(crop=crop, status="unaligned", method="center", reason=reason,
                               **base)
        except Exception as exc:  # noqa: BLE001 - an unusable image cannot be kept
            reason = f"{reason}; fallback crop failed: {exc}"
    return AlignResult(crop=None, status="dropped", method="", reason=reason, **base)


def _error_reason(image: np.ndarray, exc: Exception, min_face_size: int | None) -> str:
    """'detector error: ...' with a hint when the image is too small for MTCNN's pyramid."""
    reason = f"detector error: {type(exc).__name__}: {exc}"
    shape = np.shape(image)
    if min_face_size is not None and len(shape) >= 2 and min(shape[:2]) < min_face_size:
        reason += f" (image {shape[0]}x{shape[1]} is smaller than min_face_size {min_face_size})"
    return reason


def _low_confidence_reason(confidence: float, threshold: float) -> str:
    """'face confidence 0.71 < 0.90', with more digits when 2 would print equal numbers."""
    digits = 2 if round(confidence, 2) < round(threshold, 2) else 4
    return f"face confidence {confidence:.{digits}f} < {threshold:.{digits}f}"


def align_faces(
    images: list[np.ndarray],
    mode: str,
    *,
    size: int = 224,
    margin: float = DEFAULT_MARGIN,
    fallback: str = "keep",
    detector: FaceDetector | None = None,
    landmarks: list[np.ndarray | None] | None = None,
    template: np.ndarray | None = None,
) -> list[AlignResult]:
    """Align a list of images; one :class:`AlignResult` per image, in order.

    Modes:
      * ``"mtcnn"``: detect (batched through ``detector``), keep the largest face, align it.
      * ``"landmarks"``: align with the given ``(5, 2)`` ``landmarks`` per image; an image whose
        landmarks are None or contain NaN goes to the fallback ("no landmarks given").
      * ``"none"``: pre-aligned crops, only resized (status ``aligned``, method ``resize``).
      * ``"auto"``: per image, the given landmarks if any, else MTCNN, else the fallback.

    Fallback (no face, detector error, alignment error): ``"keep"`` -> status ``unaligned``,
    method ``center``, centre crop; ``"drop"`` -> status ``dropped``, no crop. ``reason`` says
    why. ``detector`` defaults to a shared :class:`FaceDetector` (built on first use). Unknown
    ``mode``/``fallback`` or landmarks of the wrong length/shape raise ``ValueError``.
    ``template`` (normalised ``(5, 2)`` points) replaces the margin template, see :func:`align_face`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown align mode {mode!r}; expected one of {MODES}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; expected one of {FALLBACKS}")
    n = len(images)
    if landmarks is not None and len(landmarks) != n:
        raise ValueError(f"got {len(landmarks)} landmark entries for {n} images")
    if mode == "landmarks" and landmarks is None:
        raise ValueError("mode 'landmarks' needs landmarks=[...] (one entry per image)")

    results: list[AlignResult | None] = [None] * n

    if mode == "none":
        return [_resized(image, size) for image in images]

    to_detect: list[int] = []
    for i, image in enumerate(images):
        use_given = landmarks is not None and mode in ("landmarks", "auto")
        given = _given_landmarks(landmarks[i]) if use_given else None
        if given is not None:
            try:
                crop = align_face(image, given, size, margin, template=template)
            except Exception as exc:  # noqa: BLE001
                results[i] = _fallback(image, f"alignment error: {exc}", fallback, size,
                                       landmarks=given, n_faces=1)
                continue
            results[i] = AlignResult(crop, "aligned", "landmarks", "", None, given, None, 1, [])
        elif mode == "landmarks":
            results[i] = _fallback(image, "no landmarks given", fallback, size)
        else:
            to_detect.append(i)

    if to_detect:
        detected = _detect_and_align([images[i] for i in to_detect], detector, size=size, margin=margin,
                                     fallback=fallback, template=template)
        for i, result in zip(to_detect, detected):
            results[i] = result
    return results  # type: ignore[return-value]


def _resized(image: np.ndarray, size: int) -> AlignResult:
    """A pre-aligned crop, only resized (mode ``none``); dropped when it cannot be."""
    try:
        crop = resize_image(image, size)
    except Exception as exc:  # noqa: BLE001 - nothing to keep from an unusable image
        return AlignResult(crop=None, status="dropped", method="", reason=f"resize error: {exc}", box=None,
                           landmarks=None, confidence=None, n_faces=0, other_boxes=[])
    return AlignResult(crop=crop, status="aligned", method="resize", reason="", box=None, landmarks=None,
                       confidence=None, n_faces=0, other_boxes=[])


def _detect_and_align(images: list[np.ndarray], detector: FaceDetector | None, *, size: int, margin: float,
                      fallback: str, template: np.ndarray | None) -> list[AlignResult]:
    """MTCNN on ``images`` as one batch, then the largest kept face of each aligned (mode ``mtcnn``)."""
    det = detector if detector is not None else _default_detector()
    threshold = getattr(det, "min_confidence", None)
    min_face = getattr(det, "min_face_size", None)
    # detect_all (when the detector has it) also returns the sub-threshold candidates, so the
    # reason can say "face confidence 0.71 < 0.90" instead of just "no face found".
    if threshold is not None and callable(getattr(det, "detect_all", None)):
        raw = det.detect_all(images)
    else:
        raw, threshold = det.detect(images), None
    results = []
    for image, found in zip(images, raw):
        if isinstance(found, Exception):
            results.append(_fallback(image, _error_reason(image, found, min_face), fallback, size))
            continue
        kept = found if threshold is None else [d for d in found if d.confidence >= threshold]
        best, others = choose_face(kept)
        if best is None:
            # Nothing kept: whatever MTCNN found was below the detector's min_confidence.
            reason = (_low_confidence_reason(max(d.confidence for d in found), threshold) if found
                      else "no face found")
            results.append(_fallback(image, reason, fallback, size))
            continue
        info = dict(box=best.box, landmarks=best.landmarks, confidence=best.confidence,
                    n_faces=len(kept), other_boxes=[d.box for d in others])
        try:
            crop = align_face(image, best.landmarks, size, margin, template=template)
        except Exception as exc:  # noqa: BLE001
            results.append(_fallback(image, f"alignment error: {exc}", fallback, size, **info))
            continue
        results.append(AlignResult(crop, "aligned", "mtcnn", "", **info))
    return results


# --------------------------------------------------------------------------------------------
# Visual check
# --------------------------------------------------------------------------------------------


def estimate_template(crops: Sequence[np.ndarray], detector: FaceDetector | None = None, *,
                      min_faces: int = 10) -> dict | None:
    """Where the 5 landmarks sit in a pre-aligned dataset's crops (FER2013 and the like).

    Pre-aligned crops carry no landmarks, and their framing differs from ours (FER2013's faces
    fill the crop: eyes 38% of its width apart, vs 24% in the ArcFace template at the default
    margin). New photos must be cut the same way before a model trained on such crops sees
    them, so MTCNN is run on a sample of crops (it finds a face in many of the sharper ones)
    and the per-point median of the found landmarks, normalised to ``[0, 1]``, is the template.

    Returns ``{"points": [[x, y] x 5], "n_probed", "n_detected", "spread"}`` (``spread``: the mean
    per-coordinate standard deviation, in crop fractions), or None when fewer than
    ``min_faces`` faces were found (too few to trust).
    """
    detector = detector or _default_detector()
    arrays, sides = [], []
    for crop in crops:
        arr = as_uint8_image(crop, rgb=True)
        # MTCNN's P-net needs faces of >= 20 px: tiny crops are upscaled so their face is found
        # (FER2013's 48 px faces are found as they are: 80% of its sharp crops, in 0.8 s per 300).
        if min(arr.shape[:2]) < 40:
            factor = math.ceil(40 / min(arr.shape[:2]))
            arr = np.asarray(Image.fromarray(arr).resize((arr.shape[1] * factor, arr.shape[0] * factor),
                                                         Image.Resampling.BICUBIC))
        arrays.append(arr)
        sides.append(np.array([arr.shape[1], arr.shape[0]], dtype=np.float64))
    points = []
    for found, side in zip(detector.detect(arrays), sides):
        if isinstance(found, Exception) or not found:
            continue
        best, _ = choose_face(found)
        points.append(best.landmarks / side)
    if len(points) < min_faces:
        return None
    stack = np.stack(points)
    median = np.median(stack, axis=0)
    return {"points": [[round(float(x), 4), round(float(y), 4)] for x, y in median],
            "n_probed": len(arrays), "n_detected": len(points),
            "spread": round(float(stack.std(axis=0).mean()), 4)}


def contact_sheet(
    crops: list[np.ndarray],
    captions: list[str],
    path: str | os.PathLike,
    *,
    cols: int = 8,
    title: str = "",
) -> None:
    """Write a PNG grid of ``crops`` with small ``captions``, to eyeball the alignment.

    Uses matplotlib's Agg canvas directly (no pyplot), so it never touches the global backend
    and works headless. ``None`` crops (dropped images) show as grey tiles.
    """
    from ferwild.plotting import new_figure, save_figure

    if len(crops) != len(captions):
        raise ValueError(f"{len(crops)} crops but {len(captions)} captions")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    n = len(crops)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    head = 0.5 if title else 0.0
    fig = new_figure((1.8 * cols, 2.4 * rows + head), dpi=100)
    if title:
        fig.suptitle(title, fontsize=13)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k >= n:
            continue
        crop = crops[k]
        if crop is None:
            ax.imshow(np.full((8, 8), 0.5), cmap="gray", vmin=0, vmax=1)
        else:
            arr = np.asarray(crop)
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
        # 14 pt at 100 dpi: about 19 px in the PNG, still ~12 px when a report shows the
        # 8-column sheet (1,440 px) in its 900 px column
        ax.set_title("\n".join(textwrap.wrap(str(captions[k]), 16)[:2]), fontsize=14)
    fig.tight_layout()
    save_figure(fig, path)
