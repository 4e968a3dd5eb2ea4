"""The package map holds: no import cycles, each package imports only what its ``__init__``
docstring allows ("May import: ..."), nothing imports the command line, modules stay small.

Imports are read from the source (every ``import`` statement, those inside functions too), so
a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

LONG_MODULE_LINES = 500
LONG_MODULE_MARK = "# Long module:"  # a module over the limit says why, at its top


def _module_name(repo: Path, path: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[0] == "dsl":  # installed as arbiter.dsl (setup.cfg package_dir)
        parts = ["arbiter", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(repo: Path) -> dict[str, Path]:
    files = [*(repo / "arbiter").rglob("*.py"), *(repo / "dsl").rglob("*.py")]
    return {_module_name(repo, p): p for p in files}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The Arbiter modules ``name`` imports (``from pkg import module`` counts as the module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


@pytest.fixture(scope="module")
def graph(repo: Path) -> dict[str, set[str]]:
    sources = _sources(repo)
    known = set(sources)
    return {name: _imports(name, path, known) for name, path in sources.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def _package(module: str) -> str:
    """The concern a module belongs to: ``arbiter.routing.engine.x`` -> ``arbiter.routing``."""
    return ".".join(module.split(".")[:2])


def _allowed(repo: Path, sources: dict[str, Path]) -> dict[str, set[str]]:
    rules = {}
    for name, path in sources.items():
        if name.count(".") != 1 or path.name != "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        match = re.search(r"May import: (.*?)(?:\.\s*$|\.\s)", doc, re.S | re.M)
        assert match, f"{path}: the docstring must say what the package may import ('May import: ...')"
        line = match.group(1).strip()
        if line.startswith("nothing of Arbiter"):
            rules[name] = set()
        elif line.startswith("any package"):
            rules[name] = {_package(m) for m in sources if m.count(".") >= 1}
        else:
            rules[name] = {part.strip() for part in line.split(",")}
    return rules


def test_packages_import_only_what_their_docstring_allows(repo, graph):
    sources = _sources(repo)
    allowed = _allowed(repo, sources)
    offences = []
    for module, targets in graph.items():
        if module.count(".") < 1 or module == "arbiter.__main__":
            continue
        package = _package(module)
        if package not in allowed:
            offences.append(f"{module}: not inside a package of Arbiter")
            continue
        for target in targets:
            other = _package(target)
            if other != package and other not in allowed[package] and target != "arbiter":
                offences.append(f"{module} imports {target}")
    assert offences == []


def test_nothing_imports_the_command_line(graph):
    offenders = [
        m
        for m, targets in graph.items()
        if not m.startswith("arbiter.cli")
        and m != "arbiter.__main__"
        and any(t.startswith("arbiter.cli") for t in targets)
    ]
    assert offenders == []


def test_modules_are_small_or_say_why(repo):
    long = []
    for name, path in _sources(repo).items():
        text = path.read_text()
        if text.count("\n") > LONG_MODULE_LINES and LONG_MODULE_MARK not in text[:3000]:
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []


def test_every_package_ships_in_the_wheel(repo):
    """setup.cfg lists packages by name (the DSL is mapped from dsl/): a new subpackage must be added there."""
    import configparser

    config = configparser.ConfigParser()
    config.read(repo / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    packages = {_module_name(repo, p) for p in _sources(repo).values() if p.name == "__init__.py"}
    assert packages - listed == set()
