"""Benchmark: int8 twins of an ONNX export against the fp32 file, on a prepared dataset's test split.

For a run or shipped model (default ``ferwild:ferplus_vgg``) and a prepared dataset (``--data``):

1. export the fp32 ONNX file (:func:`ferwild.export.export_onnx`, parity-checked);
2. quantise it with :func:`ferwild.export.quantize_onnx`: ``static`` (QDQ, Percentile
   calibration, the default), ``static-minmax`` (MinMax calibration, the alternative the default
   was chosen against), ``static-7bit`` (Percentile with 7-bit weights, ``reduce_range``: what
   x86 CPUs without VNNI may need) -- all calibrated on the same ``--calibration-crops`` train
   crops (:func:`ferwild.export.calibration_crops`) -- and ``dynamic`` (no calibration);
3. on the test split, for fp32 and each twin: faces/s one face at a time (batch 1) and in
   batches of 5, each the best of ``--repeats`` windows of at least ``--min-seconds``, with
   ``--threads`` intra-op threads (default 1, as ``ferwild live``/``serve`` run a model), the
   models taking turns window by window so that a busy machine slows them alike; the ratio is
   against fp32 measured in the same run (> 1: int8 is faster). Then accuracy on the test
   split, the share of faces whose int8 label equals the fp32 label, and the max / mean
   absolute difference of the probabilities.

Usage:
    nice -n 5 .venv/bin/python bench/bench_int8.py --data model_work/ferplus_basic7 [--run ferwild:ferplus_vgg]
        [--variants static,static-minmax,static-7bit,dynamic] [--json int8.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name -> quantize_onnx keywords (besides the calibration crops)
    "static": {"mode": "static", "method": "percentile"},
    "static-minmax": {"mode": "static", "method": "minmax"},
    "static-7bit": {"mode": "static", "method": "percentile", "reduce_range": True},
    "dynamic": {"mode": "dynamic"},
}


def cpu_flags() -> str:
    """The int8-relevant x86 flags of this CPU (AVX2, AVX-512, VNNI), as /proc/cpuinfo lists them."""
    try:
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    flags = line.split(":", 1)[1].split()
    keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    return " ".join(keep) or "none of avx2/avx512/vnni"


def test_split(data_dir: str, label_names: list[str], preprocessing, limit: int | None):
    """``(pixel_values, label ids in the model's order)`` of the labelled test faces."""
    from ferwild.data.prepared import COL, PreparedDataset

    data = PreparedDataset(data_dir)
    rows = data.rows("test", include_augmented=False)
    rows = rows[rows[COL.label].astype(str) != ""]
    if limit:
        rows = rows.iloc[:limit]
    missing = sorted(set(rows[COL.label]) - set(label_names))
    if missing:
        raise SystemExit(f"the test split has labels {missing} the model does not predict ({label_names})")
    labels = np.array([label_names.index(n) for n in rows[COL.label]])
    return preprocessing.pixel_values(data.images(rows)), labels


def probabilities(clf, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([clf.predict_proba(x[i:i + batch]) for i in range(0, len(x), batch)])


def timed_turns(models: dict, x: np.ndarray, batch: int, repeats: int, min_seconds: float) -> dict[str, float]:
    """Best faces/s of each model over ``repeats`` windows, models taking turns window by window;
    the batches cycle through the first 500 test faces (real inputs, not one repeated array)."""
    pool = x[: max(batch, min(len(x), 500)) // batch * batch]
    batches = [np.ascontiguousarray(pool[i:i + batch]) for i in range(0, len(pool), batch)]
    for clf in models.values():  # warm-up: thread pools, ORT's first-run planning
        for b in batches[:5]:
            clf(b)
    best = dict.fromkeys(models, 0.0)
    for _ in range(repeats):
        for name, clf in models.items():
            n, t0 = 0, time.perf_counter()
            while True:
                clf(batches[n % len(batches)])
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds:
                    break
            best[name] = max(best[name], n * batch / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="ferwild:ferplus_vgg", help="run directory or shipped model")
    parser.add_argument("--data", required=True, help="prepared dataset (its train split calibrates, test measures)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--calibration-crops", type=int, default=512, help="train crops for static calibration")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads while timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per figure (best is kept)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="length of a timed window")
    parser.add_argument("--limit", type=int, default=None, help="at most this many test faces (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    import onnxruntime as ort

    from ferwild.backends import OnnxClassifier
    from ferwild.export import calibration_crops, export_onnx, quantize_onnx

    env = {"cores": os.cpu_count(), "cpu_flags": cpu_flags(), "onnxruntime": ort.__version__,
           "threads": args.threads, "repeats": args.repeats, "min_seconds": args.min_seconds}
    print(f"{args.run} on {args.data} | cores: {env['cores']} | cpu flags: {env['cpu_flags']} | onnxruntime "
          f"{env['onnxruntime']} | {args.threads} thread(s), best of {args.repeats} x >= {args.min_seconds}s",
          flush=True)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ferwild_bench_int8_") as tmp:
        fp32_path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        report = export_onnx(args.run, fp32_path)
        print(f"fp32: exported in {time.perf_counter() - t0:.1f}s ({report['exporter']}), "
              f"{report['size_bytes'] / 1e6:.2f} MB", flush=True)
        fp32 = OnnxClassifier(fp32_path, intra_op_threads=args.threads)
        rows["fp32"] = {"size_bytes": report["size_bytes"]}
        crops = calibration_crops(args.data, fp32.preprocessing, n=args.calibration_crops)
        models = {"fp32": fp32}
        for name in variants:
            kw = dict(VARIANTS[name])
            t0 = time.perf_counter()
            q = quantize_onnx(fp32_path, Path(tmp) / f"{name}.onnx", calibration=crops if kw["mode"] == "static"
                              else None, **kw)
            rows[name] = {"size_bytes": q["size_bytes"], "quantize_seconds": time.perf_counter() - t0,
                          "calibration_size": q["calibration_size"]}
            print(f"{name}: quantised in {rows[name]['quantize_seconds']:.1f}s, {q['size_bytes'] / 1e6:.2f} MB "
                  f"({q['pre_processing']})", flush=True)
            models[name] = OnnxClassifier(q["path"], intra_op_threads=args.threads)

        x, y = test_split(args.data, fp32.label_names, fp32.preprocessing, args.limit)
        print(f"test split: {len(x)} faces", flush=True)
        for batch in (1, 5):
            t0 = time.perf_counter()
            speeds = timed_turns(models, x, batch, args.repeats, args.min_seconds)
            for name, fps in speeds.items():
                rows[name][f"faces_per_s_batch{batch}"] = fps
                rows[name][f"ratio_batch{batch}"] = fps / speeds["fp32"]
            print(f"timed batch {batch} in {time.perf_counter() - t0:.0f}s", flush=True)
        ref = probabilities(fp32, x)
        for name, clf in models.items():
            t0 = time.perf_counter()
            p = ref if name == "fp32" else probabilities(clf, x)
            diff = np.abs(p - ref)
            rows[name].update({"accuracy": float(np.mean(p.argmax(1) == y)),
                               "label_agreement": float(np.mean(p.argmax(1) == ref.argmax(1))),
                               "max_abs_diff_probabilities": float(diff.max()),
                               "mean_abs_diff_probabilities": float(diff.mean())})
            print(f"{name}: test split in {time.perf_counter() - t0:.0f}s", flush=True)

    print(f"\nsummary: {len(x)} test faces, {args.threads} thread(s); faces/s, ratio vs fp32 measured in this run")
    print(f"  {'model':<15}{'MB':>6}{'b1 f/s':>9}{'x fp32':>8}{'b5 f/s':>9}{'x fp32':>8}{'accuracy':>10}"
          f"{'= fp32':>9}{'max|dp|':>9}{'mean|dp|':>10}")
    for name, r in rows.items():
        print(f"  {name:<15}{r['size_bytes'] / 1e6:>6.2f}{r['faces_per_s_batch1']:>9.1f}{r['ratio_batch1']:>7.2f}x"
              f"{r['faces_per_s_batch5']:>9.1f}{r['ratio_batch5']:>7.2f}x{r['accuracy']:>10.2%}"
              f"{r['label_agreement']:>9.2%}{r['max_abs_diff_probabilities']:>9.3f}"
              f"{r['mean_abs_diff_probabilities']:>10.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"run": args.run, "data": args.data, "test_faces": len(x),
                                         "calibration_crops": args.calibration_crops, "env": env, "models": rows},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
