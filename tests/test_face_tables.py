"""The per-face CSV tables (ferwild.face_tables): the columns of each file stay exactly as they
are, one row builder feeds all three, and frames.csv keeps its fixed decimals."""

from __future__ import annotations

import csv
import io

from ferwild.face_tables import face_rows, frames_columns, frames_csv_row, prediction_columns, timeline_columns

LABELS = ["happiness", "neutral"]
FACE = {"box": [10.04, 20.0, 50.26, 60.0], "detection_confidence": 0.987654, "label": "happiness",
        "confidence": 0.91234, "probabilities": {"happiness": 0.91234, "neutral": 0.08766}, "track": 3,
        "smoothed_label": "happiness", "smoothed": {"happiness": 0.8, "neutral": 0.2}}


def test_each_file_keeps_its_columns():
    assert prediction_columns(LABELS) == [
        "source", "frame", "time_s", "face", "track", "n_faces", "x1", "y1", "x2", "y2", "detection_confidence",
        "label", "confidence", "prob_happiness", "prob_neutral", "error", "smoothed_label"]
    assert timeline_columns(LABELS) == ["frame", "time_s", "track", "label", "smoothed_label", "prob_happiness",
                                        "prob_neutral", "smoothed_happiness", "smoothed_neutral"]
    assert frames_columns(LABELS) == [
        "frame", "time_s", "face", "track", "x1", "y1", "x2", "y2", "detection_confidence", "label", "confidence",
        "smoothed_label", "prob_happiness", "prob_neutral", "smoothed_happiness", "smoothed_neutral"]


def test_rows_have_every_column_of_every_file():
    record = {"source": "a.mp4", "frame": 7, "time_s": 0.28, "n_faces": 2, "faces": [FACE, {**FACE, "track": 4}]}
    rows = face_rows(record, LABELS)
    assert [r["face"] for r in rows] == [0, 1] and [r["track"] for r in rows] == [3, 4]
    wanted = set(prediction_columns(LABELS)) | set(timeline_columns(LABELS)) | set(frames_columns(LABELS))
    assert all(wanted <= set(r) for r in rows)
    assert rows[0]["x1"] == 10.04 and rows[0]["prob_neutral"] == 0.08766 and rows[0]["smoothed_neutral"] == 0.2
    assert rows[0]["error"] == "" and rows[0]["n_faces"] == 2


def test_an_image_without_a_face_has_one_row_with_its_error():
    (row,) = face_rows({"source": "bad.png", "frame": None, "time_s": None, "n_faces": 0, "faces": [],
                        "error": "not an image"}, LABELS)
    assert row["face"] is None and row["error"] == "not an image" and row["label"] is None
    (row,) = face_rows({"source": "empty.png", "faces": []}, LABELS)
    assert row["error"] == "" and row["n_faces"] == 0


def test_frames_csv_keeps_its_fixed_decimals_and_empty_cells():
    columns = frames_columns(LABELS)
    (row,) = face_rows({"frame": 7, "time_s": 0.28, "faces": [FACE]}, LABELS)
    assert frames_csv_row(row, columns) == [7, "0.2800", 0, 3, "10.0", "20.0", "50.3", "60.0", "0.9877", "happiness",
                                            "0.9123", "happiness", "0.9123", "0.0877", "0.8000", "0.2000"]
    (empty,) = face_rows({"frame": 8, "time_s": 0.32, "faces": []}, LABELS)
    buffer = io.StringIO()
    csv.writer(buffer).writerow(frames_csv_row(empty, columns))
    # a frame without a face: its number and time, then one empty cell for each other column
    assert buffer.getvalue().strip() == "8,0.3200" + "," * (len(columns) - 2)
    no_smoothing = {**FACE, "smoothed": None, "smoothed_label": None, "detection_confidence": None, "track": None}
    (row,) = face_rows({"frame": 9, "time_s": 0.36, "faces": [no_smoothing]}, LABELS)
    cells = dict(zip(columns, frames_csv_row(row, columns)))
    assert cells["smoothed_label"] == cells["smoothed_happiness"] == cells["detection_confidence"] == ""
    assert cells["track"] == ""
