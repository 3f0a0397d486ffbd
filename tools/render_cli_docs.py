"""Write every command's option table into ``docs/cli.md``, from the command line itself.

The help texts in ``src/ferwild/cli.py`` are the single source: this script asks the typer app
for each command's arguments and options (name, value type, default, help) and writes them as a
table between ``<!-- options:COMMAND -->`` and ``<!-- /options:COMMAND -->``. A command without
the markers gets its table right after the first ``bash`` block of the page that runs it
(``ferwild COMMAND ...``); with them, only what lies between them is replaced, so the prose
around is never touched. ``tests/test_cli_docs.py`` renders again in memory and fails when the
page is stale.

    python tools/render_cli_docs.py            # rewrite docs/cli.md
    python tools/render_cli_docs.py --check    # exit 1, saying which tables are stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
_FENCE = re.compile(r"^```")


def _open(command: str) -> str:
    return f"<!-- options:{command} -->"


def _close(command: str) -> str:
    return f"<!-- /options:{command} -->"


def cli_commands() -> tuple[Any, list[tuple[str, Any]]]:
    """The root click group of ``ferwild`` and its ``(name, command)`` pairs, in ``--help`` order."""
    import typer

    from ferwild.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="ferwild")
    return group, [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]


def documented_params(command: Any, ctx: Any) -> list[Any]:
    """The arguments and options ``--help`` shows for ``command`` (not ``--help`` itself)."""
    return [p for p in command.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]


def _markdown(text: str) -> str:
    """Help text for a table cell: pipes escaped everywhere; outside code spans ``*`` and a ``<``
    that would open an HTML tag (``timm:<name>``) escaped too."""
    parts = text.split("`")
    for i, part in enumerate(parts):
        if i % 2 == 0:  # outside a code span
            part = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", part).replace("*", r"\*")
        parts[i] = part.replace("|", r"\|")
    return "`".join(parts)


def _row(param: Any, ctx: Any) -> str:
    from ferwild.cli_format import default_text, metavar

    help_text = " ".join((getattr(param, "help", None) or "").split())
    if param.param_type_name == "argument":
        name = (param.metavar or param.name or "ARG").upper() + ("..." if param.nargs != 1 else "")
        names = f"`{name}`"
        value = metavar(param, ctx) or ""
        default = "required" if param.required else ""
    else:
        names = ", ".join(f"`{o}`" for o in sorted(param.opts, key=lambda o: o.startswith("--")))
        if param.secondary_opts:
            names += " / " + ", ".join(f"`{o}`" for o in param.secondary_opts)
        value = metavar(param, ctx)
        shown = default_text(param)
        if param.required:
            default = "required"
        elif param.is_flag and param.secondary_opts:
            default = f"`--{shown}`" if shown else ""
        elif param.is_flag:
            default = "off"
        else:
            default = f"`{shown}`" if shown not in (None, "") else ""
    value = f"`{value}`" if value else ("flag" if getattr(param, "is_flag", False) else "")
    return f"| {names} | {_markdown(value)} | {_markdown(default)} | {_markdown(help_text)} |"


def render_table(name: str, command: Any, parent: Any = None) -> str:
    """The Markdown block for one command, markers included."""
    ctx = command.context_class(command, info_name=name, parent=parent)
    rows = [_row(p, ctx) for p in documented_params(command, ctx)]
    if not rows:
        return "\n".join([_open(name), f"`ferwild {name}` takes no arguments or options.", _close(name)])
    return "\n".join([
        _open(name),
        f"<details><summary><code>ferwild {name}</code>: every argument and option "
        f"(<code>ferwild {name} --help</code>)</summary>",
        "",
        "| argument / option | value | default | description |",
        "|---|---|---|---|",
        *rows,
        "",
        "</details>",
        _close(name),
    ])


def _usage_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """``(first, last)`` line indices of each fenced block (fences included)."""
    blocks, start = [], None
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            if start is None:
                start = i
            else:
                blocks.append((start, i))
                start = None
    return blocks


def _runs(block: list[str], name: str) -> int | None:
    """The line of ``block`` that runs ``ferwild NAME`` (None if none does)."""
    pattern = re.compile(rf"^\s*ferwild {re.escape(name)}(\s|$)")
    return next((i for i, line in enumerate(block) if pattern.match(line)), None)


def render(doc: str) -> str:
    """``doc`` with every command's table written (replaced between its markers, or inserted)."""
    group, commands = cli_commands()
    root = group.context_class(group, info_name="ferwild")
    tables = {name: render_table(name, command, root) for name, command in commands}
    lines = doc.split("\n")
    # replace the tables that are there
    for name, table in tables.items():
        if _open(name) in lines:
            start, end = lines.index(_open(name)), lines.index(_close(name))
            lines[start:end + 1] = table.split("\n")
    # insert the others after the usage block that runs them, in the block's order
    missing = [name for name in tables if _open(name) not in lines]
    placed = []
    blocks = _usage_blocks(lines)
    for name in missing:
        for start, end in blocks:
            where = _runs(lines[start:end], name)
            if where is not None:
                placed.append((start, where, end, name))
                break
        else:
            raise SystemExit(f"docs/cli.md has no usage block running `ferwild {name}`: add one, then rerun")
    # from the bottom up, so that the indices above stay right; within a block, the last command
    # first, so that each one is then inserted before it: the tables come in the block's order
    for _, _, end, name in sorted(placed, reverse=True):
        lines[end + 1:end + 1] = ["", *tables[name].split("\n")]
    return "\n".join(lines)


def stale(doc: str) -> list[str]:
    """The commands whose table in ``doc`` is missing or differs from the command line's."""
    group, commands = cli_commands()
    root = group.context_class(group, info_name="ferwild")
    out = []
    for name, command in commands:
        if render_table(name, command, root) not in doc:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, default=DOC, help="The page to write (default: docs/cli.md).")
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 when a table is stale.")
    args = parser.parse_args(argv)
    doc = args.doc.read_text(encoding="utf-8")
    if args.check:
        names = stale(doc)
        if names:
            print(f"{args.doc}: stale option tables: {', '.join(names)} (run python tools/render_cli_docs.py)")
            return 1
        return 0
    new = render(doc)
    if new != doc:
        args.doc.write_text(new, encoding="utf-8")
        print(f"rewrote the option tables in {args.doc}")
    else:
        print(f"{args.doc}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
