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
    # the demo's summary.json reads its figures from the files each step wrote
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    selection = json.loads((study / "selection.json").read_text())
    assert summary["selected"] == selection["winner"] and summary["main"]["experiment"] == "main"
    assert summary["audit"]["macro_f1_production"] == audit["performance"]["production"]["macro_f1"]
    assert summary["ship"] == shipped and summary["cells"] == 18  # one cell per experiment setting
    assert summary["cells_not_learning"] == len(summary["cells_not_learning_list"]) <= 18
    assert set(summary["steps_s"]) == {"synth", "prepare", "study", "audit", "ship"}
    assert abs(summary["wall_s"] - sum(summary["steps_s"].values())) < 0.2
    # every printed command is one pasteable line, however long (subprocess stdout: 80 columns)
    audit_line = next(line for line in out.stdout.splitlines() if line.startswith("$ ferwild audit"))
    assert len(audit_line) > 80 and audit_line.endswith(str(tmp_path / "demo" / "audit"))


def test_models_lists_the_registry():
    out = _cli("models")
    assert out.returncode == 0, out.stderr
    for name in ("vit_b16", "resnet50", "resnet18", "vit_tiny", "cnn_small", "timm:<name>"):
        assert name in out.stdout
    assert "224" in out.stdout and "M" in out.stdout  # input size and parameter count


def test_version_prints_the_package_version():
    from importlib.metadata import version

    from typer.testing import CliRunner

    import ferwild
    from ferwild.cli import app

    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.output == f"ferwild {ferwild.__version__}\n" == f"ferwild {version('ferwild')}\n"


def test_counts_and_the_live_summary_agree_in_number():
    from ferwild.cli import live_summary_lines
    from ferwild.cli_format import count

    assert [count(n, "person", "people") for n in (0, 1, 2)] == ["0 people", "1 person", "2 people"]
    assert [count(n, "face") for n in (0, 1, 12)] == ["0 faces", "1 face", "12 faces"]
    one = {"frames_processed": 1, "fps_processed": 2.0, "frames_dropped": 0, "faces": 1, "tracks": 1,
           "stop_reason": "end of source"}
    assert live_summary_lines(one) == ["1 frame read at 2.0 frames/s (0 dropped)", "1 face, 1 person",
                                       "stopped: end of source"]
    many = {"frames_processed": 41964, "fps_processed": 23.3, "frames_dropped": 123456, "faces": 1234567,
            "tracks": 345, "stop_reason": "stopped (Ctrl-C)"}
    lines = live_summary_lines(many)
    assert lines[1] == "1234567 faces, 345 people" and "41964 frames read at 23.3 frames/s" in lines[0]
    assert max(map(len, lines)) < 60  # short phrases: nothing wraps mid-phrase at 80 columns


def test_output_to_a_pipe_is_never_wrapped_or_cut(capsys):
    from ferwild import cli
    from ferwild.cli_format import output_console

    # capsys: stdout is not a terminal
    console = output_console()
    assert console.width > 10_000 and output_console(width=80).width == 80
    console.print("word " * 40, highlight=False)
    assert capsys.readouterr().out.strip() == ("word " * 40).strip()  # one line
    saved = cli.console
    cli.console = console
    try:
        cli._section("study")  # a heading rule stays 80 columns, not 100,000
    finally:
        cli.console = saved
    rule = capsys.readouterr().out.rstrip("\n")
    assert "study" in rule and len(rule) == 80


def test_models_without_a_terminal_prints_whole_names():
    from typer.testing import CliRunner

    from ferwild.cli import app
    from ferwild.models import list_models
    from ferwild.shipped import list_shipped

    out = CliRunner().invoke(app, ["models"])  # no terminal_width: output to a pipe
    assert out.exit_code == 0, out.output
    assert "hf:google/vit-base-patch16-224-in21k" in out.output and "…" not in out.output
    for entry in list_models():
        assert entry["pretrained_source"] in out.output and entry["description"] in out.output
    for row in list_shipped():
        assert row["name"] in out.output


def test_serve_help_lists_every_endpoint():
    from typer.testing import CliRunner

    from ferwild.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"], prog_name="ferwild", terminal_width=80).output
    for endpoint in ("GET /  ", "POST /predict", "WebSocket /ws/live", "GET /info", "GET /health", "GET /docs"):
        assert endpoint in out, endpoint
    assert "live mode" in out and "interactive docs" in out


def _not_a_video(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_text("this is a text file, not a video\n" * 20)
    return bad


def test_live_on_a_text_file_named_mp4_says_it_is_not_a_video(tmp_path):
    from typer.testing import CliRunner

    from ferwild.cli import app

    bad = _not_a_video(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["live", str(bad), "--out", str(tmp_path / "o")])
    said = " ".join(out.output.split())
    assert out.exit_code == 2, said  # not a crash (1) and not a success: a usage error
    assert f"{bad}: cannot open as a video: not a video file (could not decode)" in said
    assert "Errno" not in said and "InvalidDataError" not in said and "Traceback" not in said
    verbose = runner.invoke(app, ["live", str(bad), "--out", str(tmp_path / "o"), "--verbose"])
    said = " ".join(verbose.output.split())
    assert verbose.exit_code == 2 and "not a video file (could not decode)" in said
    assert "InvalidDataError" in said and "1094995529" in said  # the raw detail, on request


def test_predict_reports_and_skips_a_text_file_named_mp4(tmp_path):
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from ferwild.cli import app

    bad = _not_a_video(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / f"face{i}.png")
    inputs = [str(tmp_path / "face0.png"), str(bad), str(tmp_path / "face1.png")]
    runner = CliRunner()
    out = runner.invoke(app, ["predict", *inputs, "--out", str(tmp_path / "o"), "--detector", "none"])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said  # a bad input among many: reported and skipped, the job goes on
    assert f"skipped {bad}: cannot open as a video: not a video file (could not decode)" in said
    assert "Errno" not in said and "InvalidDataError" not in said
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_images"] == 2 and summary["n_faces"] == 2 and summary["n_errors"] == 1
    assert summary["errors"][0]["source"] == str(bad)
    assert "not a video file (could not decode)" in summary["errors"][0]["error"]
    frame = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert set(frame["source"]) == set(inputs)  # nothing lost: the good ones read, the bad one listed
    verbose = runner.invoke(app, ["predict", *inputs, "--out", str(tmp_path / "v"), "--detector", "none",
                                  "--verbose"])
    assert verbose.exit_code == 0 and "InvalidDataError" in verbose.output
