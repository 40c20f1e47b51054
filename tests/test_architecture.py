"""The layer picture of docs/architecture.md holds: import-linter's contracts, no import cycles between
modules (also the ones hidden in function-level imports), and every module imports on its own."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import grimp

import slimkit

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    """`lint-imports` with the repository's .importlinter: the layers and pure-algorithm contracts."""
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over every import grimp sees."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("slimkit", include_external_packages=False)
    # A package's __init__ re-exporting its own submodules is not a cycle between layers: leave those edges out.
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y"]]


_IMPORT_EACH = r'''
import importlib, os, sys, types
import numpy, onnx, onnxruntime, pydantic, rich, sklearn, torch, yaml  # heavy third-party imports once, in the parent
import slimkit.errors  # noqa: F401  (only to find the package folder; removed below)
folder = os.path.dirname(sys.modules["slimkit"].__file__)
for name in [n for n in sys.modules if n == "slimkit" or n.startswith("slimkit.")]:
    del sys.modules[name]
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        if name != "slimkit":  # the package without its __init__ (which imports the API): the module alone
            stub = types.ModuleType("slimkit")
            stub.__path__ = [folder]
            sys.modules["slimkit"] = stub
        try:
            importlib.import_module(name)
        except BaseException as exc:
            sys.stderr.write(f"{name}: {type(exc).__name__}: {exc}\n")
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("FAILED", " ".join(failed))
'''


def test_every_module_imports_on_its_own():
    """Each module first in a fresh process (a fork that has imported nothing of slimkit, not even the package's
    __init__, which imports the whole API): an import that works only after another module loaded first is a
    hidden cycle or a missing import."""
    names = ["slimkit"] + sorted(m.name for m in pkgutil.walk_packages(slimkit.__path__, "slimkit."))
    assert len(names) > 80
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "FAILED", result.stdout + result.stderr[-3000:]


def test_every_top_level_module_has_a_layer():
    """A module left out of the contract would escape it: each one must be named in .importlinter."""
    contract = (ROOT / ".importlinter").read_text()
    names = sorted(m.name for m in pkgutil.iter_modules(slimkit.__path__))
    missing = [n for n in names if f"slimkit.{n}" not in contract]
    assert missing == []
