"""``ferwild monitor``: score new, unlabelled batches against the reference, keep a history,
and say when the shift crosses the line that means "retrain".

Each batch (a prepared dataset, or a raw image folder that is prepared on the fly with
``--unlabelled``) goes through the run's model once (cached per run x batch), then:

* the same two-sample tests as the audit on the penultimate embeddings: an MMD permutation
  test (p-value) and a domain classifier (cross-validated AUC, the effect size);
* label-free output statistics: the predicted-class mix, its total-variation distance from
  the reference, and the mean max-probability.

A batch is **flagged** when the combined p-value (Bonferroni over the MMD and the domain
classifier, as in the audit) is below ``alpha`` *and* the domain AUC reaches
``auc_threshold``: with large batches any tiny, harmless change becomes significant, so the
effect size guards against alarms nobody should act on. **Retrain** is advised once
``patience`` consecutive batches are flagged. The history (``history.csv``, one row per
batch, rerunning a batch replaces its row) and a figure of the statistic over time are kept
in the history folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferwild.audit.model_outputs import ModelOutputs, compute_outputs
from ferwild.config import Settings, check_int, check_number
from ferwild.data.prepared import MANIFEST, PreparedDataset
from ferwild.files import save_text_atomic
from ferwild.runs import RunError

HISTORY = "history.csv"


@dataclass
class MonitorConfig(Settings):
    """Thresholds and test settings of ``ferwild monitor``."""

    alpha: float = 0.01
    auc_threshold: float = 0.65
    patience: int = 1
    reference_split: str = "val+test"  # held-out reference rows (never trained on)
    n_permutations: int = 1000
    max_samples: int = 2000
    pca_dim: int = 32
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self):
        self.alpha = check_number(self.alpha, "alpha", low=0, high=1, low_open=True, high_open=True)
        self.auc_threshold = check_number(self.auc_threshold, "auc_threshold", low=0.5, high=1)
        self.patience = check_int(self.patience, "patience", 1)
        for name in ("n_permutations", "max_samples", "pca_dim", "batch_size"):
            setattr(self, name, check_int(getattr(self, name), name, 1))
        self.seed = check_int(self.seed, "seed", 0)


def _prepared_batch(batch: Path, history_dir: Path, reference: PreparedDataset) -> Path:
    """A prepared folder for ``batch``: itself if prepared, else an unlabelled prepare of it."""
    if (batch / MANIFEST).is_file():
        return batch
    if not batch.exists():
        raise RunError(f"batch {batch} does not exist")
    from ferwild.data.prepare import PrepareConfig, prepare

    key = hashlib.sha256(str(batch.resolve()).encode()).hexdigest()[:10]
    out = history_dir / "batches" / f"{batch.name}-{key}"
    # faces cut like the reference's (crop side, template, colour): otherwise the monitor would
    # measure the difference between two ways of cropping rather than a shift in the data
    prepare(batch, out, PrepareConfig.like(reference.root, unlabelled=True, balance=None))
    return out


def batch_statistics(reference: ModelOutputs, batch: ModelOutputs, config: MonitorConfig) -> dict[str, Any]:
    """The monitoring statistics of one batch against the reference outputs."""
    from ferwild.audit.core import shift_tests

    mmd, domain = shift_tests(reference, batch, n_permutations=config.n_permutations,
                              max_samples=config.max_samples, pca_dim=config.pca_dim, seed=config.seed)
    # Bonferroni over the two tests, as in the audit
    p_value = min(1.0, 2 * min(mmd["p_value"], domain["p_value"]))
    k = len(reference.label_names)
    ref_mix = np.bincount(reference.preds, minlength=k) / len(reference)
    mix = np.bincount(batch.preds, minlength=k) / len(batch)
    flagged = bool(p_value < config.alpha and domain["auc"] >= config.auc_threshold)
    return {
        "n": int(len(batch)), "mmd_statistic": float(mmd["statistic"]), "mmd_p_value": float(mmd["p_value"]),
        "domain_auc": float(domain["auc"]), "domain_p_value": float(domain["p_value"]),
        "p_value": float(p_value),
        "predicted_mix_tv": float(0.5 * np.abs(mix - ref_mix).sum()),
        "mean_max_prob": float(batch.probs.max(1).mean()),
        **{f"pred_{name}": float(v) for name, v in zip(reference.label_names, mix)},
        "flagged": flagged,
    }


def monitor(run_dir: str | os.PathLike, reference_dir: str | os.PathLike, batches: list[str | os.PathLike],
            *, history_dir: str | os.PathLike | None = None, config: MonitorConfig | None = None,
            progress=None, batch_progress=None) -> pd.DataFrame:
    """Score ``batches`` (in the given order) and append them to the history.

    Returns the whole history (one row per batch ever scored, in scoring order) with the
    ``flagged`` and ``retrain`` columns; writes ``history.csv`` and ``history.png``.
    ``progress(message)`` is told each batch; ``batch_progress(what, done, total)`` follows
    the forward passes.
    """
    def bar(what: str):
        return (lambda d, t: batch_progress(what, d, t)) if batch_progress else None

    from ferwild.runs import load_run, resolve_device, resolve_run_dir

    config = config or MonitorConfig()

    run_dir = resolve_run_dir(run_dir)
    history_dir = Path(history_dir) if history_dir is not None else Path(run_dir) / "monitor"
    history_dir.mkdir(parents=True, exist_ok=True)
    try:
        reference = PreparedDataset(reference_dir)
    except FileNotFoundError as exc:
        raise RunError(str(exc)) from None
    loaded = load_run(run_dir, "best", resolve_device(config.device))
    ref = compute_outputs(run_dir, reference_dir, config.reference_split, batch_size=config.batch_size,
                          model_and_state=loaded, progress=bar(f"reference {config.reference_split}"))
    path = history_dir / HISTORY
    history = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    for batch in batches:
        batch = Path(batch)
        if progress:
            progress(f"scoring {batch}")
        prepared = _prepared_batch(batch, history_dir, reference)
        out = compute_outputs(run_dir, prepared, None, batch_size=config.batch_size, model_and_state=loaded,
                              progress=bar(batch.name))
        row = {"batch": str(batch), "scored_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               **batch_statistics(ref, out, config)}
        if len(history) and "batch" in history:
            history = history[history["batch"] != str(batch)]  # rescoring replaces the row
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
    history = _with_retrain(history, config.patience)
    save_text_atomic(path, history.to_csv(index=False))
    history_figure(history, history_dir / "history.png", config)
    return history


def _with_retrain(history: pd.DataFrame, patience: int) -> pd.DataFrame:
    """``retrain`` is True at a batch that ends a run of ``patience`` consecutive flagged ones."""
    history = history.copy()
    flagged = history["flagged"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    run = 0
    retrain = []
    for f in flagged:
        run = run + 1 if f else 0
        retrain.append(run >= patience)
    history["flagged"] = flagged
    history["retrain"] = retrain
    return history


def history_figure(history: pd.DataFrame, path: Path, config: MonitorConfig) -> None:
    """Domain AUC and -log10(combined shift p) per batch, with the thresholds and flagged batches marked."""
    from ferwild.plotting import save_figure, subplots

    x = np.arange(len(history))
    fig, axes = subplots(2, 1, figsize=(max(6, 0.6 * len(history) + 3), 5), dpi=110, sharex=True,
                             layout="constrained")
    auc = history["domain_auc"].to_numpy(float)
    column = "p_value" if "p_value" in history else "mmd_p_value"
    logp = -np.log10(np.clip(history[column].to_numpy(float), 1e-12, 1))
    flagged = history["flagged"].to_numpy(bool)
    for ax, values, threshold, label in ((axes[0], auc, config.auc_threshold, "domain AUC"),
                                         (axes[1], logp, -np.log10(config.alpha), "-log10 shift p")):
        ax.plot(x, values, "-o", color="#2f6f9f", ms=5)
        ax.scatter(x[flagged], values[flagged], color="#c0392b", zorder=3, s=40, label="flagged")
        ax.axhline(threshold, color="#c0392b", ls="--", lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("Shift of each batch against the reference (red: flagged)")
    names = [Path(str(b)).name[:14] for b in history["batch"]]
    axes[1].set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    save_figure(fig, path)
