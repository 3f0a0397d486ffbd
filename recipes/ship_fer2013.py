"""Pack a finished FER2013 run as ferwild's shipped model, measure it, write its model card.

    python recipes/ship_fer2013.py --run runs/fer2013 --data fer2013_basic7

1. packs the run's best checkpoint (selected on PublicTest) under ``--work`` (float16 weights,
   inference-only state), once per test-time augmentation tried;
2. evaluates the *packed* weights once on PublicTest (val) and PrivateTest (test) with
   ``ferwild evaluate``'s code, and on the PrivateTest faces that have no exact or near
   duplicate in the training split;
3. writes the packed model with its ``card.json`` to ``src/ferwild/weights/fer2013_vgg`` in one step,
   at the end (a stop before leaves the shipped model as it was), and renders its card
   (``docs/model_card_fer2013_vgg.md``).

``make model`` runs the whole recipe (prepare, train, this script).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.model_cards import pct, render_fer2013_card

# recipes/shipping.py, this script's neighbour (a script's own folder is first on sys.path)
from shipping import ANCHORS, REPO, folder_size, hardware, model_facts, publish, train_wall_time_s  # isort: skip

NAME = "fer2013_vgg"


def dedup_mask(prepared: Path, paths: pd.Series) -> np.ndarray:
    """True for test faces with no exact or near duplicate in the training split."""
    dups = pd.read_csv(prepared / "duplicates.csv")
    cross = dups[(dups["split_i"] == "train") ^ (dups["split_j"] == "train")]
    leaked = set(cross.loc[cross["split_i"] != "train", "path_i"]) | set(cross.loc[cross["split_j"] != "train", "path_j"])
    leaked = {os.path.normpath(p) for p in leaked}
    return ~paths.map(lambda p: os.path.normpath(str(p)) in leaked).to_numpy()


def _brief(s: dict) -> dict:
    """The figures of an evaluation summary that this card keeps."""
    return {k: s[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class", "confusion")}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="The finished `ferwild train` run.")
    ap.add_argument("--data", type=Path, required=True, help="FER2013 prepared by `ferwild prepare` (basic7).")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "ferwild" / "weights" / NAME)
    ap.add_argument("--card", type=Path, default=REPO / "docs" / "model_card_fer2013_vgg.md")
    ap.add_argument("--photos-text", default="", help="The paragraph on real photos (from bench_framing).")
    ap.add_argument("--tta", choices=("auto", "none", "flip"), default="auto",
                    help="Test-time augmentation; auto: the better on PublicTest (val) macro-F1.")
    ap.add_argument("--work", type=Path, default=Path("ship_eval"),
                    help="Where the trial models and the evaluation files go.")
    return ap.parse_args(argv)


def choose_tta(args) -> tuple[str, dict, Path]:
    """Test-time augmentation, chosen like the checkpoint: on PublicTest (val) macro-F1 only.
    Returns it, every trial's validation summary, and the chosen trial's packed folder."""
    from ferwild.evaluate import evaluate_run
    from ferwild.runs import pack_run

    choices = ["none", "flip"] if args.tta == "auto" else [args.tta]
    val_by_tta, packed = {}, {}
    for tta in choices:
        packed[tta] = pack_run(args.run, args.work / "trials" / f"tta-{tta}", card={}, tta=tta)
        val_by_tta[tta] = evaluate_run(packed[tta], args.data, "val", args.work / f"val-tta-{tta}", device="cpu")
    chosen = max(choices, key=lambda t: val_by_tta[t]["macro_f1"])
    return chosen, val_by_tta, packed[chosen]


def measure_test(packed: Path, args) -> tuple[dict, dict]:
    """PrivateTest once, on all its faces and on those with no copy in the training split."""
    from ferwild.evaluate import evaluate_run
    from ferwild.metrics import classification_metrics

    test = evaluate_run(packed, args.data, "test", args.work / "test", device="cpu")
    preds = pd.read_parquet(args.work / "test" / "predictions.parquet")
    keep = dedup_mask(args.data, preds["path"])
    probs = preds[[f"prob_{n}" for n in test["label_names"]]].to_numpy()
    return test, classification_metrics(preds["y_true"].to_numpy()[keep], probs[keep], test["label_names"])


def tta_text(chosen: str, val_by_tta: dict) -> str:
    """The card's sentence on test-time augmentation and how it was chosen."""
    return (("Inference reads each face once (no test-time augmentation)" if chosen == "none" else
             "Inference averages the class probabilities of the face and its mirror image "
             "(`tta: flip` in the model config), in PyTorch and in the ONNX export alike")
            + " (chosen on PublicTest: " + ", ".join(
                f"{t}: {pct(v['accuracy'])} / {pct(v['macro_f1'])}" for t, v in val_by_tta.items())
            + " accuracy / macro-F1).")


def recipe_facts(config) -> dict:
    """The card's recipe in words and the commands that reproduce it."""
    return {
        "recipe": "recipes/fer2013.yaml",
        "recipe_text": (f"{config.model.name} from random init, {config.train.epochs} epochs, batch "
                        f"{config.train.batch_size}, SGD (Nesterov, momentum {config.optim.momentum}, weight "
                        f"decay {config.optim.weight_decay}) at {config.optim.lr} with {config.optim.warmup_epochs} "
                        f"warm-up epochs then cosine, label smoothing {config.optim.label_smoothing}, "
                        f"{config.optim.class_weights}-balanced class weights, on-the-fly augmentation "
                        f"({', '.join(f'{k} {v}' for k, v in config.data.augment_options.items())}; flips), "
                        f"{config.train.precision} autocast, channels-last."),
        "commands": [
            "make install",
            "ferwild prepare ../shared/data/fer2013 --out fer2013_basic7 --labels basic7 --balance none",
            "ferwild train recipes/fer2013.yaml --data fer2013_basic7 --out runs/fer2013 --resume   # rerun to continue after a stop",
            "python recipes/ship_fer2013.py --run runs/fer2013 --data fer2013_basic7",
        ],
    }


def build_card(args, chosen: str, val_by_tta: dict, test: dict, dedup: dict) -> dict:
    """``card.json``: every figure measured above, and how the model was made."""
    from ferwild.config import RunConfig
    from ferwild.runs import checkpoint_dir, load_checkpoint_state

    state = load_checkpoint_state(checkpoint_dir(args.run, "best"))
    config = RunConfig.load(args.run / "config.yaml")
    history = pd.read_csv(args.run / "metrics.csv")
    return {
        "name": NAME,
        **model_facts(state),
        "dataset": "FER2013 (7 classes)",
        "data": "FER2013, 7 classes: 28,709 Training faces (train), PublicTest 3,589 (val), "
                "PrivateTest 3,589 (test)",
        **recipe_facts(config),
        "tta": chosen,
        "val_by_tta": {t: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for t, v in val_by_tta.items()},
        "tta_text": tta_text(chosen, val_by_tta),
        "epochs": int(len(history)),
        "selected_epoch": int(state.get("epoch") or 0),
        "hardware": hardware(),
        "train_wall_time_s": round(train_wall_time_s(args.run), 1),
        "train_img_per_s": float(history["train_img_per_s"].median()),
        "val": _brief(val_by_tta[chosen]),
        "test": _brief(test),
        "test_without_train_duplicates": _brief(dedup),
        "anchors": ANCHORS,
        "photos_text": args.photos_text or "(not measured)",
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    chosen, val_by_tta, packed = choose_tta(args)
    test, dedup = measure_test(packed, args)
    card = build_card(args, chosen, val_by_tta, test, dedup)
    card["size_bytes"] = folder_size(packed)
    # the package's folder is written once, now that everything in it is chosen and measured
    dest = publish(packed, args.dest, card)
    args.card.write_text(render_fer2013_card(card))
    val = val_by_tta[chosen]
    print(f"packed {dest} ({card['size_bytes'] / 1e6:.1f} MB); PrivateTest accuracy {pct(test['accuracy'])}, "
          f"macro-F1 {pct(test['macro_f1'])}; PublicTest {pct(val['accuracy'])} / {pct(val['macro_f1'])}; "
          f"card {args.card}")


if __name__ == "__main__":
    main()
