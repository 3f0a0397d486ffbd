"""Benchmark: the training input pipeline and training throughput, with same-run baselines.

1. Input pipeline, samples/s on the same images: the study's approach (open each JPEG with
   PIL, run ``ViTImageProcessor`` per sample, stack) against ferwild's (gather a batch from
   the uint8 cache, convert/resize/normalise as one tensor op on the device). Goal >= 10x.
2. Training img/s of small models on this machine (CPU), ferwild's loop end to end.
3. With a GPU: ViT-B/16 training img/s in bf16 and its MFU (FLOPs counted by torch's
   FlopCounterMode) against the measured bf16 matmul peak of the same GPU (goal >= 50%):
   the registry's HF ViT and timm's, eager and torch.compile.

Usage: python bench/bench_train.py [--device cpu|cuda] [--images 2000] [--quick] [--only-mfu] [--json]
The images are synthetic 48x48 grey faces written as JPEG files (the study's input) and as a
prepared cache (ferwild's), so the bench needs no dataset. The last line is a JSON object of
the raw figures; with ``--json`` it is instead the full summary: ``pipeline_study_samples_per_s``,
``pipeline_ferwild_samples_per_s``, ``pipeline_ferwild_augmented_samples_per_s``,
``ratio_pipeline_ferwild_vs_study``, ``ratio_pipeline_augmented_vs_study``,
``train_{model}_{size}`` (img/s), with a GPU ``bf16_peak_tflops`` and per ViT-B/16 case
(``vit_b16_b256_eager``, ``vit_b16_b512_eager``, ``timm_vit_base_patch16_224_b256_eager``,
``vit_b16_b256_compile``, ``timm_vit_base_patch16_224_b256_compile``) its ``img_per_s``,
``train_gflops_per_img``, ``tflops`` and ``mfu`` (0-1); ``device``, ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ferwild.data.prepared import MANIFEST, SHARDS, SUMMARY
from ferwild.labels import get_label_set


def make_dataset(root: Path, n: int, side: int = 48) -> tuple[list[Path], Path]:
    """n grey faces-like images as JPEG files and as a prepared cache folder."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (n, side // 6, side // 6), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(x).resize((side, side), Image.BILINEAR)) for x in low])
    jpegs = root / "jpeg"
    jpegs.mkdir(parents=True)
    paths = []
    for i, img in enumerate(images):
        p = jpegs / f"{i:06d}.jpg"
        Image.fromarray(img).save(p, quality=95)
        paths.append(p)
    prepared = root / "prepared"
    (prepared / SHARDS).mkdir(parents=True)
    np.save(prepared / SHARDS / "chunk-00000.npy", images[..., None])
    labels = get_label_set("basic6")
    manifest = pd.DataFrame({"path": [str(p) for p in paths], "label": [labels[i % 6] for i in range(n)],
                             "split": ["train"] * (n - n // 5) + ["val"] * (n // 5), "status": "aligned",
                             "shard": "chunk-00000", "shard_index": np.arange(n), "augmented_from": ""})
    manifest.to_parquet(prepared / MANIFEST, index=False)
    (prepared / SUMMARY).write_text(json.dumps({"label_names": list(labels), "cache_shape": [side, side, 1]}))
    return paths, prepared


def study_pipeline(paths: list[Path], batch: int) -> float:
    """PIL + ViTImageProcessor per sample (what the study did on the fly); returns samples/s."""
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(do_resize=True, size={"height": 224, "width": 224},
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        tensors = [processor(images=Image.open(p).convert("RGB"), return_tensors="pt")["pixel_values"]
                   for p in paths[start:start + batch]]
        torch.cat(tensors)
    return len(paths) / (time.perf_counter() - t0)


def ferwild_pipeline(prepared: Path, batch: int, device: torch.device, augment: bool) -> float:
    """Cache gather + device-side transform to 224 px; returns samples/s."""
    from ferwild.data.loader import BatchTransform, CachedFaceDataset, EpochBatchSampler, make_loader
    from ferwild.data.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    data = CachedFaceDataset(prepared, ds.manifest, ds.label_names)
    tf = BatchTransform(224, (0.5,) * 3, (0.5,) * 3, train=augment,
                        generator=torch.Generator(device=device).manual_seed(0) if augment else None)
    loader = make_loader(data, EpochBatchSampler(len(data), batch, shuffle=True), pin_memory=device.type == "cuda")
    for images, _ in loader:  # warm-up (memory maps, kernels)
        tf(images.to(device))
        break
    _sync(device)
    t0 = time.perf_counter()
    for images, _ in loader:
        out = tf(images.to(device, non_blocking=True))
    _sync(device)
    assert out.shape[1:] == (3, 224, 224)
    return len(data) / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(prepared: Path, model: str, image_size: int, batch: int, device: str, batches: int) -> float:
    """Images/s of ferwild's training loop (one epoch capped at ``batches`` after a warm-up epoch)."""
    from ferwild.config import RunConfig
    from ferwild.train import fit

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.load(None, [f"data.path={prepared}", f"model.name={model}", "model.pretrained=none",
                                    f"model.image_size={image_size}", f"train.batch_size={batch}",
                                    "train.epochs=2", f"train.max_train_batches={batches}", f"train.device={device}",
                                    "train.eval_batch_size=512"])
        summary = fit(cfg, Path(tmp) / "run", log=lambda m: None)
    return summary["history"][-1]["train_img_per_s"]


def bf16_peak(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Measured bf16 matmul TFLOP/s (the denominator of MFU)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def train_flops_per_image(model: torch.nn.Module, size: int = 224) -> float:
    """FLOPs of one forward + backward pass on one image, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def step_throughput(name: str, device: torch.device, batch: int, steps: int, compile_model: bool) -> tuple[float, float]:
    """Training steps (bf16 autocast, fused Adam) of a registry model on synthetic batches.

    Returns (images/s, FLOPs per image)."""
    from ferwild.models import create_model

    model = create_model(name, 6, pretrained="none").to(device)
    flops = train_flops_per_image(model)
    runner = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 6, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(runner(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(8 if compile_model else 3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0), flops


def pipeline_and_small_models(n: int, device: torch.device, quick: bool, results: dict) -> None:
    """Figures 1 and 2 of the module docstring."""
    with tempfile.TemporaryDirectory() as tmp:
        paths, prepared = make_dataset(Path(tmp), n)
        base = study_pipeline(paths[: min(n, 1000)], 64)
        ours = ferwild_pipeline(prepared, 256, device, augment=False)
        ours_aug = ferwild_pipeline(prepared, 256, device, augment=True)
        results["pipeline"] = {"study_samples_per_s": base, "ferwild_samples_per_s": ours,
                               "ferwild_augmented_samples_per_s": ours_aug}
        print(f"input pipeline to 224 px: study (PIL + ViTImageProcessor per sample) {base:8.0f} samples/s | "
              f"ferwild {ours:8.0f} samples/s ({ours / base:5.1f}x) | ferwild + augmentation {ours_aug:8.0f} "
              f"samples/s ({ours_aug / base:5.1f}x)", flush=True)

        small = [("cnn_small", 48, 256), ("resnet18", 112, 128), ("vit_tiny", 64, 256)]
        if device.type == "cuda":
            small.append(("vit_b16", 224, 256))
        for name, size, batch in small:
            ips = train_throughput(prepared, name, size, batch, str(device), batches=2 if quick else 5)
            results[f"train_{name}_{size}"] = ips
            print(f"training {name} @ {size}px, batch {batch}, ferwild loop: {ips:8.1f} img/s", flush=True)


def case_key(name: str, batch: int, compiled: bool) -> str:
    """A ViT step case as a JSON key (no spaces or dots): ``vit_b16_b256_eager``."""
    return f"{name.replace('timm:', 'timm_')}_b{batch}_{'compile' if compiled else 'eager'}"


def json_summary(results: dict, cases: dict, peak: float | None, device: torch.device, machine: str,
                 command: str) -> dict:
    """The ``--json`` line: ``results`` flattened, with the ratios the printout shows."""
    out: dict = {"device": str(device)}
    pipe = results.get("pipeline")
    if pipe:
        out.update({f"pipeline_{k}": v for k, v in pipe.items()})
        out["ratio_pipeline_ferwild_vs_study"] = pipe["ferwild_samples_per_s"] / pipe["study_samples_per_s"]
        out["ratio_pipeline_augmented_vs_study"] = (pipe["ferwild_augmented_samples_per_s"]
                                                    / pipe["study_samples_per_s"])
    out.update({k: v for k, v in results.items() if k.startswith("train_")})
    if peak is not None:
        out["bf16_peak_tflops"] = peak
    out.update(cases)
    out.update(machine=machine, command=command)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="fewer images/steps (smoke run)")
    parser.add_argument("--only-mfu", action="store_true", help="GPU: only the ViT-B/16 step/MFU figures")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    n = 400 if args.quick else args.images
    machine = (f"torch {torch.__version__}, device {device}"
               + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                  else f", {torch.get_num_threads()} threads"))
    print(machine)
    results: dict = {}
    cases: dict = {}
    peak = None
    if not args.only_mfu:
        pipeline_and_small_models(n, device, args.quick, results)
    if device.type == "cuda":
        peak = bf16_peak(device)
        print(f"bf16 matmul peak (8192^3, measured): {peak:6.0f} TFLOP/s", flush=True)
        plan = [("vit_b16", 256, False), ("vit_b16", 512, False), ("timm:vit_base_patch16_224", 256, False),
                ("vit_b16", 256, True), ("timm:vit_base_patch16_224", 256, True)]
        for name, batch, compiled in plan:
            tag = f"{name} batch {batch} {'torch.compile' if compiled else 'eager'}"
            try:
                ips, flops = step_throughput(name, device, batch, 10 if args.quick else 30, compiled)
            except Exception as exc:  # noqa: BLE001 - report, keep the other figures
                print(f"{tag}: failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                continue
            mfu = ips * flops / 1e12 / peak
            results[tag] = {"img_per_s": ips, "train_gflops_per_img": flops / 1e9, "mfu": mfu}
            cases[case_key(name, batch, compiled)] = {**results[tag], "tflops": ips * flops / 1e12}
            print(f"{tag:55s}: {ips:7.0f} img/s x {flops / 1e9:5.1f} GFLOP = {ips * flops / 1e12:5.0f} TFLOP/s, "
                  f"MFU {100 * mfu:4.1f}% of measured bf16 peak", flush=True)
    if args.json:
        command = "bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
        print(json.dumps(json_summary(results, cases, peak, device, machine, command)))
    else:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
