"""Evaluate a trained run on a split of a prepared dataset: metrics, figures, predictions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ferwild.data.loader import eval_loader
from ferwild.data.prepared import COL, PreparedDataset
from ferwild.data.votes import has_votes
from ferwild.runs import RunError, autocast_dtype, load_run, resolve_device, resolve_run_dir
from ferwild.shipped import cache_dir
from ferwild.train import evaluate


def evaluate_run(run_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str = "test",
                 out_dir: str | os.PathLike | None = None, *, which: str = "best",
                 batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Evaluate ``run_dir``'s ``which`` checkpoint on ``split`` of ``data_dir``.

    Writes (into ``out_dir``, default ``RUN_DIR/eval-<split>``, or the user cache for a shipped
    model: :func:`ferwild.shipped.cache_dir`) summary.json, summary.md,
    confusion_matrix.png, reliability.png and predictions.parquet; returns the summary. Where
    the split has crowd votes (FER+), the summary's ``crowd`` section scores the model against
    them too (:func:`ferwild.metrics.crowd_metrics`).

    Raises:
        RunError: unknown run/dataset, label sets that differ, or an empty split.
    """
    from ferwild.metrics import write_evaluation

    run_dir = resolve_run_dir(run_dir)
    dev = resolve_device(device)
    model, state = load_run(run_dir, which, dev)
    try:
        prepared = PreparedDataset(data_dir)
    except FileNotFoundError as exc:
        raise RunError(str(exc)) from None
    if list(state["label_names"]) != prepared.label_names:
        raise RunError(f"label sets differ: the checkpoint predicts {list(state['label_names'])}, "
                       f"{data_dir} is labelled {prepared.label_names}")
    rows = prepared.rows(split, include_augmented=False)
    if rows.empty:
        splits = sorted(set(prepared.manifest[COL.split]) - {""})
        raise RunError(f"split {split!r} of {data_dir} is empty (splits: {', '.join(splits)})")
    votes = has_votes(rows)
    loader, transform = eval_loader(prepared.root, rows, prepared.label_names, model.preprocessing, batch_size,
                                    votes=votes)
    result = evaluate(model, loader, transform, None, dev,
                      num_classes=len(prepared.label_names), amp_dtype=autocast_dtype("auto", dev),
                      keep_outputs=True)
    out = Path(out_dir) if out_dir is not None else cache_dir(run_dir, f"eval-{split}")
    out.mkdir(parents=True, exist_ok=True)
    keep = [c for c in rows.columns if c in (COL.row_id, COL.path, COL.split, COL.subject, COL.video, COL.source_split)
            or c.startswith("attr_")]
    extra = {"run_dir": str(run_dir), "checkpoint": which, "epoch": state.get("epoch"),
             "data": str(data_dir), "split": split, "model": state["model_config"].get("name"),
             "out_dir": str(out)}
    return write_evaluation(out, result["labels"], result["probs"], prepared.label_names,
                            rows[keep].reset_index(drop=True), extra=extra, votes=result.get("votes"))
