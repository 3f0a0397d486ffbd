"""Gather the candidates for the live model, one view per face, by their FER+ validation figures.

Issue 24 asked for a student distilled from the accurate model. Three distillations of the
default into its own architecture (``recipes/ferplus_student.yaml`` and two variants, targets
half the default's flip-averaged probabilities on FER+ train, half the crowd's votes, the
default's occluders on a quarter of the crops) each read FER+ validation below the default
read once; re-estimating the default's BatchNorm statistics on clean faces (precise BN,
``ferwild.precise_bn``) did better than all of them and became the live model. A fourth, taught
by the accurate ensemble instead (``ferwild:ferplus_ensemble``, flip, calibrated), did no better,
read with its running statistics or with precise BN. This script reads what each run wrote
(``metrics.csv``: the best epoch by validation macro-F1, as training selects it; and, where a
run has one, ``<run>_pbn_val/summary.json``: its best checkpoint after precise BN, read on FER+
validation) and the shipped cards, and writes one JSON file; it measures nothing. Runs not found
under ``--runs`` keep their entries from the ``--out`` file already there (run folders do not
outlive a session's scratch space; the file is what is kept)::

    ferwild evaluate ferwild:ferplus_ensemble --data ferplus_basic7 --split train --out teacher_ensemble
    ferwild train recipes/ferplus_student.yaml --data ferplus_basic7 --out runs/student_ens --resume \
        optim.teacher=teacher_ensemble/predictions.parquet
    python -c "from ferwild.precise_bn import precise_bn_run; \
        precise_bn_run('runs/student_ens', 'ferplus_basic7', 'runs/student_ens_pbn')"
    ferwild evaluate runs/student_ens_pbn --data ferplus_basic7 --split val --out runs/student_ens_pbn_val
    python analyses/live_model_candidates.py --runs model_work/runs --out docs/bench/live_model_candidates.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "ferwild" / "weights"
#: run folder -> what it was
DISTILLED = {
    "ferplus_live3": "distilled: 4 epochs at 0.01 (1 warm-up epoch), a fresh head",
    "ferplus_live4": "distilled: 3 epochs at 0.003 (1 warm-up epoch), a fresh head",
    "ferplus_live5": "distilled: 3 epochs at 0.003, the default's own head kept (model.pretrained_head)",
    "student_ens": "distilled from the accurate ensemble (ferwild:ferplus_ensemble read with its mirror image, "
                   "calibrated): otherwise as ferplus_live5",
}


def _best(run: Path) -> dict:
    m = pd.read_csv(run / "metrics.csv")
    row = m.loc[m["val_macro_f1"].idxmax()]
    config = yaml.safe_load((run / "config.yaml").read_text())
    best = {"epoch": int(row["epoch"]), "epochs": int(len(m)), "val_accuracy": float(row["val_acc"]),
            "val_macro_f1": float(row["val_macro_f1"]), "last_val_accuracy": float(m["val_acc"].iloc[-1]),
            "lr": config["optim"]["lr"], "teacher_weight": config["optim"]["teacher_weight"],
            "occlude_p": config["data"]["augment_options"].get("occlude_p", 0.0),
            "pretrained_head": bool(config["model"].get("pretrained_head", False)),
            "teacher": Path(config["optim"]["teacher"]).parent.name}
    precise_bn = run.parent / f"{run.name}_pbn_val" / "summary.json"
    if precise_bn.is_file():
        summary = json.loads(precise_bn.read_text())
        best["precise_bn_val_accuracy"] = float(summary["accuracy"])
        best["precise_bn_val_macro_f1"] = float(summary["macro_f1"])
    return best


def candidates(runs: Path, kept: dict) -> dict:
    """The candidates' FER+ validation figures: the runs under ``runs``, and for those not there,
    their entries in ``kept`` (the JSON this script wrote before)."""
    default_metrics = runs / "ferplus_occlusion" / "metrics.csv"
    if default_metrics.is_file():
        default_stage = pd.read_csv(default_metrics).iloc[-1]
        default_one_view = {"what": "the default read once (its last training epoch, no flip)",
                            "val_accuracy": float(default_stage["val_acc"]),
                            "val_macro_f1": float(default_stage["val_macro_f1"])}
    else:
        default_one_view = kept["default_one_view"]
    default = json.loads((WEIGHTS / "ferplus_vgg" / "card.json").read_text())
    live = json.loads((WEIGHTS / "ferplus_live" / "card.json").read_text())
    distilled = {}
    for name, what in DISTILLED.items():
        if (runs / name / "metrics.csv").is_file():
            distilled[name] = {"what": what, **_best(runs / name)}
        elif name in kept.get("distilled", {}):
            distilled[name] = kept["distilled"][name]
    out = {
        "default_one_view": default_one_view,
        "default_flip": {"what": "the default as shipped (flip, temperature)",
                         "val_accuracy": default["results"]["ferplus_val"]["accuracy"],
                         "val_macro_f1": default["results"]["ferplus_val"]["macro_f1"]},
        "precise_bn_one_view": {"what": "the default read once, precise BN (the live model, fp32)",
                                "val_accuracy": live["results"]["ferplus_val"]["accuracy"],
                                "val_macro_f1": live["results"]["ferplus_val"]["macro_f1"]},
        "distilled": distilled,
    }
    out["best_distilled_val_accuracy"] = max(d["val_accuracy"] for d in distilled.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the folder holding the student runs and "
                        "ferplus_occlusion (the default's last stage)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    kept = json.loads(args.out.read_text()) if args.out.is_file() else {"distilled": {}}
    out = candidates(args.runs, kept)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
