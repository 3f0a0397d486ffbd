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
3. packs the best checkpoint (selected on FER+ validation macro-F1 while training) into
   ``src/ferwild/weights/ferplus_vgg`` (float16) with those two choices;
4. measures the packed model once on FER+ test (majority labels, and against the votes),
   FER2013's PrivateTest with its own labels (and how often those disagree with the FER+
   majority on the same faces), and wild_dev (report split and all photos, per class with
   intervals), next to ``ferwild:fer2013_vgg`` measured the same way and fer 25.10
   (``bench/bench_wild_peers.py``'s JSON, when given);
5. the risk-coverage table and figure on wild_dev (what ``--abstain-below`` keeps);
6. writes ``card.json`` and renders ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

from ship_fer2013 import ANCHORS, cpu_name, pct, reproduce_section, train_wall_time_s  # noqa: E402 - after the path insert

NAME = "ferplus_vgg"
CHOICE, REPORT, ALL = "train+val", "test", "train+val+test"
FRAMING_SCALES = (0.85, 0.92, 1.0, 1.08, 1.16)


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
    keep = ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "ece", "per_class", "confusion", "crowd")
    return {k: s[k] for k in keep if k in s}


def predictions(out: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_parquet(out / "predictions.parquet")
    return frame[[f"prob_{n}" for n in names]].to_numpy(), frame["y_true"].to_numpy()


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


def risk_table(probs: np.ndarray, labels: np.ndarray) -> list[dict]:
    from ferwild.metrics import risk_coverage

    return json.loads(risk_coverage(probs, labels).to_json(orient="records"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="The finished `ferwild train recipes/ferplus.yaml` run.")
    ap.add_argument("--data", type=Path, required=True, help="FER+ prepared by `ferwild prepare` (basic7).")
    ap.add_argument("--fer2013", type=Path, required=True, help="FER2013 prepared with --labels basic7.")
    ap.add_argument("--wild", type=Path, required=True, help="wild_dev prepared --like the FER+ data (see above).")
    ap.add_argument("--peer", type=Path, default=None, help="bench/bench_wild_peers.py's JSON (fer 25.10).")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "ferwild" / "weights" / NAME)
    ap.add_argument("--card", type=Path, default=REPO / "MODEL_CARD.md")
    ap.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    ap.add_argument("--work", type=Path, default=Path("ship_eval_ferplus"), help="Where the evaluation files go.")
    args = ap.parse_args()

    import torch

    from ferwild.config import RunConfig
    from ferwild.metrics import fit_temperature, risk_coverage_figure
    from ferwild.models import count_parameters, model_from_config
    from ferwild.runs import checkpoint_dir, load_checkpoint_state
    from ferwild.runs import pack_run
    from ferwild.shipped import CARD_FILE, default_run

    work = args.work
    state = load_checkpoint_state(checkpoint_dir(args.run, "best"))
    config = RunConfig.load(args.run / "config.yaml")
    history = pd.read_csv(args.run / "metrics.csv")
    names = list(state["label_names"])

    # 1. test-time augmentation, chosen on wild_dev's choice people
    by_tta = {}
    for tta in ("none", "flip"):
        dest = pack_run(args.run, args.dest, card={}, tta=tta)
        by_tta[tta] = {"wild_choice": evaluate(dest, args.wild, CHOICE, work / f"tta-{tta}-wild-choice"),
                       "ferplus_val": evaluate(dest, args.data, "val", work / f"tta-{tta}-ferplus-val")}
    tta = max(by_tta, key=lambda t: by_tta[t]["wild_choice"]["macro_f1"])

    # framing: the learned FER+ template, zoomed in or out, on the same choice people
    dest = pack_run(args.run, args.dest, card={}, tta=tta)
    by_scale = framing_sweep(dest, args.wild, CHOICE, FRAMING_SCALES)
    better = [k for k, v in by_scale.items() if v["gain_ci"][0] > 0]
    scale = max(better, key=lambda k: by_scale[k]["macro_f1"]) if better else 1.0
    if scale != 1.0:
        # the wild_dev crops were cut with the unzoomed template: cut them again as shipped
        raise SystemExit(f"framing scale {scale} beats the learned template on wild_dev's choice people "
                         f"({by_scale}); re-prepare wild_dev with that template before measuring")

    # 2. calibration on FER+ validation (majority labels), with the chosen TTA
    probs, labels = predictions(work / f"tta-{tta}-ferplus-val", names)
    temperature = round(fit_temperature(probs, labels), 4)

    # 3. pack, 4. measure once
    dest = pack_run(args.run, args.dest, card={}, tta=tta, temperature=temperature)
    ours = {
        "ferplus_val": evaluate(dest, args.data, "val", work / "ferplus-val"),
        "ferplus_test": evaluate(dest, args.data, "test", work / "ferplus-test"),
        "fer2013_privatetest": evaluate(dest, args.fer2013, "test", work / "fer2013-privatetest"),
        "wild_choice": evaluate(dest, args.wild, CHOICE, work / "wild-choice"),
        "wild_report": evaluate(dest, args.wild, REPORT, work / "wild-report"),
        "wild_all": evaluate(dest, args.wild, ALL, work / "wild-all"),
    }
    baseline = default_run() if default_run() != f"ferwild:{NAME}" else "ferwild:fer2013_vgg"
    base = {
        "ferplus_test": evaluate(baseline, args.data, "test", work / "base-ferplus-test"),
        "fer2013_privatetest": evaluate(baseline, args.fer2013, "test", work / "base-fer2013-privatetest"),
        "wild_report": evaluate(baseline, args.wild, REPORT, work / "base-wild-report"),
        "wild_all": evaluate(baseline, args.wild, ALL, work / "base-wild-all"),
    }

    # 5. abstention: risk-coverage on wild_dev
    wild_probs, wild_labels = predictions(work / "wild-all", names)
    base_probs, base_labels = predictions(work / "base-wild-all", names)
    figure = args.figures / "risk_coverage_wild_dev.png"
    risk_coverage_figure({f"ferwild:{NAME}": (wild_probs, wild_labels), baseline: (base_probs, base_labels)},
                         figure, title=f"wild_dev, {len(wild_labels):,} photos (largest face): answer or abstain")

    model = model_from_config(state["model_config"])
    peer = json.loads(args.peer.read_text()) if args.peer and args.peer.is_file() else None
    card = {
        "name": NAME,
        "architecture": state["model_config"]["name"],
        "architecture_text": "a VGG-style CNN for 48 px faces (four conv stages of 32-256 channels, "
                             "a 256-wide fully connected layer)",
        "params": count_parameters(model),
        "labels": names,
        "dataset": "FER+ votes (7 classes)",
        "data": "FER+ (FER2013's faces, ten crowd votes each), 7 classes, hard label = the votes' majority "
                "(ties, unknown and not-a-face majorities excluded): FER2013Train (train), FER2013Valid (val), "
                "FER2013Test (test)",
        "recipe": "recipes/ferplus.yaml",
        "recipe_text": (f"{config.model.name} initialised from `ferwild:fer2013_vgg`'s backbone (the same training "
                        f"faces under FER2013's single labels), cross-entropy to the vote distribution "
                        f"(`optim.targets: votes`), {config.train.epochs} epochs, batch {config.train.batch_size}, "
                        f"SGD (Nesterov, momentum {config.optim.momentum}, weight decay {config.optim.weight_decay}) "
                        f"at {config.optim.lr} with {config.optim.warmup_epochs} warm-up epoch then cosine, "
                        f"{config.optim.class_weights}-balanced class weights, on-the-fly augmentation "
                        f"({', '.join(f'{k} {v}' for k, v in config.data.augment_options.items())}; flips), "
                        f"{config.train.precision} precision, channels-last."),
        "commands": [
            "make install",
            "ferwild prepare ../shared/data/ferplus --out ferplus_basic7 --balance none",
            "ferwild train recipes/ferplus.yaml --data ferplus_basic7 --out runs/ferplus --resume   "
            "# rerun to continue after a stop",
            "ferwild prepare ../shared/data/fer2013 --out fer2013_basic7 --labels basic7 --balance none",
            "ferwild prepare ../shared/data/wild_dev/labels.csv --out wild_dev_like_ferplus --like ferplus_basic7 "
            "--balance none --fallback drop --split-ratios 0.5,0.25,0.25",
            "python recipes/ship_ferplus.py --run runs/ferplus --data ferplus_basic7 --fer2013 fer2013_basic7 "
            "--wild wild_dev_like_ferplus",
        ],
        "tta": tta,
        "by_tta": {t: {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in d.items()}
                   for t, d in by_tta.items()},
        "temperature": temperature,
        "framing": {"scale": scale, "by_scale": {str(k): v for k, v in by_scale.items()}},
        "epochs": int(len(history)),
        "selected_epoch": int(state.get("epoch") or 0),
        "hardware": f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU; torch {torch.__version__}",
        "train_wall_time_s": round(train_wall_time_s(args.run), 1),
        "train_img_per_s": float(history["train_img_per_s"].median()),
        "test": brief(ours["ferplus_test"]),  # what `ferwild models` and /info show
        "test_name": "FER+ test (majority, 7 classes)",
        "results": {k: brief(v) for k, v in ours.items()},
        "baseline": baseline,
        "baseline_results": {k: brief(v) for k, v in base.items()},
        "fer2013_vs_ferplus_labels": fer2013_disagreement(args.fer2013, args.data),
        "risk_coverage_wild_dev": risk_table(wild_probs, wild_labels),
        "risk_coverage_figure": os.path.relpath(figure, REPO),
        "fer2013_anchors": ANCHORS,
        "peer_wild_dev": peer,
    }
    card["size_bytes"] = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    args.card.write_text(render_card(card))
    r = card["results"]
    print(f"packed {dest} ({card['size_bytes'] / 1e6:.1f} MB), tta {tta}, T = {temperature}; "
          f"FER+ test {pct(r['ferplus_test']['accuracy'])} / {pct(r['ferplus_test']['macro_f1'])}; "
          f"FER2013 PrivateTest {pct(r['fer2013_privatetest']['accuracy'])} / "
          f"{pct(r['fer2013_privatetest']['macro_f1'])}; wild_dev report {pct(r['wild_report']['accuracy'])} / "
          f"{pct(r['wild_report']['macro_f1'])}, all {pct(r['wild_all']['accuracy'])} / "
          f"{pct(r['wild_all']['macro_f1'])}; card {args.card}")


def _ci(figures: dict, metric: str) -> str:
    low, high = figures.get(f"{metric}_ci") or (None, None)
    if low is None:
        return pct(figures[metric])
    return f"{pct(figures[metric])} [{100 * low:.1f}, {100 * high:.1f}]"


def render_card(card: dict) -> str:
    """MODEL_CARD.md: the default model's card (the FER2013 model's stays in docs/)."""
    r, b, names = card["results"], card["baseline_results"], card["labels"]
    dis = card["fer2013_vs_ferplus_labels"]
    peer = card.get("peer_wild_dev")
    lines = [
        f"# Model card: `ferwild:{card['name']}` (the default)",
        "",
        "The expression model that `ferwild predict`, `ferwild serve` and `Recognizer.default()` use when no "
        "other model is given. It was trained by ferwild's own commands on FER+'s crowd votes, chosen and "
        "calibrated on FER+'s validation faces and on real photos (`wild_dev`), and measured once on "
        "FER+'s test split, FER2013's PrivateTest and people of `wild_dev` that no choice saw. "
        "`ferwild:fer2013_vgg`, trained on FER2013's single labels, stays available "
        "([its card](docs/model_card_fer2013_vgg.md)).",
        "",
        "## At a glance",
        "",
        "| | |",
        "|---|---|",
        f"| task | 7 facial expressions: {', '.join(names)} |",
        f"| architecture | `{card['architecture']}`: {card['architecture_text']} ({card['params'] / 1e6:.2f}M "
        "parameters) |",
        "| input | one face, grey, 48x48 px, framed like FER2013's crops (MTCNN landmarks -> the learned template) |",
        f"| weights | float16 safetensors, {card['size_bytes'] / 1e6:.1f} MB, inside the package (nothing downloaded) |",
        f"| trained on | {card['data']} |",
        f"| selected on | FER+ validation macro-F1, best of {card['epochs']} epochs: epoch {card['selected_epoch']} |",
        f"| test-time augmentation | {card['tta']} (chosen on wild_dev's choice people: "
        + ", ".join(f"{t}: {pct(v['wild_choice']['accuracy'])} / {pct(v['wild_choice']['macro_f1'])}"
                    for t, v in card["by_tta"].items()) + " accuracy / macro-F1) |",
        "| framing | the landmark template learned from the FER+ crops, unzoomed: no zoom tried on wild_dev's choice "
        "people beat it by more than chance (macro-F1, and the paired-bootstrap interval of its gain, 95% for the "
        "four zooms together: "
        + ", ".join(f"x{k}: {pct(v['macro_f1'])} [{100 * v['gain_ci'][0]:+.1f}, {100 * v['gain_ci'][1]:+.1f}]"
                    for k, v in card["framing"]["by_scale"].items() if float(k) != 1.0)
        + f"; the template itself: {pct(card['framing']['by_scale']['1.0']['macro_f1'])}) |",
        f"| calibration | temperature {card['temperature']:.3f}, fitted on FER+ validation (ECE there "
        f"{100 * r['ferplus_val']['ece']:.1f}%; FER+ test {100 * r['ferplus_test']['ece']:.1f}%) |",
        f"| training hardware | {card['hardware']} |",
        f"| training wall time | {card['train_wall_time_s'] / 60:.0f} min ({card['epochs']} epochs at a median "
        f"{card['train_img_per_s']:.0f} training images/s; the machine also ran other work) |",
        "",
        "## Side by side",
        "",
        "Accuracy / macro-F1 with 95% bootstrap intervals. FER+ test: the 7-class majority label. wild_dev: "
        "real photos, the largest face MTCNN finds, cut like the training crops; *report* is the quarter of "
        "its people no choice saw, *all* every photo with a face.",
        "",
        "| data | ferwild `" + card["name"] + "` | `" + card["baseline"].split(":")[-1] + "` (FER2013 labels) |",
        "|---|---|---|",
    ]
    for key, title in (("ferplus_test", "FER+ test, majority, 7 classes"),
                       ("fer2013_privatetest", "FER2013 PrivateTest, its own labels"),
                       ("wild_report", "wild_dev report people"), ("wild_all", "wild_dev all photos")):
        for metric, what in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            lines.append(f"| {title}: {what} | {_ci(r[key], metric)} | {_ci(b[key], metric)} |")
    lines += [""]
    if peer:
        lines += [
            f"fer {peer.get('fer_version', '')} on the same {peer.get('n_photos', '')} wild_dev photos, measured "
            f"the same way (the largest face MTCNN finds, `bench/bench_wild_peers.py --mtcnn`): accuracy "
            f"{_peer(peer, 'accuracy')}, macro-F1 {_peer(peer, 'macro_f1')} on the "
            f"{peer.get('n_with_face', '')} photos where it found a face.",
            "",
        ]
    lines += [
        "On FER2013's PrivateTest, published figures on the same faces: "
        + "; ".join(f"{n} {pct(a)}" + (f" / {pct(f)}" if f else "") for n, a, f in card["fer2013_anchors"]) + ".",
        "",
        f"FER2013's own label and the FER+ majority disagree on {100 * dis['disagree_rate']:.1f}% of the "
        f"{dis['paired_with_majority_label']:,} PrivateTest faces that have a majority label (faces paired by "
        f"pixels: {dis['paired']:,} of {dis['privatetest_faces']:,}). A model that reads faces like the crowd "
        "is marked wrong on those by FER2013's labels; `ferwild:fer2013_vgg` remains the FER2013 benchmark model.",
        "",
        "## Per class",
        "",
        "Recall with 95% Wilson intervals (support).",
        "",
        "| class | FER+ test | wild_dev all | wild_dev all, `" + card["baseline"].split(":")[-1] + "` |",
        "|---|---|---|---|",
    ]
    for name in names:
        cells = []
        for figures in (r["ferplus_test"], r["wild_all"], b["wild_all"]):
            m = figures["per_class"][name]
            ci = m.get("recall_ci")
            cells.append(f"{pct(m['recall'])}" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")
                         + f" ({m['support']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    crowd = r["ferplus_test"].get("crowd")
    if crowd:
        lines += [
            "",
            "Against the crowd (FER+ test): crowd agreement (the share of the ten labellers who chose the "
            f"predicted class) {100 * crowd['crowd_agreement']['value']:.1f}% "
            f"[{100 * crowd['crowd_agreement']['ci_low']:.1f}, {100 * crowd['crowd_agreement']['ci_high']:.1f}]; "
            f"cross-entropy to the votes {crowd['vote_cross_entropy']['value']:.3f} nats.",
        ]
    lines += [
        "",
        "## Abstaining: risk and coverage on wild_dev",
        "",
        "`ferwild predict --abstain-below T` (and `serve`, `Recognizer(abstain_below=T)`) labels a face "
        "`uncertain` when its top probability is under T; its probabilities are still written. What each T "
        "keeps on wild_dev (all photos; calibrated probabilities):",
        "",
        "| T | answered | accuracy of the answered [95%] | macro-F1 of the answered |",
        "|---|---|---|---|",
    ]
    for row in card["risk_coverage_wild_dev"]:
        lo, hi = row["accuracy_ci"]
        lines.append(f"| {row['threshold']:.1f} | {100 * row['coverage']:.1f}% ({row['n_answered']}) | "
                     f"{pct(row['accuracy'])} [{100 * lo:.1f}, {100 * hi:.1f}] | {pct(row['macro_f1'])} |")
    lines += [
        "",
        f"![risk-coverage on wild_dev]({card['risk_coverage_figure']})",
        "",
        *reproduce_section(card),
        "## Known limits",
        "",
        "- **FER2013's faces, FER+'s crowd.** Web images found by emotion keywords; who is in them (age, skin "
        "tone, culture) was neither recorded nor balanced. Ten crowd workers per face are steadier than one "
        "label, but they read posed and spontaneous expressions alike. Disgust and fear are rare in FER+ "
        "(under 3% of the faces each): their figures are the least certain.",
        "- **wild_dev** labels are one student's reading per photo, and the set is mostly neutral and happy "
        "news photos of public figures: per-class figures for fear, disgust and sadness rest on a few dozen "
        "photos (see the intervals).",
        "- **Grey 48 px input.** Colour and fine detail are discarded; small, blurred, strongly turned or "
        "occluded faces are read less well. A face MTCNN does not find is not classified.",
        "- **Seven categories** are not a person's feelings; do not use the model to make decisions about people.",
        "- **Terms.** The pixels are FER2013's (research use); FER+'s labels are MIT. Use the weights for research.",
        "",
    ]
    return "\n".join(lines)


def _peer(peer: dict, metric: str) -> str:
    figures = peer.get("on_faces", peer)     # bench_wild_peers.py: figures on the photos with a face
    value, ci = figures.get(metric), figures.get(f"{metric}_ci")
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


if __name__ == "__main__":
    main()
