"""Choose, calibrate, pack and measure ferwild's two other FER+ models, and write their cards.

    # the accurate model: an ensemble of the default and its restarted members
    python recipes/ship_ferplus_models.py ensemble --members ferwild:ferplus_vgg runs/member1 runs/member2 \\
        --data ferplus_basic7 --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus --teacher-out teacher_train
    # the live model: the default with precise BN (ferwild.precise_bn), or a student run
    python recipes/ship_ferplus_models.py live --run runs/ferplus_precise_bn \\
        --data ferplus_basic7 --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus

The data are prepared as for the default (``recipes/ship_ferplus.py``). Every choice is made on
FER+'s validation faces or on wild_dev's **choice** people (``train+val``, 75% of the people),
never on the **report** people (``test``) or FER+ test:

``ensemble``
    combines the members (``ferwild.ensemble.combine_runs``: a diverged or unfinished member is
    left out and listed on the card), chooses the test-time augmentation (none | flip) on
    wild_dev's choice people, fits the temperature on FER+ validation, packs
    ``ferwild:ferplus_ensemble``, measures it once beside the default, and writes the teacher's
    probabilities on FER+ train (``--teacher-out``/predictions.parquet) for the student.
``live``
    the model reads one view per face (``tta none``: its job is speed), its temperature is
    fitted on FER+ validation; exports it (fp32) and its int8 twin (static, calibrated on FER+
    train crops), measures both and the default, and packs ``ferwild:ferplus_live`` with the one
    file the live paths will run: the int8 twin when it reads FER+ validation and wild_dev's
    choice people within ``INT8_BAR`` of fp32, else fp32 (the card's ``live_onnx``). The live
    paths take it only within ``LIVE_BAR`` of the default (the card's ``live_default``).

Both measure the classifier's faces/s on this machine (ONNX Runtime, one thread, one face at a
time and five at a time) against the default in the same run, and write
``docs/model_card_<name>.md`` from the model's ``card.json``. Work files (trial models, the packed
model) go under ``--work``; the package's folder is written once, in one step, at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.model_cards import pct, render_extra_card

# recipes/shipping.py, this script's neighbour (a script's own folder is first on sys.path)
from shipping import (ALL, CHOICE, REPO, REPORT, brief, cpu_name, evaluate, folder_size, predictions,  # isort: skip
                      publish, risk_table, train_wall_time_s)

DEFAULT = "ferwild:ferplus_vgg"
#: The live paths run the int8 file only when its accuracy on FER+ test and on wild_dev's report
#: people is within this (a fraction) of its fp32 source's.
INT8_BAR = 0.005
MEASURED = {"ferplus_val": ("data", "val"), "ferplus_test": ("data", "test"),
            "fer2013_privatetest": ("fer2013", "test"), "wild_choice": ("wild", CHOICE),
            "wild_report": ("wild", REPORT), "wild_all": ("wild", ALL)}
PREPARE_COMMANDS = [
    "make install",
    "ferwild prepare ../shared/data/ferplus --out ferplus_basic7 --balance none",
    "ferwild prepare ../shared/data/fer2013 --out fer2013_basic7 --labels basic7 --balance none",
    "ferwild prepare ../shared/data/wild_dev/labels.csv --out wild_dev_like_ferplus --like ferplus_basic7 "
    "--balance none --fallback drop --split-ratios 0.5,0.25,0.25",
]


# ----------------------------------------------------------------------------- measuring


def measure(run, args, work: Path, keys=tuple(MEASURED)) -> dict:
    """``evaluate`` (figures with bootstrap intervals) on each of ``keys``' data and split."""
    return {k: evaluate(run, getattr(args, MEASURED[k][0]), MEASURED[k][1], work / k) for k in keys}


def faces_per_s(onnx_path: Path, batch: int, seconds: float = 2.0, repeats: int = 3) -> float:
    """Classifier faces/s on ONNX Runtime with one thread (the live path's setting): the best of
    ``repeats`` runs of at least ``seconds`` each, ``batch`` faces per call."""
    from ferwild.backends import OnnxClassifier

    model = OnnxClassifier(onnx_path, intra_op_threads=1)
    size = model.preprocessing.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(20):
        model(x)
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
        best = max(best, n / (time.perf_counter() - t0))
    return best


def speed(onnx_files: dict[str, Path]) -> dict:
    """faces/s one at a time and five at a time for each ONNX file, measured in this one run."""
    out = {}
    for name, path in onnx_files.items():
        out[name] = {"faces_per_s_batch1": faces_per_s(path, 1), "faces_per_s_batch5": faces_per_s(path, 5)}
    return out


def onnx_figures(onnx_path: Path, prepared: Path, split: str, reference: np.ndarray | None = None) -> dict:
    """Accuracy / macro-F1 of an ONNX file on the cached crops of ``split`` (no re-detection), and
    with ``reference`` probabilities (its fp32 twin) the share of equal labels and the largest
    probability difference. Returns the figures and the probabilities."""
    from sklearn.metrics import accuracy_score, f1_score

    from ferwild.backends import OnnxClassifier
    from ferwild.data.prepared import PreparedDataset

    data = PreparedDataset(prepared)
    rows = data.rows(split, include_augmented=False).reset_index(drop=True)
    model = OnnxClassifier(onnx_path)
    pre = model.preprocessing
    images = data.images(rows)
    logits = np.concatenate([model(pre.pixel_values(images[i:i + 256])) for i in range(0, len(rows), 256)])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    truth = rows["label"].map({n: i for i, n in enumerate(data.label_names)}).to_numpy()
    pred = probs.argmax(1)
    out = {"n": int(len(truth)), "accuracy": float(accuracy_score(truth, pred)),
           "macro_f1": float(f1_score(truth, pred, average="macro", labels=list(range(len(data.label_names))),
                                      zero_division=0))}
    if reference is not None:
        out["same_label"] = float((reference.argmax(1) == pred).mean())
        out["max_abs_prob_diff"] = float(np.abs(reference - probs).max())
        out["mean_abs_prob_diff"] = float(np.abs(reference - probs).mean())
    return out, probs


def neutral_reading(confusion: list[list[int]], names: list[str]) -> dict:
    """How a model uses "neutral" on a test set: neutral's precision and recall, and for every
    other class the share of its faces read as neutral (a crowd-label model's usual failure:
    weak expressions answered as neutral)."""
    cm = np.asarray(confusion, dtype=float)
    n = names.index("neutral")
    return {"neutral_precision": float(cm[n, n] / max(cm[:, n].sum(), 1)),
            "neutral_recall": float(cm[n, n] / max(cm[n].sum(), 1)),
            "neutral_answer_share": float(cm[:, n].sum() / cm.sum()),
            "read_as_neutral": {c: float(cm[i, n] / max(cm[i].sum(), 1)) for i, c in enumerate(names) if i != n}}


# ----------------------------------------------------------------------------- the two models


def _choose_tta(run_dir: Path, args, work: Path) -> tuple[str, dict]:
    from ferwild.runs import pack_run

    by_tta = {}
    for tta in ("none", "flip"):
        trial = pack_run(run_dir, work / "trials" / f"tta-{tta}", card={}, tta=tta)
        by_tta[tta] = measure(trial, args, work / f"tta-{tta}", ("wild_choice", "ferplus_val"))
    tta = max(by_tta, key=lambda t: by_tta[t]["wild_choice"]["macro_f1"])
    return tta, {t: {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in d.items()}
                 for t, d in by_tta.items()}


def _calibrate_and_measure(run_dir: Path, args, work: Path, tta: str, by_tta_val_dir: Path | None):
    """Temperature on FER+ validation (majority labels) with ``tta``, then the packed trial measured
    once on everything, and the default measured the same way."""
    from ferwild.metrics import fit_temperature
    from ferwild.runs import pack_run

    val_dir = by_tta_val_dir or work / "calibration-val"
    if by_tta_val_dir is None:
        evaluate(pack_run(run_dir, work / "trials" / "uncalibrated", card={}, tta=tta), args.data, "val", val_dir)
    names = json.loads((val_dir / "summary.json").read_text())["label_names"]
    probs, labels = predictions(val_dir, names)
    temperature = round(fit_temperature(probs, labels), 4)
    packed = pack_run(run_dir, work / "packed", card={}, tta=tta, temperature=temperature)
    ours = measure(packed, args, work / "ours")
    base = measure(DEFAULT, args, work / "default", ("ferplus_test", "fer2013_privatetest", "wild_report", "wild_all"))
    return temperature, packed, ours, base, names


def _risk(work: Path, names: list[str], name: str, figure: Path) -> list[dict]:
    from ferwild.metrics import risk_coverage_figure

    ours_p, ours_y = predictions(work / "ours" / "wild_all", names)
    base_p, base_y = predictions(work / "default" / "wild_all", names)
    risk_coverage_figure({f"ferwild:{name}": (ours_p, ours_y), DEFAULT: (base_p, base_y)}, figure,
                         title=f"wild_dev, {len(ours_y):,} photos (largest face): answer or abstain")
    return risk_table(ours_p, ours_y)


def _common_card(name: str, packed: Path, tta: str, temperature: float, ours: dict, base: dict, names: list[str],
                 args, work: Path) -> dict:
    import torch

    from ferwild.models import count_parameters
    from ferwild.runs import load_run

    model, state = load_run(packed)
    figure = REPO / "docs" / "figures" / f"risk_coverage_wild_dev_{name}.png"
    return {
        "name": name, "architecture": state["model_config"]["name"], "params": count_parameters(model),
        "labels": names, "dataset": "FER+ votes (7 classes)",
        "data": "FER+ (FER2013's faces, ten crowd votes each), 7 classes, hard label = the votes' majority "
                "(ties, unknown and not-a-face majorities excluded): FER2013Train (train), FER2013Valid (val), "
                "FER2013Test (test)",
        "tta": tta, "temperature": temperature,
        "hardware": f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU; torch {torch.__version__}",
        "test": brief(ours["ferplus_test"]), "test_name": "FER+ test (majority, 7 classes)",
        "results": {k: brief(v) for k, v in ours.items()}, "baseline": DEFAULT,
        "baseline_results": {k: brief(v) for k, v in base.items()},
        "neutral": {"ours": neutral_reading(ours["ferplus_test"]["confusion"], names),
                    "baseline": neutral_reading(base["ferplus_test"]["confusion"], names)},
        "risk_coverage_wild_dev": _risk(work, names, name, figure),
        "risk_coverage_figure": os.path.relpath(figure, REPO),
        "measured_on": {"ferplus_val": "FER+ validation faces (choices: temperature)",
                        "ferplus_test": "FER+ test faces (no choice)",
                        "fer2013_privatetest": "FER2013 PrivateTest faces with FER2013's labels (no choice)",
                        "wild_choice": "wild_dev choice people (train+val: TTA chosen here)",
                        "wild_report": "wild_dev report people (test: no choice saw them)",
                        "wild_all": "wild_dev all photos (choice and report people)"},
    }


def ship_ensemble(args) -> None:
    from ferwild.data.prepared import PreparedDataset
    from ferwild.ensemble import combine_runs
    from ferwild.runs import pack_run

    name, work = "ferplus_ensemble", args.work / "ferplus_ensemble"
    report = combine_runs(args.members, work / "run", max_val_drop=args.max_val_drop)
    print(f"members: {len(report['members'])} used, {len(report['excluded'])} left out "
          + "; ".join(f"{e['run']}: {e['problem']}" for e in report["excluded"]))
    run = work / "run"
    if args.precise_bn:
        from ferwild.precise_bn import precise_bn_run

        # every member's BatchNorm statistics re-estimated on clean FER+ training faces
        run = precise_bn_run(run, args.data, work / "run_precise_bn")
    tta, by_tta = _choose_tta(run, args, work)
    temperature, packed, ours, base, names = _calibrate_and_measure(run, args, work, tta,
                                                                    work / f"tta-{tta}" / "ferplus_val")
    onnx = _export(packed, work / "model.onnx")
    card = _common_card(name, packed, tta, temperature, ours, base, names, args, work)
    card.update(_ensemble_texts(report, tta, _precise_bn(run)))
    card["by_tta"] = by_tta
    card["speed"] = speed({name: onnx, "ferplus_vgg": _export(DEFAULT, work / "default.onnx")})
    n_train = len(PreparedDataset(args.data).rows("train", include_augmented=False))
    # a member brought by an ensemble (ferwild.ensemble: `via`) counts in that ensemble's time, once
    timed = {m.get("via", m["run"]) for m in report["members"]}
    card["train_wall_time_s"] = round(sum(_member_wall_time(run, n_train) for run in timed), 1)
    dest = _publish(packed, args.dest or REPO / "src" / "ferwild" / "weights" / name, card)
    if args.teacher_out:
        # the student's targets: the ensemble as chosen (its TTA) but uncalibrated (T = 1)
        teacher = pack_run(run, work / "trials" / "teacher", card={}, tta=tta)
        evaluate(teacher, args.data, "train", args.teacher_out)
        print(f"teacher probabilities on FER+ train: {args.teacher_out / 'predictions.parquet'}")
    _print(card, dest)


def ship_live(args) -> None:
    from ferwild.export import quantize_onnx
    from ferwild.shipped import LIVE_BAR

    name, work = "ferplus_live", args.work / "ferplus_live"
    tta = "none"  # one view per face: the live model's job is speed
    temperature, packed, ours, base, names = _calibrate_and_measure(args.run, args, work, tta, None)
    fp32 = _export(packed, work / "model.onnx")
    int8 = work / "model.int8.onnx"
    quantize_onnx(fp32, int8, calibration=_calibration_crops(args.data, fp32), mode="static")
    card = _common_card(name, packed, tta, temperature, ours, base, names, args, work)
    card.update(_live_texts(args.run, args.previous))
    fp32_test, fp32_p = onnx_figures(fp32, args.data, "test")
    int8_test, _ = onnx_figures(int8, args.data, "test", fp32_p)
    fp32_wild, fp32_wild_p = onnx_figures(fp32, args.wild, REPORT)
    int8_wild, _ = onnx_figures(int8, args.wild, REPORT, fp32_wild_p)
    card["int8"] = {"ferplus_test": int8_test, "ferplus_test_fp32": fp32_test, "wild_report": int8_wild,
                    "wild_report_fp32": fp32_wild}
    card["speed"] = speed({name: fp32, f"{name}_int8": int8, "ferplus_vgg": _export(DEFAULT, work / "default.onnx")})
    # the live paths run the int8 file when it reads faces as its fp32 source does (INT8_BAR), else
    # fp32; chosen on FER+ validation and wild_dev's choice people, never on the faces reported
    choice = {}
    for key, (prepared, split) in {"ferplus_val": (args.data, "val"), "wild_choice": (args.wild, CHOICE)}.items():
        f32, _ = onnx_figures(fp32, prepared, split)
        q8, _ = onnx_figures(int8, prepared, split)
        choice[key] = {"fp32": f32["accuracy"], "int8": q8["accuracy"]}
    card["int8"]["choice"] = choice
    int8_ok = all(abs(c["int8"] - c["fp32"]) <= INT8_BAR for c in choice.values())
    card["live_onnx"] = int8.name if int8_ok else fp32.name
    live_figures = {"ferplus_test": int8_test, "wild_report": int8_wild} if int8_ok else ours
    # the live paths' default only if that file reads faces nearly as well as the default (shipped.LIVE_BAR)
    gaps = {k: base[k]["accuracy"] - live_figures[k]["accuracy"] for k in ("ferplus_test", "wild_report")}
    card["live_default"] = all(g <= LIVE_BAR for g in gaps.values())
    card["live_gap_points"] = {k: round(100 * g, 2) for k, g in gaps.items()}
    card.update(_live_training(args))
    # only the file the live paths run ships; the fp32 export is rebuilt from the weights on demand
    # (ferwild.export.cached_onnx), as for every other model
    shutil.copyfile(work / card["live_onnx"], packed / card["live_onnx"])
    dest = _publish(packed, args.dest or REPO / "src" / "ferwild" / "weights" / name, card)
    _print(card, dest)


# ----------------------------------------------------------------------------- helpers


def _precise_bn(run: Path) -> dict | None:
    """The ``precise_bn`` record of a run written by :func:`ferwild.precise_bn.precise_bn_run`, else None."""
    state = run / "checkpoints" / "final" / "state.json"
    return json.loads(state.read_text()).get("precise_bn") if state.is_file() else None


def _live_training(args) -> dict:
    """Training time, epochs and speed of the live model: its own stages, or for a precise-BN
    model the training of the model it re-estimated plus the re-estimation."""
    from ferwild.shipped import is_shipped, model_card

    record = _precise_bn(Path(args.run))
    if record is not None and is_shipped(record["source"]):
        source = model_card(record["source"])
        return {"train_wall_time_s": round(source["train_wall_time_s"] + record["seconds"], 1),
                "epochs": source.get("epochs"), "train_img_per_s": source.get("train_img_per_s"),
                "stages": source.get("stages", [])}
    stages = [Path(r) for r in (args.previous, args.run) if r is not None]
    history = pd.concat([pd.read_csv(r / "metrics.csv") for r in stages])
    return {"train_wall_time_s": round(sum(train_wall_time_s(r) for r in stages), 1), "epochs": int(len(history)),
            "train_img_per_s": float(history["train_img_per_s"].median())}


def _export(run, out: Path) -> Path:
    from ferwild.export import export_onnx

    export_onnx(run, out)
    return out


def _calibration_crops(prepared: Path, onnx_path: Path, n: int = 512) -> np.ndarray:
    """``n`` FER+ training crops (a fixed random draw), normalised as the model reads them."""
    from ferwild.backends import OnnxClassifier
    from ferwild.data.prepared import PreparedDataset

    data = PreparedDataset(prepared)
    rows = data.rows("train", include_augmented=False).sample(n=n, random_state=0)
    return OnnxClassifier(onnx_path).preprocessing.pixel_values(data.images(rows))


def _member_wall_time(run: str, n_train: int) -> float:
    """A member's training time: a shipped model's card's; a run's epochs, each ``n_train`` faces
    at its measured images/s (a run resumed over several sessions: its folder's timestamps would
    count the pauses too)."""
    from ferwild.runs import resolve_run_dir
    from ferwild.shipped import model_card

    path = resolve_run_dir(run)
    if str(run).startswith("ferwild:"):
        return float(model_card(run).get("train_wall_time_s", 0.0))
    metrics = pd.read_csv(path / "metrics.csv")
    if "train_img_per_s" in metrics and metrics["train_img_per_s"].gt(0).all():
        return float((n_train / metrics["train_img_per_s"]).sum())
    return train_wall_time_s(path)


def _ensemble_texts(report: dict, tta: str, precise_bn: dict | None = None) -> dict:
    members = report["members"]
    restarted = all(m["run"].startswith("ferwild:") or "member" in Path(m["run"]).name for m in members)
    combine = ("members combined by `ferwild.ensemble.combine_runs` (a diverged or unfinished member, or "
               f"one more than {100 * report['max_val_drop']:.0f} validation points behind, is left out)")
    pbn = (f"; then every member's BatchNorm statistics re-estimated on {precise_bn['faces']:,} clean FER+ training "
           "faces (precise BN, `ferwild.precise_bn`)") if precise_bn else ""
    flags = " --precise-bn" if precise_bn else ""
    texts = {
        "architecture_text": f"an ensemble of {len(members)} fer_vgg (VGG-style CNNs for 48 px faces, four conv "
                             "stages of 32-256 channels, a 256-wide fully connected layer): their class "
                             "probabilities averaged" + (" over each face and its mirror image" if tta == "flip" else ""),
        "members": members, "excluded": report["excluded"], "epochs": None,
    }
    if restarted:
        return {**texts, "recipe": "recipes/ferplus_member.yaml",
                "recipe_text": "the default `ferwild:ferplus_vgg` (recipes/ferplus.yaml: 10 epochs from the FER2013 "
                               "model) and members restarted from its backbone with a fresh head, their own seed and a "
                               "4-epoch warm-restart cosine cycle at 0.01 (recipes/ferplus_member.yaml), crowd-vote "
                               f"targets; {combine}{pbn}",
                "commands": [*PREPARE_COMMANDS,
                             *[f"ferwild train recipes/ferplus_member.yaml --data ferplus_basic7 --out runs/member{i} "
                               f"--seed {i} --resume" for i in range(1, len(members))],
                             "python recipes/ship_ferplus_models.py ensemble --members ferwild:ferplus_vgg "
                             + " ".join(f"runs/member{i}" for i in range(1, len(members)))
                             + " --data ferplus_basic7 --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus "
                               f"--teacher-out teacher_train{flags}"]}
    others = [(Path(m["run"]).name, f" --seed {m['seed']}" if m.get("seed") else "")
              for m in members if not m["run"].startswith("ferwild:")]
    trained = ("a fer_vgg" if len(others) == 1
               else f"{len(others)} fer_vgg, each with its own seed,")
    summary = (f"the default and, trained on its own, {trained} on the default's first-stage recipe over 30 epochs "
               "from the FER2013 model (recipes/ferplus_long.yaml: no occluders, crowd-vote targets)")
    return {**texts, "recipe": "recipes/ferplus_long.yaml", "summary_text": summary,
            "recipe_text": summary.replace("the default", "the default `ferwild:ferplus_vgg` (two stages, its card)", 1)
                           + f"; {combine}{pbn}",
            "commands": [*PREPARE_COMMANDS,
                         *[f"ferwild train recipes/ferplus_long.yaml --data ferplus_basic7 --out runs/{o} --resume{seed}"
                           for o, seed in others],
                         "python recipes/ship_ferplus_models.py ensemble --members ferwild:ferplus_vgg "
                         + " ".join(f"runs/{o}" for o, _ in others)
                         + f" --data ferplus_basic7 --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus{flags}"]}


#: What the live model's card says of each student architecture ferwild has shipped.
STUDENT_TEXTS = {
    "fer_vgg": "the default's own architecture (four conv stages of 32-256 channels, a 256-wide fully connected "
               "layer), one view per face where the default reads two (the face and its mirror image)",
    "fer_vgg_half": "fer_vgg at half width (four conv stages of 16-128 channels, the same depth and 256-wide fully "
                    "connected layer): a quarter of the default's multiply-adds",
}


def _teacher_text(teacher: str) -> tuple[str, str]:
    """Who the teacher was and the command that wrote its probabilities, from the recipe's path."""
    if "teacher_train" in teacher:
        return ("the FER+ ensemble of the default and two restarted members (docs/model_card_ferplus_ensemble.md)",
                "make model-ferplus-ensemble MEMBERS=\"1 2\"   # the teacher: teacher_train/predictions.parquet")
    return ("the default `ferwild:ferplus_vgg` read with its mirror image (test-time flip) and calibrated",
            "ferwild evaluate ferwild:ferplus_vgg --data ferplus_basic7 --split train --out teacher_default")


def _precise_bn_texts(record: dict) -> dict:
    source = record["source"]
    return {
        "architecture_text": STUDENT_TEXTS["fer_vgg"],
        "teacher_text": None,
        "summary_text": "the default's own network read once per face, where the default reads each face and its "
                        "mirror image, with its BatchNorm statistics re-estimated on clean training faces "
                        "(precise BN) so that one view reads nearly as well as two",
        "recipe": "src/ferwild/precise_bn.py",
        "recipe_text": f"`{source}` itself (its recipes and training on its card), its BatchNorm statistics "
                       f"re-estimated as a plain average over {record['faces']:,} clean FER+ training faces "
                       "(precise BN, `ferwild.precise_bn.precise_bn_run`, "
                       f"{record['seconds']:.0f} s; no weight changes), read one view per face",
        "commands": [*PREPARE_COMMANDS,
                     "python -c \"from ferwild.precise_bn import precise_bn_run; "
                     f"precise_bn_run('{source}', 'ferplus_basic7', 'runs/ferplus_precise_bn')\"",
                     "python recipes/ship_ferplus_models.py live --run runs/ferplus_precise_bn --data ferplus_basic7 "
                     "--fer2013 fer2013_basic7 --wild wild_dev_like_ferplus"],
    }


def _live_texts(run, previous=None) -> dict:
    from ferwild.config import RunConfig

    record = _precise_bn(Path(run))
    if record is not None:
        return _precise_bn_texts(record)

    config = RunConfig.load(Path(run) / "config.yaml")
    first = RunConfig.load(Path(previous) / "config.yaml") if previous else config

    def stage(c) -> str:
        return (f"{c.train.epochs} epochs, batch {c.train.batch_size}, SGD (Nesterov) at {c.optim.lr:g} with "
                f"{c.optim.warmup_epochs} warm-up epoch then cosine")

    schedule = stage(first) + (f", then from those weights (a fresh head) {stage(config)}" if previous else "")
    teacher, teacher_command = _teacher_text(str(config.optim.teacher))
    arch = config.model.name
    slimmed = arch != "fer_vgg"
    start = ("started from the default's strongest channels (network slimming, `ferwild.distill.slim_fer_vgg`)"
             if slimmed else "started from the default's weights (a fresh head)")
    occluders = config.data.augment_options.get("occlude_p") if config.data.augment_options else None
    init = ["python -c \"from ferwild.distill import slim_fer_vgg; slim_fer_vgg('ferwild:ferplus_vgg', "
            f"'{arch}', 'student_init.safetensors')\""] if slimmed else []
    pretrained = "" if slimmed else " --pretrained src/ferwild/weights/ferplus_vgg/checkpoints/final/model.safetensors"
    commands = [*PREPARE_COMMANDS, teacher_command, *init,
                f"ferwild train recipes/ferplus_student.yaml --data ferplus_basic7 --out runs/ferplus_live --resume"
                f"{pretrained}"]
    if previous:
        commands.append("ferwild train recipes/ferplus_student.yaml --data ferplus_basic7 --out runs/ferplus_live2 "
                        f"--resume model.pretrained=runs/ferplus_live/checkpoints/epoch-{first.train.epochs:03d}/model.safetensors "
                        f"optim.lr={config.optim.lr:g} train.epochs={config.train.epochs}")
    commands.append("python recipes/ship_ferplus_models.py live " + (
        "--previous runs/ferplus_live --run runs/ferplus_live2" if previous else "--run runs/ferplus_live")
        + " --data ferplus_basic7 --fer2013 fer2013_basic7 --wild wild_dev_like_ferplus")
    return {
        "architecture_text": STUDENT_TEXTS.get(arch, arch),
        "teacher_text": teacher,
        "summary_text": f"{STUDENT_TEXTS.get(arch, arch)}, distilled from {teacher}",
        "recipe": "recipes/ferplus_student.yaml",
        "recipe_text": f"distilled from {teacher}: targets {config.optim.teacher_weight:g} x the "
                       f"teacher's probabilities on each training face + {1 - config.optim.teacher_weight:g} x the "
                       f"crowd's votes (`optim.targets: teacher`); {start}; {schedule}, "
                       f"{config.optim.class_weights}-balanced class weights, the default's augmentation"
                       + (f" with its second stage's occluders on {100 * occluders:.0f}% of the crops" if occluders else ""),
        "commands": commands,
    }


def _publish(packed: Path, dest: Path, card: dict) -> Path:
    """The packed (and measured) model with its card goes to ``dest`` in one step; then its page."""
    from ferwild.files import save_text_atomic
    from ferwild.shipped import CARD_FILE

    # size_bytes counts the folder as shipped, its card.json included (without the size itself)
    save_text_atomic(packed / CARD_FILE, json.dumps(card, indent=2, default=float) + "\n")
    card["size_bytes"] = folder_size(packed)
    dest = publish(packed, dest, card)
    doc = REPO / "docs" / f"model_card_{card['name']}.md"
    doc.write_text(render_extra_card(card, doc, REPO))
    return dest


def _print(card: dict, dest: Path) -> None:
    r = card["results"]
    print(f"packed {dest} ({card['size_bytes'] / 1e6:.1f} MB), tta {card['tta']}, T = {card['temperature']}; "
          f"FER+ test {pct(r['ferplus_test']['accuracy'])} / {pct(r['ferplus_test']['macro_f1'])}; wild_dev report "
          f"{pct(r['wild_report']['accuracy'])} / {pct(r['wild_report']['macro_f1'])}; speed "
          + ", ".join(f"{k} {v['faces_per_s_batch1']:.0f} faces/s" for k, v in card["speed"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=("ensemble", "live"))
    ap.add_argument("--members", nargs="+", default=[], help="ensemble: the member runs (ferwild:NAME or folders).")
    ap.add_argument("--run", type=Path, help="live: the model (a precise_bn_run folder or a finished student run).")
    ap.add_argument("--previous", type=Path, default=None, help="live: the stage --run continued from (its "
                    "training time and epochs count too).")
    ap.add_argument("--data", type=Path, required=True, help="FER+ prepared by `ferwild prepare` (basic7).")
    ap.add_argument("--fer2013", type=Path, required=True, help="FER2013 prepared with --labels basic7.")
    ap.add_argument("--wild", type=Path, required=True, help="wild_dev prepared --like the FER+ data.")
    ap.add_argument("--teacher-out", type=Path, default=None, help="ensemble: where the teacher's FER+ train "
                    "probabilities go (predictions.parquet).")
    ap.add_argument("--max-val-drop", type=float, default=0.05)
    ap.add_argument("--precise-bn", action="store_true", help="ensemble: re-estimate the members' BatchNorm "
                    "statistics on clean FER+ training faces (ferwild.precise_bn) before choosing and measuring.")
    ap.add_argument("--dest", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("ship_eval_ferplus_models"))
    args = ap.parse_args()
    if args.model == "ensemble":
        if len(args.members) < 2:
            ap.error("ensemble needs --members with two or more runs")
        ship_ensemble(args)
    else:
        if args.run is None:
            ap.error("live needs --run")
        ship_live(args)


if __name__ == "__main__":
    main()
