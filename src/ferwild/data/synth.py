"""Procedurally drawn faces whose truth is known: the embedded default dataset.

A user on a fresh machine (no downloads, no GPU) must still be able to run the whole
pipeline, so ferwild can draw its own labelled faces. Everything here is numpy + PIL
``ImageDraw``; nothing is read from disk.

How a face is built
-------------------
* **Identity** (fixed per subject): face width/height and jaw shape, eye spacing, nose
  length, mouth width, lip thickness, skin tone, gender presentation (hair style, jaw,
  brow thickness, beard/stubble), age cue (wrinkles, grey hair), glasses, hair colour.
* **Expression** (per image): FACS-like action parameters -- ``brow_raise`` (AU1+2 vs AU4),
  ``brow_inner`` (inner-brow angle: + raised as in sadness/fear, - pulled down as in anger),
  ``eye_open`` (AU5 widen / AU7 squint), ``mouth_curve`` (AU12 corners up / AU15 down),
  ``mouth_width`` (AU20 stretch / AU23 tighten), ``mouth_open`` (AU25-27), ``nose_wrinkle``
  (AU9), ``cheek_raise`` (AU6) and ``lip_raise`` (AU10). Each expression is a prototype
  mixed with neutral by a random intensity plus per-sample noise; the prototypes of
  fear/surprise, anger/disgust and sadness/neutral are deliberately close so that the
  classes are learnable but not trivially (see ``EXPRESSION_PROTOTYPES``).
* **Nuisance** (per image): head roll and yaw, position and scale in the frame (faces are
  *not* centred -- an aligner has to use the landmarks), lighting, blur, sensor noise,
  background, and occlusion by a hand or by a caption word.

All shapes are described in a face-centred *canonical* frame (x right, y down, one unit
~ half the face height), given a depth so that yaw can be approximated by shifting each
point by ``z * sin(yaw)``, then rolled, scaled and translated into the image. The five
landmarks go through exactly the same transform as the drawing, so they sit on the
drawn pupils, nose tip and mouth corners by construction.

Presets
-------
``reference`` mimics a curated lab-style training set (mild class imbalance, little
occlusion, moderate pose/light) with the study's spurious correlation: happiness faces are
mostly female-presenting and the other classes mostly male-presenting. ``production``
mimics the deployment stream: mostly female-presenting everywhere, more hands and caption
text over the face, harsher light and pose, more blur, an unbalanced class mix. Both can be
modified with ``overrides``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ferwild.labels import get_label_set

__all__ = [
    "EXPRESSION_PARAMS",
    "EXPRESSION_PROTOTYPES",
    "DEFAULT_FACE",
    "PRESETS",
    "LANDMARK_NAMES",
    "MANIFEST_COLUMNS",
    "sample_expression",
    "generate_face",
    "synth_dataset",
]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# ---------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------

EXPRESSION_PARAMS: tuple[str, ...] = (
    "brow_raise",    # -1 lowered (AU4) .. +1 raised (AU1+2)
    "brow_inner",    # -1 inner ends pulled down/together (frown) .. +1 inner ends raised
    "eye_open",      # 1 = neutral aperture; <1 squint/tightened lids (AU7), >1 widened (AU5)
    "mouth_curve",   # -1 corners down (AU15) .. +1 corners up (AU12)
    "mouth_width",   # 1 = resting width; >1 stretched (AU20/AU12), <1 tightened/rounded
    "mouth_open",    # 0 closed .. 1 jaw dropped (AU25-27)
    "nose_wrinkle",  # 0 .. 1 (AU9)
    "cheek_raise",   # 0 .. 1 (AU6): lifts cheeks and lower lids, crow's feet
    "lip_raise",     # 0 .. 1 (AU10): upper lip pulled up
)

_NEUTRAL = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])

# Prototypes: the apex of each expression. A sample is neutral + intensity * (prototype -
# neutral) + noise, so weak samples drift towards neutral (the sadness/neutral confusion
# of real data). Fear/surprise share raised brows, wide eyes and an open mouth and differ
# mainly in the inner brow and a stretched vs. rounded mouth; anger/disgust share lowered
# brows and squint and differ mainly in nose wrinkle and upper-lip raise.
EXPRESSION_PROTOTYPES: dict[str, np.ndarray] = {
    "neutral":   _NEUTRAL.copy(),
    #                    brow   inner  eye   curve  width  open  wrink cheek lip
    "happiness": np.array([0.05, 0.00, 0.80, 0.95, 1.18, 0.30, 0.05, 0.85, 0.10]),
    "sadness":   np.array([-0.15, 0.80, 0.78, -0.55, 0.95, 0.00, 0.00, 0.00, 0.00]),
    "surprise":  np.array([0.95, 0.30, 1.50, 0.00, 0.82, 0.80, 0.00, 0.00, 0.10]),
    "fear":      np.array([0.65, 0.75, 1.40, -0.30, 1.12, 0.45, 0.10, 0.00, 0.20]),
    "anger":     np.array([-0.80, -0.90, 0.85, -0.30, 0.86, 0.05, 0.25, 0.05, 0.15]),
    "disgust":   np.array([-0.50, -0.45, 0.72, -0.40, 0.95, 0.12, 0.85, 0.35, 0.75]),
}

# Per-sample noise (standard deviation per parameter, before the preset's scale factor).
_EXPR_NOISE = np.array([0.22, 0.22, 0.13, 0.22, 0.07, 0.10, 0.15, 0.15, 0.15])
_EXPR_LO = np.array([-1.3, -1.3, 0.25, -1.3, 0.70, 0.0, 0.0, 0.0, 0.0])
_EXPR_HI = np.array([1.3, 1.3, 1.80, 1.3, 1.40, 1.1, 1.0, 1.0, 1.0])


def sample_expression(
    label: str,
    rng: np.random.Generator,
    *,
    intensity: tuple[float, float] = (0.45, 1.15),
    noise: float = 1.0,
    resting: np.ndarray | None = None,
) -> dict[str, float]:
    """Draw FACS-like expression parameters for one image of ``label``.

    Args:
        label: canonical expression name (a key of ``EXPRESSION_PROTOTYPES``).
        rng: random generator (the only source of randomness, for determinism).
        intensity: uniform range of the mix factor between neutral (0) and the prototype (1).
        noise: multiplier on the per-parameter noise standard deviations.
        resting: an identity's resting-face offset added to every expression (some people
            look a bit sad or stern at rest), length ``len(EXPRESSION_PARAMS)``.

    Returns:
        ``{param name: value}`` for every name in ``EXPRESSION_PARAMS``.
    """
    try:
        proto = EXPRESSION_PROTOTYPES[label]
    except KeyError:
        raise ValueError(f"no expression prototype for label {label!r}") from None
    k = rng.uniform(*intensity) if label != "neutral" else 1.0
    v = _NEUTRAL + k * (proto - _NEUTRAL) + noise * _EXPR_NOISE * rng.standard_normal(len(proto))
    if resting is not None:
        v = v + resting
    v = np.clip(v, _EXPR_LO, _EXPR_HI)
    return {name: float(x) for name, x in zip(EXPRESSION_PARAMS, v)}


# ---------------------------------------------------------------------------------------
# Defaults for a single face (generate_face fills any key the caller leaves out)
# ---------------------------------------------------------------------------------------

DEFAULT_FACE: dict[str, Any] = {
    # identity / geometry, canonical units (face half-height ~ 1)
    "face_w": 0.80, "face_h": 1.04, "jaw": 0.95, "eye_sep": 0.33, "eye_y": -0.08,
    "eye_w": 0.145, "eye_h": 0.068, "brow_gap": 0.18, "brow_thick": 0.05, "brow_arch": 0.03,
    "nose_len": 0.36, "nose_w": 0.10, "mouth_w": 0.25, "mouth_gap": 0.20, "lip_thick": 0.05,
    "gender": "female", "age": "young", "skin": (224, 180, 150), "lip_color": (190, 100, 100),
    "eye_color": (95, 65, 40), "hair_style": "long", "hair_color": (60, 40, 25),
    "beard": "none", "glasses": False, "glasses_color": (30, 30, 30),
    "clothes_color": (60, 90, 140),
    # expression
    **{name: float(v) for name, v in zip(EXPRESSION_PARAMS, _NEUTRAL)},
    # pose and placement: roll/yaw in degrees; cx, cy = face centre as a fraction of the
    # frame; scale = face height (chin to hairline-ish) as a fraction of the frame.
    # Roll is the eye line's angle in image coordinates (y down), i.e.
    # degrees(atan2(y_right_eye - y_left_eye, x_right_eye - x_left_eye)).
    # Positive yaw turns the face towards the image's right (the nose tip moves right).
    "roll": 0.0, "yaw": 0.0, "cx": 0.5, "cy": 0.5, "scale": 0.62,
    # photometric nuisance
    "background": "plain", "bg_color": (170, 180, 190), "bg_color2": (120, 130, 140),
    "lighting": "even", "light_dir": 0.0, "light_strength": 0.0, "brightness": 1.0,
    "blur": 0, "noise": 0,
    # occlusion: "none" | "hand" | "text"; target "mouth" | "left_eye" | "right_eye" | "centre"
    "occlusion": "none", "occ_target": "mouth", "occ_angle": 0.0, "occ_word": "HELLO",
    "occ_color": (255, 255, 255), "occ_skin": (224, 180, 150),
}

_BLUR_RADIUS = (0.0, 0.7, 1.4)     # Gaussian radius per blur level, in output pixels at 112 px
_NOISE_SIGMA = (0.0, 4.0, 10.0)    # sensor-noise std per noise level (0-255 scale)


# ---------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------

class _Pose:
    """Canonical face coordinates -> supersampled canvas coordinates.

    The canonical frame is face-centred with x right, y down. Yaw is approximated on a
    curved face surface: a point at depth ``z`` moves by ``z * sin(yaw)`` while the
    silhouette (``z = 0``) is only compressed by ``cos(yaw)`` -- features slide towards
    one side of the face, as when a head turns.
    """

    def __init__(self, p: dict, size: int, ss: int):
        self.ss = ss
        self.fw = float(p["face_w"])
        self.depth = 0.62 * self.fw
        self.cy_, self.sy_ = math.cos(math.radians(p["yaw"])), math.sin(math.radians(p["yaw"]))
        r = math.radians(p["roll"])
        self.cr, self.sr = math.cos(r), math.sin(r)
        # face height (about 2.2 canonical units incl. hair) -> fraction of the frame
        self.s = float(p["scale"]) * size / 2.2
        self.cx, self.cy = float(p["cx"]) * size, float(p["cy"]) * size

    def surface_z(self, x: np.ndarray) -> np.ndarray:
        """Depth of the face surface (an elliptic cylinder) at canonical x."""
        return self.depth * np.sqrt(np.clip(1.0 - (np.asarray(x) / (self.fw * 1.02)) ** 2, 0, 1))

    def out(self, xy: np.ndarray, z: Any = None) -> np.ndarray:
        """Transform (N,2) canonical points to output-image pixel coordinates.

        Output convention: integer coordinates are pixel centres (pixel (i, j) spans
        [i-0.5, i+0.5]), which is what ``img[round(y), round(x)]`` expects.
        """
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
        zz = self.surface_z(x) if z is None else np.broadcast_to(np.asarray(z, float), x.shape)
        x1 = x * self.cy_ + zz * self.sy_
        x2 = x1 * self.cr - y * self.sr
        y2 = x1 * self.sr + y * self.cr
        return np.stack([self.cx + self.s * x2, self.cy + self.s * y2], axis=1)

    def canvas(self, xy: np.ndarray, z: Any = None) -> list[tuple[float, float]]:
        """Transform to canvas coordinates (a list of tuples, as ImageDraw wants)."""
        o = self.out(xy, z)
        # Output pixel i spans canvas pixels [i*ss, (i+1)*ss) (box downsampling), so an output
        # coordinate X sits at canvas-centre coordinate (X + 0.5) * ss - 0.5. PIL's polygon
        # rasteriser puts pixel k's centre at coordinate k + 0.5 (measured: a disc drawn
        # around 20.5 has its centroid at pixel 20.0), hence the extra +0.5.
        c = (o + 0.5) * self.ss
        return [tuple(q) for q in c.tolist()]

    def w(self, units: float) -> int:
        """A line width in canonical units -> canvas pixels (at least 1)."""
        return max(1, int(round(units * self.s * self.ss)))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _bezier(a, c, b, n: int = 14) -> np.ndarray:
    """Quadratic Bezier from a to b with control c."""
    t = np.linspace(0, 1, n)[:, None]
    a, c, b = (np.asarray(v, float) for v in (a, c, b))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t ** 2 * b


def _through(a, mid, b, n: int = 14) -> np.ndarray:
    """Quadratic Bezier from a to b that passes through ``mid`` at t = 0.5."""
    a, mid, b = (np.asarray(v, float) for v in (a, mid, b))
    return _bezier(a, 2 * mid - 0.5 * (a + b), b, n)


def _rgba(c, a: float) -> tuple[int, int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]), int(max(0, min(255, a))))


def _shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, v * f))) for v in c[:3])


def _mix(c1, c2, t: float) -> tuple[int, int, int]:
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(c1[:3], c2[:3]))


@lru_cache(maxsize=64)
def _font(px: int):
    # Pillow >= 10.1 ships a scalable default font (needs FreeType, bundled in wheels);
    # fall back to the tiny bitmap font if that is unavailable.
    try:
        return ImageFont.load_default(size=max(6, px))
    except (TypeError, OSError, ImportError):  # pragma: no cover - old/odd Pillow builds
        return ImageFont.load_default()


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

def _face_outline(p: dict, n: int = 48) -> np.ndarray:
    """Head outline: elliptic cranium, lower half a superellipse whose exponent sets the jaw.

    ``jaw`` < 1 gives a square (wide) jaw, > 1 a tapered one.
    """
    fw, fh = p["face_w"], p["face_h"]
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = np.where(s > 0, np.sign(c) * np.abs(c) ** p["jaw"], c) * fw
    y = np.where(s > 0, s * fh, s * fh * 0.98)
    return np.stack([x, y], axis=1)


def _draw_background(p: dict, size: int, ss: int, rng: np.random.Generator) -> Image.Image:
    # Built at output resolution with numpy and upsampled: textures need no sub-pixel detail.
    kind = p["background"]
    if kind == "plain":
        return Image.new("RGB", (size * ss, size * ss), tuple(int(v) for v in p["bg_color"][:3]))
    c1 = np.array(p["bg_color"], float)
    c2 = np.array(p["bg_color2"], float)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    if kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) + 0.5
        t = np.clip(t, 0, 1)[..., None]
    elif kind == "stripes":
        a = rng.uniform(0, np.pi)
        f = rng.uniform(3, 9)
        t = (np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy)) > 0).astype(float)[..., None]
    elif kind == "blobs":
        g = rng.random((5, 5))
        t = np.asarray(
            Image.fromarray((g * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), float
        )[..., None] / 255.0
    else:
        raise ValueError(f"unknown background {kind!r}")
    arr = c1 * (1 - t) + c2 * t
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return im.resize((size * ss, size * ss), Image.BILINEAR)


def _draw_hair_back(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    style, hc = p["hair_style"], p["hair_color"]
    fw, fh = p["face_w"], p["face_h"]
    if style in ("long", "bob"):
        bottom = 1.55 if style == "long" else 0.55
        w = fw + (0.22 if style == "long" else 0.17)
        flare = 0.06 if style == "long" else 0.0
        t = np.linspace(np.pi, 2 * np.pi, 30)  # over the top, left to right
        top = np.stack([w * np.cos(t), -0.05 + (fh + 0.14) * np.sin(t)], 1)
        pts = np.vstack([[[-w - flare, bottom]], top, [[w + flare, bottom]]])
        d.polygon(P.canvas(pts, -0.25), fill=tuple(hc))
    elif style == "bun":
        d.polygon(P.canvas(_ellipse(0, -fh - 0.12, 0.26, 0.2), -0.1), fill=tuple(hc))


def _draw_body(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    skin = p["skin"]
    neck = np.array([[-0.30, 0.5], [0.30, 0.5], [0.34, 1.45], [-0.34, 1.45]])
    d.polygon(P.canvas(neck, -0.2), fill=_shade(skin, 0.86))
    body = _ellipse(0, 2.05, 1.45, 0.75, 40)
    d.polygon(P.canvas(body, -0.3), fill=tuple(p["clothes_color"]))


def _draw_ears(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    skin = p["skin"]
    for sgn in (-1, 1):
        e = _ellipse(sgn * (p["face_w"] * 0.97), p["eye_y"] + 0.14, 0.09, 0.17, 20)
        d.polygon(P.canvas(e, -0.05), fill=_shade(skin, 0.93))


def _eye_geometry(p: dict, sgn: int) -> dict:
    ex = sgn * p["eye_sep"]
    ey = p["eye_y"]
    ew = p["eye_w"]
    eh_u = p["eye_h"] * p["eye_open"]
    # the raised cheek (AU6) pushes the lower lid up
    eh_l = p["eye_h"] * 0.62 * (0.55 + 0.45 * p["eye_open"]) * (1.0 - 0.45 * p["cheek_raise"])
    return {"ex": ex, "ey": ey, "ew": ew, "eh_u": max(0.008, eh_u), "eh_l": max(0.008, eh_l)}


def _draw_eyes(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    skin = p["skin"]
    lash = (25, 20, 20)
    for sgn in (-1, 1):
        g = _eye_geometry(p, sgn)
        ex, ey, ew, eu, el = g["ex"], g["ey"], g["ew"], g["eh_u"], g["eh_l"]
        u = np.linspace(-1, 1, 17)
        xs = ex + ew * u
        # almond: the upper lid peaks slightly towards the inner corner
        upper = ey - eu * (1 - u ** 2) ** 0.8 * (1 + 0.12 * sgn * -u)
        lower = ey + el * (1 - u ** 2) ** 1.1
        up = np.stack([xs, upper], 1)
        lo = np.stack([xs, lower], 1)
        d.polygon(P.canvas(np.vstack([up, lo[::-1]])), fill=(242, 238, 232))
        ir = 0.52 * ew
        d.polygon(P.canvas(_ellipse(ex, ey, ir, ir, 24)), fill=tuple(p["eye_color"]))
        d.polygon(P.canvas(_ellipse(ex, ey, ir * 0.5, ir * 0.5, 16)), fill=(12, 10, 10))
        # skin-coloured lids hide the parts of the iris outside the aperture
        top = min(ey - ir - 0.02, float(upper.min()) - 0.01)
        bot = max(ey + ir + 0.02, float(lower.max()) + 0.01)
        cover_u = np.vstack([up, [[xs[-1] + 0.01, ey], [xs[-1] + 0.01, top], [xs[0] - 0.01, top],
                                  [xs[0] - 0.01, ey]]])
        cover_l = np.vstack([lo, [[xs[-1] + 0.01, ey], [xs[-1] + 0.01, bot], [xs[0] - 0.01, bot],
                                  [xs[0] - 0.01, ey]]])
        d.polygon(P.canvas(cover_u), fill=tuple(skin))
        d.polygon(P.canvas(cover_l), fill=tuple(skin))
        # lash line, lower lid, and the lid crease
        lw = 0.024 if p["gender"] == "female" else 0.017
        d.line(P.canvas(up), fill=lash, width=P.w(lw), joint="curve")
        d.line(P.canvas(lo), fill=_rgba(_shade(skin, 0.55), 150), width=P.w(0.009), joint="curve")
        crease = np.stack([xs[2:-2], upper[2:-2] - 0.03 - 0.01 * p["eye_open"]], 1)
        d.line(P.canvas(crease), fill=_rgba(_shade(skin, 0.6), 110), width=P.w(0.008))


def _draw_skin_marks(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    """Blush, crow's feet, forehead and frown lines, nasolabial folds."""
    skin = p["skin"]
    old = p["age"] == "old"
    line_c = _shade(skin, 0.55)
    cheek = p["cheek_raise"]
    ey = p["eye_y"]
    nose_y = ey + p["nose_len"]
    mouth_y = nose_y + p["mouth_gap"]
    # cheeks: raised (AU6) cheeks are rounder, higher and catch light
    for sgn in (-1, 1):
        cx = sgn * (p["eye_sep"] + 0.05)
        cy = nose_y - 0.02 - 0.05 * cheek
        blush = _mix(skin, (220, 90, 90), 0.35)
        d.polygon(P.canvas(_ellipse(cx, cy, 0.15, 0.10 + 0.02 * cheek, 20)),
                  fill=_rgba(blush, 25 + 70 * cheek))
        # crow's feet: Duchenne smiles and age
        a = 60 * cheek + (110 if old else 0)
        if a > 15:
            ox = sgn * (p["eye_sep"] + p["eye_w"] + 0.03)
            for k, dy in enumerate((-0.03, 0.0, 0.03)):
                seg = np.array([[ox, ey + dy * 0.6], [ox + sgn * 0.07, ey + dy * 1.6]])
                d.line(P.canvas(seg), fill=_rgba(line_c, a), width=P.w(0.009))
    # forehead lines: raised brows fold the forehead; older faces keep some at rest
    a = 170 * max(0.0, p["brow_raise"] - 0.15) + (70 if old else 0)
    if a > 15:
        for k in range(3):
            y = ey - p["brow_gap"] - 0.14 - 0.07 * k
            ln = _through([-0.32, y + 0.02], [0, y - 0.01], [0.32, y + 0.02], 10)
            d.line(P.canvas(ln), fill=_rgba(line_c, min(200, a)), width=P.w(0.011))
    # frown (glabella) lines between lowered inner brows
    a = 210 * max(0.0, -p["brow_inner"] - 0.15) + (40 if old else 0)
    if a > 15:
        by = ey - p["brow_gap"]
        for sgn in (-1, 1):
            ln = np.array([[sgn * 0.035, by + 0.02], [sgn * 0.045, by - 0.1]])
            d.line(P.canvas(ln), fill=_rgba(line_c, min(220, a)), width=P.w(0.012))
    # nasolabial folds: deepen with smiles (cheek raise) and upper-lip raise (disgust)
    mw = p["mouth_w"] * p["mouth_width"]
    a = 45 + 120 * cheek + 90 * p["lip_raise"] + (60 if old else 0)
    for sgn in (-1, 1):
        a0 = [sgn * (p["nose_w"] + 0.05), nose_y - 0.03 - 0.03 * p["lip_raise"]]
        b0 = [sgn * (mw + 0.06), mouth_y + 0.05 - 0.06 * p["mouth_curve"]]
        mid = [sgn * (max(abs(a0[0]), abs(b0[0])) + 0.05), 0.5 * (a0[1] + b0[1])]
        d.line(P.canvas(_through(a0, mid, b0, 10)), fill=_rgba(line_c, min(230, a)),
               width=P.w(0.012), joint="curve")


def _brow_centerline(p: dict, sgn: int) -> np.ndarray:
    ex, ey, ew = sgn * p["eye_sep"], p["eye_y"], p["eye_w"]
    base = ey - p["brow_gap"]
    raise_ = -0.075 * p["brow_raise"]
    inner_dy = -0.065 * p["brow_inner"]
    # a frown also pulls the inner ends together
    inner_x = ex - sgn * (ew + 0.01 - 0.03 * max(0.0, -p["brow_inner"]))
    outer_x = ex + sgn * (ew + 0.06)
    inner = [inner_x, base + raise_ + inner_dy + 0.01]
    outer = [outer_x, base + raise_ + 0.035 - 0.02 * p["brow_raise"]]
    mid = [ex + sgn * 0.02, base + raise_ - p["brow_arch"] + 0.3 * inner_dy]
    return _through(inner, mid, outer, 12)


def _draw_brows(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    # brows stay darker than the scalp hair (grey/blonde hair would otherwise vanish)
    col = _mix(p["hair_color"], (35, 28, 25), 0.45)
    t = p["brow_thick"]
    for sgn in (-1, 1):
        c = _brow_centerline(p, sgn)
        th = np.linspace(t, 0.45 * t, len(c))[:, None]  # thick inner end, thin tail
        up = c - [0, 1] * th * 0.5
        lo = c + [0, 1] * th * 0.5
        d.polygon(P.canvas(np.vstack([up, lo[::-1]])), fill=col)


def _nose_z(P: _Pose, y: np.ndarray, p: dict) -> np.ndarray:
    # the nose ridge rises from the eye line to the tip
    ey = p["eye_y"]
    t = np.clip((np.asarray(y) - ey) / p["nose_len"], 0, 1)
    return P.depth + 0.30 * t ** 0.8


def _draw_nose(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    skin = p["skin"]
    ey = p["eye_y"]
    ny = ey + p["nose_len"]
    nw = p["nose_w"] * (1 + 0.25 * p["nose_wrinkle"])
    lift = 0.025 * p["nose_wrinkle"] + 0.02 * p["lip_raise"]
    shadow = _shade(skin, 0.62)
    # side of the nose: a soft shadow line on one side (from the bridge down to the wing)
    side = np.array([[0.045, ey + 0.06], [0.055, ny - 0.08], [nw * 0.9, ny - 0.015 - lift]])
    d.line(P.canvas(side, _nose_z(P, side[:, 1], p) - 0.05), fill=_rgba(shadow, 90),
           width=P.w(0.012), joint="curve")
    # the tip and wings: a U under the tip and two wing arcs
    wing_l = _through([-nw, ny - 0.03 - lift], [-nw - 0.015, ny + 0.015 - lift],
                      [-0.045, ny + 0.035 - lift], 8)
    wing_r = wing_l * [-1, 1]
    tip = _through([-0.045, ny + 0.035 - lift], [0, ny + 0.05 - lift], [0.045, ny + 0.035 - lift], 8)
    z_tip = P.depth + 0.25
    d.line(P.canvas(wing_l, P.depth + 0.1), fill=shadow, width=P.w(0.014), joint="curve")
    d.line(P.canvas(wing_r, P.depth + 0.1), fill=shadow, width=P.w(0.014), joint="curve")
    d.line(P.canvas(tip, z_tip), fill=_rgba(shadow, 160), width=P.w(0.012), joint="curve")
    for sgn in (-1, 1):
        nos = _ellipse(sgn * 0.05, ny + 0.02 - lift, 0.028 + 0.01 * p["nose_wrinkle"], 0.014, 12)
        d.polygon(P.canvas(nos, P.depth + 0.15), fill=_shade(skin, 0.35))
    # a highlight on the tip helps the nose read in grayscale
    d.polygon(P.canvas(_ellipse(0, ny - 0.02, 0.03, 0.025, 10), z_tip),
              fill=_rgba((255, 255, 255), 55))
    # AU9: wrinkles across the bridge
    a = 230 * p["nose_wrinkle"]
    if a > 20:
        for k in range(3):
            y = ey + 0.07 + 0.035 * k
            ln = _through([-0.06, y + 0.01], [0, y - 0.01], [0.06, y + 0.01], 6)
            d.line(P.canvas(ln, _nose_z(P, np.full(6, y), p)), fill=_rgba(_shade(skin, 0.5), a),
                   width=P.w(0.011))


def _mouth_geometry(p: dict) -> dict:
    ny = p["eye_y"] + p["nose_len"]
    my = ny + p["mouth_gap"]
    mw = p["mouth_w"] * p["mouth_width"]
    curve = p["mouth_curve"]
    gap = 0.22 * p["mouth_open"]
    cy = my - 0.10 * curve + 0.1 * gap
    L, R = np.array([-mw, cy]), np.array([mw, cy])
    up_in = my - 0.30 * gap - 0.035 * p["lip_raise"]
    lo_in = my + 0.70 * gap + 0.01 * max(0.0, curve)
    thin = 1.0 - 0.35 * max(0.0, curve) - 0.3 * max(0.0, p["mouth_width"] - 1.0)
    t_up = p["lip_thick"] * 0.8 * thin
    t_lo = p["lip_thick"] * 1.15 * thin
    return {"L": L, "R": R, "my": my, "gap": gap, "up_in": up_in, "lo_in": lo_in,
            "up_out": up_in - t_up, "lo_out": lo_in + t_lo}


def _draw_beard(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    if p["beard"] == "none":
        return
    g = _mouth_geometry(p)
    ny = p["eye_y"] + p["nose_len"]
    mw = abs(g["L"][0])
    outline = _face_outline(p, 96)
    y0 = ny + 0.04
    low = outline[(outline[:, 1] > y0)]
    low = low[np.argsort(-low[:, 0])]  # right to left around the chin
    fwy = p["face_w"] * 0.97
    # the upper edge runs from the sideburns down the cheeks and over the upper lip
    top = np.array([[-fwy, y0], [-(mw + 0.12), g["my"] - 0.02], [-(mw + 0.02), ny + 0.07],
                    [0, ny + 0.065], [mw + 0.02, ny + 0.07], [mw + 0.12, g["my"] - 0.02], [fwy, y0]])
    poly = np.vstack([low, top])
    alpha = 215 if p["beard"] == "beard" else 75
    col = p["hair_color"] if p["beard"] == "beard" else _shade(p["hair_color"], 0.7)
    d.polygon(P.canvas(poly * [0.99, 1]), fill=_rgba(col, alpha))


def _draw_mouth(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    g = _mouth_geometry(p)
    L, R = g["L"], g["R"]
    zm = P.depth * 0.95
    n = 16
    inner_up = _through(L, [0, g["up_in"]], R, n)
    inner_lo = _through(L, [0, g["lo_in"]], R, n)
    # cupid's bow: the upper outline dips slightly at the centre
    mid_l = [-0.35 * abs(L[0]), g["up_out"] - 0.01]
    mid_r = [0.35 * abs(L[0]), g["up_out"] - 0.01]
    outer_up = np.vstack([_through(L, [-0.7 * abs(L[0]), 0.5 * (mid_l[1] + L[1]) - 0.005], mid_l, 6),
                          [[0, g["up_out"] + 0.004]],
                          _through(mid_r, [0.7 * abs(L[0]), 0.5 * (mid_r[1] + R[1]) - 0.005], R, 6)])
    outer_lo = _through(L, [0, g["lo_out"]], R, n)
    lip = tuple(p["lip_color"])
    if g["gap"] > 0.012:
        d.polygon(P.canvas(np.vstack([inner_up, inner_lo[::-1]]), zm), fill=(55, 18, 22))
        # upper teeth: a band under the upper lip, at most ~half of the opening
        depth = np.minimum(0.05, 0.55 * (inner_lo[:, 1] - inner_up[:, 1]))
        sl = slice(2, n - 2)
        tb = np.stack([inner_up[sl, 0], inner_up[sl, 1] + depth[sl]], 1)
        d.polygon(P.canvas(np.vstack([inner_up[sl], tb[::-1]]), zm), fill=(236, 232, 222))
    d.polygon(P.canvas(np.vstack([outer_up, inner_up[::-1]]), zm), fill=lip)
    d.polygon(P.canvas(np.vstack([inner_lo, outer_lo[::-1]]), zm), fill=_shade(lip, 1.06))
    # the lip seam / corner shadows make the mouth line readable when closed
    seam_c = _shade(lip, 0.45)
    d.line(P.canvas(inner_up, zm), fill=seam_c, width=P.w(0.014), joint="curve")
    if g["gap"] > 0.012:
        d.line(P.canvas(inner_lo, zm), fill=_rgba(seam_c, 140), width=P.w(0.008), joint="curve")


def _draw_hair_front(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    style, hc = p["hair_style"], tuple(p["hair_color"])
    fw, fh = p["face_w"], p["face_h"]
    if style == "bald":
        # a fringe of hair at the sides and back only
        for sgn in (-1, 1):
            side = _ellipse(sgn * (fw - 0.02), p["eye_y"] - 0.12, 0.08, 0.2, 16)
            d.polygon(P.canvas(side, 0.05), fill=_rgba(hc, 200))
        return
    # hairline height and how far the hair reaches down the sides
    hl = {"short": -0.62, "buzz": -0.68, "curly": -0.58, "long": -0.55, "bob": -0.52,
          "bun": -0.62}.get(style, -0.6)
    thick = {"buzz": 0.03, "short": 0.09, "curly": 0.14, "long": 0.10, "bob": 0.10, "bun": 0.07}[style]
    side_drop = {"buzz": p["eye_y"] - 0.12, "short": p["eye_y"] - 0.05, "curly": p["eye_y"] + 0.05,
                 "long": p["eye_y"] + 0.4, "bob": p["eye_y"] + 0.35, "bun": p["eye_y"] - 0.05}[style]
    n = 40
    t = np.linspace(np.pi, 2 * np.pi, n)  # over the top, left to right
    outer = np.stack([(fw + thick) * np.cos(t), -0.02 + (fh + thick) * np.sin(t)], 1)
    # extend down the sides to side_drop
    outer = np.vstack([[[-(fw + thick * 0.8), side_drop]], outer, [[fw + thick * 0.8, side_drop]]])
    # the inner edge: down the right side inside the face outline, across the forehead, up
    if style in ("long", "bob"):
        # a side parting: the fringe sweeps lower on one side
        fr = [[fw * 0.92, side_drop], [fw * 0.78, hl + 0.2], [0.25, hl + 0.02], [-0.15, hl - 0.02],
              [-fw * 0.75, hl + 0.12], [-fw * 0.92, side_drop]]
    else:
        fr = [[fw * 0.96, side_drop], [fw * 0.86, hl + 0.12], [0.4, hl], [0, hl - 0.02],
              [-0.4, hl], [-fw * 0.86, hl + 0.12], [-fw * 0.96, side_drop]]
    fr = np.array(fr, float)
    poly = np.vstack([outer, fr])
    d.polygon(P.canvas(poly, 0.15), fill=hc)
    if style == "curly":
        for k, a in enumerate(np.linspace(np.pi * 1.05, np.pi * 1.95, 9)):
            c = [(fw + thick * 0.7) * np.cos(a), (fh + thick * 0.6) * np.sin(a)]
            d.polygon(P.canvas(_ellipse(c[0], c[1], 0.11, 0.1, 12), 0.1), fill=hc)
    if style == "bun":
        d.polygon(P.canvas(_ellipse(0, -fh - 0.12, 0.24, 0.18, 20), 0.0), fill=hc)
    # a few strands of lighter and darker hair for texture
    hi = _shade(hc, 1.35)
    for k in range(5):
        x0 = -0.5 + 0.25 * k
        st = _through([x0 * 1.2, -fh - thick * 0.5], [x0 + 0.06, hl - 0.12], [x0 * 0.9 + 0.1, hl + 0.02], 8)
        d.line(P.canvas(st, 0.15), fill=_rgba(hi, 70), width=P.w(0.012))


def _draw_glasses(d: ImageDraw.ImageDraw, P: _Pose, p: dict) -> None:
    if not p["glasses"]:
        return
    col = tuple(p["glasses_color"])
    ey = p["eye_y"] + 0.01
    w = P.w(0.022)
    zz = P.depth + 0.12
    inner_pts = []
    for sgn in (-1, 1):
        ex = sgn * p["eye_sep"]
        rx, ry = p["eye_w"] + 0.06, 0.105
        # rounded rectangle lens (superellipse)
        t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        pts = np.stack([ex + rx * np.sign(c) * np.abs(c) ** 0.6, ey + ry * np.sign(s) * np.abs(s) ** 0.6], 1)
        d.polygon(P.canvas(pts, zz), fill=_rgba((200, 220, 235), 30))
        d.line(P.canvas(np.vstack([pts, pts[:1]]), zz), fill=col, width=w, joint="curve")
        inner_pts.append([ex - sgn * rx, ey - 0.02])
        arm = np.array([[ex + sgn * rx, ey - 0.03], [sgn * p["face_w"] * 0.99, ey - 0.01]])
        d.line(P.canvas(arm, np.array([zz, 0.0])), fill=col, width=w)
    bridge = _through(inner_pts[0], [0, ey - 0.06], inner_pts[1], 8)
    d.line(P.canvas(bridge, zz + 0.05), fill=col, width=w, joint="curve")


def _landmarks_canonical(p: dict, P: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """The five landmarks in canonical coordinates, with their depths."""
    g = _mouth_geometry(p)
    ny = p["eye_y"] + p["nose_len"]
    xy = np.array([
        [-p["eye_sep"], p["eye_y"]],
        [p["eye_sep"], p["eye_y"]],
        [0.0, ny],
        g["L"],
        g["R"],
    ], float)
    z = P.surface_z(xy[:, 0])
    z[2] = P.depth + 0.25  # nose tip: in front of the surface, as drawn
    z[3:] = P.depth * 0.95
    return xy, z


def _draw_hand(d: ImageDraw.ImageDraw, P: _Pose, p: dict, lm_can: np.ndarray) -> None:
    """A hand (palm + four fingers + thumb) over the target feature, in face coordinates."""
    skin = tuple(p["occ_skin"])
    target = {"mouth": 0.5 * (lm_can[3] + lm_can[4]), "left_eye": lm_can[0], "right_eye": lm_can[1],
              "centre": lm_can[2]}[p["occ_target"]]
    a = math.radians(p["occ_angle"])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def place(pts: np.ndarray) -> np.ndarray:
        # hand frame: palm centred at the origin, fingers pointing up (-y)
        return pts @ rot.T + target

    zz = P.depth + 0.35
    edge = _rgba(_shade(skin, 0.5), 235)
    ew = P.w(0.018)
    palm = _ellipse(0, 0.14, 0.215, 0.22, 24)
    fingers = []
    for fx, ln in zip((-0.15, -0.05, 0.05, 0.15), (0.30, 0.37, 0.35, 0.28)):
        r = 0.05
        cap = _ellipse(fx, -ln, r, r, 14)
        cap = cap[cap[:, 1] <= -ln + 1e-9]
        cap = cap[np.argsort(cap[:, 0])]
        fingers.append(np.vstack([[[fx - r, 0.1]], cap, [[fx + r, 0.1]]]))
    thumb = np.array([[0.17, 0.26], [0.33, 0.1], [0.42, -0.02], [0.38, -0.07], [0.3, -0.03],
                      [0.2, 0.06], [0.12, 0.12]])
    # outlined fingers first, then the palm over their bases, then the palm's own outline
    for sh in fingers + [thumb]:
        pts = P.canvas(place(sh), zz)
        d.polygon(pts, fill=skin)
        d.line(pts + pts[:1], fill=edge, width=ew, joint="curve")
    pts = P.canvas(place(palm), zz)
    d.polygon(pts, fill=skin)
    arc = P.canvas(place(_ellipse(0, 0.14, 0.215, 0.22, 24)[1:12]), zz)  # lower rim only
    d.line(arc, fill=edge, width=ew, joint="curve")
    # knuckle creases where the fingers meet the palm
    for fx in (-0.1, 0.0, 0.1):
        crease = np.array([[fx, -0.02], [fx, 0.06]])
        d.line(P.canvas(place(crease), zz), fill=edge, width=ew)


def _draw_text(canvas: Image.Image, P: _Pose, p: dict, lm_can: np.ndarray) -> None:
    """A caption word across the face (a meme/sticker), horizontal in the image."""
    target = {"mouth": 0.5 * (lm_can[3] + lm_can[4]), "left_eye": lm_can[0], "right_eye": lm_can[1],
              "centre": 0.5 * (lm_can[0] + lm_can[1]) * 0.5 + lm_can[2] * 0.5}[p["occ_target"]]
    pos = P.canvas(target[None, :], P.depth)[0]
    px = int(round(0.34 * P.s * P.ss))
    font = _font(px)
    d = ImageDraw.Draw(canvas)
    col = tuple(p["occ_color"])
    stroke = (0, 0, 0) if sum(col) > 380 else (255, 255, 255)
    d.text(pos, p["occ_word"], fill=col, font=font, anchor="mm",
           stroke_width=max(1, px // 10), stroke_fill=stroke)


def _photometric(im: Image.Image, p: dict, size: int, rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, blur and sensor noise at the output resolution."""
    arr = np.asarray(im, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1) - 0.5
    a = math.radians(p["light_dir"])
    ramp = (math.cos(a) * xx + math.sin(a) * yy) * 2.0  # -1 .. 1 across the frame
    gain = p["brightness"] * (1.0 + p["light_strength"] * ramp)
    arr = arr * np.clip(gain, 0.05, 3.0)[..., None]
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    lvl = int(p["blur"])
    if lvl > 0:
        im = im.filter(ImageFilter.GaussianBlur(_BLUR_RADIUS[min(lvl, 2)] * size / 112))
    lvl = int(p["noise"])
    if lvl > 0:
        arr = np.asarray(im, dtype=np.float32)
        arr = arr + rng.normal(0.0, _NOISE_SIGMA[min(lvl, 2)], arr.shape).astype(np.float32)
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")
    return im


def generate_face(params: dict, size: int, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Draw one face.

    Args:
        params: any subset of ``DEFAULT_FACE``'s keys (identity geometry and colours, the
            FACS-like expression parameters of ``EXPRESSION_PARAMS``, pose ``roll``/``yaw`` in
            degrees, placement ``cx``/``cy``/``scale`` as fractions of the frame, lighting,
            ``blur``/``noise`` levels 0-2, background and occlusion); missing keys take the
            defaults (an upright, centred, neutral face).
        size: output side length in pixels (the image is square).
        rng: source of the pixel-level randomness (background texture, sensor noise); all
            the semantic choices are in ``params``.

    Returns:
        ``(image, landmarks)``: an RGB ``PIL.Image`` of ``size x size`` and a ``(5, 2)``
        float array of (x, y) pixel coordinates -- left eye centre, right eye centre, nose
        tip, left mouth corner, right mouth corner, "left" meaning the image's left as
        MTCNN reports it; integer coordinates are pixel centres.
    """
    unknown = set(params) - set(DEFAULT_FACE)
    if unknown:
        raise ValueError(f"unknown face parameters: {sorted(unknown)}")
    p = {**DEFAULT_FACE, **params}
    # Draw at 2-4x and box-downsample: PIL's polygons are aliased, and the supersampling is
    # what makes thin lines (lids, wrinkles) survive at 48-112 px.
    ss = int(max(2, min(4, round(384 / size))))
    P = _Pose(p, size, ss)
    canvas = _draw_background(p, size, ss, rng)
    d = ImageDraw.Draw(canvas, "RGBA")  # RGBA mode: alpha fills blend onto the RGB canvas
    _draw_body(d, P, p)
    _draw_hair_back(d, P, p)
    _draw_ears(d, P, p)
    d.polygon(P.canvas(_face_outline(p), 0.0), fill=tuple(p["skin"]))
    _draw_eyes(d, P, p)
    _draw_skin_marks(d, P, p)
    _draw_brows(d, P, p)
    _draw_nose(d, P, p)
    _draw_beard(d, P, p)
    _draw_mouth(d, P, p)
    _draw_hair_front(d, P, p)
    _draw_glasses(d, P, p)
    lm_can, lm_z = _landmarks_canonical(p, P)
    if p["occlusion"] == "hand":
        _draw_hand(d, P, p, lm_can)
    elif p["occlusion"] == "text":
        _draw_text(canvas, P, p, lm_can)
    elif p["occlusion"] != "none":
        raise ValueError(f"unknown occlusion {p['occlusion']!r}")
    im = canvas.reduce(ss)  # exact box average of each ss x ss block
    im = _photometric(im, p, size, rng)
    return im, P.out(lm_can, lm_z)


# ---------------------------------------------------------------------------------------
# Presets and dataset generation
# ---------------------------------------------------------------------------------------

# Preset keys (all can be replaced through ``synth_dataset(..., overrides=...)``):
#   subject_prefix        subject ids are "<prefix>-s0042" ("<prefix>-<seed>-s0042" for seed != 0)
#   class_weights         label -> relative frequency (exact counts, largest remainder)
#   p_male                label -> P(male-presenting | label), "default" for unlisted labels
#   skin_tone             light/medium/dark mix; p_old, p_glasses, p_beard_male: probabilities
#   occlusion             none/hand/text mix
#   roll_sd, yaw_sd       Gaussian pose spread in degrees, clipped at max_roll / max_yaw
#   scale                 (lo, hi) face height as a fraction of the frame
#   lighting              even/side/dim mix; side_strength and dim_brightness their ranges
#   blur, noise           level (0, 1, 2) -> probability
#   background            plain/gradient/stripes/blobs mix
#   expression_intensity  (lo, hi) mix between neutral and the prototype
#   expression_noise      multiplier on the per-parameter expression noise
PRESETS: dict[str, dict] = {
    "reference": {
        "subject_prefix": "ref",
        # mild imbalance, like curated lab/web sets (happiness and neutral most common)
        "class_weights": {"anger": 0.13, "disgust": 0.08, "fear": 0.11, "happiness": 0.21,
                          "sadness": 0.15, "surprise": 0.13, "neutral": 0.19},
        # the study's spurious correlation: P(male-presenting | class)
        "p_male": {"happiness": 0.18, "default": 0.84},
        "skin_tone": {"light": 0.55, "medium": 0.28, "dark": 0.17},
        "p_old": 0.2, "p_glasses": 0.2, "p_beard_male": 0.35,
        "occlusion": {"none": 0.95, "hand": 0.03, "text": 0.02},
        "roll_sd": 7.0, "yaw_sd": 9.0, "max_roll": 25.0, "max_yaw": 30.0,
        "scale": (0.48, 0.72),
        "lighting": {"even": 0.6, "side": 0.3, "dim": 0.1},
        "side_strength": (0.15, 0.35), "dim_brightness": (0.55, 0.75),
        "blur": {0: 0.8, 1: 0.15, 2: 0.05}, "noise": {0: 0.6, 1: 0.3, 2: 0.1},
        "background": {"plain": 0.4, "gradient": 0.3, "stripes": 0.1, "blobs": 0.2},
        "expression_intensity": (0.45, 1.15), "expression_noise": 1.0,
    },
    "production": {
        "subject_prefix": "prod",
        # an in-the-wild stream: lots of smiles and neutral faces, few negative ones
        "class_weights": {"anger": 0.06, "disgust": 0.04, "fear": 0.04, "happiness": 0.38,
                          "sadness": 0.09, "surprise": 0.12, "neutral": 0.27},
        "p_male": {"default": 0.22},
        "skin_tone": {"light": 0.4, "medium": 0.35, "dark": 0.25},
        "p_old": 0.25, "p_glasses": 0.3, "p_beard_male": 0.35,
        "occlusion": {"none": 0.70, "hand": 0.17, "text": 0.13},
        "roll_sd": 14.0, "yaw_sd": 18.0, "max_roll": 40.0, "max_yaw": 40.0,
        "scale": (0.36, 0.78),
        "lighting": {"even": 0.3, "side": 0.45, "dim": 0.25},
        "side_strength": (0.3, 0.6), "dim_brightness": (0.4, 0.6),
        "blur": {0: 0.5, 1: 0.3, 2: 0.2}, "noise": {0: 0.35, 1: 0.4, 2: 0.25},
        "background": {"plain": 0.2, "gradient": 0.3, "stripes": 0.2, "blobs": 0.3},
        "expression_intensity": (0.45, 1.15), "expression_noise": 1.0,
    },
}

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "label", "subject", "landmarks",
    "attr_gender", "attr_skin_tone", "attr_age", "attr_glasses", "attr_hair", "attr_hair_colour",
    "attr_beard", "attr_roll", "attr_yaw", "attr_lighting", "attr_blur", "attr_noise",
    "attr_occlusion",
)

_SKIN = {"light": [(240, 205, 180), (230, 190, 160), (245, 215, 195)],
         "medium": [(205, 155, 115), (190, 140, 100), (215, 170, 125)],
         "dark": [(125, 85, 60), (105, 70, 50), (145, 100, 70)]}
_HAIR_COLOURS = {"black": (30, 25, 25), "brown": (90, 60, 35), "blonde": (200, 165, 100),
                 "red": (150, 70, 35)}
_GREY = (175, 175, 175)
_EYE_COLOURS = [(80, 50, 30), (60, 40, 25), (70, 110, 150), (80, 110, 70)]
_WORDS = ["HELLO", "LOL", "OMG", "SALE", "WOW", "#TBT", "2019", "NOPE", "YES", "COOL", "HAHA"]


def _choice(rng: np.random.Generator, weights: dict) -> Any:
    keys = list(weights)
    w = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _resolve_preset(preset: str, overrides: dict | None) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])  # values are replaced, never mutated, so a shallow copy will do
    for k, v in (overrides or {}).items():
        if k not in cfg:
            raise ValueError(f"unknown preset key {k!r}; known: {', '.join(sorted(cfg))}")
        # dict-valued settings (class mixes) are replaced whole, not merged: a partial
        # mix would silently keep the base's other classes
        cfg[k] = v
    if overrides and "subject_prefix" not in overrides:
        # other mixes must never reuse the presets' subject ids
        h = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
        cfg["subject_prefix"] = f"{cfg['subject_prefix']}x{h}"
    return cfg


def _split_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Exact class counts summing to n (largest remainder)."""
    keys = list(weights)
    w = np.array([weights[k] for k in keys], float)
    raw = n * w / w.sum()
    base = np.floor(raw).astype(int)
    rem = n - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rem]] += 1
    return dict(zip(keys, base.tolist()))


def _sample_identity(cfg: dict, gender: str, rng: np.random.Generator) -> dict:
    male = gender == "male"
    tone = _choice(rng, cfg["skin_tone"])
    skin = np.array(_SKIN[tone][int(rng.integers(3))], float) + rng.normal(0, 6, 3)
    old = rng.random() < cfg["p_old"]
    hair_name = _choice(rng, {"black": 0.35, "brown": 0.35, "blonde": 0.18, "red": 0.12}
                        if tone == "light" else {"black": 0.7, "brown": 0.3})
    hair = np.array(_HAIR_COLOURS[hair_name], float)
    if old:
        hair = hair * 0.3 + np.array(_GREY) * 0.7
        hair_name = "grey"
    if male:
        style = _choice(rng, {"short": 0.55, "buzz": 0.15, "curly": 0.12,
                              "bald": 0.35 if old else 0.06})
        beard = _choice(rng, {"none": 1 - cfg["p_beard_male"], "stubble": cfg["p_beard_male"] * 0.55,
                              "beard": cfg["p_beard_male"] * 0.45})
    else:
        style = _choice(rng, {"long": 0.5, "bob": 0.25, "bun": 0.15, "curly": 0.1})
        beard = "none"
    lip = _mix(_shade(skin, 0.78), (200, 60, 70), 0.35 if not male else 0.15)
    if not male and rng.random() < 0.3:
        lip = _mix(lip, (185, 30, 50), 0.5)  # lipstick
    ident = {
        "face_w": rng.uniform(0.78, 0.86) if male else rng.uniform(0.72, 0.80),
        "face_h": rng.uniform(0.98, 1.1),
        "jaw": rng.uniform(0.7, 0.9) if male else rng.uniform(0.95, 1.25),
        "eye_sep": rng.uniform(0.30, 0.36),
        "eye_y": rng.uniform(-0.12, -0.05),
        "eye_w": rng.uniform(0.135, 0.16),
        "eye_h": rng.uniform(0.06, 0.075) * (1.08 if not male else 1.0),
        "brow_gap": rng.uniform(0.15, 0.19) if male else rng.uniform(0.17, 0.22),
        "brow_thick": rng.uniform(0.055, 0.075) if male else rng.uniform(0.038, 0.05),
        "brow_arch": rng.uniform(0.0, 0.025) if male else rng.uniform(0.02, 0.045),
        "nose_len": rng.uniform(0.31, 0.40),
        "nose_w": rng.uniform(0.09, 0.12),
        "mouth_w": rng.uniform(0.22, 0.28),
        "mouth_gap": rng.uniform(0.18, 0.22),
        "lip_thick": rng.uniform(0.036, 0.05) if male else rng.uniform(0.048, 0.062),
        "gender": gender,
        "age": "old" if old else "young",
        "skin": tuple(int(v) for v in np.clip(skin, 0, 255)),
        "lip_color": lip,
        "eye_color": _EYE_COLOURS[int(rng.integers(len(_EYE_COLOURS)))] if tone == "light"
        else _EYE_COLOURS[int(rng.integers(2))],
        "hair_style": style,
        "hair_color": tuple(int(v) for v in hair),
        "beard": beard,
        "glasses": bool(rng.random() < cfg["p_glasses"]),
        "glasses_color": [(25, 25, 25), (90, 55, 30), (140, 140, 150)][int(rng.integers(3))],
        "clothes_color": tuple(int(v) for v in rng.integers(30, 220, 3)),
    }
    attrs = {"attr_gender": gender, "attr_skin_tone": tone, "attr_age": ident["age"],
             "attr_glasses": "yes" if ident["glasses"] else "no", "attr_hair": style,
             "attr_hair_colour": hair_name, "attr_beard": beard}
    # a resting-face offset: some people look a little stern or sad at rest
    resting = np.zeros(len(EXPRESSION_PARAMS))
    resting[1] = rng.normal(0, 0.12)   # brow_inner
    resting[3] = rng.normal(0, 0.10)   # mouth_curve
    return {"params": ident, "attrs": attrs, "resting": resting}


def _sample_nuisance(cfg: dict, ident: dict, rng: np.random.Generator) -> tuple[dict, dict]:
    roll = float(np.clip(rng.normal(0, cfg["roll_sd"]), -cfg["max_roll"], cfg["max_roll"]))
    yaw = float(np.clip(rng.normal(0, cfg["yaw_sd"]), -cfg["max_yaw"], cfg["max_yaw"]))
    scale = rng.uniform(*cfg["scale"])
    # keep the head (about 1.1 * scale of the frame from its centre to the chin, after roll)
    # inside the frame, but otherwise place it anywhere: faces are not centred.
    half = 0.5 * scale * 1.05
    lo, hi = half, 1 - half
    cx = rng.uniform(lo, hi) if hi > lo else 0.5
    cy = rng.uniform(lo, hi) if hi > lo else 0.5
    light = _choice(rng, cfg["lighting"])
    if light == "even":
        strength, bright = rng.uniform(0.0, 0.1), rng.uniform(0.95, 1.1)
    elif light == "side":
        strength, bright = rng.uniform(*cfg["side_strength"]), rng.uniform(0.85, 1.05)
    else:
        strength, bright = rng.uniform(0.0, 0.2), rng.uniform(*cfg["dim_brightness"])
    # side light comes mostly from the left or right
    light_dir = float(rng.choice([0.0, 180.0]) + rng.normal(0, 25))
    bg = _choice(rng, cfg["background"])
    hsv = np.array([rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.9)])
    c1 = np.asarray(Image.new("HSV", (1, 1), tuple(int(v * 255) for v in hsv)).convert("RGB"))[0, 0]
    c2 = np.clip(c1.astype(float) * rng.uniform(0.55, 1.3) + rng.normal(0, 25, 3), 0, 255)
    occ = _choice(rng, cfg["occlusion"])
    blur = int(_choice(rng, cfg["blur"]))
    noise = int(_choice(rng, cfg["noise"]))
    nuis = {
        "roll": roll, "yaw": yaw, "scale": scale, "cx": cx, "cy": cy,
        "lighting": light, "light_dir": light_dir, "light_strength": strength, "brightness": bright,
        "blur": blur, "noise": noise,
        "background": bg, "bg_color": tuple(int(v) for v in c1), "bg_color2": tuple(int(v) for v in c2),
        "occlusion": occ,
        "occ_target": _choice(rng, {"mouth": 0.5, "left_eye": 0.2, "right_eye": 0.2, "centre": 0.1}),
        "occ_angle": float(rng.uniform(-60, 60)),
        "occ_word": _WORDS[int(rng.integers(len(_WORDS)))],
        "occ_color": [(255, 255, 255), (255, 230, 0), (230, 30, 30), (20, 20, 20)][int(rng.integers(4))],
        "occ_skin": tuple(int(v) for v in np.clip(np.array(ident["skin"]) * rng.uniform(0.92, 1.08), 0, 255)),
    }
    attrs = {"attr_roll": int(round(roll)), "attr_yaw": int(round(yaw)), "attr_lighting": light,
             "attr_blur": blur, "attr_noise": noise, "attr_occlusion": occ}
    return nuis, attrs


def synth_dataset(
    preset: str,
    n: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    size: int = 112,
    images_per_subject: int = 8,
    overrides: dict | None = None,
    label_set: str = "basic7",
) -> pd.DataFrame:
    """Generate ``n`` labelled synthetic faces and their manifest.

    Writes PNGs to ``out_dir/images/<label>/<subject>_<k>.png`` and ``out_dir/manifest.csv``.
    PNG, because it is lossless (compression artefacts would be an uncontrolled nuisance on
    top of the ones we choose) and byte-for-byte reproducible; at 112 px a face is ~20 KB.

    Args:
        preset: ``"reference"`` or ``"production"`` (see ``PRESETS``).
        n: number of images; the class counts follow the preset's ``class_weights`` exactly
            (largest remainder) and sum to ``n``.
        out_dir: output folder (created if needed; existing files are overwritten, stale
            ones from an earlier, larger run are not removed).
        seed: everything is derived from ``(preset or overrides, seed, index)``, so the same
            arguments give the same files byte for byte.
        size: image side in pixels.
        images_per_subject: images per identity (the last subject of a gender may get up
            to ``2 * images_per_subject - 1``).
        overrides: replaces preset keys (e.g. ``{"p_male": {"default": 0.5}}`` or a new
            ``occlusion`` mix); unknown keys raise. Unless ``subject_prefix`` is given, the
            subject ids get a prefix derived from the overrides so they never collide with
            the presets' ids.
        label_set: ``"basic7"`` or ``"basic6"`` (no neutral).

    Returns:
        The manifest as a DataFrame, identical to reading back ``manifest.csv``: ``path``
        (relative, forward slashes), ``label``, ``subject``, ``landmarks`` (``"x1 y1 ... x5
        y5"`` in pixels, 2 decimals; left eye, right eye, nose, left and right mouth corner),
        and the ``attr_*`` columns of ``MANIFEST_COLUMNS``.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if images_per_subject < 1:
        raise ValueError("images_per_subject must be >= 1")
    cfg = _resolve_preset(preset, overrides)
    labels = get_label_set(label_set)
    missing = [lab for lab in labels if lab not in EXPRESSION_PROTOTYPES]
    if missing:
        raise ValueError(f"label set {label_set!r} has labels the generator cannot draw: {missing}")
    weights = {lab: cfg["class_weights"].get(lab, 0.0) for lab in labels}
    if sum(weights.values()) <= 0:
        raise ValueError("class_weights give zero weight to every label of the label set")
    prefix = str(cfg["subject_prefix"])
    # a stable (process-independent) key: Python's hash() is salted per process
    key = zlib.crc32(prefix.encode())
    out = Path(out_dir)

    # 1. labels (exact counts), then gender per image from P(male | label)
    rng0 = np.random.default_rng(np.random.SeedSequence([seed, key, 0]))
    counts = _split_counts(n, weights)
    lab_arr = np.array([lab for lab in labels for _ in range(counts[lab])], dtype=object)
    lab_arr = lab_arr[rng0.permutation(n)]
    pm = cfg["p_male"]
    male = np.array([rng0.random() < pm.get(lab, pm.get("default", 0.5)) for lab in lab_arr])

    # 2. subjects: chunk each gender's images into identities
    slots: list[tuple[str, list[int]]] = []
    for gender, mask in (("female", ~male), ("male", male)):
        idx = np.flatnonzero(mask).tolist()
        chunks = [idx[i:i + images_per_subject] for i in range(0, len(idx), images_per_subject)]
        if images_per_subject > 1 and len(chunks) > 1 and len(chunks[-1]) < max(2, images_per_subject // 2):
            chunks[-2].extend(chunks.pop())  # no lonely one-image subjects
        slots.extend((gender, c) for c in chunks)

    rows = []
    for s_idx, (gender, members) in enumerate(slots):
        # "ref-s0042" for seed 0, "ref-7-s0042" for seed 7: other seeds never reuse ids
        subject = "-".join([prefix, *([str(seed)] if seed else []), f"s{s_idx:04d}"])
        ident = _sample_identity(cfg, gender, np.random.default_rng(
            np.random.SeedSequence([seed, key, 1, s_idx])))
        for k, i in enumerate(members):
            rng = np.random.default_rng(np.random.SeedSequence([seed, key, 2, i]))
            label = str(lab_arr[i])
            expr = sample_expression(label, rng, intensity=tuple(cfg["expression_intensity"]),
                                     noise=float(cfg["expression_noise"]), resting=ident["resting"])
            nuis, n_attrs = _sample_nuisance(cfg, ident["params"], rng)
            img, lm = generate_face({**ident["params"], **expr, **nuis}, size, rng)
            rel = f"images/{label}/{subject}_{k:02d}.png"
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            img.save(dst, format="PNG", compress_level=1)  # level 1: ~1 ms faster, ~10% larger
            rows.append({
                "path": rel, "label": label, "subject": subject,
                "landmarks": " ".join(f"{v:.2f}" for v in lm.reshape(-1)),
                **ident["attrs"], **n_attrs,
            })
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "manifest.csv", index=False, lineterminator="\n")
    return pd.read_csv(out / "manifest.csv", dtype={"subject": str, "landmarks": str})
