"""Shared fixtures: the repository, the shipped project and the public plugin corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from arbiter.project.snapshot import build_snapshot
from arbiter.routing.pipeline import Router

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


@pytest.fixture(scope="session")
def shipped_router(repo):
    return Router(build_snapshot(repo))


@pytest.fixture(scope="session")
def corpus_router(corpus, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty-project")
    return Router(build_snapshot(empty, [corpus]), engine="python")


@pytest.fixture
def project(repo, tmp_path):
    """A writable copy of the shipped project."""
    for part in ("plugins", "rules", "configs"):
        shutil.copytree(repo / part, tmp_path / part)
    return tmp_path
