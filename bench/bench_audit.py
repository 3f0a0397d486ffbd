"""Benchmark: audit time for 10k vs 10k samples, each figure against a baseline from the same run.

Builds (once, kept under --work and reused by later runs) a synthetic reference set prepared
with 20/40/40 train/val/test, so that its held-out val+test rows (what the audit's shift tests
compare with production) number about --n, a production set of --n faces, and a tiny
cnn_small run trained on the reference. Then measures:

1. ``run_audit`` cold (RUN/audit-cache deleted: one forward pass per dataset) vs warm (the
   embeddings read back from the cache): wall seconds of each, the ratio cold / warm, and the
   warm audit's ``timings_s`` breakdown.
2. The MMD permutation test on the real PCA-reduced embeddings (pooled ``reduce_dims`` as in
   ``covariate_shift``, each side subsampled to --max-samples rows): vectorised ``mmd_test``
   vs the Python-loop ``permutation_mmd_naive``, same rows, same seed (hence the same
   permutations), --perms permutations; both times, the ratio, and both p-values (must agree),
   also on two random halves of the held-out reference (no shift: a mid-range p-value).
3. The domain classifier test as the audit runs it (every row, subject-grouped folds),
   against the warm audit's total (its share).

Usage: python bench/bench_audit.py [--n 10000] [--work /tmp/ferwild_bench_audit] [--perms 200] [--json]
``--n 1000`` is a quick smoke run. A rerun with the same --n and --work skips synth, prepare
and training (their time is printed when they run). With ``--json`` the last line is one JSON
object: ``audit_cold_s``, ``audit_warm_s``, ``ratio_cold_vs_warm``, both audits' ``timings_s``,
``mmd_test_s``, ``mmd_naive_s``, ``ratio_naive_vs_mmd_test``, ``mmd_p_value_fast``,
``mmd_p_value_naive``, ``mmd_p_values_agree`` (and the same with ``null_`` for the half vs half
check), ``domain_s``, ``domain_auc``, ``domain_share_of_warm_audit`` (0-1), the row counts,
``built_s`` (the build stages run this time), ``command`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ferwild.audit.core import CLASSIFIER_MAX_DIM, AuditConfig, cluster_ids, run_audit
from ferwild.audit.model_outputs import CACHE_DIR, ModelOutputs, compute_outputs
from ferwild.audit.stats import domain_classifier_test, mmd_test, permutation_mmd_naive, reduce_dims

# Reference split: train must be > 0; val + test = 80% of the rows are the audit's held-out side.
REF_SPLITS = (0.2, 0.4, 0.4)
SIZE = 32


def _stage(marker: Path, name: str, build, built: dict[str, float]) -> None:
    """Run ``build()`` unless ``marker`` says an earlier run finished it; record its time."""
    if marker.exists():
        print(f"  {name}: reused ({marker.parent})", flush=True)
        return
    t0 = time.perf_counter()
    build()
    built[name] = time.perf_counter() - t0
    marker.write_text(json.dumps({"seconds": built[name]}))
    print(f"  {name}: built in {built[name]:.1f}s", flush=True)


def build(root: Path, n: int, workers: int) -> tuple[Path, Path, Path, dict[str, float]]:
    """Synthetic reference / production sets, prepared, and a tiny trained run (reused)."""
    from ferwild.config import RunConfig
    from ferwild.data.prepare import PrepareConfig, prepare
    from ferwild.data.synth import synth_dataset
    from ferwild.train import fit

    root.mkdir(parents=True, exist_ok=True)
    n_ref = math.ceil(n / (REF_SPLITS[1] + REF_SPLITS[2]))
    raw_ref, raw_prod = root / "raw-reference", root / "raw-production"
    prep_ref, prep_prod, run = root / "prep-reference", root / "prep-production", root / "run"
    built: dict[str, float] = {}

    def fresh(path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)  # a half-built folder from an interrupted run
        return path

    print(f"build under {root} (reference {n_ref} faces, production {n}):", flush=True)
    _stage(root / ".synth-reference.done", f"synth reference ({n_ref})",
           lambda: synth_dataset("reference", n_ref, fresh(raw_ref), seed=0, size=48, label_set="basic6"), built)
    _stage(root / ".synth-production.done", f"synth production ({n})",
           lambda: synth_dataset("production", n, fresh(raw_prod), seed=1, size=48, label_set="basic6"), built)
    _stage(root / ".prepare-reference.done", "prepare reference",
           lambda: prepare(raw_ref / "manifest.csv", fresh(prep_ref),
                           PrepareConfig(size=SIZE, split_ratios=REF_SPLITS, balance="none", workers=workers)),
           built)
    _stage(root / ".prepare-production.done", "prepare production",
           lambda: prepare(raw_prod / "manifest.csv", fresh(prep_prod),
                           PrepareConfig(size=SIZE, balance="none", workers=workers)), built)

    def train() -> None:
        cfg = RunConfig.load(None, [f"data.path={prep_ref}", "model.name=cnn_small", "model.pretrained=none",
                                    f"model.image_size={SIZE}", "train.batch_size=64", "train.epochs=1",
                                    "train.max_train_batches=20"])
        fit(cfg, fresh(run), log=lambda m: None)

    _stage(root / ".train.done", "train (cnn_small, 20 batches)", train, built)
    if built:
        print(f"  building took {sum(built.values()):.1f}s", flush=True)
    return prep_ref, prep_prod, run, built


def timed_audit(run: Path, ref: Path, prod: Path, out: Path, config: AuditConfig) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    audit = run_audit(run, ref, prod, out, config)
    return time.perf_counter() - t0, audit


def _mmd_pair(x: np.ndarray, y: np.ndarray, perms: int, seed: int):
    """Time the vectorised ``mmd_test`` and the naive loop on the same rows and permutations:
    ``((fast, seconds), (naive, seconds), p-values agree)``."""
    t0 = time.perf_counter()
    fast = mmd_test(x, y, n_permutations=perms, max_samples=max(len(x), len(y)), seed=seed)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = permutation_mmd_naive(x, y, n_permutations=perms, seed=seed)
    naive_s = time.perf_counter() - t0
    return (fast, fast_s), (naive, naive_s), fast["p_value"] == naive["p_value"]


def cold_and_warm(run: Path, ref: Path, prod: Path, root: Path, config: AuditConfig, summary: list) -> dict:
    """Figure 1: the audit without its cache, then with it."""
    shutil.rmtree(run / CACHE_DIR, ignore_errors=True)
    cold_s, cold = timed_audit(run, ref, prod, root / "audit-cold", config)
    warm_s, warm = timed_audit(run, ref, prod, root / "audit-warm", config)
    rows = warm["rows"]
    print(f"\n1. audit ({rows['shift_reference']} held-out reference rows vs {rows['production']} production "
          f"rows; reference test {rows['reference']}, calibration {rows['calibration']}; "
          f"{config.n_permutations} MMD permutations)")
    print(f"   cold (no cache) {cold_s:7.2f}s  cached: {cold['cached_outputs']}")
    print(f"   warm (cached)   {warm_s:7.2f}s  cached: {warm['cached_outputs']}")
    print(f"   ratio cold / warm {cold_s / warm_s:5.2f}x")
    if any(v is False for v in warm["cached_outputs"].values()) or any(cold["cached_outputs"].values()):
        print("   WARNING: cache state not as expected (cold should read nothing, warm everything)")
    print(f"   {'timings_s':<22}{'cold':>9}{'warm':>9}")
    for key in warm["timings_s"]:
        print(f"   {key:<22}{cold['timings_s'].get(key, float('nan')):9.3f}{warm['timings_s'][key]:9.3f}")
    summary.append(("audit warm (s) vs cold", f"{warm_s:.2f}", f"{cold_s:.2f}", f"{cold_s / warm_s:.2f}x"))
    return {"rows_shift_reference": int(rows["shift_reference"]), "rows_production": int(rows["production"]),
            "rows_reference_test": int(rows["reference"]), "rows_calibration": int(rows["calibration"]),
            "audit_permutations": config.n_permutations, "audit_cold_s": cold_s, "audit_warm_s": warm_s,
            "ratio_cold_vs_warm": cold_s / warm_s,
            "audit_cold_timings_s": {k: float(v) for k, v in cold["timings_s"].items()},
            "audit_warm_timings_s": {k: float(v) for k, v in warm["timings_s"].items()}}


def mmd_comparison(x: np.ndarray, y: np.ndarray, args: argparse.Namespace, config: AuditConfig,
                   summary: list) -> dict:
    """Figure 2: vectorised ``mmd_test`` vs the naive loop, on the shift and on two reference halves."""
    rng = np.random.default_rng(config.seed)
    pick = [np.sort(rng.choice(len(a), size=min(args.max_samples, len(a)), replace=False)) for a in (x, y)]
    xs, ys = x[pick[0]], y[pick[1]]
    (fast, fast_s), (naive, naive_s), agree = _mmd_pair(xs, ys, args.perms, config.seed)
    print(f"\n2. MMD permutation test ({len(xs)} + {len(ys)} rows of {x.shape[1]}-dim PCA embeddings, "
          f"{args.perms} permutations, seed {config.seed})")
    print(f"   naive loop {naive_s:7.2f}s  p = {naive['p_value']:.6f}  MMD^2 = {naive['statistic']:.8g}")
    print(f"   mmd_test   {fast_s:7.2f}s  p = {fast['p_value']:.6f}  MMD^2 = {fast['statistic']:.8g}")
    print(f"   ratio naive / mmd_test {naive_s / fast_s:5.2f}x | p-values {'agree' if agree else 'DIFFER'} | "
          f"bandwidths {fast['bandwidth']:.6g} / {naive['bandwidth']:.6g}")
    summary.append((f"mmd_test {args.perms} perms (s) vs naive loop", f"{fast_s:.2f}", f"{naive_s:.2f}",
                    f"{naive_s / fast_s:.2f}x"))
    summary.append(("  p-value mmd_test vs naive", f"{fast['p_value']:.6f}", f"{naive['p_value']:.6f}",
                    "agree" if agree else "DIFFER"))
    # A real shift puts both p-values at their floor 1 / (1 + perms), where agreement says little:
    # repeat on two random halves of the held-out reference (no shift), where p is mid-range.
    half = rng.permutation(len(x))
    xa, xb = x[np.sort(half[: len(x) // 2])], x[np.sort(half[len(x) // 2:])]
    xa, xb = (a[np.sort(rng.choice(len(a), size=min(args.max_samples, len(a)), replace=False))] for a in (xa, xb))
    (fast0, fast0_s), (naive0, naive0_s), agree0 = _mmd_pair(xa, xb, args.perms, config.seed)
    print(f"   null check, reference half vs half ({len(xa)} + {len(xb)} rows): naive {naive0_s:.2f}s "
          f"p = {naive0['p_value']:.6f} | mmd_test {fast0_s:.2f}s p = {fast0['p_value']:.6f} | "
          f"ratio {naive0_s / fast0_s:5.2f}x | p-values {'agree' if agree0 else 'DIFFER'}")
    summary.append(("  null p-value mmd_test vs naive", f"{fast0['p_value']:.6f}", f"{naive0['p_value']:.6f}",
                    "agree" if agree0 else "DIFFER"))
    return {"perms": args.perms, "mmd_rows_x": len(xs), "mmd_rows_y": len(ys), "mmd_dim": int(x.shape[1]),
            "mmd_test_s": fast_s, "mmd_naive_s": naive_s, "ratio_naive_vs_mmd_test": naive_s / fast_s,
            "mmd_p_value_fast": float(fast["p_value"]), "mmd_p_value_naive": float(naive["p_value"]),
            "mmd_p_values_agree": bool(agree), "mmd_statistic": float(fast["statistic"]),
            "null_rows_x": len(xa), "null_rows_y": len(xb), "null_mmd_test_s": fast0_s, "null_mmd_naive_s": naive0_s,
            "null_ratio_naive_vs_mmd_test": naive0_s / fast0_s, "null_p_value_fast": float(fast0["p_value"]),
            "null_p_value_naive": float(naive0["p_value"]), "null_p_values_agree": bool(agree0)}


def domain_timing(ref_out: ModelOutputs, prod_out: ModelOutputs, config: AuditConfig, warm_s: float,
                  summary: list) -> dict:
    """Figure 3: the domain classifier test as ``covariate_shift`` runs it, against the warm audit."""
    gx, gy = cluster_ids(ref_out.rows), cluster_ids(prod_out.rows)
    groups = {} if gx is None and gy is None else {"groups_x": gx, "groups_y": gy}
    # the audit's classifier sees all standardised dimensions (PCA only above CLASSIFIER_MAX_DIM)
    _, xf, yf = reduce_dims(np.vstack([ref_out.features, prod_out.features]), ref_out.features,
                            prod_out.features, dim=min(CLASSIFIER_MAX_DIM, ref_out.features.shape[1]),
                            seed=config.seed)
    t0 = time.perf_counter()
    dom = domain_classifier_test(xf, yf, seed=config.seed, **groups)
    dom_s = time.perf_counter() - t0
    print(f"\n3. domain classifier ({len(xf)} vs {len(yf)} rows, {dom['folds']} folds"
          f"{', subject-grouped' if groups else ''}): {dom_s:.2f}s  AUC = {dom['auc']:.4f}  "
          f"p = {dom['p_value']:.3g} | {dom_s / warm_s:.1%} of the warm audit")
    summary.append(("domain classifier (s) vs warm audit", f"{dom_s:.2f}", f"{warm_s:.2f}",
                    f"{dom_s / warm_s:.3f}"))
    return {"domain_s": dom_s, "domain_auc": float(dom["auc"]), "domain_p_value": float(dom["p_value"]),
            "domain_folds": int(dom["folds"]), "domain_subject_grouped": bool(groups),
            "domain_share_of_warm_audit": dom_s / warm_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000,
                        help="samples per side: production faces, and reference val+test rows (about)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferwild_bench_audit"),
                        help="data and run are built under WORK/n<N> and reused by later runs")
    parser.add_argument("--perms", type=int, default=200, help="permutations of the MMD comparison")
    parser.add_argument("--max-samples", type=int, default=2000,
                        help="rows per side of the MMD comparison (mmd_test's default)")
    parser.add_argument("--audit-perms", type=int, default=AuditConfig.n_permutations,
                        help="the audits' MMD permutations (AuditConfig default)")
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (0 = automatic)")
    parser.add_argument("--no-domain", action="store_true", help="skip the domain classifier timing")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.n < 50:
        sys.exit("--n must be >= 50")
    threads = __import__('torch').get_num_threads()
    print(f"cores: {os.cpu_count()} | torch threads: {threads} | n = {args.n}", flush=True)
    ref, prod, run, built = build(args.work / f"n{args.n}", args.n, args.workers)
    root = args.work / f"n{args.n}"
    summary: list[tuple[str, str, str, str]] = []
    config = AuditConfig(seed=0, n_permutations=args.audit_perms, device="cpu")
    out = {"n": args.n, "built_s": built, **cold_and_warm(run, ref, prod, root, config, summary)}

    # the audit's held-out rows: its cached val and test outputs, joined as run_audit joins them
    ref_out = ModelOutputs.concat([compute_outputs(run, ref, split, device="cpu")
                                   for split in config.shift_split.split("+")])
    prod_out = compute_outputs(run, prod, config.production_split, device="cpu")
    assert ref_out.cached and prod_out.cached, "embeddings should come from the audit's cache"
    _, x, y = reduce_dims(np.vstack([ref_out.features, prod_out.features]), ref_out.features,
                          prod_out.features, dim=config.pca_dim, seed=config.seed)
    out.update(mmd_comparison(x, y, args, config, summary))
    if not args.no_domain:
        out.update(domain_timing(ref_out, prod_out, config, out["audit_warm_s"], summary))

    print(f"\nsummary (n = {args.n}, {os.cpu_count()} cores)")
    print(f"  {'figure':<40}{'value':>12}{'baseline':>12}{'ratio':>10}")
    for name, value, base, ratio in summary:
        print(f"  {name:<40}{value:>12}{base:>12}{ratio:>10}")
    if args.json:
        out.update(machine=f"{os.cpu_count()} cores, torch threads {threads}",
                   command="bench/bench_audit.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
