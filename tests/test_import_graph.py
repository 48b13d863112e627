"""No import circle anywhere in the package: every ``import`` of a ``continual.*`` module, at the
top of a file or inside a function, is an edge of the graph, and the graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the installed name of each top-level folder (one namespace, ``continual.*``)
PACKAGES = {"continual": ROOT / "continual", "continual.streams": ROOT / "streams",
            "continual.strategies": ROOT / "strategies", "continual.memory": ROOT / "memory"}


def module_name(path: Path) -> str:
    for package, base in sorted(PACKAGES.items(), key=lambda kv: -len(str(kv[1]))):
        if base in path.parents:
            parts = list(path.relative_to(base).with_suffix("").parts)
            return ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
    raise ValueError(path)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(f): f for base in PACKAGES.values() for f in base.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("continual"):
                for alias in node.names:  # `from continual.x import y`: y may be a module itself
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("continual"))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 80 and "continual.runner" in graph["continual.experiment"]
    assert cycles(graph) == []
