"""The layering DESIGN.md asks for: commands -> engines -> pure cores -> records/errors.

- A pure core (the algorithm: steps, PUCT and backup, pair rules, answer and
  step checks, statistics) imports only the standard library, light pure
  libraries and other pure cores: no typer, rich, torch or transformers, and
  no module that reads or writes files (records, trees, console).
- Only command modules (the ones cli.py registers, plus cli, options and
  console, which build them) import typer.
- No other module imports a command module, and benchmarks import engines,
  not commands (cli itself is allowed: a benchmark may run the CLI whole).

Read with ``ast`` from the source, imports inside functions included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.test_imports import MODULES, PKG, import_graph

BENCHMARKS = PKG.parent / "benchmarks"

PURE_CORES = {
    "mcts_pref.errors", "mcts_pref.tree", "mcts_pref.check", "mcts_pref.claims", "mcts_pref.steps",
    "mcts_pref.pair_rules", "mcts_pref.stats", "mcts_pref.distinct", "mcts_pref.tasks", "mcts_pref.tasks.math",
    "mcts_pref.tasks.mcq", "mcts_pref.tasks.chain_sum", "mcts_pref.tasks.verify", "mcts_pref.policy_spec",
    "mcts_pref.dpo_config",
}
HEAVY_OR_UI = {"typer", "click", "rich", "torch", "transformers", "vllm", "deepspeed", "accelerate", "peft"}
# Modules that build commands without being one.
COMMAND_BUILDERS = {"mcts_pref.cli", "mcts_pref.options", "mcts_pref.console"}
# Benchmarks that still reach into a command module, each for a thing issue 23 moves out of it; shrink this.
KNOWN_BENCHMARK_COMMAND_IMPORTS: set[tuple[str, str]] = set()


def command_modules() -> set[str]:
    """The modules whose ``command`` cli.py registers as a stage."""
    src = (PKG / "cli.py").read_text(encoding="utf-8")
    return {f"mcts_pref.{m}" for m in re.findall(r"app\.command\([^)]*\)\((\w+)\.command\)", src)}


def top_level_imports(path: Path) -> set[str]:
    """The first dotted component of every module ``path`` imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def imported_modules(path: Path) -> set[str]:
    """The mcts_pref modules a file outside the package (a benchmark) imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in MODULES}
    return out


def test_the_command_list_is_read():
    commands = command_modules()
    assert {"mcts_pref.search", "mcts_pref.extract_pairs", "mcts_pref.evaluate"} <= commands
    assert not {"mcts_pref.mcts", "mcts_pref.trees", "mcts_pref.pairs"} & commands


def test_pure_cores_import_only_pure_cores_and_no_heavy_or_ui_library():
    graph = import_graph()
    bad = []
    for name in sorted(PURE_CORES):
        assert name in MODULES, f"{name} is listed as a pure core but does not exist"
        bad += [f"{name} imports {m}" for m in sorted(graph[name] - PURE_CORES)]
        bad += [f"{name} imports {lib}" for lib in sorted(top_level_imports(MODULES[name]) & HEAVY_OR_UI)]
    assert not bad, "pure cores reach outside the pure layer:\n" + "\n".join(bad)


def test_only_command_modules_import_typer():
    allowed = command_modules() | COMMAND_BUILDERS
    bad = sorted(n for n, p in MODULES.items() if {"typer", "click"} & top_level_imports(p) and n not in allowed)
    assert not bad, f"typer outside command modules: {bad}"


def test_no_module_imports_a_command_but_cli():
    commands = command_modules()
    bad = sorted(f"{n} imports {m}" for n, deps in import_graph().items() if n != "mcts_pref.cli"
                 for m in deps & commands)
    assert not bad, "command modules are leaves below cli:\n" + "\n".join(bad)


def test_benchmarks_import_engines_not_commands():
    commands = command_modules()
    found = {(p.name, m) for p in sorted(BENCHMARKS.glob("*.py")) for m in imported_modules(p) & commands}
    new = found - KNOWN_BENCHMARK_COMMAND_IMPORTS
    assert not new, f"benchmarks import command modules (import the engine instead): {sorted(new)}"
    fixed = KNOWN_BENCHMARK_COMMAND_IMPORTS - found
    assert not fixed, f"no longer imported, drop from KNOWN_BENCHMARK_COMMAND_IMPORTS: {sorted(fixed)}"
