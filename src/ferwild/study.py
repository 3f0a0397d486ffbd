"""The study as one command: experiments x grid cells x seeds, selection on validation.

A study file names a prepared dataset, settings shared by every trial, seeds, and a list of
experiments. Each experiment sets some keys (``set``), optionally inherits another
experiment's (``base``), and varies others over a grid (``grid``)::

    data: prepared/reference           # relative to this file
    seeds: [0, 1]
    base: {model.pretrained: none, train.batch_size: 64, model.image_size: 32}
    experiments:
      - {name: main, set: {model.name: vit_tiny}}
      - {name: baseline, set: {model.name: cnn_small}}
      - {name: epochs, base: main, grid: {train.epochs: [2, 3, 4, 5]}}
      - {name: optimizer_lr, base: main, grid: {optim.optimizer: [sgd, rmsprop, adam], optim.lr: [1e-2, 1e-3, 1e-5]}}
      - {name: fine_lr, base: main, grid: {optim.lr: [1e-5, 2e-5, 3e-5]}}

Every trial is its own run directory (``STUDY_DIR/trials/<trial>/``) evaluated on val and test;
``results.csv`` has one row per trial. Cells are compared by their mean validation macro-F1
over seeds (the original study picked by test F1; ferwild does not), and the selected trial is
named in ``best_run``. Rerunning the same command skips finished trials and resumes an
interrupted one from its last checkpoint. Trials run in a process pool sized to the machine,
or as Ray tasks on a cluster (``ray_address``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from ferwild.config import RunConfig, apply_override
from ferwild.files import save_json_atomic, save_text_atomic
from ferwild.system import available_cpus

RESULT_METRICS = ["val_acc", "val_macro_f1", "test_acc", "test_macro_f1"]


class StudyError(ValueError):
    """A study file that cannot be run (one clear line)."""


@dataclass
class Experiment:
    """One row of the study: fixed settings, an optional parent, and a grid."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    base: str | None = None


@dataclass
class StudySpec:
    """A parsed study file (paths resolved)."""

    data: str
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, Any] = field(default_factory=dict)
    experiments: list[Experiment] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=lambda: {"metric": "val_macro_f1"})

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "seeds": self.seeds, "base": self.base,
                "experiments": [{"name": e.name, "set": e.set, "grid": e.grid, **({"base": e.base} if e.base else {})}
                                for e in self.experiments],
                "selection": self.selection}

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path | None = None) -> "StudySpec":
        """Validate a study mapping; relative ``data`` paths resolve against ``root``."""
        if not isinstance(data, dict) or "data" not in data:
            raise StudyError("a study needs `data:` (a folder written by `ferwild prepare`)")
        unknown = set(data) - {"data", "seeds", "base", "experiments", "selection"}
        if unknown:
            raise StudyError(f"unknown study key(s) {sorted(unknown)}")
        path = Path(str(data["data"]))
        if root is not None and not path.is_absolute():
            path = root / path
        seeds = data.get("seeds", [0])
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        if not seeds or not all(isinstance(s, int) for s in seeds):
            raise StudyError("seeds must be a list of integers")
        experiments = []
        for item in data.get("experiments") or []:
            if not isinstance(item, dict) or "name" not in item:
                raise StudyError(f"each experiment needs a name: {item!r}")
            bad = set(item) - {"name", "set", "grid", "base"}
            if bad:
                raise StudyError(f"experiment {item['name']!r}: unknown key(s) {sorted(bad)}")
            grid = item.get("grid") or {}
            for key, values in grid.items():
                if not isinstance(values, list) or not values:
                    raise StudyError(f"experiment {item['name']!r}: grid {key} must be a non-empty list")
            experiments.append(Experiment(str(item["name"]), dict(item.get("set") or {}), dict(grid),
                                          item.get("base")))
        if not experiments:
            raise StudyError("a study needs at least one experiment")
        names = [e.name for e in experiments]
        if len(set(names)) != len(names):
            raise StudyError(f"experiment names must be unique: {names}")
        for e in experiments:
            if e.base is not None and e.base not in names:
                raise StudyError(f"experiment {e.name!r}: base {e.base!r} is not an experiment")
        spec = cls(str(path), seeds, dict(data.get("base") or {}), experiments,
                   dict(data.get("selection") or {"metric": "val_macro_f1"}))
        if spec.selection.get("metric", "val_macro_f1") not in ("val_macro_f1", "val_acc"):
            raise StudyError("selection.metric must be a validation metric: val_macro_f1 or val_acc")
        if set(spec.selection) - {"metric", "retrain_on_train_val"}:
            raise StudyError("selection takes `metric` and `retrain_on_train_val` only")
        return spec

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StudySpec":
        """Read a study YAML file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise StudyError(f"study file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise StudyError(f"cannot parse {path}: {exc}") from None
        return cls.from_dict(data, root=path.parent.absolute())


def original_study_design(data: str, *, seeds: list[int] | None = None, main: str = "vit_b16", baseline: str = "resnet50",
               base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The design of the original study (docs/study.md, Tasks 1-3) as a study mapping."""
    return {
        "data": data,
        "seeds": seeds or [0, 1],
        "base": base or {},
        "experiments": [
            {"name": "main", "set": {"model.name": main}},
            {"name": "baseline", "set": {"model.name": baseline}},
            {"name": "epochs", "base": "main", "grid": {"train.epochs": [2, 3, 4, 5]}},
            {"name": "optimizer_lr", "base": "main",
             "grid": {"optim.optimizer": ["sgd", "rmsprop", "adam"], "optim.lr": [1e-2, 1e-3, 1e-5]}},
            {"name": "fine_lr", "base": "main", "grid": {"optim.optimizer": ["adam"], "optim.lr": [1e-5, 2e-5, 3e-5]}},
        ],
        "selection": {"metric": "val_macro_f1"},
    }


# --------------------------------------------------------------------------------------------
# trials


@dataclass
class Trial:
    """One training run of the study."""

    id: str
    experiment: str
    seed: int
    overrides: dict[str, Any]      # dotted key -> value, everything this trial sets
    params: dict[str, Any]         # the keys its experiment fixes or varies
    same_as: str | None = None     # an earlier trial with the identical resolved config: reuse its run


def _experiment_settings(spec: StudySpec, name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """An experiment's fixed settings, its parents' first (a parent's grid is not inherited)."""
    if name in seen:
        raise StudyError(f"experiment bases form a cycle: {' -> '.join(seen + (name,))}")
    exp = next(e for e in spec.experiments if e.name == name)
    settings = _experiment_settings(spec, exp.base, seen + (name,)) if exp.base else {}
    return {**settings, **exp.set}


def _short(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def expand_trials(spec: StudySpec) -> list[Trial]:
    """Every experiment x grid cell x seed, with readable, unique ids."""
    trials = []
    for exp in spec.experiments:
        fixed = _experiment_settings(spec, exp.name)
        keys = list(exp.grid)
        for values in itertools.product(*(exp.grid[k] for k in keys)) if keys else [()]:
            cell = dict(zip(keys, values))
            for seed in spec.seeds:
                overrides = {**spec.base, **fixed, **cell, "data.path": spec.data, "train.seed": seed}
                name = "-".join([exp.name] + [f"{k.split('.')[-1]}{_short(v)}" for k, v in cell.items()] + [f"s{seed}"])
                trials.append(Trial(name, exp.name, seed, overrides, {**fixed, **cell}))
    for t in trials:
        # record parameters as the run will see them (YAML reads 1e-3 as text; configs parse it)
        resolved = trial_config(t).to_dict()
        t.params = {k: resolved[k.split(".")[0]][k.split(".")[1]] for k in t.params}
    ids = [t.id for t in trials]
    if len(set(ids)) != len(ids):  # only when values shorten to the same text
        for t in trials:
            t.id += "-" + hashlib.sha1(json.dumps(t.overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    # The study's design repeats cells (its main model is also the epochs=3 cell and the
    # adam/1e-3 cell): a trial whose resolved config equals an earlier one reuses that run.
    first: dict[str, str] = {}
    for t in trials:
        key = json.dumps(trial_config(t).to_dict(), sort_keys=True, default=str)
        t.same_as = first.get(key)
        first.setdefault(key, t.id)
    return trials


def trial_config(trial: Trial) -> RunConfig:
    """The trial's resolved RunConfig (defaults < study base < experiment < cell < seed)."""
    data = RunConfig().to_dict()
    for key, value in trial.overrides.items():
        apply_override(data, f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return RunConfig.from_dict(data)


def run_trial(trial: Trial, study_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Train (resuming if a checkpoint exists), evaluate on val and test; returns its results row.

    Writes ``trials/<id>/trial.json`` last, atomically: its presence means the trial is done.
    """
    import torch

    from ferwild.evaluate import evaluate_run
    from ferwild.train import fit

    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(study_dir) / "trials" / trial.id
    done = run_dir / "trial.json"
    if done.exists():
        return json.loads(done.read_text())
    if trial.same_as:
        return _reuse_trial(trial, Path(study_dir))
    config = trial_config(trial)
    t0 = time.perf_counter()
    resume = (run_dir / "checkpoints" / "LAST").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log:
        fit(config, run_dir, resume=resume, log=lambda m: (log.write(m + "\n"), log.flush()))
    val = evaluate_run(run_dir, config.data.path, config.data.val_split, run_dir / "eval-val", device=config.train.device)
    test = evaluate_run(run_dir, config.data.path, config.data.test_split, run_dir / "eval-test",
                        device=config.train.device)
    row = {"trial": trial.id, "experiment": trial.experiment, "seed": trial.seed,
           "params": trial.params, "val_acc": val["accuracy"], "val_macro_f1": val["macro_f1"],
           "test_acc": test["accuracy"], "test_macro_f1": test["macro_f1"],
           "run_dir": str(run_dir.relative_to(study_dir)), "seconds": round(time.perf_counter() - t0, 2)}
    save_json_atomic(done, row)
    return row


def _reuse_trial(trial: Trial, study_dir: Path) -> dict[str, Any]:
    """The results row of a trial whose config an earlier trial already ran (its run_dir)."""
    source = json.loads((study_dir / "trials" / trial.same_as / "trial.json").read_text())
    row = {**source, "trial": trial.id, "experiment": trial.experiment, "seed": trial.seed,
           "params": trial.params, "same_as": trial.same_as}
    save_json_atomic(study_dir / "trials" / trial.id / "trial.json", row)
    return row


# --------------------------------------------------------------------------------------------
# running and selecting


def _pool_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_study(spec: StudySpec | str | os.PathLike, out_dir: str | os.PathLike, *, workers: int | None = None,
              ray_address: str | None = None, report: bool = True, mlflow_uri: str | None = None,
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every trial not yet done, then write results.csv, selection.json, best_run, the report.

    Args:
        spec: a StudySpec or a study YAML path.
        out_dir: STUDY_DIR.
        workers: concurrent trials (default: half the available CPUs - affinity and cgroup quota,
            :func:`ferwild.system.available_cpus` - at least 1; small trials on CPU run
            best with two threads each); 1 runs them in this process.
        ray_address: run trials as Ray tasks (``"auto"``, ``"ray://host:10001"``, or
            ``"local"`` to start a local instance).
        report: write report.html / report.md at the end.
        mlflow_uri: also log every trial (params, per-epoch and final metrics, evaluation
            files) to MLflow at this tracking URI (e.g. ``./mlruns`` or ``http://host:5000``).
    """
    spec = StudySpec.load(spec) if not isinstance(spec, StudySpec) else spec
    out = Path(out_dir)
    if not (Path(spec.data) / "manifest.parquet").exists():
        raise StudyError(f"{spec.data} is not a prepared dataset (run `ferwild prepare` first)")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "study.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != spec.to_dict():
        raise StudyError(f"{out} holds a different study ({saved}); choose another --out")
    save_text_atomic(saved, yaml.safe_dump(spec.to_dict(), sort_keys=False))

    trials = expand_trials(spec)  # resolves every trial's config: a bad key fails before training
    done = [t for t in trials if (out / "trials" / t.id / "trial.json").exists()]
    repeats = [t for t in trials if t.same_as and t not in done]
    pending = [t for t in trials if not t.same_as and t not in done]
    cores = available_cpus()
    workers = workers or max(1, cores // 2)
    threads = max(1, cores // workers)
    log(f"study: {len(trials)} trials ({len(done)} already done"
        + (f", {len(repeats)} repeating another experiment's cell, run once" if repeats else "")
        + f"), {workers} at a time x {threads} thread(s)" + (f" on Ray at {ray_address}" if ray_address else ""))

    rows: dict[str, dict[str, Any]] = {}
    for t in done:
        rows[t.id] = json.loads((out / "trials" / t.id / "trial.json").read_text())
    t0 = time.perf_counter()
    if ray_address:
        rows.update(_run_with_ray(pending, out, ray_address, threads, log))
    elif workers == 1 or len(pending) <= 1:
        for i, trial in enumerate(pending, 1):
            rows[trial.id] = run_trial(trial, str(out), threads)
            _log_trial(log, i, len(pending), rows[trial.id])
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_pool_init, initargs=(threads,)) as pool:
            futures = {pool.submit(run_trial, t, str(out), threads): t for t in pending}
            for i, future in enumerate(as_completed(futures), 1):
                row = future.result()
                rows[row["trial"]] = row
                _log_trial(log, i, len(pending), row)
    for t in repeats:
        rows[t.id] = _reuse_trial(t, out)
    log(f"trials finished in {time.perf_counter() - t0:.0f}s")
    if mlflow_uri:
        logged = log_to_mlflow(out, trials, rows, mlflow_uri, experiment=out.absolute().name)
        log(f"MLflow: {logged} trial(s) logged to {mlflow_uri}")

    results = results_table([rows[t.id] for t in trials], trials)
    save_text_atomic(out / "results.csv", results.to_csv(index=False))
    selection = select(results, trials, spec.selection.get("metric", "val_macro_f1"))
    winner = selection["winner"]
    if spec.selection.get("retrain_on_train_val"):
        chosen = next(t for t in trials if t.id == winner["trial"])
        selection["retrained"] = retrain_on_train_val(chosen, out, threads=cores)
        log(f"winner retrained on train+val: test macro-F1 {selection['retrained']['test_macro_f1']:.3f} "
            f"({out / selection['retrained']['run_dir']})")
    save_json_atomic(out / "selection.json", selection)
    save_text_atomic(out / "best_run", selection["winner"]["run_dir"] + "\n")
    log(f"selected on validation: {winner['experiment']} {winner['params']} "
        f"(val macro-F1 {winner['val_macro_f1_mean']:.3f} ± {winner['val_macro_f1_std']:.3f}); "
        f"best run: {out / winner['run_dir']}")
    if report:
        from ferwild.study_report import write_report

        html, md = write_report(out)
        log(f"report: {html} and {md}")
    return results


def retrain_on_train_val(trial: Trial, study_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Train the selected configuration again on train+val (same epochs) and test it once.

    With validation inside training, no checkpoint can be picked on it: the last one is tested.
    Resumable like any run (``STUDY_DIR/winner_train_val``).
    """
    import torch

    from ferwild.evaluate import evaluate_run
    from ferwild.train import fit

    if threads:
        torch.set_num_threads(threads)
    config = trial_config(trial)
    config.data.train_split = f"{config.data.train_split}+{config.data.val_split}"
    run_dir = study_dir / "winner_train_val"
    done = run_dir / "retrained.json"
    if done.exists():
        return json.loads(done.read_text())
    with open(run_dir.parent / "winner_train_val.log", "a") as log:
        fit(config, run_dir, resume=(run_dir / "checkpoints" / "LAST").exists(),
            log=lambda m: (log.write(m + "\n"), log.flush()))
    test = evaluate_run(run_dir, config.data.path, config.data.test_split, run_dir / "eval-test", which="last",
                        device=config.train.device)
    result = {"trial": trial.id, "run_dir": str(run_dir.relative_to(study_dir)), "train_split": config.data.train_split,
              "test_acc": test["accuracy"], "test_macro_f1": test["macro_f1"]}
    save_json_atomic(done, result)
    return result


def _log_trial(log: Callable[[str], None], i: int, n: int, row: dict[str, Any]) -> None:
    log(f"[{i}/{n}] {row['trial']}: val macro-F1 {row['val_macro_f1']:.3f}, test macro-F1 "
        f"{row['test_macro_f1']:.3f} ({row['seconds']:.0f}s)")


def _run_with_ray(trials: list[Trial], out: Path, address: str, threads: int,
                  log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Run trials as Ray tasks; the study folder must be on storage every node sees."""
    from ferwild.parallel import RayUnavailable, ray_session

    rows = {}
    try:
        with ray_session(address) as ray:
            remote = ray.remote(num_cpus=threads)(run_trial)
            pending = [remote.remote(t, str(out.absolute()), threads) for t in trials]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                row = ray.get(ready[0])
                rows[row["trial"]] = row
                _log_trial(log, len(rows), len(trials), row)
    except RayUnavailable as exc:
        raise StudyError(str(exc)) from None
    return rows


def log_to_mlflow(study_dir: Path, trials: list[Trial], rows: dict[str, dict[str, Any]], uri: str,
                  experiment: str) -> int:
    """Log each finished trial once as an MLflow run (params, per-epoch metrics, final val/test
    metrics, the test evaluation files); ``trials/<id>/mlflow_run_id`` marks it logged."""
    try:
        import mlflow
    except ImportError:
        raise StudyError("--mlflow needs MLflow: pip install mlflow-skinny (or mlflow)") from None
    if "://" not in uri:
        # a local folder: MLflow 3 keeps its file store behind an opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = Path(uri).absolute().as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    logged = 0
    for trial in trials:
        run_dir = study_dir / "trials" / trial.id
        marker = run_dir / "mlflow_run_id"
        if marker.exists() or trial.id not in rows:
            continue
        row = rows[trial.id]
        with mlflow.start_run(run_name=trial.id) as run:
            mlflow.set_tags({"experiment": trial.experiment, "study": str(study_dir)})
            mlflow.log_params({**{k: v for k, v in trial.params.items()}, "seed": trial.seed})
            history = pd.read_csv(run_dir / "metrics.csv")
            for record in history.to_dict("records"):
                step = int(record.pop("epoch"))
                mlflow.log_metrics({k: float(v) for k, v in record.items()}, step=step)
            mlflow.log_metrics({f"final_{m}": float(row[m]) for m in RESULT_METRICS})
            if (run_dir / "eval-test").is_dir():
                mlflow.log_artifacts(str(run_dir / "eval-test"), artifact_path="eval-test")
        save_text_atomic(marker, run.info.run_id + "\n")
        logged += 1
    return logged


def results_table(rows: list[dict[str, Any]], trials: list[Trial]) -> pd.DataFrame:
    """One row per trial: ids, every varied/fixed parameter (resolved), metrics, run_dir, seconds."""
    keys: list[str] = []
    for t in trials:
        keys += [k for k in t.params if k not in keys]
    records = []
    for row, trial in zip(rows, trials):
        config = trial_config(trial).to_dict()
        params = {k: config[k.split(".")[0]][k.split(".")[1]] for k in keys}
        records.append({"trial": row["trial"], "experiment": row["experiment"], "seed": row["seed"], **params,
                        **{m: row[m] for m in RESULT_METRICS}, "run_dir": row["run_dir"], "seconds": row["seconds"]})
    return pd.DataFrame.from_records(records)


def select(results: pd.DataFrame, trials: list[Trial], metric: str = "val_macro_f1") -> dict[str, Any]:
    """Mean ± std per cell over seeds; the winner is the cell with the best mean ``metric``
    (a validation metric), and within it the seed with the best ``metric``."""
    by_id = {t.id: t for t in trials}
    results = results.copy()
    results["_cell"] = [json.dumps(by_id[t].params, sort_keys=True, default=str) + e
                        for t, e in zip(results["trial"], results["experiment"])]
    cells = []
    for _, group in results.groupby("_cell", sort=False):
        first = by_id[group["trial"].iloc[0]]
        cell = {"experiment": first.experiment, "params": first.params, "n_seeds": int(len(group)),
                "trials": group["trial"].tolist()}
        for m in RESULT_METRICS:
            cell[f"{m}_mean"] = float(group[m].mean())
            cell[f"{m}_std"] = float(group[m].std(ddof=1)) if len(group) > 1 else 0.0
        cells.append(cell)
    best = max(cells, key=lambda c: c[f"{metric}_mean"])
    members = results[results["trial"].isin(best["trials"])]
    chosen = members.loc[members[metric].idxmax()]
    winner = {"experiment": best["experiment"], "params": best["params"], "trial": chosen["trial"],
              "run_dir": chosen["run_dir"], "val_macro_f1_mean": best["val_macro_f1_mean"],
              "val_macro_f1_std": best["val_macro_f1_std"], "test_macro_f1_mean": best["test_macro_f1_mean"],
              "test_macro_f1_std": best["test_macro_f1_std"], "n_seeds": best["n_seeds"]}
    return {"metric": metric, "cells": cells, "winner": winner}


def write_default_study(path: str | os.PathLike, data: str, **kwargs) -> Path:
    """Write the original study's design as a YAML file (data path relative to it when possible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = os.path.relpath(Path(data).absolute(), path.parent.absolute())
    except ValueError:
        pass
    path.write_text(yaml.safe_dump(original_study_design(data, **kwargs), sort_keys=False))
    return path


__all__ = ["StudySpec", "Experiment", "Trial", "StudyError", "original_study_design", "expand_trials",
           "trial_config", "run_trial", "run_study", "results_table", "select", "write_default_study"]
