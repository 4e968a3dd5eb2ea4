"""Shared fixtures: the repository, the shipped project and the public plugin corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("ARBITER_CORPUS", REPO.parent / "shared" / "corpus" / "claude-plugins"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real Claude Code plugin ecosystem the loader and router must handle as it is."""
    if not CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"plugin corpus not found at {CORPUS} (set ARBITER_CORPUS)")
        pytest.skip(f"plugin corpus not found at {CORPUS} (set ARBITER_CORPUS)")
    return CORPUS
