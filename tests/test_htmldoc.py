"""The report writer both reports share: Markdown and HTML from the same calls."""

import base64

import pandas as pd

from ferwild.htmldoc import Document, inline, md_table_html
from ferwild.metrics import markdown_table
from ferwild.plotting import new_figure, save_figure


def test_inline_escapes_html_then_renders_code_and_bold():
    assert inline("a <b> & `x<y` **bold**") == "a &lt;b&gt; &amp; <code>x&lt;y</code> <strong>bold</strong>"


def test_tables_keep_escaped_pipes_and_right_align_numbers():
    frame = pd.DataFrame({"name": ["a|b", "c"], "value": [1.5, 22.25], "note": ["—", "x"]})
    html = md_table_html(markdown_table(frame))
    assert "<td>a|b</td>" in html  # the pipe survives the Markdown round trip
    assert '<th class="num">value</th>' in html and '<td class="num">22.250</td>' in html
    assert '<th>note</th>' in html  # text columns stay left-aligned


def test_document_writes_both_formats_with_unique_anchors_and_embedded_figures(tmp_path):
    doc = Document(tmp_path)
    doc.heading(2, "Results")
    doc.heading(3, "Results")  # same text: a second, different anchor
    doc.para("See `report.md`.")
    doc.box("warn", "Careful", ["one", "two"])
    doc.table(pd.DataFrame({"k": [1]}), heading="Table 1", note="a note", small=True)
    fig = new_figure((1, 1))
    fig.add_subplot().plot([0, 1])
    png = save_figure(fig, tmp_path / "figures" / "f.png")
    doc.figure(png, "Figure 1")
    doc.figure(tmp_path / "missing.png", "Figure 2")
    md, page = doc.markdown(), doc.page("Title", "Sub")
    assert md.startswith("## Results\n") and "![Figure 1](figures/f.png)" in md and "> - two" in md
    assert "Figure 2: figure not available (`missing.png`)" in md
    assert 'id="results"' in page and 'id="results-2"' in page and 'href="#results-2"' in page
    assert '<div class="table-wrap small">' in page and '<p class="tnote">a note</p>' in page
    embedded = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(embedded) == png.read_bytes()  # self-contained: the PNG itself
    assert page.startswith("<!DOCTYPE html>") and "<title>Title</title>" in page
