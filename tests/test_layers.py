"""The package's layers: every import (module level and inside functions) points down, and there is no
import cycle. Read from the source with ``ast``, so nothing is imported to check it.

Layers, bottom to top (a module may import its own layer and those below):

    base     errors, fileio, schema, measure, _compat, resources, runtime, runtimes
    space    nni_rspnet.space.*
    seg      nni_rspnet.seg.*
    search   nni_rspnet.search.*
    config   nni_rspnet.config (RunConfig: the sections of space, seg and search)
    nnictl   nni_rspnet.nnictl.*
    demo     nni_rspnet.demo
    cli      nni_rspnet.cli
    face     nni_rspnet (the lazy public face: it imports its names by string, on first use)
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_rspnet"
LAYERS = ["base", "space", "seg", "search", "config", "nnictl", "demo", "cli", "face"]
BASE = {"errors", "fileio", "schema", "measure", "_compat", "resources", "runtime", "runtimes"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts == ["nni_rspnet"]:
        return "face"
    head = parts[1]
    if head in BASE:
        return "base"
    if head in LAYERS:
        return head
    raise AssertionError(f"{module}: not in any layer; add it to tests/test_layers.py")


def imports(module: str) -> List[Tuple[str, int]]:
    """The package modules ``module`` imports (module level and inside functions), with line numbers."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.split(".")[0] == "nni_rspnet"]
    return found


def test_every_module_has_a_layer():
    assert len(MODULES) > 30
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    own = LAYERS.index(layer(module))
    upward = [f"line {line}: {target} ({layer(target)})" for target, line in imports(module)
              if target in MODULES and LAYERS.index(layer(target)) > own]
    assert not upward, f"{module} ({layer(module)}) imports upward: {upward}"


def test_no_import_cycle():
    graph: Dict[str, Set[str]] = {m: {t for t, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_command_and_the_package_load_without_torch():
    """``import nni_rspnet`` and the CLI module load no torch, Lightning or NNI: ``--help`` is instant."""
    code = ("import sys, nni_rspnet, nni_rspnet.cli; "
            "heavy = [m for m in ('torch', 'pytorch_lightning', 'nni', 'torchvision') if m in sys.modules]; "
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    done = subprocess.run([sys.executable, "-m", "nni_rspnet.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "search" in done.stdout and "benchmark" not in done.stdout
