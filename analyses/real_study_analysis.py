"""What the study's protocol gets wrong, measured on a finished `ferwild study` (docs/real-study.md).

Reads STUDY_DIR (written by ``ferwild study recipes/study_ferplus.yaml``) and its trials' saved
test predictions; trains nothing. Four measurements, and the study's own figures beside them
(section ``study``: each experiment's test figures over seeds, the cell chosen on validation,
trial compute):

1. **Selection on test.** The study picked its best cell by test F1 (one seed). The test split
   is cut in two halves at random: the study's rule picks the best seed-0 trial on half A and
   reports half A; ferwild's rule picks the cell with the best mean validation macro-F1 over
   seeds. Both picks are then scored on half B, which neither saw. Repeated over many random
   halvings: the study rule's optimism (A minus B) and both rules' B figures, with 95% ranges.
2. **Single seed.** Every pair of cells the study's tables compare (inside Table 8, 9, 10, main
   vs baseline, the schedules): the difference of seed-0 runs alone, against the mean
   difference over seeds with a 95% t-interval (Welch). A difference "survives" when its
   interval excludes zero.
3. **The F1-drop rule** against cosine and constant schedules at the same budget: test macro-F1
   mean ± std over seeds, the differences with intervals, and how often the rule fired.
4. **Cross-split copies.** FER+ test faces with an exact or near copy in the training faces
   (``duplicates.csv`` of the prepared dataset): the main model's test figures with and without
   them (paired bootstrap), and how often the copy carries the same label. With ``--fer2013``
   the same for the shipped FER2013 model on FER2013's test split.

Usage::

    python analyses/real_study_analysis.py --study model_work/study_ferplus --out model_work/real_study \\
        [--fer2013 model_work/fer2013_basic7]

Writes OUT/analysis.json, OUT/analysis.md and small figures (OUT/*.png). docs/real-study.md
states its figures from a copy of analysis.json kept as docs/bench/real_study_analysis.json
(rendered by tools/render_doc_figures.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from sklearn.metrics import f1_score

from ferwild.files import save_json_atomic, save_text_atomic

REPO = Path(__file__).resolve().parents[1]

TABLES = {  # the study's tables: experiment -> (its title, the parameters its cells vary)
    "epochs": ("Table 8 (epochs)", ["train.epochs"]),
    "optimizer_lr": ("Table 9 (optimizer x learning rate)", ["optim.optimizer", "optim.lr"]),
    "fine_lr": ("Table 10 (fine learning rates)", ["optim.lr"]),
    "schedule": ("schedule (F1-drop rule vs plain)", ["optim.scheduler"]),
}


def macro_f1(y: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    return float(f1_score(y, p, labels=np.arange(n_classes), average="macro", zero_division=0))


class Study:
    """A finished study folder: results, trials and their test predictions."""

    def __init__(self, root: Path):
        self.root = root
        self.results = pd.read_csv(root / "results.csv")
        self.spec = yaml.safe_load((root / "study.yaml").read_text())
        self._preds: dict[str, pd.DataFrame] = {}

    def predictions(self, trial: str) -> pd.DataFrame:
        run_dir = self.results.set_index("trial").loc[trial, "run_dir"]
        if run_dir not in self._preds:
            frame = pd.read_parquet(self.root / run_dir / "eval-test" / "predictions.parquet",
                                    columns=["path", "y_true", "y_pred"])
            self._preds[run_dir] = frame.sort_values("path").reset_index(drop=True)
        return self._preds[run_dir]

    def cell_key(self, row: pd.Series, keys: list[str]) -> str:
        return ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in keys)

    def cells(self, experiment: str, keys: list[str]) -> dict[str, pd.DataFrame]:
        rows = self.results[self.results["experiment"] == experiment]
        if rows.empty or any(k not in rows for k in keys):
            return {}
        return {k: g.sort_values("seed") for k, g in rows.groupby(rows.apply(self.cell_key, axis=1, keys=keys),
                                                                     sort=False)}


# ------------------------------------------------------------------------------------------
# 1. selection on test


def selection_optimism(study: Study, n_halvings: int = 1000, seed: int = 0,
                       experiments: tuple[str, ...] = ("epochs", "optimizer_lr", "fine_lr")) -> dict:
    grid = study.results[study.results["experiment"].isin(list(experiments))].reset_index(drop=True)
    trials = grid["trial"].tolist()
    first = study.predictions(trials[0])
    y = first["y_true"].to_numpy()
    n_classes = int(max(y.max(), max(study.predictions(t)["y_pred"].max() for t in trials)) + 1)
    preds = np.stack([study.predictions(t)["y_pred"].to_numpy() for t in trials])
    assert all((study.predictions(t)["path"].to_numpy() == first["path"].to_numpy()).all() for t in trials)
    seed0 = np.array([s == 0 for s in grid["seed"]])
    # ferwild's rule: best mean val macro-F1 over seeds, then the best-val seed inside it
    cell_keys = [k for k in ("experiment", "train.epochs", "optim.optimizer", "optim.lr") if k in grid]
    cell_of = grid.apply(lambda r: json.dumps({k: r[k] for k in cell_keys}, default=str), axis=1)
    cell_means = grid.groupby(cell_of)["val_macro_f1"].mean()
    best_cell = cell_means.idxmax()
    inside = grid[cell_of == best_cell]
    val_pick = trials.index(inside.loc[inside["val_macro_f1"].idxmax(), "trial"])
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_halvings):
        # a class-stratified half, so both halves hold every class
        half = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            where = np.flatnonzero(y == c)
            half[rng.choice(where, len(where) // 2, replace=False)] = True
        f1_a = np.array([macro_f1(y[half], p[half], n_classes) if s0 else -1 for p, s0 in zip(preds, seed0)])
        test_pick = int(f1_a.argmax())
        rows.append({"test_pick": trials[test_pick], "test_pick_on_a": f1_a[test_pick],
                     "test_pick_on_b": macro_f1(y[~half], preds[test_pick][~half], n_classes),
                     "val_pick_on_b": macro_f1(y[~half], preds[val_pick][~half], n_classes)})
    frame = pd.DataFrame(rows)
    frame["optimism"] = frame["test_pick_on_a"] - frame["test_pick_on_b"]
    frame["b_difference"] = frame["test_pick_on_b"] - frame["val_pick_on_b"]

    def summary(col: str) -> dict:
        return {"mean": float(frame[col].mean()), "range95": [float(frame[col].quantile(0.025)),
                                                              float(frame[col].quantile(0.975))]}

    full_test = grid[seed0].loc[grid[seed0]["test_macro_f1"].idxmax()]
    return {"grid_trials": len(trials), "seed0_trials": int(seed0.sum()), "halvings": n_halvings,
            "val_pick": trials[val_pick], "val_pick_cell": json.loads(best_cell),
            "test_picks": frame["test_pick"].value_counts().head(5).to_dict(),
            "study_rule_reported_on_a": summary("test_pick_on_a"), "study_rule_on_b": summary("test_pick_on_b"),
            "optimism": summary("optimism"), "ferwild_rule_on_b": summary("val_pick_on_b"),
            "b_difference_study_minus_ferwild": summary("b_difference"),
            "share_halvings_study_pick_better_on_b": float((frame["b_difference"] > 0).mean()),
            "full_test": {"study_pick": full_test["trial"],
                          "study_pick_test_macro_f1": float(full_test["test_macro_f1"]),
                          "ferwild_pick": trials[val_pick],
                          "ferwild_pick_test_macro_f1": float(grid.iloc[val_pick]["test_macro_f1"])},
            "_frame": frame}


# ------------------------------------------------------------------------------------------
# 2. single seed, 3. schedules


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean difference a - b and its 95% Welch t-interval."""
    diff = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return float(diff), float(diff), float(diff)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = stats.t.ppf(0.975, dof)
    return float(diff), float(diff - t * se), float(diff + t * se)


def single_seed(study: Study, metric: str = "test_macro_f1") -> dict:
    out, pairs_all = {}, []
    groups = {exp: study.cells(exp, keys) for exp, (_, keys) in TABLES.items()}
    titles = {exp: title for exp, (title, _) in TABLES.items()}
    titles["main_vs_baseline"] = "Tables 3 vs 6 (main vs baseline)"
    main = study.results[study.results["experiment"] == "main"].sort_values("seed")
    base = study.results[study.results["experiment"] == "baseline"].sort_values("seed")
    groups["main_vs_baseline"] = {"main (fer_vgg_tiny)": main, "baseline (vit_tiny)": base}
    for name, cells in groups.items():
        rows = []
        for (ka, a), (kb, b) in itertools.combinations(cells.items(), 2):
            va, vb = a[metric].to_numpy(), b[metric].to_numpy()
            if min(len(va), len(vb)) < 2 or not ((a["seed"] == 0).any() and (b["seed"] == 0).any()):
                continue
            s0 = float(a.loc[a["seed"] == 0, metric].iloc[0] - b.loc[b["seed"] == 0, metric].iloc[0])
            diff, lo, hi = welch(va, vb)
            per_seed = [float(x - z) for x, z in zip(va, vb)]
            rows.append({"a": ka, "b": kb, "seed0_difference": s0, "mean_difference": diff, "ci95": [lo, hi],
                         "survives": bool(lo > 0 or hi < 0),
                         "seeds_disagree_in_sign": bool(len({np.sign(d) for d in per_seed if d != 0}) > 1)})
        cell_rows = [{"cell": k, "n_seeds": len(v), "mean": float(v[metric].mean()),
                      "std": float(v[metric].std(ddof=1)) if len(v) > 1 else 0.0,
                      "per_seed": [float(x) for x in v[metric]]} for k, v in cells.items()]
        if not cell_rows:
            continue
        out[name] = {"title": titles[name], "cells": cell_rows, "pairs": rows}
        pairs_all += rows
    out["_total"] = {"pairs": len(pairs_all), "survive": sum(r["survives"] for r in pairs_all),
                     "seed_signs_disagree": sum(r["seeds_disagree_in_sign"] for r in pairs_all),
                     "seed0_would_rank": sum(r["seed0_difference"] != 0 for r in pairs_all)}
    return out


def f1_drop_runs(study: Study) -> list[dict]:
    """Each F1-drop run of the study, read once: how many epochs lowered its learning rate and, where
    one did, the first: its epoch and the validation macro-F1 before and at it (the fall that fired)."""
    baseline = set(study.results.loc[study.results["experiment"] == "baseline", "run_dir"])
    runs = []
    for run_dir in sorted(set(study.results["run_dir"])):
        config = yaml.safe_load((study.root / run_dir / "config.yaml").read_text())
        if config["optim"]["scheduler"] != "f1_drop":
            continue
        metrics = pd.read_csv(study.root / run_dir / "metrics.csv")
        drops = np.flatnonzero(np.diff(metrics["lr"].to_numpy()) < 0)
        run = {"run_dir": run_dir, "baseline": run_dir in baseline, "times_fired": int(len(drops))}
        if len(drops):
            f1 = metrics["val_macro_f1"].to_numpy()
            run.update({"epoch": int(metrics["epoch"].iloc[drops[0]]),
                        "val_macro_f1_before": float(f1[drops[0] - 1]) if drops[0] else None,
                        "val_macro_f1_at": float(f1[drops[0]])})
        runs.append(run)
    return runs


def schedule_firings(runs: list[dict]) -> dict:
    """How often the F1-drop rule lowered the learning rate in the main model's runs (not the baseline's)."""
    main = [r for r in runs if not r["baseline"]]
    return {"f1_drop_runs": len(main), "runs_where_it_fired": sum(r["times_fired"] > 0 for r in main),
            "times_fired": sum(r["times_fired"] for r in main)}


# ------------------------------------------------------------------------------------------
# 4. cross-split copies


def copies_effect(predictions: pd.DataFrame, prepared: Path, train_paths: set[str] | None = None,
                  n_boot: int = 2000, seed: int = 0) -> dict:
    """Test figures with and without test faces that have a copy among the training faces."""
    dup = pd.read_csv(prepared / "duplicates.csv")
    manifest = pd.read_parquet(prepared / "manifest.parquet", columns=["path", "label", "split"])
    label_of = dict(zip(manifest["path"], manifest["label"]))
    test_side, train_side = [], []
    for r in dup.itertuples():
        for (p, s), (q, t) in (((r.path_i, r.split_i), (r.path_j, r.split_j)),
                               ((r.path_j, r.split_j), (r.path_i, r.split_i))):
            if s == "test" and t == "train" and (train_paths is None or q in train_paths):
                test_side.append(p)
                train_side.append(q)
    copies = pd.DataFrame({"test": test_side, "train": train_side})
    same_label = copies.groupby("test").apply(
        lambda g: any(label_of.get(q) == label_of.get(g.name) for q in g["train"]), include_groups=False)
    flag = predictions["path"].isin(set(copies["test"])).to_numpy()
    y, p = predictions["y_true"].to_numpy(), predictions["y_pred"].to_numpy()
    n_classes = int(max(y.max(), p.max()) + 1)
    correct = y == p

    def figures(mask):
        return float(correct[mask].mean()), macro_f1(y[mask], p[mask], n_classes)

    all_acc, all_f1 = figures(np.ones_like(flag))
    clean_acc, clean_f1 = figures(~flag)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        m = flag[idx]
        boots.append(correct[idx].mean() - correct[idx][~m].mean())
    lo, hi = np.percentile(boots, [2.5, 97.5])
    copy_acc = float(correct[flag].mean()) if flag.any() else float("nan")
    same = same_label.reindex(predictions.loc[flag, "path"]).fillna(False).to_numpy(dtype=bool)
    return {"test_faces": int(len(y)), "with_a_train_copy": int(flag.sum()),
            "copies_with_the_same_label": int(same.sum()),
            "accuracy_all": all_acc, "accuracy_without_copies": clean_acc,
            "accuracy_difference": all_acc - clean_acc, "accuracy_difference_ci95": [float(lo), float(hi)],
            "macro_f1_all": all_f1, "macro_f1_without_copies": clean_f1, "macro_f1_difference": all_f1 - clean_f1,
            "accuracy_on_copies": copy_acc,
            "accuracy_on_copies_same_label": float(correct[flag][same].mean()) if same.any() else None,
            "accuracy_on_copies_other_label": float(correct[flag][~same].mean()) if (~same).any() else None,
            "accuracy_on_the_rest": clean_acc}


def study_copies(study: Study) -> dict:
    """The main model's trials on FER+ test: copies among the training faces it used."""
    from ferwild.config import RunConfig
    from ferwild.data.prepared import PreparedDataset
    from ferwild.train import stratified_subset

    prepared = Path(study.spec["data"])
    out = {}
    for trial in study.results.loc[study.results["experiment"] == "main", "trial"]:
        run_dir = study.root / study.results.set_index("trial").loc[trial, "run_dir"]
        config = RunConfig.load(run_dir / "config.yaml", [])
        rows = PreparedDataset(prepared).rows(config.data.train_split)
        if config.data.train_fraction < 1:
            rows = stratified_subset(rows, config.data.train_fraction)
        out[trial] = copies_effect(study.predictions(trial), prepared, set(rows["path"]))
    return out


def copies_over_seeds(per_trial: dict) -> dict:
    """The main model's copy figures summarised over its seeds (what the page's table states)."""
    keys = ("accuracy_on_copies", "accuracy_on_the_rest", "accuracy_difference", "macro_f1_all",
            "macro_f1_without_copies", "macro_f1_difference")
    out = {k: _spread([v[k] for v in per_trial.values()]) for k in keys}
    first = next(iter(per_trial.values()))
    out.update({k: first[k] for k in ("test_faces", "with_a_train_copy", "copies_with_the_same_label")})
    out["accuracy_difference_ci95_per_seed"] = [v["accuracy_difference_ci95"] for v in per_trial.values()]
    return out


def shipped_fer2013_copies(prepared: Path, work: Path) -> dict:
    """The shipped FER2013 model on FER2013's test split, with and without cross-split copies."""
    from ferwild.evaluate import evaluate_run

    eval_dir = work / "fer2013_vgg-fer2013-test"
    if not (eval_dir / "predictions.parquet").exists():
        evaluate_run("ferwild:fer2013_vgg", prepared, "test", eval_dir, device="cpu")
    preds = pd.read_parquet(eval_dir / "predictions.parquet", columns=["path", "y_true", "y_pred"])
    return copies_effect(preds, prepared)


# ------------------------------------------------------------------------------------------
# 5. the study's own figures, as docs/real-study.md states them


def _spread(values) -> dict:
    """mean, sample standard deviation and the values themselves (one per seed)."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "per_seed": values}


def _eval_summary(study: Study, trial: str, split: str = "test") -> dict:
    run_dir = study.results.set_index("trial").loc[trial, "run_dir"]
    return json.loads((study.root / run_dir / f"eval-{split}" / "summary.json").read_text())


def study_figures(study: Study, runs: list[dict]) -> dict:
    """What the page says about the run itself: trials and their compute, each experiment's test
    figures over seeds, the cell chosen on validation, the main model's classes, and the runs
    in which the F1-drop rule fired (with the validation macro-F1 that made it fire)."""
    results = study.results
    own = results.drop_duplicates("run_dir")           # a repeated cell is trained once
    experiments = {}
    for name in ("main", "baseline"):
        rows = results[results["experiment"] == name].sort_values("seed")
        crowd = [_eval_summary(study, t)["crowd"]["crowd_agreement"]["value"] for t in rows["trial"]]
        experiments[name] = {"trials": rows["trial"].tolist(), "val_macro_f1": _spread(rows["val_macro_f1"]),
                             "test_accuracy": _spread(rows["test_acc"]), "test_macro_f1": _spread(rows["test_macro_f1"]),
                             "test_crowd_agreement": _spread(crowd), "trial_minutes": _spread(rows["seconds"] / 60)}
    selection = json.loads((study.root / "selection.json").read_text())
    winner = selection["winner"]
    cell = next(c for c in selection["cells"]
                if c["experiment"] == winner["experiment"] and c["params"] == winner["params"])
    chosen = results[results["trial"].isin(cell["trials"])].sort_values("seed")
    best = _eval_summary(study, winner["trial"])
    main_s0 = _eval_summary(study, "main-s0")
    return {"trials": int(len(results)), "trained": int(len(own)),
            "trial_seconds": float(own["seconds"].sum()),
            "train_faces": int(json.loads((study.root / "trials" / "main-s0" / "train_summary.json").read_text())["train_rows"]),
            "test_faces": int(main_s0["n"]), "val_faces": int(_eval_summary(study, "main-s0", "val")["n"]),
            "experiments": experiments,
            "selected": {"experiment": winner["experiment"], "params": winner["params"], "trials": cell["trials"],
                         "val_macro_f1": _spread(chosen["val_macro_f1"]), "test_accuracy": _spread(chosen["test_acc"]),
                         "test_macro_f1": _spread(chosen["test_macro_f1"]),
                         "best_seed": {"trial": winner["trial"], "test_accuracy": best["accuracy"],
                                       "test_macro_f1": best["macro_f1"], "ece": best["ece"]}},
            "main_s0_per_class": main_s0["per_class"],
            "f1_drop_fired": [{k: v for k, v in r.items() if k not in ("baseline", "times_fired")}
                              for r in runs if r["times_fired"]]}


# ------------------------------------------------------------------------------------------
# outputs


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def write_figures(result: dict, frame: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 2.8), dpi=110)
    bins = np.linspace(min(frame["test_pick_on_b"].min(), frame["val_pick_on_b"].min()) * 100 - 1,
                       frame["test_pick_on_a"].max() * 100 + 1, 40)
    ax.hist(100 * frame["test_pick_on_a"], bins=bins, alpha=0.55, color="#d95f02",
            label="study's rule, as reported (half A, which chose it)")
    ax.hist(100 * frame["test_pick_on_b"], bins=bins, alpha=0.55, color="#7570b3",
            label="study's rule, on unseen half B")
    ax.hist(100 * frame["val_pick_on_b"], bins=bins, alpha=0.55, color="#1b9e77",
            label="ferwild's rule (validation), on half B")
    ax.set_xlabel("test macro-F1 (%) over random halvings of FER+ test")
    ax.set_ylabel("halvings")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "selection_on_test.png")
    plt.close(fig)
    seed_spread_figure(result, out)


def seed_spread_figure(result: dict, out: Path) -> None:
    """Every cell of the study's tables, one dot per seed: what one seed would have read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # every cell of the study's tables, one dot per seed: what one seed would have read
    tables = {k: v for k, v in result["single_seed"].items() if not k.startswith("_")}
    widths = [len(t["cells"]) for t in tables.values()]
    fig, axes = plt.subplots(1, len(tables), figsize=(9.5, 3.0), dpi=110, sharey=True,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, table) in zip(np.atleast_1d(axes), tables.items()):
        for x, cell in enumerate(table["cells"]):
            values = 100 * np.array(cell["per_seed"])
            ax.scatter(np.full(len(values), x), values, s=14, color="#555", zorder=3)
            ax.scatter([x], [values[0]], s=30, facecolors="none", edgecolors="#d95f02", zorder=4)
            ax.hlines(values.mean(), x - 0.3, x + 0.3, color="#1b9e77")
        ax.set_xticks(range(len(table["cells"])),
                      [c["cell"].replace("optimizer=", "").replace("rmsprop", "rms").replace(", lr=", "\n").replace("lr=", "")
                       .replace("epochs=", "").replace("scheduler=", "").split(" (")[0]
                       for c in table["cells"]], fontsize=6.5, rotation=0)
        ax.set_title(table["title"].split(" (")[0], fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("test macro-F1 (%)")
    fig.suptitle("each dot a seed (orange ring: seed 0, what a one-seed study reads); line: mean", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "seed_spread.png")
    plt.close(fig)


def write_markdown(result: dict, out: Path) -> None:
    lines = []
    sel = result["selection_on_test"]
    lines += ["## Selection on test", "",
              f"grid trials: {sel['grid_trials']} ({sel['seed0_trials']} with seed 0), halvings: {sel['halvings']}",
              f"- study rule as reported (half A): {100 * sel['study_rule_reported_on_a']['mean']:.1f}",
              f"- study rule on half B: {100 * sel['study_rule_on_b']['mean']:.1f}",
              f"- optimism: {_pts(sel['optimism']['mean'])} points "
              f"[{_pts(sel['optimism']['range95'][0])}, {_pts(sel['optimism']['range95'][1])}]",
              f"- ferwild rule on half B: {100 * sel['ferwild_rule_on_b']['mean']:.1f} ({sel['val_pick']})",
              f"- study minus ferwild on B: {_pts(sel['b_difference_study_minus_ferwild']['mean'])} "
              f"[{_pts(sel['b_difference_study_minus_ferwild']['range95'][0])}, "
              f"{_pts(sel['b_difference_study_minus_ferwild']['range95'][1])}]", ""]
    for name, one in sel.get("per_table", {}).items():
        lines += [f"- {one['title']}: reported {100 * one['study_rule_reported_on_a']['mean']:.1f}, on B "
                  f"{100 * one['study_rule_on_b']['mean']:.1f}, optimism {_pts(one['optimism']['mean'])} "
                  f"[{_pts(one['optimism']['range95'][0])}, {_pts(one['optimism']['range95'][1])}]; ferwild on B "
                  f"{100 * one['ferwild_rule_on_b']['mean']:.1f} ({one['val_pick']}); picks {one['test_picks']}"]
    lines.append("")
    lines += ["## Single seed", ""]
    for name, table in result["single_seed"].items():
        if name.startswith("_"):
            continue
        lines += [f"### {table['title']}", "", "| cell | test macro-F1 mean ± std | seeds |", "|---|---|---|"]
        for c in table["cells"]:
            lines.append(f"| {c['cell']} | {100 * c['mean']:.1f} ± {100 * c['std']:.1f} | "
                         + ", ".join(f"{100 * v:.1f}" for v in c["per_seed"]) + " |")
        lines += ["", "| a | b | seed 0 only | mean difference [95% CI] | survives |", "|---|---|---|---|---|"]
        for r in table["pairs"]:
            lines.append(f"| {r['a']} | {r['b']} | {_pts(r['seed0_difference'])} | {_pts(r['mean_difference'])} "
                         f"[{_pts(r['ci95'][0])}, {_pts(r['ci95'][1])}] | {'yes' if r['survives'] else 'no'} |")
        lines.append("")
    t = result["single_seed"]["_total"]
    lines += [f"pairs: {t['pairs']}, survive: {t['survive']}, seeds disagree in sign: {t['seed_signs_disagree']}", ""]
    lines += ["## F1-drop rule", "", json.dumps(result["f1_drop_firings"]), ""]
    lines += ["## Copies", ""]
    for k, v in result["copies"].items():
        lines.append(f"- {k}: {json.dumps(v)}")
    save_text_atomic(out / "analysis.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, default=REPO / "model_work/study_ferplus")
    ap.add_argument("--out", type=Path, default=REPO / "model_work/real_study")
    ap.add_argument("--fer2013", type=Path, default=None,
                    help="prepared FER2013 (basic7) for the shipped model's copies")
    ap.add_argument("--halvings", type=int, default=1000)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    study = Study(args.study)
    selection = selection_optimism(study, args.halvings)
    frame = selection.pop("_frame")
    # inside each of the study's ablation tables alone (it picked its winner from Table 10)
    selection["per_table"] = {}
    for experiment, (title, _) in TABLES.items():
        if experiment in ("epochs", "optimizer_lr", "fine_lr"):
            one = selection_optimism(study, args.halvings, experiments=(experiment,))
            one.pop("_frame")
            selection["per_table"][experiment] = {"title": title, **one}
    runs = f1_drop_runs(study)  # config.yaml and metrics.csv of every F1-drop run, read once
    result = {"selection_on_test": selection, "single_seed": single_seed(study),
              "f1_drop_firings": schedule_firings(runs), "copies": {"study_main_ferplus_test": study_copies(study)},
              "study": study_figures(study, runs)}
    result["copies"]["study_main_over_seeds"] = copies_over_seeds(result["copies"]["study_main_ferplus_test"])
    if args.fer2013:
        result["copies"]["shipped_fer2013_vgg_fer2013_test"] = shipped_fer2013_copies(args.fer2013, args.out)
    save_json_atomic(args.out / "analysis.json", result)
    write_figures(result, frame, args.out)
    write_markdown(result, args.out)
    print((args.out / "analysis.md").read_text())


if __name__ == "__main__":
    main()
