"""The package's layout as the README states it: imports point one way (no module imports,
directly or through others, a module that imports it back, lazy imports included) and no
module imports another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the ferwild modules it imports anywhere in its body; and every import of a
    private (``_name``) object from another module."""
    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {owner(a.name) for a in node.names if a.name.startswith("ferwild")}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([module] if module else []))
                if not module.startswith("ferwild"):
                    continue
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    target = full if full in mods else owner(module)
                    graph[name].add(target)
                    if alias.name.startswith("_") and full not in mods and target != name:
                        private.append(f"{name} imports {module}.{alias.name}")
        graph[name].discard(name)
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), if any."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph, _ = _imports(_modules())
    assert sum(len(v) for v in graph.values()) > 50  # the parser saw the package's imports
    assert _cycles(graph) == []


def test_no_private_name_imported_across_modules():
    _, private = _imports(_modules())
    assert private == []


#: The layers README.md's Development section names, bottom first: a module may import its own
#: layer and the ones below, never one above (lazy imports included).
LAYERS = [
    ("shared ground", {"labels", "system", "parallel", "formatting", "plotting", "files", "config", "cli_format",
                       "htmldoc", "metrics", "shipped", "face_tables", "video_io"}),
    ("data", {"data"}),
    ("detectors and models", {"detectors", "tracking", "preprocessing", "models", "backends"}),
    ("runs", {"runs", "distill", "ensemble", "precise_bn", "model_cards"}),
    ("train, evaluate, export", {"train", "evaluate", "export"}),
    ("study and audit", {"study", "study_report", "audit"}),
    ("recognizer", {"recognizer", "drawing"}),
    ("predict, live, serve", {"predict", "live", "serve"}),
    ("demo", {"demo"}),
    ("cli", {"cli"}),
]


def _layer(module: str) -> int:
    top = module.removeprefix("ferwild.").split(".")[0]
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of README's layout: add it to LAYERS and the README")


def test_imports_point_one_way_through_the_layers():
    mods = _modules()
    graph, _ = _imports(mods)
    upward = [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
              for m, deps in graph.items() if m != "ferwild"
              for d in deps if d and d != "ferwild" and _layer(d) > _layer(m)]
    assert upward == []
