"""Benchmark: study wall time, trials one at a time vs concurrently, same grid, same run.

Usage: python bench/bench_study.py [--trials 4] [--workers N]
Prints both wall times and the ratio (sequential / parallel). The data are embedded
synthetic faces, so the bench needs no dataset.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from ferwild.data.prepare import PrepareConfig, prepare
from ferwild.data.synth import synth_dataset
from ferwild.study import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="grid cells (learning rates)")
    parser.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2) // 2))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth_dataset("reference", 600, root / "raw", seed=0, size=64, label_set="basic6")
        prepare(root / "raw" / "manifest.csv", root / "prep", PrepareConfig(size=48, workers=1))
        lrs = [10 ** -(2 + k / 2) for k in range(args.trials)]
        spec = {"data": str(root / "prep"), "seeds": [0],
                "base": {"model.name": "cnn_small", "model.pretrained": "none", "model.image_size": 48,
                         "train.batch_size": 32, "train.epochs": 2},
                "experiments": [{"name": "lr", "grid": {"optim.lr": lrs}}]}
        (root / "s.yaml").write_text(yaml.safe_dump(spec))
        times = {}
        for label, workers in (("sequential", 1), ("parallel", args.workers)):
            t0 = time.perf_counter()
            run_study(root / "s.yaml", root / label, workers=workers, report=False, log=lambda m: None)
            times[label] = time.perf_counter() - t0
        print(f"{args.trials} trials on {os.cpu_count()} cores: sequential {times['sequential']:.1f}s | "
              f"{args.workers} concurrent {times['parallel']:.1f}s | ratio {times['sequential'] / times['parallel']:.2f}x")


if __name__ == "__main__":
    main()
