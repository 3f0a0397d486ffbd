"""No function in the package is over 100 lines (decorators excluded, docstring included): a
longer one is split into named steps (issue 25)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ferwild"
MAX_LINES = 100


def long_functions(source: str, limit: int = MAX_LINES) -> dict[str, int]:
    """``{qualified name: lines}`` of every function or method in ``source`` over ``limit`` lines."""
    found = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > limit:
                    found[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_scan_finds_a_long_function_and_a_long_method():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    source = f"def short():\n    pass\n\ndef long():\n{body}\n\nclass A:\n    def m(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
    assert long_functions(source) == {"long": MAX_LINES + 1, "A.m": MAX_LINES + 1}
    assert long_functions("def f():\n" + "\n".join(f"    y{i} = 0" for i in range(MAX_LINES - 1)) + "\n") == {}


def test_no_function_in_the_package_is_over_100_lines():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30  # the scan saw the package
    too_long = {f"{path.relative_to(SRC).as_posix()}:{name}": n
                for path in files for name, n in long_functions(path.read_text(encoding="utf-8")).items()}
    assert too_long == {}
