"""docs/cli.md lists every argument and option of every command, as the command line's own help
says them (tools/render_cli_docs.py writes the tables; this test renders them again)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "cli.md"


@pytest.fixture(scope="module")
def renderer():
    spec = importlib.util.spec_from_file_location("render_cli_docs", REPO / "tools" / "render_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_option_of_every_command_is_in_its_table(renderer):
    doc = DOC.read_text(encoding="utf-8")
    group, commands = renderer.cli_commands()
    root = group.context_class(group, info_name="ferwild")
    missing = []
    for name, command in commands:
        start, end = doc.find(f"<!-- options:{name} -->"), doc.find(f"<!-- /options:{name} -->")
        if start < 0 or end < start:
            missing.append(f"{name}: no option table")
            continue
        table = doc[start:end]
        ctx = command.context_class(command, info_name=name, parent=root)
        for param in renderer.documented_params(command, ctx):
            names = [(param.metavar or param.name).upper()] if param.param_type_name == "argument" else \
                [*param.opts, *param.secondary_opts]
            missing += [f"{name} {n}" for n in names if f"`{n}" not in table]
    for param in renderer.documented_params(group, root):  # ferwild --version
        missing += [f"ferwild {o}" for o in param.opts if f"`ferwild {o}`" not in doc]
    assert not missing, f"not in docs/cli.md: {missing} (run python tools/render_cli_docs.py)"


def test_option_tables_are_up_to_date(renderer):
    doc = DOC.read_text(encoding="utf-8")
    assert renderer.stale(doc) == [], "stale option tables in docs/cli.md: run python tools/render_cli_docs.py"
    assert renderer.render(doc) == doc  # rendering again changes nothing, prose included


def test_tables_go_right_after_the_usage_block_and_keep_the_prose(renderer, tmp_path):
    doc = DOC.read_text(encoding="utf-8")
    # strip every generated table: what is left is the hand-written page
    lines, bare, skipping = doc.split("\n"), [], False
    for line in lines:
        if line.startswith("<!-- options:"):
            skipping = True
            bare.pop()  # the blank line before the table
        if not skipping:
            bare.append(line)
        if line.startswith("<!-- /options:"):
            skipping = False
    bare_doc = "\n".join(bare)
    assert "<!-- options:" not in bare_doc
    assert renderer.render(bare_doc) == doc  # a page without tables gets them, where they are now
    # prepare's table right after the first usage block; live's after its own
    first_block_end = doc.index("```\n", doc.index("```bash\nferwild prepare")) + 4
    assert doc[first_block_end:].startswith("\n<!-- options:prepare -->")
    live_block_end = doc.index("```\n", doc.index("```bash\nferwild live")) + 4
    assert doc[live_block_end:].startswith("\n<!-- options:live -->")
