"""Combine trained runs into one ensemble run: members checked, the diverged left out and said so.

An ensemble is trained member by member (``ferwild train``, one run each: e.g.
``recipes/ferplus_long.yaml`` beside the default, or several seeds of
``recipes/ferplus_member.yaml``), then :func:`combine_runs` writes one run directory whose model
is a :class:`~ferwild.models.FEREnsemble` of the members' best checkpoints. Every command that
takes ``--run`` takes it (evaluate, export, predict, serve, ``pack_run``)::

    report = combine_runs(["runs/member1", "runs/member2", "runs/member3"], "runs/ensemble")
    print(report["members"], report["excluded"])

A member that diverged is not averaged in silently: a member is **left out**, with its reason in
the report (``ensemble.json`` in the run), when its weights hold a NaN or infinity, its last
epoch's training or validation loss is not finite, it stopped before its planned epochs (a NaN
loss stops ``ferwild train``), or its best validation accuracy falls more
than ``max_val_drop`` below the best member's (a diverged net sits near chance, tens of points
below). Members must share architecture, labels, preprocessing and face alignment. At least two
must remain. A member that is itself an ensemble (a combined run, or ``ferwild:ferplus_ensemble``)
brings its members, so that an ensemble grows by one run without retraining the others::

    combine_runs(["ferwild:ferplus_ensemble", "runs/ferplus_long_s1"], "runs/ensemble3")
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ferwild.files import save_text_atomic
from ferwild.runs import RunError, checkpoint_dir, load_checkpoint_state, resolve_run_dir
from ferwild.shipped import is_shipped

__all__ = ["ENSEMBLE_REPORT", "combine_runs", "check_member"]

#: The file in an ensemble run that lists its members and the ones left out.
ENSEMBLE_REPORT = "ensemble.json"
#: How far (a fraction of the crop side) members' landmark templates may differ.
TEMPLATE_TOLERANCE = 0.01


def _history(run_dir: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    if (run_dir / "metrics.csv").is_file():
        return pd.read_csv(run_dir / "metrics.csv").to_dict("records")
    return list(state.get("history") or [])


def _non_finite(weights: dict[str, Any], prefix: str = "") -> str | None:
    """Why the floating-point tensors under ``prefix`` cannot be used (a NaN or infinity), or ``None``."""
    bad = [k for k, v in weights.items() if k.startswith(prefix) and v.is_floating_point()
           and not bool(v.isfinite().all())]
    return f"non-finite weights ({len(bad)} tensors, e.g. {bad[0]})" if bad else None


def check_member(run_dir: str | os.PathLike, which: str = "best") -> dict[str, Any]:
    """What :func:`combine_runs` needs to know of one member: its checkpoint, best validation
    accuracy and macro-F1, and ``problem`` (why it cannot be used, or ``None``)."""
    from safetensors.torch import load_file

    run = resolve_run_dir(run_dir)
    path = checkpoint_dir(run, which)
    state = load_checkpoint_state(path)
    history = _history(run, state)
    epoch = int(state.get("epoch") or len(history))
    row = next((h for h in history if int(h.get("epoch", -1)) == epoch), history[-1] if history else {})
    # a shipped member keeps its name (ferwild:NAME), not this machine's path to the package
    info = {"run": str(run_dir) if is_shipped(run_dir) else str(run), "checkpoint": path.name, "epoch": epoch,
            "val_acc": float(row.get("val_acc", float("nan"))),
            "val_macro_f1": float(row.get("val_macro_f1", float("nan"))), "problem": None}
    last = history[-1] if history else {}
    train_config = (state.get("config") or {}).get("train") or {}
    if "seed" in train_config:
        info["seed"] = int(train_config["seed"])
    planned = int(train_config.get("epochs") or 0)
    bad = _non_finite(load_file(path / "model.safetensors"))
    if bad:
        info["problem"] = bad
    elif any(not math.isfinite(float(last.get(k, 0.0))) for k in ("train_loss", "val_loss")):
        info["problem"] = f"non-finite loss at epoch {last.get('epoch')}"
    elif not math.isfinite(info["val_acc"]):
        info["problem"] = "no validation accuracy recorded"
    elif planned and len(history) < planned:
        # a NaN loss stops `ferwild train` (TrainingDiverged) with the last good checkpoint kept
        info["problem"] = f"unfinished: {len(history)} of {planned} epochs (diverged, or stopped: resume it)"
    return info


def _ensemble_members(run: Path, path: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The members an ensemble run was combined from, as :func:`check_member` described them (its
    ``ensemble.json``, or a shipped ensemble's card)."""
    from ferwild.shipped import CARD_FILE

    for source in (run / ENSEMBLE_REPORT, run / CARD_FILE):
        if source.is_file():
            members = json.loads(source.read_text()).get("members")
            if members and len(members) == int(state["model_config"]["ensemble"]):
                return members
    raise RunError(f"{run} is an ensemble without the report of its members ({ENSEMBLE_REPORT} or {CARD_FILE})")


def _members_of(run_dir: str | os.PathLike, which: str) -> list[dict[str, Any]]:
    """:func:`check_member` of ``run_dir``; for an ensemble run, each of its members, read from its
    weights (``via`` the ensemble, at ``index``) with the figures its report gives them."""
    from safetensors.torch import load_file

    run = resolve_run_dir(run_dir)
    path = checkpoint_dir(run, which)
    state = load_checkpoint_state(path)
    if not state["model_config"].get("ensemble"):
        return [check_member(run_dir, which)]
    weights = load_file(path / "model.safetensors")
    return [{**recorded, "via": str(run_dir), "via_checkpoint": path.name, "index": index,
             "problem": _non_finite(weights, f"members.{index}.")}
            for index, recorded in enumerate(_ensemble_members(run, path, state))]


def _load_member(member: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A member's checkpoint state and weights; a member of an ensemble run, cut out of it."""
    from safetensors.torch import load_file

    if "via" not in member:
        path = resolve_run_dir(member["run"]) / "checkpoints" / member["checkpoint"]
        return load_checkpoint_state(path), load_file(path / "model.safetensors")
    path = resolve_run_dir(member["via"]) / "checkpoints" / member["via_checkpoint"]
    state = load_checkpoint_state(path)
    state["model_config"] = {k: v for k, v in state["model_config"].items() if k != "ensemble"}
    prefix = f"members.{member['index']}."
    weights = load_file(path / "model.safetensors")
    return state, {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def combine_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, *, which: str = "best",
                 max_val_drop: float = 0.05) -> dict[str, Any]:
    """Write a run directory at ``out_dir`` whose model averages the probabilities of the usable
    members among ``run_dirs`` (their ``which`` checkpoints). Returns the report (also written as
    ``ensemble.json``): ``members`` (used), ``excluded`` (each with its ``problem``).

    Raises:
        RunError: fewer than two usable members, or members that do not fit together.
    """
    from safetensors.torch import save_file

    from ferwild.files import set_default_mode

    if not (0 < max_val_drop < 1):
        raise ValueError(f"max_val_drop must be in (0, 1), not {max_val_drop!r}")
    checked = [m for r in run_dirs for m in _members_of(r, which)]
    best = max((c["val_acc"] for c in checked if c["problem"] is None), default=float("nan"))
    for c in checked:
        if c["problem"] is None and c["val_acc"] < best - max_val_drop:
            c["problem"] = (f"diverged or undertrained: best validation accuracy {100 * c['val_acc']:.1f}% is "
                            f"more than {100 * max_val_drop:.0f} points below the best member's {100 * best:.1f}%")
    used = [c for c in checked if c["problem"] is None]
    if len(used) < 2:
        raise RunError(f"an ensemble needs two usable members, {len(used)} of {len(checked)} are: "
                       + "; ".join(f"{c['run']}: {c['problem']}" for c in checked if c["problem"]))
    loaded = [_load_member(c) for c in used]
    states = [state for state, _ in loaded]
    _check_compatible(used, states)

    weights: dict[str, Any] = {}
    for i, (_, member) in enumerate(loaded):
        weights.update({f"members.{i}.{k}": v for k, v in member.items()})
    model_config = {k: v for k, v in states[0]["model_config"].items() if k not in ("tta", "temperature")}
    model_config["ensemble"] = len(used)
    report = {"members": used, "excluded": [c for c in checked if c["problem"]], "max_val_drop": max_val_drop}
    state = {"epoch": max(c["epoch"] for c in used), "model_config": model_config,
             "label_names": list(states[0]["label_names"]), "face_alignment": states[0].get("face_alignment"),
             "config": states[0].get("config"), "best_val_macro_f1": None, "history": [], "ensemble": report}

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints" / "final").mkdir(parents=True)
    save_file(weights, tmp / "checkpoints" / "final" / "model.safetensors", metadata={"format": "pt", "ferwild": "1"})
    set_default_mode(tmp / "checkpoints" / "final" / "model.safetensors")
    (tmp / "checkpoints" / "final" / "state.json").write_text(json.dumps(state, indent=1, default=str) + "\n")
    for pointer in ("BEST", "LAST"):
        (tmp / "checkpoints" / pointer).write_text("final\n")
    if state["config"]:
        (tmp / "config.yaml").write_text(yaml.safe_dump(state["config"], sort_keys=False))
    save_text_atomic(tmp / ENSEMBLE_REPORT, json.dumps(report, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return report


def _check_compatible(used: list[dict[str, Any]], states: list[dict[str, Any]]) -> None:
    """Members must share architecture, labels and preprocessing exactly, and the face alignment
    up to :data:`TEMPLATE_TOLERANCE` (the landmark template is learned from the prepared crops,
    and two prepares of the same faces learn it a few thousandths apart): the first member's is used."""
    def key(s: dict[str, Any]) -> tuple:
        mc = {k: v for k, v in s["model_config"].items() if k not in ("tta", "temperature")}
        align = {k: v for k, v in (s.get("face_alignment") or {}).items() if k != "template"}
        return json.dumps(mc, sort_keys=True), list(s["label_names"]), json.dumps(align, sort_keys=True)

    def template(s: dict[str, Any]) -> np.ndarray:
        return np.asarray((s.get("face_alignment") or {}).get("template") or [], dtype=float)

    first = key(states[0])
    for c, s in zip(used[1:], states[1:]):
        a, b = template(states[0]), template(s)
        if key(s) != first or a.shape != b.shape or (a.size and np.abs(a - b).max() > TEMPLATE_TOLERANCE):
            raise RunError(f"{c['run']} does not fit {used[0]['run']}: members need the same architecture, labels, "
                           "preprocessing and face alignment")
