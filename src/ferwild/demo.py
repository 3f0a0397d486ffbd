"""The main job on embedded data, as one function: synth -> prepare -> study -> audit -> ship.

``ferwild demo`` is a thin wrapper over :func:`run_demo`; in Python::

    from ferwild.demo import run_demo
    result = run_demo("demo_out")
    print(result.study_dir / "report.html", result.audit_dir / "report.html")

Every step writes its output under ``out`` and reports the ``ferwild`` command that redoes it
by hand, so the demo doubles as a worked example of the CLI. Every step is resumable: a rerun
keeps what earlier runs finished (synthetic images, prepared chunks, finished trials).

What it takes on CPUs: each study trial runs on one thread, as many trials at a time as there
are CPUs (:func:`ferwild.system.available_cpus`). One thread per trial makes the figures the
same whatever the machine's core count (the numerics of a multi-threaded reduction depend on
how it is split); they still depend on the CPU's instruction set and the library versions.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferwild.files import save_json_atomic

__all__ = ["DemoResult", "demo_study", "run_demo", "demo_summary", "write_summary", "ship", "missed_faces_note",
           "DEMO_MAIN_MODEL", "DEMO_BASELINE_MODEL"]

#: The demo's main model: the shipped architecture at demo size (learns in a few epochs on ~1,000 faces).
DEMO_MAIN_MODEL = "fer_vgg_tiny"
#: The baseline: a tiny ViT from scratch, the study's architecture family without its pretraining.
DEMO_BASELINE_MODEL = "vit_tiny"
#: Production photos handed to the shipped model at the end.
SHIP_SAMPLE = 40


@dataclass
class DemoResult:
    """Where the demo put things, and the headline figures it printed."""

    out: Path
    study_dir: Path
    run_dir: Path                       # the trial selected on validation
    audit_dir: Path
    onnx_path: Path
    predictions_dir: Path
    selection: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    ship_summary: dict[str, Any] = field(default_factory=dict)


def demo_study(prepared: Path, path: Path, seeds: list[int], quick: bool = False) -> Path:
    """Write the original study's design scaled to a CPU (small models at 48 px, random init) to ``path``.

    The roles are swapped on purpose: from scratch on ~1,000 faces a small CNN learns in a few
    epochs while a tiny ViT does not (ViTs need pretraining or far more data), so the CNN is the
    main model whose ablations mean something, and the ViT is the baseline.
    """
    from ferwild.study import write_default_study

    base: dict[str, Any] = {"model.pretrained": "none", "model.image_size": 48, "train.batch_size": 32,
                            "train.eval_batch_size": 256}
    if quick:  # a smoke run of every step: two batches per epoch
        base["train.max_train_batches"] = 2
    return write_default_study(path, str(prepared), seeds=seeds, main=DEMO_MAIN_MODEL,
                               baseline=DEMO_BASELINE_MODEL, base=base)


def _print(message: str) -> None:
    print(message, flush=True)


def run_demo(
    out: str | Path = "demo_out",
    *,
    n: int = 1200,
    size: int = 48,
    seed: int = 0,
    seeds: int = 1,
    workers: int | None = None,
    quick: bool = False,
    log: Callable[[str], None] = _print,
    section: Callable[[str], None] | None = None,
    command: Callable[[str], None] | None = None,
    prepared: Callable[[dict[str, Any], Path], None] | None = None,
) -> DemoResult:
    """Run the main job on synthetic faces; returns where everything went.

    Args:
        out: output folder (``synth/``, ``prepared/{reference,production}``, ``study.yaml``,
            ``study/``, ``audit/``, ``model.onnx``, ``ship/``).
        n: synthetic images per set; ``size``: the cached crop size; ``seed``: seed of everything.
        seeds: training seeds per study cell.
        workers: concurrent trials (default: the available CPUs, one thread each).
        quick: a smoke run: two training batches per epoch.
        log: receives progress lines; ``section`` a heading per step; ``command`` the CLI
            command of each step (default: ``log``); ``prepared(summary, out_dir)`` each
            prepare summary (default: one line through ``log``).
    """
    from ferwild.data.prepare import PrepareConfig
    from ferwild.data.prepare import prepare as run_prepare
    from ferwild.data.synth import synth_dataset
    from ferwild.study import run_study
    from ferwild.system import available_cpus

    out = Path(out)
    steps_s: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps_s[step] = round(steps_s.get(step, 0.0) + now - clock, 1)
        clock = now

    section = section or (lambda title: log(f"== {title} =="))
    command = command or log
    prepared = prepared or (lambda summary, where: log(
        f"prepared {summary['usable']} of {summary['inputs']} inputs -> {where}"))

    for preset in ("reference", "production"):
        raw = out / "synth" / preset
        if not (raw / "manifest.csv").exists():
            section(f"synth {preset}")
            command(f"$ ferwild synth --preset {preset} --n {n} --out {raw} --seed {seed} --labels basic6")
            synth_dataset(preset, n, raw, seed=seed, label_set="basic6")
            lap("synth")
        section(f"prepare {preset}")
        where = out / "prepared" / preset
        command(f"$ ferwild prepare {raw / 'manifest.csv'} --out {where} --size {size} --seed {seed}"
                + (" --balance none" if preset == "production" else ""))
        # Production data is evaluated as it comes: never balanced.
        config = PrepareConfig(size=size, seed=seed, balance="none" if preset == "production" else "max")
        result = run_prepare(raw / "manifest.csv", where, config)
        prepared(result.summary, result.out_dir)
        lap("prepare")

    section("study")
    study_dir = out / "study"
    spec = demo_study(out / "prepared" / "reference", out / "study.yaml", list(range(seeds)), quick)
    workers = workers or available_cpus()
    command(f"$ ferwild study {spec} --out {study_dir} --workers {workers}")
    run_study(spec, study_dir, workers=workers, log=log)
    selection = json.loads((study_dir / "selection.json").read_text())
    run_dir = study_dir / (study_dir / "best_run").read_text().strip()
    lap("study")

    section("audit production")
    from ferwild.audit.core import AuditConfig, run_audit

    audit_dir = out / "audit"
    command(f"$ ferwild audit --run {run_dir} --reference {out / 'prepared' / 'reference'} "
            f"--production {out / 'prepared' / 'production'} --out {audit_dir}")
    audit = run_audit(run_dir, out / "prepared" / "reference", out / "prepared" / "production", audit_dir,
                      AuditConfig(seed=seed), progress=lambda m: log(f"  {m}"))
    for line in audit["verdict"]["findings"] + audit["verdict"]["advice"]:
        log(f"- {line}")
    lap("audit")

    section("ship")
    onnx_path, predictions_dir, summary = ship(out, run_dir, n, log=log, command=command)
    note = missed_faces_note(summary, audit.get("data_health", {}).get("detector_check"))
    if note:
        log(f"  {note}")
    lap("ship")
    write_summary(out, selection, summary, steps_s,
                  settings={"n": n, "size": size, "seed": seed, "seeds": seeds, "workers": workers, "quick": quick})
    return DemoResult(out=out, study_dir=study_dir, run_dir=run_dir, audit_dir=audit_dir, onnx_path=onnx_path,
                      predictions_dir=predictions_dir, selection=selection, verdict=audit["verdict"],
                      ship_summary=summary)


def write_summary(out: Path, selection: dict[str, Any], ship_summary: dict[str, Any], steps_s: dict[str, float],
                  settings: dict[str, Any]) -> Path:
    """Write ``OUT/summary.json`` (:func:`demo_summary`) from the files the steps wrote under ``out``."""
    # the figures as the audit wrote them (audit.json rounds), so the summary quotes the file exactly
    audit = json.loads((out / "audit" / "audit.json").read_text())
    path = out / "summary.json"
    save_json_atomic(path, demo_summary(out / "study", selection, audit, ship_summary, steps_s, settings))
    return path


def demo_summary(study_dir: Path, selection: dict[str, Any], audit: dict[str, Any], ship_summary: dict[str, Any],
                 steps_s: dict[str, float], settings: dict[str, Any]) -> dict[str, Any]:
    """``OUT/summary.json``: the demo's headline figures, each read from the file its step wrote
    (the study's cells and selection, the audit's ``audit.json``, predict's summary), and the
    wall time of each step."""
    from ferwild.study_report import cells_not_learning, study_cells

    cells = study_cells(study_dir)
    flagged = cells_not_learning(cells)
    main = next((c for c in selection.get("cells", []) if c.get("experiment") == "main"), None)
    perf, shift = audit.get("performance", {}), audit.get("covariate_shift", {})
    drop = perf.get("drop", {}).get("macro_f1", {})
    detector = audit.get("data_health", {}).get("detector_check") or {}
    label_shift = audit.get("label_shift", {})
    return {
        "settings": settings,
        "wall_s": round(sum(steps_s.values()), 1),
        "steps_s": steps_s,
        "main": main,
        "selected": selection.get("winner"),
        "cells": int(len(cells)),
        "cells_not_learning": int(len(flagged)),
        "cells_not_learning_list": [
            {"experiment": str(c["experiment"]), "trials": list(c["trials"]), "vs_chance": str(c["vs_chance"])}
            for _, c in flagged.iterrows()],
        "audit": {
            "mmd_p_value": shift.get("mmd_p_value"),
            "domain_auc": shift.get("domain_auc"),
            "shift_detected": shift.get("detected"),
            "attribute_shift": shift.get("attribute_shift"),
            "shift_attribution": shift.get("shift_attribution"),
            "macro_f1_reference": perf.get("reference", {}).get("macro_f1"),
            "macro_f1_production": perf.get("production", {}).get("macro_f1"),
            "macro_f1_drop": drop.get("difference"),
            "macro_f1_drop_ci": drop.get("ci"),
            "detector_no_face": {k: v.get("rate") for k, v in detector.items() if isinstance(v, dict)},
            "detector_min_confidence": next((v.get("min_confidence") for v in detector.values()
                                             if isinstance(v, dict)), None),
            "label_shift_reliable": label_shift.get("reliable"),
            "label_shift_error_tv": label_shift.get("estimation_error_tv"),
            "findings": audit.get("verdict", {}).get("findings", []),
        },
        "ship": ship_summary,
    }


def ship(out: Path, run_dir: Path, n: int, *, log: Callable[[str], None] = _print,
         command: Callable[[str], None] | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Export ``run_dir`` to ``out/model.onnx`` and run it on a sample of the production photos,
    as a user would hand them over (``out/ship/``); returns the ONNX path, the predictions
    folder and the predict summary."""
    from ferwild.export import export_onnx
    from ferwild.predict import PredictConfig, predict_files
    from ferwild.recognizer import Recognizer

    command = command or log
    onnx_path = out / "model.onnx"
    command(f"$ ferwild export --run {run_dir} --out {onnx_path}")
    report = export_onnx(run_dir, onnx_path)
    log(f"  ONNX Runtime vs PyTorch: max |dp| = {report['parity']['max_abs_diff_probabilities']:.1e}")
    photos = sorted((out / "synth" / "production" / "images").rglob("*.png"))[::max(1, n // SHIP_SAMPLE)][:SHIP_SAMPLE]
    sample = out / "ship" / "photos"
    sample.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        target = sample / f"{photo.parent.name}-{photo.name}"
        if not target.exists():
            shutil.copyfile(photo, target)
    predictions_dir = out / "ship" / "predictions"
    command(f"$ ferwild predict {sample} --onnx {onnx_path} --out {predictions_dir} --annotate")
    summary = predict_files(Recognizer.from_onnx(onnx_path), [sample], predictions_dir,
                            PredictConfig(annotate=True), overwrite=True)
    log(f"  {summary['n_images']} photos: {summary['n_faces']} faces, {summary['n_without_face']} without a face; "
        f"labels {summary['labels']}")
    return onnx_path, predictions_dir, summary


def missed_faces_note(summary: dict[str, Any], detector_check: dict[str, Any] | None) -> str | None:
    """One line that puts the shipped model's photos without a face next to the audit's detector check."""
    missed, photos = summary.get("n_without_face", 0), summary.get("n_images", 0)
    if not missed or not photos:
        return None
    line = f"MTCNN found no face in {missed} of {photos} photos"
    checks = detector_check or {}
    prod, ref = checks.get("production"), checks.get("reference")
    if prod and ref and prod.get("rate") is not None and ref.get("rate") is not None:
        line += (f"; the audit measured the same detector on larger samples: no face in "
                 f"{100 * prod['rate']:.0f}% of production photos ({prod['no_face']} of {prod['checked']}) vs "
                 f"{100 * ref['rate']:.0f}% of reference ones ({ref['no_face']} of {ref['checked']}). "
                 "The production preset plants occlusions (hands, text), blur, noise and dim light, which "
                 "MTCNN misses more often, and MTCNN misses some clean drawn faces too (see the audit report, "
                 "'What the deployed detector sees')")
    return line + "."
