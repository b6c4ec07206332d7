"""The protein package's modules import each other without cycles, at the top of the file.

A cycle (eval -> motif -> eval) works only while every import in it stays inside a function;
the modules are layered instead (constants, geometry, data, metrics, topology, motif, model,
settings, flow, head, records, eval, design, cli). Only the command-line module imports the
command modules late, so that ``flow3d --help`` does not load torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "protein"
LATE_IMPORTS_ALLOWED = {"protein.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported protein module, imported at the top level)]."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        edges = []
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    edges.append((target, id(node) in top))
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, list[tuple[str, bool]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt, _ in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_protein_modules_have_no_import_cycles():
    graph = _imports()
    assert len(graph) > 15  # the scan found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_protein_modules_import_each_other_at_the_top():
    late = sorted(f"{module} imports {target} inside a function"
                  for module, edges in _imports().items() if module not in LATE_IMPORTS_ALLOWED
                  for target, at_top in edges if not at_top)
    assert not late, late
