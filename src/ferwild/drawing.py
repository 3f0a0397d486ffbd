"""What a recognised frame looks like: each face's box and ``label 87%`` tag, and live video's bars.

Annotated photos and videos (``ferwild predict --annotate``), the live window and recording
(``ferwild live``) are drawn here. A face has one colour (:func:`face_colour`, the web page's
too), shared by its box and its tag; tags never cover another face (:func:`place_tags`, which
``static/app.js`` follows step for step).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ferwild.data.faces import Box
from ferwild.data.images import load_image
from ferwild.recognizer import Face, ImageLike, ImageResult, to_rgb_array

__all__ = ["draw_live", "draw_result", "face_colour", "place_tags"]

# The web page's colours (static/app.js COLORS), so a face has the same colour on the page and
# in annotated files; chosen to stay distinguishable on photos and for common colour-vision
# deficiencies. Tags carry dark text on them.
_PALETTE = [(255, 122, 0), (0, 179, 255), (255, 61, 139), (61, 220, 132), (255, 212, 0), (179, 136, 255),
            (0, 229, 208), (255, 82, 82)]
_TAG_TEXT = (17, 17, 17)



def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tags(boxes: Sequence[Box], sizes: Sequence[tuple[float, float]], width: float, height: float,
               gap: float = 1.0) -> list[Box | None]:
    """Where each face's label tag goes: a rectangle inside the image that covers no other
    face's box and no tag placed before it, or None when no spot is free (the caller then
    numbers the face and lists it in a legend).

    Spots are tried in reading order of preference: above the box (left-aligned, then
    right-aligned), below it, inside its top edge, to its right, to its left; each clamped into
    the image. A tag may cover its own face's box (inside the top edge), never another's.
    """
    placed: list[Box] = []
    out: list[Box | None] = []
    for i, ((x1, y1, x2, y2), (w, h)) in enumerate(zip(boxes, sizes)):
        others = [b for j, b in enumerate(boxes) if j != i]
        candidates = [(x1, y1 - h - gap), (x2 - w, y1 - h - gap), (x1, y2 + gap), (x2 - w, y2 + gap),
                      (x1, y1), (x2 + gap, y1), (x1 - w - gap, y1), (x2 + gap, y2 - h), (x1 - w - gap, y2 - h)]
        spot = None
        for cx, cy in candidates:
            cx = min(max(0.0, cx), width - w)
            cy = min(max(0.0, cy), height - h)
            if cx < 0 or cy < 0:
                continue  # the tag is larger than the image
            rect = (cx, cy, cx + w, cy + h)
            if not any(_overlaps(rect, b) for b in others) and not any(_overlaps(rect, t) for t in placed):
                spot = rect
                break
        out.append(spot)
        if spot is not None:
            placed.append(spot)
    return out


def face_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th face (or track) of an image: one per face, so a tag can be
    matched to its box."""
    return _PALETTE[index % len(_PALETTE)]


def _tag_text(face: Face) -> str:
    """``label 87%``: the smoothed reading when the face has one (video), else this frame's."""
    if face.smoothed_label is not None and face.smoothed:
        p = face.smoothed.get(face.smoothed_label)
        return face.smoothed_label if p is None else f"{face.smoothed_label} {p:.0%}"
    return f"{face.label} {face.confidence:.0%}"


def draw_result(image: ImageLike, result: ImageResult) -> Image.Image:
    """The image with each face's box and ``label 87%`` drawn on it (a PIL RGB image); an image
    in which no face was found says so in its top-left corner.

    Each face has its own colour (:func:`face_colour`; by track in a video), shared by its box
    and its tag; a smoothed reading (video) is shown in place of the frame's own. Tags are
    placed by :func:`place_tags`: never over another face's box or tag; a face whose tag fits
    nowhere gets a number in its box and a line in a legend at the image's bottom-left.
    """
    from PIL import ImageDraw, ImageFont

    arr = load_image(image).array if isinstance(image, (str, os.PathLike)) else to_rgb_array(image)
    canvas = Image.fromarray(arr).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 45)))

    def measure(text: str) -> tuple[float, float, float, float]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return (right - left) + 2 * width, (bottom - top) + 2 * width, left, top

    texts = [_tag_text(face) for face in result.faces]
    sizes = [measure(t)[:2] for t in texts]
    boxes = [tuple(float(v) for v in face.box) for face in result.faces]
    spots = place_tags(boxes, sizes, canvas.width, canvas.height, gap=width)
    legend = []
    for i, (box, text, spot) in enumerate(zip(boxes, texts, spots)):
        track = result.faces[i].track
        color = face_colour(i if track is None else track)  # a tracked person keeps their colour
        draw.rectangle(list(box), outline=color, width=width)
        if spot is None:
            text = str(len(legend) + 1)
            legend.append((color, f"{text} {texts[i]}"))
            w, h, _, _ = measure(text)
            spot = (box[0] + width, box[1] + width, box[0] + width + w, box[1] + width + h)
        _, _, left, top = measure(text)
        draw.rectangle(list(spot), fill=color)
        draw.text((spot[0] + width - left, spot[1] + width - top), text, fill=_TAG_TEXT, font=font)
    y = canvas.height
    for color, line in reversed(legend):
        w, h, left, top = measure(line)
        y -= h
        draw.rectangle([0, y, w, y + h], fill=color)
        draw.text((width - left, y + width - top), line, fill=_TAG_TEXT, font=font)
    if not result.faces:
        text = "no face found"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.rectangle([0, 0, (right - left) + 2 * width, (bottom - top) + 2 * width], fill=(60, 60, 60))
        draw.text((width - left, width - top), text, fill=(255, 255, 255), font=font)
    return canvas


def draw_live(rgb: np.ndarray, result: ImageResult, label_names: Sequence[str], status: str = "",
              max_panels: int = 4) -> Image.Image:
    """The frame with boxes and tags (:func:`draw_result`) and, in a strip on its right, each
    person's smoothed probabilities as bars (the largest ``max_panels`` faces), ``status`` (frame
    rate, drops) on top of the strip. Returns a PIL RGB image."""
    from PIL import ImageDraw, ImageFont

    frame = draw_result(rgb, result)
    h = frame.height
    font_size = max(11, round(h / 40))
    font = ImageFont.load_default(size=font_size)
    strip_w = max(180, round(h * 0.55))
    canvas = Image.new("RGB", (frame.width + strip_w, h), (24, 24, 24))
    canvas.paste(frame, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = frame.width + 8, 6
    if status:
        draw.text((x0, y), status, fill=(230, 230, 230), font=font)
        y += font_size + 8
    line = font_size + 3
    bar_x = x0 + round(strip_w * 0.45)
    bar_w = strip_w - (bar_x - frame.width) - 10
    for i, face in enumerate(result.faces[:max_panels]):
        if y + line * (len(label_names) + 1) > h:
            break
        colour = face_colour(i if face.track is None else face.track)
        probs = face.smoothed or face.probabilities
        title = f"person {face.track}" if face.track is not None else f"face {i + 1}"
        draw.rectangle([x0, y + 2, x0 + 10, y + font_size], fill=colour)
        draw.text((x0 + 16, y), f"{title}: {face.smoothed_label or face.label}", fill=(255, 255, 255), font=font)
        y += line + 2
        for name in label_names:
            p = float(probs.get(name, 0.0))
            draw.text((x0, y), name[:10], fill=(200, 200, 200), font=font)
            draw.rectangle([bar_x, y + 3, bar_x + bar_w, y + font_size - 1], outline=(90, 90, 90))
            draw.rectangle([bar_x, y + 3, bar_x + max(1, round(bar_w * p)), y + font_size - 1], fill=colour)
            y += line
        y += 6
    return canvas
