"""fluxperf's imports point one way: no module imports one that imports it back, also through imports inside
functions; the bench never reaches the report writers, and the rules never reach the words.

The graph is read from the source with ast, every `import` and `from ... import` at any depth, so a cycle hidden in a
function body counts. The variant registry loads its modules with importlib (a plugin registry by design): that
load is not an import statement and is not in the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fluxperf"


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.AST, module: str) -> set[str]:
    """The fluxperf modules one import statement names: `from fluxperf import report` names fluxperf.report."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if not isinstance(node, ast.ImportFrom):
        return set()
    assert not node.level, f"{module}: a relative import; fluxperf spells its imports out"
    base = node.module or ""
    found = {base} if base in MODULES else set()
    return found | {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}


def graph() -> dict[str, set[str]]:
    edges = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges[module] = {m for node in ast.walk(tree) for m in _imported(node, module)} - {module}
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as the modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def _reach(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in edges[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    return seen


def test_the_graph_is_read_with_imports_inside_functions():
    edges = graph()
    # plugin.py imports the bench only inside session_of, and report and summary only inside hooks.
    assert {"fluxperf.bench", "fluxperf.report", "fluxperf.summary"} <= edges["fluxperf.plugin"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_one_that_imports_it_back():
    cycle = _cycle(graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    "low, high",
    [
        ("fluxperf.bench", "fluxperf.report"),
        ("fluxperf.bench", "fluxperf.figures"),
        ("fluxperf.bench", "fluxperf.plugin"),
        ("fluxperf.rules", "fluxperf.messages"),
        ("fluxperf.stats", "fluxperf.messages"),
        ("fluxperf.result", "fluxperf.verdicts"),
    ],
)
def test_arrows_point_down(low, high):
    """The bench measures and returns data, the plugin writes the reports; the rules decide, messages word them."""
    assert high not in _reach(graph(), low)
