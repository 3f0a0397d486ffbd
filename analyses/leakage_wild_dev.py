"""Identity leakage on real photos: the study's split (by class only) against a split by person.

The study split its faces 70/20/10 stratified by class, so photos of one person landed in
train and test. This recipe trains the same model with the same budget on ``wild_dev`` (real
photos, 1,719 people, a ``subject`` column) split both ways, with the study's ratios, over
several split seeds, and compares the test figures:

* the gap (random split minus split by person) in accuracy and macro-F1, with a 95% interval
  from a bootstrap over test people (photos of one person resampled together) averaged over
  the split seeds;
* inside the random split's test set, photos of people the model trained on against photos of
  people it never saw (same model, same test set).

Reproduce (about 20 minutes on 2 CPU cores; resumable, rerun the same command)::

    ferwild prepare ../shared/data/wild_dev/labels.csv --out model_work/wild_dev_like_ferplus \\
        --like model_work/ferplus_basic7 --balance none --fallback drop --split-ratios 0.5,0.25,0.25
    python analyses/leakage_wild_dev.py --data model_work/wild_dev_like_ferplus --work model_work/leakage_wild_dev

The splits are cut with ``ferwild resplit`` (no second face detection). The model is fer_vgg
fine-tuned from the shipped FER2013 model's weights (FER2013 holds none of these people),
Adam 1e-4, 3 epochs (the study's), the F1-drop rule, square-root class weights.
Writes ``WORK/leakage.json``, ``WORK/leakage.md`` and ``WORK/leakage.png``; docs/real-study.md
states its figures from a copy of leakage.json kept as docs/bench/leakage_wild_dev.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ferwild.config import RunConfig
from ferwild.data.resplit import resplit
from ferwild.evaluate import evaluate_run
from ferwild.files import save_json_atomic, save_text_atomic
from ferwild.train import fit

REPO = Path(__file__).resolve().parents[1]

KINDS = {"random": "none", "by_person": "auto"}   # name -> resplit's group_by
PRETRAINED = REPO / "src/ferwild/weights/fer2013_vgg/checkpoints/final/model.safetensors"


def train_config(split_dir: Path, seed: int, epochs: int) -> RunConfig:
    """The one model and budget both splits get."""
    return RunConfig.load(None, [
        f"data.path={split_dir}", "data.augment=true",
        "model.name=fer_vgg", f"model.pretrained={PRETRAINED}", "model.image_size=48",
        "optim.optimizer=adam", "optim.lr=1e-4", "optim.scheduler=f1_drop", "optim.class_weights=sqrt",
        f"train.epochs={epochs}", "train.batch_size=32", "train.eval_batch_size=256", f"train.seed={seed}",
        "train.channels_last=true",
    ])


def run_one(data: Path, work: Path, kind: str, seed: int, ratios: tuple[float, float, float], epochs: int,
            log=print) -> pd.DataFrame:
    """Split, train, evaluate on test (each step skipped when done); the test predictions."""
    split_dir = work / "splits" / f"{kind}-s{seed}"
    if not (split_dir / "summary.json").exists():
        resplit(data, split_dir, group_by=KINDS[kind], ratios=ratios, seed=seed, overwrite=True)
    run_dir = work / "runs" / f"{kind}-s{seed}"
    eval_dir = run_dir / "eval-test"
    if not (eval_dir / "predictions.parquet").exists():
        config = train_config(split_dir, seed, epochs)
        resume = (run_dir / "checkpoints" / "LAST").exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "a") as f:
            fit(config, run_dir, resume=resume, log=lambda m: (f.write(m + "\n"), f.flush()))
        evaluate_run(run_dir, split_dir, "test", eval_dir)
        log(f"{kind} seed {seed}: done")
    predictions = pd.read_parquet(eval_dir / "predictions.parquet")
    manifest = pd.read_parquet(split_dir / "manifest.parquet")
    train_people = set(manifest.loc[manifest["split"] == "train", "subject"].astype(str))
    predictions["person_in_train"] = predictions["subject"].astype(str).isin(train_people)
    predictions["kind"], predictions["seed"] = kind, seed
    return predictions


def _scores(frame: pd.DataFrame) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    y, p = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
    return float((y == p).mean()), float(f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0))


def _cluster_resample(frame: pd.DataFrame, rng: np.random.Generator,
                      groups: list[np.ndarray] | None = None) -> pd.DataFrame:
    """Resample people with replacement (each person's photos together); ``groups`` are the
    row positions per person, computed once by the caller when resampling many times."""
    groups = groups if groups is not None else list(frame.groupby("subject").indices.values())
    pick = rng.integers(0, len(groups), len(groups))
    return frame.iloc[np.concatenate([groups[k] for k in pick])]


def analyse(runs: list[pd.DataFrame], n_boot: int = 2000, seed: int = 0,
            runs_history: dict[tuple[str, int], pd.DataFrame] | None = None) -> dict:
    """Point figures per condition and seed, the random-minus-by-person gap and the seen/unseen
    contrast, each with a 95% interval (people resampled, averaged over split seeds);
    ``runs_history``: each run's metrics.csv by (split, seed), for its last epoch's train and
    validation accuracy."""
    rng = np.random.default_rng(seed)
    by = {(r["kind"].iloc[0], int(r["seed"].iloc[0])): r for r in runs}
    seeds = sorted({s for _, s in by})
    rows = []
    for (kind, s), frame in sorted(by.items()):
        acc, f1 = _scores(frame)
        rows.append({"split": kind, "seed": s, "test_photos": len(frame), "test_people": frame["subject"].nunique(),
                     "test_photos_of_people_in_train": int(frame["person_in_train"].sum()),
                     "accuracy": acc, "macro_f1": f1})

    def gap_stats(pairs: list[tuple[pd.DataFrame, pd.DataFrame]]) -> dict:
        point = np.mean([np.subtract(_scores(a), _scores(b)) for a, b in pairs], axis=0)
        people = [(list(a.groupby("subject").indices.values()), list(b.groupby("subject").indices.values()))
                  for a, b in pairs]
        boots = np.empty((n_boot, 2))
        for i in range(n_boot):
            boots[i] = np.mean([np.subtract(_scores(_cluster_resample(a, rng, ga)), _scores(_cluster_resample(b, rng, gb)))
                                for (a, b), (ga, gb) in zip(pairs, people)], axis=0)
        lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
        return {"accuracy": float(point[0]), "accuracy_ci95": [float(lo[0]), float(hi[0])],
                "macro_f1": float(point[1]), "macro_f1_ci95": [float(lo[1]), float(hi[1])]}

    for row in rows:  # does the model memorise at this budget? its last epoch, train against val
        history = runs_history.get((row["split"], row["seed"])) if runs_history else None
        if history is not None:
            row["last_epoch_train_accuracy"] = float(history["train_acc"].iloc[-1])
            row["last_epoch_val_accuracy"] = float(history["val_acc"].iloc[-1])
    gap = gap_stats([(by[("random", s)], by[("by_person", s)]) for s in seeds
                     if ("random", s) in by and ("by_person", s) in by])
    seen_pairs = []
    for s in seeds:
        frame = by.get(("random", s))
        if frame is not None and frame["person_in_train"].any() and (~frame["person_in_train"]).any():
            seen_pairs.append((frame[frame["person_in_train"]], frame[~frame["person_in_train"]]))
    seen = gap_stats(seen_pairs) if seen_pairs else None
    table = pd.DataFrame(rows)
    means = table.groupby("split")[["accuracy", "macro_f1"]].agg(["mean", "std"])
    in_train = table.groupby("split")["test_photos_of_people_in_train"]
    return {"per_run": rows, "seeds": seeds,
            "mean": {k: {m: {"mean": float(means.loc[k, (m, "mean")]), "std": float(means.loc[k, (m, "std")])}
                         for m in ("accuracy", "macro_f1")} for k in means.index},
            "test_photos_of_people_in_train": {k: [int(in_train.min()[k]), int(in_train.max()[k])]
                                               for k in in_train.min().index},
            "gap_random_minus_by_person": gap, "seen_minus_unseen_in_random_test": seen, "bootstrap": n_boot}


def same_label_shares(manifest: pd.DataFrame) -> dict:
    """How much a person predicts a label: among the photos with a face, the share of pairs of one
    person's photos that share their label (over all such pairs, and averaged over the people
    with two photos or more, each person counting once), against two photos drawn at random
    (the sum of squared class shares)."""
    rows = manifest[manifest["split"].astype(str) != ""]
    same = total = 0
    per_person = []
    for _, labels in rows.groupby(rows["subject"].astype(str))["label"]:
        if len(labels) < 2:
            continue
        counts = labels.value_counts().to_numpy()
        pairs = len(labels) * (len(labels) - 1) // 2
        same += int((counts * (counts - 1) // 2).sum())
        total += pairs
        per_person.append(float((counts * (counts - 1) // 2).sum() / pairs))
    shares = rows["label"].value_counts(normalize=True).to_numpy()
    return {"photos": int(len(rows)), "people_with_two_or_more": len(per_person), "same_person_pairs": int(total),
            "same_person_same_label_over_pairs": same / total if total else None,
            "same_person_same_label_per_person": float(np.mean(per_person)) if per_person else None,
            "random_pair_same_label": float((shares ** 2).sum())}


def write_outputs(result: dict, work: Path) -> None:
    """leakage.json, a markdown table and a small figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    save_json_atomic(work / "leakage.json", result)
    lines = ["| split | seed | test photos | people | photos of people in train | accuracy | macro-F1 |",
             "|---|---|---|---|---|---|---|"]
    for r in result["per_run"]:
        lines.append(f"| {r['split']} | {r['seed']} | {r['test_photos']} | {r['test_people']} | "
                     f"{r['test_photos_of_people_in_train']} | {100 * r['accuracy']:.1f}% | "
                     f"{100 * r['macro_f1']:.1f}% |")
    g = result["gap_random_minus_by_person"]
    lines += ["", f"gap (random - by person), accuracy {100 * g['accuracy']:+.1f} points "
                  f"[{100 * g['accuracy_ci95'][0]:+.1f}, {100 * g['accuracy_ci95'][1]:+.1f}], macro-F1 "
                  f"{100 * g['macro_f1']:+.1f} [{100 * g['macro_f1_ci95'][0]:+.1f}, "
                  f"{100 * g['macro_f1_ci95'][1]:+.1f}]"]
    s = result["seen_minus_unseen_in_random_test"]
    if s:
        lines.append(f"random split's test, people in train minus people not: accuracy {100 * s['accuracy']:+.1f} "
                     f"[{100 * s['accuracy_ci95'][0]:+.1f}, {100 * s['accuracy_ci95'][1]:+.1f}]")
    save_text_atomic(work / "leakage.md", "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(5.2, 2.8), dpi=110)
    table = pd.DataFrame(result["per_run"])
    for x, (kind, colour) in enumerate((("random", "#d95f02"), ("by_person", "#1b9e77"))):
        values = 100 * table.loc[table["split"] == kind, "accuracy"].to_numpy()
        ax.scatter(np.full(len(values), x) + np.linspace(-0.08, 0.08, len(values)), values, color=colour, zorder=3)
        ax.bar(x, values.mean(), color=colour, alpha=0.35, width=0.6)
    ax.set_xticks([0, 1], ["random split\n(the study's)", "split by person\n(ferwild's)"])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, 100 * table["accuracy"].min() - 10), min(100, 100 * table["accuracy"].max() + 5))
    ax.set_title(f"wild_dev, same model and budget; gap {100 * g['accuracy']:+.1f} "
                 f"[{100 * g['accuracy_ci95'][0]:+.1f}, {100 * g['accuracy_ci95'][1]:+.1f}] points", fontsize=9)
    fig.tight_layout()
    fig.savefig(work / "leakage.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    from ferwild.data.split import parse_ratios

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "model_work/wild_dev_like_ferplus")
    ap.add_argument("--work", type=Path, default=REPO / "model_work/leakage_wild_dev")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split-ratios", default="0.7,0.2,0.1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args(argv)
    ratios = parse_ratios(args.split_ratios)
    runs = [run_one(args.data, args.work, kind, seed, ratios, args.epochs)
            for seed in args.seeds for kind in KINDS]
    history = {(kind, seed): pd.read_csv(args.work / "runs" / f"{kind}-s{seed}" / "metrics.csv")
               for seed in args.seeds for kind in KINDS}
    result = analyse(runs, n_boot=args.bootstrap, runs_history=history)
    result["identity_and_label"] = same_label_shares(pd.read_parquet(args.data / "manifest.parquet"))
    result["command"] = "python analyses/leakage_wild_dev.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_outputs(result, args.work)
    print((args.work / "leakage.md").read_text())


if __name__ == "__main__":
    main()
