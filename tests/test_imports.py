"""The package's import graph: no circles, and internal imports at module top.

Read with ``ast`` from the source, so the check sees imports inside functions
too (they form circles just the same, only later), and imports under
``if TYPE_CHECKING:`` (they never run, but a reader still follows them).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mcts_pref"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def internal_imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, at module top?, source line) for every mcts_pref import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").splitlines()
    me = module_name(path)
    out = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            here = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module:
                base = child.module
                if child.level:  # relative import
                    pkg = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - child.level + 1] + [child.module])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            for t in targets:
                if t.split(".")[0] == "mcts_pref" and t != me:
                    # `from mcts_pref.x import y` names module x unless y is itself a module
                    while t not in MODULES and "." in t:
                        t = t.rsplit(".", 1)[0]
                    out.append((t, child.lineno, top, lines[child.lineno - 1]))
            visit(child, here)

    visit(tree, True)
    return out


def import_graph() -> dict[str, set[str]]:
    return {name: {t for t, *_ in internal_imports(path) if t != name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := dfs(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := dfs(n)):
            return cycle
    return None


def test_the_checker_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # backends/__init__.py imports the hf backend inside a function (torch stays lazy).
    assert "mcts_pref.backends.hf" in graph["mcts_pref.backends"]
    assert "mcts_pref.train" in graph["mcts_pref.train_dpo"]


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_internal_imports_sit_at_module_top():
    """Light internal modules are imported at the top; a lazy one says why in a comment."""
    late = [f"{path.relative_to(PKG.parent)}:{line}: {src.strip()}"
            for name, path in MODULES.items()
            for _, line, top, src in internal_imports(path)
            if not top and "lazy" not in src]
    assert not late, "internal imports inside functions without a 'lazy: why' comment:\n" + "\n".join(late)
