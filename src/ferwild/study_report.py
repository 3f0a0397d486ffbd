"""The study report: one self-contained HTML page and its Markdown twin, from a study folder.

:func:`write_report` reads what ``ferwild study`` wrote (``study.yaml``, ``results.csv``,
``selection.json``, ``best_run``, the trial folders and the prepared dataset's
``summary.json``) and writes ``STUDY_DIR/report.html`` (tables as HTML, figures embedded as
base64 PNG, so the page can be mailed or archived alone) and ``STUDY_DIR/report.md`` (the
same tables in Markdown, figures as relative links). Figures the report makes or copies
(Figure 1, the contact sheet, the Figure 8 heatmap) go to ``STUDY_DIR/figures/``.

Sections, numbered like the study (``docs/STUDY.md``):

1. **Data** (Table 1, Figure 1): images per split x class, training counts after balancing,
   and the audit: duplicates (exact / near / across splits), statuses, alignment-failure
   rate overall and per class, image-quality warnings (shown first when there are any).
2. **Main model** (Tables 2-4, Figures 3-4) and 3. **Baseline** (Tables 5-7, Figures 6-7):
   the per-epoch table and curves of one trial, test accuracy / macro-F1 per seed and as
   mean ± std, per-class test metrics, confusion matrix.
4. **Ablations**: epochs (Table 8), optimizer x learning rate (Table 9, Figure 8 heatmap),
   fine learning rates (Table 10), and any other experiment as a generic "mean ± std per grid
   cell" table.
5. **Selected configuration** (Table 11): chosen on *validation* macro-F1, its test metrics
   reported once, per class, with its confusion matrix and reliability diagram (ECE).
6. **Method notes**: seeds, selection rule, trials, compute time.

Accuracy and F1 are fractions in the data files and percentages (2 decimals) in the report.
A spread is the sample standard deviation over seeds (``ddof=1``, pandas' default); with one
seed there is none and only the mean is shown.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.files import save_text_atomic
from ferwild.formatting import DASH, pct
from ferwild.htmldoc import Document as _Doc
from ferwild.htmldoc import md_table_html
from ferwild.metrics import history_markdown, style_cell_grid

__all__ = ["write_report", "study_cells", "cells_not_learning", "optimizer_lr_heatmap", "aggregate_cells",
           "heatmap_figsize", "HEATMAP_DPI"]

METRICS = ("val_acc", "val_macro_f1", "test_acc", "test_macro_f1")
_RESULT_COLUMNS = {"trial", "experiment", "seed", *METRICS, "run_dir", "seconds"}
_METRIC_LABEL = {"val_acc": "val accuracy", "val_macro_f1": "val macro-F1",
                 "test_acc": "test accuracy", "test_macro_f1": "test macro-F1"}
HEATMAP_DPI = 110
FIGURES = "figures"
_ABLATIONS = {  # experiment name -> (table number, title)
    "epochs": (8, "Number of epochs"),
    "optimizer_lr": (9, "Optimizer x learning rate"),
    "fine_lr": (10, "Fine learning rates"),
}
#: A cell is "at chance" when its validation predictions do no better than the same predictions
#: shuffled against the labels (permutation p >= CHANCE_ALPHA), "near chance" when it does but
#: its val macro-F1 is below NEAR_CHANCE_FACTOR x that chance level.
CHANCE_ALPHA = 0.01
NEAR_CHANCE_FACTOR = 2.0
CHANCE_NOTE = ("vs chance: the validation predictions against the same predictions shuffled against the "
               "labels (2,000 shuffles; chance is about 1/number of classes). At chance: no better than "
               f"the shuffles (p ≥ {CHANCE_ALPHA}); near chance: better, but below {NEAR_CHANCE_FACTOR:g}x the "
               "chance level. Such cells did not learn the task: their other figures describe noise.")


# --------------------------------------------------------------------------------------------
# numbers


def chance_verdict(macro_f1: float, chance: dict) -> str:
    """"at chance" / "near chance" / "above chance" from a macro-F1 and its :func:`ferwild.metrics.chance_level`."""
    if chance.get("p_value") is None or chance["p_value"] >= CHANCE_ALPHA:
        return "at chance"
    if macro_f1 < NEAR_CHANCE_FACTOR * float(chance["macro_f1"]):
        return "near chance"
    return "above chance"


def _isnan(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _seeds(n: int) -> str:
    """``1 seed`` / ``3 seeds``."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _pm(mean: Any, std: Any, decimals: int = 2) -> str:
    """``"93.45 ± 0.52"`` (percent); the mean alone when there is no spread (one seed)."""
    if _isnan(mean):
        return DASH
    if _isnan(std):
        return pct(mean, decimals)
    return f"{pct(mean, decimals)} ± {pct(std, decimals)}"


def _sci(value: float) -> str:
    mantissa, exponent = f"{value:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _fmt_value(key: str, value: Any) -> str:
    """A parameter value as people write it: ``1e-3`` for learning rates, ``3`` for epochs."""
    if _isnan(value):
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        lr_like = str(key).split(".")[-1] in {"lr", "weight_decay"} or str(key).endswith("lr")
        if v != 0 and (abs(v) < 1e-2 or (lr_like and abs(v) < 1)):
            return _sci(v)
        if v.is_integer():
            return str(int(v))
        return f"{v:g}"
    return str(value)


def _duration(seconds: float) -> str:
    if _isnan(seconds):
        return DASH
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    hours = int(s // 3600)
    return f"{hours} h {int(round((s - 3600 * hours) / 60)):02d} min"


def _same(a: Any, b: Any) -> bool:
    """Parameter equality across CSV/JSON round trips (1e-3 == 0.001, 3 == 3.0, "3" == 3)."""
    if _isnan(a) and _isnan(b):
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)


# --------------------------------------------------------------------------------------------
# aggregation


def aggregate_cells(results: pd.DataFrame, keys: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Mean and spread over seeds of each grid cell.

    Args:
        results: rows of ``results.csv`` (one per trial).
        keys: the columns that define a cell (the varied parameters); empty: one cell.

    Returns:
        One row per cell, in order of first appearance: the ``keys``, ``n_seeds``, ``trials``
        (list of trial names), ``seconds`` (summed, when present) and, for each of val_acc,
        val_macro_f1, test_acc, test_macro_f1 present, ``<metric>_mean`` and ``<metric>_std``
        (sample std, ``ddof=1``; NaN for a single seed).
    """
    keys = list(keys)
    frame = results.copy()
    group_keys = keys or ["__cell__"]
    if not keys:
        frame["__cell__"] = 0
    rows = []
    for cell, group in frame.groupby(group_keys, sort=False, dropna=False):
        values = cell if isinstance(cell, tuple) else (cell,)
        row: dict[str, Any] = dict(zip(keys, values)) if keys else {}
        row["n_seeds"] = int(len(group))
        row["trials"] = [str(t) for t in group["trial"]] if "trial" in group else []
        for metric in METRICS:
            if metric in group:
                col = pd.to_numeric(group[metric], errors="coerce")
                row[f"{metric}_mean"] = float(col.mean())
                row[f"{metric}_std"] = float(col.std()) if len(col) > 1 else float("nan")
        if "seconds" in group:
            row["seconds"] = float(pd.to_numeric(group["seconds"], errors="coerce").sum())
        rows.append(row)
    columns = keys + ["n_seeds", "trials"]
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=columns)
    return out


# --------------------------------------------------------------------------------------------
# Figure 8


def heatmap_figsize(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Figure size in inches of :func:`optimizer_lr_heatmap` for ``n_rows`` optimizers x ``n_cols`` lrs.

    The PNG is ``round(width * HEATMAP_DPI) x round(height * HEATMAP_DPI)`` pixels.
    """
    panel = 1.25 * max(n_cols, 1) + 1.9
    return (round(2 * panel + 0.4, 2), round(0.75 * max(n_rows, 1) + 2.3, 2))


def _find_column(frame: pd.DataFrame, *names: str) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise ValueError(f"cells need one of the columns {list(names)}; got {list(frame.columns)}")


def optimizer_lr_heatmap(cells: pd.DataFrame, path, *, metric: str = "test_macro_f1") -> None:
    """Figure 8: accuracy and macro-F1 per optimizer (rows) x learning rate (columns).

    Args:
        cells: per-cell aggregates as from :func:`aggregate_cells` (columns
            ``optim.optimizer``, ``optim.lr``, ``<metric>_mean``/``_std``), or raw
            ``results.csv`` rows (one per trial), which are aggregated here. Plain
            ``optimizer`` / ``lr`` column names work too.
        path: the PNG to write (parent folders are created).
        metric: the macro-F1 panel's metric; its prefix (``test_`` or ``val_``) names the split
            whose accuracy the other panel shows.

    Each cell is annotated with its mean and ± std over seeds (in %); a missing combination is
    grey. The cell with the best *validation* macro-F1 (the selection rule), when known, is
    outlined (black and white) and its numbers are bold. The size is :func:`heatmap_figsize` at :data:`HEATMAP_DPI`.
    """
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter

    from ferwild.plotting import new_figure, save_figure

    opt_col = _find_column(cells, "optim.optimizer", "optimizer")
    lr_col = _find_column(cells, "optim.lr", "lr")
    split = metric.split("_", 1)[0] if "_" in metric else "test"
    panels = [(f"{split}_acc", "accuracy"), (metric, "macro-F1" if "f1" in metric else metric)]
    frame = cells
    if f"{metric}_mean" not in frame.columns:
        if metric not in frame.columns:
            raise ValueError(f"cells have neither {metric}_mean nor {metric}")
        frame = aggregate_cells(frame, [opt_col, lr_col])
    optimizers = list(dict.fromkeys(frame[opt_col].tolist()))
    lrs = sorted(dict.fromkeys(frame[lr_col].tolist()), key=lambda v: (_isnan(v), float(v)))
    n_rows, n_cols = len(optimizers), len(lrs)
    if n_rows == 0:
        raise ValueError("no cells to draw")

    def grid(column: str) -> np.ndarray:
        out = np.full((n_rows, n_cols), np.nan)
        if column not in frame.columns:
            return out
        for _, row in frame.iterrows():
            i = optimizers.index(row[opt_col])
            j = next(k for k, v in enumerate(lrs) if _same(v, row[lr_col]))
            out[i, j] = row[column]
        return out

    best = None
    if "val_macro_f1_mean" in frame.columns:
        val = grid("val_macro_f1_mean")
        if np.isfinite(val).any():
            best = np.unravel_index(int(np.nanargmax(val)), val.shape)
    n_seeds = frame["n_seeds"].max() if "n_seeds" in frame.columns else None

    fig = new_figure(heatmap_figsize(n_rows, n_cols), dpi=HEATMAP_DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = _cmap()
    for k, (ax, (name, label)) in enumerate(zip(axes, panels)):
        mean, std = grid(f"{name}_mean"), grid(f"{name}_std")
        finite = mean[np.isfinite(mean)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.01, hi + 0.01
        shown = np.ma.masked_invalid(mean)
        image = ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, aspect="auto",
                          interpolation="nearest")
        for i in range(n_rows):
            for j in range(n_cols):
                if not np.isfinite(mean[i, j]):
                    ax.text(j, i, "n/a", ha="center", va="center", color="0.35", fontsize=9)
                    continue
                level = (mean[i, j] - lo) / (hi - lo)
                colour = "white" if level < 0.45 else "black"
                text = f"{100 * mean[i, j]:.1f}"
                if np.isfinite(std[i, j]):
                    text += f"\n±{100 * std[i, j]:.1f}"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=10,
                        fontweight="bold" if best == (i, j) else "normal")
        if best is not None:  # black + white double outline: visible on any colour
            for colour, width, inset in (("black", 5.0, 0.04), ("white", 2.0, 0.04)):
                ax.add_patch(Rectangle((best[1] - 0.5 + inset, best[0] - 0.5 + inset), 1 - 2 * inset,
                                       1 - 2 * inset, fill=False, edgecolor=colour, linewidth=width))
        ax.set_xticks(range(n_cols))
        ax.set_xticklabels([_fmt_value("optim.lr", v) for v in lrs])
        ax.set_yticks(range(n_rows))
        ax.set_yticklabels([str(o) for o in optimizers])
        ax.set_xlabel("learning rate")
        if k == 0:
            ax.set_ylabel("optimizer")
        ax.set_title(f"{split} {label} (%)", fontsize=11)
        style_cell_grid(ax, n_rows, n_cols, linewidth=1.5)
        cbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}"))
    seeds = f", mean ± std over {int(n_seeds)} seeds" if n_seeds and n_seeds > 1 else ""
    outline = "; outlined: best validation macro-F1" if best is not None else ""
    fig.suptitle(f"Optimizer x learning rate ({split}{seeds}){outline}", fontsize=11.5)
    save_figure(fig, path)


def _cmap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#e4e7eb")


# --------------------------------------------------------------------------------------------
# reading the study folder


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"`{path.name}` could not be read ({exc})")
        return None


def _read_yaml(path: Path, problems: list[str]) -> Any:
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"`{path.name}` could not be read ({exc})")
        return None


@dataclass
class _Study:
    root: Path
    spec: dict
    results: pd.DataFrame
    selection: dict | None
    best_run: str | None
    prepared: Path | None
    data_summary: dict | None
    problems: list[str] = field(default_factory=list)
    _json: dict = field(default_factory=dict)
    _chance: dict = field(default_factory=dict)  # trial -> verdict: cells() is asked for more than once

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.results.columns if c not in _RESULT_COLUMNS]

    @property
    def seeds(self) -> list:
        seeds = self.spec.get("seeds")
        if isinstance(seeds, list) and seeds:
            return seeds
        return sorted(self.results["seed"].dropna().unique().tolist()) if "seed" in self.results else []

    @property
    def experiment_names(self) -> list[str]:
        names = [str(e.get("name")) for e in self.spec.get("experiments") or [] if isinstance(e, dict)]
        if "experiment" in self.results:
            names += [str(n) for n in self.results["experiment"].dropna().unique()]
        return list(dict.fromkeys(names))

    def experiment(self, name: str) -> dict:
        for e in self.spec.get("experiments") or []:
            if isinstance(e, dict) and str(e.get("name")) == name:
                return e
        return {}

    def rows(self, name: str) -> pd.DataFrame:
        if "experiment" not in self.results:
            return self.results.iloc[:0]
        return self.results[self.results["experiment"].astype(str) == name]

    def varied_keys(self, name: str) -> list[str]:
        """The grid keys of an experiment, plus any parameter that varies within its trials."""
        rows = self.rows(name)
        keys = [k for k in (self.experiment(name).get("grid") or {}) if k in rows.columns]
        for col in self.param_columns:
            if col not in keys and rows[col].nunique(dropna=False) > 1:
                keys.append(col)
        return keys

    def cells(self, name: str) -> pd.DataFrame:
        cells = aggregate_cells(self.rows(name), self.varied_keys(name))
        cells.insert(0, "experiment", name)
        cells["vs_chance"] = [self.cell_chance(trials) for trials in cells["trials"]] if len(cells) else []
        return cells

    def trial_chance(self, trial: str) -> str | None:
        """"above chance" | "near chance" | "at chance" for one trial's validation predictions."""
        if trial not in self._chance:
            self._chance[trial] = self._trial_chance(trial)
        return self._chance[trial]

    def _trial_chance(self, trial: str) -> str | None:
        run = self.run_dir(trial)
        summary = self.eval_summary(run, "val")
        if not summary or summary.get("macro_f1") is None:
            return None
        chance = summary.get("chance")
        predictions = run / "eval-val" / "predictions.parquet" if run is not None else None
        if chance is None and predictions is not None and predictions.is_file():
            # evaluated before summaries carried a chance level: compute it from the predictions
            from ferwild.metrics import chance_level

            frame = pd.read_parquet(predictions, columns=["y_true", "y_pred"])
            chance = chance_level(frame["y_true"].to_numpy(), frame["y_pred"].to_numpy(),
                                  len(summary.get("label_names") or []) or int(frame.max().max()) + 1)
        if chance is None:
            return None
        return chance_verdict(float(summary["macro_f1"]), chance)

    def cell_chance(self, trials: list[str]) -> str:
        """The cell's verdict over its seeds; the worst one, with a count when the seeds disagree."""
        verdicts = [v for v in (self.trial_chance(t) for t in trials) if v]
        if not verdicts:
            return ""
        worst = min(verdicts, key=["at chance", "near chance", "above chance"].index)
        hits = verdicts.count(worst)
        return worst if hits == len(verdicts) else f"{worst} ({hits} of {len(verdicts)} seeds)"

    def run_dir(self, trial: str | None, run_dir: Any = None) -> Path | None:
        candidates = []
        if isinstance(run_dir, str) and run_dir:
            candidates.append(self.root / run_dir)
        if trial:
            row = self.results[self.results["trial"].astype(str) == str(trial)] \
                if "trial" in self.results else self.results.iloc[:0]
            if len(row) and isinstance(row.iloc[0].get("run_dir"), str):
                candidates.append(self.root / row.iloc[0]["run_dir"])
            candidates.append(self.root / "trials" / str(trial))
        for c in candidates:
            if c.is_dir():
                return c
        return candidates[0] if candidates else None

    def eval_summary(self, run: Path | None, split: str = "test") -> dict | None:
        if run is None:
            return None
        path = run / f"eval-{split}" / "summary.json"
        if path not in self._json:
            self._json[path] = _read_json(path, self.problems)
        return self._json[path]


def _resolve_data(root: Path, data: Any) -> Path | None:
    if not data:
        return None
    path = Path(str(data)).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, root / path, root.parent / path]
    for c in candidates:
        if (c / "summary.json").is_file():
            return c
    return None


def _load(study_dir: Path) -> _Study:
    problems: list[str] = []
    spec = _read_yaml(study_dir / "study.yaml", problems)
    if not isinstance(spec, dict):
        if spec is not None:
            problems.append("`study.yaml` is not a mapping")
        spec = {}
    results_path = study_dir / "results.csv"
    if not results_path.is_file():
        raise FileNotFoundError(f"{study_dir} has no results.csv (run `ferwild study` first)")
    results = pd.read_csv(results_path)
    for col in ("trial", "experiment"):
        if col in results:
            results[col] = results[col].astype(str)
    selection = _read_json(study_dir / "selection.json", problems)
    best_run = None
    if (study_dir / "best_run").is_file():
        best_run = (study_dir / "best_run").read_text(encoding="utf-8").strip() or None
    prepared = _resolve_data(study_dir, spec.get("data"))
    data_summary = _read_json(prepared / "summary.json", problems) if prepared else None
    return _Study(study_dir, spec, results, selection if isinstance(selection, dict) else None,
                  best_run, prepared, data_summary, problems)


# --------------------------------------------------------------------------------------------
# pieces shared by the sections


def _params_text(params: dict) -> str:
    if not params:
        return "(the experiment's fixed settings)"
    return ", ".join(f"`{k}={_fmt_value(k, v)}`" for k, v in params.items())


def _cell_params(cell: pd.Series, keys: list[str]) -> dict:
    return {k: cell[k] for k in keys}


def _best_index(cells: pd.DataFrame, metric: str = "val_macro_f1") -> int | None:
    """Position of the cell with the highest mean ``metric`` (None when there is none)."""
    column = f"{metric}_mean"
    if column not in cells or not pd.to_numeric(cells[column], errors="coerce").notna().any():
        return None
    return int(np.nanargmax(pd.to_numeric(cells[column], errors="coerce").to_numpy(dtype=float)))


def _cell_table(cells: pd.DataFrame, keys: list[str], *, winner: dict | None = None) -> pd.DataFrame:
    """Mean ± std of val / test accuracy and macro-F1 per cell; best val macro-F1 in bold."""
    best = _best_index(cells)
    rows = []
    for pos, (_, cell) in enumerate(cells.iterrows()):
        row = {k: _fmt_value(k, cell[k]) for k in keys}
        row["seeds"] = str(int(cell["n_seeds"]))
        for metric in METRICS:
            text = _pm(cell.get(f"{metric}_mean"), cell.get(f"{metric}_std"))
            if metric == "val_macro_f1" and pos == best and len(cells) > 1:
                text = f"**{text}**"
            row[f"{_METRIC_LABEL[metric]} (%)"] = text
        if cell.get("vs_chance"):
            row["vs chance"] = _chance_text(cell["vs_chance"])
        if winner is not None:
            row["selected"] = "★ winner" if _is_winner(cell, keys, winner) else ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    if winner is not None and "selected" in frame and not frame["selected"].astype(bool).any():
        frame = frame.drop(columns="selected")
    return frame


def _chance_text(verdict: str) -> str:
    """A chance verdict for a table cell: the ones that matter stand out."""
    return verdict if verdict.startswith("above") else f"⚠ **{verdict}**"


def _is_winner(cell: pd.Series, keys: list[str], winner: dict) -> bool:
    if str(cell.get("experiment")) != str(winner.get("experiment")):
        return False
    params = winner.get("params") or {}
    return all(_same(cell[k], params[k]) for k in keys if k in params)


def _per_class_table(summary: dict, seed_summaries: list[dict] | None = None) -> pd.DataFrame:
    names = list(summary.get("label_names") or summary.get("per_class", {}))
    per_class = summary.get("per_class") or {}
    rows = []
    for name in names:
        m = per_class.get(name, {})
        row = {"class": name, "precision (%)": pct(m.get("precision")),
               "recall = accuracy (%)": pct(m.get("recall")), "F1 (%)": pct(m.get("f1")),
               "support": f"{int(m.get('support', 0)):,}"}
        if seed_summaries and len(seed_summaries) > 1:
            f1s = [s.get("per_class", {}).get(name, {}).get("f1") for s in seed_summaries]
            f1s = pd.Series([f for f in f1s if f is not None], dtype=float)
            row[f"F1 over {_seeds(len(f1s))} (%)"] = _pm(f1s.mean(), f1s.std() if len(f1s) > 1 else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _config_rows(run: Path | None, study: _Study) -> pd.DataFrame | None:
    if run is None:
        return None
    config = _read_yaml(run / "config.yaml", study.problems)
    if not isinstance(config, dict):
        return None
    keys = ["model.name", "model.pretrained", "model.image_size", "optim.optimizer", "optim.lr",
            "optim.scheduler", "optim.class_weights", "train.epochs", "train.batch_size"]
    rows = []
    for key in keys:
        section, name = key.split(".")
        value = (config.get(section) or {}).get(name) if isinstance(config.get(section), dict) else None
        if value is not None:
            rows.append({"setting": key, "value": _fmt_value(key, value)})
    return pd.DataFrame(rows) if rows else None


def _selection_metric(study: _Study) -> str:
    return str((study.selection or {}).get("metric")
               or (study.spec.get("selection") or {}).get("metric") or "val_macro_f1")


def _metric_words(metric: str) -> str:
    words = {"val_macro_f1": "validation macro-F1", "val_acc": "validation accuracy"}
    return words.get(metric, f"`{metric}`")


def _winner(study: _Study, all_cells: pd.DataFrame) -> dict | None:
    """The selected cell and trial: selection.json's, else the best val macro-F1 cell here."""
    sel = study.selection or {}
    w = sel.get("winner") if isinstance(sel.get("winner"), dict) else None
    if w:
        out = dict(w)
        out["source"] = "selection.json"
        if not out.get("run_dir") and study.best_run:
            out["run_dir"] = study.best_run
        return out
    if all_cells.empty or "val_macro_f1_mean" not in all_cells or \
            all_cells["val_macro_f1_mean"].isna().all():
        return None
    cell = all_cells.loc[all_cells["val_macro_f1_mean"].astype(float).idxmax()]
    name = str(cell["experiment"])
    keys = study.varied_keys(name)
    rows = study.rows(name)
    rows = rows[rows["trial"].isin(cell["trials"])]
    trial = rows.loc[pd.to_numeric(rows["val_macro_f1"], errors="coerce").idxmax()]
    run_dir = study.best_run or trial.get("run_dir")
    return {"experiment": name, "params": _cell_params(cell, keys), "trial": str(trial["trial"]),
            "run_dir": run_dir, "val_macro_f1_mean": cell["val_macro_f1_mean"],
            "val_macro_f1_std": cell.get("val_macro_f1_std"), "source": "computed from results.csv"}


# --------------------------------------------------------------------------------------------
# sections


def _section_summary(doc: _Doc, study: _Study, winner: dict | None, all_cells: pd.DataFrame) -> None:
    doc.heading(2, "At a glance")
    rows = []
    for name, label in (("main", "Main model"), ("baseline", "Baseline")):
        cells = all_cells[all_cells["experiment"] == name] if not all_cells.empty else all_cells
        if len(cells) == 1:
            c = cells.iloc[0]
            rows.append(_glance_row(f"{label} (`{name}`)", c))
    if winner is not None:
        cell = _winner_cell(winner, all_cells)
        if cell is not None:
            rows.append(_glance_row(f"Selected (`{winner.get('experiment')}`)", cell))
    if rows:
        frame = pd.DataFrame(rows)
        if not frame["vs chance"].astype(bool).any():
            frame = frame.drop(columns="vs chance")
        one_seed = pd.to_numeric(all_cells["n_seeds"], errors="coerce").max() == 1
        doc.table(frame, note=("In %, one seed per cell." if one_seed else "Mean ± standard deviation over seeds, in %.") +
                  (" " + CHANCE_NOTE if "vs chance" in frame else ""))
    else:
        doc.para("No trial results to summarise.")
    flagged = cells_not_learning(all_cells)
    if len(flagged):
        keys_of = {name: study.varied_keys(name) for name in flagged["experiment"].unique()}
        doc.box("warn", f"{len(flagged)} of {len(all_cells)} cells did not learn the task (at or near chance)", [
            f"`{c['experiment']}`"
            + (f" {_params_text(_cell_params(c, keys_of[c['experiment']]))}" if keys_of[c['experiment']] else "")
            + f": val macro-F1 {pct(c.get('val_macro_f1_mean'))}%, {c['vs_chance']}"
            for _, c in flagged.iterrows()])
    items = []
    if winner is not None:
        items.append(f"Selected on **{_metric_words(_selection_metric(study))}**: "
                     f"`{winner.get('experiment')}` with "
                     f"{_params_text(winner.get('params') or {})} (trial `{winner.get('trial')}`).")
    items.append(f"{len(study.results)} trials, {len(study.experiment_names)} experiments, "
                 f"seeds {', '.join(str(s) for s in study.seeds) or DASH}.")
    items.append("Table and figure numbers are those of the original study this report reproduces "
                 "(see ferwild's `docs/study.md`), so each can be read beside it.")
    doc.bullets(items)
    warnings = _data_warnings(study.data_summary) if study.data_summary else []
    if warnings:
        doc.box("warn", "Data warnings (details in section 1)", warnings)
    if study.problems:
        doc.box("warn", "Files that could not be read", study.problems)


def _glance_row(label: str, cell: pd.Series) -> dict:
    return {"": label, "seeds": str(int(cell["n_seeds"])),
            "val macro-F1 (%)": _pm(cell.get("val_macro_f1_mean"), cell.get("val_macro_f1_std")),
            "test accuracy (%)": _pm(cell.get("test_acc_mean"), cell.get("test_acc_std")),
            "test macro-F1 (%)": _pm(cell.get("test_macro_f1_mean"), cell.get("test_macro_f1_std")),
            "vs chance": _chance_text(cell["vs_chance"]) if cell.get("vs_chance") else ""}


def _winner_cell(winner: dict, all_cells: pd.DataFrame) -> pd.Series | None:
    if all_cells.empty:
        return None
    cells = all_cells[all_cells["experiment"] == str(winner.get("experiment"))]
    params = winner.get("params") or {}
    for _, cell in cells.iterrows():
        if all(_same(cell[k], v) for k, v in params.items() if k in cell.index):
            return cell
    return cells.iloc[0] if len(cells) == 1 else None


def _data_warnings(summary: dict) -> list[str]:
    out = [str(w) for w in summary.get("quality_warnings") or []]
    dups = summary.get("duplicates") or {}
    cross = int(dups.get("cross_split_exact", 0) or 0) + int(dups.get("cross_split_near", 0) or 0)
    if cross:
        out.append(f"{cross:,} duplicate pairs cross splits ({int(dups.get('cross_split_exact', 0) or 0):,} "
                   f"exact, {int(dups.get('cross_split_near', 0) or 0):,} near): the same face in "
                   "train and val/test inflates held-out scores (see `duplicates.csv`).")
    fail = (summary.get("alignment_failure") or {}).get("overall")
    if fail is not None and float(fail) > 0.05:
        out.append(f"{pct(fail, 1)}% of the images could not be aligned (centre-cropped or dropped).")
    return out


def _section_data(doc: _Doc, study: _Study, figures: Path, number: int) -> None:
    doc.heading(2, f"{number}. Data")
    s = study.data_summary
    if not s:
        where = study.spec.get("data")
        doc.box("warn", "Prepared dataset not found",
                [f"`{where}` (study.yaml's `data`) has no readable `summary.json` from here; "
                 "the data section is left out." if where else "study.yaml names no `data` folder."])
        return
    doc.para(f"Prepared dataset: `{study.prepared}`; split mode `{s.get('split_mode', '?')}`"
             + (f", label set `{s['label_set']}`" if s.get("label_set") else "") + ".")
    warnings = _data_warnings(s)
    if warnings:
        doc.box("warn", "Warnings", warnings)

    names = list(s.get("label_names") or [])
    counts = s.get("counts") or {}
    after = (s.get("counts_after_balance") or {}).get("train") or {}
    for split_counts in counts.values():
        names += [c for c in split_counts if c not in names]
    splits = [sp for sp in ("train", "val", "test") if sp in counts] + \
        [sp for sp in counts if sp not in ("train", "val", "test")]
    rows = []
    for name in names:
        row = {"class": name}
        for sp in splits:
            row[sp] = int((counts.get(sp) or {}).get(name, 0))
            if sp == "train":
                row["train after balancing"] = int(after.get(name, row["train"]))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["total (original)"] = table[splits].sum(axis=1)
        total = {"class": "**total**", **{c: int(table[c].sum()) for c in table.columns if c != "class"}}
        grand = total["total (original)"]
        share = {"class": "share of images (%)",
                 **{sp: f"{100 * total[sp] / grand:.1f}" if grand else DASH for sp in splits}}
        table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
        for col in table.columns[1:]:
            table[col] = [f"{int(v):,}" for v in table[col]]
        table = pd.concat([table, pd.DataFrame([share])], ignore_index=True).fillna("")
        doc.table(table, "Table 1 · Images per class and split",
                  note="Original images per split; \"train after balancing\" adds the augmented "
                       "copies `prepare` wrote (validation and test are never augmented).")

    fig1 = _copy_or_draw_class_counts(study, figures, counts, after)
    doc.figure(fig1, "Figure 1 · Training images per class before and after balancing")

    doc.heading(3, "Data audit")
    doc.grid(True)
    dups = s.get("duplicates") or {}
    if dups:
        dup_rows = [("exact pairs", dups.get("exact_pairs")), ("near pairs", dups.get("near_pairs")),
                    ("cross-split exact", dups.get("cross_split_exact")),
                    ("cross-split near", dups.get("cross_split_near")),
                    ("dropped from val/test", dups.get("dropped_from_val_test"))]
        frame = pd.DataFrame([{"duplicates": k, "pairs": f"{int(v):,}"} for k, v in dup_rows
                              if v is not None])
        doc.table(frame, "Duplicates", small=True)
    statuses = s.get("status_counts") or {}
    if statuses:
        total = sum(int(v) for v in statuses.values()) or 1
        frame = pd.DataFrame([{"status": k, "images": f"{int(v):,}", "share (%)": f"{100 * int(v) / total:.1f}"}
                              for k, v in statuses.items()])
        doc.table(frame, "Image statuses", small=True)
    align = s.get("alignment_failure") or {}
    if align:
        rows = [{"class": "**overall**", "failure rate (%)": pct(align.get("overall"))}]
        rows += [{"class": k, "failure rate (%)": pct(v)} for k, v in (align.get("per_class") or {}).items()]
        note = None
        if align.get("attempted") is not None:
            note = (f"{int(align.get('failed', 0)):,} of {int(align['attempted']):,} images that needed "
                    "alignment could not be aligned.")
        doc.table(pd.DataFrame(rows), "Alignment failure", note=note, small=True)
    doc.grid(False)
    quality = s.get("image_quality") or {}
    if quality:
        rows = [{"split": sp, **{k: (f"{v:,}" if k == "n" else f"{float(v):.1f}") for k, v in q.items()}}
                for sp, q in quality.items() if isinstance(q, dict)]
        if rows:
            doc.table(pd.DataFrame(rows), "Image quality per split (medians)",
                      note="Sharpness is the variance-of-Laplacian style blur measure of `prepare`; "
                           "splits that differ by more than 2x are flagged above.")
    sheet = study.prepared / "contact_sheet.png" if study.prepared else None
    if sheet is not None and sheet.is_file():
        target = figures / "contact_sheet.png"
        shutil.copyfile(sheet, target)
        doc.figure(target, "Cached, aligned crops (a sample; fallback crops last)", max_width=900)


def _copy_or_draw_class_counts(study: _Study, figures: Path, counts: dict, after: dict) -> Path | None:
    target = figures / "figure1_class_counts.png"
    source = study.prepared / "class_counts.png" if study.prepared else None
    if source is not None and source.is_file():
        shutil.copyfile(source, target)
        return target
    if counts.get("train"):
        from ferwild.data.balance import class_count_figure

        class_count_figure(counts["train"], after or counts["train"], target)
        return target
    return None


def _pick_trial(study: _Study, name: str, cell: pd.Series, winner: dict | None) -> tuple[str, str]:
    """The trial to show for a cell: the selected one if it is there, else the first seed."""
    trials = list(cell["trials"])
    if winner and str(winner.get("trial")) in trials:
        return str(winner["trial"]), "the selected trial"
    rows = study.rows(name)
    rows = rows[rows["trial"].isin(trials)]
    order = {s: i for i, s in enumerate(study.seeds)}
    if "seed" in rows:
        rows = rows.assign(_o=[order.get(s, len(order) + i) for i, s in enumerate(rows["seed"])])
        rows = rows.sort_values("_o")
    first = rows.iloc[0]
    seed = first.get("seed")
    return str(first["trial"]), f"the first seed ({seed})" if not _isnan(seed) else "the first trial"


def _section_model(doc: _Doc, study: _Study, name: str, number: int, title: str,
                   tables: tuple[int, int, int], figs: tuple[int, int], winner: dict | None) -> None:
    doc.heading(2, f"{number}. {title} (`{name}`)")
    rows = study.rows(name)
    if rows.empty:
        doc.para(f"No trials of experiment `{name}` in results.csv.")
        return
    keys = study.varied_keys(name)
    cells = study.cells(name)
    exp = study.experiment(name)
    if exp.get("set"):
        doc.para(f"Settings: {_params_text(exp['set'])}.")
    best = _best_index(cells)
    if len(cells) > 1 and best is not None:
        doc.table(_cell_table(cells, keys), f"{title}: all cells",
                  note="The experiment has a grid; the cell with the best validation macro-F1 "
                       "(bold) is shown below.")
        cell = cells.iloc[best]
    else:
        cell = cells.iloc[0]
    trial, why = _pick_trial(study, name, cell, winner)
    run = study.run_dir(trial)
    t_epochs, t_test, t_class = tables
    f_curves, f_confusion = figs
    n = int(cell["n_seeds"])
    doc.para(f"Shown: trial `{trial}`, {why}; {n} seed{'s' if n != 1 else ''} in all.")
    config = _config_rows(run, study)
    if config is not None:
        doc.table(config, f"{title}: configuration", small=True)

    history = None
    if run is not None and (run / "metrics.csv").is_file():
        history = pd.read_csv(run / "metrics.csv")
    if history is not None and len(history):
        doc.heading(3, f"Table {t_epochs} · {title}: training per epoch (trial `{trial}`)")
        md = history_markdown(history)
        doc.md += [md.rstrip("\n"), ""]
        # small: ten columns must fit the page's column without a scroll bar
        doc.html.append(md_table_html(md).replace('<div class="table-wrap">', '<div class="table-wrap small">', 1))
    else:
        doc.para(f"Table {t_epochs}: no metrics.csv in `{run}`.")
    doc.figure(run / "curves.png" if run else None,
               f"Figure {f_curves} · {title}: training curves (trial `{trial}`)", max_width=980)

    cell_rows = rows[rows["trial"].isin(cell["trials"])]
    per_seed, seed_summaries = [], []
    for _, r in cell_rows.iterrows():
        summary = study.eval_summary(study.run_dir(r["trial"], r.get("run_dir")))
        if summary:
            seed_summaries.append(summary)
        per_seed.append({"seed": _fmt_value("seed", r.get("seed")), "trial": f"`{r['trial']}`",
                         "val accuracy (%)": pct(r.get("val_acc")),
                         "val macro-F1 (%)": pct(r.get("val_macro_f1")),
                         "test accuracy (%)": pct(r.get("test_acc")),
                         "test macro-F1 (%)": pct(r.get("test_macro_f1")),
                         "test ECE (%)": pct(summary.get("ece")) if summary else DASH})
    if len(per_seed) > 1:
        eces = pd.Series([s.get("ece") for s in seed_summaries], dtype=float)
        per_seed.append({"seed": "**mean ± std**", "trial": f"n={len(per_seed)}",
                         "val accuracy (%)": _pm(cell.get("val_acc_mean"), cell.get("val_acc_std")),
                         "val macro-F1 (%)": _pm(cell.get("val_macro_f1_mean"), cell.get("val_macro_f1_std")),
                         "test accuracy (%)": _pm(cell.get("test_acc_mean"), cell.get("test_acc_std")),
                         "test macro-F1 (%)": _pm(cell.get("test_macro_f1_mean"), cell.get("test_macro_f1_std")),
                         "test ECE (%)": _pm(eces.mean(), eces.std() if len(eces) > 1 else None)
                         if len(eces) else DASH})
    note = "One row per seed, then mean ± standard deviation over seeds."
    crowd = [(s.get("crowd") or {}).get("crowd_agreement", {}).get("value") for s in seed_summaries]
    if any(c is not None for c in crowd) and len(crowd) == len(cell_rows):
        # crowd labels (FER+): the share of the crowd that agrees with each prediction, too
        values = pd.Series(crowd, dtype=float)
        for row, value in zip(per_seed, crowd):
            row["test crowd agreement (%)"] = pct(value)
        if len(per_seed) > len(crowd):
            per_seed[-1]["test crowd agreement (%)"] = _pm(values.mean(), values.std() if len(values) > 1 else None)
        note += (" Crowd agreement: the share of each face's crowd votes that went to the predicted class "
                 "(accuracy against one labeller drawn at random).")
    doc.table(pd.DataFrame(per_seed), f"Table {t_test} · {title}: test accuracy and macro-F1", note=note)

    summary = study.eval_summary(run)
    if summary:
        doc.table(_per_class_table(summary, seed_summaries),
                  f"Table {t_class} · {title}: per-class test metrics (trial `{trial}`)",
                  note="Per-class \"accuracy\" in the study is the class's recall.")
    else:
        doc.para(f"Table {t_class}: no `eval-test/summary.json` for trial `{trial}`.")
    doc.figure(run / "eval-test" / "confusion_matrix.png" if run else None,
               f"Figure {f_confusion} · {title}: test confusion matrix (trial `{trial}`)")


def _describe_experiment(study: _Study, name: str, keys: list[str]) -> str:
    exp = study.experiment(name)
    grid = exp.get("grid") or {}
    parts = []
    if grid:
        parts.append("grid " + " × ".join(
            f"`{k}` ∈ {{{', '.join(_fmt_value(k, v) for v in (vals if isinstance(vals, list) else [vals]))}}}"
            for k, vals in grid.items()))
    elif keys:
        parts.append("varied " + ", ".join(f"`{k}`" for k in keys))
    if exp.get("set"):
        parts.append("fixed " + _params_text(exp["set"]))
    if exp.get("base"):
        parts.append(f"on top of `{exp['base']}`")
    return "; ".join(parts)


def _section_ablations(doc: _Doc, study: _Study, names: list[str], figures: Path,
                       winner: dict | None, number: int) -> None:
    doc.heading(2, f"{number}. Ablations" if any(n in _ABLATIONS for n in names)
                else f"{number}. Other experiments")
    doc.para("Mean ± standard deviation over seeds of validation and test accuracy and macro-F1 "
             "per grid cell, in %. Bold: the best validation macro-F1 of the table (the selection "
             "rule); test columns are for reading, not choosing.")
    known = [n for n in ("epochs", "optimizer_lr", "fine_lr") if n in names]
    others = [n for n in names if n not in known]
    for name in known + others:
        rows = study.rows(name)
        keys = study.varied_keys(name)
        number, title = _ABLATIONS.get(name, (None, None))
        heading = (f"Table {number} · {title} (`{name}`)" if number
                   else f"Experiment `{name}`: {'mean ± std' if len(study.seeds) > 1 else 'result'} per grid cell")
        if rows.empty:
            doc.heading(3, heading)
            doc.para(f"No trials of `{name}` in results.csv.")
            continue
        cells = study.cells(name)
        description = _describe_experiment(study, name, keys)
        doc.heading(3, heading)
        if description:
            doc.para(description[0].upper() + description[1:] + ".")
        table = _cell_table(cells, keys, winner=winner)
        doc.table(table, note="vs chance: a permutation test of the validation predictions (see "
                              "Method notes)." if "vs chance" in table else None)
        if name == "optimizer_lr":
            opt = "optim.optimizer" if "optim.optimizer" in cells else None
            lr = "optim.lr" if "optim.lr" in cells else None
            if opt and lr:
                path = figures / "figure8_optimizer_lr.png"
                optimizer_lr_heatmap(cells, path, metric="test_macro_f1")
                spread = (f"mean ± std over {_seeds(int(cells['n_seeds'].max()))}"
                          if cells["n_seeds"].max() > 1 else "one seed")
                doc.figure(path, "Figure 8 · Optimizer x learning rate: test accuracy and "
                                 f"macro-F1 per cell ({spread}, %)")


def _winner_metrics(study: _Study, winner: dict, cell: pd.Series | None, summary: dict | None,
                    trial: Any) -> pd.DataFrame:
    """Table 11's numbers: validation and test over seeds, and the shown trial's test metrics."""
    seed_tests = []
    if cell is not None:
        for t in cell["trials"]:
            s = study.eval_summary(study.run_dir(t))
            if s:
                seed_tests.append(s)

    def over_seeds(key: str) -> str:
        values = pd.Series([s.get(key) for s in seed_tests], dtype=float).dropna()
        if values.empty:
            return DASH
        return _pm(values.mean(), values.std() if len(values) > 1 else None)

    n = int(cell["n_seeds"]) if cell is not None else None
    val_col = f"validation, {_seeds(n)}" if n else "validation"
    test_col = f"test, {_seeds(n)}" if n else "test"
    one_col = f"test, trial `{trial}`"
    rows = []
    for label, key, result in (("accuracy", "accuracy", "acc"), ("macro-F1", "macro_f1", "macro_f1"),
                               ("weighted-F1", "weighted_f1", None), ("ECE", "ece", None),
                               ("mean confidence", "mean_confidence", None)):
        row = {"metric (%)": label}
        if result is not None and cell is not None:
            row[val_col] = _pm(cell.get(f"val_{result}_mean"), cell.get(f"val_{result}_std"))
            row[test_col] = _pm(cell.get(f"test_{result}_mean"), cell.get(f"test_{result}_std"))
        elif result == "macro_f1":
            row[val_col] = _pm(winner.get("val_macro_f1_mean"), winner.get("val_macro_f1_std"))
            row[test_col] = DASH
        else:
            row[val_col] = DASH
            row[test_col] = over_seeds(key)
        row[one_col] = pct(summary.get(key)) if summary else DASH
        if label == "macro-F1":
            row = {k: (f"**{v}**" if k in ("metric (%)", val_col) else v) for k, v in row.items()}
        rows.append(row)
    if summary and summary.get("n") is not None:
        rows.append({"metric (%)": "test images (count)", val_col: "", test_col: "", one_col: f"{int(summary['n']):,}"})
    return pd.DataFrame(rows)


def _section_winner(doc: _Doc, study: _Study, winner: dict | None, all_cells: pd.DataFrame,
                    number: int) -> None:
    doc.heading(2, f"{number}. Selected configuration")
    if winner is None:
        doc.para("No configuration could be selected (no validation macro-F1 in results.csv).")
        return
    metric = _selection_metric(study)
    cell = _winner_cell(winner, all_cells)
    n = int(cell["n_seeds"]) if cell is not None else None
    metric_words = _metric_words(metric)
    doc.box("note", f"Selected on {metric_words}", [
        f"The configuration with the highest mean **{metric_words}**"
        + (f" over {n} seed{'s' if n != 1 else ''}" if n else "") + " was selected; test data played no part in the "
        "choice, and its test metrics are reported once, below. The original study picked its best "
        "configuration by **test** F1, which makes its test score an optimistic estimate."])
    run = study.run_dir(winner.get("trial"), winner.get("run_dir"))
    summary = study.eval_summary(run)
    trial = winner.get("trial")

    heading = ("Table 11 · Best configuration (selected on validation macro-F1)"
               if metric == "val_macro_f1" else f"Table 11 · Best configuration (selected on {metric})")
    doc.heading(3, heading)
    why = "the selected trial"
    if cell is not None:
        members = study.rows(str(winner.get("experiment")))
        members = members[members["trial"].isin(cell["trials"])]
        if len(members) > 1 and metric in members and \
                str(members.loc[pd.to_numeric(members[metric], errors="coerce").idxmax(), "trial"]) == str(trial):
            why = f"the cell's seed with the best {metric_words}, named in `best_run`"
    doc.para(f"Experiment `{winner.get('experiment')}` with {_params_text(winner.get('params') or {})}"
             + (f"; {n} seed{'s' if n != 1 else ''}" if n else "")
             + f". Per-trial figures below are of trial `{trial}` ({why}).")
    doc.table(_winner_metrics(study, winner, cell, summary, trial),
              note="Validation decides; test is read once, for the selected cell only. Mean ± "
                   "standard deviation over seeds, in %.")
    if summary:
        doc.table(_per_class_table(summary), f"Table 11 (per class) · test metrics of trial `{trial}`",
                  note="Per-class \"accuracy\" in the study is the class's recall.")
    else:
        doc.para(f"No `eval-test/summary.json` for trial `{trial}` ({run}).")
    doc.figure(run / "eval-test" / "confusion_matrix.png" if run else None,
               f"Selected configuration: test confusion matrix (trial `{trial}`)")
    if summary and summary.get("ece") is not None:
        conf, acc = summary.get("mean_confidence"), summary.get("accuracy")
        doc.para(f"Calibration: expected calibration error (ECE) **{pct(summary['ece'])}%** — mean "
                 f"confidence {pct(conf)}% against accuracy {pct(acc)}%"
                 + ("; the model is over-confident." if conf is not None and acc is not None and conf > acc + 0.02
                    else "; the model is under-confident." if conf is not None and acc is not None and conf < acc - 0.02
                    else "."))
    doc.figure(run / "eval-test" / "reliability.png" if run else None,
               f"Selected configuration: reliability diagram on test (trial `{trial}`)", max_width=560)

    if not all_cells.empty and "val_macro_f1_mean" in all_cells and len(all_cells) > 1:
        ranked = all_cells.sort_values("val_macro_f1_mean", ascending=False).head(8)
        rows = []
        for rank, (_, c) in enumerate(ranked.iterrows(), 1):
            keys = study.varied_keys(str(c["experiment"]))
            rows.append({"rank": str(rank), "experiment": f"`{c['experiment']}`",
                         "cell": ", ".join(f"{k}={_fmt_value(k, c[k])}" for k in keys) or DASH,
                         "seeds": str(int(c["n_seeds"])),
                         "val macro-F1 (%)": _pm(c.get("val_macro_f1_mean"), c.get("val_macro_f1_std")),
                         "test macro-F1 (%)": _pm(c.get("test_macro_f1_mean"), c.get("test_macro_f1_std"))})
        doc.table(pd.DataFrame(rows), "Top cells by validation macro-F1")
        if "test_macro_f1_mean" in all_cells and all_cells["test_macro_f1_mean"].notna().any():
            by_test = all_cells.loc[all_cells["test_macro_f1_mean"].astype(float).idxmax()]
            same = cell is not None and str(by_test["experiment"]) == str(cell["experiment"]) and \
                list(by_test["trials"]) == list(cell["trials"])
            if same:
                doc.para("Picking by test macro-F1 (the original study's rule) would have chosen the "
                         "same cell here.")
            else:
                keys = study.varied_keys(str(by_test["experiment"]))
                doc.para("Picking by test macro-F1 (the original study's rule) would have chosen "
                         f"`{by_test['experiment']}` "
                         f"({', '.join(f'{k}={_fmt_value(k, by_test[k])}' for k in keys) or 'its only cell'}: "
                         f"test macro-F1 {_pm(by_test['test_macro_f1_mean'], by_test.get('test_macro_f1_std'))}%, "
                         f"val {_pm(by_test.get('val_macro_f1_mean'), by_test.get('val_macro_f1_std'))}%) instead; "
                         "its test score is then no longer an unbiased estimate.")


def _section_method(doc: _Doc, study: _Study, winner: dict | None, number: int) -> None:
    doc.heading(2, f"{number}. Method notes")
    results = study.results
    metric = _selection_metric(study)
    seconds = pd.to_numeric(results["seconds"], errors="coerce") if "seconds" in results else None
    total = float(seconds.sum()) if seconds is not None else float("nan")
    items = [
        f"Seeds: {', '.join(str(s) for s in study.seeds) or DASH}; every cell of every experiment "
        "is trained once per seed.",
        f"Selection rule: the cell with the highest mean `{metric}` over seeds; test metrics are "
        "reported for every cell but never used to choose.",
        "Spread: sample standard deviation over seeds (ddof = 1); a cell with one seed shows its "
        "mean only.",
        CHANCE_NOTE,
        f"Trials: {len(results)} in {len(study.experiment_names)} experiments.",
        f"Total compute time: {_duration(total)} (sum of the trials' `seconds`"
        + (f", {total:,.0f} s" if not _isnan(total) else "") + ").",
    ]
    if study.spec.get("base"):
        items.append("Overrides for every trial: " + _params_text(study.spec["base"]) + ".")
    if study.spec.get("data"):
        items.append(f"Data: `{study.spec['data']}`.")
    if winner is not None and winner.get("source") != "selection.json":
        items.append("selection.json was missing: the selected cell was recomputed from results.csv.")
    doc.bullets(items)
    rows = []
    for name in study.experiment_names:
        r = study.rows(name)
        s = pd.to_numeric(r["seconds"], errors="coerce").sum() if "seconds" in r else float("nan")
        rows.append({"experiment": f"`{name}`", "cells": str(len(study.cells(name))) if len(r) else "0",
                     "trials": str(len(r)), "compute": _duration(s),
                     "description": _describe_experiment(study, name, study.varied_keys(name)) or DASH})
    if rows:
        doc.table(pd.DataFrame(rows), "Experiments and compute")


# --------------------------------------------------------------------------------------------
# entry point


def study_cells(study_dir: str | os.PathLike) -> pd.DataFrame:
    """Every cell of a finished study, one row per cell and experiment (a cell shared by two
    experiments appears in each): its parameters, seed means and ``vs_chance`` verdict."""
    study = _load(Path(study_dir))
    names = [n for n in study.experiment_names if len(study.rows(n))]
    return pd.concat([study.cells(n) for n in names], ignore_index=True) if names else pd.DataFrame()


def cells_not_learning(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells whose validation predictions are at or near chance (the report's warning)."""
    if cells.empty or "vs_chance" not in cells:
        return cells.iloc[:0]
    verdict = cells["vs_chance"].astype(str)
    return cells[verdict.str.contains("chance") & ~verdict.str.startswith("above")]


def write_report(study_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``STUDY_DIR/report.html`` (self-contained) and ``STUDY_DIR/report.md``.

    Figures made or copied for the report go to ``STUDY_DIR/figures/``. Missing pieces (no
    prepared dataset, a trial without evaluation, no ``selection.json``) are stated in the
    report instead of failing it; only a missing ``results.csv`` raises ``FileNotFoundError``.

    Returns:
        ``(html_path, md_path)``.
    """
    root = Path(study_dir)
    study = _load(root)
    figures = root / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    names = study.experiment_names
    all_cells = pd.concat([study.cells(n) for n in names if len(study.rows(n))],
                          ignore_index=True) if names else pd.DataFrame()
    winner = _winner(study, all_cells)

    doc = _Doc(root)
    _section_summary(doc, study, winner, all_cells)
    number = 1
    _section_data(doc, study, figures, number)
    if "main" in names:
        number += 1
        _section_model(doc, study, "main", number, "Main model", (2, 3, 4), (3, 4), winner)
    if "baseline" in names:
        number += 1
        _section_model(doc, study, "baseline", number, "Baseline", (5, 6, 7), (6, 7), winner)
    ablations = [n for n in names if n not in ("main", "baseline")]
    if ablations:
        number += 1
        _section_ablations(doc, study, ablations, figures, winner, number)
    _section_winner(doc, study, winner, all_cells, number + 1)
    _section_method(doc, study, winner, number + 2)

    title = f"ferwild study report: {root.resolve().name}"
    subtitle = (f"{len(study.results)} trials · {len(names)} experiments · seeds "
                f"{', '.join(str(s) for s in study.seeds) or DASH} · selection on "
                f"{_metric_words(_selection_metric(study)).replace('`', '')}")
    md = f"# {title}\n\n{subtitle}\n\n" + doc.markdown()
    html_path, md_path = root / "report.html", root / "report.md"
    save_text_atomic(md_path, md)
    # ASCII with character references: the page reads the same whatever the locale's encoding
    page = doc.page(title, subtitle).encode("ascii", "xmlcharrefreplace").decode("ascii")
    save_text_atomic(html_path, page)
    return html_path, md_path
