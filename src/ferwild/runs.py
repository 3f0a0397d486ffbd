"""A run directory as its own concept: where its checkpoints are, and how to load them.

A run is what ``ferwild train`` writes (see :mod:`ferwild.train` for the layout): a resolved
``config.yaml``, ``metrics.csv`` and ``checkpoints/`` with ``LAST``/``BEST`` pointers to
folders of ``model.safetensors`` + a plain-dict state. Everything that *reads* a run - evaluate,
export, the recogniser, the audit, the shipped models - comes here, so inference never imports
the training loop. ``--run`` also accepts a study folder (its selected run) and a shipped
model's name (``ferwild:fer2013_vgg``): :func:`resolve_run_dir`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ferwild.config import ConfigError
from ferwild.data.prepared import PreparedDataset
from ferwild.files import save_text_atomic, set_default_mode
from ferwild.shipped import CARD_FILE, ShippedModelError, is_shipped, shipped_model_dir

if TYPE_CHECKING:  # torch is imported where a function needs it: resolving a run or a shipped
    import torch  # model's folder (the ONNX and live paths) must not load it
    import torch.nn as nn

__all__ = ["RunError", "resolve_device", "autocast_dtype", "resolve_run_dir", "checkpoint_dir",
           "load_checkpoint_state", "load_weights", "unwrap_model", "load_run", "training_face_alignment",
           "pack_run"]


class RunError(ValueError):
    """A user-facing problem with the run's inputs (data, checkpoint, run directory)."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> the local CUDA device when there is one (per LOCAL_RANK under torchrun), else CPU."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        return torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"train.device {spec!r}: {exc}") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; fp32 (no autocast) on CPU unless asked."""
    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder, also when given a study folder or its ``best_run`` file (which names the
    selected trial relative to the study): ``--run STUDY`` means the study's selected run; and
    ``ferwild:<name>`` means a model shipped inside the package (:mod:`ferwild.shipped`).

    Raises:
        RunError: ``ferwild:<name>`` names no shipped model.
    """
    if is_shipped(path):
        try:
            return shipped_model_dir(path)
        except ShippedModelError as exc:
            raise RunError(str(exc)) from None
    path = Path(path)
    pointer = path / "best_run" if path.is_dir() and not (path / "checkpoints").is_dir() else path
    if pointer.is_file() and pointer.name == "best_run":
        return pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path


def checkpoint_dir(run_dir: str | Path, which: str = "best") -> Path:
    """The folder of a run's ``best`` or ``last`` checkpoint (``run_dir`` may be a study folder).

    Raises:
        RunError: when the run has no such checkpoint.
    """
    run_dir = resolve_run_dir(run_dir)
    pointer = Path(run_dir) / "checkpoints" / which.upper()
    if not pointer.exists():
        raise RunError(f"{run_dir} has no {which} checkpoint (is it a ferwild run directory?)")
    return pointer.parent / pointer.read_text().strip()


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """The plain-dict state of a checkpoint (``weights_only=True``: no code is unpickled);
    ``state.json`` for the inference-only checkpoints of shipped models."""
    if (path / "state.json").is_file():
        try:
            return json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read checkpoint state {path / 'state.json'}: {exc}") from None
    import torch

    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt/foreign files get one clear line
        raise RunError(f"cannot read checkpoint state {path / 'state.pt'}: {type(exc).__name__}: {exc}") from None


def load_weights(model: nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` into the model, strictly (a foreign file is an error)."""
    from safetensors.torch import load_file

    try:
        weights = load_file(path / "model.safetensors")
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"cannot read weights {path / 'model.safetensors'}: {type(exc).__name__}: {exc}") from None
    try:
        unwrap_model(model).load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunError(f"weights in {path} do not fit this model: {first}") from None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def load_run(run_dir: str | os.PathLike, which: str = "best", device: str | torch.device = "cpu"):
    """Rebuild a run's model from its checkpoint (architecture from the saved config, weights
    from safetensors). Returns ``(model, state)``; ``state["label_names"]`` is its label set."""
    from ferwild.models import model_from_config

    path = checkpoint_dir(run_dir, which)
    state = load_checkpoint_state(path)
    if not isinstance(state, dict) or "model_config" not in state or "label_names" not in state:
        raise RunError(f"{path} is not a ferwild checkpoint (no model config / label names)")
    model = model_from_config(state["model_config"])
    load_weights(model, path)
    return model.to(device).eval(), state


def training_face_alignment(state: dict[str, Any]):
    """How a run's training faces were cut (:class:`~ferwild.data.faces.FaceAlignment`) and where
    that came from: ``"checkpoint"``; for runs trained before checkpoints recorded it, the
    ``"prepared data"`` named in the run's config when it is still there, else ``"defaults"``."""
    from ferwild.data.faces import FaceAlignment

    if state.get("face_alignment"):
        return FaceAlignment.from_dict(state["face_alignment"]), "checkpoint"
    data_path = (state.get("config") or {}).get("data", {}).get("path")
    if data_path:
        try:
            return PreparedDataset(data_path).face_alignment(), "prepared data"
        except FileNotFoundError:
            pass
    return FaceAlignment(), "defaults"


def pack_run(run_dir: str | os.PathLike, dest: str | os.PathLike, *, card: dict[str, Any],
             which: str = "best", half: bool = True, tta: str = "none", temperature: float = 1.0) -> Path:
    """Write ``run_dir``'s ``which`` checkpoint as a shipped run directory at ``dest``.

    The weights are stored in float16 when ``half`` (BatchNorm counters stay integers); the
    state keeps only what inference needs (no optimizer or RNG state), as JSON, with the
    model's test-time augmentation set to ``tta`` and its calibration to ``temperature``
    (:meth:`~ferwild.models.FERModel.set_temperature`). ``card`` is written as ``card.json``; its
    figures must be measured on the packed model.
    """
    from safetensors.torch import load_file, save_file

    from ferwild.models import TTA_MODES

    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, not {tta!r}")
    run_dir = resolve_run_dir(run_dir)
    src = checkpoint_dir(run_dir, which)
    state = load_checkpoint_state(src)
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints" / "final").mkdir(parents=True)
    weights = load_file(src / "model.safetensors")
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, tmp / "checkpoints" / "final" / "model.safetensors",
              metadata={"format": "pt", "ferwild": "1", "dtype": "float16" if half else "float32"})
    set_default_mode(tmp / "checkpoints" / "final" / "model.safetensors")
    keep = {k: state[k] for k in ("epoch", "history", "best_val_macro_f1", "model_config", "label_names",
                                  "face_alignment", "config") if k in state}
    keep["model_config"] = {k: v for k, v in keep["model_config"].items() if k not in ("tta", "temperature")}
    if tta != "none":
        keep["model_config"]["tta"] = tta
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, not {temperature!r}")
    if temperature != 1.0:
        keep["model_config"]["temperature"] = float(temperature)
    keep["source_checkpoint"] = src.name
    if (keep.get("config") or {}).get("data", {}).get("path"):
        # the folder's name says what it was trained on; the trainer's absolute path means nothing elsewhere
        keep["config"]["data"]["path"] = Path(keep["config"]["data"]["path"]).name
    (tmp / "checkpoints" / "final" / "state.json").write_text(json.dumps(keep, indent=1) + "\n")
    for pointer in ("BEST", "LAST"):
        (tmp / "checkpoints" / pointer).write_text("final\n")
    if (run_dir / "metrics.csv").is_file():
        shutil.copyfile(run_dir / "metrics.csv", tmp / "metrics.csv")
    if keep.get("config"):
        (tmp / "config.yaml").write_text(yaml.safe_dump(keep["config"], sort_keys=False))
    save_text_atomic(tmp / CARD_FILE, json.dumps(card, indent=2) + "\n")
    # swap, never delete first: a kill leaves the old folder whole (at worst renamed aside)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
