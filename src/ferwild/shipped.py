"""Trained models that ship inside the package, usable offline with nothing downloaded.

A shipped model is a minimal, read-only run directory under ``ferwild/weights/<name>/``: the
training ``config.yaml`` and ``metrics.csv``, ``card.json`` (its measured figures) and one
checkpoint, ``checkpoints/final/`` (``model.safetensors`` in float16 + ``state.json``: model
config, label names, face alignment). Everything that takes ``--run`` takes it by name::

    ferwild predict photos/ --out preds/                    # the default shipped model
    ferwild evaluate ferwild:fer2013_vgg --data PREPARED    # any command's --run / RUN
    Recognizer.default()                                    # the Python API

Shipped runs are made from a finished ``ferwild train`` run by :func:`ferwild.runs.pack_run` (see
``recipes/``). This module depends on nothing else of ferwild. Four ship: ``ferplus_vgg``, the
default (trained on FER+'s crowd votes, chosen and calibrated on real photos; MODEL_CARD.md in the
repository), ``fer2013_vgg`` (FER2013's own labels; docs/model_card_fer2013_vgg.md), the model to
compare on FER2013's benchmark, ``ferplus_live``, the live paths' model, which ships the ONNX file
those paths run (docs/model_card_ferplus_live.md), and ``ferplus_ensemble``, the accurate model at
twice the default's cost (docs/model_card_ferplus_ensemble.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


#: ``--run ferwild:<name>`` names a shipped model.
PREFIX = "ferwild:"
#: What ``predict``/``serve``/``Recognizer.default()`` use when no model is given.
DEFAULT_MODEL = "ferplus_vgg"
#: What the live paths use when no model is given: ``ferwild live``, the web page's Live mode and
#: ``predict --detector fast`` (the default's network read once per face, precise BN, int8; see
#: docs/model_card_ferplus_live.md).
LIVE_MODEL = "ferplus_live"
#: How far below the default's accuracy (a fraction) the live model may read and still be the live default.
LIVE_BAR = 0.015
#: The ONNX file inside a shipped model folder that the live paths run (no export, no torch),
#: unless its card names another (``live_onnx``: the int8 twin, when the recipe measured it reading
#: faces as its fp32 source does; ``recipes/ship_ferplus_models.py``).
LIVE_ONNX = "model.onnx"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARD_FILE = "card.json"


class ShippedModelError(ValueError):
    """An unknown shipped model name (the message lists the shipped ones)."""


def is_shipped(spec: str | os.PathLike) -> bool:
    """True when ``spec`` is written ``ferwild:<name>``."""
    return str(spec).startswith(PREFIX)


def shipped_names() -> list[str]:
    """Names of the models inside this installation (folders holding a packed checkpoint)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "checkpoints" / "BEST").is_file())


def shipped_model_dir(spec: str | os.PathLike) -> Path:
    """The run directory of ``ferwild:<name>`` (or a bare ``<name>``).

    Raises:
        ShippedModelError: no shipped model has that name.
    """
    name = str(spec)[len(PREFIX):] if is_shipped(spec) else str(spec)
    if name not in shipped_names():
        have = ", ".join(PREFIX + n for n in shipped_names()) or "none in this installation"
        raise ShippedModelError(f"no shipped model {PREFIX}{name} (shipped: {have})")
    return WEIGHTS_DIR / name


def default_run() -> str:
    """``ferwild:<DEFAULT_MODEL>``, the model used when a command is given none."""
    return PREFIX + DEFAULT_MODEL


def live_run() -> str:
    """The model of the live paths: ``ferwild:<LIVE_MODEL>`` when this installation ships it and its
    card says it earned the place (``live_default``: measured within :data:`LIVE_BAR` of the
    default on FER+ test and on wild_dev's report people, decided by
    ``recipes/ship_ferplus_models.py``), else :func:`default_run`. A faster model that reads
    faces clearly worse stays a choice (``--run ferwild:ferplus_live``), not the default."""
    if LIVE_MODEL in shipped_names() and model_card(LIVE_MODEL).get("live_default") is True:
        return PREFIX + LIVE_MODEL
    return default_run()


def shipped_onnx(spec: str | os.PathLike) -> Path | None:
    """The ready ONNX file inside shipped model ``spec``'s folder: the one its card names
    (``live_onnx``), else :data:`LIVE_ONNX`; ``None`` when ``spec`` is not a shipped model or
    ships none."""
    if not is_shipped(spec):
        return None
    try:
        folder = shipped_model_dir(spec)
        card = model_card(spec) if (folder / CARD_FILE).is_file() else {}
    except ShippedModelError:
        return None
    path = folder / (card.get("live_onnx") or LIVE_ONNX)
    return path if path.is_file() else None


def model_card(spec: str | os.PathLike) -> dict[str, Any]:
    """A shipped model's ``card.json``: data, recipe, test figures, hardware, wall time."""
    return json.loads((shipped_model_dir(spec) / CARD_FILE).read_text(encoding="utf-8"))


def _wild_figures(card: dict[str, Any], key: str) -> dict[str, float]:
    figures = (card.get("results") or {}).get(key) or {}
    return {k: figures[k] for k in ("accuracy", "macro_f1") if figures.get(k) is not None}


def list_shipped() -> list[dict[str, Any]]:
    """One row per shipped model: name (``ferwild:<name>``), architecture, data, test figures
    (``test``, on ``test_name``), real-photo figures on ``wild_dev``'s report people, whom no
    choice of any shipped model saw (``wild_report``, with ``wild_report_source``: the card that
    measured them), and on all its photos (``wild_dev``: choice and report people), and the
    size its card states (the packed files; the folder's total where the card has none)."""
    cards = {name: model_card(name) for name in shipped_names()}
    rows = []
    for name, card in cards.items():
        report, source = _wild_figures(card, "wild_report"), PREFIX + name
        if not report:
            # a model measured as another shipped model's baseline, the same way on the same people
            for other, other_card in cards.items():
                base = (other_card.get("baseline_results") or {}).get("wild_report") or {}
                if other_card.get("baseline") == PREFIX + name and base.get("accuracy") is not None:
                    report, source = {k: base[k] for k in ("accuracy", "macro_f1")}, PREFIX + other
                    break
        size = card.get("size_bytes") or sum(f.stat().st_size for f in (WEIGHTS_DIR / name).rglob("*") if f.is_file())
        rows.append({"name": PREFIX + name, "model": card.get("architecture", ""),
                     "data": card.get("dataset", ""), "test": card.get("test", {}),
                     # cards before test_name existed measured FER2013's PrivateTest
                     "test_name": card.get("test_name", "FER2013 PrivateTest"),
                     "wild_report": report, "wild_report_source": source if report else None,
                     "wild_dev": _wild_figures(card, "wild_all"), "size_bytes": size})
    return rows


def _is_shipped_dir(run_dir: Path) -> bool:
    """True when ``run_dir`` (resolved) is a model folder of this installation."""
    return run_dir.parent == WEIGHTS_DIR


def describe_run(run_dir: str | os.PathLike, state: dict[str, Any]) -> str:
    """One line saying what a run's model is and what it was trained on (for people: the web
    page, ``/info``): a shipped model's card figures, else the training data's folder name."""
    run_dir = Path(run_dir).resolve()
    name = (state.get("model_config") or {}).get("name", "model")
    if _is_shipped_dir(run_dir) and (run_dir / CARD_FILE).is_file():
        card = json.loads((run_dir / CARD_FILE).read_text(encoding="utf-8"))
        test = card.get("test") or {}
        figures = (f": {100 * test['accuracy']:.1f}% accuracy, {100 * test['macro_f1']:.1f}% macro-F1 on its "
                   f"held-out test faces" if test.get("accuracy") is not None else "")
        return f"{PREFIX}{run_dir.name}, {name} trained on {card.get('dataset', 'its data')}{figures}"
    data = ((state.get("config") or {}).get("data") or {}).get("path")
    return f"{name} trained on {Path(data).name if data else 'unknown data'} (run {run_dir.name})"


def cache_root() -> Path:
    """ferwild's per-user cache folder: ``$FERWILD_CACHE``, else ``$XDG_CACHE_HOME/ferwild``, else
    ``~/.cache/ferwild``. Every cache lives under it (shipped models' derived files, ONNX exports)."""
    if os.environ.get("FERWILD_CACHE"):
        return Path(os.environ["FERWILD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferwild"


def cache_dir(run_dir: str | os.PathLike, kind: str) -> Path:
    """Where derived files of a run (e.g. the audit's cached forward passes) go: ``RUN/<kind>``,
    or under :func:`cache_root` for a shipped model, whose folder belongs to the installation."""
    run_dir = Path(run_dir).resolve()
    if _is_shipped_dir(run_dir):
        return cache_root() / "shipped" / run_dir.name / kind
    return run_dir / kind
