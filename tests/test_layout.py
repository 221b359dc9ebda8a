"""The package layout is a picture of the chain: the layer contract holds, and no import goes round in a circle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from pipeline.common.paths import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SUBPACKAGES = ("common", "diskimage", "windows", "glance", "manifest", "build", "build.bake", "build.install", "properties",
               "publish", "repro", "synthetic", "sbom", "notes")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter with the contracts in root's pyproject.toml, over the `pipeline` package found in root."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)


def test_the_layer_contract_holds():
    proc = lint_imports(PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: the registry code importing the chain (a low layer reaching up) is caught."""
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy / "pyproject.toml")
    registry = copy / "pipeline/windows/registry.py"
    registry.write_text(registry.read_text() + "\n\ndef _upward():\n    from pipeline.chain import JobOptions  # noqa\n")
    proc = lint_imports(copy)
    assert proc.returncode != 0
    assert "pipeline.windows.registry -> pipeline.chain" in proc.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), function-level imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles():
    graph = grimp.build_graph("pipeline", cache_dir=None)
    assert _cycles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_pipeline_never_imports_the_tasks():
    graph = grimp.build_graph("pipeline", include_external_packages=True, cache_dir=None)
    assert "tasks" not in graph.modules


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_what_it_owns(name):
    init = PROJECT_ROOT / "pipeline" / name.replace(".", "/") / "__init__.py"
    text = init.read_text()
    assert text.startswith('"""'), f"{init} has no docstring"
    docstring = text.split('"""')[1]
    assert "import" in docstring.lower(), f"{init}: the docstring does not say what the package may import"
