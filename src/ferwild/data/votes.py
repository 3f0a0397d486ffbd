"""Crowd labels: vote counts per face (FER+), the hard label they imply, and their distribution.

FER+ (Barsoum et al., ICMI 2016) had ten people label every FER2013 face. A prepared dataset
keeps those counts as manifest columns named ``votes_<name>`` (:data:`VOTE_COLUMNS`, FER+'s
order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, nf), so
that training can fit the vote distribution (:func:`vote_distribution`) and evaluation can
score a model against the crowd, not only against one label.

The hard label, which drives stratification, class weights, selection and the usual
accuracy, follows a rule (``prepare --vote-rule``):

``majority`` (default)
    the class with the most votes. A face is **excluded** (and counted in the summary) when two
    or more classes share the top count (a tie), or when the top class is ``unknown`` or ``nf``
    (not a face). With 7 classes, a contempt-majority face is excluded like any label outside
    the set; with ``--labels affectnet8`` it is kept as contempt.
``strict``
    FER+'s own "majority" training mode (Microsoft's FERPlus code): single votes are dropped
    as outliers, then the top class needs more than half of the remaining votes; otherwise
    the face is excluded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ferwild.labels import UnknownLabelError, normalize_label

#: FER+'s vote order (its label.csv and fer2013new.csv columns).
VOTE_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                "unknown", "nf")
VOTE_PREFIX = "votes_"
#: The manifest's vote columns, in FER+'s order: the file contract.
VOTE_COLUMNS = tuple(VOTE_PREFIX + name for name in VOTE_CLASSES)
#: Votes that are not an expression: "can't tell" and "not a face".
NON_EXPRESSION = ("unknown", "nf")
VOTE_RULES = ("majority", "strict")
_NON_EXPRESSION_ALIASES = {"unknown": "unknown", "nf": "nf", "notaface": "nf", "noface": "nf"}


def vote_class(column: str) -> str:
    """The class a ``votes_<name>`` column counts: a canonical expression, ``unknown`` or ``nf``.

    Raises:
        UnknownLabelError: a name that is neither an expression nor unknown / not-a-face.
    """
    name = column[len(VOTE_PREFIX):] if column.startswith(VOTE_PREFIX) else column
    key = name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    if key in _NON_EXPRESSION_ALIASES:
        return _NON_EXPRESSION_ALIASES[key]
    return normalize_label(name)


def vote_columns(frame: pd.DataFrame) -> list[str]:
    """The ``votes_*`` columns of a frame, in FER+'s order first, then any others by name."""
    present = [c for c in frame.columns if str(c).startswith(VOTE_PREFIX)]
    order = {c: i for i, c in enumerate(VOTE_COLUMNS)}
    return sorted(present, key=lambda c: (order.get(c, len(order)), c))


def parse_vote_columns(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Vote counts as a float (N, K) array plus one problem per row ("" when fine).

    A row whose vote cells are all empty has no votes (a NaN row, no problem: it keeps its hard
    label). A row with some cells empty, a cell that is not a number, or a negative count gets a
    problem naming the column and value; its row is NaN.
    """
    n = len(frame)
    values = np.full((n, len(columns)), np.nan)
    problems = [""] * n
    if not columns:
        return values, problems
    raw = frame[list(columns)]
    empty = raw.apply(lambda s: s.map(lambda v: v is None or (isinstance(v, float) and np.isnan(v))
                                      or (isinstance(v, str) and v.strip() == ""))).to_numpy()
    parsed = raw.apply(lambda s: pd.to_numeric(s, errors="coerce")).to_numpy(dtype=np.float64)
    for i in range(n):
        if empty[i].all():
            continue
        bad = [j for j in range(len(columns)) if empty[i, j] or not np.isfinite(parsed[i, j]) or parsed[i, j] < 0]
        if bad:
            j = bad[0]
            value = "" if empty[i, j] else raw.iat[i, j]
            problems[i] = (f"bad votes: {columns[j]}={value!r} (vote counts must be numbers >= 0"
                           + (f"; {len(bad)} bad cells)" if len(bad) > 1 else ")"))
            continue
        values[i] = parsed[i]
    return values, problems


def hard_label(counts: np.ndarray, classes: Sequence[str], rule: str = "majority") -> tuple[str, str]:
    """``(label, reason)`` for one face's vote counts under ``rule`` (see the module docstring).

    ``label`` is a canonical class name ("" when the face gets none) and ``reason`` says why it
    got none ("" when it got one). ``classes`` names each count (:func:`vote_class` names).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if rule == "strict":
        counts = np.where(counts <= 1, 0.0, counts)   # FER+'s outlier removal: a lone vote
    total = counts.sum()
    if not np.isfinite(total) or total <= 0:
        return "", "no votes"
    top = counts.max()
    winners = [c for c, v in zip(classes, counts) if v == top]
    if len(winners) > 1:
        return "", f"vote tie ({', '.join(winners)})"
    winner = winners[0]
    if rule == "strict" and top <= total / 2:
        return "", f"no majority ({winner} has {top:g} of {total:g} votes)"
    if winner == "unknown":
        return "", "unknown majority (the crowd could not tell)"
    if winner == "nf":
        return "", "not-a-face majority"
    return winner, ""


def vote_distribution(frame: pd.DataFrame, label_names: Sequence[str]) -> np.ndarray:
    """Each row's votes over ``label_names`` (summing columns of the same class), normalised to 1.

    Votes for classes outside the label set (unknown, not-a-face, contempt in 7 classes) are
    left out before normalising, as FER+'s training code does. Rows without votes, or with no
    vote inside the label set, are NaN: the caller falls back to the hard label.
    """
    columns = vote_columns(frame)
    out = np.zeros((len(frame), len(label_names)), dtype=np.float64)
    index = {name: i for i, name in enumerate(label_names)}
    for column in columns:
        try:
            name = vote_class(column)
        except UnknownLabelError:
            continue
        if name in index:
            out[:, index[name]] += pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    total = out.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, out / total, np.nan)
    return out


def soft_targets(frame: pd.DataFrame, label_names: Sequence[str]) -> np.ndarray:
    """Training targets: the vote distribution where a row has votes, else its one-hot label."""
    dist = vote_distribution(frame, label_names)
    index = {name: i for i, name in enumerate(label_names)}
    missing = ~np.isfinite(dist).all(1)
    if missing.any():
        dist[missing] = 0.0
        ids = frame["label"].map(index).to_numpy()
        dist[np.flatnonzero(missing), ids[missing].astype(np.int64)] = 1.0
    return dist.astype(np.float32)


def has_votes(frame: pd.DataFrame) -> bool:
    """True when the frame carries vote columns with at least one row of votes."""
    columns = vote_columns(frame)
    return bool(columns) and bool(frame[columns].notna().any(axis=None))
