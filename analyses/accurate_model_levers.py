"""Two levers for the accurate model (issue 24), measured on the faces choices may use.

1. **Multi-crop test-time augmentation** (Barsoum et al. read FER+ faces as several crops). Each
   FER+ validation face is read as itself, shifted by 2 or 3 px in the four directions (the
   border repeated) and zoomed in and out by 10%, each view with its mirror; the class
   probabilities of a set of views are averaged. Each view's probabilities are the model's
   calibrated ones (its temperature applied per view), where a shipped model averages before
   its temperature: the "flip" set can differ from the card's flip figure by a few faces. For each set: accuracy, macro-F1 and the share
   of faces answered "neutral", against the model as shipped (the face and its mirror).
2. **Neutral held to the default's rate.** ``ferwild:ferplus_ensemble`` gained FER+ test accuracy
   almost only on neutral faces, answering neutral more often than the default. The issue asks
   that the accurate model not buy accuracy that way. The smallest neutral offset (subtracted
   from the log-probability of neutral, in steps of 0.05) that brings the ensemble's neutral
   answers on FER+ validation down to the default's is chosen there, then applied to the faces
   no choice saw (FER+ test, wild_dev's report people) beside both models as shipped.

The first part runs the models (cached per view under ``--work``); the second reads the
prediction files the ship script wrote (``recipes/ship_ferplus_models.py ensemble --work W``:
``W/ours/SET/predictions.parquet`` and ``W/default/SET/predictions.parquet``) and the default's
FER+ validation predictions (``ferwild evaluate ferwild:ferplus_vgg --split val``)::

    python analyses/accurate_model_levers.py --data model_work/ferplus_basic7 \\
        --ensemble-eval model_work/eval_ferplus_models/ferplus_ensemble \\
        --default-val model_work/neutral_check/default_val --work model_work/multicrop \\
        --out docs/bench/accurate_model_levers.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.files import save_json_atomic

MODELS = ("ferwild:ferplus_vgg", "ferwild:ferplus_ensemble")
SHIFTS = {d: [(d, 0), (-d, 0), (0, d), (0, -d)] for d in (2, 3)}
VIEW_SETS = {  # name -> (what it is, the views; every view is read with its mirror too)
    "flip": ("the face and its mirror, the shipped TTA (each view's probabilities after the model's temperature)", ["id"]),
    "flip_shift2": ("and shifted by 2 px in four directions", ["id"] + [f"s{dx},{dy}" for dx, dy in SHIFTS[2]]),
    "flip_shift3": ("and shifted by 3 px in four directions", ["id"] + [f"s{dx},{dy}" for dx, dy in SHIFTS[3]]),
    "flip_shift2_3": ("and shifted by 2 and by 3 px", ["id"] + [f"s{dx},{dy}" for d in (2, 3) for dx, dy in SHIFTS[d]]),
    "flip_zoom": ("and zoomed by 0.9 and 1.1", ["id", "z1.1", "z0.9"]),
}


def view_probabilities(run: str, data: Path, split: str, cache: Path) -> dict[str, np.ndarray]:
    """Class probabilities of every view (and its mirror, ``F`` + name) of ``split``'s faces, and
    the labels (``y``); computed once and kept in ``cache``."""
    if cache.exists():
        with np.load(cache) as saved:
            return dict(saved)
    import torch
    import torch.nn.functional as F

    from ferwild.data.loader import eval_loader
    from ferwild.data.prepared import PreparedDataset
    from ferwild.runs import load_run, resolve_run_dir

    model, _ = load_run(resolve_run_dir(run), "best", "cpu")
    model.set_tta("none").eval()
    prepared = PreparedDataset(data)
    loader, transform = eval_loader(prepared.root, prepared.rows(split, include_augmented=False),
                                    prepared.label_names, model.preprocessing, 512)
    size = model.preprocessing.input_size

    def shift(x, dx, dy, pad=4):
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return padded[..., pad + dy:pad + dy + size, pad + dx:pad + dx + size]

    def zoom(x, scale):
        if scale >= 1:  # the centre 1/scale of the face, resized back
            crop = int(round(size / scale))
            at = (size - crop) // 2
            return F.interpolate(x[..., at:at + crop, at:at + crop], size=(size, size), mode="bilinear",
                                 align_corners=False)
        pad = int(round(size * (1 / scale - 1) / 2))
        return F.interpolate(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size=(size, size),
                             mode="bilinear", align_corners=False, antialias=True)

    views = {"id": lambda x: x, "z1.1": lambda x: zoom(x, 1.1), "z0.9": lambda x: zoom(x, 0.9)}
    for d in (2, 3):
        for dx, dy in SHIFTS[d]:
            views[f"s{dx},{dy}"] = (lambda a, b: lambda x: shift(x, a, b))(dx, dy)
    out: dict[str, list] = {k: [] for k in views} | {"F" + k: [] for k in views} | {"y": []}
    with torch.no_grad():
        for images, labels, *_ in loader:
            x = transform(images)
            for name, view in views.items():
                v = view(x)
                out[name].append(model(v).softmax(1).numpy())
                out["F" + name].append(model(v.flip(-1)).softmax(1).numpy())
            out["y"].append(labels.numpy())
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **arrays)
    return arrays


def _scores(y: np.ndarray, pred: np.ndarray, neutral: int) -> dict:
    from sklearn.metrics import f1_score

    return {"accuracy": float((pred == y).mean()), "macro_f1": float(f1_score(y, pred, average="macro")),
            "neutral_answer_share": float((pred == neutral).mean())}


def multi_crop(data: Path, work: Path, neutral: int) -> dict:
    out = {}
    for run in MODELS:
        probs = view_probabilities(run, data, "val", work / f"{run.replace(':', '_')}_val.npz")
        out[run.split(":")[-1]] = {
            name: {"what": what, "views": 2 * len(views)}
            | _scores(probs["y"], sum(probs[v] + probs["F" + v] for v in views).argmax(1), neutral)
            for name, (what, views) in VIEW_SETS.items()}
    return out


def _log_probs(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    return np.log(np.clip(frame[[f"prob_{c}" for c in names]].to_numpy(), 1e-12, 1))


def neutral_held(ensemble_eval: Path, default_val: Path, names: list[str]) -> dict:
    n = names.index("neutral")
    default_val_pred = pd.read_parquet(default_val / "predictions.parquet")["y_pred"].to_numpy()
    target = float((default_val_pred == n).mean())
    val = pd.read_parquet(ensemble_eval / "ours" / "ferplus_val" / "predictions.parquet")
    logp = _log_probs(val, names)
    offset = 0.0
    for offset in np.round(np.arange(0, 2.0001, 0.05), 2):
        moved = logp.copy()
        moved[:, n] -= offset
        if (moved.argmax(1) == n).mean() <= target:
            break
    out = {"default_val_neutral_answer_share": target, "offset": float(offset), "sets": {}}
    for name in ("ferplus_val", "ferplus_test", "wild_report"):
        frame = pd.read_parquet(ensemble_eval / "ours" / name / "predictions.parquet")
        y, moved = frame["y_true"].to_numpy(), _log_probs(frame, names)
        moved[:, n] -= offset
        row = {"ensemble": _scores(y, frame["y_pred"].to_numpy(), n), "ensemble_neutral_held": _scores(y, moved.argmax(1), n)}
        base = ensemble_eval / "default" / name / "predictions.parquet"
        if base.exists():
            frame = pd.read_parquet(base)
            row["default"] = _scores(frame["y_true"].to_numpy(), frame["y_pred"].to_numpy(), n)
        out["sets"][name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared FER+ (basic7)")
    parser.add_argument("--ensemble-eval", type=Path, required=True, help="the ship script's --work for the ensemble")
    parser.add_argument("--default-val", type=Path, required=True, help="the default's evaluation on FER+ val")
    parser.add_argument("--work", type=Path, required=True, help="where each model's views are cached")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from ferwild.data.prepared import PreparedDataset

    names = PreparedDataset(args.data).label_names
    result = {"measured_on": "FER+ validation (choices may use it); the neutral rule's offset is chosen there and "
                             "then read on FER+ test and wild_dev's report people",
              "multi_crop_ferplus_val": multi_crop(args.data, args.work, names.index("neutral")),
              "neutral_held_to_the_default": neutral_held(args.ensemble_eval, args.default_val, names),
              "command": "python analyses/accurate_model_levers.py --data ... --out ..."}
    save_json_atomic(args.out, result)
    print(args.out)


if __name__ == "__main__":
    main()
