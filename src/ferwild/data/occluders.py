"""Occluders placed by a face's five landmarks: sunglasses, a mask, a hand, half a face, patches.

One geometry for two uses: ``ferwild occlusion`` draws them on real photos to measure what
occlusion costs a model (:mod:`ferwild.audit.occlusion`), and training can draw them on its
aligned crops (``data.augment_options.occlude_p``, :func:`template_masks`) so that a model learns
to read a face with part of it hidden. Occluders live in the face's own frame: the eye line is the
x axis, the unit is the eye distance, y runs down the face, so they follow roll and scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["OCCLUDERS", "PATCH_SIDES", "CONTROL", "TRAINING_OCCLUDERS", "FacePoints", "occluder_polygon",
           "occluder_fill", "polygon_mask", "skin_band", "occlude", "probe_names", "template_masks"]

#: Fixed occluders (name -> what it stands for). Random patches are added as ``patch_<side>``.
OCCLUDERS = {
    "eyes": "an opaque band over both eyes (sunglasses)",
    "mouth": "mouth, chin and lower cheeks covered (a face mask)",
    "half": "the half of the face on the photo's left (a profile, hair, a raised arm)",
    "hand": "a skin-toned patch over the mouth and chin (a hand)",
}
#: Sides of the random grey squares, in eye distances (the eye distance is ~40% of a face's width).
PATCH_SIDES = (0.5, 1.0, 1.5, 2.0)
#: The control: the mask occluder moved outside the part of the photo the crop is cut from.
CONTROL = "outside"
#: Fill values (grey levels): sunglasses dark, a surgical mask light, patches mid grey.
_DARK, _LIGHT, _GREY = 20, 215, 128


@dataclass
class FacePoints:
    """The five landmarks of one face (left eye, right eye, nose, left and right mouth corner, as
    seen on the photo) in the pixel coordinates of the image they belong to."""

    points: np.ndarray  # (5, 2)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Origin (eye centre), x axis (along the eyes), y axis (down the face), unit (eye distance)."""
        left, right = self.points[0], self.points[1]
        d = max(self.eye_distance, 1e-6)
        x = (right - left) / d
        y = np.array([-x[1], x[0]])
        if y[1] < 0:  # "down the face" points down the image for any upright-ish face
            y = -y
        return (left + right) / 2, x, y, d

    def to_face(self, p: np.ndarray) -> np.ndarray:
        o, x, y, d = self.frame()
        rel = (np.asarray(p, dtype=np.float64) - o) / d
        return np.stack([rel @ x, rel @ y], axis=-1)

    def to_image(self, q: np.ndarray) -> np.ndarray:
        o, x, y, d = self.frame()
        q = np.asarray(q, dtype=np.float64)
        return o + d * (q[..., :1] * x + q[..., 1:] * y)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def occluder_polygon(name: str, face: FacePoints, rng: np.random.Generator | None = None) -> np.ndarray:
    """The occluder ``name`` as a polygon in the photo's pixel coordinates.

    Face-frame geometry (units of the eye distance, origin between the eyes, y down the face):
    the eye band spans x in [-1, 1] and y in [-0.35, 0.35]; the mask runs from halfway between
    nose and mouth to 0.9 below the mouth; the half covers everything left of the nose; the hand
    is an ellipse 1.4 x 1.0 over the mouth; ``patch_<s>`` is an ``s`` x ``s`` square centred at a
    random point of the face (x in [-0.8, 0.8], y in [-0.4, 1.4]).
    """
    rel = face.to_face(face.points)
    nose_y, nose_x = rel[2, 1], rel[2, 0]
    mouth_y, mouth_x = rel[3:, 1].mean(), rel[3:, 0].mean()
    if name == "eyes":
        poly = _rect(-1.0, -0.35, 1.0, 0.35)
    elif name in ("mouth", CONTROL):
        poly = _rect(-1.1, (nose_y + mouth_y) / 2, 1.1, mouth_y + 0.9)
    elif name == "half":
        poly = _rect(nose_x - 4.0, -4.0, nose_x, 4.0)
    elif name == "hand":
        poly = _ellipse(mouth_x, mouth_y + 0.1, 0.7, 0.5)
    elif name.startswith("patch_"):
        side = float(name.removeprefix("patch_"))
        rng = rng if rng is not None else np.random.default_rng(0)
        cx, cy = rng.uniform(-0.8, 0.8), rng.uniform(-0.4, 1.4)
        poly = _rect(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    else:
        raise ValueError(f"unknown occluder {name!r}: choose from {probe_names()}")
    return face.to_image(poly)


def probe_names() -> list[str]:
    """Every probe :func:`occlusion_probe` runs, in report order."""
    return list(OCCLUDERS) + [f"patch_{s:g}" for s in PATCH_SIDES] + [CONTROL]


def skin_band(face: FacePoints) -> np.ndarray:
    """The band under the eyes (x in [-0.6, 0.6], y in [0.35, 0.6] eye distances) whose pixels
    give a hand occluder the face's own skin tone, as a polygon in the image's coordinates."""
    return face.to_image(_rect(-0.6, 0.35, 0.6, 0.6))


def occluder_fill(name: str, image: np.ndarray, face: FacePoints) -> tuple[int, ...]:
    """The grey level(s) occluder ``name`` is drawn in on ``image``: sunglasses dark, a mask light,
    patches mid grey, a hand the face's own skin (the median of a band under the eyes)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    if name == "hand":  # the face's own skin: the median of a cheek-height band under the eyes
        band = polygon_mask(image.shape[:2], skin_band(face))
        pixels = image[band] if band.any() else image.reshape(-1, channels)
        value = np.median(pixels.reshape(-1, channels), axis=0)
        return tuple(int(v) for v in np.atleast_1d(value))
    level = {"eyes": _DARK, "mouth": _LIGHT, CONTROL: _LIGHT}.get(name, _GREY)
    return (level,) * channels


def polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """A boolean ``(H, W)`` mask of ``polygon`` (pixel coordinates)."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def occlude(image: np.ndarray, polygon: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """A copy of ``image`` (uint8 ``(H, W)`` or ``(H, W, C)``) with ``polygon`` filled."""
    out = image.copy()
    out[polygon_mask(image.shape[:2], polygon)] = np.asarray(fill, dtype=np.uint8)[: 1 if image.ndim == 2 else None]
    return out


#: The occluders training draws (the random patches are the augmenter's own ``erase_*``).
TRAINING_OCCLUDERS = ("eyes", "mouth", "hand", "half")


@lru_cache(maxsize=16)
def template_masks(points: tuple[tuple[float, float], ...], height: int, width: int) -> np.ndarray:
    """``(len(TRAINING_OCCLUDERS), H, W)`` boolean masks of the training occluders on a crop whose
    five landmarks sit at ``points`` (normalised to [0, 1], the prepared set's template), i.e.
    on every aligned crop of that set."""
    face = FacePoints(np.asarray(points, dtype=np.float64) * np.array([width, height], dtype=np.float64))
    return np.stack([polygon_mask((height, width), occluder_polygon(name, face)) for name in TRAINING_OCCLUDERS])
