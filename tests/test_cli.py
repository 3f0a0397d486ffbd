"""The console commands as a user runs them."""

import json
import subprocess
import sys
import time

import pandas as pd


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ferwild.cli", *args], capture_output=True, text=True)


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("prepare", "synth", "demo"):
        assert command in out.stdout
    # heavy libraries are imported inside commands, not at start-up
    assert time.perf_counter() - t0 < 10


def test_command_help_reads_like_a_classic_cli():
    from typer.testing import CliRunner

    from ferwild.cli import app

    runner = CliRunner()
    for command in ("predict", "train", "prepare", "audit", "serve", "export", "study", "demo"):
        out = runner.invoke(app, [command, "--help"], prog_name="ferwild", terminal_width=80)
        assert out.exit_code == 0, out.output
        assert "<bool>" not in out.output and "{" not in out.output.splitlines()[0], out.output
        # two columns: descriptions get most of the 80 (typer's five-column panels left ~25)
        described = [line for line in out.output.splitlines() if line.startswith("  --")]
        assert max(len(line) for line in described) > 70 and max(map(len, out.output.splitlines())) <= 80
    predict = runner.invoke(app, ["predict", "--help"], prog_name="ferwild", terminal_width=80).output
    assert "Usage: ferwild predict [OPTIONS] INPUTS..." in predict
    assert "--annotate / --no-annotate" in predict and "-o, --out PATH" in predict
    # serve runs the shipped model by default: nothing marks --run as needed
    serve = runner.invoke(app, ["serve", "--help"], prog_name="ferwild", terminal_width=80).output
    run_line = next(line for line in serve.splitlines() if line.strip().startswith("--run"))
    assert "required" not in run_line and "Usage: ferwild serve [OPTIONS]" in serve


def test_missing_options_are_named_together():
    from typer.testing import CliRunner

    from ferwild.cli import app

    out = CliRunner().invoke(app, ["audit", "--run", "r"])
    assert out.exit_code == 2
    assert "--reference, --production, --out" in out.output


def test_synth_then_prepare_with_landmarks(tmp_path):
    out = _cli("synth", "--preset", "production", "--n", "60", "--out", str(tmp_path / "raw"), "--seed", "3")
    assert out.returncode == 0, out.stderr
    manifest = pd.read_csv(tmp_path / "raw" / "manifest.csv")
    assert len(manifest) == 60 and manifest["landmarks"].notna().all()
    prep = _cli("prepare", str(tmp_path / "raw" / "manifest.csv"), "--out", str(tmp_path / "prep"),
                "--size", "64", "--workers", "1")
    assert prep.returncode == 0, prep.stderr
    summary = json.loads((tmp_path / "prep" / "summary.json").read_text())
    assert summary["split_mode"] == "group"
    assert summary["status_counts"]["aligned"] == sum(1 for lab in manifest["label"] if lab != "neutral")
    m = pd.read_parquet(tmp_path / "prep" / "manifest.parquet")
    assert set(m.loc[m["status"] == "aligned", "align_method"]) == {"landmarks"}
    assert m["attr_occlusion"].notna().all()


def test_usage_errors_exit_2_with_one_line_and_nothing_on_stdout(tmp_path):
    """One convention for every command: a usage error (bad option, missing input) exits 2."""
    cases = [
        ("prepare", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "p")),
        ("train", "--data", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "r")),
        ("predict", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "o")),
        ("evaluate", str(tmp_path / "norun"), "--data", str(tmp_path / "nonexistent")),
    ]
    for args in cases:
        out = _cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stdout.strip() == "", (args, out.stdout)
        assert "error:" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()


def test_synth_rejects_unknown_preset(tmp_path):
    out = _cli("synth", "--preset", "studio", "--out", str(tmp_path))
    assert out.returncode == 2 and "studio" in out.stderr and "Traceback" not in out.stderr


def test_demo_small(tmp_path):
    out = _cli("demo", "--out", str(tmp_path / "demo"), "--n", "120", "--size", "48", "--quick")
    assert out.returncode == 0, out.stderr
    for preset in ("reference", "production"):
        assert (tmp_path / "demo" / "prepared" / preset / "manifest.parquet").exists()
    study = tmp_path / "demo" / "study"
    results = pd.read_csv(study / "results.csv")
    assert len(results) == 18  # main, baseline, 4 epochs, 3x3 optimizer x lr, 3 fine lr
    assert (study / (study / "best_run").read_text().strip() / "checkpoints").exists()
    html = (study / "report.html").read_text()
    assert "Table 11" in html and "data:image/png;base64" in html
    assert "1 seeds" not in html and "mean ± std over 1" not in html  # one seed reads as one seed
    ref = json.loads((tmp_path / "demo" / "prepared" / "reference" / "summary.json").read_text())
    prod = json.loads((tmp_path / "demo" / "prepared" / "production" / "summary.json").read_text())
    assert ref["augmented_rows"] > 0 and prod["augmented_rows"] == 0
    audit = json.loads((tmp_path / "demo" / "audit" / "audit.json").read_text())
    assert audit["rows"]["production"] == 120 and audit["performance"]["production"]["accuracy"] is not None
    assert (tmp_path / "demo" / "audit" / "report.html").exists()
    # shipping: the selected run exported to ONNX, then used on a sample of production photos
    assert (tmp_path / "demo" / "model.onnx").stat().st_size > 0
    shipped = json.loads((tmp_path / "demo" / "ship" / "predictions" / "summary.json").read_text())
    assert shipped["n_images"] > 0 and shipped["n_errors"] == 0
    assert shipped["recognizer"]["backend"] == "onnx"
    assert shipped["n_faces"] + shipped["n_without_face"] >= shipped["n_images"]
    # every printed command is one pasteable line, however long (subprocess stdout: 80 columns)
    audit_line = next(line for line in out.stdout.splitlines() if line.startswith("$ ferwild audit"))
    assert len(audit_line) > 80 and audit_line.endswith(str(tmp_path / "demo" / "audit"))


def test_models_lists_the_registry():
    out = _cli("models")
    assert out.returncode == 0, out.stderr
    for name in ("vit_b16", "resnet50", "resnet18", "vit_tiny", "cnn_small", "timm:<name>"):
        assert name in out.stdout
    assert "224" in out.stdout and "M" in out.stdout  # input size and parameter count
