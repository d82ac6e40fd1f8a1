"""Contracts of the layout: Qt only in vitdesk/gui, a fast command line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vitdesk"
QT_MODULES = {"PySide6", "pyqtgraph", "shiboken6", "superqt", "qtpy", "PyQt5", "PyQt6"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_qt_is_imported_only_in_gui():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "gui":
            continue
        bad = _imports(path) & QT_MODULES
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert not offenders, "Qt imported outside vitdesk/gui: " + "; ".join(offenders)


def test_lower_layers_do_not_import_upper_layers():
    # commands -> gui -> report -> analysis -> engine -> config -> data -> imaging -> jobs;
    # nothing below gui imports gui, and gui never imports the command line's modules
    order = {"jobs": 0, "imaging": 1, "data": 2, "config": 3, "engine": 4, "analysis": 5,
             "report": 6, "gui": 7, "commands": 8}
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        layer = rel.parts[0].removesuffix(".py")
        if layer not in order:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mod = None
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            if mod and mod.startswith("vitdesk."):
                target = mod.split(".")[1]
                if target in order and order[target] > order[layer]:
                    offenders.append(f"{rel} imports {mod}")
    assert not offenders, "; ".join(offenders)


def _engine_imports() -> dict[str, set[str]]:
    """engine module -> the engine modules it imports, at any depth (function-level
    imports count: a lazy import hides a cycle from Python, not from the design)."""
    graph: dict[str, set[str]] = {}
    for path in (PKG / "engine").glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "vitdesk.engine":  # from vitdesk.engine import checkpoint
                    names = [f"vitdesk.engine.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if n.startswith("vitdesk.engine."):
                    deps.add(n.split(".")[2])
        graph[path.stem] = deps - {path.stem}
    return graph


def test_engine_has_no_import_cycle():
    graph = _engine_imports()
    assert "run" in graph and "plan" in graph["run"]  # the walk sees real imports
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*stack, node])

    for start in sorted(graph):
        visit(start, [])
    assert not cycles, "import cycles in vitdesk/engine: " + "; ".join(sorted(set(cycles)))


def test_pretraining_shares_the_loop_parts_not_the_fine_tuning_run():
    graph = _engine_imports()
    # one home each: device/precision, history, run-folder layout; pretraining takes
    # them from there, not from engine.run (which once imported pretrain back)
    assert {"device", "history", "run_folder"} <= graph["pretrain"]
    assert {"device", "history", "run_folder"} <= graph["run"]
    assert "run" not in graph["pretrain"] and "pretrain" not in graph["run"]


def test_plan_is_torch_free():
    loaded = _modules_after("import vitdesk.engine.plan")
    assert "torch" not in loaded and not (loaded & QT_MODULES)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["inspect", "--help"], ["sample", "--help"]])
def test_light_commands_import_neither_torch_nor_qt(argv):
    code = (
        "import sys\nfrom vitdesk.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert not (loaded & QT_MODULES)


def test_inspect_and_sample_modules_stay_light():
    loaded = _modules_after("import vitdesk.commands.inspect, vitdesk.commands.sample")
    assert "torch" not in loaded
    assert not (loaded & QT_MODULES)
