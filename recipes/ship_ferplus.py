"""Choose, calibrate, pack and measure ferwild's default model (FER+), and write its model card.

    python recipes/ship_ferplus.py --run runs/ferplus --data ferplus_basic7 \\
        --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus [--peer fer_wild_summary.json]

``--wild`` is ``../shared/data/wild_dev`` prepared like the FER+ crops, split by person::

    ferwild prepare ../shared/data/wild_dev/labels.csv --out wild_dev_like_ferplus \\
        --like ferplus_basic7 --balance none --fallback drop --split-ratios 0.5,0.25,0.25

Its ``train+val`` people (75%) are the **choice** split: every choice below is made there or on
FER+'s validation split, never on the **report** split (``test``, the other 25% of the people).

1. test-time augmentation (none | flip), then the framing (the learned FER+ landmark template
   zoomed by 0.85-1.16, faces re-cut from the landmarks MTCNN found): the better macro-F1 on
   wild_dev's choice split; a zoom only when its paired-bootstrap gain over the learned
   template is above zero (Bonferroni over the zooms). One that is stops the script: wild_dev
   must then be cut again that way before it is measured;
2. calibration: the temperature that minimises the negative log-likelihood on FER+'s
   validation faces (majority labels), stored in the model config (PyTorch and ONNX alike);
3. packs the best checkpoint (selected on FER+ validation macro-F1 while training) with those
   two choices (float16) under ``--work``; every trial model of 1. goes there too;
4. measures the packed model once on FER+ test (majority labels, and against the votes),
   FER2013's PrivateTest with its own labels (and how often those disagree with the FER+
   majority on the same faces), and wild_dev (report split and all photos, per class with
   intervals), next to ``ferwild:fer2013_vgg`` measured the same way and fer 25.10
   (``bench/bench_wild_peers.py``'s JSON, when given);
5. the risk-coverage table and figure on wild_dev (what ``--abstain-below`` keeps);
6. writes the packed model with its ``card.json`` to ``src/ferwild/weights/ferplus_vgg`` in one
   step, at the end (a stop before leaves the shipped model as it was), and renders ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.model_cards import pct, render_default_card

# recipes/shipping.py, this script's neighbour (a script's own folder is first on sys.path)
from shipping import (ALL, ANCHORS, CHOICE, REPO, REPORT, brief, evaluate, folder_size, hardware,  # isort: skip
                      model_facts, predictions, publish, risk_table, train_wall_time_s)

NAME = "ferplus_vgg"
#: The model the card compares against: the one trained on FER2013's own labels.
BASELINE = "ferwild:fer2013_vgg"
FRAMING_SCALES = (0.85, 0.92, 1.0, 1.08, 1.16)
#: The peer on wild_dev (fer 25.10 with its MTCNN; ``bench/bench_wild_peers.py --mtcnn --json``, kept):
#: a measurement of another tool, so it does not change when ferwild's model does.
PEER_JSON = "docs/bench/wild_peers_fer_mtcnn.json"


def fer2013_disagreement(fer2013_dir: Path, ferplus_dir: Path) -> dict:
    """How often FER2013's own label differs from the FER+ majority on PrivateTest.

    The two copies of a face differ (FER2013's JPEG, FER+'s lossless PNG), so faces are paired
    by pixel correlation: each FER2013 PrivateTest face with its most correlated FER+ test face,
    kept when the pairing is mutual and r >= 0.98.
    """
    from ferwild.data.prepared import PreparedDataset

    def vectors(data: PreparedDataset, split: str) -> tuple[pd.DataFrame, np.ndarray]:
        rows = data.rows(split, include_augmented=False).reset_index(drop=True)
        x = data.images(rows).reshape(len(rows), -1).astype(np.float32)
        x -= x.mean(1, keepdims=True)
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
        return rows, x

    fer_rows, a = vectors(PreparedDataset(fer2013_dir), "test")
    # every FER+ test face, those without a majority label too (they are paired, then skipped)
    plus = PreparedDataset(ferplus_dir)
    plus_rows = plus.manifest[(plus.manifest["source_split"] == "test") & (plus.manifest["shard"] != "")]
    plus_rows = plus_rows.reset_index(drop=True)
    b = plus.images(plus_rows).reshape(len(plus_rows), -1).astype(np.float32)
    b -= b.mean(1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-6
    corr = a @ b.T
    best_b, best_a = corr.argmax(1), corr.argmax(0)
    mutual = (best_a[best_b] == np.arange(len(a))) & (corr[np.arange(len(a)), best_b] >= 0.98)
    pairs = pd.DataFrame({"fer2013": fer_rows.loc[mutual, "label"].to_numpy(),
                          "ferplus": plus_rows.loc[best_b[mutual], "label"].to_numpy()})
    with_majority = pairs[pairs["ferplus"] != ""]
    disagree = with_majority["fer2013"] != with_majority["ferplus"]
    return {"privatetest_faces": int(len(a)), "paired": int(mutual.sum()),
            "paired_with_majority_label": int(len(with_majority)),
            "disagree": int(disagree.sum()), "disagree_rate": float(disagree.mean()),
            "by_fer2013_label": {k: float(v) for k, v in disagree.groupby(with_majority["fer2013"]).mean().items()}}


def scaled_template(points, scale: float) -> list[list[float]]:
    """The landmark template zoomed about its centroid: ``scale`` > 1 cuts tighter (the face
    fills more of the crop), < 1 looser."""
    pts = np.asarray(points, dtype=np.float64)
    centre = pts.mean(0)
    return (centre + (pts - centre) * scale).round(4).tolist()


def framing_sweep(run, wild_dir: Path, split: str, scales) -> dict[float, dict]:
    """Macro-F1 and accuracy on ``split`` of wild_dev for each framing: the run's learned template
    zoomed by each scale, faces re-cut from the landmarks MTCNN found when preparing (no new
    detection), classified by the run's recogniser."""
    from sklearn.metrics import accuracy_score, f1_score

    from ferwild.data.faces import align_face
    from ferwild.data.images import load_image
    from ferwild.data.prepared import PreparedDataset
    from ferwild.recognizer import Recognizer

    rec = Recognizer.from_run(run, device="cpu", detector="none")
    rows = PreparedDataset(wild_dir).rows(split, include_augmented=False)
    rows = rows[rows["status"] == "aligned"].reset_index(drop=True)
    images = [load_image(p).array for p in rows["path"]]
    marks = [np.asarray(m, dtype=np.float64).reshape(5, 2) for m in rows["landmarks"]]
    truth = rows["label"].map({n: i for i, n in enumerate(rec.label_names)}).to_numpy()
    side = rec.face_alignment.crop_size
    out = {}
    for scale in scales:
        template = np.asarray(scaled_template(rec.face_alignment.template, scale))
        crops = [align_face(img, lm, side, template=template) for img, lm in zip(images, marks)]
        pred = rec.classify(crops).argmax(1)
        out[float(scale)] = {"n": int(len(truth)), "accuracy": float(accuracy_score(truth, pred)),
                             "macro_f1": float(f1_score(truth, pred, labels=list(range(len(rec.label_names))),
                                                        average="macro", zero_division=0)),
                             "pred": pred}
    # a zoom is worth shipping only if it beats the learned template by more than chance: a
    # paired bootstrap (the same resampled photos for both) of the macro-F1 gain
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(truth), size=(1000, len(truth)))
    k = len(rec.label_names)
    base = _macro_f1_draws(truth, out[1.0]["pred"], draws, k)
    # Bonferroni over the zooms compared with the template: 95% for the family of comparisons
    alpha = 0.05 / max(len(out) - 1, 1)
    for scale, figures in out.items():
        gain = _macro_f1_draws(truth, figures.pop("pred"), draws, k) - base
        figures["gain_ci"] = [float(np.quantile(gain, alpha / 2)), float(np.quantile(gain, 1 - alpha / 2))]
    return out


def _macro_f1_draws(truth: np.ndarray, pred: np.ndarray, draws: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 (over the classes present in each resample) of ``draws``' resampled rows."""
    cells = (truth * k + pred)[draws]
    cm = np.stack([np.bincount(row, minlength=k * k) for row in cells]).reshape(len(draws), k, k).astype(float)
    tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(2), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    present = support > 0
    return (f1 * present).sum(1) / present.sum(1)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="The finished `ferwild train recipes/ferplus.yaml` run.")
    ap.add_argument("--data", type=Path, required=True, help="FER+ prepared by `ferwild prepare` (basic7).")
    ap.add_argument("--fer2013", type=Path, required=True, help="FER2013 prepared with --labels basic7.")
    ap.add_argument("--wild", type=Path, required=True, help="wild_dev prepared --like the FER+ data (see above).")
    ap.add_argument("--peer", type=Path, default=None, help="bench/bench_wild_peers.py's JSON (fer 25.10).")
    ap.add_argument("--base", type=Path, default=None,
                    help="When --run is a fine-tune (recipes/ferplus_occlusion.yaml): the run it started from, or "
                         "the packed model folder (with its card.json) it started from.")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "ferwild" / "weights" / NAME)
    ap.add_argument("--card", type=Path, default=REPO / "MODEL_CARD.md")
    ap.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    ap.add_argument("--work", type=Path, default=Path("ship_eval_ferplus"),
                    help="Where the trial models, the packed model and the evaluation files go.")
    return ap.parse_args(argv)


def choose_tta(args, work: Path) -> tuple[str, dict]:
    """1. Test-time augmentation: the better macro-F1 on wild_dev's choice people. Returns it and
    every trial's figures (its FER+ validation run is reused for calibration)."""
    from ferwild.runs import pack_run

    by_tta = {}
    for tta in ("none", "flip"):
        trial = pack_run(args.run, work / "trials" / f"tta-{tta}", card={}, tta=tta)
        by_tta[tta] = {"wild_choice": evaluate(trial, args.wild, CHOICE, work / f"tta-{tta}-wild-choice"),
                       "ferplus_val": evaluate(trial, args.data, "val", work / f"tta-{tta}-ferplus-val")}
    return max(by_tta, key=lambda t: by_tta[t]["wild_choice"]["macro_f1"]), by_tta


def choose_framing(args, work: Path, tta: str) -> tuple[float, dict]:
    """1. Framing: the learned FER+ template, zoomed in or out, on the same choice people. A zoom
    that beats it stops the script (wild_dev must be cut again that way before it is measured)."""
    by_scale = framing_sweep(work / "trials" / f"tta-{tta}", args.wild, CHOICE, FRAMING_SCALES)
    better = [k for k, v in by_scale.items() if v["gain_ci"][0] > 0]
    scale = max(better, key=lambda k: by_scale[k]["macro_f1"]) if better else 1.0
    if scale != 1.0:
        # the wild_dev crops were cut with the unzoomed template: cut them again as shipped
        raise SystemExit(f"framing scale {scale} beats the learned template on wild_dev's choice people "
                         f"({by_scale}); re-prepare wild_dev with that template before measuring")
    return scale, by_scale


def calibrate(work: Path, tta: str, names: list[str]) -> float:
    """2. The temperature minimising the NLL on FER+ validation (majority labels), with ``tta``."""
    from ferwild.metrics import fit_temperature

    probs, labels = predictions(work / f"tta-{tta}-ferplus-val", names)
    return round(fit_temperature(probs, labels), 4)


def measure(packed: Path, args, work: Path) -> tuple[dict, dict]:
    """4. The packed model once on everything, and the baseline on what the card compares."""
    ours = {
        "ferplus_val": evaluate(packed, args.data, "val", work / "ferplus-val"),
        "ferplus_test": evaluate(packed, args.data, "test", work / "ferplus-test"),
        "fer2013_privatetest": evaluate(packed, args.fer2013, "test", work / "fer2013-privatetest"),
        "wild_choice": evaluate(packed, args.wild, CHOICE, work / "wild-choice"),
        "wild_report": evaluate(packed, args.wild, REPORT, work / "wild-report"),
        "wild_all": evaluate(packed, args.wild, ALL, work / "wild-all"),
    }
    base = {
        "ferplus_test": evaluate(BASELINE, args.data, "test", work / "base-ferplus-test"),
        "fer2013_privatetest": evaluate(BASELINE, args.fer2013, "test", work / "base-fer2013-privatetest"),
        "wild_report": evaluate(BASELINE, args.wild, REPORT, work / "base-wild-report"),
        "wild_all": evaluate(BASELINE, args.wild, ALL, work / "base-wild-all"),
    }
    return ours, base


def abstention(work: Path, names: list[str]) -> tuple[list[dict], Path]:
    """5. Risk-coverage on wild_dev: the card's table, and its figure drawn under ``work``."""
    from ferwild.metrics import risk_coverage_figure

    wild_probs, wild_labels = predictions(work / "wild-all", names)
    base_probs, base_labels = predictions(work / "base-wild-all", names)
    figure = work / "risk_coverage_wild_dev.png"
    risk_coverage_figure({f"ferwild:{NAME}": (wild_probs, wild_labels), BASELINE: (base_probs, base_labels)},
                         figure, title=f"wild_dev, {len(wild_labels):,} photos (largest face): answer or abstain")
    return risk_table(wild_probs, wild_labels), figure


def _augment_words(config) -> str:
    # the occluders' landmark template is filled from the data at train time: a detail, not a recipe word
    options = {k: v for k, v in config.data.augment_options.items() if k != "occlude_points"}
    return ", ".join(f"{k} {v}" for k, v in options.items())


def recipe_facts(config, base_config=None) -> dict:
    """The card's recipe in words and the commands that reproduce it. ``base_config`` is the
    first stage's when the shipped run is a fine-tune of it (``--base``)."""
    first = base_config or config
    text = (f"{first.model.name} initialised from `ferwild:fer2013_vgg`'s backbone (the same training "
            f"faces under FER2013's single labels), cross-entropy to the vote distribution "
            f"(`optim.targets: votes`), {first.train.epochs} epochs, batch {first.train.batch_size}, "
            f"SGD (Nesterov, momentum {first.optim.momentum}, weight decay {first.optim.weight_decay}) "
            f"at {first.optim.lr} with {first.optim.warmup_epochs} warm-up epoch then cosine, "
            f"{first.optim.class_weights}-balanced class weights, on-the-fly augmentation "
            f"({_augment_words(first)}; flips), {first.train.precision} precision, channels-last.")
    train = ["ferwild train recipes/ferplus.yaml --data ferplus_basic7 --out runs/ferplus --resume   "
             "# rerun to continue after a stop"]
    run, recipe = "runs/ferplus", "recipes/ferplus.yaml"
    if base_config is not None:
        text += (f" Then fine-tuned from that model's best checkpoint for {config.train.epochs} more epochs "
                 f"(`recipes/ferplus_occlusion.yaml`: the same targets and augmentation, at {config.optim.lr} "
                 f"with {config.optim.warmup_epochs} warm-up epoch then cosine, plus face-shaped occluders "
                 f"(sunglasses, a mask, a hand, half the face; `ferwild.data.occluders`, placed by the crops' "
                 f"landmark template) drawn on {config.data.augment_options['occlude_p']:.0%} of the training "
                 "crops).")
        train.append("ferwild train recipes/ferplus_occlusion.yaml --data ferplus_basic7 --out runs/ferplus_occlusion "
                     "--pretrained runs/ferplus/checkpoints/$(cat runs/ferplus/checkpoints/BEST)/model.safetensors "
                     "--resume")
        run = "runs/ferplus_occlusion --base runs/ferplus"
        recipe = "recipes/ferplus.yaml, then recipes/ferplus_occlusion.yaml"
    return {
        "recipe": recipe,
        "recipe_text": text,
        "commands": [
            "make install",
            "ferwild prepare ../shared/data/ferplus --out ferplus_basic7 --balance none",
            *train,
            "ferwild prepare ../shared/data/fer2013 --out fer2013_basic7 --labels basic7 --balance none",
            "ferwild prepare ../shared/data/wild_dev/labels.csv --out wild_dev_like_ferplus --like ferplus_basic7 "
            "--balance none --fallback drop --split-ratios 0.5,0.25,0.25",
            f"python recipes/ship_ferplus.py --run {run} --data ferplus_basic7 --fer2013 fer2013_basic7 "
            f"--wild wild_dev_like_ferplus --peer {PEER_JSON}",
        ],
    }


def stage_facts(run: Path, state: dict | None = None) -> dict:
    """One training stage's length, pace and time. A packed model folder (the shipped default kept
    aside as ``--base``) carries them in its ``card.json``; a run folder, in its own files."""
    card = run / "card.json"
    if card.is_file():
        c = json.loads(card.read_text())
        return {k: c[k] for k in ("epochs", "selected_epoch", "train_wall_time_s", "train_img_per_s")}
    history = pd.read_csv(run / "metrics.csv")
    return {"epochs": int(len(history)), "selected_epoch": int((state or {}).get("epoch") or 0),
            "train_wall_time_s": round(train_wall_time_s(run), 1),
            "train_img_per_s": float(history["train_img_per_s"].median())}


def build_card(args, state: dict, choices: dict, ours: dict, base: dict, risk: list[dict], figure: Path) -> dict:
    """6. ``card.json``: every figure measured above, and how the model was made."""
    from ferwild.config import RunConfig

    config = RunConfig.load(args.run / "config.yaml")
    base_config = RunConfig.load(args.base / "config.yaml") if args.base else None
    stages = [stage_facts(args.base)] if args.base else []
    stages.append(stage_facts(args.run, state))
    by_tta = choices["by_tta"]
    return {
        "name": NAME,
        **model_facts(state),
        "dataset": "FER+ votes (7 classes)",
        "data": "FER+ (FER2013's faces, ten crowd votes each), 7 classes, hard label = the votes' majority "
                "(ties, unknown and not-a-face majorities excluded): FER2013Train (train), FER2013Valid (val), "
                "FER2013Test (test)",
        **recipe_facts(config, base_config),
        "tta": choices["tta"],
        "by_tta": {t: {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in d.items()}
                   for t, d in by_tta.items()},
        "temperature": choices["temperature"],
        "framing": {"scale": choices["scale"], "by_scale": {str(k): v for k, v in choices["by_scale"].items()}},
        # the totals over the stages (one, or the base then the fine-tune); the selected epoch is the last stage's
        "epochs": sum(st["epochs"] for st in stages),
        "selected_epoch": stages[-1]["selected_epoch"],
        "stages": stages,
        "hardware": hardware(),
        "train_wall_time_s": round(sum(st["train_wall_time_s"] for st in stages), 1),
        "train_img_per_s": float(np.median([st["train_img_per_s"] for st in stages])),
        "test": brief(ours["ferplus_test"]),  # what `ferwild models` and /info show
        "test_name": "FER+ test (majority, 7 classes)",
        "results": {k: brief(v) for k, v in ours.items()},
        "baseline": BASELINE,
        "baseline_results": {k: brief(v) for k, v in base.items()},
        "fer2013_vs_ferplus_labels": fer2013_disagreement(args.fer2013, args.data),
        "risk_coverage_wild_dev": risk,
        "risk_coverage_figure": os.path.relpath(figure, REPO),
        "fer2013_anchors": ANCHORS,
        "peer_wild_dev": json.loads(args.peer.read_text()) if args.peer and args.peer.is_file() else None,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    from ferwild.runs import checkpoint_dir, load_checkpoint_state, pack_run

    work = args.work
    state = load_checkpoint_state(checkpoint_dir(args.run, "best"))
    names = list(state["label_names"])
    tta, by_tta = choose_tta(args, work)
    scale, by_scale = choose_framing(args, work, tta)
    temperature = calibrate(work, tta, names)
    # 3. pack under --work, 4. measure once, 5. abstention
    packed = pack_run(args.run, work / "packed", card={}, tta=tta, temperature=temperature)
    ours, base = measure(packed, args, work)
    risk, work_figure = abstention(work, names)
    figure = args.figures / work_figure.name
    choices = {"tta": tta, "by_tta": by_tta, "temperature": temperature, "scale": scale, "by_scale": by_scale}
    card = build_card(args, state, choices, ours, base, risk, figure)
    card["size_bytes"] = folder_size(packed)
    # 6. the package's folder is written once, now that everything in it is chosen and measured
    dest = publish(packed, args.dest, card)
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work_figure, figure)
    args.card.write_text(render_default_card(card))
    print_summary(card, dest, args.card)


def print_summary(card: dict, dest: Path, card_path: Path) -> None:
    r = card["results"]
    print(f"packed {dest} ({card['size_bytes'] / 1e6:.1f} MB), tta {card['tta']}, T = {card['temperature']}; "
          f"FER+ test {pct(r['ferplus_test']['accuracy'])} / {pct(r['ferplus_test']['macro_f1'])}; "
          f"FER2013 PrivateTest {pct(r['fer2013_privatetest']['accuracy'])} / "
          f"{pct(r['fer2013_privatetest']['macro_f1'])}; wild_dev report {pct(r['wild_report']['accuracy'])} / "
          f"{pct(r['wild_report']['macro_f1'])}, all {pct(r['wild_all']['accuracy'])} / "
          f"{pct(r['wild_all']['macro_f1'])}; card {card_path}")


if __name__ == "__main__":
    main()
