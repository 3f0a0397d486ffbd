"""The study report, on a small synthetic study folder written with ferwild's own writers."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ferwild.data.balance import class_count_figure
from ferwild.metrics import classification_metrics, write_evaluation
from ferwild.study_report import HEATMAP_DPI, aggregate_cells, heatmap_figsize, optimizer_lr_heatmap, write_report
from ferwild.train import write_history

NAMES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
SEEDS = [0, 1]
DEFAULTS = {"model.name": "vit_tiny", "optim.optimizer": "adam", "optim.lr": 1e-3, "train.epochs": 3}
EXPERIMENTS = [
    {"name": "main", "set": {"model.name": "vit_tiny"}},
    {"name": "baseline", "set": {"model.name": "cnn_small"}},
    {"name": "epochs", "grid": {"train.epochs": [2, 4]}},
    {"name": "optimizer_lr", "grid": {"optim.optimizer": ["sgd", "adam"], "optim.lr": [1e-2, 1e-3]}},
    {"name": "fine_lr", "set": {"optim.optimizer": "adam"}, "grid": {"optim.lr": [1e-5, 2e-5]}},
]
QUALITY_WARNING = ("train images have 9.8x the sharpness of test images (median 29.0 vs 3.0): "
                   "the splits differ in image quality")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def fake_predictions(rng: np.random.Generator, n: int, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose argmax is right about ``accuracy`` of the time."""
    c = len(NAMES)
    y = np.arange(n) % c
    right = rng.random(n) < accuracy
    pred = np.where(right, y, (y + rng.integers(1, c, n)) % c)
    top = rng.uniform(0.45, 0.95, n)
    probs = np.repeat(((1 - top) / (c - 1))[:, None], c, axis=1)
    probs[np.arange(n), pred] = top
    return y, probs


def cells_of(results: pd.DataFrame) -> list[dict]:
    cells = []
    for exp in EXPERIMENTS:
        keys = list(exp.get("grid", {}))
        rows = results[results["experiment"] == exp["name"]]
        groups = rows.groupby(keys, sort=False) if keys else [((), rows)]
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            cell = {"experiment": exp["name"], "params": dict(zip(keys, values)), "n_seeds": len(group),
                    "trials": group["trial"].tolist()}
            for m in ("val_acc", "val_macro_f1", "test_acc", "test_macro_f1"):
                cell[f"{m}_mean"] = float(group[m].mean())
                cell[f"{m}_std"] = float(group[m].std())
            cells.append(cell)
    return cells


def build_study(root: Path, experiments=EXPERIMENTS, *, with_data: bool = True,
                with_selection: bool = True) -> Path:
    """A study folder with the layout study.py writes; made-up but self-consistent numbers."""
    rng = np.random.default_rng(7)
    study = root / "study"
    study.mkdir(parents=True)
    prepared = root / "prepared"
    if with_data:
        prepared.mkdir()
        counts = {"train": {n: 40 + 9 * i for i, n in enumerate(NAMES)},
                  "val": {n: 12 + 2 * i for i, n in enumerate(NAMES)},
                  "test": {n: 6 + i for i, n in enumerate(NAMES)}}
        after = dict(counts, train={n: 85 for n in NAMES})
        summary = {
            "label_set": "basic6", "label_names": NAMES, "split_mode": "group",
            "counts": counts, "counts_after_balance": after,
            "status_counts": {"aligned": 480, "unaligned": 15, "dropped": 0, "rejected": 3, "excluded": 0},
            "duplicates": {"exact_pairs": 2, "near_pairs": 11, "cross_split_exact": 1,
                           "cross_split_near": 3, "rows_in_exact_groups": 4, "threshold": 4,
                           "dropped_from_val_test": 0},
            "alignment_failure": {"overall": 0.0303, "attempted": 495, "failed": 15,
                                  "per_class": {n: round(0.01 * (i + 1), 4) for i, n in enumerate(NAMES)}},
            "image_quality": {s: {"sharpness": v, "brightness": 120.0, "contrast": 40.0, "n": 100}
                              for s, v in (("train", 29.0), ("val", 3.1), ("test", 3.0))},
            "quality_warnings": [QUALITY_WARNING],
        }
        (prepared / "summary.json").write_text(json.dumps(summary))
        class_count_figure(counts["train"], after["train"], prepared / "class_counts.png")

    # trial quality: optimizer_lr adam/1e-3 wins on validation, sgd/1e-2 is best on test
    def target(exp: str, params: dict, split: str) -> float:
        base = {"main": 0.70, "baseline": 0.55, "epochs": 0.60, "fine_lr": 0.50}.get(exp, 0.6)
        if exp == "optimizer_lr":
            base = {("adam", 1e-3): 0.85, ("sgd", 1e-2): 0.70 if split == "val" else 0.97}.get(
                (params["optim.optimizer"], params["optim.lr"]), 0.45)
        return base

    rows, featured = [], []
    for exp in experiments:
        grid = exp.get("grid", {})
        combos = [dict(zip(grid, values)) for values in
                  pd.MultiIndex.from_product(list(grid.values())).tolist()] if grid else [{}]
        for ci, params in enumerate(combos):
            for seed in SEEDS:
                trial = f"{exp['name']}-{ci:02d}-s{seed}"
                run = study / "trials" / trial
                run.mkdir(parents=True)
                resolved = {**DEFAULTS, **exp.get("set", {}), **params}
                config = {"model": {"name": resolved["model.name"], "pretrained": "none"},
                          "optim": {"optimizer": resolved["optim.optimizer"], "lr": resolved["optim.lr"]},
                          "train": {"epochs": resolved["train.epochs"], "batch_size": 64, "seed": seed}}
                (run / "config.yaml").write_text(yaml.safe_dump(config))
                acc = {s: target(exp["name"], params, s) - 0.03 * seed for s in ("val", "test")}
                y_val, p_val = fake_predictions(rng, 90, acc["val"])
                y_test, p_test = fake_predictions(rng, 120, acc["test"])
                val = classification_metrics(y_val, p_val, NAMES)
                (run / "eval-val").mkdir()
                (run / "eval-val" / "summary.json").write_text(json.dumps(val))
                epochs = int(resolved["train.epochs"])
                history = [{"epoch": e, "train_loss": 1.5 / e, "train_acc": 0.4 + 0.1 * e,
                            "train_macro_f1": 0.35 + 0.1 * e, "val_loss": 1.6 / e,
                            "val_acc": val["accuracy"] - 0.05 * (epochs - e),
                            "val_macro_f1": val["macro_f1"] - 0.05 * (epochs - e),
                            "lr": float(resolved["optim.lr"])} for e in range(1, epochs + 1)]
                shown = (exp["name"] in ("main", "baseline") and seed == SEEDS[0]) or \
                    (exp["name"] == "optimizer_lr" and params == {"optim.optimizer": "adam", "optim.lr": 1e-3})
                if shown:  # the trials the report shows: real writers, real figures
                    write_history(run, history)
                    test = write_evaluation(run / "eval-test", y_test, p_test, NAMES)
                    featured.append(trial)
                else:  # the rest: the same files, without figures (fast)
                    pd.DataFrame(history).to_csv(run / "metrics.csv", index=False)
                    test = classification_metrics(y_test, p_test, NAMES)
                    (run / "eval-test").mkdir()
                    (run / "eval-test" / "summary.json").write_text(json.dumps(test))
                rows.append({"trial": trial, "experiment": exp["name"], "seed": seed, **resolved,
                             "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"],
                             "test_acc": test["accuracy"], "test_macro_f1": test["macro_f1"],
                             "run_dir": f"trials/{trial}", "seconds": 10.0 + len(rows)})
    results = pd.DataFrame(rows)
    results.to_csv(study / "results.csv", index=False)
    spec = {"data": str(prepared), "seeds": SEEDS, "experiments": experiments,
            "base": {"model.pretrained": "none"}, "selection": {"metric": "val_macro_f1"}}
    (study / "study.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if with_selection:
        cells = cells_of(results)
        best = max(cells, key=lambda c: c["val_macro_f1_mean"])
        rows_best = results[results["trial"].isin(best["trials"])]
        trial = rows_best.loc[rows_best["val_macro_f1"].idxmax(), "trial"]
        winner = {"experiment": best["experiment"], "params": best["params"], "trial": trial,
                  "run_dir": f"trials/{trial}", "val_macro_f1_mean": best["val_macro_f1_mean"],
                  "val_macro_f1_std": best["val_macro_f1_std"]}
        (study / "selection.json").write_text(json.dumps(
            {"metric": "val_macro_f1", "cells": cells, "winner": winner}, indent=1))
        (study / "best_run").write_text(f"trials/{trial}\n")
    return study


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = build_study(tmp_path_factory.mktemp("report"))
    html_path, md_path = write_report(study)
    return study, html_path, md_path, html_path.read_text(), md_path.read_text()


def section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    j = text.index(end, i + len(start))
    return text[i:j]


def test_both_files_written_and_html_is_self_contained(report):
    study, html_path, md_path, html, md = report
    assert html_path == study / "report.html" and md_path == study / "report.md"
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources, "no images in the page"
    assert all(s.startswith("data:image/png;base64,") for s in sources), \
        [s[:60] for s in sources if not s.startswith("data:")]
    assert "href=\"http" not in html and "<link" not in html and "<script" not in html
    # figures: 1, curves + confusion for main and baseline, 8, winner confusion + reliability, crops
    assert len(sources) >= 8
    # every Markdown table became an HTML table, and every Markdown figure points at a real file
    md_tables = len(re.findall(r"^\| [- :|]+\|$", md, flags=re.M))
    assert md_tables == html.count("<table>") and md_tables >= 15
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(sources)
    for link in links:
        assert not Path(link).is_absolute() and (study / link).is_file(), link
    assert "figures/figure8_optimizer_lr.png" in links


def test_every_table_heading_class_and_warning_appears(report):
    _, _, _, html, md = report
    for n in range(1, 12):
        assert re.search(rf"Table {n}(?!\d)", md), f"Table {n} missing from the Markdown"
        assert re.search(rf"<h3[^>]*>Table {n}(?!\d)", html), f"Table {n} heading missing from the HTML"
    for n in (1, 3, 4, 6, 7, 8):
        assert re.search(rf"Figure {n}(?!\d)", md) and re.search(rf"Figure {n}(?!\d)", html)
    for name in NAMES:
        assert name in md and name in html
    # the quality warning is shown prominently: in a warning box, before Table 1
    warn_boxes = re.findall(r'<div class="warn">(.*?)</div>', html, flags=re.S)
    assert any("9.8x the sharpness" in box for box in warn_boxes)
    assert md.index("9.8x the sharpness") < md.index("Table 1")
    assert "4 duplicate pairs cross splits" in md
    # Table of contents links to the sections
    assert '<nav class="toc">' in html and 'href="#' in html


def test_winner_is_named_as_selected_on_validation(report):
    study, _, _, html, md = report
    selection = json.loads((study / "selection.json").read_text())
    winner = selection["winner"]
    assert winner["experiment"] == "optimizer_lr" and winner["params"]["optim.optimizer"] == "adam"
    part = section(md, "Selected configuration", "Method notes")
    assert winner["trial"] in part and "validation macro-F1" in part
    assert "original study" in part and "test" in part.lower()
    assert "Table 11 · Best configuration (selected on validation macro-F1)" in part
    val = f"{100 * winner['val_macro_f1_mean']:.2f} ± {100 * winner['val_macro_f1_std']:.2f}"
    assert val in part
    # per-class test metrics of the winner, straight from its summary.json
    summary = json.loads((study / winner["run_dir"] / "eval-test" / "summary.json").read_text())
    for name in NAMES:
        assert re.search(rf"\| {name}\s+\|.*\|\s+{100 * summary['per_class'][name]['f1']:.2f} \|", part), name
    assert f"{100 * summary['ece']:.2f}%" in part  # calibration stated
    # sgd/1e-2 is best on test but not on validation: the report says what test-picking would do
    assert "would have chosen `optimizer_lr`" in part and "optim.optimizer=sgd" in part
    html_part = section(html, '<h2 id="5-selected-configuration">', "<h2 ")
    assert winner["trial"] in html_part and "validation macro-F1" in html_part
    assert html_part.count("data:image/png;base64,") == 2  # confusion matrix + reliability


def test_heatmap_png_has_the_documented_size(report, tmp_path):
    study, *_ = report
    path = study / "figures" / "figure8_optimizer_lr.png"
    w, h = heatmap_figsize(2, 2)
    assert png_size(path) == (round(w * HEATMAP_DPI), round(h * HEATMAP_DPI))
    # raw per-trial rows work too, a missing combination included (3 optimizers x 2 lrs, 5 cells)
    results = pd.read_csv(study / "results.csv")
    rows = results[results["experiment"] == "optimizer_lr"].copy()
    extra = rows[rows["optim.optimizer"] == "sgd"].assign(**{"optim.optimizer": "rmsprop"})
    extra = extra[extra["optim.lr"] == 1e-2]
    raw = pd.concat([rows, extra], ignore_index=True)
    out = tmp_path / "fig8.png"
    optimizer_lr_heatmap(raw, out, metric="val_macro_f1")
    w, h = heatmap_figsize(3, 2)
    assert png_size(out) == (round(w * HEATMAP_DPI), round(h * HEATMAP_DPI))
    assert heatmap_figsize(3, 3)[0] > heatmap_figsize(3, 2)[0]
    with pytest.raises(ValueError, match="optim.optimizer"):
        optimizer_lr_heatmap(raw.drop(columns=["optim.optimizer"]), tmp_path / "bad.png")


def test_mean_std_match_pandas(report):
    study, _, _, _, md = report
    results = pd.read_csv(study / "results.csv")
    rows = results[results["experiment"] == "optimizer_lr"]
    cells = aggregate_cells(rows, ["optim.optimizer", "optim.lr"])
    assert len(cells) == 4 and (cells["n_seeds"] == 2).all()
    expected = rows.groupby(["optim.optimizer", "optim.lr"])[["val_macro_f1", "test_acc"]].agg(["mean", "std"])
    cell = cells[(cells["optim.optimizer"] == "sgd") & (cells["optim.lr"] == 1e-2)].iloc[0]
    for metric in ("val_macro_f1", "test_acc"):
        assert cell[f"{metric}_mean"] == pytest.approx(expected.loc[("sgd", 1e-2), (metric, "mean")])
        assert cell[f"{metric}_std"] == pytest.approx(expected.loc[("sgd", 1e-2), (metric, "std")])
    assert cell["trials"] == ["optimizer_lr-00-s0", "optimizer_lr-00-s1"]
    # and the report shows those numbers in Table 9's sgd / 1e-2 row
    table9 = section(md, "Table 9", "Figure 8")
    line = next(row for row in table9.splitlines() if re.match(r"\| sgd\s+\|\s+1e-2 \|", row))
    for metric in ("val_macro_f1", "test_acc"):
        mean, std = expected.loc[("sgd", 1e-2), (metric, "mean")], expected.loc[("sgd", 1e-2), (metric, "std")]
        assert f"{100 * mean:.2f} ± {100 * std:.2f}" in line
    # the main model's Table 3 closes with mean ± std over its seeds
    main = results[results["experiment"] == "main"]
    table3 = section(md, "Table 3", "Table 4")
    assert f"{100 * main['test_macro_f1'].mean():.2f} ± {100 * main['test_macro_f1'].std():.2f}" in table3
    # method notes: trial count and total compute time
    notes = md[md.index("Method notes"):]
    assert f"Trials: {len(results)} in 5 experiments" in notes
    assert f"{results['seconds'].sum():,.0f} s" in notes
    # a single seed has no spread
    one = aggregate_cells(rows.iloc[:1], ["optim.optimizer", "optim.lr"])
    assert one["n_seeds"].tolist() == [1] and np.isnan(one["val_acc_std"].iloc[0])


def test_study_with_only_unknown_experiments_still_renders(tmp_path):
    experiments = [{"name": "alpha", "grid": {"optim.lr": [1e-2, 1e-3]}},
                   {"name": "beta", "set": {"model.name": "cnn_small"}}]
    study = build_study(tmp_path, experiments, with_data=False, with_selection=False)
    html_path, md_path = write_report(study)
    md, html = md_path.read_text(), html_path.read_text()
    assert "Experiment `alpha`: mean ± std per grid cell" in md
    assert "Experiment <code>beta</code>: mean" in html
    assert "Prepared dataset not found" in md
    for n in (1, 2, 5, 8, 9, 10):
        assert not re.search(rf"Table {n}(?!\d)", md), n
    assert "Table 11" in md
    # no selection.json: the winner is recomputed from results.csv, on validation macro-F1
    results = pd.read_csv(study / "results.csv")
    means = results.groupby(["experiment", "optim.lr"])["val_macro_f1"].mean()
    best_exp, best_lr = means.idxmax()
    part = section(md, "Selected configuration", "Method notes")
    assert f"`{best_exp}`" in part and "validation macro-F1" in part
    assert "recomputed from results.csv" in md
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))


def test_missing_results_csv_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        write_report(tmp_path)


def test_cells_at_chance_are_flagged_at_a_glance_and_in_their_table(tmp_path, report):
    # the shared study learned everywhere: no flag
    assert "did not learn the task (at or near chance)" not in report[4] and "**at chance**" not in report[4]
    study = build_study(tmp_path)
    rng = np.random.default_rng(3)
    for seed in SEEDS:  # fine_lr's first cell (lr 1e-5): predictions unrelated to the labels
        y = np.arange(90) % len(NAMES)
        noise = classification_metrics(y, rng.dirichlet(np.ones(len(NAMES)), 90), NAMES)
        (study / "trials" / f"fine_lr-00-s{seed}" / "eval-val" / "summary.json").write_text(json.dumps(noise))
    write_report(study)
    md = (study / "report.md").read_text()
    glance = section(md, "## At a glance", "## 1.")
    assert "1 of 10 cells did not learn the task" in glance and "`fine_lr` `optim.lr=1e-5`" in glance
    table = section(md, "### Table 10", "## 5.")
    assert table.count("at chance") == 1 and table.count("above chance") == 1
