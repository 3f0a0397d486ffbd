"""Every figure README.md, MODEL_CARD.md and docs/*.md publish comes from the file that measured
it (tools/render_doc_figures.py writes them; these tests render again and look for copies typed
by hand), and ``ferwild models`` states the same figures as the cards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("render_doc_figures", REPO / "tools" / "render_doc_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(figures):
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in figures.documents()}


def test_every_marked_figure_matches_its_source(figures, pages):
    problems = [f"{name}: {p}" for name, text in pages.items() for p in figures.stale(text)]
    assert not problems, "stale figures (run python tools/render_doc_figures.py):\n" + "\n".join(problems)


def test_rendering_again_changes_nothing(figures, pages):
    for name, text in pages.items():
        new, problems = figures.render(text)
        assert not problems, (name, problems)
        assert new == text, f"{name} is stale: run python tools/render_doc_figures.py"


def test_model_cards_are_rendered_from_their_card_json(figures):
    assert figures.stale_cards() == [], "run python recipes/render_model_cards.py"


def test_no_published_figure_is_typed_again_by_hand(figures, pages):
    copies = figures.hand_typed_copies(pages)
    assert not copies, "\n".join(copies)


def test_no_page_states_a_percentage_without_a_source(figures, pages):
    # every accuracy-like figure of README.md and docs/*.md comes from a file, says whom it quotes,
    # or names the run whose output was not kept (listed by --check until it is redone)
    hand_written = figures.hand_written_pages(pages)
    assert {"README.md", "docs/benchmarks.md", "docs/real-study.md", "docs/real-audit.md"} <= set(hand_written)
    for name, text in hand_written.items():
        assert figures.unsourced_percentages(text) == [], name
    assert figures.unsourced_percentages("the model reads 82.8% of the photos") == ["82.8%"]
    for name, text in hand_written.items():  # nor a decimal speed or ratio (a benchmark's figure)
        assert figures.unsourced_rates(text) == [], name
    assert figures.unsourced_rates("ONNX at 241.5 faces/s, 1.57x PyTorch, 48x48 px") == ["241.5 faces/s", "1.57x"]
    assert figures.unsourced_percentages("<!-- ext a paper -->99.8%<!-- /ext -->") == []
    unkept = "<!-- unkept the 2026 study run -->47.5%<!-- /unkept --> and 12.5%"
    assert figures.unsourced_percentages(unkept) == ["12.5%"]
    assert figures.unkept(unkept) == ["the 2026 study run"]



def test_the_real_audit_sections_state_no_percentage_without_a_source(figures, pages):
    # docs/real-audit.md's sections 1-5 (and the lines above them) publish the audit's figures
    # from its kept audit.json (docs/bench/audit_wild_dev.json), never typed by hand; the region
    # ends at the gender section if the page has one, else at the study's conclusions
    text = pages["docs/real-audit.md"]
    ends = [h for h in ("## Gender, with the class mix taken out", "## What the study concluded") if h in text]
    assert ends, "docs/real-audit.md has lost the heading that ends its audit sections"
    region = text[:text.index(ends[0])]
    assert "## 5. Subgroups" in region
    assert figures.unsourced_percentages(region) == []
    assert "<!-- fig bench:audit_wild_dev " in region

def test_the_default_figures_are_marked_with_the_people_they_were_measured_on(figures, pages):
    readme = pages["README.md"]
    # the real-photo figure on the people no choice saw, and the all-photos one, each from the card
    for key in ("results.wild_report.accuracy", "results.wild_all.accuracy", "results.ferplus_test.accuracy"):
        assert f"<!-- fig card:ferplus_vgg {key} pct1 -->" in readme, key
    table = readme[readme.index("<!-- figures:shipped_models -->"):readme.index("<!-- /figures:shipped_models -->")]
    header = table.split("\n")[1]
    assert "report** people" in header and "no choice saw" in header and "**all**" in header
    assert "calibrated on real photos" not in readme


def test_a_figure_that_differs_from_its_source_is_caught(figures):
    good = figures.marker("card:ferplus_vgg", "results.wild_report.accuracy", "pct1")
    assert figures.stale(good) == []
    bad = good.replace(figures.figure("card:ferplus_vgg", "results.wild_report.accuracy", "pct1"), "82.3%")
    assert len(figures.stale(bad)) == 1 and "82.3%" in figures.stale(bad)[0]
    assert figures.render(bad)[0] == good
    # a key no source holds, and a source that does not exist, are problems too
    assert figures.stale("<!-- fig card:ferplus_vgg results.nowhere.accuracy pct1 -->1%<!-- /fig -->")
    assert figures.stale("<!-- fig bench:no_such_bench fps f1 -->1.0<!-- /fig -->")


def test_a_hand_typed_copy_is_caught(figures):
    marked = figures.marker("card:ferplus_vgg", "results.wild_report.accuracy", "pct1")
    value = figures.figure("card:ferplus_vgg", "results.wild_report.accuracy", "pct1")
    pages = {"README.md": f"a {marked} b", "docs/x.md": f"the default reads {value} of the photos"}
    assert figures.hand_typed_copies(pages) == [f"docs/x.md:1: {value!r} typed by hand (mark it with its source)"]
    # a longer figure that merely starts with the same digits is not a copy (nor the same figure
    # to two decimals: choose a last digit that differs from the source's)
    two = figures.figure("card:ferplus_vgg", "results.wild_report.accuracy", "pct2")
    longer = f"{value[:-1]}{(int(two[-2]) + 1) % 10}%"
    assert figures.hand_typed_copies({"README.md": f"a {marked}", "docs/x.md": longer}) == []
    # a whole-number figure publishes no one-decimal variant (those are other figures that round alike)
    whole = figures.marker("card:ferplus_vgg", "results.wild_report.accuracy", "pct0")
    assert figures.hand_typed_copies({"README.md": f"a {whole}", "docs/x.md": f"{value}"}) == []


def test_ferwild_models_states_the_cards_figures():
    from typer.testing import CliRunner

    from ferwild.cli import app
    from ferwild.shipped import WEIGHTS_DIR, shipped_names

    out = CliRunner().invoke(app, ["models"], terminal_width=80).output
    assert "wild_dev report people" in out
    cards = {name: json.loads((WEIGHTS_DIR / name / "card.json").read_text(encoding="utf-8"))
             for name in shipped_names()}
    pair = lambda f: f"{100 * f['accuracy']:.1f}% / {100 * f['macro_f1']:.1f}%"  # noqa: E731
    for name, card in cards.items():
        start = out.index(f"\nferwild:{name}\n")
        block = " ".join(out[start:].split("\nferwild:")[1].split())  # this model's lines, unwrapped
        assert pair(card["test"]) in block, name
        assert f"{card['size_bytes'] / 1e6:.1f} MB" in block, name
        own = (card.get("results") or {}).get("wild_report")
        # its report-people figure: its own card's, or the card that measured it as a baseline
        measured = own or next(c["baseline_results"]["wild_report"] for c in cards.values()
                               if c.get("baseline") == f"ferwild:{name}" and "baseline_results" in c)
        assert pair(measured) in block, name
        wild_all = (card.get("results") or {}).get("wild_all")
        if wild_all and pair(wild_all) != pair(measured):
            assert pair(wild_all) not in block, name  # not the all-photos figure


def test_real_study_cells_are_named_as_the_study_names_them(figures):
    assert figures._cell_name("epochs=5") == "5 epochs"
    assert figures._cell_name("optimizer=rmsprop, lr=1e-05") == "RMSprop 1e-5"
    assert figures._cell_name("optimizer=adam, lr=0.001") == "Adam 1e-3"
    assert figures._cell_name("lr=3e-05") == "Adam 3e-5"          # Table 10 varies Adam's rate only
    assert figures._cell_name("scheduler=f1_drop") == "F1-drop"
    spread = {"mean": 0.475, "std": 0.011, "min": 0.466, "max": 0.488, "per_seed": [0.466, 0.471, 0.488]}
    assert figures.FORMATS["pctpm1"](spread) == "47.5% ± 1.1"
    assert figures.FORMATS["pctspan1"](spread) == "47.5% (46.6-48.8)"
    assert figures.FORMATS["seeds1"](spread) == "46.6, 47.1, 48.8"


def test_a_marker_the_renderer_cannot_read_is_reported(figures):
    # a key with a space is not a key the regex reads: without this the figure would never be checked
    bad = "<!-- fig card:ferplus_vgg results.wild report.accuracy pct1 -->99.9%<!-- /fig -->"
    assert figures.malformed(bad) and figures.stale(bad)
    assert figures.render(bad)[1]
    good = "<!-- fig card:ferplus_vgg results.wild_report.accuracy pct1 -->82.8%<!-- /fig -->"
    assert figures.malformed(good) == []
