"""Benchmark: study wall time, trials one at a time vs concurrently, same grid, same run.

Usage: python bench/bench_study.py [--trials 4] [--workers N] [--json]
Prints both wall times and the ratio (sequential / parallel). The data are embedded
synthetic faces, so the bench needs no dataset. With ``--json`` the last line is one JSON
object: ``sequential_s``, ``parallel_s``, ``ratio_sequential_vs_parallel``, ``trials``,
``workers``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ferwild.data.prepare import PrepareConfig, prepare
from ferwild.data.synth import synth_dataset
from ferwild.study import run_study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="grid cells (learning rates)")
    parser.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2) // 2))
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
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
    if args.json:
        print(json.dumps({"trials": args.trials, "workers": args.workers, "sequential_s": times["sequential"],
                          "parallel_s": times["parallel"],
                          "ratio_sequential_vs_parallel": times["sequential"] / times["parallel"],
                          "machine": f"{os.cpu_count()} cores",
                          "command": "bench/bench_study.py " + " ".join(argv if argv is not None else sys.argv[1:])}))


if __name__ == "__main__":
    main()
