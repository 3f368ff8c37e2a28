"""The house rules of docs/architecture.md, enforced on the package's own source.

- Every `grpo` module belongs to one layer; a module imports only its own layer or lower ones.
- No import circles, counting imports inside functions (those used to close two circles).
- No module over MAX_MODULE_LINES lines (the plain decoder excepted) and no function whose code,
  docstring aside, runs over MAX_FUNCTION_LINES lines.
The layer table is parsed from docs/architecture.md, so the document and the test cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "grpo"
DOC = ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_MODULES_ALLOWED = {"grpo/rollout/merged.py"}  # the plain decoder: one forward, kept in one place


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_grpo_modules(path: Path, known: set[str]) -> set[str]:
    """Every grpo module `path` imports, at any depth (lazy imports count), resolved to a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from grpo.x import y`: y is a submodule (grpo.x.y) or a name defined in grpo.x
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        for name in names:
            if name.split(".")[0] != "grpo":
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known:
                found.add(name)
    return found


def layers() -> list[list[str]]:
    """The table under "## Layers" in docs/architecture.md: `| N | name | grpo.a, grpo.b |`, lowest first."""
    text = DOC.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|", section, flags=re.M)
    assert rows, "docs/architecture.md has no layer table under '## Layers'"
    return [re.findall(r"grpo(?:\.\w+)*", cell) for _, cell in sorted(rows, key=lambda r: int(r[0]))]


def layer_of(module: str, table: list[list[str]]) -> int:
    best = (-1, -1)  # (prefix length, layer)
    for level, prefixes in enumerate(table):
        for prefix in prefixes:
            # `grpo` names the package's own __init__, not everything under it
            inside = prefix != "grpo" and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best[0]:
                best = (len(prefix), level)
    return best[1]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported_grpo_modules(path, known) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    table = layers()
    missing = [m for m in modules() if layer_of(m, table) < 0]
    assert not missing, f"modules with no layer in docs/architecture.md: {missing}"


def test_no_module_imports_a_higher_layer():
    table = layers()
    upward = [
        f"{m} (layer {layer_of(m, table)}) imports {d} (layer {layer_of(d, table)})"
        for m, deps in graph().items()
        for d in sorted(deps)
        if layer_of(d, table) > layer_of(m, table)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the import circles (components with more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert strongly_connected(graph()) == []


def test_the_circle_finder_finds_circles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def code_lines(node: ast.AST) -> int:
    """Lines from `def` to the end of the body, less the docstring."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    relative = str(path.relative_to(ROOT))
    text = path.read_text()
    if relative not in LONG_MODULES_ALLOWED:
        assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{relative}: split it by job"
    long = [
        f"{node.name} (line {node.lineno}): {code_lines(node)} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, f"{relative}: functions over {MAX_FUNCTION_LINES} lines: {long}"
