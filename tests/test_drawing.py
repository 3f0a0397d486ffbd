"""Drawing recognised faces (ferwild.drawing): tags inside the image and off other faces, the
web page's colours, live video's probability bars."""

from __future__ import annotations

import numpy as np
import pytest

from ferwild.recognizer import Face, ImageResult, Recognizer


def test_drawn_tags_stay_inside_the_image():
    """A face at the right edge gets its label tag shifted left (fully visible), not clipped."""
    from ferwild.drawing import _PALETTE, draw_result

    image = np.full((112, 112, 3), 255, np.uint8)
    face = Face((90.0, 40.0, 112.0, 70.0), None, None, "happiness", 0.87, {"happiness": 0.87}, "mtcnn")
    drawn = np.asarray(draw_result(image, ImageResult("x", 112, 112, faces=[face])))
    assert drawn.shape == image.shape
    coloured = np.all(drawn == np.array(_PALETTE[0], np.uint8), axis=2)
    rows, cols = np.nonzero(coloured[:40])  # above the box (where there is room): the tag
    assert len(rows) > 0
    assert cols.min() < 90 - 20  # the tag ("happiness 87%") starts well left of the box
    assert cols.max() == 111  # and reaches the edge without being cut by it


def test_place_tags_never_covers_another_face_or_tag():
    from ferwild.drawing import _overlaps, place_tags

    # a row of faces touching each other: tags cannot sit beside them, only above/below
    boxes = [(10.0 + 40 * i, 60.0, 48.0 + 40 * i, 100.0) for i in range(5)]
    sizes = [(70.0, 14.0)] * 5                      # each tag wider than a face
    spots = place_tags(boxes, sizes, 240, 200)
    assert all(s is not None for s in spots)
    for i, spot in enumerate(spots):
        assert 0 <= spot[0] and spot[2] <= 240 and 0 <= spot[1] and spot[3] <= 200
        assert not any(_overlaps(spot, b) for j, b in enumerate(boxes) if j != i)
        assert not any(_overlaps(spot, t) for j, t in enumerate(spots) if j != i)
    # no room anywhere: the face is left for the numbered legend
    assert place_tags([(0.0, 0.0, 50.0, 50.0), (50.0, 0.0, 100.0, 50.0)], [(90.0, 49.0)] * 2, 100, 50) == [None, None]


@pytest.mark.shared_data
def test_annotated_multi_face_photo_tags_cover_no_other_face(shared_data, tiny_run):
    """On a real 5-face photo, each face's colour appears inside no other face's box (tags are
    drawn in their face's colour), and every face has its own colour."""
    from ferwild.drawing import draw_result, face_colour

    run, _, _ = tiny_run
    result = Recognizer.from_run(run, detector="mtcnn").analyze([shared_data / "face_photos/pyfeat/multi_face.jpg"])[0]
    assert len(result.faces) >= 4
    drawn = np.asarray(draw_result(shared_data / "face_photos/pyfeat/multi_face.jpg", result))
    colours = [face_colour(i) for i in range(len(result.faces))]
    assert len(set(colours)) == len(colours)
    width = max(2, round(max(drawn.shape[:2]) / 300))
    for j, face in enumerate(result.faces):
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        inside = drawn[max(0, y1 + width + 1):max(0, y2 - width - 1), max(0, x1 + width + 1):max(0, x2 - width - 1)]
        for i, colour in enumerate(colours):
            if i != j:
                hits = int(np.all(inside == np.array(colour, np.uint8), axis=2).sum())
                assert hits < 5, f"face {i}'s tag covers face {j}'s box ({hits} pixels)"


def test_page_and_annotated_files_share_face_colours():
    import re
    from pathlib import Path

    import ferwild
    from ferwild.drawing import face_colour

    js = (Path(ferwild.__file__).parent / "static" / "app.js").read_text()
    hexes = re.findall(r'"#([0-9a-f]{6})"', re.search(r"const COLORS = \[(.*?)\];", js).group(1))
    assert len(hexes) >= 8
    assert [tuple(int(h[k:k + 2], 16) for k in (0, 2, 4)) for h in hexes] == [face_colour(i) for i in range(len(hexes))]


def test_live_frame_has_a_bar_strip_per_person():
    from ferwild.drawing import draw_live, face_colour

    image = np.full((120, 160, 3), 255, np.uint8)
    probs = {"happiness": 0.9, "neutral": 0.1}
    face = Face((20.0, 30.0, 80.0, 90.0), None, None, "happiness", 0.9, probs, "fast", track=2,
                smoothed={"happiness": 0.7, "neutral": 0.3}, smoothed_label="happiness")
    drawn = np.asarray(draw_live(image, ImageResult("x", 160, 120, faces=[face]), list(probs), "9.0 fps"))
    assert drawn.shape[0] == 120 and drawn.shape[1] == 160 + 180   # the frame, then a 180 px strip
    assert np.array_equal(drawn[:, :160][0, -1], [255, 255, 255])
    strip = drawn[:, 160:]
    bar = np.all(strip == np.array(face_colour(2), np.uint8), axis=2)   # person 2's colour, as its box
    assert bar.sum() > 50
