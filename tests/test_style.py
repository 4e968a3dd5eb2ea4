"""The code base is ruff-clean (style is checked like any other behaviour)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def test_ruff_clean(repo):
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    targets = [p for p in ("arbiter", "dsl", "tests", "bench", "broker.py") if (repo / p).exists()]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *targets], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_adapter_imports_durable_rules(repo):
    offenders = []
    for path in list((repo / "arbiter").rglob("*.py")) + list((repo / "dsl").rglob("*.py")):
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        imports = [ln for ln in lines if ln.startswith(("import durable", "from durable"))]
        if path.name == "engines.py":  # only probes whether the package imports
            imports = [ln for ln in imports if ln != "import durable.engine  # noqa: F401"]
        if imports and path.name != "durable_engine.py":
            offenders.append(str(path))
    assert offenders == []
