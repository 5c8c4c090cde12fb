"""The package's shape, read from its source: no import cycle among its modules, only the store
writes SQL against the schema, and no docstring or comment points outside the repository."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import labgate

PACKAGE = Path(labgate.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "versions" in path.parts:  # Alembic migration scripts are run by Alembic only
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(tree: ast.Module, name: str, *, top_level_only: bool) -> Iterator[str]:
    """Modules imported by a module (``from a import b`` yields ``a.b`` when that is a module of
    the package, else ``a``). Imports under ``if TYPE_CHECKING:`` are not run; with
    ``top_level_only``, neither are those inside functions (they cannot make a cycle at import)."""
    known = modules()
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else None
    base = package or name.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and top_level_only:
                continue
            yield node
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from walk([c for c in children if isinstance(c, ast.stmt)])

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                source = ".".join([*anchor, *([source] if source else [])])
            for alias in node.names:
                full = f"{source}.{alias.name}"
                yield full if full in known else source


def graph(*, top_level_only: bool) -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set(imported(tree, name, top_level_only=top_level_only))
        edges[name] = {t for t in targets if t in known and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_real_imports() -> None:
    edges = graph(top_level_only=True)
    assert "labgate.store.core" in edges["labgate.store"]
    assert "labgate.flight" in edges["labgate.flights"]
    assert "labgate.rawconfig" in edges["labgate.hosts.config"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert cycles(graph(top_level_only=True)) == []


def test_only_the_store_imports_the_schema() -> None:
    edges = graph(top_level_only=False)
    users = sorted(m for m, targets in edges.items() if "labgate.store.schema" in targets)
    assert users and all(m.startswith("labgate.store.") for m in users), users


def test_no_text_points_outside_the_repository() -> None:
    for path in modules().values():
        text = path.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, path
