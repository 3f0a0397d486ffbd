"""The ship scripts in recipes/: they run without sys.path hacks, stage every trial model under
--work and write the package's folder once, in one step, at the end (a stop leaves the shipped
model as it was); and the model cards they render match the committed pages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ferwild import model_cards
from ferwild.files import copy_dir_atomic
from ferwild.shipped import CARD_FILE, WEIGHTS_DIR

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_and_new(tmp_path: Path) -> tuple[Path, Path]:
    dest, new = tmp_path / "weights" / "model", tmp_path / "staged"
    (dest / "checkpoints").mkdir(parents=True)
    (dest / "card.json").write_text('{"old": true}\n')
    (dest / "checkpoints" / "weights.bin").write_bytes(b"old weights")
    (new / "checkpoints").mkdir(parents=True)
    (new / "card.json").write_text('{"new": true}\n')
    (new / "checkpoints" / "weights.bin").write_bytes(b"new weights")
    (new / "model.onnx").write_bytes(b"new onnx")
    return dest, new


# ----------------------------------------------------------------------------- copy_dir_atomic


def test_copy_dir_atomic_replaces_the_whole_folder(tmp_path):
    dest, new = _old_and_new(tmp_path)
    assert copy_dir_atomic(new, dest) == dest
    assert _tree(dest) == _tree(new)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no temporary or old folder left


def test_copy_dir_atomic_failing_midway_leaves_the_old_folder(tmp_path, monkeypatch):
    dest, new = _old_and_new(tmp_path)
    before = _tree(dest)
    real_copy = shutil.copy2
    copied = []

    def copy_then_fail(src, dst, *args, **kwargs):
        if copied:
            raise OSError("disk full")
        copied.append(src)
        return real_copy(src, dst, *args, **kwargs)

    real_copytree = shutil.copytree

    def copytree(src, dst, *args, **kwargs):  # its recursive calls pass copy_function on positionally
        return real_copytree(src, dst, *args, **kwargs) if args else \
            real_copytree(src, dst, **{**kwargs, "copy_function": copy_then_fail})

    monkeypatch.setattr(shutil, "copytree", copytree)
    with pytest.raises(OSError, match="disk full"):
        copy_dir_atomic(new, dest)
    assert copied  # it had started copying
    assert _tree(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]


def test_copy_dir_atomic_failing_at_the_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest, new = _old_and_new(tmp_path)
    before = _tree(dest)
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == dest and Path(src).name.endswith(".tmp"):  # the new copy taking dest's place
            raise OSError("rename refused")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        copy_dir_atomic(new, dest)
    monkeypatch.undo()
    assert _tree(dest) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]


# ----------------------------------------------------------------------------- the scripts


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("script", ["recipes/ship_fer2013.py", "recipes/ship_ferplus.py",
                                    "recipes/ship_ferplus_models.py", "analyses/leakage_wild_dev.py",
                                    "analyses/real_study_analysis.py", "analyses/accurate_model_levers.py"])
def test_scripts_start_from_anywhere(script, tmp_path):
    """Each imports its neighbours and the package with no sys.path lines (run from another folder)."""
    assert "sys.path.insert" not in (REPO / script).read_text()
    out = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--work" in out.stdout or "--out" in out.stdout
    if "ship_" in script:
        assert "--dest" in out.stdout


@pytest.fixture
def ship_ferplus(monkeypatch):
    """recipes/ship_ferplus.py as a module (its neighbour recipes/shipping.py importable)."""
    monkeypatch.syspath_prepend(str(RECIPES))
    for name in ("ship_ferplus", "shipping"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import ship_ferplus

    return ship_ferplus


def _ferplus_args(tmp_path: Path) -> tuple[list[str], Path]:
    """A "finished run" (a copy of the shipped FER2013 model) and an old shipped model at --dest."""
    run = tmp_path / "run"
    shutil.copytree(WEIGHTS_DIR / "fer2013_vgg", run)
    dest = tmp_path / "weights" / "ferplus_vgg"
    dest.mkdir(parents=True)
    (dest / CARD_FILE).write_text('{"name": "the old default"}\n')
    argv = ["--run", str(run), "--data", "ferplus", "--fer2013", "fer2013", "--wild", "wild", "--dest", str(dest),
            "--card", str(tmp_path / "MODEL_CARD.md"), "--figures", str(tmp_path / "figures"),
            "--work", str(tmp_path / "work")]
    return argv, dest


def _fake_evaluate(run, data, split, out) -> dict:
    flip = json.loads((Path(run) / "checkpoints" / "final" / "state.json").read_text())["model_config"].get("tta")
    return {"accuracy": 0.5, "macro_f1": 0.6 if flip == "flip" else 0.4}


def test_ship_ferplus_stopped_at_the_framing_check_leaves_the_shipped_model(ship_ferplus, tmp_path, monkeypatch):
    argv, dest = _ferplus_args(tmp_path)
    before = _tree(dest)
    monkeypatch.setattr(ship_ferplus, "evaluate", _fake_evaluate)
    zoom_wins = {1.0: {"macro_f1": 0.5, "gain_ci": [0.0, 0.0]}, 1.08: {"macro_f1": 0.6, "gain_ci": [0.01, 0.05]}}
    monkeypatch.setattr(ship_ferplus, "framing_sweep", lambda *a: zoom_wins)
    with pytest.raises(SystemExit, match="framing scale 1.08"):
        ship_ferplus.main(argv)
    assert _tree(dest) == before
    trials = tmp_path / "work" / "trials"
    assert sorted(p.name for p in trials.iterdir()) == ["tta-flip", "tta-none"]  # the trials went under --work


def test_ship_ferplus_publishes_the_measured_model_once_at_the_end(ship_ferplus, tmp_path, monkeypatch):
    argv, dest = _ferplus_args(tmp_path)
    monkeypatch.setattr(ship_ferplus, "evaluate", _fake_evaluate)
    monkeypatch.setattr(ship_ferplus, "framing_sweep", lambda *a: {1.0: {"macro_f1": 0.5, "gain_ci": [0.0, 0.0]}})
    monkeypatch.setattr(ship_ferplus, "calibrate", lambda work, tta, names: 1.25)
    measured = []

    def measure(packed, args, work):
        measured.append(_tree(packed))
        assert _tree(dest) == {CARD_FILE: b'{"name": "the old default"}\n'}  # nothing shipped while measuring
        return {}, {}

    def abstention(work, names):
        (work / "risk_coverage_wild_dev.png").write_bytes(b"png")
        return [], work / "risk_coverage_wild_dev.png"

    monkeypatch.setattr(ship_ferplus, "measure", measure)
    monkeypatch.setattr(ship_ferplus, "abstention", abstention)
    monkeypatch.setattr(ship_ferplus, "build_card", lambda *a: {"name": "ferplus_vgg", "tta": "flip",
                                                               "temperature": 1.25})
    monkeypatch.setattr(ship_ferplus, "render_default_card", lambda card: f"card of {card['name']}\n")
    monkeypatch.setattr(ship_ferplus, "print_summary", lambda *a: None)
    ship_ferplus.main(argv)
    shipped = _tree(dest)
    card = json.loads(shipped.pop(CARD_FILE))
    assert card["size_bytes"] == sum(len(b) for b in measured[0].values())
    assert {k: v for k, v in measured[0].items() if k != CARD_FILE} == shipped  # the very files measured
    config = json.loads(shipped["checkpoints/final/state.json"])["model_config"]
    assert (config["tta"], config["temperature"]) == ("flip", 1.25)  # the chosen TTA (higher fake macro-F1)
    assert (tmp_path / "figures" / "risk_coverage_wild_dev.png").read_bytes() == b"png"
    assert (tmp_path / "MODEL_CARD.md").read_text() == "card of ferplus_vgg\n"


# ----------------------------------------------------------------------------- the cards


def _card(name: str) -> dict:
    path = WEIGHTS_DIR / name / CARD_FILE
    if not path.is_file():  # measured and kept out of the package
        path = REPO / "docs" / "experiments" / f"{name}.card.json"
    return json.loads(path.read_text())


def test_the_committed_cards_are_rendered_from_their_card_json():
    """The pages are what ferwild.model_cards renders from the committed card.json files, byte for byte."""
    assert model_cards.render_default_card(_card("ferplus_vgg")) == (REPO / "MODEL_CARD.md").read_text()
    fer2013 = REPO / "docs" / "model_card_fer2013_vgg.md"
    assert model_cards.render_fer2013_card(_card("fer2013_vgg")) == fer2013.read_text()
    for name in ("ferplus_ensemble", "ferplus_live"):
        doc = REPO / "docs" / f"model_card_{name}.md"
        assert model_cards.render_extra_card(_card(name), doc, REPO) == doc.read_text()


def test_ensemble_card_commands_rerun_the_members(monkeypatch):
    """The ensemble card's rerun commands train each member that is not shipped (with its seed) and
    pass the shipped default by name; the shipped card's own commands are what its members give."""
    monkeypatch.syspath_prepend(str(RECIPES))
    for name in ("ship_ferplus_models", "shipping"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import ship_ferplus_models

    card = json.loads((WEIGHTS_DIR / "ferplus_ensemble" / "card.json").read_text())
    shipped = ship_ferplus_models._ensemble_texts(
        {"members": card["members"], "excluded": card["excluded"], "max_val_drop": 0.05}, card["tta"], {"faces": 6000})
    assert shipped["commands"] == card["commands"]
    assert shipped["recipe_text"] == card["recipe_text"]

    members = [{"run": "ferwild:ferplus_vgg"}, {"run": "model_work/runs/ferplus_long"},
               {"run": "model_work/runs/ferplus_long_s1", "seed": 1}]
    texts = ship_ferplus_models._ensemble_texts({"members": members, "excluded": [], "max_val_drop": 0.05}, "flip")
    trains = [c for c in texts["commands"] if c.startswith("ferwild train")]
    assert trains == ["ferwild train recipes/ferplus_long.yaml --data ferplus_basic7 --out runs/ferplus_long --resume",
                      "ferwild train recipes/ferplus_long.yaml --data ferplus_basic7 --out runs/ferplus_long_s1 "
                      "--resume --seed 1"]
    assert " --members ferwild:ferplus_vgg runs/ferplus_long runs/ferplus_long_s1 " in texts["commands"][-1]
    assert "2 fer_vgg, each with its own seed," in texts["summary_text"]
