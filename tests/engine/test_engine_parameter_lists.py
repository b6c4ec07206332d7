"""No function in flow3d (core, engine, every head, protein included) takes 10 or more
parameters (``self``, ``cls`` and an autograd Function's ``ctx`` excluded; ``*args`` and
``**kwargs`` count one each): long lists are grouped into a dataclass (``SolveOptions``,
``ExtractBudget``, a task's settings)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("flow3d/core", "flow3d/engine", "flow3d/toy", "flow3d/mesh", "flow3d/splat",
           "flow3d/appearance",
           "flow3d/cli.py", "flow3d/demo.py", "flow3d/view.py", "flow3d/io.py", "flow3d/options.py",
           "protein")
LIMIT = 10


def parameter_counts():
    for place in CHECKED:
        path = ROOT / place
        for f in sorted(path.rglob("*.py") if path.is_dir() else [path]):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = node.args
                    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                    if names and names[0] in ("self", "cls", "ctx"):  # ctx: autograd's self
                        names = names[1:]
                    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
                    yield f"{f.relative_to(ROOT)}:{node.lineno} {node.name}", count


def test_parameter_lists_are_short():
    long = {where: n for where, n in parameter_counts() if n >= LIMIT}
    assert not long, long
