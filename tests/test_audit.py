"""The production audit end to end: the CLI contract, statistical honesty (a no-shift control,
a planted occlusion shift, new people from the same population, FER2013 vs real photos),
caching, unlabelled production, monitoring and rebalancing from the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from ferwild.audit.core import AuditConfig, covariate_shift, run_audit
from ferwild.audit.model_outputs import compute_outputs
from ferwild.config import RunConfig
from ferwild.data.prepare import PrepareConfig, prepare
from ferwild.data.synth import synth_dataset
from ferwild.train import fit

# the planted shift: the reference preset with occlusions (hand / text) in 60% of faces
OCCLUSION = {"occlusion": {"none": 0.4, "hand": 0.35, "text": 0.25}}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ferwild.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A run trained on the reference preset, and three production sets: the reference preset
    with planted occlusions, the same preset with new people (labelled), and the latter
    prepared unlabelled. Two images per person, so people (the test units) are many."""
    root = tmp_path_factory.mktemp("audit")
    sets = {"ref": ("reference", 900, 3, None), "occ": ("reference", 500, 4, OCCLUSION),
            "same": ("reference", 500, 5, None)}
    for name, (preset, n, seed, overrides) in sets.items():
        synth_dataset(preset, n, root / f"{name}_raw", seed=seed, size=48, label_set="basic6",
                      images_per_subject=2, overrides=overrides)
        prepare(root / f"{name}_raw" / "manifest.csv", root / name,
                PrepareConfig(size=32, workers=1, balance="max" if name == "ref" else None))
    prepare(root / "same_raw" / "manifest.csv", root / "same_unlabelled",
            PrepareConfig(size=32, workers=1, unlabelled=True))
    cfg = RunConfig.load(None, [f"data.path={root / 'ref'}", "model.name=cnn_small", "model.pretrained=none",
                                "model.image_size=32", "train.batch_size=32", "train.epochs=12", "optim.lr=3e-3"])
    fit(cfg, root / "run")
    return {"root": root, "run": root / "run", "ref": root / "ref", "occ": root / "occ", "same": root / "same",
            "same_unlabelled": root / "same_unlabelled"}


def test_audit_cli_writes_the_contract_and_finds_the_planted_occlusion(world):
    out_dir = world["root"] / "audit_occ"
    out = _cli("audit", "--run", str(world["run"]), "--reference", str(world["ref"]),
               "--production", str(world["occ"]), "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    audit = json.loads((out_dir / "audit.json").read_text())
    # the interface contract
    cov = audit["covariate_shift"]
    assert 0 < cov["mmd_p_value"] <= 1 and 0 <= cov["domain_auc"] <= 1
    assert len(audit["label_shift"]["estimated_priors"]) == 6
    assert abs(sum(audit["label_shift"]["estimated_priors"]) - 1) < 1e-6
    assert set(audit["alignment_failure"]) >= {"reference", "production"}
    for side in ("reference", "production"):
        assert 0 <= audit["performance"][side]["accuracy"] <= 1
        assert 0 <= audit["performance"][side]["macro_f1"] <= 1
    hand = audit["subgroups"]["attr_occlusion"]["hand"]
    assert hand["accuracy"]["ci_low"] <= hand["accuracy"]["value"] <= hand["accuracy"]["ci_high"]
    assert (out_dir / "report.html").stat().st_size > 10_000 and (out_dir / "report.md").exists()
    # the planted shift is flagged, and what the audit points at is occlusion:
    assert cov["detected"] and cov["p_value"] < 0.05
    assert cov["attribute_shift"][0]["attribute"] == "attr_occlusion"      # the metadata moved
    assert cov["shift_attribution"][0]["attribute"] == "attr_occlusion"    # and it moved the embeddings
    carrier = cov["shift_attribution"][0]
    assert carrier["highest_scoring_group"] in ("hand", "text")
    assert any("attr_occlusion" in line for line in audit["verdict"]["findings"])
    html = (out_dir / "report.html").read_text()
    assert "Covariate shift" in html and "Table 12" in html and "data:image/png;base64" in html
    scores = pd.read_parquet(out_dir / "production_scores.parquet")
    assert len(scores) == audit["rows"]["production"]
    assert scores["domain_score"].is_monotonic_decreasing
    # the synthetic photos came with landmarks: the deployed detector's view is measured on them
    det = audit["data_health"]["detector_check"]["production"]
    landmarked = pd.read_parquet(world["occ"] / "manifest.parquet").query(
        "align_method == 'landmarks' and status == 'aligned' and augmented_from == ''")
    assert det["landmark_rows"] == len(landmarked) and det["checked"] == min(200, len(landmarked))
    assert 0 <= det["no_face"] <= det["checked"] and det["ci"][0] <= det["rate"] <= det["ci"][1]
    assert "What the deployed detector sees" in html
    assert any("deployed detector" in line for line in audit["verdict"]["findings"]) == (det["rate"] > 0.05)


def test_no_shift_control_random_halves_are_flagged_at_most_at_the_nominal_rate(world):
    """Two disjoint random halves of one prepared set, R times: under no shift the number of
    rejections at alpha is Binomial(R, alpha). The bound is the smallest k with
    P(X > k) < 1%, so a correct test fails this with probability < 1% (and the draws are
    seeded, so the outcome is fixed)."""
    outputs = compute_outputs(world["run"], world["ref"], None)
    config = AuditConfig(n_permutations=200)
    repeats, alpha = 20, config.alpha
    bound = next(k for k in range(repeats + 1) if binom.sf(k, repeats, alpha) < 0.01)
    rng = np.random.default_rng(0)
    rejections, p_values = 0, []
    for _ in range(repeats):
        order = rng.permutation(len(outputs))
        a, b = order[: len(order) // 2], order[len(order) // 2:]
        result = covariate_shift(outputs.subset(a), outputs.subset(b), config)
        rejections += result["detected"]
        p_values.append(result["p_value"])
    assert rejections <= bound, (rejections, bound, p_values)
    # and the p-values are not piled up near 0 (their mean under H0 is about 0.5 or more,
    # the combined p being conservative)
    assert np.mean(p_values) > 0.3


def test_new_people_from_the_same_population_are_not_a_shift(world):
    """Different people drawn from the same preset: with people as the test units, this is
    not flagged (treating each photo as independent flagged it: the classifier learned faces)."""
    audit = run_audit(world["run"], world["ref"], world["same"], world["root"] / "audit_same",
                      AuditConfig(n_bootstrap=200))
    assert not audit["covariate_shift"]["detected"], audit["covariate_shift"]["p_value"]
    assert audit["covariate_shift"]["domain_classifier"]["clusters"][1] > 100  # people, not photos
    assert "No covariate shift detected" in audit["verdict"]["findings"][0]


def test_a_second_audit_reuses_the_cached_outputs(world):
    first = run_audit(world["run"], world["ref"], world["occ"], world["root"] / "audit_c1", AuditConfig(n_bootstrap=200))
    again = run_audit(world["run"], world["ref"], world["occ"], world["root"] / "audit_c2", AuditConfig(n_bootstrap=200))
    assert all(v for v in again["cached_outputs"].values() if v is not None)
    for key in ("mmd_p_value", "domain_auc", "p_value"):
        assert first["covariate_shift"][key] == again["covariate_shift"][key]
    assert first["performance"]["production"]["macro_f1"] == again["performance"]["production"]["macro_f1"]
    assert len(list((world["run"] / "audit-cache").glob("*.npz"))) >= 3


def test_an_interrupted_forward_pass_resumes_from_its_saved_chunks(world, tmp_path, monkeypatch):
    """The forward pass saves chunks as it goes; a rerun after a kill computes only the missing
    ones and gives the same arrays."""
    import ferwild.audit.model_outputs as outputs_mod

    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("audit-cache"))
    full = compute_outputs(run, world["occ"], None, chunk_rows=128)
    cache = run / "audit-cache"
    assert len(list(cache.glob("*.npz"))) == 1  # parts merged and removed
    # simulate a kill after two chunks: those parts exist, the merged file does not
    forwarded = []
    real = outputs_mod.forward_outputs

    def counting(model, prepared, rows, **kw):
        forwarded.append(len(rows))
        return real(model, prepared, rows, **kw)

    merged = next(cache.glob("*.npz"))
    key = merged.name.split(".")[0]
    for number, start in enumerate(range(0, 256, 128)):
        outputs_mod.save_npz_atomic(cache / f"{key}.part-{number:05d}-128.npz",
                                    features=full.features[start:start + 128], probs=full.probs[start:start + 128])
    merged.unlink()
    monkeypatch.setattr(outputs_mod, "forward_outputs", counting)
    again = compute_outputs(run, world["occ"], None, chunk_rows=128)
    assert sum(forwarded) == len(full) - 256 and not again.cached
    np.testing.assert_allclose(again.features, full.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.probs, full.probs, rtol=1e-5, atol=1e-6)
    assert compute_outputs(run, world["occ"], None, chunk_rows=128).cached


def test_unlabelled_production_gets_the_label_free_audit(world):
    audit = run_audit(world["run"], world["ref"], world["same_unlabelled"], world["root"] / "audit_unl",
                      AuditConfig(n_bootstrap=200))
    assert audit["performance"] is None and audit["rows"]["production_labelled"] is False
    assert audit["subgroup_gaps"]["side"] == "reference test"
    assert "true_priors" not in audit["label_shift"]
    assert abs(sum(audit["label_shift"]["estimated_priors"]) - 1) < 1e-6
    # the same faces as the labelled set: the same embeddings, so the same shift verdict
    labelled = json.loads((world["root"] / "audit_same" / "audit.json").read_text()) \
        if (world["root"] / "audit_same" / "audit.json").exists() else None
    if labelled:
        assert audit["covariate_shift"]["mmd_statistic"] == pytest.approx(labelled["covariate_shift"]["mmd_statistic"])


def test_monitor_flags_the_shifted_batch_and_keeps_a_history(world, tmp_path):
    history = tmp_path / "monitor"
    common = ["--run", str(world["run"]), "--reference", str(world["ref"]), "--history", str(history),
              "--alpha", "0.05", "--auc-threshold", "0.55"]
    out = _cli("monitor", str(world["same_unlabelled"]), str(world["occ"]), *common)
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(history / "history.csv")
    assert frame["batch"].tolist() == [str(world["same_unlabelled"]), str(world["occ"])]
    assert frame["flagged"].tolist() == [False, True]
    assert frame["retrain"].tolist() == [False, True]
    assert "retrain advised" in out.stdout and (history / "history.png").exists()
    # A raw image folder is prepared on the fly (unlabelled). Patience 2: two flagged batches
    # in a row mean retrain, and --fail-on-retrain turns that into exit code 3 for cron jobs.
    raw_occluded = world["root"] / "occ_raw" / "images"
    out = _cli("monitor", str(raw_occluded), *common, "--patience", "2", "--fail-on-retrain")
    assert out.returncode == 3, out.stdout + out.stderr
    frame = pd.read_csv(history / "history.csv")
    assert len(frame) == 3 and frame["batch"].iloc[-1] == str(raw_occluded)
    assert frame["flagged"].iloc[-1] and frame["retrain"].iloc[-1]
    assert len(list((history / "batches").glob("*/manifest.parquet"))) == 1
    # rescoring a batch replaces its row (and makes it the latest); an unshifted batch resets the run
    out = _cli("monitor", str(world["same_unlabelled"]), *common, "--patience", "2", "--fail-on-retrain")
    assert out.returncode == 0, out.stdout + out.stderr
    frame = pd.read_csv(history / "history.csv")
    assert frame["batch"].tolist() == [str(world["occ"]), str(raw_occluded), str(world["same_unlabelled"])]
    assert frame["flagged"].tolist() == [True, True, False] and not frame["retrain"].iloc[-1]


def test_rebalance_cli_builds_a_trainable_dataset(world, tmp_path):
    out_dir = tmp_path / "balanced"
    out = _cli("rebalance", "--data", str(world["ref"]), "--attributes", "gender", "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    manifest = pd.read_parquet(out_dir / "manifest.parquet")
    train = manifest[manifest["split"] == "train"]
    cells = train.groupby(["attr_gender", "label"]).size()
    summary = json.loads((out_dir / "summary.json").read_text())["rebalance"]
    reached = [c for c in summary["cells"] if c["reached_target"]]
    assert reached and all(cells[(c["attr_gender"], c["label"])] == c["after"] for c in summary["cells"])
    # every cell that reached the target holds the same number of rows
    assert len({c["after"] for c in reached}) == 1


def test_audit_errors_are_one_line(world, tmp_path):
    out = _cli("audit", "--run", str(world["run"]), "--reference", str(world["ref"]),
               "--production", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "not a prepared dataset" in out.stderr and "Traceback" not in out.stderr
    out = _cli("audit", "--run", str(world["run"]), "--reference", str(world["ref"]),
               "--production", str(world["occ"]), "--out", str(tmp_path / "o"), "--attributes", "shoe_size")
    assert out.returncode == 2 and "attr_shoe_size" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_real_shift_fer2013_vs_real_photos_is_flagged(shared_data, tmp_path):
    """FER2013 (48x48 grey, pre-aligned) against real photographs aligned by MTCNN."""
    root = shared_data / "fer2013"
    rows = []
    for split_dir, split, per_class in (("train", "train", 60), ("test", "val", 25), ("test", "test", 25)):
        prefix = {"val": "PublicTest_", "test": "PrivateTest_"}.get(split, "")
        for label_dir in sorted((root / split_dir).iterdir()):
            files = sorted(p for p in label_dir.iterdir() if p.name.startswith(prefix))[:per_class]
            rows += [{"path": str(p), "label": label_dir.name, "split": split} for p in files]
    pd.DataFrame(rows).to_csv(tmp_path / "fer.csv", index=False)
    prepare(tmp_path / "fer.csv", tmp_path / "fer", PrepareConfig(workers=1))
    prepare(shared_data / "face_photos", tmp_path / "photos", PrepareConfig(size=64, workers=1, unlabelled=True))
    cfg = RunConfig.load(None, [f"data.path={tmp_path / 'fer'}", "model.name=cnn_small", "model.pretrained=none",
                                "model.image_size=48", "train.batch_size=64", "train.epochs=2"])
    fit(cfg, tmp_path / "run")
    audit = run_audit(tmp_path / "run", tmp_path / "fer", tmp_path / "photos", tmp_path / "audit",
                      AuditConfig(n_bootstrap=200))
    cov = audit["covariate_shift"]
    assert cov["detected"] and cov["mmd_p_value"] < 0.05 and cov["domain_auc"] > 0.8
    # FER2013 is pre-aligned (nothing attempted); 2 of the 34 photos have no detectable face
    assert audit["alignment_failure"]["reference"] is None
    assert audit["alignment_failure"]["production"] == pytest.approx(2 / 34, abs=1e-6)
    assert audit["performance"] is None and (tmp_path / "audit" / "report.html").exists()
    stats = {s["statistic"]: s for s in audit["data_health"]["image_statistics"]}
    assert "sharpness" in stats
