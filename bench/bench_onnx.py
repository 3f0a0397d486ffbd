"""Benchmark: CPU inference throughput of an exported model in onnxruntime vs PyTorch eager.

For each model (random init, so nothing is downloaded) a checkpoint is written as a training
run would write it, exported with :func:`ferwild.export.export_onnx` (parity-checked), then
both are timed on the same normalised random batches:

* PyTorch eager: ``model(x)`` under ``torch.inference_mode()`` (the baseline);
* onnxruntime: :class:`ferwild.backends.OnnxClassifier` (CPUExecutionProvider), i.e. what a
  consumer of the file gets, input checks included.

Each figure is the best of ``--repeats`` timed windows of at least ``--min-seconds`` each,
after warm-up runs, in images per second; the ratio is ORT / torch (> 1: ONNX is faster).
Both runtimes use ``--threads`` intra-op threads (default: all cores).

Usage: python bench/bench_onnx.py [--repeats 5] [--min-seconds 0.5] [--threads N] [--json]

With ``--json`` the last line is one JSON object: per case (``cnn_small_48px_batch32``,
``cnn_small_48px_batch1``, ``resnet18_112px_batch32``, ``resnet18_112px_batch1``)
``torch_img_per_s``, ``onnx_img_per_s`` and ``ratio_onnx_vs_torch``; per model
(``cnn_small_48px_export``, ``resnet18_112px_export``) the export's seconds, exporter, size and
parity; ``threads``, ``repeats``, ``min_seconds``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = [("cnn_small", 48), ("resnet18", 112)]
BATCHES = (32, 1)
LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def make_run(root: Path, name: str, size: int) -> Path:
    """A run directory holding a random-init ``name`` checkpoint, as ``fit`` would save it."""
    from ferwild.data.faces import FaceAlignment
    from ferwild.models import create_model
    from ferwild.train import save_checkpoint

    model = create_model(name, num_classes=len(LABELS), pretrained="none", image_size=size,
                         id2label=dict(enumerate(LABELS))).eval()
    run = root / name
    state = {"epoch": 0, "model_config": model.config(), "label_names": LABELS,
             "face_alignment": FaceAlignment(crop_size=size).to_dict()}
    save_checkpoint(run, "epoch-000", model, state, pointers=("LAST", "BEST"))
    return run


def throughput(fn, batch: int, repeats: int, min_seconds: float) -> float:
    """Best images/s over ``repeats`` windows, each at least ``min_seconds`` long."""
    for _ in range(3):  # warm-up: allocator, thread pools, ORT's first-run planning
        fn()
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        best = max(best, n * batch / elapsed)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per figure (best is kept)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="length of a timed window")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of both runtimes")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from ferwild.backends import OnnxClassifier
    from ferwild.export import export_onnx
    from ferwild.runs import load_run

    torch.set_num_threads(args.threads)
    print(f"cores: {os.cpu_count()} | threads: {args.threads} | torch {torch.__version__} | "
          f"onnxruntime {ort.__version__} | best of {args.repeats} x >= {args.min_seconds}s", flush=True)
    rows = []
    summary: dict = {"threads": args.threads, "repeats": args.repeats, "min_seconds": args.min_seconds}
    with tempfile.TemporaryDirectory(prefix="ferwild_bench_onnx_") as tmp:
        root = Path(tmp)
        for name, size in CASES:
            run = make_run(root, name, size)
            t0 = time.perf_counter()
            report = export_onnx(run, root / f"{name}.onnx")
            summary[f"{name}_{size}px_export"] = {
                "seconds": time.perf_counter() - t0, "exporter": str(report["exporter"]),
                "size_bytes": int(report["size_bytes"]),
                "max_abs_diff_probabilities": float(report["parity"]["max_abs_diff_probabilities"])}
            print(f"\n{name} @ {size}px: exported in {time.perf_counter() - t0:.1f}s with {report['exporter']}, "
                  f"{report['size_bytes'] / 1e6:.1f} MB, max |Δprob| {report['parity']['max_abs_diff_probabilities']:.2g}",
                  flush=True)
            model, _ = load_run(run, "best")
            clf = OnnxClassifier(root / f"{name}.onnx", intra_op_threads=args.threads)
            gen = torch.Generator().manual_seed(0)
            for batch in BATCHES:
                x = model.preprocessing.normalize(torch.rand(batch, 3, size, size, generator=gen))
                x_np = x.numpy()
                with torch.inference_mode():
                    ref = model(x).numpy()
                assert np.abs(clf(x_np) - ref).max() < 1e-3, "ORT and torch disagree"

                def run_torch(x=x, model=model):
                    with torch.inference_mode():
                        model(x)

                torch_ips = throughput(run_torch, batch, args.repeats, args.min_seconds)
                ort_ips = throughput(lambda x_np=x_np, clf=clf: clf(x_np), batch, args.repeats, args.min_seconds)
                ratio = ort_ips / torch_ips
                print(f"  batch {batch:>3}: torch {torch_ips:9.1f} img/s | onnxruntime {ort_ips:9.1f} img/s | "
                      f"ORT / torch {ratio:5.2f}x", flush=True)
                rows.append((f"{name} {size}px batch {batch}", torch_ips, ort_ips, ratio))
                summary[f"{name}_{size}px_batch{batch}"] = {"torch_img_per_s": torch_ips, "onnx_img_per_s": ort_ips,
                                                            "ratio_onnx_vs_torch": ratio}

    print(f"\nsummary ({os.cpu_count()} cores, {args.threads} threads; images/s, baseline = PyTorch eager)")
    print(f"  {'case':<28}{'onnxruntime':>12}{'torch':>12}{'ratio':>9}")
    for case, torch_ips, ort_ips, ratio in rows:
        print(f"  {case:<28}{ort_ips:>12.1f}{torch_ips:>12.1f}{ratio:>8.2f}x")
    if args.json:
        summary.update(machine=f"{os.cpu_count()} cores, torch {torch.__version__}, onnxruntime {ort.__version__}",
                       command="bench/bench_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
