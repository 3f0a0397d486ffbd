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

Usage: python bench/bench_onnx.py [--repeats 5] [--min-seconds 0.5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per figure (best is kept)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="length of a timed window")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of both runtimes")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from ferwild.backends import OnnxClassifier
    from ferwild.export import export_onnx
    from ferwild.runs import load_run

    torch.set_num_threads(args.threads)
    print(f"cores: {os.cpu_count()} | threads: {args.threads} | torch {torch.__version__} | "
          f"onnxruntime {ort.__version__} | best of {args.repeats} x >= {args.min_seconds}s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferwild_bench_onnx_") as tmp:
        root = Path(tmp)
        for name, size in CASES:
            run = make_run(root, name, size)
            t0 = time.perf_counter()
            report = export_onnx(run, root / f"{name}.onnx")
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

    print(f"\nsummary ({os.cpu_count()} cores, {args.threads} threads; images/s, baseline = PyTorch eager)")
    print(f"  {'case':<28}{'onnxruntime':>12}{'torch':>12}{'ratio':>9}")
    for case, torch_ips, ort_ips, ratio in rows:
        print(f"  {case:<28}{ort_ips:>12.1f}{torch_ips:>12.1f}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
